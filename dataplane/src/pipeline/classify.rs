//! The classify stage, every frame's first on the full path: its ingress port, its Ethernet
//! header (with at most one VLAN tag), the port's VLAN admission, and for a network port the
//! anti-spoofing checks of an endpoint's frames. Its drops: unknown port, malformed, VLAN not
//! allowed, spoofed MAC, spoofed IP.

use std::net::Ipv4Addr;

use super::flow::{self, Ipv4Info};
use super::state::BatchState;
use crate::config::UplinkConfig;
use crate::counters::DropReason as R;
use crate::counters::DropReason;
use crate::frame::{Frame, NetworkId};
use crate::tables::{NetworkEntry, PortEntry};
use crate::wire::arp::ArpPacket;
use crate::wire::ethernet::{parse_l2, L2Header, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::ipv4;
use crate::wire::MacAddr;

/// Where a classified frame goes next.
pub(super) enum Ingress<'t> {
    /// From a port of network `net`: to the bridge. `ip` is the IPv4 header of an endpoint's
    /// frame to the gateway, parsed by anti-spoofing (checksum not verified yet).
    Network {
        l2: L2Header,
        port: &'t PortEntry,
        net: (NetworkId, &'t NetworkEntry),
        ip: Option<Ipv4Info>,
    },
    /// From uplink `up`: to the uplink stage.
    Uplink { l2: L2Header, up: &'t UplinkConfig },
}

impl<'t> BatchState<'t> {
    /// Reads the frame's port and Ethernet header, admits its VLAN (setting `f.meta.vlan`)
    /// and checks an endpoint's sources.
    pub(super) fn classify(&mut self, f: &mut Frame<'_>) -> Result<Ingress<'t>, DropReason> {
        let t = self.t;
        let port = t.port(f.meta.ingress).ok_or(R::UnknownPort)?;
        let l2 = parse_l2(f.data()).map_err(|_| R::Malformed)?;
        let vlan = port
            .ingress_vlan(l2.vlan.map(|v| v.vid))
            .ok_or(R::VlanNotAllowed)?;
        f.meta.vlan = vlan;
        let Some(net_id) = port.network else {
            let up = t.uplink_on(f.meta.ingress).ok_or(R::UnknownPort)?;
            return Ok(Ingress::Uplink { l2, up });
        };
        let net = t.network(net_id).ok_or(R::UnknownPort)?;
        if l2.src.is_multicast() {
            return Err(R::Malformed);
        }
        let mut ip = None;
        if let Some((mac, own)) = port.endpoint {
            if l2.src != mac {
                return Err(R::SpoofedMac);
            }
            let routed = l2.dst == net.config.gateway_mac;
            ip = check_source_ip(f.data(), &l2, mac, own, routed)?;
            if l2.ethertype == ETHERTYPE_IPV6
                && (port.endpoint_v6.is_some() || net.config.ipv6.is_some())
            {
                super::ipv6::check_source(f.data(), l2.l3_offset, mac, port.endpoint_v6)?;
            }
        }
        Ok(Ingress::Network {
            l2,
            port,
            net: (net_id, net),
            ip,
        })
    }
}

/// Checks that an endpoint's IPv4 or ARP frame carries its own address (or 0.0.0.0 in ARP
/// probes). For a frame to the gateway (`routed`) it returns the parsed IPv4 header (checksum
/// not verified yet), so routing does not parse it again; a bridged frame passes unchanged, so
/// only its version, header length and source address are read.
#[inline(always)]
pub(super) fn check_source_ip(
    d: &[u8],
    l2: &L2Header,
    mac: MacAddr,
    ip: Option<Ipv4Addr>,
    routed: bool,
) -> Result<Option<Ipv4Info>, DropReason> {
    let payload = d.get(l2.l3_offset..).ok_or(R::Malformed)?;
    match l2.ethertype {
        ETHERTYPE_IPV4 if routed => {
            let parsed = flow::parse_ipv4_unverified(d, l2.l3_offset)?;
            match ip {
                Some(own) if own == parsed.src => Ok(Some(parsed)),
                _ => Err(R::SpoofedIp),
            }
        }
        ETHERTYPE_IPV4 => match ipv4::peek_src(payload) {
            Some(src) if Some(src) == ip => Ok(None),
            Some(_) => Err(R::SpoofedIp),
            None => Err(R::Malformed),
        },
        ETHERTYPE_ARP => {
            let arp = ArpPacket::new_checked(payload).map_err(|_| R::Malformed)?;
            if arp.sender_mac() != mac {
                return Err(R::SpoofedMac);
            }
            let s = arp.sender_ip();
            if s.is_unspecified() || Some(s) == ip {
                Ok(None)
            } else {
                Err(R::SpoofedIp)
            }
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::*;

    #[test]
    fn trunk_learns_per_vlan_and_refuses_other_vlans() {
        let s = S::new();
        let mut w = worker_for(&s);
        let m1 = MacAddr([2, 1, 1, 1, 1, 1]);
        let m2 = MacAddr([2, 2, 2, 2, 2, 2]);
        let f = tagged(&eth(m2, m1, 0x0800, &udp(S::A, 1, S::B, 2, b"x")), 10);
        assert_eq!(
            run_one(&mut w, TRUNK, &f, T0).0,
            Verdict::Flood {
                network: crate::frame::NetworkId(0),
                vlan: 10
            }
        );
        let back = tagged(&eth(m1, m2, 0x0800, &udp(S::B, 2, S::A, 1, b"y")), 10);
        // m1 was learned on the trunk in VLAN 10: the answer from the same port is a hairpin.
        assert_eq!(
            run_one(&mut w, TRUNK, &back, T0).0,
            Verdict::Drop(R::Hairpin)
        );
        let other_vlan = tagged(&eth(m1, m2, 0x0800, &udp(S::B, 2, S::A, 1, b"y")), 20);
        assert!(matches!(
            run_one(&mut w, TRUNK, &other_vlan, T0).0,
            Verdict::Flood { vlan: 20, .. }
        ));
        let bad = tagged(&eth(m2, m1, 0x0800, &udp(S::A, 1, S::B, 2, b"x")), 30);
        assert_eq!(
            run_one(&mut w, TRUNK, &bad, T0).0,
            Verdict::Drop(R::VlanNotAllowed)
        );
        let tagged_on_access = tagged(&bridged_a_to_b(), 10);
        assert_eq!(
            run_one(&mut w, PORT_A, &tagged_on_access, T0).0,
            Verdict::Drop(R::VlanNotAllowed)
        );
    }

    #[test]
    fn anti_spoofing_drops_foreign_sources() {
        let s = S::new();
        let mut w = worker_for(&s);
        let wrong_mac = eth(
            S::mac(S::B),
            MacAddr([2, 0x42, 1, 1, 1, 1]),
            0x0800,
            &udp(S::A, 1, S::B, 2, b"x"),
        );
        assert_eq!(
            run_one(&mut w, PORT_A, &wrong_mac, T0).0,
            Verdict::Drop(R::SpoofedMac)
        );
        let wrong_ip = eth(
            S::mac(S::B),
            S::mac(S::A),
            0x0800,
            &udp(Ipv4Addr::new(172, 17, 0, 99), 1, S::B, 2, b"x"),
        );
        assert_eq!(
            run_one(&mut w, PORT_A, &wrong_ip, T0).0,
            Verdict::Drop(R::SpoofedIp)
        );
        let arp_lie = arp_request(S::mac(S::A), S::B, S::GW);
        assert_eq!(
            run_one(&mut w, PORT_A, &arp_lie, T0).0,
            Verdict::Drop(R::SpoofedIp)
        );
        let probe = arp_request(S::mac(S::A), Ipv4Addr::UNSPECIFIED, S::B);
        assert!(matches!(
            run_one(&mut w, PORT_A, &probe, T0).0,
            Verdict::Flood { .. }
        ));
        // A trunk cannot steal an endpoint's MAC.
        let steal = eth(
            MacAddr([2, 3, 3, 3, 3, 3]),
            S::mac(S::A),
            0x0806,
            &[0u8; 28],
        );
        assert_eq!(
            run_one(&mut w, TRUNK, &steal, T0).0,
            Verdict::Drop(R::SpoofedMac)
        );
        let c = w.counters();
        assert_eq!(c.drops(R::SpoofedMac), 2);
        assert_eq!(c.drops(R::SpoofedIp), 2);
    }
}
