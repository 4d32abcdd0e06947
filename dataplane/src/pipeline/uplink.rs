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
            return self.uplink6(f, l2, up);
        }
        let ip = flow::parse_ipv4(f.data(), l2.l3_offset)?;
        if ip.dst != up.ip.addr {
            return Err(R::NotForUs);
        }
        if let Some(v) = self.vxlan_decap(f, &ip) {
            if let (true, Ok(Verdict::Forward(to))) = (self.offload, &v) {
                self.offer_overlay_in(f, *to);
            }
            return v;
        }
        let flow = flow::flow_of(f.data(), &ip)?;
        if flow.kind == L4Kind::Echo(true) && self.lookup(&flow.tuple).is_none() {
            icmpv4::write_echo_reply(f.data_mut(), ip.l3, up.mac).map_err(|_| R::Malformed)?;
            return Ok(Verdict::Forward(up.port));
        }
        let action = self.inbound_dnat(&flow, ip.dst);
        self.translate_and_route(f, &ip, &flow, action, u16::MAX)
    }
}
