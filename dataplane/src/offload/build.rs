//! The two directions of a flow as the kernel offload installs them ([`FlowKey`] and
//! [`FlowAction`] of `sluice-offload`), built from what the userspace path decided: for a
//! tracked (NAPT, published-port, hairpin; NAT66, published v6 port, routed v6) flow from its
//! tuples and both directions' shortcuts, for a bridged flow from its tuple and the two
//! endpoints. Either family: the tuples are read through [`FlowTuple`]. Pure functions: the
//! pipeline resolves the ports, these only assemble.

use std::net::IpAddr;

use sluice_offload::{FlowAction, FlowKey};

use crate::nat::v6::{OffloadPair6, Tuple6};
use crate::nat::{OffloadPair, Shortcut, Tuple};
use crate::wire::MacAddr;

/// One direction to install: the frames it matches and what the kernel does with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Direction {
    /// The exact match (ingress interface and tuple as the frame arrives).
    pub key: FlowKey,
    /// The rewrite and the egress interface.
    pub action: FlowAction,
    /// For an overlay flow: how it is wrapped or unwrapped (see `overlay`).
    pub tunnel: Option<super::Tunnel>,
}

/// What the offload needs of one of sluice's ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortOut {
    /// The host-side interface's index (the TC program runs on it, frames are redirected to it).
    pub ifindex: u32,
    /// The MTU its frames are held to (its network's, or its uplink's).
    pub mtu: u16,
}

/// A flow's tuple of either family (v4 [`Tuple`], v6 [`Tuple6`], or a [`FlowKey`]), as the
/// offload keys, rewrites and records it.
pub trait FlowTuple: Copy {
    /// The transport protocol's number (6 TCP, 17 UDP).
    fn proto(&self) -> u8;
    /// Source address and port.
    fn src(&self) -> (IpAddr, u16);
    /// Destination address and port.
    fn dst(&self) -> (IpAddr, u16);
    /// The tuple of the other direction.
    fn reversed(&self) -> Self;
}

impl FlowTuple for Tuple {
    #[inline]
    fn proto(&self) -> u8 {
        self.proto.number()
    }
    #[inline]
    fn src(&self) -> (IpAddr, u16) {
        (IpAddr::V4(self.src), self.src_port)
    }
    #[inline]
    fn dst(&self) -> (IpAddr, u16) {
        (IpAddr::V4(self.dst), self.dst_port)
    }
    #[inline]
    fn reversed(&self) -> Self {
        Tuple::reversed(self)
    }
}

impl FlowTuple for Tuple6 {
    #[inline]
    fn proto(&self) -> u8 {
        self.proto.number()
    }
    #[inline]
    fn src(&self) -> (IpAddr, u16) {
        (IpAddr::V6(self.src), self.src_port)
    }
    #[inline]
    fn dst(&self) -> (IpAddr, u16) {
        (IpAddr::V6(self.dst), self.dst_port)
    }
    #[inline]
    fn reversed(&self) -> Self {
        Tuple6::reversed(self)
    }
}

impl FlowTuple for FlowKey {
    fn proto(&self) -> u8 {
        self.proto
    }
    fn src(&self) -> (IpAddr, u16) {
        (self.src, self.sport)
    }
    fn dst(&self) -> (IpAddr, u16) {
        (self.dst, self.dport)
    }
    fn reversed(&self) -> Self {
        FlowKey {
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
            ..*self
        }
    }
}

/// Both directions of a tracked flow whose shortcuts lead from `ends[d].0` to `ends[d].1`
/// (`d` 0: original, 1: reply). `None` when a direction would leave by a port of a smaller MTU
/// than it arrives by (the userspace path answers those with ICMP or drops them).
pub fn routed(pair: &OffloadPair, ends: [(PortOut, PortOut); 2]) -> Option<[Direction; 2]> {
    tracked((&pair.original, &pair.translated), &pair.shortcuts, ends)
}

/// [`routed`] for a v6 flow (NAT66, a published v6 port, a routed v6 network).
pub fn routed6(pair: &OffloadPair6, ends: [(PortOut, PortOut); 2]) -> Option<[Direction; 2]> {
    tracked((&pair.original, &pair.translated), &pair.shortcuts, ends)
}

/// Both directions of a tracked flow arriving as `o` and leaving as `x`, with the shortcuts
/// of both directions; see [`routed`].
fn tracked<T: FlowTuple>(
    (o, x): (&T, &T),
    [s0, s1]: &[Shortcut; 2],
    ends: [(PortOut, PortOut); 2],
) -> Option<[Direction; 2]> {
    if ends.iter().any(|(i, o)| o.mtu < i.mtu) {
        return None;
    }
    Some([
        direction(o, x, ends[0], &s0.l2_out, true),
        direction(&x.reversed(), &o.reversed(), ends[1], &s1.l2_out, true),
    ])
}

/// Both directions of a flow bridged between endpoint `a` (which sent `tuple`) and endpoint
/// `b`, each given by its port and MAC. Bridged frames keep their addresses: the kernel only
/// redirects them, with the Ethernet addresses each endpoint's frames carry. `None` when the
/// ports' MTUs differ.
pub fn bridged<T: FlowTuple>(
    tuple: &T,
    (a, a_mac): (PortOut, MacAddr),
    (b, b_mac): (PortOut, MacAddr),
) -> Option<[Direction; 2]> {
    if a.mtu != b.mtu {
        return None;
    }
    let back = tuple.reversed();
    Some([
        direction(tuple, tuple, (a, b), &l2(b_mac, a_mac), false),
        direction(&back, &back, (b, a), &l2(a_mac, b_mac), false),
    ])
}

/// Ethernet destination then source, as `Shortcut::l2_out` holds them.
fn l2(dst: MacAddr, src: MacAddr) -> [u8; 12] {
    crate::wire::ethernet::addresses(dst, src)
}

/// The direction whose frames arrive on `ends.0` as `arrives` and leave by `ends.1` as
/// `leaves` with Ethernet addresses `l2_out` (destination, source).
fn direction<T: FlowTuple>(
    arrives: &T,
    leaves: &T,
    (ingress, egress): (PortOut, PortOut),
    l2_out: &[u8; 12],
    routed: bool,
) -> Direction {
    let mut eth_dst = [0; 6];
    let mut eth_src = [0; 6];
    eth_dst.copy_from_slice(&l2_out[..6]);
    eth_src.copy_from_slice(&l2_out[6..]);
    let changed = |from: (IpAddr, u16), to: (IpAddr, u16)| (from != to).then_some(to);
    let ((src, sport), (dst, dport)) = (arrives.src(), arrives.dst());
    Direction {
        key: FlowKey {
            ifindex: ingress.ifindex,
            src,
            dst,
            proto: arrives.proto(),
            sport,
            dport,
        },
        action: FlowAction {
            egress_ifindex: egress.ifindex,
            eth_src,
            eth_dst,
            decrement_ttl: routed,
            snat: changed(arrives.src(), leaves.src()),
            dnat: changed(arrives.dst(), leaves.dst()),
        },
        tunnel: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::L4Proto;
    use std::net::Ipv4Addr;

    #[test]
    fn bridged_ports_of_different_mtus_are_not_offloaded() {
        let t = Tuple {
            proto: L4Proto::Udp,
            src: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 1,
            dst: Ipv4Addr::new(10, 0, 0, 3),
            dst_port: 2,
        };
        let port = |ifindex, mtu| PortOut { ifindex, mtu };
        let (ma, mb) = (MacAddr([2, 0, 0, 0, 0, 2]), MacAddr([2, 0, 0, 0, 0, 3]));
        assert!(bridged(&t, (port(1, 1500), ma), (port(2, 9000), mb)).is_none());
        let [ab, ba] = bridged(&t, (port(1, 1500), ma), (port(2, 1500), mb)).unwrap();
        assert_eq!((ab.key.ifindex, ab.action.egress_ifindex), (1, 2));
        assert_eq!((ba.key.ifindex, ba.action.egress_ifindex), (2, 1));
        assert_eq!((ba.key.sport, ba.key.dport, ba.key.proto), (2, 1, 17));
        assert_eq!((ba.action.eth_dst, ba.action.eth_src), (ma.0, mb.0));
    }
}
