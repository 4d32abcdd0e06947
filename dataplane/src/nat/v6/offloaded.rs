//! What the kernel flow offload (`crate::offload`) reads of and does to a tracked v6 flow, as
//! `conntrack::offloaded` does for v4: which flows may be handed to the kernel (established,
//! both directions' shortcuts of this epoch), marking them so a flow is offered once,
//! unmarking them when they close, and keeping a flow alive while the kernel forwards it.
//! A v6 flow is named by its slab slot, which a later flow may reuse: the offload thread
//! names it by its slot and original tuple together.

use super::{Conntrack6, Flow6, Hit6, Tuple6};
use crate::config::L4Proto;
use crate::nat::tcp::TcpState;
use crate::nat::Shortcut;
use crate::time::Millis;

/// Both directions of a v6 flow as the offload installs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffloadPair6 {
    /// The flow's slot, for aging (`Conntrack6::refresh`, with `original`).
    pub flow: u32,
    /// The tuple original packets arrive with.
    pub original: Tuple6,
    /// The tuple they leave with (replies arrive with it reversed).
    pub translated: Tuple6,
    /// The cached decisions of the original and the reply direction.
    pub shortcuts: [Shortcut; 2],
}

impl Flow6 {
    fn pair(&self, flow: u32) -> OffloadPair6 {
        OffloadPair6 {
            flow,
            original: self.original,
            translated: self.reply.reversed(),
            shortcuts: self.shortcuts,
        }
    }

    /// Both directions seen past the handshake: TCP established, UDP replied.
    fn established(&self) -> bool {
        match self.original.proto {
            L4Proto::Tcp => self.state == TcpState::Established,
            L4Proto::Udp => self.replied,
            L4Proto::Icmp => false,
        }
    }
}

impl Conntrack6 {
    /// The flow in slot `flow` if its original tuple is `original`.
    fn named(&mut self, flow: u32, original: &Tuple6) -> Option<&mut Flow6> {
        let f = self.flows.get_mut(flow as usize)?.as_mut()?;
        (f.original == *original).then_some(f)
    }

    /// For a packet of `hit`'s flow that just took its shortcut: the flow's two directions,
    /// marked offloaded, when it is established, both directions hold a shortcut of `epoch`
    /// and it was not offered since its shortcuts were last set.
    pub fn offload_candidate(&mut self, hit: &Hit6, epoch: u32) -> Option<OffloadPair6> {
        let f = self.flows.get_mut(hit.flow as usize)?.as_mut()?;
        if f.offloaded
            || epoch == 0
            || !f.established()
            || f.shortcuts.iter().any(|s| s.epoch != epoch)
        {
            return None;
        }
        f.offloaded = true;
        Some(f.pair(hit.flow))
    }

    /// For a FIN or RST of `hit`'s flow: the flow's two directions when it was offloaded (the
    /// kernel entries must go), unmarked.
    pub fn offload_closing(&mut self, hit: &Hit6) -> Option<OffloadPair6> {
        let f = self.flows.get_mut(hit.flow as usize)?.as_mut()?;
        if !f.offloaded {
            return None;
        }
        f.offloaded = false;
        Some(f.pair(hit.flow))
    }

    /// True while the flow in slot `flow` with original tuple `original` is tracked.
    pub fn is_tracked(&mut self, flow: u32, original: &Tuple6) -> bool {
        self.named(flow, original).is_some()
    }

    /// Keeps that flow alive as if a packet had just been seen (the kernel forwarded some):
    /// its deadline moves to `now` plus its state's timeout. False when the flow is gone.
    pub fn refresh(&mut self, flow: u32, original: &Tuple6, now: Millis) -> bool {
        let timeouts = self.timeouts;
        let Some(f) = self.named(flow, original) else {
            return false;
        };
        f.expires = f.expires.max(now.plus_secs(timeouts.for_v6(f)));
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use crate::frame::PortId;
    use crate::nat::tcp::{ACK, FIN, SYN};
    use crate::nat::v6::{Inside, Translate6};
    use crate::nat::{Dir, Timeouts};
    use crate::wire::MacAddr;

    const T0: Millis = Millis(1_000_000);

    /// A TCP flow out through NAT66 after SYN and SYN-ACK, with a shortcut of epoch 7 for
    /// each direction; the hits of both directions.
    fn half_open() -> (Conntrack6, Hit6, Hit6) {
        let ports = crate::config::NatConfig::default().ports;
        let mut ct = Conntrack6::new(ports, 100, Timeouts::default());
        let orig = Tuple6 {
            proto: L4Proto::Tcp,
            src: "fd00:9::2".parse().unwrap(),
            src_port: 40000,
            dst: "2001:db8:7::7".parse().unwrap(),
            dst_port: 80,
        };
        let inside = Inside {
            port: PortId(1),
            mac: MacAddr([2, 0, 0, 0, 0, 2]),
            uplink: PortId(0),
        };
        let up: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let how = Translate6::Masquerade(up);
        let out = ct.create(orig, how, (inside, true), T0).unwrap();
        ct.update(out.flow, Dir::Original, SYN, T0);
        let back = ct.lookup(&out.rewrite.reversed()).unwrap();
        ct.update(back.flow, Dir::Reply, SYN | ACK, T0);
        let s = |port| Shortcut {
            epoch: 7,
            ingress: PortId(port),
            ..Shortcut::default()
        };
        ct.set_shortcut(&out, s(1));
        ct.set_shortcut(&back, s(0));
        (ct, out, back)
    }

    #[test]
    fn offered_once_established_with_both_shortcuts_of_the_epoch() {
        let (mut ct, out, back) = half_open();
        assert_eq!(ct.offload_candidate(&out, 7), None, "not established yet");
        ct.update(out.flow, Dir::Original, ACK, T0);
        assert_eq!(
            ct.offload_candidate(&out, 8),
            None,
            "shortcuts of another epoch"
        );
        let pair = ct.offload_candidate(&out, 7).unwrap();
        assert_eq!(pair.translated, out.rewrite);
        assert_eq!(
            pair.original,
            ct.lookup(&out.rewrite.reversed())
                .unwrap()
                .rewrite
                .reversed()
        );
        assert_eq!(pair.shortcuts.map(|s| s.ingress.0), [1, 0]);
        assert_eq!(ct.offload_candidate(&back, 7), None, "offered once");
        // A new shortcut (new tables) clears the mark.
        ct.set_shortcut(
            &back,
            Shortcut {
                epoch: 7,
                ..Shortcut::default()
            },
        );
        assert!(ct.offload_candidate(&back, 7).is_some());
        // Closing returns the pair once and unmarks it.
        assert_eq!(ct.offload_closing(&out).map(|p| p.flow), Some(out.flow));
        assert_eq!(ct.offload_closing(&out), None);
        ct.update(out.flow, Dir::Original, FIN | ACK, T0);
    }

    #[test]
    fn refreshing_keeps_a_flow_the_kernel_forwards_named_by_slot_and_tuple() {
        let (mut ct, out, _) = half_open();
        let orig = ct
            .lookup(&out.rewrite.reversed())
            .unwrap()
            .rewrite
            .reversed();
        let other = Tuple6 {
            src_port: 1,
            ..orig
        };
        assert!(!ct.refresh(out.flow, &other, T0), "another flow's tuple");
        assert!(!ct.is_tracked(out.flow, &other));
        let syn_recv = Timeouts::default().tcp_syn_recv;
        let later = T0.plus_secs(syn_recv - 1);
        assert!(ct.refresh(out.flow, &orig, later));
        ct.expire(T0.plus_secs(syn_recv + 1));
        assert!(
            ct.is_tracked(out.flow, &orig),
            "refreshed past its first deadline"
        );
        ct.expire(later.plus_secs(syn_recv + 2));
        assert!(!ct.is_tracked(out.flow, &orig));
        assert!(
            !ct.refresh(out.flow, &orig, later),
            "a gone flow is not refreshed"
        );
    }
}
