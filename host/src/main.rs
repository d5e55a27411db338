//! The `wasaga` binary: parse the command line, then serve or talk to a server.

use anyhow::Context;
use clap::Parser;
use std::path::Path;
use wasaga_host::cli::{Cli, Client, Command, PluginsCommand, plugins_table};
use wasaga_host::config::Settings;
use wasaga_host::server::App;
use wasaga_host::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config.as_deref()).await,
        Command::Plugins { server, command } => {
            let client = Client::new(&server.url, server.resolve_token()?);
            plugins(&client, command).await
        }
    }
}

async fn serve(config: Option<&Path>) -> anyhow::Result<()> {
    telemetry::init("info", telemetry::Sink::Stderr);
    let settings = Settings::load(config).context("loading settings")?;
    let app = App::build(settings).await.context("starting wasaga")?;
    app.run(shutdown_signal()).await.context("serving")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

async fn plugins(client: &Client, command: PluginsCommand) -> anyhow::Result<()> {
    match command {
        PluginsCommand::List => {
            print!("{}", plugins_table(&client.list_plugins().await?));
        }
        PluginsCommand::Push { file, name } => {
            let name = match name {
                Some(name) => name,
                None => file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_owned)
                    .context("cannot tell the step name from the file name; pass --name")?,
            };
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let entry = client.push_plugin(&name, bytes).await?;
            print!("{}", plugins_table(std::slice::from_ref(&entry)));
        }
        PluginsCommand::Rollback { name } => {
            let entry = client.rollback_plugin(&name).await?;
            print!("{}", plugins_table(std::slice::from_ref(&entry)));
        }
    }
    Ok(())
}
