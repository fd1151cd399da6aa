//! What the command's test files share: the binary under test, run with none of the
//! caller's `EVSTREAM_*` settings, and a child process killed when its test ends.
// Each test file is a crate of its own and uses part of this module.
#![allow(dead_code)]

use std::process::{Child, Command};

/// The `evstream` binary cargo built for these tests, without the environment's `EVSTREAM_*`
/// variables (a developer's `EVSTREAM_REDIS_URL` would point a test at their Redis).
pub(crate) fn evstream() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_evstream"));
    for (name, _) in std::env::vars() {
        if name.starts_with("EVSTREAM_") {
            command.env_remove(name);
        }
    }
    command
}

/// Kills the child when the test ends, passing or not.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
