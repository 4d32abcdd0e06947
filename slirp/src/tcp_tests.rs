use super::*;
use crate::frame::MAX_FRAME;
use sluice_dataplane::wire::{ethernet, EthernetFrame, Ipv4Packet, Ipv6Packet, MacAddr};
use std::net::Ipv4Addr;

#[derive(Default)]
struct FakeSock {
    written: Vec<u8>,
    cap: usize,
    inbound: Vec<u8>,
    consumed: usize,
    peek_off: usize,
    eof: bool,
    shut: bool,
    peeks: usize,
}

impl HostSocket for FakeSock {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.cap - self.written.len());
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.written.extend_from_slice(&data[..n]);
        Ok(n)
    }
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.peeks += 1;
        let avail = &self.inbound[self.consumed + self.peek_off..];
        if avail.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.peek_off += n;
        Ok(n)
    }
    fn rewind(&mut self) -> io::Result<()> {
        self.peek_off = 0;
        Ok(())
    }
    fn consume(&mut self, n: usize) -> io::Result<()> {
        self.consumed += n;
        self.peek_off -= n;
        Ok(())
    }
    fn send_space(&self) -> usize {
        self.cap - self.written.len()
    }
    fn send_capacity(&self) -> usize {
        self.cap
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shut = true;
        Ok(())
    }
}

struct Frames {
    buf: Vec<u8>,
    sent: Vec<Vec<u8>>,
    tso: bool,
    tso_sizes: Vec<u16>,
}

impl GuestTx for Frames {
    fn buf(&mut self) -> &mut [u8] {
        &mut self.buf
    }
    fn send(&mut self, len: usize) {
        self.sent.push(self.buf[..len].to_vec());
    }
    fn tso(&self) -> bool {
        self.tso
    }
    fn send_tso(&mut self, len: usize, gso_size: u16, ends: &Ends) {
        self.tso_sizes.push(gso_size);
        // Complete the checksum as the guest's kernel would, so `take` can verify it.
        let l4 = &mut self.buf[ends.l4_at()..len];
        let pseudo = ends.pseudo_sum(IPPROTO_TCP, l4.len());
        let partial = u16::from_be_bytes([l4[16], l4[17]]);
        assert_eq!(
            partial,
            checksum::fold(pseudo),
            "the checksum field holds the pseudo-header sum"
        );
        l4[16..18].fill(0);
        let sum = !checksum::fold(checksum::ones_sum(l4, pseudo));
        l4[16..18].copy_from_slice(&sum.to_be_bytes());
        self.sent.push(self.buf[..len].to_vec());
    }
}

/// One parsed segment sent to the guest (owned).
#[derive(Debug)]
struct Out {
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    mss: Option<u16>,
    payload: Vec<u8>,
}

impl Frames {
    fn new() -> Self {
        Frames {
            buf: vec![0; MAX_FRAME],
            sent: Vec::new(),
            tso: false,
            tso_sizes: Vec::new(),
        }
    }
    fn take(&mut self) -> Vec<Out> {
        self.sent
            .drain(..)
            .map(|f| {
                let eth = EthernetFrame::new_checked(&f[..]).unwrap();
                let (l4, src, dst) = if eth.ethertype() == ethernet::ETHERTYPE_IPV6 {
                    let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
                    let (src, dst) = (ip.src().into(), ip.dst().into());
                    (&eth.payload()[40..40 + ip.payload().len()], src, dst)
                } else {
                    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
                    assert!(ip.verify_checksum());
                    let (src, dst) = (ip.src().into(), ip.dst().into());
                    (&eth.payload()[20..usize::from(ip.total_len())], src, dst)
                };
                let s = parse(l4, src, dst, true).unwrap();
                assert_eq!((s.src_port, s.dst_port), (80, 40000));
                Out {
                    seq: s.seq,
                    ack: s.ack,
                    flags: s.flags,
                    window: s.window,
                    mss: s.mss,
                    payload: s.payload.to_vec(),
                }
            })
            .collect()
    }
}

fn ends() -> Ends {
    Ends {
        src_mac: MacAddr([0x52, 0x55, 10, 0, 2, 2]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        src: Ipv4Addr::new(10, 0, 2, 2).into(),
        dst: Ipv4Addr::new(10, 0, 2, 100).into(),
    }
}

fn guest(seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Segment<'_> {
    Segment {
        src_port: 40000,
        dst_port: 80,
        seq,
        ack,
        flags,
        window: 1000,
        mss: None,
        wscale: None,
        payload,
    }
}

const ISS: u32 = 5000;
const GISS: u32 = 100;

/// A connection the guest opened, SYN-ACK answered and acknowledged.
fn established(sock: &mut FakeSock, tx: &mut Frames) -> TcpConn {
    let mut syn = guest(GISS, 0, tcp::SYN, &[]);
    syn.mss = Some(1460);
    syn.wscale = Some(2);
    let mut c = TcpConn::from_guest_syn(ends(), &syn, 1500, ISS);
    assert_eq!(c.state(), State::Connecting);
    c.on_connected(sock, tx, 0);
    let out = tx.take();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags, tcp::SYN | tcp::ACK);
    assert_eq!(
        (out[0].seq, out[0].ack, out[0].mss),
        (ISS, GISS + 1, Some(1460))
    );
    let v = c.on_segment(&guest(GISS + 1, ISS + 1, tcp::ACK, &[]), sock, tx, 1);
    assert_eq!(v, Verdict::Keep);
    c
}

/// An established connection whose host socket takes `cap` bytes, nothing sent yet.
fn uploading(cap: usize) -> (FakeSock, Frames, TcpConn) {
    let mut sock = FakeSock {
        cap,
        ..Default::default()
    };
    let mut tx = Frames::new();
    let c = established(&mut sock, &mut tx);
    assert!(tx.take().is_empty());
    (sock, tx, c)
}

#[test]
fn guest_data_is_acked_only_as_far_as_the_socket_took_it() {
    let (mut sock, mut tx, mut c) = uploading(6);
    c.on_segment(
        &guest(GISS + 1, ISS + 1, tcp::ACK, b"hello world"),
        &mut sock,
        &mut tx,
        2,
    );
    assert_eq!(sock.written, b"hello ");
    let out = tx.take();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].ack, GISS + 1 + 6);
    assert_eq!(out[0].window, 0);
    assert!(c.window_watch(&sock));
    sock.cap = 100;
    c.on_window_check(&sock, &mut tx);
    let out = tx.take();
    assert_eq!(out[0].window, ((100 - 6) >> OUR_WSCALE) as u16);
    // The guest retransmits from the first byte not acknowledged, overlapping old bytes.
    c.on_segment(
        &guest(GISS + 1, ISS + 1, tcp::ACK, b"hello world"),
        &mut sock,
        &mut tx,
        3,
    );
    assert_eq!(sock.written, b"hello world");
    // One segment taken whole: its ACK waits for a second one or the end of the batch.
    assert!(tx.take().is_empty());
    c.flush_ack(&sock, &mut tx);
    assert_eq!(tx.take()[0].ack, GISS + 12);
    // Out of order: not written, acknowledged where we are.
    c.on_segment(
        &guest(GISS + 20, ISS + 1, tcp::ACK, b"zz"),
        &mut sock,
        &mut tx,
        4,
    );
    assert_eq!(sock.written, b"hello world");
    assert_eq!(tx.take()[0].ack, GISS + 12);
}

/// Guest uploads: once a push found the host socket empty, guest segments do not look at it
/// again (only the socket's readiness does); each still gets its ACK (here each segment is a
/// batch of its own, ended by `flush_ack`).
#[test]
fn guest_segments_do_not_peek_an_empty_socket() {
    let (mut sock, mut tx, mut c) = uploading(1000);
    let peeks = sock.peeks;
    for (i, part) in [&b"abc"[..], b"def"].iter().enumerate() {
        let seq = GISS + 1 + 3 * i as u32;
        let seg = guest(seq, ISS + 1, tcp::ACK, part);
        assert_eq!(c.on_segment(&seg, &mut sock, &mut tx, 2), Verdict::Keep);
        c.flush_ack(&sock, &mut tx);
    }
    assert_eq!(sock.peeks, peeks, "no peek for guest segments");
    let out = tx.take();
    assert_eq!(
        out.iter().map(|o| o.ack).collect::<Vec<_>>(),
        [GISS + 4, GISS + 7]
    );
    // Host data arrives: its readiness pushes it.
    sock.inbound = b"reply".to_vec();
    c.push(&mut sock, &mut tx, 3);
    assert_eq!(sock.peeks, peeks + 2, "the data, then would-block");
    let out = tx.take();
    assert_eq!((out.len(), out[0].ack), (1, GISS + 7));
    assert_eq!(out[0].payload, b"reply");
    // Now the socket is empty again: a guest ACK does not peek.
    let seg = guest(GISS + 7, ISS + 6, tcp::ACK, &[]);
    c.on_segment(&seg, &mut sock, &mut tx, 4);
    assert_eq!(sock.peeks, peeks + 2);
}

/// Guest data in one batch: every second segment is acknowledged at once, the rest at the end
/// of the batch (`flush_ack`), once; a FIN is acknowledged at once.
#[test]
fn guest_data_is_acked_every_second_segment_and_at_the_end_of_a_batch() {
    let (mut sock, mut tx, mut c) = uploading(1000);
    let mut acks = Vec::new();
    for (i, part) in [&b"abc"[..], b"def", b"ghi"].iter().enumerate() {
        let seq = GISS + 1 + 3 * i as u32;
        c.on_segment(&guest(seq, ISS + 1, tcp::ACK, part), &mut sock, &mut tx, 2);
        acks.push(tx.take().iter().map(|o| o.ack).collect::<Vec<_>>());
    }
    assert_eq!(acks, [vec![], vec![GISS + 7], vec![]]);
    assert!(c.ack_owed());
    c.flush_ack(&sock, &mut tx);
    let out = tx.take();
    assert_eq!((out.len(), out[0].ack), (1, GISS + 10));
    assert!(!c.ack_owed());
    c.flush_ack(&sock, &mut tx);
    assert!(tx.take().is_empty(), "nothing owed, nothing sent");
    let fin = guest(GISS + 10, ISS + 1, tcp::ACK | tcp::FIN, b"j");
    c.on_segment(&fin, &mut sock, &mut tx, 3);
    assert_eq!(tx.take()[0].ack, GISS + 12);
    assert_eq!(sock.written, b"abcdefghij");
}

#[test]
fn host_data_goes_out_within_the_window_and_is_consumed_on_ack() {
    let mut sock = FakeSock {
        cap: 100,
        inbound: vec![7u8; 3000],
        ..Default::default()
    };
    let mut tx = Frames::new();
    // The ACK of the SYN-ACK opened the window and data went out at once.
    let mut c = established(&mut sock, &mut tx);
    // The guest's window is 1000 << 2 = 4000 bytes; MSS 1460.
    let out = tx.take();
    assert_eq!(
        out.iter().map(|o| o.payload.len()).collect::<Vec<_>>(),
        vec![1460, 1460, 80]
    );
    assert_eq!(out[1].seq, ISS + 1 + 1460);
    assert_eq!(sock.consumed, 0);
    c.on_segment(
        &guest(GISS + 1, ISS + 1 + 1460, tcp::ACK, &[]),
        &mut sock,
        &mut tx,
        3,
    );
    assert_eq!(sock.consumed, 1460);
    // Nothing was acknowledged further: the timer sends it again from the peek start.
    assert!(tx.take().is_empty());
    assert_eq!(c.on_timer(&mut sock, &mut tx, 3 + RTO_MS), Verdict::Keep);
    let out = tx.take();
    assert_eq!(out[0].seq, ISS + 1 + 1460);
    assert_eq!(out.iter().map(|o| o.payload.len()).sum::<usize>(), 1540);
}

#[test]
fn fins_both_ways_close_the_flow() {
    let mut sock = FakeSock {
        cap: 100,
        inbound: b"bye".to_vec(),
        eof: true,
        ..Default::default()
    };
    let mut tx = Frames::new();
    let mut c = established(&mut sock, &mut tx);
    let out = tx.take();
    assert_eq!(out[0].payload, b"bye");
    assert_eq!(out[1].flags, tcp::FIN | tcp::ACK);
    assert_eq!(out[1].seq, ISS + 4);
    let v = c.on_segment(
        &guest(GISS + 1, ISS + 5, tcp::ACK | tcp::FIN, b"ok"),
        &mut sock,
        &mut tx,
        3,
    );
    assert_eq!(v, Verdict::Close);
    assert!(sock.shut);
    assert_eq!(sock.written, b"ok");
    assert_eq!(sock.consumed, 3);
    assert_eq!(tx.take()[0].ack, GISS + 4);
}

#[test]
fn rst_from_guest_aborts_and_refusal_resets_guest() {
    let mut sock = FakeSock {
        cap: 100,
        ..Default::default()
    };
    let mut tx = Frames::new();
    let mut c = established(&mut sock, &mut tx);
    assert_eq!(
        c.on_segment(&guest(GISS + 1, 0, tcp::RST, &[]), &mut sock, &mut tx, 2),
        Verdict::Reset
    );
    c.reset(&mut tx);
    assert_eq!(tx.take()[0].flags, tcp::RST | tcp::ACK);
}

#[test]
fn host_forward_handshake_with_the_guest() {
    let mut sock = FakeSock {
        cap: 100,
        inbound: b"GET".to_vec(),
        ..Default::default()
    };
    let mut tx = Frames::new();
    let mut c = TcpConn::to_guest(ends(), 80, 40000, 1500, ISS, 0, &mut tx);
    let out = tx.take();
    assert_eq!((out[0].flags, out[0].seq), (tcp::SYN, ISS));
    assert_eq!(c.on_timer(&mut sock, &mut tx, RTO_MS), Verdict::Keep);
    assert_eq!(tx.take()[0].flags, tcp::SYN);
    let mut synack = guest(GISS, ISS + 1, tcp::SYN | tcp::ACK, &[]);
    synack.mss = Some(1000);
    c.on_segment(&synack, &mut sock, &mut tx, 1);
    assert_eq!(c.state(), State::Established);
    let out = tx.take();
    assert_eq!((out[0].flags, out[0].ack), (tcp::ACK, GISS + 1));
    assert_eq!(out[1].payload, b"GET");
}

#[test]
fn parse_reads_options_and_rejects_bad_checksums() {
    let mut sock = FakeSock {
        cap: 100,
        ..Default::default()
    };
    let mut tx = Frames::new();
    let mut c = TcpConn::from_guest_syn(ends(), &guest(1, 0, tcp::SYN, &[]), 9000, 77);
    c.on_connected(&sock, &mut tx, 0);
    let f = tx.sent[0].clone();
    let eth = EthernetFrame::new_checked(&f[..]).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    let s = parse(ip.payload(), ip.src().into(), ip.dst().into(), true).unwrap();
    assert_eq!((s.mss, s.wscale), (Some(8960), Some(0)));
    let mut bad = ip.payload().to_vec();
    bad[4] ^= 1;
    assert_eq!(
        parse(&bad, ip.src().into(), ip.dst().into(), true),
        Err(Drop::Malformed)
    );
    bad[4] ^= 1;
    bad[12] = 0xf0;
    assert_eq!(
        parse(&bad, ip.src().into(), ip.dst().into(), true),
        Err(Drop::Malformed)
    );
    assert_eq!(
        c.on_segment(&guest(1, 0, tcp::SYN, &[]), &mut sock, &mut tx, 1),
        Verdict::Keep
    );
}

#[test]
fn segments_of_no_connection_are_refused_with_rst() {
    let mut tx = Frames::new();
    TcpConn::refuse(ends(), &guest(GISS, 0, tcp::SYN, &[]), &mut tx);
    let out = tx.take();
    assert_eq!((out[0].flags, out[0].ack), (tcp::RST | tcp::ACK, GISS + 1));
    TcpConn::refuse(ends(), &guest(GISS, 0, tcp::RST, &[]), &mut tx);
    assert!(tx.take().is_empty());
}

#[test]
fn with_tso_host_data_goes_out_as_super_frames_of_guest_mss_segments() {
    let mut sock = FakeSock {
        cap: 100,
        inbound: vec![9u8; 3000],
        ..Default::default()
    };
    let mut tx = Frames::new();
    tx.tso = true;
    let _c = established(&mut sock, &mut tx);
    let out = tx.take();
    assert_eq!(
        out.iter().map(|o| o.payload.len()).collect::<Vec<_>>(),
        vec![3000]
    );
    assert_eq!(tx.tso_sizes, vec![1460]);
}

/// Over IPv6 the MSS leaves room for the larger header and super-frames carry the IPv6
/// pseudo-header sum (checked by `send_tso` and `take`).
#[test]
fn v6_connection_sends_v6_segments_and_super_frames() {
    let mut sock = FakeSock {
        cap: 100,
        inbound: vec![7u8; 5000],
        ..Default::default()
    };
    let mut tx = Frames::new();
    tx.tso = true;
    let ends6 = Ends {
        src: "fd00::2".parse().unwrap(),
        dst: "fd00::64".parse().unwrap(),
        ..ends()
    };
    let mut syn = guest(GISS, 0, tcp::SYN, &[]);
    syn.mss = Some(9000);
    let mut c = TcpConn::from_guest_syn(ends6, &syn, 1500, ISS);
    c.on_connected(&sock, &mut tx, 0);
    let out = tx.take();
    assert_eq!(out[0].mss, Some(1440), "MTU 1500 less 60 bytes of headers");
    let mut ack = guest(GISS + 1, ISS + 1, tcp::ACK, &[]);
    ack.window = 4000;
    c.on_segment(&ack, &mut sock, &mut tx, 1);
    let out = tx.take();
    let sizes: Vec<usize> = out.iter().map(|o| o.payload.len()).collect();
    assert_eq!(
        sizes,
        vec![4000],
        "one super-frame as large as the guest's window"
    );
    assert_eq!(tx.tso_sizes, vec![1440]);
}
