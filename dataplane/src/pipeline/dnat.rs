//! The DNAT stage (published ports): which NAT action a new connection to a published port gets. From
//! the outside (on an uplink), DNAT to the target; from inside a network (hairpin), DNAT to
//! the target and SNAT to the target network's gateway, so that the target's replies come
//! back through sluice. The lookup itself is `tables::Tables::published` (the `portfwd` table).

use std::net::Ipv4Addr;

use super::flow::{FlowOf, L4Kind};
use super::state::BatchState;
use crate::counters::DropReason as R;
use crate::counters::DropReason;
use crate::nat::NatAction;

impl BatchState<'_> {
    /// The action for a new TCP or UDP connection from the outside to `dst`, when it is a
    /// published port.
    pub(super) fn inbound_dnat(&self, flow: &FlowOf, dst: Ipv4Addr) -> Option<NatAction> {
        match flow.kind {
            L4Kind::Tcp | L4Kind::Udp => self
                .t
                .published(flow.tuple.proto, dst, flow.tuple.dst_port)
                .map(|target| NatAction {
                    snat: None,
                    dnat: Some((target.ip, target.port)),
                }),
            _ => None,
        }
    }

    /// The action for a connection from inside a network to `dst`, when it is a published
    /// port (hairpin); no route when the target's network is gone.
    pub(super) fn hairpin_dnat(
        &self,
        flow: &FlowOf,
        dst: Ipv4Addr,
    ) -> Result<Option<NatAction>, DropReason> {
        let t = self.t;
        let Some(target) = t.published(flow.tuple.proto, dst, flow.tuple.dst_port) else {
            return Ok(None);
        };
        let gw = t.network(target.network).ok_or(R::NoRoute)?.config.gateway;
        Ok(Some(NatAction {
            snat: Some(gw),
            dnat: Some((target.ip, target.port)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::pipeline::tests::*;

    #[test]
    fn published_port_dnat_and_reply() {
        let s = S::new();
        let mut w = worker_for(&s);
        learn_next_hop(&mut w);
        let syn = S::from_outside(&tcp(S::REMOTE, 50000, S::UP, 8080, SYN, b""));
        let (v, out) = run_one(&mut w, UPLINK, &syn, T0);
        assert_eq!(v, Verdict::Forward(PORT_B));
        let t = tuple_of(&out);
        assert_eq!(
            (t.src, t.src_port, t.dst, t.dst_port),
            (S::REMOTE, 50000, S::B, 80)
        );
        assert_eq!(&out[0..6], &S::mac(S::B).0);
        assert!(checksums_valid(&out));
        let synack = S::from_endpoint(S::B, &tcp(S::B, 80, S::REMOTE, 50000, SYN | ACK, b""));
        let (v, back) = run_one(&mut w, PORT_B, &synack, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        let bt = tuple_of(&back);
        assert_eq!(
            (bt.src, bt.src_port, bt.dst, bt.dst_port),
            (S::UP, 8080, S::REMOTE, 50000)
        );
        let closed = S::from_outside(&tcp(S::REMOTE, 50000, S::UP, 8081, SYN, b""));
        assert_eq!(
            run_one(&mut w, UPLINK, &closed, T0).0,
            Verdict::Drop(R::NoFlow)
        );
        let ping_up = S::from_outside(&icmp_echo(S::REMOTE, S::UP, true, 1, 1));
        let (v, pong) = run_one(&mut w, UPLINK, &ping_up, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        assert_eq!(ip_of(&pong).dst, S::REMOTE);
    }

    #[test]
    fn hairpin_reaches_the_published_target_via_the_gateway() {
        let s = S::new();
        let mut w = worker_for(&s);
        let syn = S::from_endpoint(S::A, &tcp(S::A, 41000, S::UP, 8080, SYN, b""));
        let (v, out) = run_one(&mut w, PORT_A, &syn, T0);
        assert_eq!(v, Verdict::Forward(PORT_B));
        let t = tuple_of(&out);
        assert_eq!((t.src, t.dst, t.dst_port), (S::GW, S::B, 80));
        assert!(checksums_valid(&out));
        let synack = S::from_endpoint(S::B, &tcp(S::B, 80, S::GW, t.src_port, SYN | ACK, b""));
        let (v, back) = run_one(&mut w, PORT_B, &synack, T0);
        assert_eq!(v, Verdict::Forward(PORT_A));
        let bt = tuple_of(&back);
        assert_eq!(
            (bt.src, bt.src_port, bt.dst, bt.dst_port),
            (S::UP, 8080, S::A, 41000)
        );
        assert!(checksums_valid(&back));
    }
}
