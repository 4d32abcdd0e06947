//! The offload stage for IPv6 flows, as `offload` is for v4: a tracked v6 flow (NAT66
//! masquerade, a published v6 port, a routed v6 network) is offered from the v6 shortcut once
//! established with both directions' shortcuts of this epoch, and taken back by its FIN or
//! RST (by its shortcut or the full path); a bridged v6 flow between two endpoints is read
//! here for `offload`'s bridged offer. Same rules as v4: a bulk-sized frame offers, once.

use super::flow6::flow6_of;
use super::ipv6::parse;
use super::shortcut6::shortcut_shape;
use super::state::BatchState;
use crate::nat::v6::{Hit6, OffloadPair6, Tuple6};
use crate::offload::{self, Direction, Request, Tracked};
use crate::wire::ethernet::{self, ETHERTYPE_IPV6};
use crate::wire::tcp::{FIN, RST};

/// The tuple and TCP flags of frame `d` when it is a v6 packet of the shape the offload
/// forwards: untagged, TCP or UDP right after the fixed header.
pub(super) fn plain6(d: &[u8]) -> Option<(Tuple6, u8)> {
    if d.len() < ethernet::HEADER_LEN || d[12..14] != ETHERTYPE_IPV6.to_be_bytes() {
        return None;
    }
    let ip = parse(d, ethernet::HEADER_LEN).ok()?;
    if !shortcut_shape(&ip) {
        return None;
    }
    let flow = flow6_of(d, &ip).ok()?;
    Some((flow.tuple, flow.tcp_flags))
}

impl BatchState<'_> {
    /// After a frame of `hit`'s v6 flow, `len` bytes long, took its shortcut with TCP flags
    /// `tcp_flags` (0 for UDP): offers the flow when it qualifies now, or asks for its
    /// removal when it closes.
    pub(super) fn offer_routed6(&mut self, hit: &Hit6, tcp_flags: u8, len: usize) {
        if tcp_flags & (FIN | RST) != 0 {
            self.take_back_routed6(hit);
            return;
        }
        if !offload::offers(len) {
            return;
        }
        let epoch = self.epoch;
        let Some(pair) = self.v6().ct.offload_candidate(hit, epoch) else {
            return;
        };
        if let Some(dirs) = self.routed_dirs6(&pair) {
            self.dp.offloads().offer(Request::Install {
                dirs,
                tracked: Tracked::Conntrack6(pair.flow),
                epoch,
            });
        }
    }

    /// A FIN or RST of `hit`'s v6 flow reached userspace: when the flow was offered, asks for
    /// both its directions to leave the kernel.
    pub(super) fn take_back_routed6(&mut self, hit: &Hit6) {
        let pair = self.v6().ct.offload_closing(hit);
        if let Some(dirs) = pair.and_then(|p| self.routed_dirs6(&p)) {
            self.dp.offloads().offer(Request::Remove {
                keys: [dirs[0].key, dirs[1].key],
            });
        }
    }

    /// Both directions of tracked v6 flow `pair` as the kernel would forward them, if its
    /// ports allow.
    fn routed_dirs6(&self, pair: &OffloadPair6) -> Option<[Direction; 2]> {
        let ends = |s: &crate::nat::Shortcut| {
            Some((
                self.port_out(s.ingress, None)?,
                self.port_out(s.egress, Some(s.vlan))?,
            ))
        };
        let [s0, s1] = &pair.shortcuts;
        offload::routed6(pair, [ends(s0)?, ends(s1)?])
    }
}
