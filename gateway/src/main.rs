//! `wasaga-gateway`: the card gateway simulator on an address of its own.

use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;

/// A card gateway for tests and demos: charges, refunds and a ledger, with idempotency
/// keys honoured and the test tokens of the README.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to listen; port 0 picks a free one (the address is printed).
    #[arg(long, env = "WASAGA_GATEWAY_ADDR", default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// How long `tok_slow` takes, in milliseconds.
    #[arg(long, env = "WASAGA_GATEWAY_SLOW_MS", default_value_t = 30_000)]
    slow_ms: u64,
    /// The key clients must send as `Authorization: Bearer <key>`; none by default.
    #[arg(long, env = "WASAGA_GATEWAY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Where webhooks (`tok_3ds` charges completed) go, e.g.
    /// `http://127.0.0.1:8080/api/hooks/payment`; none are sent without it.
    #[arg(long, env = "WASAGA_GATEWAY_WEBHOOK_URL", requires = "webhook_secret")]
    webhook_url: Option<String>,
    /// The secret that signs webhooks (the step's `hook_secret`).
    #[arg(long, env = "WASAGA_GATEWAY_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// How long a cardholder takes to complete 3-D Secure, in milliseconds.
    #[arg(long, env = "WASAGA_GATEWAY_ACTION_DELAY_MS", default_value_t = 200)]
    action_delay_ms: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let addr = listener.local_addr()?;
    // Read by whoever started it to find the port.
    println!("wasaga-gateway listening addr={addr}");
    let slow = Duration::from_millis(args.slow_ms);
    let gateway = match &args.api_key {
        Some(key) => wasaga_gateway::Gateway::with_key(slow, key),
        None => wasaga_gateway::Gateway::new(slow),
    };
    gateway.set_action_delay(Duration::from_millis(args.action_delay_ms));
    if let (Some(url), Some(secret)) = (args.webhook_url, args.webhook_secret) {
        gateway.send_webhooks_to(wasaga_gateway::WebhookTarget { url, secret });
    }
    axum::serve(listener, wasaga_gateway::router(gateway))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
