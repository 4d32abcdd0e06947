//! ARP: the gateway and the DNS forwarder answer for themselves.
#![forbid(unsafe_code)]

use sluice_dataplane::wire::{arp, ethernet, ArpPacket, EthernetFrame};

use crate::config::{virtual_mac, NetConfig};
use crate::counters::Drop;
use crate::frame::ETH_LEN;

/// Answers an ARP request (the frame's Ethernet payload is `arp_bytes`, its sender `frame_src`)
/// for the gateway or the DNS address: the reply's length in `out`, `Ok(None)` when the request
/// is for someone else (the guest probing its own address, say).
pub fn reply(arp_bytes: &[u8], cfg: &NetConfig, out: &mut [u8]) -> Result<Option<usize>, Drop> {
    let req = ArpPacket::new_checked(arp_bytes).map_err(|_| Drop::Malformed)?;
    if req.operation() != arp::OP_REQUEST {
        return Ok(None);
    }
    let target = req.target_ip();
    if target != cfg.gateway && !(cfg.dns_enabled && target == cfg.dns) {
        return Ok(None);
    }
    let len = ETH_LEN + arp::PACKET_LEN;
    let mac = virtual_mac(target);
    let mut eth = EthernetFrame::new_unchecked(&mut out[..len]);
    eth.set_dst(req.sender_mac());
    eth.set_src(mac);
    eth.set_ethertype(ethernet::ETHERTYPE_ARP);
    let mut rep = ArpPacket::new_unchecked(&mut out[ETH_LEN..len]);
    rep.init_ethernet_ipv4();
    rep.set_operation(arp::OP_REPLY);
    rep.set_sender_mac(mac);
    rep.set_sender_ip(target);
    rep.set_target_mac(req.sender_mac());
    rep.set_target_ip(req.sender_ip());
    Ok(Some(len))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sluice_dataplane::wire::MacAddr;
    use std::net::Ipv4Addr;

    pub(crate) fn request(sender: MacAddr, sip: Ipv4Addr, tip: Ipv4Addr) -> Vec<u8> {
        let mut b = vec![0u8; arp::PACKET_LEN];
        let mut p = ArpPacket::new_unchecked(&mut b[..]);
        p.init_ethernet_ipv4();
        p.set_operation(arp::OP_REQUEST);
        p.set_sender_mac(sender);
        p.set_sender_ip(sip);
        p.set_target_ip(tip);
        b
    }

    #[test]
    fn gateway_and_dns_answer_others_do_not() {
        let cfg = NetConfig::from_cidr("10.0.2.0/24", 1500).unwrap();
        let guest = MacAddr([2, 1, 2, 3, 4, 5]);
        let mut out = vec![0u8; 64];
        for ip in [cfg.gateway, cfg.dns] {
            let n = reply(&request(guest, cfg.guest, ip), &cfg, &mut out)
                .unwrap()
                .unwrap();
            let eth = EthernetFrame::new_checked(&out[..n]).unwrap();
            assert_eq!(eth.dst(), guest);
            let rep = ArpPacket::new_checked(eth.payload()).unwrap();
            assert_eq!(rep.operation(), arp::OP_REPLY);
            assert_eq!((rep.sender_ip(), rep.sender_mac()), (ip, virtual_mac(ip)));
            assert_eq!(rep.target_ip(), cfg.guest);
        }
        let other = request(guest, cfg.guest, Ipv4Addr::new(10, 0, 2, 50));
        assert_eq!(reply(&other, &cfg, &mut out), Ok(None));
        assert_eq!(reply(&[0u8; 5], &cfg, &mut out), Err(Drop::Malformed));
        let mut no_dns = cfg.clone();
        no_dns.dns_enabled = false;
        let dns = request(guest, cfg.guest, cfg.dns);
        assert_eq!(reply(&dns, &no_dns, &mut out), Ok(None));
    }
}
