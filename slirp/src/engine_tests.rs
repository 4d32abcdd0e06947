use super::*;
use sluice_dataplane::wire::IPPROTO_ICMPV6;
use sluice_dataplane::wire::{arp as warp, tcp as wtcp, ArpPacket, TcpPacket};
use sluice_dataplane::wire::{icmpv6, ndisc, radv, Icmpv6Packet, Ipv6Packet, NdiscPacket};
use std::net::Ipv6Addr;
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
        tcp_engine: TcpEngine::Splice,
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

/// The ends of a frame from the guest at `src` to `dst`.
fn guest_ends(src: impl Into<IpAddr>, dst: impl Into<IpAddr>) -> Ends {
    Ends {
        src_mac: GUEST_MAC,
        dst_mac: virtual_mac(Ipv4Addr::new(10, 0, 2, 2)),
        src: src.into(),
        dst: dst.into(),
    }
}

/// A guest TCP SYN frame from `src:40000` to `dst:80`.
fn syn_from(src: impl Into<IpAddr>, dst: impl Into<IpAddr>) -> Vec<u8> {
    let ends = guest_ends(src, dst);
    let at = ends.l4_at();
    let mut f = vec![0u8; at + 20];
    f[at + 12] = 5 << 4;
    let mut t = TcpPacket::new_unchecked(&mut f[at..]);
    t.set_src_port(40000);
    t.set_dst_port(80);
    t.set_seq(1000);
    t.set_flags(wtcp::SYN);
    t.set_window(65535);
    crate::frame::fill_tcp_checksum(&mut t, &ends);
    crate::frame::ip_headers(&mut f, &ends, IPPROTO_TCP, 20, 1);
    f
}

/// A guest TCP SYN frame to `dst:80`.
fn syn(dst: Ipv4Addr) -> Vec<u8> {
    syn_from(GUEST, dst)
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
        let ends = guest_ends(GUEST, gw);
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

const GUEST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x64);

/// An IPv6 frame from the guest at `src` to `dst` carrying `l4` of `proto`, hop limit 255.
fn v6_frame(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; crate::frame::L4_AT_V6 + l4.len()];
    f[crate::frame::L4_AT_V6..].copy_from_slice(l4);
    crate::frame::ip_headers(&mut f, &guest_ends(src, dst), proto, l4.len(), 0);
    Ipv6Packet::new_unchecked(&mut f[ETH_LEN..]).set_hop_limit(255);
    f
}

/// An ICMPv6 message of `msg_type` with `body` after the 4-byte header, checksum filled.
fn icmpv6_msg(src: Ipv6Addr, dst: Ipv6Addr, msg_type: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; 4 + body.len()];
    m[4..].copy_from_slice(body);
    let mut p = Icmpv6Packet::new_unchecked(&mut m[..]);
    p.set_msg_type(msg_type);
    p.fill_checksum(src, dst);
    v6_frame(src, dst, IPPROTO_ICMPV6, &m)
}

fn engine6() -> (Engine, UnixDatagram) {
    let (mut e, b) = engine();
    e.net.ipv6 = true;
    (e, b)
}

#[test]
fn ipv6_is_unsupported_unless_enabled() {
    let (mut e, _b) = engine();
    let all_routers: Ipv6Addr = "ff02::2".parse().unwrap();
    let rs = icmpv6_msg(GUEST6, all_routers, radv::ROUTER_SOLICIT, &[0; 4]);
    assert_eq!(e.on_frame(&rs), Err(Drop::Unsupported));
}

#[test]
fn router_solicitation_gets_the_prefix() {
    let (mut e, b) = engine6();
    let ll: Ipv6Addr = "fe80::64".parse().unwrap();
    let all_routers: Ipv6Addr = "ff02::2".parse().unwrap();
    e.on_frame(&icmpv6_msg(ll, all_routers, radv::ROUTER_SOLICIT, &[0; 4]))
        .unwrap();
    let out = replies(&b);
    assert_eq!(out.len(), 1);
    let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
    let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.src(), ROUTER_LL);
    let m = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(m.msg_type(), radv::ROUTER_ADVERT);
    assert!(m.verify_checksum(ip.src(), ip.dst()));
    let fd00 = crate::config::PREFIX6.octets();
    assert!(ip.payload().windows(16).any(|w| w == fd00), "no prefix");
}

#[test]
fn neighbour_solicitations_for_own_addresses_are_answered() {
    let (mut e, b) = engine6();
    let mut body = vec![0u8; 4 + 16 + 8];
    for (target, answered) in [
        (GATEWAY6, true),
        (ROUTER_LL, true),
        (DNS6, false),
        (GUEST6, false),
    ] {
        let mut ns_body = body.clone();
        ns_body[4..20].copy_from_slice(&target.octets());
        ns_body[20..22].copy_from_slice(&[1, 1]);
        ns_body[22..28].copy_from_slice(&GUEST_MAC.0);
        let dst = ndisc::solicited_node(target);
        e.on_frame(&icmpv6_msg(GUEST6, dst, ndisc::NEIGHBOR_SOLICIT, &ns_body))
            .unwrap();
        let out = replies(&b);
        // The DNS forwarder answers too while DNS is on; the engine here has it off.
        assert_eq!(out.len(), usize::from(answered), "{target}");
        if answered {
            let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
            assert_eq!(eth.dst(), GUEST_MAC);
            let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
            let na = NdiscPacket::new_checked(ip.payload()).unwrap();
            assert_eq!(na.msg_type(), ndisc::NEIGHBOR_ADVERT);
            assert_eq!(na.target(), target);
            assert_eq!(na.target_ll_addr(), Some(eth.src()));
        }
    }
    body.truncate(3);
    let bad = icmpv6_msg(GUEST6, GATEWAY6, ndisc::NEIGHBOR_SOLICIT, &body);
    assert_eq!(e.on_frame(&bad), Err(Drop::Malformed));
}

#[test]
fn v6_echo_to_the_gateway_is_answered() {
    let (mut e, b) = engine6();
    let mut body = vec![0u8, 7, 0, 1];
    body.extend_from_slice(b"ping6");
    e.on_frame(&icmpv6_msg(GUEST6, GATEWAY6, icmpv6::ECHO_REQUEST, &body))
        .unwrap();
    let out = replies(&b);
    assert_eq!(out.len(), 1);
    let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
    let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
    assert_eq!((ip.src(), ip.dst()), (GATEWAY6, GUEST6));
    let m = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert!(m.verify_checksum(GATEWAY6, GUEST6));
    assert_eq!(
        (m.msg_type(), m.echo_ident(), m.echo_seq()),
        (icmpv6::ECHO_REPLY, 7, 1)
    );
    assert_eq!(m.payload(), b"ping6");
    let mut broken = icmpv6_msg(GUEST6, GATEWAY6, icmpv6::ECHO_REQUEST, &body);
    let last = broken.len() - 1;
    broken[last] ^= 1;
    assert_eq!(e.on_frame(&broken), Err(Drop::Malformed));
    assert_eq!(e.guest6, Some(GUEST6));
}

#[test]
fn v6_syn_to_a_refused_address_gets_rst() {
    let (mut e, b) = engine6();
    assert_eq!(e.on_frame(&syn_from(GUEST6, GATEWAY6)), Err(Drop::Refused));
    let out = replies(&b);
    let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
    let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
    let seg = tcp::parse(ip.payload(), ip.src().into(), ip.dst().into(), true).unwrap();
    assert!(seg.has(wtcp::RST));
    assert_eq!((seg.ack, seg.dst_port), (1001, 40000));
}

/// A datagram to a closed port on the host's loopback (through the gateway) comes back as
/// ICMP port unreachable quoting the guest's ports, for IPv4 and IPv6.
#[test]
fn udp_to_a_closed_port_gets_port_unreachable() {
    let (mut e, b) = engine6();
    e.net.host_loopback = true;
    for gw in [IpAddr::from(Ipv4Addr::new(10, 0, 2, 2)), GATEWAY6.into()] {
        let closed = std::net::UdpSocket::bind(SocketAddr::new(
            if gw.is_ipv6() {
                IpAddr::from(Ipv6Addr::LOCALHOST)
            } else {
                IpAddr::from(Ipv4Addr::LOCALHOST)
            },
            0,
        ))
        .unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let guest = if gw.is_ipv6() {
            IpAddr::from(GUEST6)
        } else {
            IpAddr::from(GUEST)
        };
        let ends = guest_ends(guest, gw);
        let mut frame = vec![0u8; MAX_FRAME];
        let at = udp::payload_at(gw);
        frame[at..at + 3].copy_from_slice(b"abc");
        let n = udp::frame(&mut frame, &ends, 33333, port, 3);
        e.on_frame(&frame[..n]).unwrap();
        let key = FlowKey {
            guest_port: 33333,
            remote: SocketAddr::new(gw, port),
        };
        let h = e.udp.find(&key).expect("a flow");
        std::thread::sleep(Duration::from_millis(50));
        e.on_udp(h);
        let out = replies(&b);
        assert_eq!(out.len(), 1, "{gw}");
        let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
        assert_eq!(eth.dst(), GUEST_MAC);
        let quote = if gw.is_ipv6() {
            let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
            let m = Icmpv6Packet::new_checked(ip.payload()).unwrap();
            assert!(m.verify_checksum(ip.src(), ip.dst()));
            assert_eq!((m.msg_type(), m.code()), (1, 4));
            m.payload().to_vec()
        } else {
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            let m = sluice_dataplane::wire::Icmpv4Packet::new_checked(ip.payload()).unwrap();
            assert!(m.verify_checksum());
            assert_eq!((m.msg_type(), m.code()), (3, 3));
            m.payload().to_vec()
        };
        let hl = if gw.is_ipv6() { 40 } else { 20 };
        let q = sluice_dataplane::wire::UdpPacket::new_checked(&quote[hl..]).unwrap();
        assert_eq!((q.src_port(), q.dst_port()), (33333, port));
    }
}

/// A pseudo-ping flow (ping sockets not allowed): an answer from the echo port becomes the
/// echo reply, a closed port an ICMP port unreachable quoting the request.
#[test]
fn pseudo_ping_answers_and_unreachables() {
    let (mut e, b) = engine();
    let echo_server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let remote = IpAddr::from(Ipv4Addr::new(192, 0, 2, 9));
    for (to, answered) in [(echo_server.local_addr().unwrap(), true), (closed, false)] {
        let sock = flows::udp_connect(to, None).unwrap();
        let pseudo = flows::PseudoEcho {
            seq: 5,
            data: b"abc".to_vec(),
        };
        let flow = PingFlow {
            sock,
            ident: 42,
            guest: GUEST.into(),
            last_used: 0,
            pseudo: Some(pseudo),
        };
        let h = e.ping.insert((42, remote), flow).unwrap();
        if answered {
            let (_, f) = e.ping.get_mut(h).unwrap();
            f.sock.send(flows::PSEUDO_PING_MSG).unwrap();
            let mut buf = [0u8; 200];
            let (n, from) = echo_server.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], flows::PSEUDO_PING_MSG);
            echo_server.send_to(&buf[..n], from).unwrap();
        } else {
            let (_, f) = e.ping.get_mut(h).unwrap();
            f.sock.send(flows::PSEUDO_PING_MSG).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        e.on_ping(h);
        let out = replies(&b);
        assert_eq!(out.len(), 1);
        let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!((IpAddr::from(ip.src()), ip.dst()), (remote, GUEST));
        let m = sluice_dataplane::wire::Icmpv4Packet::new_checked(ip.payload()).unwrap();
        if answered {
            assert_eq!((m.msg_type(), m.echo_ident(), m.echo_seq()), (0, 42, 5));
            assert_eq!(m.payload(), b"abc");
        } else {
            assert_eq!((m.msg_type(), m.code()), (3, 3));
            let q = Ipv4Packet::new_checked(m.payload()).unwrap();
            assert_eq!((q.protocol(), &q.payload()[..1]), (1, &[8][..]));
        }
        e.ping.remove(h);
    }
}

/// An engine that reaches the host's loopback, a UDP server there (2 s read timeout) and its
/// port.
fn engine_and_udp_server() -> (Engine, UnixDatagram, std::net::UdpSocket, u16) {
    let (mut e, b) = engine();
    e.net.host_loopback = true;
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let port = server.local_addr().unwrap().port();
    (e, b, server, port)
}

const GATEWAY4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// Hands the engine, without the flush at the end of a TAP drain, a guest datagram of `len`
/// bytes of `fill` from `guest_port` to the gateway's `port`.
fn guest_datagram(e: &mut Engine, guest_port: u16, port: u16, len: usize, fill: u8) {
    let gw = IpAddr::from(GATEWAY4);
    let mut frame = vec![0u8; MAX_FRAME];
    let at = udp::payload_at(gw);
    frame[at..at + len].fill(fill);
    let n = udp::frame(&mut frame, &guest_ends(GUEST, gw), guest_port, port, len);
    e.frame_in(&frame[..n]).unwrap();
}

/// Datagrams of one flow read in one drain of the TAP wait and leave together, in order (runs
/// of one size as GSO messages), when the drain ends; the receiver sees each datagram.
#[test]
fn guest_datagrams_leave_in_one_batch_in_order() {
    let (mut e, _b, server, port) = engine_and_udp_server();
    let sizes = [64, 64, 64, 20, 64, 900];
    for (i, &len) in sizes.iter().enumerate() {
        guest_datagram(&mut e, 33333, port, len, i as u8);
    }
    server.set_nonblocking(true).unwrap();
    let mut d = vec![0u8; 2000];
    assert!(
        server.recv(&mut d).is_err(),
        "nothing leaves before the flush"
    );
    server.set_nonblocking(false).unwrap();
    e.flush_udp();
    for (i, &len) in sizes.iter().enumerate() {
        let n = server.recv(&mut d).unwrap();
        assert_eq!(&d[..n], &vec![i as u8; len][..], "datagram {i}");
    }
    let h = e.udp.find(&FlowKey {
        guest_port: 33333,
        remote: SocketAddr::new(GATEWAY4.into(), port),
    });
    assert!(e.udp.get_mut(h.unwrap()).unwrap().1.gso);
    assert_eq!(e.counters().host_error, 0);
    assert_eq!(e.udp_out.flow(), None);
}

/// A path that refuses UDP GSO messages (here a socket with checksums off, which the kernel
/// refuses GSO for) still gets every datagram, one by one, and its flow stops trying GSO.
#[test]
fn a_path_refusing_gso_gets_the_datagrams_one_by_one() {
    let (mut e, _b, server, port) = engine_and_udp_server();
    guest_datagram(&mut e, 33334, port, 32, 0);
    let key = FlowKey {
        guest_port: 33334,
        remote: SocketAddr::new(GATEWAY4.into(), port),
    };
    let h = e.udp.find(&key).unwrap();
    if let UdpPath::Own(s) = &e.udp.get_mut(h).unwrap().1.path {
        const SO_NO_CHECK: libc::c_int = 11;
        crate::sys::set_int_opt(s.as_fd(), libc::SOL_SOCKET, SO_NO_CHECK, 1).unwrap();
    }
    for fill in 1..4 {
        guest_datagram(&mut e, 33334, port, 32, fill);
    }
    e.flush_udp();
    let mut d = [0u8; 100];
    for fill in 0..4 {
        let n = server.recv(&mut d).unwrap();
        assert_eq!(&d[..n], &[fill; 32][..]);
    }
    assert!(!e.udp.get_mut(h).unwrap().1.gso);
    assert_eq!(e.counters().host_error, 0);
}

/// A guest TCP frame from `GUEST:40000` to `dst:80` (ACK set) carrying `payload`.
fn data_segment(dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let ends = guest_ends(GUEST, dst);
    let at = ends.l4_at();
    let mut f = vec![0u8; at + 20 + payload.len()];
    f[at + 12] = 5 << 4;
    f[at + 20..].copy_from_slice(payload);
    let mut t = TcpPacket::new_unchecked(&mut f[at..]);
    t.set_src_port(40000);
    t.set_dst_port(80);
    t.set_seq(1000);
    t.set_flags(wtcp::ACK | wtcp::PSH);
    t.set_window(65535);
    crate::frame::fill_tcp_checksum(&mut t, &ends);
    crate::frame::ip_headers(&mut f, &ends, IPPROTO_TCP, 20 + payload.len(), 1);
    f
}

#[test]
fn a_bulk_frame_from_the_tap_makes_the_loop_nap_once() {
    let (mut e, b) = engine();
    b.send(&arp_request(Ipv4Addr::new(10, 0, 2, 2))).unwrap();
    e.drain_tap().unwrap();
    assert_eq!(e.wake.next(Instant::now()), Wait::Block, "a small frame");
    b.send(&data_segment(Ipv4Addr::new(10, 0, 2, 50), &[7; 40_000]))
        .unwrap();
    e.drain_tap().unwrap();
    assert_eq!(e.counters().rx_frames, 2);
    assert_eq!(e.wake.next(Instant::now()), Wait::Nap(crate::wake::NAP));
    assert_eq!(e.wake.next(Instant::now()), Wait::Block);
}

#[test]
fn a_small_guest_segment_makes_the_loop_poll_awake() {
    let (mut e, _b) = engine();
    let refused = Ipv4Addr::new(10, 0, 2, 50);
    assert_eq!(e.on_frame(&syn(refused)), Err(Drop::Refused));
    assert_eq!(e.wake.next(Instant::now()), Wait::Block, "no payload");
    let seg = data_segment(refused, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(e.on_frame(&seg), Err(Drop::Refused));
    assert_eq!(e.wake.next(Instant::now()), Wait::Poll);
}

/// A datagram from the host to the guest (an answer) keeps the loop awake; the guest's own
/// datagrams do not (a guest flooding small datagrams must not make it spin).
#[test]
fn a_host_datagram_makes_the_loop_poll_awake_a_guest_one_does_not() {
    let (mut e, b, server, port) = engine_and_udp_server();
    guest_datagram(&mut e, 33334, port, 64, 1);
    e.flush_udp();
    assert_eq!(e.wake.next(Instant::now()), Wait::Block);
    let mut d = [0u8; 100];
    let (n, from) = server.recv_from(&mut d).unwrap();
    server.send_to(&d[..n], from).unwrap();
    let key = FlowKey {
        guest_port: 33334,
        remote: SocketAddr::new(GATEWAY4.into(), port),
    };
    let h = e.udp.find(&key).unwrap();
    let end = Instant::now() + Duration::from_secs(2);
    while replies(&b).is_empty() && Instant::now() < end {
        e.on_udp(h);
    }
    assert_eq!(e.wake.next(Instant::now()), Wait::Poll);
}
