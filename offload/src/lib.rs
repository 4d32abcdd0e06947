//! Flow offload, the kernel half: sluice's userspace pipeline stays the slow path and the only
//! source of policy; once it has validated a flow it installs an exact-match entry per direction
//! here, and a TC program (clsact ingress, cls_bpf direct action) on each host-side interface
//! forwards matching frames inside the kernel with `bpf_redirect`, rewriting MACs, TTL and NAT
//! addresses and ports. A socket filter with the same classification drops exactly those frames
//! from sluice's packet sockets (which see a frame before tc ingress), so nothing is forwarded
//! twice.
#![deny(missing_docs)]

use std::net::IpAddr;
use std::os::fd::BorrowedFd;

/// Why an offload operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    /// The kernel (or our privileges) cannot run the offload: no BPF, no cls_bpf, no CAP_BPF/CAP_NET_ADMIN.
    #[error("flow offload unsupported here: {0}")]
    Unsupported(String),
    /// A bpf(2) command failed.
    #[error("bpf {op}: {source}")]
    Bpf {
        /// The command that failed.
        op: &'static str,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// Attaching to or detaching from an interface failed (netlink).
    #[error("tc on ifindex {ifindex}: {message}")]
    Tc {
        /// The interface.
        ifindex: u32,
        /// What went wrong.
        message: String,
    },
    /// The flow map is full.
    #[error("the offload flow map is full ({0} entries)")]
    Full(u32),
}

/// One direction of a flow as it arrives on an interface: the exact-match key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Ingress interface (the host-side interface sluice reads).
    pub ifindex: u32,
    /// Source address; `src` and `dst` are the same family.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// What the kernel does with a frame of that direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowAction {
    /// `bpf_redirect(egress_ifindex, 0)`: out of that interface.
    pub egress_ifindex: u32,
    /// Always written.
    pub eth_src: [u8; 6],
    /// Always written.
    pub eth_dst: [u8; 6],
    /// A routed hop: TTL / hop limit minus one.
    pub decrement_ttl: bool,
    /// New source address and port (same family).
    pub snat: Option<(IpAddr, u16)>,
    /// New destination address and port.
    pub dnat: Option<(IpAddr, u16)>,
}

/// How much a flow entry forwarded inside the kernel, and when it last did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowUsage {
    /// Frames forwarded (a GSO super-frame counts once).
    pub packets: u64,
    /// Bytes forwarded (Ethernet frame lengths).
    pub bytes: u64,
    /// CLOCK_MONOTONIC nanoseconds, see [`now_ns`].
    pub last_used_ns: u64,
}

/// The loaded programs and their flow map (one per sluiced; fds closed on drop).
pub struct Offload {
    _private: (),
}

impl Offload {
    /// Creates the map (`capacity` entries) and loads both programs.
    pub fn new(capacity: u32) -> Result<Self, OffloadError> {
        Err(OffloadError::Unsupported(format!(
            "not implemented yet (capacity {capacity})"
        )))
    }

    /// Adds a clsact qdisc to `ifindex` (current netns) if it has none, and our ingress filter.
    pub fn attach(&self, ifindex: u32) -> Result<(), OffloadError> {
        Err(OffloadError::Tc {
            ifindex,
            message: "not implemented yet".into(),
        })
    }

    /// Removes our filter (and the clsact qdisc if we added it). An interface already gone is Ok.
    pub fn detach(&self, ifindex: u32) -> Result<(), OffloadError> {
        Err(OffloadError::Tc {
            ifindex,
            message: "not implemented yet".into(),
        })
    }

    /// The socket-filter program, for SO_ATTACH_BPF on sluice's packet sockets.
    pub fn socket_filter(&self) -> BorrowedFd<'_> {
        unimplemented!()
    }

    /// Installs (or replaces) one direction.
    pub fn insert(&self, _key: &FlowKey, _action: &FlowAction) -> Result<(), OffloadError> {
        Err(OffloadError::Unsupported("not implemented yet".into()))
    }

    /// Removes one direction (absent is Ok).
    pub fn remove(&self, _key: &FlowKey) -> Result<(), OffloadError> {
        Err(OffloadError::Unsupported("not implemented yet".into()))
    }

    /// The entry's counters, None when absent.
    pub fn usage(&self, _key: &FlowKey) -> Result<Option<FlowUsage>, OffloadError> {
        Err(OffloadError::Unsupported("not implemented yet".into()))
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<(), OffloadError> {
        Err(OffloadError::Unsupported("not implemented yet".into()))
    }
}

/// Now on the clock of `FlowUsage::last_used_ns` (CLOCK_MONOTONIC, ns).
pub fn now_ns() -> u64 {
    0
}
