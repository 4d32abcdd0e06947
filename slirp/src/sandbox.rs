//! `--enable-sandbox` / `--enable-seccomp`: accepted for compatibility. Neither confines the
//! process yet; each says so once on stderr.
#![forbid(unsafe_code)]

/// Reports which of the requested confinements are not applied.
pub fn enter(sandbox: bool, seccomp: bool) {
    if sandbox {
        eprintln!("sluice-slirp: --enable-sandbox: not applied yet (no mount namespace)");
    }
    if seccomp {
        eprintln!("sluice-slirp: --enable-seccomp: not applied yet (no syscall filter)");
    }
}
