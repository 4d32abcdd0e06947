//! `--enable-sandbox`: after the TAP, the API socket and resolv.conf are open, the process moves
//! into a mount namespace of its own whose root is an empty tmpfs (pivot_root), as slirp4netns
//! does; host sockets need no file system. An unprivileged process (not inside a user
//! namespace of its own, e.g. run straight from an `unshare -r -n` user's shell) first makes a
//! user namespace that maps only its own ids. `--enable-seccomp` is accepted, not enforced yet.

use std::ffi::CString;
use std::io;

/// Why the sandbox could not be entered.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct SandboxError {
    what: &'static str,
    source: io::Error,
}

fn check(rc: libc::c_int, what: &'static str) -> Result<(), SandboxError> {
    if rc < 0 {
        return Err(SandboxError {
            what,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in constant paths")
}

/// Maps the current uid/gid to themselves in a fresh user namespace.
fn map_own_ids(uid: u32, gid: u32) -> Result<(), SandboxError> {
    let write = |path: &str, text: String, what| {
        std::fs::write(path, text).map_err(|source| SandboxError { what, source })
    };
    write("/proc/self/setgroups", "deny".into(), "setgroups")?;
    write("/proc/self/uid_map", format!("{uid} {uid} 1"), "uid_map")?;
    write("/proc/self/gid_map", format!("{gid} {gid} 1"), "gid_map")
}

/// A mount namespace of its own (in a user namespace of its own when needed). The process
/// must be single-threaded.
fn own_mount_namespace() -> Result<(), SandboxError> {
    // SAFETY: unshare only changes this (single-threaded) process's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } == 0 {
        return Ok(());
    }
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // SAFETY: as above; a new user namespace gives the capabilities for the mount namespace.
    check(
        unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) },
        "unshare",
    )?;
    map_own_ids(uid, gid)
}

/// Enters the sandbox: own mount namespace, root pivoted to an empty read-only tmpfs.
pub fn enter() -> Result<(), SandboxError> {
    own_mount_namespace()?;
    let (root, tmp, tmpfs, old) = (cstr("/"), cstr("/tmp"), cstr("tmpfs"), cstr("/tmp/old"));
    let opts = cstr("size=16k,mode=0755");
    // SAFETY: every pointer is a NUL-terminated string alive for the call (or null where the
    // kernel allows it); the calls change only this process's private mount namespace.
    unsafe {
        let flags = libc::MS_REC | libc::MS_PRIVATE;
        check(
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ),
            "make / private",
        )?;
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        check(
            libc::mount(
                tmpfs.as_ptr(),
                tmp.as_ptr(),
                tmpfs.as_ptr(),
                flags,
                opts.as_ptr().cast(),
            ),
            "mount tmpfs",
        )?;
        check(libc::mkdir(old.as_ptr(), 0o700), "mkdir old root")?;
        check(
            libc::syscall(libc::SYS_pivot_root, tmp.as_ptr(), old.as_ptr()) as libc::c_int,
            "pivot_root",
        )?;
        check(libc::chdir(root.as_ptr()), "chdir /")?;
        let old = cstr("/old");
        check(
            libc::umount2(old.as_ptr(), libc::MNT_DETACH),
            "umount old root",
        )?;
        check(libc::rmdir(old.as_ptr()), "rmdir old root")?;
        let flags = libc::MS_REMOUNT
            | libc::MS_BIND
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC;
        check(
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ),
            "remount / read-only",
        )?;
    }
    Ok(())
}
