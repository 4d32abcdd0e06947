//! NAPT connection tracking at the tuple level: which flow a packet belongs to and which tuple
//! it must carry after translation. Parsing frames and rewriting bytes (and checksums) is the
//! pipeline's job; it calls [`Conntrack`] under one lock per batch.
//!
//! # Semantics
//! A flow is created from the tuple of its first packet (the *original* tuple) and a
//! [`NatAction`]. The *translated* tuple is the original with the source rewritten (SNAT, with
//! an allocated port or ICMP echo id) and/or the destination rewritten (DNAT). The *reply*
//! tuple is the translated tuple reversed. [`Conntrack::lookup`] matches either: an original
//! packet is rewritten to the translated tuple, a reply packet to the original tuple reversed,
//! so translating then reversing is the identity.
//!
//! SNAT mapping is endpoint-dependent (like Linux MASQUERADE): only the reply tuple must be
//! unique, so one external address carries far more than 64k flows when destinations differ.
//! The allocator keeps the original source port when it is in
//! [`NatConfig::ports`](crate::config::NatConfig::ports) and free, otherwise probes the range
//! from a hash-derived start. Uniqueness is checked against the
//! tuple index itself, so there is no separate port bitmap to keep in sync: a port is free
//! again as soon as its flow is removed or expires.
//!
//! # Cost model
//! - Memory: a slab of 128-byte flows, two cache lines each (`Vec`, doubled on growth, freed
//!   entries reused through a free list): 48 bytes of tuples, deadline and links, and the
//!   pipeline's [`Shortcut`] for each direction. Plus an open-addressing index (linear
//!   probing, load at most 1/2) of 8-byte slots holding a hash tag and the flow's slab index,
//!   two entries per flow; keys are not stored but verified against the slab. At 1M flows that
//!   is about 134 + 34 = 168 bytes per flow; just after both have doubled (the worst point) at
//!   most 256 + 64 = 320. The timer wheel is a fixed 16 KiB. Nothing else is allocated per
//!   flow. Large tables ask for transparent huge pages: random lookups then miss the TLB far
//!   less often.
//! - `lookup`: one hash of 16 bytes, one index probe (1.5 slots on average, nearly always one
//!   cache line), one slab read: with a table far larger than the caches, two dependent cache
//!   misses. `lookup_batch` overlaps those misses across a batch (software-pipelined: the
//!   index line of a tuple 16 ahead and the flow of one 8 ahead load while a tuple is looked
//!   up). `update`: one slab read and write, plus an O(1) relink
//!   when the deadline moves earlier. None of them allocates.
//! - `create`: one probe for the original tuple, one per port tried (usually one or a few;
//!   the whole range, at worst, when nearly every port towards that destination is taken),
//!   two inserts. Allocates only when the slab or the index grows (the index re-slots its
//!   entries by tag then, without reading the slab). Removal shifts the rest of the probe
//!   cluster back: no tombstones, so probe lengths do not degrade with churn.
//! - `expire`: a timer wheel of 4096 one-second slots with intrusive u32 lists through the
//!   slab. Refreshing a flow to a later deadline only writes the deadline; when its old slot
//!   fires, the still-live flow is re-slotted (so is a deadline beyond the 4096 s horizon,
//!   once per horizon). Moving a deadline earlier (e.g. RST) relinks at once, so the flow is
//!   freed on time. A call visits only the slots due since the previous call (at most all
//!   4096 once) and only the flows in them: O(expired + re-slotted), never O(table). Flows are
//!   freed at most one tick (1 s) after their deadline; until then `lookup` still finds them.
//! - `retain` and `flows` walk the slab: O(table), control plane only.
//!
//! Hashing uses a fixed multiply-fold mix (fast, not DoS-resistant).

mod conntrack;
mod index;
mod tcp;
mod timer;
mod tuple;
pub mod v6;

#[cfg(test)]
mod tests;

pub use conntrack::{Conntrack, OffloadPair, UNOWNED};
pub use tuple::{Probe, Tuple};

use std::net::Ipv4Addr;

use crate::config::L4Proto;
use crate::frame::PortId;
use crate::time::Millis;
use tcp::TcpState;

/// The source a translated ICMP error (v4 or v6) leaves with: it goes back to the quoted
/// packet's sender, and comes from that packet's destination (`quoted_dst`, which becomes
/// `new_dst`) or from a router on the way, whose address `outer_src` stays.
#[inline]
pub fn error_source<A: PartialEq>(outer_src: A, quoted_dst: A, new_dst: A) -> A {
    if outer_src == quoted_dst {
        new_dst
    } else {
        outer_src
    }
}

/// What to do to a new flow: the pipeline decides it from its tables (masquerade, published
/// port, hairpin) and conntrack applies it to every packet of the flow.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct NatAction {
    /// Rewrite the source to this address and an allocated port (ICMP: echo id).
    pub snat: Option<Ipv4Addr>,
    /// Rewrite the destination to this address and port (ICMP: the port is ignored, the id
    /// stays). Both `snat` and `dnat`: hairpin (DNAT to the endpoint, SNAT to the gateway).
    pub dnat: Option<(Ipv4Addr, u16)>,
}

/// Who a new flow is charged to, and that owner's limits (like a conntrack zone with a
/// limit): the port the flow's first packet came in on (an endpoint; an uplink for
/// connections to published ports). Conntrack keeps a count per owner port, raised when a
/// flow is created and lowered when it goes, and a count of the NAPT ports each owner holds
/// per destination; a flow beyond either limit is refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Owner {
    /// The port charged (ports from `MAX_PORTS` on are not counted).
    pub port: PortId,
    /// Most flows the owner may hold.
    pub max_flows: usize,
    /// Most NAPT source ports (ICMP ids) the owner may hold toward one destination (address,
    /// port and protocol, from one translated source address).
    pub max_ports_per_destination: usize,
}

impl Owner {
    /// An owner held to no limit of its own (only the table's).
    pub fn unlimited(port: PortId) -> Self {
        Owner {
            port,
            max_flows: usize::MAX,
            max_ports_per_destination: usize::MAX,
        }
    }
}

/// Which way a packet travels relative to the flow's first packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Dir {
    /// Same direction as the first packet.
    Original,
    /// The answering direction.
    Reply,
}

/// A tracked flow's handle: valid until the flow is removed or expires; a stale handle is
/// ignored rather than touching the flow that reused its slot (a 16-bit generation tells them
/// apart, so this holds unless the slot was reused exactly 65536 times since).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct FlowId {
    index: u32,
    generation: u16,
}

/// The result of a lookup or create: the flow, the packet's direction, and the tuple the packet
/// must carry after translation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Hit {
    /// The flow, for `update`.
    pub flow: FlowId,
    /// The packet's direction.
    pub dir: Dir,
    /// The tuple to write into the packet.
    pub rewrite: Tuple,
}

/// The pipeline's forwarding decision for one direction of a flow, cached in the flow so that
/// later packets skip the tables (as VPP keeps a NAT session's rewrite). Conntrack only stores
/// it, cleared when the flow is created; the pipeline decides when it still applies.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[repr(C)]
pub struct Shortcut {
    /// The dataplane epoch (tables and neighbours) it was decided under; 0 for none.
    pub epoch: u32,
    /// Port the direction's packets arrive on.
    pub ingress: PortId,
    /// Port they leave by.
    pub egress: PortId,
    /// VLAN they leave with (`Meta::vlan`).
    pub vlan: u16,
    /// Largest IPv4 total length sent without the too-big path (`u16::MAX`: no limit).
    pub mtu: u16,
    /// Ethernet destination and source they leave with.
    pub l2_out: [u8; 12],
}

/// Why a flow could not be created; each is a counted drop upstream.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum NatError {
    /// The table holds `max_flows` flows.
    #[error("connection-tracking table is full")]
    TableFull,
    /// Every port (ICMP id) of the range is taken towards this destination.
    #[error("no free NAT port")]
    PortsExhausted,
    /// The flow's owner holds `Owner::max_flows` flows.
    #[error("the endpoint's flow quota is used up")]
    OwnerQuota,
    /// The flow's owner holds `Owner::max_ports_per_destination` ports toward its destination.
    #[error("the endpoint's share of NAT ports toward this destination is used up")]
    PortShare,
    /// The original tuple is already tracked (in either direction).
    #[error("flow already tracked")]
    Exists,
    /// Without SNAT, the flow's reply tuple is already another flow's: replies could not be
    /// told apart.
    #[error("reply tuple already in use by another flow")]
    Clash,
}

/// Per-state idle timeouts in seconds; `Default` gives Linux's conntrack defaults.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Timeouts {
    /// TCP after the first SYN (and before any segment).
    pub tcp_syn_sent: u32,
    /// TCP after SYN-ACK.
    pub tcp_syn_recv: u32,
    /// TCP established.
    pub tcp_established: u32,
    /// TCP after the first FIN.
    pub tcp_fin_wait: u32,
    /// TCP after the first FIN was acknowledged.
    pub tcp_close_wait: u32,
    /// TCP after both FINs.
    pub tcp_last_ack: u32,
    /// TCP after both FINs were acknowledged.
    pub tcp_time_wait: u32,
    /// TCP after RST.
    pub tcp_close: u32,
    /// UDP before any reply.
    pub udp_unreplied: u32,
    /// UDP once replied.
    pub udp_replied: u32,
    /// ICMP echo.
    pub icmp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent: 120,
            tcp_syn_recv: 60,
            tcp_established: 432_000,
            tcp_fin_wait: 120,
            tcp_close_wait: 60,
            tcp_last_ack: 30,
            tcp_time_wait: 120,
            tcp_close: 10,
            udp_unreplied: 30,
            udp_replied: 120,
            icmp: 30,
        }
    }
}

impl Timeouts {
    /// The idle timeout, in seconds, of a flow of `proto` in TCP state `tcp` (not read for UDP
    /// and ICMP) that has or has not seen a reply: one rule for the v4 and the v6 tables.
    #[inline]
    fn for_state(&self, proto: L4Proto, tcp: TcpState, replied: bool) -> u32 {
        match proto {
            L4Proto::Tcp => match tcp {
                TcpState::None | TcpState::SynSent => self.tcp_syn_sent,
                TcpState::SynRecv => self.tcp_syn_recv,
                TcpState::Established => self.tcp_established,
                TcpState::FinWait => self.tcp_fin_wait,
                TcpState::CloseWait => self.tcp_close_wait,
                TcpState::LastAck => self.tcp_last_ack,
                TcpState::TimeWait => self.tcp_time_wait,
                TcpState::Close => self.tcp_close,
            },
            L4Proto::Udp if replied => self.udp_replied,
            L4Proto::Udp => self.udp_unreplied,
            L4Proto::Icmp => self.icmp,
        }
    }
}

/// One flow as the control plane sees it (`sluice conntrack ls`, flushing by endpoint).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FlowInfo {
    /// The flow's handle, for `Conntrack::remove`.
    pub id: FlowId,
    /// The first packet's tuple.
    pub original: Tuple,
    /// The tuple replies arrive with (the translated tuple reversed).
    pub reply: Tuple,
    /// TCP state name, or UNREPLIED/REPLIED for UDP and ICMP.
    pub state: &'static str,
    /// When the flow expires unless refreshed.
    pub expires: Millis,
    /// A packet was seen in the reply direction.
    pub replied: bool,
}
