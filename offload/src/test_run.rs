//! The TC program run by the kernel on hand-made frames (`BPF_PROG_TEST_RUN`, as root): every
//! classification rule, and the rewritten frame's bytes and checksums. The namespace tests
//! (tests/tests/offload_kernel.rs) cover the socket filter, which the test run cannot (it hands
//! socket filters the frame without its Ethernet header).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;

use crate::tests::offload;
use crate::{sys, FlowAction, FlowKey, Offload};

pub(crate) const TC_ACT_OK: u32 = 0;
pub(crate) const TC_ACT_REDIRECT: u32 = 7;
/// The test run's frames arrive on loopback.
pub(crate) const LO: u32 = 1;
pub(crate) const TCP: u8 = 6;
pub(crate) const UDP: u8 = 17;
pub(crate) const PAYLOAD: &[u8] = b"sixteen bytes..!";

/// The one's complement sum of `data`, folded.
pub(crate) fn sum(data: &[u8], mut acc: u32) -> u16 {
    for pair in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// A frame's shape.
#[derive(Clone, Copy)]
pub(crate) struct Frame {
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) proto: u8,
    pub(crate) ports: (u16, u16),
    pub(crate) ttl: u8,
    pub(crate) tcp_flags: u8,
    pub(crate) frag: u16,
    pub(crate) udp_csum: bool,
}

impl Frame {
    pub(crate) fn new(src: IpAddr, dst: IpAddr, proto: u8) -> Frame {
        Frame {
            src,
            dst,
            proto,
            ports: (40000, 80),
            ttl: 64,
            tcp_flags: 0x10,
            frag: 0x4000,
            udp_csum: true,
        }
    }

    pub(crate) fn key(&self) -> FlowKey {
        FlowKey {
            ifindex: LO,
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            sport: self.ports.0,
            dport: self.ports.1,
        }
    }

    /// The Ethernet frame, checksums right.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend(self.ports.0.to_be_bytes());
        l4.extend(self.ports.1.to_be_bytes());
        if self.proto == TCP {
            l4.extend([
                0,
                0,
                0,
                1,
                0,
                0,
                0,
                0,
                0x50,
                self.tcp_flags,
                0xff,
                0xff,
                0,
                0,
                0,
                0,
            ]);
        } else {
            l4.extend(((8 + PAYLOAD.len()) as u16).to_be_bytes());
            l4.extend([0, 0]);
        }
        l4.extend(PAYLOAD);
        let mut f = vec![0x02, 0, 0, 0, 0, 0xee, 0x02, 0, 0, 0, 0, 0xff];
        let (csum_at, ip_len) = (if self.proto == TCP { 16 } else { 6 }, l4.len());
        let pseudo = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend([0x08, 0x00, 0x45, 0]);
                f.extend(((20 + ip_len) as u16).to_be_bytes());
                f.extend([0, 1]);
                f.extend(self.frag.to_be_bytes());
                f.extend([self.ttl, self.proto, 0, 0]);
                f.extend(s.octets());
                f.extend(d.octets());
                let hc = !sum(&f[14..34], 0);
                f[24..26].copy_from_slice(&hc.to_be_bytes());
                [
                    &s.octets()[..],
                    &d.octets(),
                    &[0, self.proto],
                    &(ip_len as u16).to_be_bytes(),
                ]
                .concat()
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
                f.extend((ip_len as u16).to_be_bytes());
                f.extend([self.proto, self.ttl]);
                f.extend(s.octets());
                f.extend(d.octets());
                [
                    &s.octets()[..],
                    &d.octets(),
                    &(ip_len as u32).to_be_bytes(),
                    &[0, 0, 0, self.proto],
                ]
                .concat()
            }
            _ => unreachable!("one family"),
        };
        if self.proto == TCP || self.udp_csum {
            let c = !sum(&l4, u32::from(sum(&pseudo, 0)));
            l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        }
        f.extend(l4);
        f
    }
}

/// Runs the TC program on `frame`: its verdict and the frame afterwards.
pub(crate) fn run(off: &Offload, frame: &[u8]) -> (u32, Vec<u8>) {
    sys::prog_test_run(off.tc.as_fd(), frame).expect("test run")
}

/// [`run`] on `frame` as a GSO super-frame of `gso_size` bytes a segment.
pub(crate) fn run_gso(off: &Offload, frame: &[u8], gso_size: u32) -> (u32, Vec<u8>) {
    let mut ctx = [0u8; crate::prog::CTX_SIZE];
    let at = crate::prog::CTX_GSO_SIZE as usize;
    ctx[at..at + 4].copy_from_slice(&gso_size.to_ne_bytes());
    sys::prog_test_run_ctx(off.tc.as_fd(), frame, Some(&ctx)).expect("test run")
}

/// Both checksums of an output frame verify.
pub(crate) fn assert_checksums(f: &[u8]) {
    let v4 = f[12..14] == [8, 0];
    let (l4, pseudo) = if v4 {
        assert_eq!(sum(&f[14..34], 0), 0xffff, "IPv4 header checksum");
        let len = f.len() - 34;
        (
            34,
            [&f[26..34], &[0, f[23]], &(len as u16).to_be_bytes()[..]].concat(),
        )
    } else {
        let len = f.len() - 54;
        (
            54,
            [&f[22..54], &(len as u32).to_be_bytes(), &[0, 0, 0, f[20]]].concat(),
        )
    };
    assert_eq!(
        sum(&f[l4..], u32::from(sum(&pseudo, 0))),
        0xffff,
        "L4 checksum"
    );
}

pub(crate) fn v4(d: u8) -> IpAddr {
    Ipv4Addr::new(10, 0, 0, d).into()
}

pub(crate) fn v6(d: u16) -> IpAddr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 7, d).into()
}

fn action(snat: Option<(IpAddr, u16)>, dnat: Option<(IpAddr, u16)>) -> FlowAction {
    FlowAction {
        egress_ifindex: LO,
        eth_src: [2, 0, 0, 0, 0, 0xa],
        eth_dst: [2, 0, 0, 0, 0, 0xb],
        decrement_ttl: true,
        snat,
        dnat,
    }
}

#[test]
fn a_hit_is_rewritten_with_right_checksums_and_redirected() {
    let Some(off) = offload(16) else { return };
    let cases = [
        (Frame::new(v4(1), v4(2), TCP), v4(9), v4(8)),
        (Frame::new(v4(1), v4(2), UDP), v4(9), v4(8)),
        (Frame::new(v6(1), v6(2), TCP), v6(0x9999), v6(0x8888)),
        (Frame::new(v6(1), v6(2), UDP), v6(0x9999), v6(0x8888)),
    ];
    for (frame, new_src, new_dst) in cases {
        let nat = action(Some((new_src, 1111)), Some((new_dst, 2222)));
        off.insert(&frame.key(), &nat).unwrap();
        let (verdict, out) = run(&off, &frame.bytes());
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let want = Frame {
            src: new_src,
            dst: new_dst,
            ports: (1111, 2222),
            ttl: 63,
            ..frame
        };
        let mut want = want.bytes();
        want[..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa]);
        assert_eq!(out, want, "{:?}", frame.key());
        assert_checksums(&out);
        let used = off.usage(&frame.key()).unwrap().unwrap();
        assert_eq!((used.packets, used.bytes), (1, want.len() as u64));
    }
}

#[test]
fn with_the_gate_closed_even_a_listed_flow_is_left_alone() {
    let Some(off) = offload(4) else { return };
    let frame = Frame::new(v4(1), v4(2), TCP);
    off.insert(&frame.key(), &action(None, None)).unwrap();
    assert_eq!(run(&off, &frame.bytes()).0, TC_ACT_REDIRECT);
    off.active.update(&0u32.to_ne_bytes(), &[0; 4]).unwrap();
    assert_eq!(run(&off, &frame.bytes()), (TC_ACT_OK, frame.bytes()));
}

#[test]
fn what_userspace_must_see_is_left_alone() {
    let Some(off) = offload(16) else { return };
    let tcp = Frame::new(v4(1), v4(2), TCP);
    off.insert(&tcp.key(), &action(None, None)).unwrap();
    let v6 = Frame::new(v6(1), v6(2), TCP);
    off.insert(&v6.key(), &action(None, None)).unwrap();
    let misses = [
        (
            "SYN",
            Frame {
                tcp_flags: 0x02,
                ..tcp
            },
        ),
        (
            "FIN",
            Frame {
                tcp_flags: 0x11,
                ..tcp
            },
        ),
        (
            "RST",
            Frame {
                tcp_flags: 0x04,
                ..tcp
            },
        ),
        (
            "more fragments",
            Frame {
                frag: 0x2000,
                ..tcp
            },
        ),
        (
            "a fragment offset",
            Frame {
                frag: 0x0001,
                ..tcp
            },
        ),
        ("TTL 1 on a routed hop", Frame { ttl: 1, ..tcp }),
        ("hop limit 1 on a routed hop", Frame { ttl: 1, ..v6 }),
        (
            "no entry",
            Frame {
                ports: (40001, 80),
                ..tcp
            },
        ),
        ("no entry for UDP", Frame { proto: UDP, ..tcp }),
    ];
    for (why, frame) in misses {
        let bytes = frame.bytes();
        assert_eq!(run(&off, &bytes), (TC_ACT_OK, bytes), "{why}");
    }
    // IPv4 options (IHL 6) and a VLAN tag are not parsed.
    let mut ihl6 = tcp.bytes();
    ihl6[14] = 0x46;
    let mut tagged = tcp.bytes();
    tagged.splice(12..12, [0x81, 0, 0, 5]);
    for bytes in [ihl6, tagged] {
        assert_eq!(run(&off, &bytes).0, TC_ACT_OK);
    }
    assert_eq!(off.usage(&tcp.key()).unwrap().unwrap().packets, 0);
    // TTL 1 is forwarded where the hop does not decrement it.
    let bridged = FlowAction {
        decrement_ttl: false,
        ..action(None, None)
    };
    off.insert(&tcp.key(), &bridged).unwrap();
    let (verdict, out) = run(&off, &Frame { ttl: 1, ..tcp }.bytes());
    assert_eq!((verdict, out[22]), (TC_ACT_REDIRECT, 1));
}

#[test]
fn a_udp_datagram_without_checksum_keeps_none() {
    let Some(off) = offload(4) else { return };
    let frame = Frame {
        udp_csum: false,
        ..Frame::new(v4(1), v4(2), UDP)
    };
    off.insert(&frame.key(), &action(Some((v4(9), 1111)), None))
        .unwrap();
    let (verdict, out) = run(&off, &frame.bytes());
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        (&out[26..30], &out[40..42]),
        (&[10, 0, 0, 9][..], &[0, 0][..])
    );
    assert_eq!(sum(&out[14..34], 0), 0xffff, "IPv4 header checksum");
}
