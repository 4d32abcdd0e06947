//! The route stage: where a routed IPv4 packet goes (an endpoint of a network, or out of an
//! uplink to the destination or its next hop, resolved through the uplink's ARP cache) and
//! its sending (TTL decremented, ingress tag removed, Ethernet header rewritten). Its drops:
//! no route, TTL exceeded, ARP pending (the ARP request for the next hop leaves in the
//! packet's place).

use std::net::Ipv4Addr;

use super::state::BatchState;
use crate::config::UplinkConfig;
use crate::counters::DropReason as R;
use crate::counters::DropReason;
use crate::frame::{Frame, GsoType, Offload, PortId, Verdict};
use crate::tables::PortMode;
use crate::wire::arp;
use crate::wire::ethernet::{self, EthernetFrame, ETHERTYPE_IPV4};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::MacAddr;

/// A resolved next hop: send to `dst_mac` from `src_mac` on `port`, leaving with `vlan`.
#[derive(Clone, Copy)]
pub(super) struct Adjacency {
    pub(super) port: PortId,
    pub(super) dst_mac: MacAddr,
    pub(super) src_mac: MacAddr,
    pub(super) vlan: u16,
}

/// Where a routed packet goes: a known MAC on a port, or an uplink next hop still to resolve.
pub(super) enum NextHop<'t> {
    /// Resolved.
    Known(Adjacency),
    /// Ask `hop`'s MAC on uplink `up` (the packet itself is lost).
    Unresolved { up: &'t UplinkConfig, hop: Ipv4Addr },
}

impl<'t> BatchState<'t> {
    /// Sends a routed IPv4 packet towards `dst`: to an endpoint of a network, or out of the
    /// uplink to `dst` or the next hop. Decrements the TTL and rewrites the Ethernet header.
    pub(super) fn route(
        &mut self,
        f: &mut Frame<'_>,
        l3: usize,
        dst: Ipv4Addr,
        ttl: u8,
    ) -> Result<Verdict, DropReason> {
        if ttl <= 1 {
            return Err(R::TtlExceeded);
        }
        let next = self.next_hop(f.data(), l3, dst)?;
        self.send(f, l3, next)
    }

    /// Where a routed IPv4 packet (header at `l3`, source already translated) to `dst` goes: to
    /// an endpoint of a network, or out of the uplink to `dst` or the next hop.
    pub(super) fn next_hop(
        &mut self,
        d: &[u8],
        l3: usize,
        dst: Ipv4Addr,
    ) -> Result<NextHop<'t>, DropReason> {
        let t = self.t;
        if let Some(net) = t.network_of(dst) {
            let (mac, port) = *net.neighbors.get(&dst).ok_or(R::NoRoute)?;
            let entry = t.port(port).ok_or(R::UnknownPort)?;
            let vlan = match entry.mode {
                PortMode::Access { vlan } => vlan,
                _ => net.config.vlan,
            };
            return Ok(NextHop::Known(Adjacency {
                port,
                dst_mac: mac,
                src_mac: net.config.gateway_mac,
                vlan,
            }));
        }
        // Routed out through the uplink whose address the (translated) source is: each
        // network's NAPT uses its own uplink's address.
        let src = d.get(l3..).and_then(ipv4::peek_src).ok_or(R::Malformed)?;
        let up: &'t UplinkConfig = t
            .uplink_with_ip(src)
            .or_else(|| t.uplink())
            .ok_or(R::NoRoute)?;
        let hop = if up.ip.contains(dst) {
            dst
        } else {
            up.next_hop.ok_or(R::NoRoute)?
        };
        Ok(match self.neighbor(up.port, hop) {
            Some(mac) => NextHop::Known(Adjacency {
                port: up.port,
                dst_mac: mac,
                src_mac: up.mac,
                vlan: 0,
            }),
            None => NextHop::Unresolved { up, hop },
        })
    }

    /// Sends a routed packet to `next`: TTL decremented, ingress tag removed, Ethernet header
    /// rewritten; or, while the next hop is unresolved, an ARP request in its place.
    pub(super) fn send(
        &mut self,
        f: &mut Frame<'_>,
        l3: usize,
        next: NextHop<'t>,
    ) -> Result<Verdict, DropReason> {
        match next {
            NextHop::Known(adj) => {
                f.meta.vlan = adj.vlan;
                Ipv4Packet::new_unchecked(&mut f.data_mut()[l3..]).decrement_ttl();
                strip_tag(f, l3);
                let mut eth = EthernetFrame::new_unchecked(f.data_mut());
                eth.set_dst(adj.dst_mac);
                eth.set_src(adj.src_mac);
                Ok(Verdict::Forward(adj.port))
            }
            NextHop::Unresolved { up, hop } => {
                f.meta.vlan = 0;
                arp_request(f, up.mac, up.ip.addr, hop).map_err(|_| R::ArpPending)?;
                // The packet is lost (as in any host stack); the ARP request leaves instead.
                self.counters.drop_n(f.meta.ingress, R::ArpPending, 1);
                Ok(Verdict::Forward(up.port))
            }
        }
    }
}

/// Routed frames leave without the ingress 802.1Q tag: move the Ethernet addresses up to
/// the IP header so the frame is untagged; egress tags it again for its port.
fn strip_tag(f: &mut Frame<'_>, l3: usize) {
    if l3 == ethernet::HEADER_LEN {
        return;
    }
    ethernet::untag(f.data_mut(), l3, ETHERTYPE_IPV4);
    let tag = l3 - ethernet::HEADER_LEN;
    f.pull_front(tag);
    let off = &mut f.meta.offload;
    if off.csum_partial || off.gso != GsoType::None {
        let delta = tag as u16;
        off.csum_start = off.csum_start.saturating_sub(delta);
        off.hdr_len = off.hdr_len.saturating_sub(delta);
    }
}

/// Turns the frame of a packet waiting for `target`'s MAC into the ARP request for it from
/// `(mac, ip)` (that packet is lost, as in any host stack waiting for ARP).
fn arp_request(
    frame: &mut Frame<'_>,
    mac: MacAddr,
    ip: Ipv4Addr,
    target: Ipv4Addr,
) -> Result<(), DropReason> {
    frame.set_len(arp::FRAME_LEN).map_err(|_| R::ArpPending)?;
    arp::write_request(frame.data_mut(), mac, ip, target).map_err(|_| R::ArpPending)?;
    frame.meta.offload = Offload::default();
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::pipeline::tests::*;

    #[test]
    fn unresolved_next_hops_are_probed_until_learned() {
        let s = S::new();
        let mut w = worker_for(&s);
        let probes = w.dataplane().next_hop_probes();
        assert_eq!(probes.len(), 1);
        let (port, f) = &probes[0];
        assert_eq!(*port, UPLINK);
        assert_eq!(f.len(), 60);
        assert_eq!((&f[0..6], &f[6..12]), (&[0xff; 6][..], &S::UP_MAC.0[..]));
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(
            (&f[28..32], &f[38..42]),
            (&S::UP.octets()[..], &S::HOP.octets()[..])
        );
        learn_next_hop(&mut w);
        assert!(w.dataplane().next_hop_probes().is_empty());
    }
}
