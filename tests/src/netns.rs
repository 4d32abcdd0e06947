//! Running test code inside a network namespace the test made.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Runs `f` on a thread that entered the network namespace at `ns` (a `/run/netns/...` or
/// `/proc/PID/ns/net` path) and returns its result; the calling thread stays where it is.
pub fn in_ns<T: Send + 'static>(ns: impl AsRef<Path>, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.as_ref().to_path_buf();
    std::thread::spawn(move || {
        let file = File::open(&ns).unwrap_or_else(|e| panic!("{}: {e}", ns.display()));
        // SAFETY: setns on a namespace file we opened; it changes only this thread.
        let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            ret,
            0,
            "setns {}: {}",
            ns.display(),
            std::io::Error::last_os_error()
        );
        f()
    })
    .join()
    .unwrap()
}
