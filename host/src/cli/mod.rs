//! The `wasaga` command line: `serve`, and thin commands over the admin API of a
//! running server.

mod client;
pub mod replay;

pub use client::{Client, ClientError, plugins_table};

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Runs the steps of an order saga as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "wasaga", version = crate::features::version(), about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the server (settings: wasaga.toml and WASAGA_* variables).
    Serve {
        /// A TOML file of settings; environment variables override it.
        #[arg(long, env = "WASAGA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// List, upload or roll back step components on a running server.
    Plugins {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Inspect, replay or discard dead letters on a running server.
    DeadLetters {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: DeadLettersCommand,
    },
    /// Read orders on a running server.
    Orders {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: OrdersCommand,
    },
    /// Download the sampled recordings of a step's successful calls.
    Recordings {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: RecordingsCommand,
    },
    /// Re-run a recording (or a folder of them) against a component, offline: exit 0 if
    /// every replay reproduced its recording, 1 if one diverged, 2 if one could not run.
    Replay {
        /// A recording (`wasaga dead-letters recording ID -o FILE`) or a folder of them.
        path: PathBuf,
        /// The component to run; default: the recorded version, from the plugins folder
        /// or the compile cache.
        #[arg(long)]
        plugin: Option<PathBuf>,
        /// Where to look for the recorded version's file.
        #[arg(long, env = "WASAGA_PLUGINS_DIR", default_value = "./dist/plugins")]
        plugins_dir: PathBuf,
        /// Whose compile cache to look in for the recorded version.
        #[arg(long, env = "WASAGA_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecordingsCommand {
    /// Save the newest recordings of a step as `<event id>.json` files in a folder.
    Pull {
        /// The step.
        step: String,
        /// The folder to write into (created if missing).
        #[arg(short, long)]
        out: PathBuf,
        /// How many, newest first.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Show every dead letter: step, event, error, attempts.
    List,
    /// Deliver a dead letter's event to its step again, with a fresh attempt count.
    Replay {
        /// The dead letter's id.
        id: String,
        /// Run it on this kept version (a digest from `plugins list`) instead of the serving one.
        #[arg(long)]
        version: Option<crate::event::Digest>,
        /// Only show what it would do: outcome, events, state writes; nothing is committed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Save the recording of the dead letter's last attempt (for `wasaga replay`).
    Recording {
        /// The dead letter's id.
        id: String,
        /// The file to write; default: standard output.
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// Drop a dead letter for good.
    Discard {
        /// The dead letter's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrdersCommand {
    /// Show an order with its timeline.
    Get {
        /// The order id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Show every step with its serving and previous version.
    List,
    /// Upload a component; it serves at once if it passes validation, or rolls out
    /// beside the serving version with --canary or --shadow.
    Push {
        /// The component file (`<step>.wasm`).
        file: PathBuf,
        /// The step to install it as; defaults to the file name without `.wasm`.
        #[arg(long)]
        name: Option<String>,
        /// Roll it out to this percentage of orders (1–99), the rest staying on the
        /// serving version.
        #[arg(long, conflicts_with = "shadow", value_parser = clap::value_parser!(u8).range(1..=99))]
        canary: Option<u8>,
        /// Run it beside the serving version on the same events, its effects discarded
        /// and compared (`wasaga plugins shadow NAME`).
        #[arg(long)]
        shadow: bool,
    },
    /// Abort a step's rollout, or serve its previous version again.
    Rollback {
        /// The step.
        name: String,
    },
    /// Make a step's rollout candidate its serving version.
    Promote {
        /// The step.
        name: String,
    },
    /// How a step's shadow candidate compares with the serving version.
    Shadow {
        /// The step.
        name: String,
    },
    /// The history of a step's versions in the fleet.
    History {
        /// The step.
        name: String,
    },
}

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of the server.
    #[arg(long, env = "WASAGA_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Admin token; defaults to the one in the data folder.
    #[arg(long, env = "WASAGA_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data folder holding a generated admin token.
    #[arg(long, env = "WASAGA_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

impl ServerArgs {
    /// The token given, or the one the server generated into the data folder.
    pub fn resolve_token(&self) -> Result<String, ClientError> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        let path = self.data_dir.join("admin-token");
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| ClientError::Token(format!("{}: {e}; pass --token or set WASAGA_ADMIN_TOKEN", path.display())))
    }
}

/// The file name `wasaga recordings pull` saves `recording` (JSON from the server) under:
/// `<event id>.json`, only for an id of letters, digits, `-` and `_` (a UUID, as the
/// host makes them) and a recording whose step and version are valid names, so nothing
/// the server sends can name a file outside the folder.
pub fn recording_file_name(recording: &serde_json::Value) -> Result<String, String> {
    let id = recording["event"]["id"].as_str().unwrap_or_default();
    let safe = (1..=128).contains(&id.len())
        && !id.starts_with('-')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let shown: String = id.chars().take(80).collect();
    if !safe {
        return Err(format!("event id {shown:?} cannot name a file"));
    }
    let parsed = serde_json::from_value::<wasaga_sdk::recording::Recording>(recording.clone())
        .map_err(|e| format!("event {id}: not a recording: {e}"))?;
    replay::CheckedRecording::check(parsed)
        .map_err(|(field, reason)| format!("event {id}: field `{field}`: {reason}"))?;
    Ok(format!("{id}.json"))
}
