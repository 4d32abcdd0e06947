//! Driving a daemon of a namespace test through the `sluice` CLI, and waiting for what it
//! does to show.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `sluice --socket SOCK ARGS...` from the release binaries in `bin`.
pub fn sluice(bin: &Path, sock: &Path, args: &[&str]) -> Output {
    Command::new(bin.join("sluice"))
        .arg("--socket")
        .arg(sock)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// [`sluice`] that must succeed; its standard output.
pub fn sluice_ok(bin: &Path, sock: &Path, args: &[&str]) -> String {
    let o = sluice(bin, sock, args);
    assert!(
        o.status.success(),
        "sluice {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits up to `within` for `what` to hold (checked every 100 ms).
pub fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
