// {{name}}: counts completed orders and says so with a `{{name}}.counted` event.
//
// A step handles one event at a time inside the host's transaction: what it reads and
// writes through `state` and the events it returns commit together, or not at all.
// WIT names are camelCase here: `event.orderId`, `event.occurredAtMs`.
import { get, put } from "wasaga:saga/state@0.2.0";
import { log } from "wasaga:saga/log@0.2.0";

const text = new TextDecoder();
const bytes = new TextEncoder();

export const handler = {
  describe() {
    // The name must be the file's ({{name}}.wasm); the version is semantic.
    return { name: "{{name}}", version: "0.1.0", subscribes: ["order.completed"] };
  },

  handle(ctx, event) {
    // Payloads are JSON text; state values are bytes (JSON here).
    const raw = get("completed");
    const completed = (raw === undefined ? 0 : JSON.parse(text.decode(raw))) + 1;
    put("completed", bytes.encode(JSON.stringify(completed)));
    log("info", `order ${event.orderId} completed; ${completed} so far`);
    if (completed < 0) {
      // How a step fails: throw { tag: "retryable", val } to be retried with backoff,
      // { tag: "fatal", val } to dead-letter at once; any other exception is a trap.
      throw { tag: "fatal", val: "the count went negative" };
    }
    // delayMs: publish the event that many milliseconds later (a durable timer).
    const payload = JSON.stringify({ order_id: event.orderId, completed });
    return [{ kind: "{{name}}.counted", payload, delayMs: undefined }];
  },
};
