//! What the C ABI's test files share: the workspace, the static library cargo built, a g++
//! build of a C++ source against it, and the calling thread's last error.

use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::process::Command;

use evstream_ffi::{evstream_last_error, evstream_str};

pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The static library cargo built next to this test (all crate types are built together).
pub(crate) fn static_library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    [deps.parent().unwrap(), deps]
        .iter()
        .map(|dir| dir.join("libevstream_ffi.a"))
        .find(|path| path.exists())
        .expect("libevstream_ffi.a next to the test binary")
}

/// Builds `source` (relative to the workspace, or absolute) with g++ and every warning an
/// error, linked against the static library, into `out`.
pub(crate) fn compile(source: impl AsRef<Path>, out: &Path) {
    let root = workspace();
    let source = root.join(source);
    let status = Command::new("g++")
        .args(["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror"])
        .arg(format!("-I{}", root.join("include").display()))
        .arg(&source)
        .arg(static_library())
        .args(["-lpthread", "-ldl", "-lm", "-lrt", "-lutil", "-o"])
        .arg(out)
        .status()
        .expect("g++ (Debian: apt-get install g++)");
    assert!(status.success(), "g++ failed on {}", source.display());
}

/// The calling thread's last error message.
pub(crate) fn last_error() -> String {
    let mut buffer = [0 as c_char; 512];
    // SAFETY: the buffer holds 512 writable bytes.
    unsafe { evstream_last_error(buffer.as_mut_ptr(), buffer.len()) };
    // SAFETY: evstream_last_error NUL-terminates within the buffer.
    unsafe { CStr::from_ptr(buffer.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// A string as the C ABI's pointer and length.
pub(crate) fn s(text: &str) -> evstream_str {
    evstream_str {
        ptr: text.as_ptr().cast(),
        len: text.len(),
    }
}
