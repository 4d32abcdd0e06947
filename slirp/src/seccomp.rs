//! `--enable-seccomp`: once set up, the engine may only make the system calls it uses (as passt
//! does). Anything else fails with EPERM instead of killing the process, so a call missed here
//! degrades one operation rather than the whole network.

use std::io;

/// The system calls the engine makes after start-up (event loop, sockets, allocation,
/// threads' futexes, exit).
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept4,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_unlinkat,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_futex,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_getrandom,
    libc::SYS_sched_yield,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// Offsets in `struct seccomp_data`.
const NR_AT: u32 = 0;
const ARCH_AT: u32 = 4;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// The filter: the native architecture only, then each allowed number → ALLOW, the rest →
/// ERRNO(EPERM).
pub fn program(arch: u32, allowed: &[libc::c_long]) -> Vec<libc::sock_filter> {
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let deny = stmt(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
    );
    let allow = stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW);
    let mut p = vec![
        stmt(load, ARCH_AT),
        jeq(arch, 1, 0),
        deny,
        stmt(load, NR_AT),
    ];
    for nr in allowed {
        p.push(jeq(*nr as u32, 0, 1));
        p.push(allow);
    }
    p.push(deny);
    p
}

/// Installs the filter for this process (no new privileges first, as unprivileged
/// processes must).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn enter() -> io::Result<()> {
    let mut filter = program(AUDIT_ARCH, ALLOWED);
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl with integer arguments; PR_SET_SECCOMP reads `prog`, which points to the
    // live `filter` for the duration of the call (the kernel copies it).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Other architectures: no filter (their system call numbers are not listed here).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn enter() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no seccomp filter for this architecture",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_checks_arch_then_each_call() {
        let p = program(0x1234, &[1, 2]);
        assert_eq!(p.len(), 4 + 2 * 2 + 1);
        assert_eq!((p[1].k, p[1].jt, p[1].jf), (0x1234, 1, 0));
        assert_eq!((p[4].k, p[4].jt, p[4].jf), (1, 0, 1));
        assert_eq!(p[5].k, libc::SECCOMP_RET_ALLOW);
        assert_eq!(p[8].k, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
    }
}
