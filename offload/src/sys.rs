//! The crate's only unsafe code: the bpf(2) commands it uses, `SO_ATTACH_BPF` and the
//! monotonic clock, as safe functions over owned descriptors and checked slices (the netlink
//! socket comes from `sluice-sys`).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_int = 4;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_ANY`: create or replace.
const BPF_ANY: u64 = 0;
/// `BPF_NOEXIST`: create only.
const BPF_NOEXIST: u64 = 1;
/// `setsockopt` option attaching an eBPF socket filter by program fd.
const SO_ATTACH_BPF: libc::c_int = 50;

/// `union bpf_attr` for `BPF_MAP_CREATE` (the leading fields; the kernel zero-extends).
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `union bpf_attr` for the element commands.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for `BPF_PROG_LOAD`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// The attribute structs `bpf` may be given: plain data whose pointers the caller made valid.
trait Attr {}
impl Attr for MapCreateAttr {}
impl Attr for MapElemAttr {}
impl Attr for ProgLoadAttr {}

/// bpf(2); every pointer inside `attr` must be valid for what `cmd` does with it.
fn bpf<A: Attr>(cmd: libc::c_int, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, writable `#[repr(C)]` prefix of `union bpf_attr` of the size
    // passed; the pointers inside it are checked by the callers below (slices of the map's key
    // and value sizes, a live instruction buffer, license and log buffer).
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, size_of::<A>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Takes ownership of a descriptor bpf(2) returned.
fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: `fd` is a new descriptor the kernel just returned to us and nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) }
}

/// A name for the kernel's `bpftool` listings: at most 15 bytes and a NUL.
fn obj_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = name.len().min(15);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// A BPF map (hash or array): its descriptor and the key and value sizes every access is
/// checked against.
#[derive(Debug)]
pub(crate) struct Map {
    fd: OwnedFd,
    key_size: usize,
    value_size: usize,
}

impl Map {
    /// Creates a hash map of `max_entries` entries.
    pub(crate) fn hash(
        name: &str,
        key_size: usize,
        value_size: usize,
        max_entries: u32,
    ) -> io::Result<Map> {
        Map::create(BPF_MAP_TYPE_HASH, name, key_size, value_size, max_entries)
    }

    /// Creates an array map of `max_entries` zeroed values, keyed by a `u32` index.
    pub(crate) fn array(name: &str, value_size: usize, max_entries: u32) -> io::Result<Map> {
        Map::create(BPF_MAP_TYPE_ARRAY, name, 4, value_size, max_entries)
    }

    fn create(
        map_type: u32,
        name: &str,
        key_size: usize,
        value_size: usize,
        max_entries: u32,
    ) -> io::Result<Map> {
        let mut attr = MapCreateAttr {
            map_type,
            key_size: key_size as u32,
            value_size: value_size as u32,
            max_entries,
            map_name: obj_name(name),
            ..MapCreateAttr::default()
        };
        let fd = owned(bpf(BPF_MAP_CREATE, &mut attr)?);
        Ok(Map {
            fd,
            key_size,
            value_size,
        })
    }

    /// The descriptor, for `ld_map_fd`.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    fn elem(&self, key: &[u8], value: u64) -> MapElemAttr {
        assert_eq!(key.len(), self.key_size, "key of the wrong size");
        MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            pad: 0,
            key: key.as_ptr() as u64,
            value,
            flags: BPF_ANY,
        }
    }

    /// Creates or replaces `key`'s value.
    pub(crate) fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.write(key, value, BPF_ANY)
    }

    /// Creates `key`'s value; false (and nothing written) when `key` is already there.
    pub(crate) fn insert_new(&self, key: &[u8], value: &[u8]) -> io::Result<bool> {
        match self.write(key, value, BPF_NOEXIST) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn write(&self, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
        assert_eq!(value.len(), self.value_size, "value of the wrong size");
        let mut attr = self.elem(key, value.as_ptr() as u64);
        attr.flags = flags;
        // The kernel only reads key_size and value_size bytes, both checked.
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
    }

    /// Reads `key`'s value into `value`; false when absent.
    pub(crate) fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        assert_eq!(value.len(), self.value_size, "value of the wrong size");
        // The kernel writes value_size bytes, checked.
        absent_is_false(bpf(
            BPF_MAP_LOOKUP_ELEM,
            &mut self.elem(key, value.as_mut_ptr() as u64),
        ))
    }

    /// Deletes `key`; false when it was absent.
    pub(crate) fn delete(&self, key: &[u8]) -> io::Result<bool> {
        absent_is_false(bpf(BPF_MAP_DELETE_ELEM, &mut self.elem(key, 0)))
    }

    /// Writes the key after `key` (the first key for None) into `next`; false at the end.
    pub(crate) fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> io::Result<bool> {
        assert_eq!(next.len(), self.key_size, "key of the wrong size");
        let out = next.as_mut_ptr() as u64;
        let mut attr = match key {
            Some(key) => self.elem(key, out),
            // A null key asks for the first key.
            None => MapElemAttr {
                map_fd: self.fd.as_raw_fd() as u32,
                pad: 0,
                key: 0,
                value: out,
                flags: 0,
            },
        };
        // The kernel reads key_size bytes of `key` and writes key_size bytes to `next`.
        absent_is_false(bpf(BPF_MAP_GET_NEXT_KEY, &mut attr))
    }
}

fn absent_is_false(rc: io::Result<libc::c_long>) -> io::Result<bool> {
    match rc {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Loads a program of `prog_type` from its instruction bytes. With a non-empty `log`, the
/// verifier writes its log there (level 1; the tail is kept when it is too long).
pub(crate) fn prog_load(
    prog_type: u32,
    name: &str,
    insns: &[u8],
    log: &mut [u8],
) -> io::Result<OwnedFd> {
    assert_eq!(insns.len() % 8, 0, "instructions are 8 bytes each");
    let license = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: (insns.len() / 8) as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: log.len() as u32,
        // The kernel refuses a log buffer without a size, even with logging off.
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        prog_name: obj_name(name),
        ..ProgLoadAttr::default()
    };
    // The kernel may answer EAGAIN to a load that a retry accepts (libbpf tries 5 times).
    let mut attempts = PROG_LOAD_ATTEMPTS;
    loop {
        match bpf(BPF_PROG_LOAD, &mut attr) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && attempts > 1 => attempts -= 1,
            res => return Ok(owned(res?)),
        }
    }
}

/// How many times a program load is tried while the kernel answers EAGAIN, as libbpf does.
const PROG_LOAD_ATTEMPTS: u32 = 5;

/// `union bpf_attr` for `BPF_PROG_TEST_RUN`.
#[cfg(test)]
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
}

#[cfg(test)]
impl Attr for TestRunAttr {}

/// Runs `prog` once on a frame built from `data` (`BPF_PROG_TEST_RUN`, on the loopback
/// interface); its return value and the frame afterwards.
#[cfg(test)]
pub(crate) fn prog_test_run(prog: BorrowedFd, data: &[u8]) -> io::Result<(u32, Vec<u8>)> {
    prog_test_run_ctx(prog, data, None)
}

/// [`prog_test_run`] with the program's `__sk_buff` context read from `ctx` (the fields the
/// kernel lets a test set, such as `gso_size`).
#[cfg(test)]
pub(crate) fn prog_test_run_ctx(
    prog: BorrowedFd,
    data: &[u8],
    ctx: Option<&[u8]>,
) -> io::Result<(u32, Vec<u8>)> {
    const BPF_PROG_TEST_RUN: libc::c_int = 10;
    let mut out = vec![0u8; data.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data.len() as u32,
        data_size_out: out.len() as u32,
        data_in: data.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ctx_size_in: ctx.map_or(0, |c| c.len() as u32),
        ctx_in: ctx.map_or(0, |c| c.as_ptr() as u64),
        ..TestRunAttr::default()
    };
    // The kernel reads data_size_in bytes of `data` (and ctx_size_in of `ctx`) and writes at
    // most data_size_out to `out`.
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    out.truncate(attr.data_size_out as usize);
    Ok((attr.retval, out))
}

/// `SO_ATTACH_BPF`: runs `prog` (a socket filter) on every frame `socket` receives.
pub(crate) fn attach_socket_filter(socket: BorrowedFd, prog: BorrowedFd) -> io::Result<()> {
    let fd: libc::c_int = prog.as_raw_fd();
    // SAFETY: the option value is a live c_int of the size passed; `socket` is a live fd.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_BPF,
            (&fd as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A NETLINK_ROUTE socket in the calling thread's network namespace; `write` sends a request to
/// the kernel and `read` receives its answers.
pub(crate) fn route_socket() -> io::Result<std::fs::File> {
    sluice_sys::route_socket().map(std::fs::File::from)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live timespec; CLOCK_MONOTONIC always exists, so this cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
