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
