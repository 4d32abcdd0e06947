//! Flow offload, the dataplane half (issue 16): established flows that the userspace path
//! forwards between two of sluice's packet-socket ports, and that need nothing more of it, are
//! handed to the kernel (`sluice-offload`: a TC program on each port forwards a flow's frames
//! with `bpf_redirect`, a socket filter keeps them from sluice's sockets), so their bytes are
//! no longer copied through userspace.
//!
//! Workers decide (in `pipeline::offload`, per batch, no syscall, lock or allocation per
//! packet): a frame of an established flow (TCP past the handshake, UDP answered) that the
//! userspace path just forwarded, plain (untagged IPv4 TCP/UDP without options, or IPv6 TCP/UDP
//! right after the fixed header), between two
//! ports with an interface index (AF_PACKET ports while the offload runs; not TAP ports) and
//! without a smaller MTU on the way out, bridged between endpoints or translated (NAPT,
//! published port, hairpin) with both directions' shortcuts cached, becomes a [`Request`] in
//! a bounded lock-free queue; the flow is marked so that it is offered once. The offload
//! thread (`thread`) installs both directions, ages them, removes them when the flow closes
//! (FIN and RST always reach userspace) and flushes everything whenever the tables or
//! neighbours change (the epoch advances): the flows' next packets offer them again.
//! IPv6 flows are offered alike (plain: TCP or UDP right after the fixed header): bridged,
//! and tracked by the v6 conntrack (NAT66, published v6 ports, routed v6 networks).

mod build;
mod overlay;
mod run;
mod seen;
mod thread;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crossbeam::queue::ArrayQueue;

pub use build::{bridged, routed, routed6, Direction, FlowTuple, PortOut};
pub use overlay::{flow_key, overlay, overlay_keys, LocalEnd, Tunnel};
pub use run::OffloadRun;
pub use seen::Seen;
pub use sluice_offload::{FlowAction, FlowKey, OffloadError, Vxlan};
use thread::OffloadThread;

use crate::counters::MAX_PORTS;
use crate::frame::PortId;
use crate::nat::FlowId;

/// Requests the queue holds; beyond it an offer is a counted skip.
pub const QUEUE_LEN: usize = 1024;

/// Frames shorter than this (Ethernet header included) do not offer their flow: flows of
/// small packets (request/response, 64-byte streams) go faster through sluice's polling
/// workers than through the kernel's path (measured in bench/RESULTS.md, "Flow offload"),
/// while bulk flows carry full-size frames or GSO super-frames.
pub const MIN_OFFER_LEN: usize = 1024;

/// True when a frame of `len` bytes may offer its flow (see [`MIN_OFFER_LEN`]).
#[inline]
pub fn offers(len: usize) -> bool {
    len >= MIN_OFFER_LEN
}

/// Entries of the kernel's flow map (two per flow).
pub const MAP_CAPACITY: u32 = 65_536;

/// Whether established flows are handed to the kernel (`--offload`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OffloadMode {
    /// Every frame through userspace.
    #[default]
    Off,
    /// Established flows forwarded by a TC program (cls_bpf, clsact ingress).
    Tc,
}

impl FromStr for OffloadMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(OffloadMode::Off),
            "tc" => Ok(OffloadMode::Tc),
            other => Err(format!("unknown offload mode {other:?} (tc or off)")),
        }
    }
}

/// How the offload thread ages an installed flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracked {
    /// By its conntrack entry: kept alive while the kernel forwards it, removed when it
    /// expires.
    Conntrack(FlowId),
    /// By its v6 conntrack entry (its slot; the original tuple is the first direction's
    /// key), as `Conntrack`.
    Conntrack6(u32),
    /// A bridged flow (no conntrack entry): removed after this many idle seconds.
    Bridged {
        /// Idle seconds.
        idle_secs: u32,
    },
}

/// What a worker asks the offload thread to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Install both directions of a flow decided under `epoch` (ignored if the epoch moved).
    Install {
        /// Original (or first seen) direction, then the other.
        dirs: [Direction; 2],
        /// How it ages.
        tracked: Tracked,
        /// The dataplane epoch (low 32 bits) the decision was taken under.
        epoch: u32,
    },
    /// Remove both directions (the flow closed).
    Remove {
        /// Both directions' keys.
        keys: [FlowKey; 2],
    },
}

/// The offload's counters, as `sluice stats` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OffloadStats {
    /// The offload runs (`--offload tc` and the kernel supports it).
    pub enabled: bool,
    /// Flows queued for offload by the workers.
    pub offered: u64,
    /// Flows installed in the kernel (both directions).
    pub installed: u64,
    /// Flows removed (closed, expired, idle, or flushed by a table change).
    pub removed: u64,
    /// Flows in the kernel now.
    pub active: u64,
    /// Offers skipped: the queue was full.
    pub skipped_queue_full: u64,
    /// Installs skipped: the kernel's flow map was full.
    pub skipped_map_full: u64,
    /// Installs or removals that failed otherwise.
    pub failed: u64,
    /// Packets the kernel forwarded for offloaded flows.
    pub kernel_packets: u64,
    /// Bytes the kernel forwarded for offloaded flows.
    pub kernel_bytes: u64,
}

/// The offload state workers share: on/off, each port's interface index, the request queue,
/// the bridged flows' record and the counters.
#[derive(Debug)]
pub struct Offloads {
    enabled: AtomicBool,
    queue: ArrayQueue<Request>,
    ifindex: Box<[AtomicU32]>,
    seen: Seen,
    offered: AtomicU64,
    installed: AtomicU64,
    removed: AtomicU64,
    active: AtomicU64,
    queue_full: AtomicU64,
    map_full: AtomicU64,
    failed: AtomicU64,
    kernel_packets: AtomicU64,
    kernel_bytes: AtomicU64,
    /// Why the offload asked for does not run, or the last port it could not attach to.
    error: parking_lot::Mutex<Option<String>>,
    /// The offload thread while it runs: it sleeps until an offer or an epoch change wakes it
    /// (or its next aging).
    thread: parking_lot::Mutex<Option<std::thread::Thread>>,
}

impl Default for Offloads {
    fn default() -> Self {
        Offloads::with_queue(QUEUE_LEN)
    }
}

impl Offloads {
    /// Off, with a queue of `len` requests.
    pub fn with_queue(len: usize) -> Self {
        Offloads {
            enabled: AtomicBool::new(false),
            queue: ArrayQueue::new(len.max(1)),
            ifindex: (0..MAX_PORTS).map(|_| AtomicU32::new(0)).collect(),
            seen: Seen::default(),
            offered: AtomicU64::new(0),
            installed: AtomicU64::new(0),
            removed: AtomicU64::new(0),
            active: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            map_full: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            kernel_packets: AtomicU64::new(0),
            kernel_bytes: AtomicU64::new(0),
            error: parking_lot::Mutex::new(None),
            thread: parking_lot::Mutex::new(None),
        }
    }

    /// Records why the offload (or its attachment to a port) failed.
    pub fn set_error(&self, e: String) {
        *self.error.lock() = Some(e);
    }

    /// Why the offload asked for does not run, or the last port it could not attach to;
    /// taken, so that each is logged once.
    pub fn take_error(&self) -> Option<String> {
        self.error.lock().take()
    }

    /// True while the offload runs: workers offer flows (read once per batch).
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Turns offers on or off (the runtime, when the offload thread starts and stops).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Release);
    }

    /// The interface index of `port` when its flows may be offloaded (an AF_PACKET port the
    /// TC program is attached to), else 0.
    #[inline]
    pub fn ifindex(&self, port: PortId) -> u32 {
        self.ifindex
            .get(usize::from(port.0))
            .map_or(0, |i| i.load(Ordering::Relaxed))
    }

    /// Records `port`'s interface index (0: not offloadable).
    pub fn set_ifindex(&self, port: PortId, ifindex: u32) {
        if let Some(i) = self.ifindex.get(usize::from(port.0)) {
            i.store(ifindex, Ordering::Relaxed);
        }
    }

    /// The bridged flows' record.
    #[inline]
    pub fn seen(&self) -> &Seen {
        &self.seen
    }

    /// Queues `r` for the offload thread and wakes it (once per flow opening or closing,
    /// never per packet); false (counted) when the queue is full.
    pub fn offer(&self, r: Request) -> bool {
        let install = matches!(r, Request::Install { .. });
        match self.queue.push(r) {
            Ok(()) => {
                if install {
                    self.offered.fetch_add(1, Ordering::Relaxed);
                }
                self.wake();
                true
            }
            Err(_) => {
                self.queue_full.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Records the offload thread that offers and epoch changes wake (`None` when it stops).
    pub(crate) fn set_thread(&self, t: Option<std::thread::Thread>) {
        *self.thread.lock() = t;
    }

    /// Wakes the offload thread (it sleeps until there is something to do): a request was
    /// queued, or the epoch advanced and installed flows must be flushed. Called once per
    /// event, never per packet.
    pub(crate) fn wake(&self) {
        if let Some(t) = self.thread.lock().as_ref() {
            t.unpark();
        }
    }

    /// The next queued request (the offload thread).
    pub fn next_request(&self) -> Option<Request> {
        self.queue.pop()
    }

    /// The counters now.
    pub fn stats(&self) -> OffloadStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        OffloadStats {
            enabled: self.enabled(),
            offered: get(&self.offered),
            installed: get(&self.installed),
            removed: get(&self.removed),
            active: get(&self.active),
            skipped_queue_full: get(&self.queue_full),
            skipped_map_full: get(&self.map_full),
            failed: get(&self.failed),
            kernel_packets: get(&self.kernel_packets),
            kernel_bytes: get(&self.kernel_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A removal of a flow from 10.0.0.1:1 to 10.0.0.2:2.
    fn remove(proto: u8) -> Request {
        Request::Remove {
            keys: [FlowKey {
                ifindex: 1,
                src: [10, 0, 0, 1].into(),
                dst: [10, 0, 0, 2].into(),
                proto,
                sport: 1,
                dport: 2,
            }; 2],
        }
    }

    #[test]
    fn a_full_queue_is_a_counted_skip() {
        let o = Offloads::with_queue(1);
        let remove = remove(6);
        assert!(o.offer(remove));
        assert!(!o.offer(remove));
        assert_eq!(o.stats().skipped_queue_full, 1);
        assert_eq!(o.next_request(), Some(remove));
        assert_eq!(o.next_request(), None);
        assert!(o.offer(remove));
    }

    #[test]
    fn an_offer_wakes_the_parked_offload_thread() {
        let o = std::sync::Arc::new(Offloads::with_queue(4));
        let waiter = std::sync::Arc::clone(&o);
        let t = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while waiter.next_request().is_none() && start.elapsed().as_secs() < 30 {
                std::thread::park_timeout(std::time::Duration::from_secs(30));
            }
            start.elapsed()
        });
        o.set_thread(Some(t.thread().clone()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(o.offer(remove(17)));
        let waited = t.join().unwrap();
        assert!(
            waited.as_secs() < 10,
            "woken by the offer, not by its timeout: {waited:?}"
        );
    }

    #[test]
    fn modes_parse() {
        assert_eq!("tc".parse(), Ok(OffloadMode::Tc));
        assert_eq!("off".parse(), Ok(OffloadMode::Off));
        assert!("xdp".parse::<OffloadMode>().is_err());
    }
}
