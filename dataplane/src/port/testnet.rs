//! Test helpers for ports that need real interfaces: network namespaces created and removed
//! by the test (also when it fails), threads running inside them, and a plain packet socket to
//! inject and capture frames on the kernel side.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::batch::Batch;
use crate::frame::{Meta, Offload, HEADROOM};
use crate::port::{RxPort, TxPort};

/// A network namespace that is deleted when dropped.
pub struct Netns {
    pub name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Netns {
    /// Creates `sl<pid><tag><n>` (unique per run and per test).
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("sl{}{tag}{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        Netns { name }
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &str) -> String {
        let mut v = vec!["-n", self.name.as_str()];
        v.extend(args.split_whitespace());
        run("ip", &v)
    }

    /// Packet sockets bound to `ifname` (the rows of `/proc/net/packet` with its index); the
    /// calling thread must be in the namespace.
    pub fn packet_sockets(&self, ifname: &str) -> usize {
        let link = self.ip(&format!("-o link show dev {ifname}"));
        let ifindex = link.split(':').next().unwrap().trim().to_owned();
        let table = std::fs::read_to_string("/proc/thread-self/net/packet").unwrap();
        table
            .lines()
            .skip(1)
            .filter(|l| l.split_whitespace().nth(4) == Some(ifindex.as_str()))
            .count()
    }

    /// Runs `f` on a thread that entered the namespace (sockets it opens belong there).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.setns();
                f()
            })
            .join()
            .expect("namespace thread panicked")
        })
    }

    /// Moves the calling thread into the namespace (for threads the test spawns itself).
    pub fn setns(&self) {
        let path = format!("/run/netns/{}", self.name);
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: valid descriptor of a network namespace.
        let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(ret, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A plain AF_PACKET socket on one interface: the "kernel side" of a test.
pub struct RawSock {
    fd: OwnedFd,
}

impl RawSock {
    /// Opens it on `ifname` of the calling thread's namespace.
    pub fn open(ifname: &str) -> RawSock {
        // SAFETY: plain socket calls on values we own.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            );
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(fd);
            let name = std::ffi::CString::new(ifname).unwrap();
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sll.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            let ret = libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(ret, 0, "bind: {}", std::io::Error::last_os_error());
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            // The kernel strips received VLAN tags into metadata: ask for it to put them back.
            let one: libc::c_int = 1;
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_AUXDATA,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
            RawSock { fd }
        }
    }

    /// Transmits one frame.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is readable for its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Received frames for which `keep` holds, until `count` were seen or 3 s passed.
    pub fn capture(&self, count: usize, keep: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 70_000];
        let mut cbuf = [0u64; 16];
        while out.len() < count && Instant::now() < deadline {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: msghdr is plain data; the pointers set below outlive the call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&cbuf);
            // SAFETY: `msg` describes valid buffers.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
            if n <= 0 {
                continue;
            }
            let mut frame = buf[..n as usize].to_vec();
            // SAFETY: walking the control messages the kernel wrote into `cbuf`.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA
                    {
                        let aux = libc::CMSG_DATA(c)
                            .cast::<libc::tpacket_auxdata>()
                            .read_unaligned();
                        if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 && frame.len() >= 12 {
                            let mut tag = vec![0x81, 0x00];
                            tag.extend_from_slice(&aux.tp_vlan_tci.to_be_bytes());
                            frame.splice(12..12, tag);
                        }
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            if keep(&frame) {
                out.push(frame);
            }
        }
        out
    }
}

/// Waits until one of `fds` is readable or `timeout` passed (`poll`, as a worker does).
pub fn wait_readable<const N: usize>(fds: [RawFd; N], timeout: Duration) {
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: `pfds` holds `N` valid pollfds for the whole call.
    unsafe {
        libc::poll(
            pfds.as_mut_ptr(),
            N as libc::nfds_t,
            timeout.as_millis() as libc::c_int,
        )
    };
}

/// Receives from `rx` until `count` frames for which `keep` holds were seen or `timeout`
/// passed; returns copies of their bytes and offload state, checking the RX contract (headroom,
/// ingress id) on every frame.
pub fn collect(
    rx: &mut dyn RxPort,
    count: usize,
    timeout: Duration,
    keep: impl Fn(&[u8], &Meta) -> bool,
) -> Vec<(Vec<u8>, Offload)> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        let mut batch = Batch::new();
        let n = rx.rx(&mut batch).expect("rx");
        for f in batch.frames() {
            assert!(f.headroom() >= HEADROOM, "headroom {}", f.headroom());
            if keep(f.data(), &f.meta) {
                out.push((f.data().to_vec(), f.meta.offload));
            }
        }
        drop(batch);
        rx.release();
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    out
}

/// A test frame: broadcast-free unicast to a foreign MAC, ethertype 0x88b5 (local
/// experimental), optionally tagged, with `marker` in the payload.
pub fn test_frame(tag: Option<u16>, marker: u8, payload_len: usize) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x99, 0x02, 0, 0, 0, 0, 0x01];
    if let Some(tci) = tag {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend(std::iter::repeat_n(marker, payload_len));
    f
}

/// True for frames built by [`test_frame`] with this marker (tagged or not).
pub fn is_test_frame(f: &[u8], marker: u8) -> bool {
    let et = if f.get(12..14) == Some(&[0x81, 0x00]) {
        16
    } else {
        12
    };
    f.get(et..et + 2) == Some(&[0x88, 0xb5]) && f.get(et + 2) == Some(&marker)
}

/// A buffer with headroom holding `bytes`, for building frames to send.
pub fn with_headroom(bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; HEADROOM];
    v.extend_from_slice(bytes);
    v
}

/// What [`forward`] did.
#[derive(Debug, Default)]
pub struct FwdStats {
    /// Frames sent.
    pub frames: u64,
    /// Frames dropped on a full TX ring or queue.
    pub full: u64,
    /// GSO frames received, per direction.
    pub gso: [u64; 2],
}

/// A two-port worker loop: frames from `ports[0].0` go out of `ports[1].1` and the reverse,
/// one batch at a time with one flush per batch, until `stop` is set.
pub fn forward(
    stop: &std::sync::atomic::AtomicBool,
    ports: [(&mut dyn RxPort, &mut dyn TxPort); 2],
) -> FwdStats {
    let [(r0, t0), (r1, t1)] = ports;
    let mut dirs: [(&mut dyn RxPort, &mut dyn TxPort); 2] = [(r0, t1), (r1, t0)];
    let mut st = FwdStats::default();
    while !stop.load(Ordering::Relaxed) {
        let mut idle = true;
        for (d, (rx, tx)) in dirs.iter_mut().enumerate() {
            let mut batch = Batch::new();
            let n = rx.rx(&mut batch).expect("rx");
            for f in batch.frames() {
                if f.meta.offload.gso != crate::frame::GsoType::None {
                    st.gso[d] += 1;
                }
                match tx.send(f, None) {
                    Ok(()) => st.frames += 1,
                    Err(crate::port::TxError::Full) => st.full += 1,
                    Err(e) => panic!("send: {e}"),
                }
            }
            drop(batch);
            rx.release();
            tx.flush().expect("flush");
            idle &= n == 0;
        }
        if idle {
            std::thread::yield_now();
        }
    }
    st
}
