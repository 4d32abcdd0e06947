//! What the kernel flow offload (`crate::offload`) reads of and does to a tracked flow: which
//! flows may be handed to the kernel (established, both directions' shortcuts of this
//! epoch), marking them so a flow is offered once, unmarking them when they close, and keeping
//! a flow alive while the kernel forwards its packets (which conntrack then never sees).

use super::{Conntrack, Flow, LIVE, OFFLOADED, REPLIED};
use crate::config::L4Proto;
use crate::nat::tcp::TcpState;
use crate::nat::{FlowId, Hit, Shortcut, Tuple};
use crate::time::Millis;

/// Both directions of a flow as the offload installs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffloadPair {
    /// The flow, for aging (`Conntrack::refresh`).
    pub flow: FlowId,
    /// The tuple original packets arrive with.
    pub original: Tuple,
    /// The tuple they leave with (replies arrive with it reversed, and leave with `original`
    /// reversed).
    pub translated: Tuple,
    /// The cached decisions of the original and the reply direction.
    pub shortcuts: [Shortcut; 2],
}

impl Flow {
    fn pair(&self, flow: FlowId) -> OffloadPair {
        OffloadPair {
            flow,
            original: self.orig(),
            translated: self.translated(),
            shortcuts: [self.original, self.reply],
        }
    }

    /// Both directions seen past the handshake: TCP established, UDP replied.
    fn established(&self) -> bool {
        match self.proto {
            L4Proto::Tcp => TcpState::from_u8(self.state) == TcpState::Established,
            L4Proto::Udp => self.flags & REPLIED != 0,
            L4Proto::Icmp => false,
        }
    }
}

impl Conntrack {
    /// For a packet of `hit`'s flow that just took its shortcut: the flow's two directions,
    /// marked offloaded, when it is established, both directions hold a shortcut of `epoch`
    /// and it was not offered since its shortcuts were last set. `None` otherwise (one flag
    /// read for a flow already offered).
    #[inline(always)]
    pub fn offload_candidate(&mut self, hit: &Hit, epoch: u32) -> Option<OffloadPair> {
        let i = self.live_index(hit.flow)?;
        let f = &mut self.flows[i];
        if f.flags & OFFLOADED != 0
            || !f.established()
            || f.original.epoch != epoch
            || f.reply.epoch != epoch
            || epoch == 0
        {
            return None;
        }
        f.flags |= OFFLOADED;
        Some(f.pair(hit.flow))
    }

    /// For a FIN or RST of `hit`'s flow: the flow's two directions when it was offloaded (the
    /// kernel entries must go), unmarked.
    pub fn offload_closing(&mut self, hit: &Hit) -> Option<OffloadPair> {
        let i = self.live_index(hit.flow)?;
        let f = &mut self.flows[i];
        if f.flags & OFFLOADED == 0 {
            return None;
        }
        f.flags &= !OFFLOADED;
        Some(f.pair(hit.flow))
    }

    /// True while flow `flow` is tracked (not expired nor removed).
    pub fn is_tracked(&self, flow: FlowId) -> bool {
        self.live_index(flow).is_some()
    }

    /// Keeps flow `flow` alive as if a packet had just been seen (the kernel forwarded some):
    /// its deadline moves to `now` plus its state's timeout. False when the flow is gone.
    pub fn refresh(&mut self, flow: FlowId, now: Millis) -> bool {
        let Some(i) = self.live_index(flow) else {
            return false;
        };
        let f = &mut self.flows[i];
        debug_assert!(f.flags & LIVE != 0);
        f.expires = f.expires.max(now.plus_secs(self.timeouts.for_flow(f)).0);
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{L4Proto, NatConfig};
    use crate::frame::PortId;
    use crate::nat::tcp::{ACK, FIN, SYN};
    use crate::nat::{Conntrack, Dir, Hit, NatAction, Shortcut, Timeouts, Tuple};
    use crate::time::Millis;

    const T0: Millis = Millis(1_000_000);

    /// A TCP flow out through NAPT after SYN and SYN-ACK, with a shortcut of epoch 7 for each
    /// direction; the hits of both directions.
    fn half_open() -> (Conntrack, Hit, Hit) {
        let mut ct = Conntrack::new(&NatConfig::default(), Timeouts::default());
        let orig = Tuple {
            proto: L4Proto::Tcp,
            src: [10, 0, 0, 2].into(),
            src_port: 40000,
            dst: [198, 51, 100, 7].into(),
            dst_port: 80,
        };
        let action = NatAction {
            snat: Some([192, 0, 2, 1].into()),
            dnat: None,
        };
        let out = ct.create(&orig, action, T0).unwrap();
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
        assert_eq!(pair.shortcuts.map(|s| s.ingress.0), [1, 0]);
        assert_eq!(ct.offload_candidate(&back, 7), None, "offered once");
        // Packets keep the mark; a new shortcut (new tables) clears it.
        ct.update(out.flow, Dir::Original, ACK, T0);
        assert_eq!(ct.offload_candidate(&out, 7), None);
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
    fn refreshing_keeps_a_flow_the_kernel_forwards() {
        let (mut ct, out, _) = half_open();
        let syn_recv = Timeouts::default().tcp_syn_recv;
        let later = T0.plus_secs(syn_recv - 1);
        assert!(ct.refresh(out.flow, later));
        ct.expire(T0.plus_secs(syn_recv + 1));
        assert!(ct.is_tracked(out.flow), "refreshed past its first deadline");
        ct.expire(later.plus_secs(syn_recv + 2));
        assert!(!ct.is_tracked(out.flow));
        assert!(!ct.refresh(out.flow, later), "a gone flow is not refreshed");
    }
}
