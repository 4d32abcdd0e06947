//! The engine's IPv6 side (`--enable-ipv6`): router advertisements so the guest configures an
//! address in fd00::/64 by SLAAC, neighbour advertisements for the gateway, the DNS forwarder
//! and the router's link-local address, echo, and TCP and UDP handed to the shared L4 code.

use sluice_dataplane::wire::{icmpv6, ndisc, radv, Icmpv6Packet, Ipv6Packet, NdiscPacket};
use sluice_dataplane::wire::{IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

use super::*;
use crate::config::{in_prefix6, PREFIX6};

/// How long the guest may use the engine as its default router, in seconds.
const ROUTER_LIFETIME_S: u16 = 1800;
/// The prefix's valid and preferred lifetimes, in seconds (libslirp's).
const PREFIX_LIFETIMES_S: (u32, u32) = (86400, 14400);
/// Unsolicited router advertisements are this far apart (libslirp sends them every 200 to
/// 600 seconds).
pub(super) const RA_INTERVAL_MS: u64 = 200_000;

impl Engine {
    /// Handles one IPv6 frame from the guest (dropped as unsupported unless IPv6 is on).
    pub(super) fn on_ipv6(&mut self, frame: &[u8]) -> Result<(), Drop> {
        if !self.net.ipv6 {
            return Err(Drop::Unsupported);
        }
        let ip = Ipv6Packet::new_checked(&frame[ETH_LEN..]).map_err(|_| Drop::Malformed)?;
        let (src, dst) = (ip.src(), ip.dst());
        if in_prefix6(src) {
            self.guest6 = Some(src);
        }
        match ip.next_header() {
            IPPROTO_ICMPV6 => self.on_guest_icmpv6(frame, &ip),
            IPPROTO_TCP => self.on_guest_tcp(ip.payload(), src.into(), dst.into()),
            IPPROTO_UDP => self.on_guest_udp(ip.payload(), src.into(), dst.into()),
            // Extension headers (the hop-by-hop of MLD reports among them).
            _ => Err(Drop::Unsupported),
        }
    }

    fn on_guest_icmpv6(&mut self, frame: &[u8], ip: &Ipv6Packet<&[u8]>) -> Result<(), Drop> {
        if radv::is_solicitation(ip) {
            self.send_router_advert();
            return Ok(());
        }
        let (src, dst) = (ip.src(), ip.dst());
        let msg = Icmpv6Packet::new_checked(ip.payload()).map_err(|_| Drop::Malformed)?;
        match msg.msg_type() {
            ndisc::NEIGHBOR_SOLICIT => self.answer_solicitation(frame, ip.payload()),
            icmpv6::ECHO_REQUEST => {
                if !self.csum_partial && !msg.verify_checksum(src, dst) {
                    return Err(Drop::Malformed);
                }
                let echo = icmp::parse_echo6(ip.payload(), icmpv6::ECHO_REQUEST)?;
                self.on_guest_echo(&echo, src.into(), dst.into())
            }
            _ => Err(Drop::Unsupported),
        }
    }

    /// Answers a neighbour solicitation for one of the engine's own addresses in place
    /// (others, such as the guest's duplicate address detection, get no answer).
    fn answer_solicitation(&mut self, frame: &[u8], message: &[u8]) -> Result<(), Drop> {
        let ns = NdiscPacket::new_checked(message).map_err(|_| Drop::Malformed)?;
        let target = ns.target();
        if !self.is_local(target.into()) {
            return Ok(());
        }
        let mac = self.net.mac_for(target.into());
        let room = frame.len().max(ETH_LEN + ndisc::ADVERT_LEN);
        let buf = &mut self.tx.buf[..room];
        buf[..frame.len()].copy_from_slice(frame);
        let router = target != DNS6;
        let len = ndisc::write_advert(buf, ETH_LEN, (mac, target), router)
            .map_err(|_| Drop::Malformed)?;
        self.tx.send(len);
        Ok(())
    }

    /// Announces the router, the prefix and the DNS forwarder to all nodes.
    pub(super) fn send_router_advert(&mut self) {
        let (valid_lifetime, preferred_lifetime) = PREFIX_LIFETIMES_S;
        let ra = radv::Advert {
            router_lifetime: ROUTER_LIFETIME_S,
            mtu: u32::from(self.net.mtu),
            prefix: PREFIX6,
            valid_lifetime,
            preferred_lifetime,
            dns: self.net.dns_enabled.then_some(DNS6),
            dns_lifetime: u32::from(ROUTER_LIFETIME_S),
        };
        let from = (virtual_mac(self.net.gateway), ROUTER_LL);
        if let Ok(len) = radv::write_advert(&mut self.tx.buf, from, &ra) {
            self.tx.send(len);
        }
    }
}
