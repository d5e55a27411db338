//! The `wasaga` binary: parse the command line, then serve or talk to a server.

use anyhow::Context;
use clap::Parser;
use std::path::Path;
use wasaga_host::cli::{
    Cli, Client, Command, DeadLettersCommand, OrdersCommand, PluginsCommand, RecordingsCommand, plugins_table,
};
use wasaga_host::config::Settings;
use wasaga_host::server::App;
use wasaga_host::telemetry;

/// Allocation is on every hop (events, rows, JSON); mimalloc does it in a fraction of
/// glibc's time under the server's many threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::Replay { path, plugin, plugins_dir, data_dir } = &cli.command {
        // Its own exit codes: 0 reproduced, 1 diverged, 2 could not run.
        let sources = wasaga_host::cli::replay::Sources {
            plugin: plugin.clone(),
            plugins_dir: plugins_dir.clone(),
            data_dir: data_dir.clone(),
        };
        return match wasaga_host::cli::replay::run(path, &sources).await {
            Ok((report, code)) => {
                print!("{report}");
                std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
            }
            Err(error) => {
                eprintln!("error: {error}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let serving = matches!(cli.command, Command::Serve { .. });
    let code: u8 = match run(cli).await {
        Ok(()) => 0,
        Err(error) => {
            // One readable line with its causes; no backtrace for an expected failure.
            eprintln!("error: {error:#}");
            1
        }
    };
    if serving {
        // Leave now: dropping the runtime would wait for every blocking thread (a
        // compile that does not end, a driver stuck in a call), and the shutdown bound
        // is already spent.
        std::process::exit(i32::from(code));
    }
    std::process::ExitCode::from(code)
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
        Command::Recordings { server, command } => {
            let client = Client::new(&server.url, server.resolve_token()?);
            recordings(&client, command).await
        }
        Command::Replay { .. } => Ok(()),
    }
}

async fn recordings(client: &Client, command: RecordingsCommand) -> anyhow::Result<()> {
    match command {
        RecordingsCommand::Pull { step, out, limit } => {
            let recordings = client.recordings(&step, limit).await?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let mut saved = 0;
            let mut refused = Vec::new();
            for recording in &recordings {
                // What the server sends names files here: only a checked id does.
                let file_name = match wasaga_host::cli::recording_file_name(recording) {
                    Ok(file_name) => file_name,
                    Err(reason) => {
                        refused.push(reason);
                        continue;
                    }
                };
                let file = out.join(file_name);
                std::fs::write(&file, serde_json::to_string_pretty(recording)?)
                    .with_context(|| format!("writing {}", file.display()))?;
                saved += 1;
            }
            println!("saved {saved} recordings of {step} in {}", out.display());
            if !refused.is_empty() {
                anyhow::bail!("{} recordings were not saved: {}", refused.len(), refused.join("; "));
            }
        }
    }
    Ok(())
}

async fn serve(config: Option<&Path>) -> anyhow::Result<()> {
    telemetry::init("info", telemetry::Sink::Stderr);
    // Before anything says it listens: a SIGTERM from then on is a clean stop, not a kill.
    let shutdown = shutdown_signal();
    let settings = Settings::load(config).context("loading settings")?;
    let app = App::build(settings).await.context("starting wasaga")?;
    let served = app.run(shutdown).await.context("serving");
    telemetry::shutdown();
    served
}

/// SIGTERM or Ctrl-C. The SIGTERM handler is installed when this is called, not when the
/// future is first polled: the server polls it only once it serves, and a signal sent
/// after it said it listens would otherwise kill the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let terminate = async {
            match terminate {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = ctrl_c => {},
            () = terminate => {},
        }
        tracing::info!("shutting down");
    }
}

async fn plugins(client: &Client, command: PluginsCommand) -> anyhow::Result<()> {
    match command {
        PluginsCommand::List => {
            print!("{}", plugins_table(&client.list_plugins().await?));
        }
        PluginsCommand::Push { file, name, canary, shadow } => {
            let name = match name {
                Some(name) => name,
                None => file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_owned)
                    .context("cannot tell the step name from the file name; pass --name")?,
            };
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let rollout = match (canary, shadow) {
                (Some(percent), _) => Some(format!("rollout=canary&percent={percent}")),
                (None, true) => Some("rollout=shadow".to_owned()),
                (None, false) => None,
            };
            let entry = client.push_plugin(&name, bytes, rollout).await?;
            print!("{}", plugins_table(std::slice::from_ref(&entry)));
        }
        PluginsCommand::Rollback { name } => {
            let entry = client.rollback_plugin(&name).await?;
            print!("{}", plugins_table(std::slice::from_ref(&entry)));
        }
        PluginsCommand::Promote { name } => {
            let entry = client.promote_plugin(&name).await?;
            print!("{}", plugins_table(std::slice::from_ref(&entry)));
        }
        PluginsCommand::Shadow { name } => {
            let report = client.shadow_report(&name).await?;
            println!(
                "shadow {} of {name} on {}: {} calls, {} same, {} different, {} failed, {} dropped",
                text(&report, "digest").get(..19).unwrap_or(text(&report, "digest")),
                text(&report, "host_id"),
                report["calls"],
                report["same"],
                report["different"],
                report["failed"],
                report["dropped"],
            );
            for sample in report["samples"].as_array().cloned().unwrap_or_default() {
                println!(
                    "  {} {} (order {})",
                    text(&sample, "kind"),
                    text(&sample, "event_id"),
                    text(&sample, "order_id")
                );
                for difference in sample["differences"].as_array().cloned().unwrap_or_default() {
                    let what = match difference["key"].as_str() {
                        Some(key) => format!("state {key}"),
                        None => text(&difference, "what").to_owned(),
                    };
                    println!("    {what}: live {} / shadow {}", difference["live"], difference["shadow"]);
                }
            }
        }
        PluginsCommand::History { name } => {
            for entry in client.plugin_history(&name).await? {
                let digest = text(&entry, "digest");
                println!(
                    "{}  {:<16} {:<20} {:<24} {}",
                    text(&entry, "at"),
                    text(&entry, "action"),
                    digest.get(..19).unwrap_or(digest),
                    text(&entry, "host_id"),
                    text(&entry, "reason")
                );
            }
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
        DeadLettersCommand::Replay { id, version, dry_run } => {
            let answer = client.replay_dead_letter(&id, version.as_ref().map(|v| v.as_str()), dry_run).await?;
            if dry_run {
                println!("dry run of {id} on {} (nothing committed):", text(&answer, "version"));
                println!("  outcome: {}", text(&answer, "outcome"));
                if let Some(error) = answer["error"].as_str() {
                    println!("  error: {error}");
                }
                for emit in answer["emits"].as_array().cloned().unwrap_or_default() {
                    println!("  emit {} {}", text(&emit, "kind"), emit["payload"]);
                }
                for write in answer["writes"].as_array().cloned().unwrap_or_default() {
                    println!("  write {} = {}", text(&write, "key"), write["value"]);
                }
            } else {
                println!("replayed {id}: its event is queued for its step again");
            }
        }
        DeadLettersCommand::Recording { id, out } => {
            let recording = client.dead_letter_recording(&id).await?;
            let text = serde_json::to_string_pretty(&recording)?;
            match out {
                Some(file) => {
                    std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
                    println!("saved the recording of {id} in {}", file.display());
                }
                None => println!("{text}"),
            }
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
