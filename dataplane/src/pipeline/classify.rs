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
use crate::wire::ethernet::{parse_l2, L2Header, ETHERTYPE_ARP, ETHERTYPE_IPV4};
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
fn check_source_ip(
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
