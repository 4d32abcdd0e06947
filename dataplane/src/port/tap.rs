//! TAP port: a `/dev/net/tun` descriptor in TAP mode with the virtio-net header
//! (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`), so that the kernel hands sluice GSO super-frames and
//! checksum-partial frames (enabled with `TUNSETOFFLOAD`) and accepts them back.
//!
//! Every read returns one frame preceded by its 10-byte virtio-net header, and every write
//! takes one: TAP has no batch syscall, so RX is a loop of `read()` until `EAGAIN` or a full
//! batch, and TX is one `write()` per frame (vhost-net, which would batch through virtqueues,
//! needs a VM-style memory table and is not used here). GSO keeps the number of syscalls per
//! byte low for bulk TCP.
//!
//! With [`TapConfig::multi_queue`] (`IFF_MULTI_QUEUE`) each `open` of the same name attaches
//! one more queue, one per worker; the kernel spreads flows over the queues.
//!
//! The device is created in the network namespace of the opening thread and vanishes when its
//! last descriptor is closed unless it was made persistent beforehand (`ip tuntap add`).

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use super::egress::{copy_retagged, retag_offload, VLAN_TAG_LEN};
use super::{KernelPortStats, RxPort, TxError, TxPort};
use crate::batch::Batch;
use crate::frame::{Frame, Meta, PortId, HEADROOM};
use crate::wire::vnet::{read_vnet, write_vnet, VNET_HDR_LEN};

/// Largest frame a TAP read or write carries: a 64 KiB IP packet, Ethernet header and a tag.
pub const TAP_MAX_FRAME: usize = 65535 + 14 + VLAN_TAG_LEN;

/// Options of a TAP port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapConfig {
    /// Attach as one queue of a multi-queue device (`IFF_MULTI_QUEUE`): open once per worker.
    pub multi_queue: bool,
    /// Receive buffers (each `HEADROOM` + 10 + [`TAP_MAX_FRAME`] bytes, about 64 KiB): the most
    /// frames one `rx` returns.
    pub rx_buffers: usize,
    /// Whether this queue's [`RxPort::kernel_stats`] also reports the device's own counters
    /// (frames the kernel dropped because sluice's queues were full). The kernel keeps them
    /// per device, not per queue: exactly one queue of a multi-queue device should say yes.
    pub device_counters: bool,
}

impl Default for TapConfig {
    /// Single queue, 64 receive buffers (4 MiB), reporting the device's counters.
    fn default() -> Self {
        TapConfig {
            multi_queue: false,
            rx_buffers: 64,
            device_counters: true,
        }
    }
}

/// The setup step that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapStep {
    /// Checking the interface name.
    Name,
    /// `open("/dev/net/tun")`.
    Open,
    /// `TUNSETIFF`.
    SetIff,
    /// `TUNSETVNETHDRSZ`.
    VnetHdrSize,
    /// `TUNSETOFFLOAD`.
    Offload,
}

impl std::fmt::Display for TapStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TapStep::Name => "checking the name (1 to 15 bytes, no NUL)",
            TapStep::Open => "opening /dev/net/tun",
            TapStep::SetIff => "attaching to the device (TUNSETIFF)",
            TapStep::VnetHdrSize => "setting the virtio-net header size",
            TapStep::Offload => "enabling offloads (TUNSETOFFLOAD)",
        })
    }
}

/// Why a TAP port could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("TAP port {ifname}: {step}: {source}")]
pub struct TapError {
    /// The interface.
    pub ifname: String,
    /// What was being done.
    pub step: TapStep,
    /// The error.
    pub source: io::Error,
}

/// Offloads sluice accepts from the kernel; UDP segmentation (USO) is asked for first and
/// dropped when the kernel does not know it.
const OFFLOADS: libc::c_uint =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
const OFFLOADS_USO: libc::c_uint = OFFLOADS | libc::TUN_F_USO4 | libc::TUN_F_USO6;

/// Opens (creating it if needed) the TAP device `ifname` and returns the port's two halves.
pub fn open(ifname: &str, id: PortId, config: &TapConfig) -> Result<(TapRx, TapTx), TapError> {
    let err = |step: TapStep| {
        move |source: io::Error| TapError {
            ifname: ifname.to_owned(),
            step,
            source,
        }
    };
    let mut ifr = tun::ifreq();
    if ifname.is_empty() || ifname.len() >= ifr.ifr_name.len() || ifname.contains('\0') {
        return Err(err(TapStep::Name)(io::Error::from(
            io::ErrorKind::InvalidInput,
        )));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
    if config.multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;

    // O_CLOEXEC is added by std.
    let fd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .map_err(err(TapStep::Open))?;
    tun::set_iff(&fd, &mut ifr).map_err(err(TapStep::SetIff))?;
    tun::set_vnet_hdr_size(&fd, VNET_HDR_LEN as libc::c_int).map_err(err(TapStep::VnetHdrSize))?;
    if tun::set_offload(&fd, OFFLOADS_USO).is_err() {
        tun::set_offload(&fd, OFFLOADS).map_err(err(TapStep::Offload))?;
    }

    let fd = Arc::new(fd);
    // The device may be persistent and older than the port: its counters count from here.
    let device = config.device_counters.then(|| DeviceCounters {
        ifname: ifname.to_owned(),
        seen: Cell::new(device_tx_counters(ifname).unwrap_or_default()),
    });
    let rx = TapRx {
        id,
        fd: Arc::clone(&fd),
        bufs: (0..config.rx_buffers.max(1))
            .map(|_| vec![0u8; HEADROOM + TAP_MAX_FRAME].into_boxed_slice())
            .collect(),
        malformed: 0,
        read_errors: 0,
        reported: Cell::new(KernelPortStats::default()),
        device,
    };
    let tx = TapTx {
        fd,
        stage: vec![0u8; VNET_HDR_LEN + TAP_MAX_FRAME].into_boxed_slice(),
    };
    Ok((rx, tx))
}

/// The receiving half of a TAP port: one `read` per frame into preallocated buffers.
#[derive(Debug)]
pub struct TapRx {
    id: PortId,
    fd: Arc<File>,
    /// Each read lands at `HEADROOM - VNET_HDR_LEN`, so the frame starts at `HEADROOM`.
    bufs: Vec<Box<[u8]>>,
    malformed: u64,
    read_errors: u64,
    /// What `kernel_stats` reported of this queue's own counters so far (it reports deltas).
    reported: Cell<KernelPortStats>,
    /// The device's counters, when this queue reports them.
    device: Option<DeviceCounters>,
}

/// The kernel's per-device counters of a TAP as last read: the side the kernel transmits on is
/// the one sluice reads, so `tx_dropped` counts frames lost before sluice could read them.
#[derive(Debug)]
struct DeviceCounters {
    ifname: String,
    seen: Cell<TapTxCounters>,
}

/// A TAP device's `tx_packets` and `tx_dropped` (from `/proc/net/dev`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TapTxCounters {
    packets: u64,
    dropped: u64,
}

impl TapRx {
    /// Frames skipped since opening because they were shorter than an Ethernet header or their
    /// virtio-net header was invalid.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Reads that failed since opening with an error other than "nothing pending".
    pub fn read_errors(&self) -> u64 {
        self.read_errors
    }
}

/// The TAP's frames as the kernel counted them since the last call, for
/// [`RxPort::kernel_stats`]: the device's (if this queue reports them) plus this queue's own
/// losses. `seen` is the device's previous reading and `own` this queue's cumulative malformed
/// frames and failed reads (as lost frames), `own_reported` their value at the previous call.
fn tap_kernel_delta(
    seen: TapTxCounters,
    now: TapTxCounters,
    own: KernelPortStats,
    own_reported: KernelPortStats,
) -> KernelPortStats {
    // A device re-created under the same name restarts its counters: count from zero then.
    let since = |now: u64, seen: u64| now.checked_sub(seen).unwrap_or(now);
    let dropped = since(now.dropped, seen.dropped);
    KernelPortStats {
        packets: since(now.packets, seen.packets) + dropped + (own.packets - own_reported.packets),
        drops: dropped + (own.drops - own_reported.drops),
        freezes: 0,
    }
}

/// `tx_packets` and `tx_dropped` of interface `ifname` in a `/proc/net/dev` text.
fn parse_proc_net_dev(text: &str, ifname: &str) -> Option<TapTxCounters> {
    let fields = text.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        (name.trim() == ifname).then_some(rest)
    })?;
    let n: Vec<u64> = fields
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop ...
    Some(TapTxCounters {
        packets: *n.get(9)?,
        dropped: *n.get(11)?,
    })
}

/// The device counters of TAP `ifname` in the calling thread's network namespace.
fn device_tx_counters(ifname: &str) -> Option<TapTxCounters> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").ok()?;
    parse_proc_net_dev(&text, ifname)
}

impl RxPort for TapRx {
    fn rx<'a>(&'a mut self, batch: &mut Batch<'a>) -> io::Result<usize> {
        let mut fd: &File = &self.fd;
        let id = self.id;
        let mut n = 0;
        for buf in self.bufs.iter_mut() {
            if batch.is_full() {
                break;
            }
            let area = &mut buf[HEADROOM - VNET_HDR_LEN..];
            // One read(2) per frame.
            let got = match fd.read(area) {
                Ok(got) => got,
                Err(e) => {
                    if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
                        return Ok(n);
                    }
                    self.read_errors += 1;
                    // Report the error once the frames already read are processed.
                    return if n > 0 { Ok(n) } else { Err(e) };
                }
            };
            if got == 0 {
                break;
            }
            let offload = match read_vnet(area) {
                Ok(off) if got >= VNET_HDR_LEN + 14 => off,
                _ => {
                    self.malformed += 1;
                    continue;
                }
            };
            let meta = Meta {
                ingress: id,
                offload,
                ..Meta::default()
            };
            let Some(frame) = Frame::new(buf, HEADROOM, got - VNET_HDR_LEN, meta) else {
                self.malformed += 1;
                continue;
            };
            if batch.push(frame).is_err() {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Nothing to give back: the buffers are reused by the next `rx`.
    fn release(&mut self) {}

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    /// The device's frames toward sluice and the ones it dropped (its queues were full), if
    /// this queue reports them, plus the frames this queue skipped as malformed and its failed
    /// reads (each a lost frame), since the last call.
    fn kernel_stats(&self) -> io::Result<KernelPortStats> {
        // A frame skipped as malformed was read, so the device counted it as sent; a failed
        // read lost its frame before the device counted it.
        let own = KernelPortStats {
            packets: self.read_errors,
            drops: self.malformed + self.read_errors,
            freezes: 0,
        };
        let (seen, now) = match &self.device {
            Some(d) => {
                let seen = d.seen.get();
                let now = device_tx_counters(&d.ifname).unwrap_or(seen);
                d.seen.set(now);
                (seen, now)
            }
            None => Default::default(),
        };
        Ok(tap_kernel_delta(seen, now, own, self.reported.replace(own)))
    }
}

/// The transmitting half of a TAP port: one `write` per frame from a staging buffer holding the
/// virtio-net header and the retagged frame.
#[derive(Debug)]
pub struct TapTx {
    fd: Arc<File>,
    stage: Box<[u8]>,
}

impl TxPort for TapTx {
    fn send(&mut self, frame: &Frame<'_>, tag: Option<u16>) -> Result<(), TxError> {
        let (vnet, eth) = self.stage.split_at_mut(VNET_HDR_LEN);
        let len = copy_retagged(frame, tag, eth)?;
        let delta = len as isize - frame.len() as isize;
        write_vnet(&retag_offload(&frame.meta.offload, delta), vnet)?;
        let total = VNET_HDR_LEN + len;
        // One write(2) per frame; a TAP write takes the whole frame or fails.
        match (&*self.fd).write(&self.stage[..total]) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(TxError::Full),
            Err(e) => Err(TxError::Io(e)),
        }
    }

    /// Nothing to do: `send` already wrote.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The TUN/TAP ioctls, as safe functions.
#[allow(unsafe_code)]
mod tun {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;

    use super::super::cvt;

    /// An all-zero `ifreq`.
    pub(super) fn ifreq() -> libc::ifreq {
        // SAFETY: ifreq is plain data (integers, byte arrays, a union of those); all-zero is a
        // valid value.
        unsafe { std::mem::zeroed() }
    }

    /// `TUNSETIFF`: attaches the descriptor to the device named in `ifr`, with its flags.
    pub(super) fn set_iff(fd: &File, ifr: &mut libc::ifreq) -> io::Result<()> {
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `ifr` is, for the whole call.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, ifr as *mut libc::ifreq) })
            .map(drop)
    }

    /// `TUNSETVNETHDRSZ`: the size of the virtio-net header in front of every frame.
    pub(super) fn set_vnet_hdr_size(fd: &File, len: libc::c_int) -> io::Result<()> {
        // SAFETY: TUNSETVNETHDRSZ reads one int, which `len` is, for the whole call.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) }).map(drop)
    }

    /// `TUNSETOFFLOAD`: the offloads the device may hand over.
    pub(super) fn set_offload(fd: &File, flags: libc::c_uint) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes the flags by value and reads no memory of ours.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, flags as libc::c_ulong) })
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::port::afpacket::{self, AfPacketConfig};
    use crate::port::testnet::{
        collect, forward, is_test_frame, test_frame, with_headroom, Netns, RawSock,
    };

    #[test]
    fn bad_names_are_refused() {
        let e = open("", PortId(0), &TapConfig::default()).unwrap_err();
        assert_eq!(e.step, TapStep::Name);
        let e = open("sl-name-far-too-long", PortId(0), &TapConfig::default()).unwrap_err();
        assert_eq!(e.step, TapStep::Name);
        assert!(e.to_string().contains("sl-name-far-too-long"), "{e}");
    }

    #[test]
    fn rx_and_tx_through_a_tap() {
        let ns = Netns::new("t");
        let config = TapConfig {
            rx_buffers: 8,
            ..TapConfig::default()
        };
        let (mut rx, mut tx) = ns.enter(|| open("tp0", PortId(4), &config)).unwrap();
        ns.ip("link set dev tp0 up");
        assert!(ns.ip("-d link show dev tp0").contains("tun type tap"));
        let features =
            crate::port::testnet::run("ip", &["netns", "exec", &ns.name, "ethtool", "-k", "tp0"]);
        for on in ["tx-checksumming: on", "tcp-segmentation-offload: on"] {
            assert!(features.contains(on), "{on}: {features}");
        }
        eprintln!(
            "USO: {}",
            features
                .lines()
                .find(|l| l.contains("tx-udp-segmentation"))
                .unwrap_or("-")
        );
        let raw = ns.enter(|| RawSock::open("tp0"));

        // Kernel -> port: what the kernel transmits on tp0 is read by sluice.
        let plain = test_frame(None, 1, 100);
        let tagged = test_frame(Some(7), 2, 100);
        raw.send(&plain);
        raw.send(&tagged);
        let got = collect(&mut rx, 2, Duration::from_secs(3), |f, m| {
            assert_eq!(m.ingress, PortId(4));
            is_test_frame(f, 1) || is_test_frame(f, 2)
        });
        let frames: Vec<_> = got.into_iter().map(|(b, _)| b).collect();
        assert_eq!(frames, vec![plain, tagged]);

        // Port -> kernel: what sluice writes is received on tp0.
        let mut b = with_headroom(&test_frame(None, 3, 60));
        let len = b.len() - HEADROOM;
        let f = Frame::new(&mut b, HEADROOM, len, Meta::default()).unwrap();
        tx.send(&f, Some(12)).unwrap();
        tx.send(&f, None).unwrap();
        tx.flush().unwrap();
        let seen = raw.capture(2, |f| is_test_frame(f, 3));
        assert_eq!(
            seen,
            vec![test_frame(Some(12), 3, 60), test_frame(None, 3, 60)]
        );

        // An invalid offload header is refused by the kernel, not hidden.
        let mut bad = f;
        bad.meta.offload.csum_partial = true;
        bad.meta.offload.csum_start = 60000;
        assert!(matches!(tx.send(&bad, None), Err(TxError::Io(_))));

        // rx never blocks: it returns at once whether or not the kernel queued something of
        // its own meanwhile (IPv6 DAD/MLD frames on a fresh link may arrive at any time).
        let mut batch = Batch::new();
        let t = Instant::now();
        rx.rx(&mut batch).unwrap();
        assert!(t.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn multi_queue_attaches_one_fd_per_queue() {
        let ns = Netns::new("q");
        let mq = TapConfig {
            multi_queue: true,
            rx_buffers: 1,
            device_counters: false,
        };
        let (q0, q1) = ns.enter(|| {
            (
                open("tq0", PortId(0), &mq).unwrap(),
                open("tq0", PortId(0), &mq).unwrap(),
            )
        });
        assert!(ns.ip("-d link show dev tq0").contains("multi_queue"));
        assert_ne!(q0.0.raw_fd(), q1.0.raw_fd());
        // A single-queue open of a multi-queue device is refused.
        let single = TapConfig {
            rx_buffers: 1,
            ..TapConfig::default()
        };
        let e = ns.enter(|| open("tq0", PortId(0), &single)).unwrap_err();
        assert_eq!(e.step, TapStep::SetIff);
    }

    #[test]
    fn proc_net_dev_gives_the_tx_side() {
        let text = "Inter-|   Receive                            |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
            lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  \
            tp0: 9000 30 1 2 0 0 0 0 64000 1000 0 1500 0 0 0 0\n\
            averyverylongnm:1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n";
        let tx = |n| parse_proc_net_dev(text, n);
        assert_eq!(
            tx("tp0"),
            Some(TapTxCounters {
                packets: 1000,
                dropped: 1500
            })
        );
        assert_eq!(
            tx("averyverylongnm"),
            Some(TapTxCounters {
                packets: 10,
                dropped: 12
            })
        );
        assert_eq!(tx("tp"), None);
        assert_eq!(parse_proc_net_dev("  tp0: 1 2 3\n", "tp0"), None);
    }

    #[test]
    fn kernel_delta_adds_the_device_and_the_queue() {
        let c = |packets, dropped| TapTxCounters { packets, dropped };
        let k = |packets, drops| KernelPortStats {
            packets,
            drops,
            freezes: 0,
        };
        // 100 sent to sluice and 40 dropped since the last reading; the queue skipped 2
        // malformed frames (sent, so in the device's 100) and lost 1 to a failed read.
        let d = tap_kernel_delta(c(1000, 10), c(1100, 50), k(5, 9), k(4, 6));
        assert_eq!(d, k(100 + 40 + 1, 40 + 3));
        // A queue that does not report the device only adds its own losses.
        let d = tap_kernel_delta(c(0, 0), c(0, 0), k(5, 9), k(4, 6));
        assert_eq!(d, k(1, 3));
        // A device re-created under the same name counts from zero.
        let d = tap_kernel_delta(c(1000, 10), c(7, 2), k(0, 0), k(0, 0));
        assert_eq!(d, k(9, 2));
    }

    /// Frames the kernel sends to a TAP nobody reads overrun its queue: the device's drops
    /// show up in `kernel_stats`, as deltas (cleared by each call), and frames read later are
    /// counted as sent.
    #[test]
    fn an_overrun_tap_reports_its_drops() {
        let ns = Netns::new("to");
        let config = TapConfig {
            rx_buffers: 64,
            ..TapConfig::default()
        };
        let (rx, _tx) = ns.enter(|| open("tp0", PortId(5), &config)).unwrap();
        // The device's counters are read in the namespace the port was opened in.
        let stats = |rx: TapRx| {
            ns.enter(move || {
                let s = rx.kernel_stats().unwrap();
                (rx, s)
            })
        };
        ns.ip("link set dev tp0 addrgenmode none");
        ns.ip("link set dev tp0 up");
        let raw = ns.enter(|| RawSock::open("tp0"));
        const SENT: u64 = 3000;
        for _ in 0..SENT {
            raw.send(&test_frame(None, 9, 100));
        }
        let (mut rx, first) = stats(rx);
        eprintln!("{first:?}");
        // The device queue holds 500 frames (tun's default txqueuelen is 500 or 1000).
        assert!((SENT - 1000..SENT).contains(&first.drops), "{first:?}");
        assert_eq!(first.packets, first.drops, "nothing was read yet");
        let mut read = 0;
        loop {
            let mut batch = Batch::new();
            let n = rx.rx(&mut batch).unwrap();
            read += n as u64;
            if n == 0 {
                break;
            }
        }
        let (_, second) = stats(rx);
        assert_eq!(
            second,
            KernelPortStats {
                packets: read,
                drops: 0,
                freezes: 0
            }
        );
        assert_eq!(
            read + first.drops,
            SENT,
            "every frame is read or counted as dropped"
        );
    }

    /// TCP between a namespace behind a veth (AF_PACKET port) and one behind a TAP (the TAP
    /// port), both directions: GSO super-frames cross the TAP both ways.
    #[test]
    fn tcp_through_tap_and_afpacket() {
        let left = Netns::new("tl");
        let mid = Netns::new("tm");
        let right = Netns::new("tr");
        left.ip(&format!(
            "link add name a type veth peer name x netns {}",
            mid.name
        ));
        left.ip("addr add 198.18.4.1/24 dev a");
        left.ip("link set dev a up");
        mid.ip("link set dev x up");
        let small = AfPacketConfig {
            tx_block_count: 4,
            ..AfPacketConfig::default()
        };
        let (mut xr, mut xt) = mid
            .enter(|| afpacket::open("x", PortId(0), &small))
            .unwrap();
        // The TAP lives in `right`; its descriptor is used from here.
        let (mut tr, mut tt) = right
            .enter(|| open("tp0", PortId(1), &TapConfig::default()))
            .unwrap();
        right.ip("addr add 198.18.4.2/24 dev tp0");
        right.ip("link set dev tp0 up");
        let listener = right
            .enter(|| TcpListener::bind("198.18.4.2:5201"))
            .unwrap();
        let each: usize = 32 << 20;
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let fwd = s.spawn(|| forward(&stop, [(&mut xr, &mut xt), (&mut tr, &mut tt)]));
            let server = s.spawn(|| {
                let (mut c, _) = listener.accept().unwrap();
                c.write_all(&vec![0x11; each]).unwrap();
                let mut got = 0;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
                got
            });
            let left = &left;
            let client = s.spawn(move || {
                left.setns();
                let mut c = TcpStream::connect("198.18.4.2:5201").unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = vec![0u8; each];
                c.read_exact(&mut buf).unwrap();
                assert!(buf.iter().all(|&b| b == 0x11));
                c.write_all(&vec![0x22; each]).unwrap();
            });
            client.join().unwrap();
            let got = server.join().unwrap();
            stop.store(true, Ordering::Relaxed);
            let st = fwd.join().unwrap();
            eprintln!("{st:?}");
            assert_eq!(got, each);
            assert!(st.gso[0] > 0, "no GSO frame from the veth side: {st:?}");
            assert!(st.gso[1] > 0, "no GSO frame read from the TAP: {st:?}");
        });
    }
}
