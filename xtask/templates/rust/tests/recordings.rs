//! Recordings as tests: each file under tests/recordings/ is one call (an event, the
//! state it read, the host calls it made, what it returned), replayed on the native
//! build. Save a dead letter's with `wasaga dead-letters recording ID -o tests/recordings/x.json`.

use wasaga_sdk::testing::replay;

#[test]
fn every_recording_is_reproduced() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/recordings");
    for file in std::fs::read_dir(dir).expect("tests/recordings") {
        let path = file.expect("a file").path();
        let run = replay::<{{crate}}::Counter>(path.to_str().expect("a UTF-8 path"));
        assert_eq!(run.divergence(), None, "{}: {run}", path.display());
    }
}
