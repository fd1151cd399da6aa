//! Issue 20: the release binary links no test code. `docs/architecture.md` says
//! `cargo tree -p evstream-cli -e normal` lists no `evstream-testkit`; this runs it.

use std::process::Command;

#[test]
fn the_binary_does_not_depend_on_the_test_kit() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let output = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "evstream-cli",
            "-e",
            "normal",
        ])
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        tree.contains("evstream-intellisense"),
        "an unexpected tree:\n{tree}"
    );
    assert!(
        !tree.contains("evstream-testkit"),
        "the release binary pulls in the test kit:\n{tree}"
    );
}
