//! The uplink stage: frames from the outside, after classification. Learns neighbours from
//! ARP (applied at batch end) and answers ARP for the uplink address, answers pings of it,
//! and hands replies of NAPT flows and new connections to published ports to `nat`. Its drops:
//! not for us, unsupported, malformed (and `nat`'s: no flow).

use super::flow::{self, L4Kind};
use super::gateway::arp_for;
use super::state::BatchState;
use crate::config::UplinkConfig;
use crate::counters::DropReason as R;
use crate::counters::DropReason;
use crate::frame::{Frame, Verdict};
use crate::nat::NatAction;
use crate::wire::arp::ArpPacket;
use crate::wire::ethernet::{L2Header, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::wire::icmpv4;

impl<'t> BatchState<'t> {
    /// A frame from the outside: ARP for the uplink address, ping of it, replies of NAPT flows
    /// and new connections to published ports.
    pub(super) fn uplink(
        &mut self,
        f: &mut Frame<'_>,
        l2: &L2Header,
        up: &'t UplinkConfig,
    ) -> Result<Verdict, DropReason> {
        let t = self.t;
        if l2.ethertype == ETHERTYPE_ARP {
            let arp = ArpPacket::new_checked(f.data().get(l2.l3_offset..).ok_or(R::Malformed)?)
                .map_err(|_| R::Malformed)?;
            let (sip, smac) = (arp.sender_ip(), arp.sender_mac());
            if up.ip.contains(sip) && !sip.is_unspecified() && !smac.is_multicast() {
                let _ = self.arp_learn.try_push(((up.port, sip), smac));
            }
            return Ok(arp_for(f, l2, up.mac, up.ip.addr)?.unwrap_or(Verdict::Consumed));
        }
        if l2.dst != up.mac && !l2.dst.is_multicast() {
            return Err(R::NotForUs);
        }
        if l2.ethertype != ETHERTYPE_IPV4 {
            return Err(R::Unsupported);
        }
        let ip = flow::parse_ipv4(f.data(), l2.l3_offset)?;
        if ip.dst != up.ip.addr {
            return Err(R::NotForUs);
        }
        let flow = flow::flow_of(f.data(), &ip)?;
        if flow.kind == L4Kind::Echo(true) && self.lookup(&flow.tuple).is_none() {
            icmpv4::write_echo_reply(f.data_mut(), ip.l3, up.mac).map_err(|_| R::Malformed)?;
            return Ok(Verdict::Forward(up.port));
        }
        let action = match flow.kind {
            L4Kind::Tcp | L4Kind::Udp => t
                .published(flow.tuple.proto, ip.dst, flow.tuple.dst_port)
                .map(|target| NatAction {
                    snat: None,
                    dnat: Some((target.ip, target.port)),
                }),
            _ => None,
        };
        self.translate_and_route(f, &ip, &flow, action, u16::MAX)
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
}
