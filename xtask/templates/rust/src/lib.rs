//! {{name}}: counts completed orders and says so with a `{{name}}.counted` event.
//!
//! A step handles one event at a time inside the host's transaction: what it reads and
//! writes through `host` and the events it returns commit together, or not at all.

use wasaga_sdk::{Context, Emit, Event, Host, HostExt, Level, Manifest, Step, StepError};

pub struct Counter;

impl Step for Counter {
    fn manifest() -> Manifest {
        // The name must be the file's (`{{name}}.wasm`); the version is semantic.
        Manifest::new("{{name}}", "0.1.0", ["order.completed"])
    }

    fn handle(host: &mut dyn Host, _ctx: &Context, event: &Event) -> Result<Vec<Emit>, StepError> {
        // State is the step's own key-value store; values here are JSON.
        let completed = host.get_json::<u64>("completed")?.unwrap_or(0) + 1;
        host.put_json("completed", &completed)?;
        host.log(Level::Info, &format!("order {} completed; {completed} so far", event.order_id));
        // `Err(StepError::Retryable(..))` is retried with backoff, `Fatal` dead-letters
        // at once; a panic is a trap and is retried like `Retryable`.
        let payload = format!(r#"{{"order_id":"{}","completed":{completed}}}"#, event.order_id);
        Ok(vec![Emit { kind: "{{name}}.counted".to_owned(), payload, delay_ms: None }])
    }
}

wasaga_sdk::export_step!(Counter);
