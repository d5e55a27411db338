"""{{name}}: counts completed orders and says so with a `{{name}}.counted` event.

A step handles one event at a time inside the host's transaction: what it reads and
writes through `state` and the events it returns commit together, or not at all.
"""

import json
import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, state
from wit_world.imports.types import Emit, Manifest, StepError_Fatal, StepError_Retryable


class _HostLog:
    """print() goes to the host's log: the step is built with --stub-wasi, which has no
    stdout of its own."""

    def __init__(self, level):
        self.level = level
        self.pending = ""

    def write(self, text):
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            log.log(self.level, line)
        return len(text)

    def flush(self):
        if self.pending:
            log.log(self.level, self.pending)
            self.pending = ""


sys.stdout = _HostLog(log.Level.INFO)
sys.stderr = _HostLog(log.Level.WARN)


class Handler(exports.Handler):
    def describe(self) -> Manifest:
        # The name must be the file's ({{name}}.wasm); the version is semantic.
        return Manifest(name="{{name}}", version="0.1.0", subscribes=["order.completed"])

    def handle(self, ctx, event):
        # Payloads are JSON text; state values are bytes (JSON here).
        raw = state.get("completed")
        completed = (json.loads(raw) if raw is not None else 0) + 1
        state.put("completed", json.dumps(completed).encode())
        log.log(log.Level.INFO, f"order {event.order_id} completed; {completed} so far")
        if completed < 0:
            # How a step fails: Retryable is retried with backoff, Fatal dead-letters at
            # once; any other exception is a trap, retried like Retryable.
            raise Err(StepError_Fatal("the count went negative"))
        payload = json.dumps({"order_id": event.order_id, "completed": completed}, separators=(",", ":"))
        # delay_ms: publish the event that many milliseconds later (a durable timer).
        return [Emit(kind="{{name}}.counted", payload=payload, delay_ms=None)]


# Keep the import used: Retryable is the other way to fail.
_ = StepError_Retryable
