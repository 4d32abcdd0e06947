//! The offload stage: offers established flows the userspace path just forwarded to the
//! kernel flow offload (see `crate::offload`): a tracked flow from the shortcut stage (both
//! directions' shortcuts of this epoch, TCP established or UDP answered; its FIN or RST takes
//! it back), a bridged flow between two endpoints from the bridge stage (both directions seen
//! past the handshake, in `Seen`). An offer is one push on a lock-free queue, once per flow;
//! any doubt (a port without interface index, a smaller MTU out, a tagged egress) offers
//! nothing and the flow stays in userspace. It drops nothing.

use super::plain;
use super::state::BatchState;
use crate::frame::{Frame, PortId};
use crate::nat::{Hit, OffloadPair, Shortcut, Timeouts};
use crate::offload::{self, Direction, PortOut, Request, Tracked};
use crate::tables::PortEntry;
use crate::wire::ethernet::EthernetFrame;
use crate::wire::tcp::{ACK, FIN, RST, SYN};

impl BatchState<'_> {
    /// After a frame of `hit`'s flow took its shortcut with TCP flags `tcp_flags` (0 for UDP):
    /// offers the flow when it qualifies now, or asks for its removal when it closes.
    #[inline(always)]
    pub(super) fn offer_routed(&mut self, hit: &Hit, tcp_flags: u8) {
        let epoch = self.epoch;
        let Some(ct) = self.ct.as_mut() else {
            return;
        };
        if tcp_flags & (FIN | RST) != 0 {
            if let Some(dirs) = ct.offload_closing(hit).and_then(|p| self.routed_dirs(&p)) {
                self.dp.offloads().offer(Request::Remove {
                    keys: [dirs[0].key, dirs[1].key],
                });
            }
            return;
        }
        let Some(pair) = ct.offload_candidate(hit, epoch) else {
            return;
        };
        if let Some(dirs) = self.routed_dirs(&pair) {
            self.dp.offloads().offer(Request::Install {
                dirs,
                tracked: Tracked::Conntrack(pair.flow),
                epoch,
            });
        }
    }

    /// Both directions of tracked flow `pair` as the kernel would forward them, if its ports
    /// allow.
    fn routed_dirs(&self, pair: &OffloadPair) -> Option<[Direction; 2]> {
        let ends = |s: &Shortcut| {
            Some((
                self.port_out(s.ingress, None)?,
                self.port_out(s.egress, Some(s.vlan))?,
            ))
        };
        let [s0, s1] = &pair.shortcuts;
        offload::routed(pair, [ends(s0)?, ends(s1)?])
    }

    /// Port `id` as the offload sees it: `None` when it has no interface index (not an
    /// AF_PACKET port with the TC program) or, as an egress of internal VLAN `egress_vlan`,
    /// would tag frames.
    fn port_out(&self, id: PortId, egress_vlan: Option<u16>) -> Option<PortOut> {
        let ifindex = self.dp.offloads().ifindex(id);
        let port = self.t.port(id).filter(|_| ifindex != 0)?;
        if egress_vlan.is_some_and(|v| port.egress_tag(v) != Some(None)) {
            return None;
        }
        let mtu = match port.network {
            Some(n) => self.t.network(n)?.config.mtu,
            None => self.t.uplink_on(id)?.mtu,
        };
        Some(PortOut { ifindex, mtu })
    }

    /// After frame `f` from endpoint port `from` was bridged to port `to` (on a network of
    /// MTU `mtu`, no overlay): records the flow's direction and offers the flow once both
    /// were seen past the handshake; a FIN or RST takes an offered flow back.
    #[inline(always)]
    pub(super) fn offer_bridged(&mut self, f: &Frame<'_>, from: &PortEntry, to: PortId, mtu: u16) {
        let o = self.dp.offloads();
        let (ia, ib) = (o.ifindex(f.meta.ingress), o.ifindex(to));
        if ia == 0 || ib == 0 {
            return;
        }
        let Some(p) = plain::parse(f.data()) else {
            return;
        };
        let Some(to_port) = self.t.port(to) else {
            return;
        };
        let (Some((a_mac, Some(a_ip))), Some((b_mac, Some(b_ip)))) =
            (from.endpoint, to_port.endpoint)
        else {
            return;
        };
        let eth = EthernetFrame::new_unchecked(f.data());
        if (p.tuple.src, p.tuple.dst, eth.src(), eth.dst()) != (a_ip, b_ip, a_mac, b_mac)
            || to_port.egress_tag(f.meta.vlan) != Some(None)
        {
            return;
        }
        let a = (PortOut { ifindex: ia, mtu }, a_mac);
        let b = (PortOut { ifindex: ib, mtu }, b_mac);
        let tcp = p.tuple.proto == crate::config::L4Proto::Tcp;
        if tcp && p.tcp_flags & (FIN | RST) != 0 {
            if let Some(dirs) = o
                .seen()
                .forget(&p.tuple)
                .then(|| offload::bridged(&p.tuple, a, b))
                .flatten()
            {
                o.offer(Request::Remove {
                    keys: [dirs[0].key, dirs[1].key],
                });
            }
            return;
        }
        let past_handshake = !tcp || p.tcp_flags & (SYN | ACK) == ACK;
        if self.epoch == 0 || !past_handshake || !o.seen().observe(&p.tuple, self.epoch) {
            return;
        }
        let t = Timeouts::default();
        let idle_secs = if tcp {
            t.tcp_established
        } else {
            t.udp_replied
        };
        if let Some(dirs) = offload::bridged(&p.tuple, a, b) {
            o.offer(Request::Install {
                dirs,
                tracked: Tracked::Bridged { idle_secs },
                epoch: self.epoch,
            });
        }
    }
}
