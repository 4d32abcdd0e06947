use super::*;
use sluice_dataplane::wire::{arp as warp, tcp as wtcp, ArpPacket, TcpPacket};
use std::os::unix::net::UnixDatagram;

/// An engine whose "TAP" is one end of a datagram socketpair (frames in, frames out), with a
/// policy that refuses every host destination, so no test frame leaves the machine.
fn engine() -> (Engine, UnixDatagram) {
    let (a, b) = UnixDatagram::pair().unwrap();
    let mut net = NetConfig::from_cidr("10.0.2.0/24", 1500).unwrap();
    net.host_loopback = false;
    net.dns_enabled = false;
    let e = Engine::new(EngineSetup {
        net,
        resolver: None,
        tap: OwnedFd::from(a),
        exit_fd: None,
        pidfd: None,
        api_socket: None,
        vnet_hdr: false,
    })
    .unwrap();
    b.set_nonblocking(true).unwrap();
    (e, b)
}

const GUEST_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x64]);
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);

fn replies(b: &UnixDatagram) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; MAX_FRAME];
    while let Ok(n) = b.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

fn arp_request(tip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; ETH_LEN + warp::PACKET_LEN];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    eth.set_dst(MacAddr::BROADCAST);
    eth.set_src(GUEST_MAC);
    eth.set_ethertype(ethernet::ETHERTYPE_ARP);
    let mut a = ArpPacket::new_unchecked(&mut f[ETH_LEN..]);
    a.init_ethernet_ipv4();
    a.set_operation(warp::OP_REQUEST);
    a.set_sender_mac(GUEST_MAC);
    a.set_sender_ip(GUEST);
    a.set_target_ip(tip);
    f
}

/// A guest TCP SYN frame to `dst:80`.
fn syn(dst: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; crate::frame::L4_AT + 20];
    f[crate::frame::L4_AT + 12] = 5 << 4;
    let mut t = TcpPacket::new_unchecked(&mut f[crate::frame::L4_AT..]);
    t.set_src_port(40000);
    t.set_dst_port(80);
    t.set_seq(1000);
    t.set_flags(wtcp::SYN);
    t.set_window(65535);
    t.fill_checksum_v4(GUEST, dst);
    let ends = Ends {
        src_mac: GUEST_MAC,
        dst_mac: virtual_mac(Ipv4Addr::new(10, 0, 2, 2)),
        src: GUEST.into(),
        dst: dst.into(),
    };
    crate::frame::ip_headers(&mut f, &ends, IPPROTO_TCP, 20, 1);
    f
}

#[test]
fn arp_for_the_gateway_is_answered_on_the_tap() {
    let (mut e, b) = engine();
    e.on_frame(&arp_request(Ipv4Addr::new(10, 0, 2, 2)))
        .unwrap();
    let out = replies(&b);
    assert_eq!(out.len(), 1);
    let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
    assert_eq!(eth.dst(), GUEST_MAC);
    assert_eq!(
        ArpPacket::new_checked(eth.payload()).unwrap().operation(),
        warp::OP_REPLY
    );
    assert_eq!(e.counters().tx_frames, 1);
}

#[test]
fn refused_syn_gets_rst_and_a_counted_drop() {
    let (mut e, b) = engine();
    for dst in [Ipv4Addr::new(10, 0, 2, 2), Ipv4Addr::new(10, 0, 2, 50)] {
        assert_eq!(e.on_frame(&syn(dst)), Err(Drop::Refused));
        let out = replies(&b);
        let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let seg = tcp::parse(ip.payload(), ip.src().into(), ip.dst().into(), true).unwrap();
        assert!(seg.has(wtcp::RST));
        assert_eq!(seg.ack, 1001);
    }
}

/// Garbage and mutated frames: every one is handled or a counted drop, none panics, and
/// mutated IPv4 frames are pinned to refused destinations so nothing leaves the machine.
#[test]
fn mutated_frames_never_panic() {
    let (mut e, b) = engine();
    let seeds = [
        arp_request(Ipv4Addr::new(10, 0, 2, 2)),
        syn(Ipv4Addr::new(10, 0, 2, 50)),
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..20_000 {
        let mut f = seeds[i % seeds.len()].clone();
        for _ in 0..(rand() % 4 + 1) {
            let at = (rand() as usize) % f.len();
            f[at] = rand() as u8;
        }
        f.truncate((rand() as usize) % (f.len() + 1));
        if f.len() > ETH_LEN + 20 && f[12..14] == [8, 0] && f[ETH_LEN] == 0x45 {
            let mut ip = Ipv4Packet::new_unchecked(&mut f[ETH_LEN..]);
            ip.set_dst(Ipv4Addr::new(10, 0, 2, 50 + (i % 2) as u8 * 200));
            ip.fill_checksum();
        }
        let _ = e.on_frame(&f);
        replies(&b);
    }
    assert!(e.tcp.is_empty() && e.udp.is_empty());
}

/// A full UDP table evicts its least recently used flow instead of refusing new ones.
#[test]
fn full_udp_table_evicts_the_oldest_flow() {
    let (mut e, b) = engine();
    e.net.host_loopback = true;
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let gw = Ipv4Addr::new(10, 0, 2, 2);
    let mut frame = vec![0u8; udp::PAYLOAD_AT + 1];
    for i in 0..=MAX_UDP_FLOWS as u16 {
        frame[udp::PAYLOAD_AT] = 1;
        let ends = Ends {
            src_mac: GUEST_MAC,
            dst_mac: virtual_mac(gw),
            src: GUEST.into(),
            dst: gw.into(),
        };
        let n = udp::frame(&mut frame, &ends, 20000 + i, port, 1);
        e.start = Instant::now() - Duration::from_millis(u64::from(i));
        e.on_frame(&frame[..n]).unwrap();
    }
    replies(&b);
    assert_eq!(e.udp.len(), MAX_UDP_FLOWS);
    assert_eq!(e.counters().udp_evicted, 1);
    let first = FlowKey {
        guest_port: 20000,
        remote: (gw, port).into(),
    };
    assert!(e.udp.find(&first).is_none(), "the oldest flow stays");
}
