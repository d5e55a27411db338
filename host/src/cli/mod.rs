//! The `wasaga` command line: `serve`, and thin commands over the admin API of a
//! running server.

mod client;

pub use client::{Client, ClientError, plugins_table};

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Runs the steps of an order saga as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "wasaga", version, about)]
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
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Show every dead letter: step, event, error, attempts.
    List,
    /// Deliver a dead letter's event to its step again, with a fresh attempt count.
    Replay {
        /// The dead letter's id.
        id: String,
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
    /// Upload a component; it serves at once if it passes validation.
    Push {
        /// The component file (`<step>.wasm`).
        file: PathBuf,
        /// The step to install it as; defaults to the file name without `.wasm`.
        #[arg(long)]
        name: Option<String>,
    },
    /// Serve the previous version of a step again.
    Rollback {
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
