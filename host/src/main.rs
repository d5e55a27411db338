//! The `wasaga` binary: parse the command line, then serve or talk to a server.

use anyhow::Context;
use clap::Parser;
use std::path::Path;
use wasaga_host::cli::{Cli, Client, Command, DeadLettersCommand, OrdersCommand, PluginsCommand, plugins_table};
use wasaga_host::config::Settings;
use wasaga_host::server::App;
use wasaga_host::telemetry;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One readable line with its causes; no backtrace for an expected failure.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve(config.as_deref()).await,
        Command::Plugins { server, command } => {
            let client = Client::new(&server.url, server.resolve_token()?);
            plugins(&client, command).await
        }
        Command::DeadLetters { server, command } => {
            let client = Client::new(&server.url, server.resolve_token()?);
            dead_letters(&client, command).await
        }
        Command::Orders { server, command } => {
            // Reading orders needs no token; use it if there is one.
            let client = Client::new(&server.url, server.resolve_token().unwrap_or_default());
            orders(&client, command).await
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

fn text<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    value.get(key).and_then(|v| v.as_str()).unwrap_or("-")
}

async fn dead_letters(client: &Client, command: DeadLettersCommand) -> anyhow::Result<()> {
    match command {
        DeadLettersCommand::List => {
            let letters = client.dead_letters().await?;
            if letters.is_empty() {
                println!("no dead letters");
            }
            for letter in letters {
                let event = &letter["event"];
                println!(
                    "{}  step={} kind={} order={} attempts={} at={}\n    {}",
                    text(&letter, "id"),
                    text(&letter, "step"),
                    text(event, "kind"),
                    text(event, "order_id"),
                    letter["attempts"],
                    text(&letter, "dead_lettered_at"),
                    text(&letter, "error"),
                );
            }
        }
        DeadLettersCommand::Replay { id } => {
            client.replay_dead_letter(&id).await?;
            println!("replayed {id}: its event is queued for its step again");
        }
        DeadLettersCommand::Discard { id } => {
            client.discard_dead_letter(&id).await?;
            println!("discarded {id}");
        }
    }
    Ok(())
}

async fn orders(client: &Client, command: OrdersCommand) -> anyhow::Result<()> {
    match command {
        OrdersCommand::Get { id } => {
            let order = client.order(&id).await?;
            println!(
                "order {}  customer={} status={} reason={} total_cents={}",
                text(&order, "order_id"),
                text(&order, "customer_id"),
                text(&order, "status"),
                text(&order, "cancel_reason"),
                order["total_cents"],
            );
            for entry in order["timeline"].as_array().cloned().unwrap_or_default() {
                let version = text(&entry, "step_version");
                let short = version.get(..19).unwrap_or(version);
                println!("  {}  {:<20} {:<10} {short}", text(&entry, "at"), text(&entry, "kind"), text(&entry, "step"));
            }
        }
    }
    Ok(())
}
