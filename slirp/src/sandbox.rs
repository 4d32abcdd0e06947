//! `--enable-sandbox`: after the TAP, the API socket and resolv.conf are open, the process moves
//! into a mount namespace of its own whose root is an empty tmpfs (pivot_root), as slirp4netns
//! does; host sockets need no file system. An unprivileged process (not inside a user
//! namespace of its own, e.g. run straight from an `unshare -r -n` user's shell) first makes a
//! user namespace that maps only its own ids.

use std::ffi::{CStr, CString};
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
    let rc = unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) };
    check(rc, "unshare")?;
    map_own_ids(uid, gid)
}

/// `mount(2)`; `None` stands for a null pointer.
fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
    what: &'static str,
) -> Result<(), SandboxError> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or a NUL-terminated string alive for the call; mounts
    // change only this process's private mount namespace.
    let rc = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    };
    check(rc, what)
}

/// Enters the sandbox: own mount namespace, root pivoted to an empty read-only tmpfs.
pub fn enter() -> Result<(), SandboxError> {
    own_mount_namespace()?;
    let (root, tmp, tmpfs) = (cstr("/"), cstr("/tmp"), cstr("tmpfs"));
    mount(
        None,
        &root,
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
        "make / private",
    )?;
    let hardened = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let opts = cstr("size=16k,mode=0755");
    mount(
        Some(&tmpfs),
        &tmp,
        Some(&tmpfs),
        hardened,
        Some(&opts),
        "mount tmpfs",
    )?;
    let (old_in_tmp, old) = (cstr("/tmp/old"), cstr("/old"));
    // SAFETY: the paths are NUL-terminated strings alive for each call; the calls act on this
    // process's private mount namespace and its working directory.
    unsafe {
        check(libc::mkdir(old_in_tmp.as_ptr(), 0o700), "mkdir old root")?;
        let rc = libc::syscall(libc::SYS_pivot_root, tmp.as_ptr(), old_in_tmp.as_ptr());
        check(rc as libc::c_int, "pivot_root")?;
        check(libc::chdir(root.as_ptr()), "chdir /")?;
        check(
            libc::umount2(old.as_ptr(), libc::MNT_DETACH),
            "umount old root",
        )?;
        check(libc::rmdir(old.as_ptr()), "rmdir old root")?;
    }
    let read_only = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | hardened;
    mount(None, &root, None, read_only, None, "remount / read-only")
}
