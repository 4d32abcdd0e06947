//! The shortcut of established v6 flows, as `shortcut` is for v4: NAT66 caches its decision
//! for a direction of a flow (`Shortcut`, in the v6 flow) when it routes a packet of that
//! direction, and a later packet of the direction (untagged, TCP or UDP right after the fixed
//! header, hop limit above 1, from a source MAC its port's shortcuts serve, to the port's
//! routed MAC) arriving on the same port under the same epoch is rewritten at once and
//! leaves, skipping `classify`, `bridge`, `gateway` and the `ipv6` stage. It drops nothing:
//! any doubt sends the frame down the full path. v6 is not staged (the v6 flow is looked up
//! here, under the v6 lock the batch takes once); v4 frames pay one ethertype compare.

use super::flow6::{flow6_of, rewrite6, Flow6};
use super::ipv6::{parse, V6Info};
use super::shortcut::RoutedFrom;
use super::state::BatchState;
use crate::frame::{Frame, GsoType, PortId, Verdict};
use crate::nat::v6::Hit6;
use crate::nat::Shortcut;
use crate::wire::ethernet::{self, EthernetFrame, ETHERTYPE_IPV6};
use crate::wire::ipv6::HEADER_LEN;
use crate::wire::{IPPROTO_TCP, IPPROTO_UDP};

/// True for the packets whose decision a shortcut may cache or serve: untagged, TCP or UDP
/// right after the fixed header (no extension header, so no fragment either).
pub(super) fn shortcut_shape(ip: &V6Info) -> bool {
    ip.l3 == ethernet::HEADER_LEN
        && ip.l4 == HEADER_LEN
        && matches!(ip.proto, IPPROTO_TCP | IPPROTO_UDP)
}

/// True when frame `f`'s Ethernet addresses are those a shortcut of its ingress port serves.
fn routed_from_served(b: &BatchState<'_>, f: &Frame<'_>) -> bool {
    let eth = EthernetFrame::new_unchecked(f.data());
    RoutedFrom::of(b.t, f.meta.ingress)
        .is_some_and(|from| from.ours == eth.dst() && from.shortcut_from(eth.src()))
}

impl BatchState<'_> {
    /// The v6 fast path: `None` (the full path) unless the frame is IPv6 and its flow holds
    /// a shortcut of this epoch for its ingress port. Inlined: v4 frames pay only the
    /// ethertype compare.
    #[inline(always)]
    pub(super) fn shortcut6(&mut self, f: &mut Frame<'_>) -> Option<Verdict> {
        let d = f.data();
        if d.len() < ethernet::HEADER_LEN || d[12..14] != ETHERTYPE_IPV6.to_be_bytes() {
            return None;
        }
        self.follow6(f)
    }

    /// [`BatchState::shortcut6`] for an IPv6 frame.
    #[inline(never)]
    fn follow6(&mut self, f: &mut Frame<'_>) -> Option<Verdict> {
        let (epoch, ingress, now) = (self.epoch, f.meta.ingress, self.now);
        let ip = parse(f.data(), ethernet::HEADER_LEN).ok()?;
        if epoch == 0 || !shortcut_shape(&ip) || ip.hop_limit <= 1 {
            return None;
        }
        if !routed_from_served(self, f) {
            return None;
        }
        let flow = flow6_of(f.data(), &ip).ok()?;
        let gso = f.meta.offload.gso != GsoType::None;
        let ct = &mut self.v6().ct;
        let hit = ct.lookup(&flow.tuple)?;
        let usable = |s: &Shortcut| {
            s.epoch == epoch && s.ingress == ingress && (gso || ip.total <= usize::from(s.mtu))
        };
        let s = ct.follow_shortcut(&hit, flow.tcp_flags, now, usable)?;
        if self.offload {
            self.offer_routed6(&hit, flow.tcp_flags, f.len());
        }
        let partial = f.meta.offload.csum_partial;
        rewrite6(f.data_mut(), &ip, &flow, &hit.rewrite, partial);
        EthernetFrame::new_unchecked(f.data_mut()).set_addresses(&s.l2_out);
        f.meta.vlan = s.vlan;
        self.routed = true;
        Some(Verdict::Forward(s.egress))
    }

    /// Whether the decision NAT66 is about to take for frame `f` may be cached: read before
    /// the frame's Ethernet header is rewritten.
    pub(super) fn may_remember6(&self, f: &Frame<'_>, ip: &V6Info, flow: &Flow6) -> bool {
        self.epoch != 0
            && flow.quoted.is_none()
            && shortcut_shape(ip)
            && routed_from_served(self, f)
    }

    /// Caches the decision just taken for `hit`'s direction (frame `f` rewritten, leaving by
    /// `egress`; `mtu` the largest packet the full path let through without the too-big
    /// path).
    pub(super) fn remember6(&mut self, f: &Frame<'_>, hit: &Hit6, egress: PortId, mtu: u16) {
        let mut l2_out = [0u8; 12];
        l2_out.copy_from_slice(&f.data()[..12]);
        let s = Shortcut {
            epoch: self.epoch,
            ingress: f.meta.ingress,
            egress,
            vlan: f.meta.vlan,
            mtu,
            l2_out,
        };
        self.v6().ct.set_shortcut(hit, s);
    }
}
