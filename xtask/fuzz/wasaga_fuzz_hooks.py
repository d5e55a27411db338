"""schemathesis hooks for `cargo xtask fuzz`."""

import schemathesis

# Component uploads are `application/wasm`: bytes, sent as schemathesis sends octet streams.
schemathesis.serializer.alias("application/wasm", "application/octet-stream")
