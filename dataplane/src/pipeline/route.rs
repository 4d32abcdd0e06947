//! The route stage: where a routed IPv4 packet goes (an endpoint of a network, or out of an
//! uplink to the destination or its next hop, resolved through the uplink's ARP cache) and
//! its sending (TTL decremented, ingress tag removed, Ethernet header rewritten). Its drops:
//! no route, TTL exceeded, ARP pending (the ARP request for the next hop leaves in the
//! packet's place; the packet waits in `pending` for the reply when there is room).

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;

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
    /// Ask `hop`'s MAC on uplink `up` (the packet waits for it, or is lost).
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
        self.send_or_hold(f, l3, next).map(|(v, _)| v)
    }

    /// `send`, also telling whether the packet itself left or waits to leave (false: it was
    /// lost to an unresolved next hop, only the ARP request leaves). To an unresolved next hop
    /// the packet is held (see `pending`) when there is room, and the frame becomes the ARP
    /// request; a packet that finds no room is dropped, counted as `arp_pending`.
    #[inline]
    pub(super) fn send_or_hold(
        &mut self,
        f: &mut Frame<'_>,
        l3: usize,
        next: NextHop<'t>,
    ) -> Result<(Verdict, bool), DropReason> {
        match next {
            NextHop::Known(adj) => {
                rewrite_l2(f, l3, &adj);
                Ok((Verdict::Forward(adj.port), true))
            }
            NextHop::Unresolved { up, hop } => {
                let held = self.hold(f, l3, up, hop);
                self.arp_in_place(f, up, hop, held)
            }
        }
    }

    /// The frame becomes the ARP request for `hop` on `up`; the packet it carried is lost,
    /// counted as `arp_pending`, unless it was `held`.
    pub(super) fn arp_in_place(
        &mut self,
        f: &mut Frame<'_>,
        up: &UplinkConfig,
        hop: Ipv4Addr,
        held: bool,
    ) -> Result<(Verdict, bool), DropReason> {
        f.meta.vlan = 0;
        if arp_request(f, up.mac, up.ip.addr, hop).is_err() {
            return if held {
                Ok((Verdict::Consumed, true))
            } else {
                Err(R::ArpPending)
            };
        }
        if !held {
            // The packet is lost; the ARP request leaves instead.
            self.counters.drop_n(f.meta.ingress, R::ArpPending, 1);
        }
        Ok((Verdict::Forward(up.port), held))
    }

    /// Copies the packet, made ready to leave but for its destination MAC, to wait for `hop`'s
    /// MAC on `up`; false when there is no room. Takes the pool's lock (only packets to an
    /// unresolved next hop do).
    fn hold(&mut self, f: &mut Frame<'_>, l3: usize, up: &UplinkConfig, hop: Ipv4Addr) -> bool {
        let adj = Adjacency {
            port: up.port,
            dst_mac: MacAddr([0; 6]),
            src_mac: up.mac,
            vlan: 0,
        };
        rewrite_l2(f, l3, &adj);
        let mut pending = self.dp.pending.lock();
        let held = pending.hold((up.port, hop), f, self.now, self.counters);
        self.dp.pending_held.store(pending.len(), Ordering::Release);
        held
    }
}

/// Makes a routed frame ready to leave by `adj`: TTL decremented, ingress tag removed,
/// Ethernet addresses rewritten.
#[inline(always)]
fn rewrite_l2(f: &mut Frame<'_>, l3: usize, adj: &Adjacency) {
    f.meta.vlan = adj.vlan;
    Ipv4Packet::new_unchecked(&mut f.data_mut()[l3..]).decrement_ttl();
    strip_tag(f, l3);
    let mut eth = EthernetFrame::new_unchecked(f.data_mut());
    eth.set_dst(adj.dst_mac);
    eth.set_src(adj.src_mac);
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

    /// The frames `release_pending` hands out after the last batch.
    fn released(w: &mut crate::pipeline::Worker) -> Vec<(Verdict, Vec<u8>)> {
        let mut out = Vec::new();
        w.release_pending(|f, _| out.push((f.meta.verdict, f.data().to_vec())));
        out
    }

    #[test]
    fn the_first_datagram_to_an_unresolved_neighbor_leaves_once_it_answers() {
        let s = S::new();
        let mut w = worker_for(&s);
        let q = S::from_endpoint(S::A, &udp(S::A, 5353, S::REMOTE, 53, b"first"));
        let (v, arp) = run_one(&mut w, PORT_A, &q, T0);
        assert_eq!((v, &arp[12..14]), (Verdict::Forward(UPLINK), &[8u8, 6][..]));
        assert_eq!(w.counters().drops(R::ArpPending), 0, "held, not dropped");
        assert!(released(&mut w).is_empty());
        learn_next_hop(&mut w);
        let out = released(&mut w);
        assert_eq!(out.len(), 1);
        let (v, d) = &out[0];
        assert_eq!(*v, Verdict::Forward(UPLINK));
        assert_eq!((&d[0..6], &d[6..12]), (&S::HOP_MAC.0[..], &S::UP_MAC.0[..]));
        let t = tuple_of(d);
        assert_eq!((t.src, t.dst, t.dst_port), (S::UP, S::REMOTE, 53));
        assert_eq!(ip_of(d).ttl, 63);
        assert!(checksums_valid(d));
        assert!(d.ends_with(b"first"));
        // Its flow was kept: the answer reaches the endpoint.
        let a = S::from_outside(&udp(S::REMOTE, 53, S::UP, t.src_port, b"a"));
        assert_eq!(run_one(&mut w, UPLINK, &a, T0).0, Verdict::Forward(PORT_A));
        assert!(released(&mut w).is_empty(), "each frame leaves once");
    }

    #[test]
    fn packets_to_an_unresolved_neighbor_beyond_its_queue_commit_no_flow() {
        let s = S::new();
        let mut w = worker_for(&s);
        let n = 50u16;
        for sport in 0..n {
            let q = S::from_endpoint(S::A, &udp(S::A, 10_000 + sport, S::REMOTE, 53, b"q"));
            assert_eq!(run_one(&mut w, PORT_A, &q, T0).0, Verdict::Forward(UPLINK));
        }
        let held = crate::pipeline::pending::PER_NEIGHBOR;
        assert_eq!(w.dataplane().conntrack().len(), held);
        assert_eq!(
            w.counters().drops(R::ArpPending),
            u64::from(n) - held as u64
        );
        learn_next_hop(&mut w);
        assert_eq!(released(&mut w).len(), held);
    }
}
