//! The two directions of a flow as the kernel offload installs them ([`FlowKey`] and
//! [`FlowAction`] of `sluice-offload`), built from what the userspace path decided: for a
//! tracked (NAPT, published-port, hairpin) flow from its tuples and both directions' shortcuts,
//! for a bridged flow from its tuple and the two endpoints. Pure functions: the pipeline
//! resolves the ports, these only assemble.

use std::net::IpAddr;

use sluice_offload::{FlowAction, FlowKey};

use crate::nat::{OffloadPair, Tuple};
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

/// Both directions of a tracked flow whose shortcuts lead from `ends[d].0` to `ends[d].1`
/// (`d` 0: original, 1: reply). `None` when a direction would leave by a port of a smaller MTU
/// than it arrives by (the userspace path answers those with ICMP or drops them).
pub fn routed(pair: &OffloadPair, ends: [(PortOut, PortOut); 2]) -> Option<[Direction; 2]> {
    if ends.iter().any(|(i, o)| o.mtu < i.mtu) {
        return None;
    }
    let (o, x) = (pair.original, pair.translated);
    let [s0, s1] = pair.shortcuts;
    Some([
        direction(&o, &x, ends[0], &s0.l2_out, true),
        direction(&x.reversed(), &o.reversed(), ends[1], &s1.l2_out, true),
    ])
}

/// Both directions of a flow bridged between endpoint `a` (which sent `tuple`) and endpoint
/// `b`, each given by its port and MAC. Bridged frames keep their addresses: the kernel only
/// redirects them, with the Ethernet addresses each endpoint's frames carry. `None` when the
/// ports' MTUs differ.
pub fn bridged(
    tuple: &Tuple,
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
fn direction(
    arrives: &Tuple,
    leaves: &Tuple,
    (ingress, egress): (PortOut, PortOut),
    l2_out: &[u8; 12],
    routed: bool,
) -> Direction {
    let mut eth_dst = [0; 6];
    let mut eth_src = [0; 6];
    eth_dst.copy_from_slice(&l2_out[..6]);
    eth_src.copy_from_slice(&l2_out[6..]);
    let changed = |from: (std::net::Ipv4Addr, u16), to: (std::net::Ipv4Addr, u16)| {
        (from != to).then_some((IpAddr::V4(to.0), to.1))
    };
    Direction {
        key: FlowKey {
            ifindex: ingress.ifindex,
            src: IpAddr::V4(arrives.src),
            dst: IpAddr::V4(arrives.dst),
            proto: arrives.proto.number(),
            sport: arrives.src_port,
            dport: arrives.dst_port,
        },
        action: FlowAction {
            egress_ifindex: egress.ifindex,
            eth_src,
            eth_dst,
            decrement_ttl: routed,
            snat: changed(
                (arrives.src, arrives.src_port),
                (leaves.src, leaves.src_port),
            ),
            dnat: changed(
                (arrives.dst, arrives.dst_port),
                (leaves.dst, leaves.dst_port),
            ),
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
