//! Counters: per port (packets, bytes, drops by reason) and per drop reason, written by one
//! worker each and summed when read. A drop is counted on the port the frame arrived on, or, when
//! it could not leave, on the port it was to leave by.
//!
//! Each worker owns one `WorkerCounters`; it adds with relaxed load+store (no locked
//! read-modify-write, since it is the only writer), and readers sum all workers' values.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Why a frame was dropped. Every drop in sluice is counted under one of these.
///
/// By the pipeline stage that counts them (see `pipeline`'s module doc): classify (malformed,
/// unknown port, VLAN not allowed, spoofed MAC/IP), bridge (FDB full, hairpin, ICC denied),
/// gateway (isolated, no route, TTL exceeded, too big, unsupported, not for us), uplink (not
/// for us, unsupported), NAT (no flow, conntrack full, NAT ports exhausted, fragment, endpoint
/// flow quota, NAT port share), route (no route, ARP pending), vxlan (malformed, unknown VNI,
/// spoofed, unknown destination) and the ports (TX full). The names (`name`, serde) are what
/// `sluice stats`, the API and the Prometheus exposition show: never rename them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum DropReason {
    /// A header was truncated or inconsistent.
    Malformed,
    /// The frame arrived on, or was sent to, a port that is not configured.
    UnknownPort,
    /// The frame's VLAN is not carried by the port.
    VlanNotAllowed,
    /// An endpoint sent a frame with a source MAC that is not its own.
    SpoofedMac,
    /// An endpoint sent IPv4 or ARP with a source address that is not its own.
    SpoofedIp,
    /// The network's FDB is at its size cap; a new source MAC was refused.
    FdbFull,
    /// The frame would leave on the port it came in on, and hairpin is off.
    Hairpin,
    /// Inter-container communication is off for the network.
    IccDenied,
    /// The destination belongs to another network: networks are isolated.
    Isolated,
    /// No route: an internal network, or a destination sluice cannot reach.
    NoRoute,
    /// The TTL ran out (an ICMP time-exceeded is sent when possible).
    TtlExceeded,
    /// The next hop's MAC is not known yet; an ARP request was sent in its place.
    ArpPending,
    /// The connection-tracking table is full.
    ConntrackFull,
    /// No free external port or ICMP id for a new NAPT flow.
    NatPortsExhausted,
    /// Inbound traffic that matches no flow and no published port.
    NoFlow,
    /// A non-first IPv4 fragment that matches no tracked fragment.
    Fragment,
    /// The packet exceeds the egress MTU (an ICMP fragmentation-needed is sent when DF is set).
    TooBig,
    /// A protocol sluice does not route or translate.
    Unsupported,
    /// Addressed to sluice itself but not something it answers.
    NotForUs,
    /// The egress TX ring or queue was full.
    TxFull,
    /// A new flow of an endpoint that holds its quota of flows (`max_flows_per_endpoint`).
    EndpointFlowQuota,
    /// A new NAPT flow of an endpoint that holds its share of the ports toward that
    /// destination (an ICMP administratively-prohibited is sent back).
    NatPortShare,
    /// A VXLAN packet with a truncated header or without the I flag.
    VxlanMalformed,
    /// A VXLAN packet whose VNI is no overlay network's.
    VxlanUnknownVni,
    /// A decapsulated frame whose source the remote table does not list for its VTEP.
    VxlanSpoofed,
    /// A unicast frame of an overlay network to a MAC neither local nor remote (never flooded
    /// across hosts).
    VxlanUnknownDst,
    /// An ipvlan network's unicast frame for an address (or a MAC) that is no endpoint's.
    IpvlanUnknownDst,
    /// Broadcast or multicast an ipvlan L3 network does not carry.
    IpvlanFiltered,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 28] = [
        DropReason::Malformed,
        DropReason::UnknownPort,
        DropReason::VlanNotAllowed,
        DropReason::SpoofedMac,
        DropReason::SpoofedIp,
        DropReason::FdbFull,
        DropReason::Hairpin,
        DropReason::IccDenied,
        DropReason::Isolated,
        DropReason::NoRoute,
        DropReason::TtlExceeded,
        DropReason::ArpPending,
        DropReason::ConntrackFull,
        DropReason::NatPortsExhausted,
        DropReason::NoFlow,
        DropReason::Fragment,
        DropReason::TooBig,
        DropReason::Unsupported,
        DropReason::NotForUs,
        DropReason::TxFull,
        DropReason::EndpointFlowQuota,
        DropReason::NatPortShare,
        DropReason::VxlanMalformed,
        DropReason::VxlanUnknownVni,
        DropReason::VxlanSpoofed,
        DropReason::VxlanUnknownDst,
        DropReason::IpvlanUnknownDst,
        DropReason::IpvlanFiltered,
    ];

    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// Stable name, used in stats output and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownPort => "unknown_port",
            DropReason::VlanNotAllowed => "vlan_not_allowed",
            DropReason::SpoofedMac => "spoofed_mac",
            DropReason::SpoofedIp => "spoofed_ip",
            DropReason::FdbFull => "fdb_full",
            DropReason::Hairpin => "hairpin",
            DropReason::IccDenied => "icc_denied",
            DropReason::Isolated => "isolated",
            DropReason::NoRoute => "no_route",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::ArpPending => "arp_pending",
            DropReason::ConntrackFull => "conntrack_full",
            DropReason::NatPortsExhausted => "nat_ports_exhausted",
            DropReason::NoFlow => "no_flow",
            DropReason::Fragment => "fragment",
            DropReason::TooBig => "too_big",
            DropReason::Unsupported => "unsupported",
            DropReason::NotForUs => "not_for_us",
            DropReason::TxFull => "tx_full",
            DropReason::EndpointFlowQuota => "endpoint_flow_quota",
            DropReason::NatPortShare => "nat_port_share",
            DropReason::VxlanMalformed => "vxlan_malformed",
            DropReason::VxlanUnknownVni => "vxlan_unknown_vni",
            DropReason::VxlanSpoofed => "vxlan_spoofed",
            DropReason::VxlanUnknownDst => "vxlan_unknown_dst",
            DropReason::IpvlanUnknownDst => "ipvlan_unknown_dst",
            DropReason::IpvlanFiltered => "ipvlan_filtered",
        }
    }
}

/// Most ports the counters (and the dataplane) address.
pub const MAX_PORTS: usize = 4096;

/// Traffic counters of one port, one direction pair.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Frames received.
    pub rx_packets: AtomicU64,
    /// Bytes received.
    pub rx_bytes: AtomicU64,
    /// Frames sent.
    pub tx_packets: AtomicU64,
    /// Bytes sent.
    pub tx_bytes: AtomicU64,
}

/// A plain snapshot of port counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortStats {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
}

/// Adds `n` to a counter that only the calling worker writes.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// The counters one worker writes.
#[derive(Debug)]
pub struct WorkerCounters {
    ports: Box<[PortCounters]>,
    drops: [AtomicU64; DropReason::COUNT],
    /// Drops per port and reason: `port * DropReason::COUNT + reason` (768 KiB).
    port_drops: Box<[AtomicU64]>,
    /// Frames that took a flow's shortcut (the fast path) rather than the full pipeline.
    shortcuts: AtomicU64,
    /// Chunks of received VXLAN UDP GSO datagrams delivered one by one (not joined).
    unjoined: AtomicU64,
}

impl Default for WorkerCounters {
    fn default() -> Self {
        WorkerCounters {
            ports: (0..MAX_PORTS).map(|_| PortCounters::default()).collect(),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            port_drops: (0..MAX_PORTS * DropReason::COUNT)
                .map(|_| AtomicU64::new(0))
                .collect(),
            shortcuts: AtomicU64::new(0),
            unjoined: AtomicU64::new(0),
        }
    }
}

impl WorkerCounters {
    /// Counts a received frame. Out-of-range ports are ignored (they are counted as drops).
    #[inline]
    pub fn rx(&self, port: crate::frame::PortId, bytes: usize) {
        if let Some(p) = self.ports.get(usize::from(port.0)) {
            bump(&p.rx_packets, 1);
            bump(&p.rx_bytes, bytes as u64);
        }
    }

    /// Counts `packets` frames of `bytes` in total sent on a port.
    #[inline]
    pub fn tx(&self, port: crate::frame::PortId, packets: u64, bytes: u64) {
        if let Some(p) = self.ports.get(usize::from(port.0)) {
            bump(&p.tx_packets, packets);
            bump(&p.tx_bytes, bytes);
        }
    }

    /// Zeroes one port's counters, so that a port attached under the id of a detached one
    /// starts from zero. Only the worker that owns these counters may call it: it is their
    /// single writer, and a reset from another thread could be lost under its load+store adds.
    pub fn reset_port(&self, port: crate::frame::PortId) {
        if let Some(p) = self.ports.get(usize::from(port.0)) {
            for c in [&p.rx_packets, &p.rx_bytes, &p.tx_packets, &p.tx_bytes] {
                c.store(0, Ordering::Relaxed);
            }
        }
        for c in self.port_drop_slots(port) {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Counts `n` drops for a reason, in total and on `port` (ignored for an out-of-range port).
    #[inline]
    pub fn drop_n(&self, port: crate::frame::PortId, reason: DropReason, n: u64) {
        bump(&self.drops[reason as usize], n);
        if let Some(c) = self.port_drop_slots(port).get(reason as usize) {
            bump(c, n);
        }
    }

    /// Counts a frame that took a flow's shortcut.
    #[inline]
    pub fn shortcut(&self) {
        bump(&self.shortcuts, 1);
    }

    /// Counts `n` chunks of a VXLAN UDP GSO datagram that did not join, delivered one by one.
    #[inline]
    pub fn unjoined(&self, n: u64) {
        bump(&self.unjoined, n);
    }

    /// Chunks delivered one by one so far (see [`unjoined`](Self::unjoined)).
    pub fn unjoined_chunks(&self) -> u64 {
        self.unjoined.load(Ordering::Relaxed)
    }

    /// Frames that took a flow's shortcut so far: how much traffic the fast path carries.
    pub fn shortcuts(&self) -> u64 {
        self.shortcuts.load(Ordering::Relaxed)
    }

    /// Drops counted so far for a reason, on every port.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Ordering::Relaxed)
    }

    /// Drops counted so far for a reason on one port.
    pub fn port_drops(&self, port: crate::frame::PortId, reason: DropReason) -> u64 {
        self.port_drop_slots(port)
            .get(reason as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// One port's drop counters, one per reason (empty for an out-of-range port).
    fn port_drop_slots(&self, port: crate::frame::PortId) -> &[AtomicU64] {
        let start = usize::from(port.0) * DropReason::COUNT;
        self.port_drops
            .get(start..start + DropReason::COUNT)
            .unwrap_or(&[])
    }

    /// A snapshot of one port's counters.
    pub fn port(&self, port: crate::frame::PortId) -> PortStats {
        self.ports
            .get(usize::from(port.0))
            .map(|p| PortStats {
                rx_packets: p.rx_packets.load(Ordering::Relaxed),
                rx_bytes: p.rx_bytes.load(Ordering::Relaxed),
                tx_packets: p.tx_packets.load(Ordering::Relaxed),
                tx_bytes: p.tx_bytes.load(Ordering::Relaxed),
            })
            .unwrap_or_default()
    }
}

/// Sums the counters of several workers, as readers see them.
pub fn sum_port(workers: &[&WorkerCounters], port: crate::frame::PortId) -> PortStats {
    workers.iter().fold(PortStats::default(), |acc, w| {
        let p = w.port(port);
        PortStats {
            rx_packets: acc.rx_packets + p.rx_packets,
            rx_bytes: acc.rx_bytes + p.rx_bytes,
            tx_packets: acc.tx_packets + p.tx_packets,
            tx_bytes: acc.tx_bytes + p.tx_bytes,
        }
    })
}

/// Sums one drop reason over several workers.
pub fn sum_drops(workers: &[&WorkerCounters], reason: DropReason) -> u64 {
    workers.iter().map(|w| w.drops(reason)).sum()
}

/// Sums one port's drops for one reason over several workers.
pub fn sum_port_drops(
    workers: &[&WorkerCounters],
    port: crate::frame::PortId,
    reason: DropReason,
) -> u64 {
    workers.iter().map(|w| w.port_drops(port, reason)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PortId;

    #[test]
    fn reason_table_is_in_discriminant_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.name());
        }
    }

    #[test]
    fn sums_over_workers() {
        let a = WorkerCounters::default();
        let b = WorkerCounters::default();
        a.rx(PortId(3), 100);
        b.rx(PortId(3), 50);
        b.tx(PortId(3), 2, 120);
        a.drop_n(PortId(3), DropReason::Malformed, 2);
        b.drop_n(PortId(4), DropReason::Malformed, 1);
        b.drop_n(PortId(u16::MAX), DropReason::TxFull, 1);
        a.rx(PortId(u16::MAX), 1);
        let s = sum_port(&[&a, &b], PortId(3));
        assert_eq!(
            (s.rx_packets, s.rx_bytes, s.tx_packets, s.tx_bytes),
            (2, 150, 2, 120)
        );
        assert_eq!(sum_drops(&[&a, &b], DropReason::Malformed), 3);
        assert_eq!(sum_drops(&[&a, &b], DropReason::TxFull), 1);
        assert_eq!(
            sum_port_drops(&[&a, &b], PortId(3), DropReason::Malformed),
            2
        );
        assert_eq!(
            sum_port_drops(&[&a, &b], PortId(4), DropReason::Malformed),
            1
        );
        assert_eq!(sum_port_drops(&[&a, &b], PortId(4), DropReason::TxFull), 0);
        b.reset_port(PortId(3));
        b.reset_port(PortId(u16::MAX));
        assert_eq!(b.port(PortId(3)), PortStats::default());
        assert_eq!(sum_port(&[&a, &b], PortId(3)).rx_bytes, 100);
        a.reset_port(PortId(3));
        assert_eq!(a.port_drops(PortId(3), DropReason::Malformed), 0);
        assert_eq!(a.drops(DropReason::Malformed), 2, "totals are not reset");
    }
}
