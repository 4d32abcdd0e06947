//! The AF_PACKET port over veths in namespaces: both ring versions, fanout, GSO, forwarding,
//! and the measurements quoted in PORTS.md.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use super::config::{reserve_for, tpacket_align, V2_HDRLEN, V3_HDRLEN};
use super::socket::page_size;
use super::tx::TxLayout;
use super::*;
use crate::batch::Batch;
use crate::frame::{Frame, GsoType, Meta, PortId, HEADROOM};
use crate::port::egress::VLAN_TAG_LEN;
use crate::port::testnet::{
    collect, forward, is_test_frame, test_frame, wait_readable, with_headroom, Netns, RawSock,
};
use crate::port::{KernelPortStats, RxPort, TxError, TxPort};
use crate::wire::vnet::VNET_HDR_LEN;

/// Largest frame the kernel hands over for 64 KiB GSO: 65535 bytes of IP packet, an
/// Ethernet header and one tag kept in the bytes.
const MAX_GSO_FRAME: usize = 65535 + 14 + VLAN_TAG_LEN;

/// V2 slots for frames up to 2 KiB: 4 MiB, 2048 slots.
pub(super) const V2_SMALL_SLOTS: RxRing = RxRing::V2 {
    frame_size: 2048,
    frame_count: 2048,
};
/// V3, 4 MiB.
const V3_SMALL: RxRing = RxRing::V3 {
    block_size: 256 << 10,
    block_count: 16,
    retire_ms: 1,
};

pub(super) fn small(rx_ring: RxRing) -> AfPacketConfig {
    AfPacketConfig {
        rx_ring,
        tx_block_count: 4,
        ..AfPacketConfig::default()
    }
}

/// sluiced's rings: 2 KiB RX slots and long-frame buffers in 2 MiB, 2 KiB TX slots (longer
/// frames are sent with `sendmsg`).
fn mixed() -> AfPacketConfig {
    let (ring, long) = mixed_rx(2 << 20, page_size());
    AfPacketConfig {
        rx_long_buffers: long,
        tx_frame_size: SMALL_SLOT,
        ..small(ring)
    }
}

#[test]
fn geometry() {
    assert_eq!((V2_HDRLEN, V3_HDRLEN), (52, 68));
    assert_eq!(reserve_for(V2_HDRLEN), reserve_for(V3_HDRLEN));
    for hdrlen in [V2_HDRLEN, V3_HDRLEN] {
        // tp_net of a plain frame is 16-byte aligned and the headroom covers a written-back
        // tag on top of one already in the bytes.
        let net = tpacket_align(hdrlen + 16) + RX_RESERVE + VNET_HDR_LEN;
        assert_eq!(net % 16, 0);
        let mac_with_tag = net - 18;
        assert!(mac_with_tag - hdrlen >= HEADROOM + VLAN_TAG_LEN);
    }
    // The TX header fields as `tpacket_parse_header` reads them.
    assert_eq!(
        (TxLayout::V2.status, TxLayout::V2.len, TxLayout::V2.data),
        (0, 4, 32)
    );
    assert_eq!(
        (TxLayout::V3.status, TxLayout::V3.len, TxLayout::V3.data),
        (20, 16, 48)
    );
    for ring in [DEFAULT_RX_V2, DEFAULT_RX_V3] {
        let cfg = AfPacketConfig {
            rx_ring: ring,
            ..AfPacketConfig::default()
        };
        assert!(max_tx_frame(&cfg) >= MAX_GSO_FRAME);
    }
    assert_eq!(AfPacketConfig::default().rx_ring, DEFAULT_RX_V2);

    // The default V2 slot holds a 64 KiB GSO frame behind the slot header, reserve and
    // vnet header; 18 blocks of 1 MiB, 15 slots each.
    let RxRing::V2 {
        frame_size,
        frame_count,
    } = DEFAULT_RX_V2
    else {
        unreachable!()
    };
    let mac = tpacket_align(V2_HDRLEN + 16) + RX_RESERVE + VNET_HDR_LEN - 14;
    assert!(mac + MAX_GSO_FRAME <= frame_size);
    assert_eq!(
        v2_geometry(frame_size, frame_count, 4096),
        Some((1 << 20, 15, 18))
    );
    assert_eq!(v2_geometry(2048, 2048, 4096), Some((16 << 10, 8, 256)));

    // The mixed ring fits in the memory of the ring it replaces (30 slots of 68 KiB: two
    // 1 MiB blocks), with room for at least 15 super-frames and 500 small frames.
    let old = v2_geometry(68 << 10, 30, 4096)
        .map(|(b, _, n)| b * n)
        .unwrap();
    let (ring, long) = mixed_rx(old, 4096);
    let RxRing::V2 {
        frame_size,
        frame_count,
    } = ring
    else {
        unreachable!()
    };
    let (block, _, blocks) = v2_geometry(frame_size, frame_count, 4096).unwrap();
    assert_eq!((frame_size, frame_count, long), (SMALL_SLOT, 512, 15));
    assert!(block * blocks + long * LONG_BUF <= old);
    for budget in [0, 1 << 16, 1 << 20, 3 << 20, 64 << 20] {
        let (ring, long) = mixed_rx(budget, 4096);
        let RxRing::V2 { frame_count, .. } = ring else {
            unreachable!()
        };
        let (block, per_block, blocks) = v2_geometry(SMALL_SLOT, frame_count, 4096).unwrap();
        assert!(long >= 1 && frame_count >= per_block && frame_count % per_block == 0);
        if budget >= LONG_BUF + block {
            assert!(block * blocks + long * LONG_BUF <= budget, "{budget}");
        }
    }
    let mac = tpacket_align(V2_HDRLEN + 16) + RX_RESERVE + VNET_HDR_LEN - 14;
    assert!(mac + 1514 + VLAN_TAG_LEN <= SMALL_SLOT);
    assert_eq!(v2_geometry(2048, 0, 4096), None);
    assert_eq!(v2_geometry(usize::MAX / 4, 1, 4096), None);
    for (size, count) in [(2048, 1), (68 << 10, 300), (1 << 20, 3), (4000, 7)] {
        let (block, per_block, blocks) = v2_geometry(size, count, 4096).unwrap();
        assert!(block.is_power_of_two() && block >= 4096 && per_block >= 8);
        assert!(per_block * blocks >= count && per_block * (blocks - 1) < count);
    }

    for ring in [
        RxRing::V2 {
            frame_size: 2050,
            frame_count: 16,
        },
        RxRing::V2 {
            frame_size: 64,
            frame_count: 16,
        },
        RxRing::V2 {
            frame_size: 2048,
            frame_count: 0,
        },
        RxRing::V3 {
            block_size: 1000,
            block_count: 4,
            retire_ms: 1,
        },
    ] {
        assert!(
            matches!(
                open("lo", PortId(0), &small(ring)),
                Err(AfPacketError::Config { .. })
            ),
            "{ring:?}"
        );
    }
    for ring in [V2_SMALL_SLOTS, V3_SMALL] {
        let bad = AfPacketConfig {
            tx_frame_size: 1000,
            ..small(ring)
        };
        assert!(matches!(
            open("lo", PortId(0), &bad),
            Err(AfPacketError::Config { .. })
        ));
        let err = open("sl-no-such-if", PortId(0), &small(ring)).unwrap_err();
        assert!(err.to_string().contains("sl-no-such-if"), "{err}");
    }
}

/// Namespaces `<tag>l`, `<tag>m` and `<tag>r` joined by veth pairs a (left) - x (middle) and
/// b (right) - y (middle), all up.
fn left_mid_right(tag: &str) -> (Netns, Netns, Netns) {
    let left = Netns::new(&format!("{tag}l"));
    let mid = Netns::new(&format!("{tag}m"));
    let right = Netns::new(&format!("{tag}r"));
    left.ip(&format!(
        "link add name a type veth peer name x netns {}",
        mid.name
    ));
    right.ip(&format!(
        "link add name b type veth peer name y netns {}",
        mid.name
    ));
    for (ns, dev) in [(&left, "a"), (&right, "b"), (&mid, "x"), (&mid, "y")] {
        ns.ip(&format!("link set dev {dev} up"));
    }
    (left, mid, right)
}

#[test]
fn rx_and_tx_over_veth_v2() {
    rx_and_tx_over_veth(V2_SMALL_SLOTS);
}

#[test]
fn rx_and_tx_over_veth_v3() {
    rx_and_tx_over_veth(V3_SMALL);
}

fn rx_and_tx_over_veth(ring: RxRing) {
    let ns = Netns::new("ap");
    ns.ip("link add name a type veth peer name b");
    ns.ip("link set dev a up");
    ns.ip("link set dev b up");
    let (mut rx, mut tx) = ns.enter(|| open("b", PortId(7), &small(ring))).unwrap();
    assert_eq!(
        rx.ring(),
        match ring {
            RxRing::V2 { frame_size, .. } => RxRing::V2 {
                frame_size,
                frame_count: v2_geometry(2048, 2048, page_size()).map_or(0, |(_, p, b)| p * b),
            },
            v3 => v3,
        }
    );
    let raw = ns.enter(|| RawSock::open("a"));
    assert!(ns.ip("-d link show dev b").contains("promiscuity 1"));

    // Kernel -> port: to a foreign MAC, untagged and tagged (PCP 3, VLAN 5).
    let plain = test_frame(None, 1, 100);
    let tagged = test_frame(Some((3 << 13) | 5), 2, 100);
    raw.send(&plain);
    raw.send(&tagged);
    let got = collect(&mut rx, 2, Duration::from_secs(3), |f, m| {
        assert_eq!(m.ingress, PortId(7));
        is_test_frame(f, 1) || is_test_frame(f, 2)
    });
    let frames: Vec<_> = got.into_iter().map(|(b, _)| b).collect();
    assert_eq!(
        frames,
        vec![plain.clone(), tagged],
        "stripped tag written back"
    );

    // Port -> kernel: pushed and stripped tags, one kick.
    let mut b1 = with_headroom(&test_frame(None, 3, 60));
    let mut b2 = with_headroom(&test_frame(Some(4), 4, 60));
    let len1 = b1.len() - HEADROOM;
    let f1 = Frame::new(&mut b1, HEADROOM, len1, Meta::default()).unwrap();
    let len2 = b2.len() - HEADROOM;
    let f2 = Frame::new(&mut b2, HEADROOM, len2, Meta::default()).unwrap();
    tx.send(&f1, Some(9)).unwrap();
    tx.send(&f2, None).unwrap();
    tx.flush().unwrap();
    let seen = raw.capture(2, |f| is_test_frame(f, 3) || is_test_frame(f, 4));
    assert_eq!(
        seen,
        vec![test_frame(Some(9), 3, 60), test_frame(None, 4, 60)]
    );

    // What we sent is not read back (PACKET_IGNORE_OUTGOING).
    let echo = collect(&mut rx, 1, Duration::from_millis(100), |f, _| {
        is_test_frame(f, 3) || is_test_frame(f, 4)
    });
    assert!(echo.is_empty());

    // Many frames while reading: slots or blocks are returned to the kernel and reused
    // (6.6 MB through a 4 MiB ring; bursts of 200 stay below the veth's backlog queue).
    let received = std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..30 {
                for _ in 0..200 {
                    raw.send(&test_frame(None, 10, 1000));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        collect(&mut rx, 6000, Duration::from_secs(10), |f, _| {
            is_test_frame(f, 10)
        })
    });
    assert_eq!(received.len(), 6000);
    let drops = rx.kernel_stats().unwrap().drops;
    assert_eq!(drops, 0);
    assert_eq!(rx.malformed(), 0);

    // A full TX ring says so instead of blocking.
    let mut full = false;
    for _ in 0..=tx.slots() {
        if let Err(e) = tx.send(&f1, None) {
            assert!(matches!(e, TxError::Full));
            full = true;
            break;
        }
    }
    assert!(full);
    tx.flush().unwrap();
}

#[test]
fn fanout_group_shares_the_interface_v2() {
    fanout_group_shares_the_interface(DEFAULT_RX_V2);
}

#[test]
fn fanout_group_shares_the_interface_v3() {
    fanout_group_shares_the_interface(V3_SMALL);
}

/// Two workers on one interface: each frame reaches exactly one of them.
fn fanout_group_shares_the_interface(ring: RxRing) {
    let ns = Netns::new("f");
    ns.ip("link add name a type veth peer name b");
    ns.ip("link set dev a up");
    ns.ip("link set dev b up");
    let cfg = AfPacketConfig {
        fanout: true,
        ..small(ring)
    };
    let (mut r0, _t0) = ns.enter(|| open("b", PortId(0), &cfg)).unwrap();
    let (mut r1, _t1) = ns.enter(|| open("b", PortId(0), &cfg)).unwrap();
    let raw = ns.enter(|| RawSock::open("a"));
    for _ in 0..100 {
        raw.send(&test_frame(None, 5, 60));
    }
    let keep = |f: &[u8], _: &Meta| is_test_frame(f, 5);
    let n0 = collect(&mut r0, 100, Duration::from_millis(500), keep).len();
    let n1 = collect(&mut r1, 100, Duration::from_millis(500), keep).len();
    assert_eq!(n0 + n1, 100);
}

#[test]
fn gso_super_frames_arrive_whole_v2() {
    gso_super_frames_arrive_whole(small(DEFAULT_RX_V2));
}

#[test]
fn gso_super_frames_arrive_whole_v3() {
    gso_super_frames_arrive_whole(small(V3_SMALL));
}

#[test]
fn gso_super_frames_arrive_whole_in_a_mixed_ring() {
    gso_super_frames_arrive_whole(mixed());
}

/// A TCP transfer over a veth whose sender has TSO on: the port on the receiving end sees
/// the super-frames whole, with the GSO and checksum-partial state in the offload.
fn gso_super_frames_arrive_whole(cfg: AfPacketConfig) {
    let ns1 = Netns::new("g");
    let ns2 = Netns::new("g");
    ns1.ip(&format!(
        "link add name a type veth peer name b netns {}",
        ns2.name
    ));
    ns1.ip("addr add 198.18.0.1/24 dev a");
    ns2.ip("addr add 198.18.0.2/24 dev b");
    ns1.ip("link set dev a up");
    ns2.ip("link set dev b up");
    let (mut rx, _tx) = ns2.enter(|| open("b", PortId(1), &cfg)).unwrap();
    let listener = ns2.enter(|| TcpListener::bind("198.18.0.2:5201")).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let (mut c, _) = listener.accept().unwrap();
            let mut sink = vec![0u8; 1 << 16];
            while c.read(&mut sink).unwrap_or(0) > 0 {}
        });
        s.spawn(|| {
            ns1.setns();
            let mut c = TcpStream::connect("198.18.0.2:5201").unwrap();
            let chunk = vec![0x5a; 1 << 20];
            for _ in 0..16 {
                if c.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        let got = collect(&mut rx, 1, Duration::from_secs(10), |f, m| {
            f.len() > 1514 && m.offload.gso != GsoType::None
        });
        let (bytes, off) = got.first().expect("no GSO frame seen");
        assert_eq!(off.gso, GsoType::TcpV4);
        assert!(off.gso_size > 500 && off.gso_size <= 1460, "{off:?}");
        assert!(off.csum_partial, "{off:?}");
        assert_eq!((off.csum_start, off.csum_offset), (34, 16));
        assert!(off.hdr_len >= 54 && usize::from(off.hdr_len) <= bytes.len());
        assert_eq!(&bytes[12..14], &[0x08, 0x00]);
        drop(got);
    });
    assert_eq!(rx.malformed(), 0, "a GSO frame did not fit");
}

#[test]
fn forwards_tcp_between_two_veths_v2() {
    forwards_tcp_between_two_veths(small(DEFAULT_RX_V2));
}

#[test]
fn forwards_tcp_between_two_veths_v3() {
    forwards_tcp_between_two_veths(small(V3_SMALL));
}

#[test]
fn forwards_tcp_between_two_veths_mixed() {
    forwards_tcp_between_two_veths(mixed());
}

/// sluice in the middle: frames read from one veth are sent out of another, both ways; a
/// TCP transfer (GSO super-frames, partial checksums, ARP) crosses it intact (through TX
/// rings with the V2 or V3 slot header).
fn forwards_tcp_between_two_veths(cfg: AfPacketConfig) {
    let (left, mid, right) = left_mid_right("");
    left.ip("addr add 198.18.1.1/24 dev a");
    right.ip("addr add 198.18.1.2/24 dev b");
    let (mut xr, mut xt) = mid.enter(|| open("x", PortId(0), &cfg)).unwrap();
    let (mut yr, mut yt) = mid.enter(|| open("y", PortId(1), &cfg)).unwrap();
    let listener = right
        .enter(|| TcpListener::bind("198.18.1.2:5201"))
        .unwrap();
    let total: usize = 256 << 20;
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let fwd = s.spawn(|| forward(&stop, [(&mut xr, &mut xt), (&mut yr, &mut yt)]));
        let server = s.spawn(|| {
            let (mut c, _) = listener.accept().unwrap();
            let mut sink = vec![0u8; 1 << 16];
            let mut got = 0;
            loop {
                match c.read(&mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            got
        });
        let start = Instant::now();
        let left = &left;
        let sent = s
            .spawn(move || {
                left.setns();
                let mut c = TcpStream::connect("198.18.1.2:5201").unwrap();
                c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                let chunk = vec![0xa5; 1 << 20];
                let mut sent = 0;
                while sent < total && start.elapsed() < Duration::from_secs(8) {
                    c.write_all(&chunk).unwrap();
                    sent += chunk.len();
                }
                sent
            })
            .join()
            .unwrap();
        let received = server.join().unwrap();
        let secs = start.elapsed().as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let st = fwd.join().unwrap();
        eprintln!(
            "{:?} ({} long): forwarded {received} bytes in {secs:.2} s ({:.2} Gbit/s): {st:?}",
            cfg.rx_ring,
            cfg.rx_long_buffers,
            received as f64 * 8.0 / secs / 1e9
        );
        assert_eq!(received, sent);
        assert!(st.gso[0] > 0, "no GSO frame from the sender side");
        assert!(sent >= 16 << 20, "only {sent} bytes in 8 s");
    });
    assert_eq!((xr.malformed(), yr.malformed()), (0, 0));
}

/// Forward rate of one worker between two veths with 64-byte frames (a measurement, not a
/// check of speed): `cargo test -p sluice-dataplane --release forward_rate -- --ignored
/// --nocapture`. A generator port blasts frames into one veth, the worker forwards them to
/// the other, a counter port drains the far end.
#[test]
#[ignore = "measurement; run in release"]
fn forward_rate_small_frames() {
    forward_rate(DEFAULT_RX_V2);
    forward_rate(DEFAULT_RX_V3);
}

fn forward_rate(ring: RxRing) {
    let (left, mid, right) = left_mid_right("p");
    let cfg = AfPacketConfig {
        rx_ring: ring,
        ..AfPacketConfig::default()
    };
    let (_ar, mut gen) = left.enter(|| open("a", PortId(9), &cfg)).unwrap();
    let (mut xr, mut xt) = mid.enter(|| open("x", PortId(0), &cfg)).unwrap();
    let (mut yr, mut yt) = mid.enter(|| open("y", PortId(1), &cfg)).unwrap();
    let (mut br, _bt) = right.enter(|| open("b", PortId(8), &cfg)).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let secs = 3.0;
    let result = std::thread::scope(|s| {
        let fwd = s.spawn(|| forward(&stop, [(&mut xr, &mut xt), (&mut yr, &mut yt)]));
        let sink = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut batch = Batch::new();
                n += br.rx(&mut batch).unwrap() as u64;
                drop(batch);
                br.release();
            }
            n
        });
        let mut frame = with_headroom(&test_frame(None, 1, 46));
        let len = frame.len() - HEADROOM;
        let f = Frame::new(&mut frame, HEADROOM, len, Meta::default()).unwrap();
        let start = Instant::now();
        let mut generated = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            for _ in 0..256 {
                if tx_full(gen.send(&f, None)) {
                    break;
                }
                generated += 1;
            }
            gen.flush().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (generated, fwd.join().unwrap(), sink.join().unwrap())
    });
    let (generated, st, sunk) = result;
    let x_drops = xr.kernel_stats().unwrap().drops;
    eprintln!(
        "{ring:?}: generated {generated}, forwarded {} ({:.0} kpps), received {sunk}, \
         TX full {}, x ring drops {x_drops}",
        st.frames,
        st.frames as f64 / secs / 1e3,
        st.full
    );
    assert!(st.frames > 0 && sunk > 0);
}

/// UDP request/response round trips (1-byte payload) between two namespaces through the
/// middle one, which is a kernel bridge or a polling two-port sluice loop with a V2 or V3
/// ring (a measurement, not a check of speed): `cargo test -p sluice-dataplane --release
/// request_response -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run in release"]
fn request_response_rtt() {
    for ring in [None, Some(DEFAULT_RX_V2), Some(DEFAULT_RX_V3)] {
        let rtts = udp_rtts(ring, 3000);
        let pct = |p: usize| rtts[(rtts.len() - 1) * p / 100].as_secs_f64() * 1e6;
        let mean = rtts.iter().sum::<Duration>().as_secs_f64() * 1e6 / rtts.len() as f64;
        eprintln!(
            "{}: {} round trips, mean {mean:.0} us, p50 {:.0} us, p90 {:.0} us, p99 {:.0} us",
            ring.map_or("kernel bridge".to_owned(), |r| format!("{r:?}")),
            rtts.len(),
            pct(50),
            pct(90),
            pct(99)
        );
    }
}

/// Sorted round-trip times of `count` UDP request/responses through the middle namespace
/// (`None`: a kernel bridge).
fn udp_rtts(ring: Option<RxRing>, count: usize) -> Vec<Duration> {
    use std::net::UdpSocket;
    use std::sync::atomic::AtomicBool;

    let (left, mid, right) = left_mid_right("q");
    left.ip("addr add 198.18.3.1/24 dev a");
    right.ip("addr add 198.18.3.2/24 dev b");
    if ring.is_none() {
        mid.ip("link add name br0 type bridge");
        mid.ip("link set dev x master br0");
        mid.ip("link set dev y master br0");
        mid.ip("link set dev br0 up");
    }
    let ports = ring.map(|r| {
        let cfg = small(r);
        let x = mid.enter(|| open("x", PortId(0), &cfg)).unwrap();
        let y = mid.enter(|| open("y", PortId(1), &cfg)).unwrap();
        (x, y)
    });
    let server = right.enter(|| UdpSocket::bind("198.18.3.2:7000")).unwrap();
    let client = left.enter(|| UdpSocket::bind("198.18.3.1:0")).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    client.connect("198.18.3.2:7000").unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        if let Some(((mut xr, mut xt), (mut yr, mut yt))) = ports {
            let stop = &stop;
            s.spawn(move || {
                let fds = [xr.raw_fd().unwrap(), yr.raw_fd().unwrap()];
                while !stop.load(Ordering::Relaxed) {
                    wait_readable(fds, Duration::from_millis(10));
                    for (rx, tx) in [(&mut xr, &mut yt), (&mut yr, &mut xt)] {
                        let mut batch = Batch::new();
                        rx.rx(&mut batch).unwrap();
                        for f in batch.frames() {
                            let _ = tx.send(f, None);
                        }
                        drop(batch);
                        rx.release();
                        tx.flush().unwrap();
                    }
                }
            });
        }
        s.spawn(|| {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = server.recv_from(&mut buf) {
                    server.send_to(&buf[..n], peer).unwrap();
                }
            }
        });
        // Ends the other threads also when the client panics.
        struct StopOnDrop<'s>(&'s AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        // One request until its own response (numbered: a late answer to a retried request
        // is skipped); `None` after 200 ms.
        let round_trip = |seq: u32| {
            let mut buf = [0u8; 64];
            let start = Instant::now();
            client.send(&seq.to_be_bytes()).unwrap();
            while let Ok(n) = client.recv(&mut buf) {
                if buf[..n] == seq.to_be_bytes() {
                    return Some(start.elapsed());
                }
            }
            None
        };
        // Until the path works (links coming up, ARP), then warm-up, then measured.
        let mut seq = 0;
        while round_trip(seq).is_none() {
            assert!(seq < 25, "no response through the middle namespace");
            seq += 1;
        }
        let mut rtts: Vec<Duration> = (seq + 1..seq + 101 + count as u32)
            .map(|i| round_trip(i).expect("no response"))
            .skip(100)
            .collect();
        rtts.sort();
        rtts
    })
}

fn tx_full(r: Result<(), TxError>) -> bool {
    match r {
        Ok(()) => false,
        Err(TxError::Full) => true,
        Err(e) => panic!("send: {e}"),
    }
}

#[test]
fn a_full_ring_counts_kernel_drops_v2() {
    a_full_ring_counts_kernel_drops(RxRing::V2 {
        frame_size: 2048,
        frame_count: 16,
    });
}

#[test]
fn a_full_ring_counts_kernel_drops_v3() {
    a_full_ring_counts_kernel_drops(RxRing::V3 {
        block_size: page_size(),
        block_count: 2,
        retire_ms: 1,
    });
}

/// Frames sent into a small ring that nobody reads: the kernel drops what does not fit and
/// says so in `kernel_stats`, whose counts restart at every read.
fn a_full_ring_counts_kernel_drops(ring: RxRing) {
    let ns = Netns::new("k");
    ns.ip("link add name a type veth peer name b");
    // No IPv6 link-local addresses: the kernel sends nothing of its own into the ring.
    for dev in ["a", "b"] {
        ns.ip(&format!("link set dev {dev} addrgenmode none"));
        ns.ip(&format!("link set dev {dev} up"));
    }
    let (rx, _tx) = ns.enter(|| open("b", PortId(2), &small(ring))).unwrap();
    let raw = ns.enter(|| RawSock::open("a"));
    const SENT: u64 = 200;
    for _ in 0..SENT {
        raw.send(&test_frame(None, 11, 100));
    }
    let mut total = KernelPortStats::default();
    let deadline = Instant::now() + Duration::from_secs(3);
    while total.packets < SENT && Instant::now() < deadline {
        total += rx.kernel_stats().unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("{ring:?}: {total:?}");
    assert_eq!(total.packets, SENT, "{total:?}");
    assert!(
        total.drops >= SENT - 64 && total.drops < total.packets,
        "{total:?}"
    );
    if matches!(ring, RxRing::V3 { .. }) {
        assert!(total.freezes >= 1, "{total:?}");
    }
    assert_eq!(rx.kernel_stats().unwrap().drops, 0, "cleared on read");
}

/// Frames longer than a 2 KiB slot come out of a mixed ring whole (a stripped tag written
/// back) and in order among the small ones; a batch takes no more of them than there are
/// buffers, the rest wait for the next.
#[test]
fn long_frames_of_a_mixed_ring_keep_their_order() {
    let ns = Netns::new("lf");
    ns.ip("link add name a mtu 4000 type veth peer name b mtu 4000");
    for dev in ["a", "b"] {
        ns.ip(&format!("link set dev {dev} addrgenmode none"));
        ns.ip(&format!("link set dev {dev} up"));
    }
    let cfg = AfPacketConfig {
        rx_long_buffers: 2,
        ..small(V2_SMALL_SLOTS)
    };
    let (mut rx, _tx) = ns.enter(|| open("b", PortId(4), &cfg)).unwrap();
    let raw = ns.enter(|| RawSock::open("a"));
    let sent: Vec<Vec<u8>> = (0..12u8)
        .map(|i| {
            let tag = (i == 4).then_some(7);
            test_frame(tag, 20 + i, if i % 3 == 0 { 100 } else { 3000 })
        })
        .collect();
    for f in &sent {
        raw.send(f);
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while got.len() < sent.len() && Instant::now() < deadline {
        let mut batch = Batch::new();
        rx.rx(&mut batch).unwrap();
        let ours: Vec<Vec<u8>> = batch
            .frames()
            .iter()
            .filter(|f| (20..32).any(|m| is_test_frame(f.data(), m)))
            .map(|f| f.data().to_vec())
            .collect();
        let long = ours.iter().filter(|f| f.len() > 2000).count();
        assert!(long <= 2, "{long} long frames in one batch");
        got.extend(ours);
        drop(batch);
        rx.release();
    }
    assert!(got == sent, "frames differ or out of order");
    assert_eq!(rx.malformed(), 0);
}

/// The TX ring has a socket of its own, bound to nothing (freeing a sent frame then wakes no
/// epoll entry of the receiving socket): the interface lists only the receiving socket, and
/// frames longer than a TX slot leave through that receiving socket, not a third one.
#[test]
fn the_tx_ring_has_a_socket_of_its_own() {
    use std::os::unix::fs::MetadataExt;
    let ns = Netns::new("s");
    ns.ip("link add name a type veth peer name b");
    ns.ip("link set dev a up");
    ns.ip("link set dev b up");
    let (rx, tx) = ns.enter(|| open("b", PortId(2), &mixed())).unwrap();
    let inode = |fd: std::os::fd::RawFd| {
        std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino()
    };
    let receiving = inode(rx.raw_fd().unwrap());
    let (ring, long) = tx.sockets();
    assert_ne!(
        inode(ring),
        receiving,
        "the TX ring is on the receiving socket"
    );
    assert_eq!(long.map(inode), Some(receiving));
    let listed = ns.enter(|| ns.packet_sockets("b"));
    assert_eq!(listed, 1, "sockets bound to the interface");
}
