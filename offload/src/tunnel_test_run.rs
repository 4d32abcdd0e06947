//! The TC program's VXLAN encapsulation and decapsulation run by the kernel on hand-made frames
//! (`BPF_PROG_TEST_RUN`, as root): the exact bytes out, the outer checksum, and every frame
//! that must stay with userspace.

use std::net::{IpAddr, Ipv4Addr};

use crate::test_run::{run, run_gso, sum, v4, v6, Frame, LO, TCP, TC_ACT_OK, TC_ACT_REDIRECT, UDP};
use crate::tests::offload;
use crate::{DecapAction, DecapKey, EncapAction, Offload, Vxlan};

const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const VNI: u32 = 4097;
const OUTER_MACS: [u8; 12] = [2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa];

fn tunnel() -> Vxlan {
    Vxlan {
        local: LOCAL,
        remote: REMOTE,
        vni: VNI,
    }
}

fn encap_action() -> EncapAction {
    EncapAction {
        egress_ifindex: LO,
        eth_src: [2, 0, 0, 0, 0, 0xa],
        eth_dst: [2, 0, 0, 0, 0, 0xb],
        tunnel: tunnel(),
        udp_sport: 49_999,
    }
}

/// `first` and `second` (inner frames) in one frame with outer lengths covering both, as a
/// userspace sender's UDP GSO frame carries two chunks.
fn udp_gso_frame(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut f = wrapped(first, REMOTE, LOCAL, VNI, 0x08);
    f.extend(&wrapped(second, REMOTE, LOCAL, VNI, 0x08)[42..]);
    let ip_len = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let hc = !sum(&f[14..34], 0);
    f[24..26].copy_from_slice(&hc.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// `inner` wrapped as the remote VTEP `src` sends it to `dst` with `vni` and VXLAN `flags`.
fn wrapped(inner: &[u8], src: Ipv4Addr, dst: Ipv4Addr, vni: u32, flags: u8) -> Vec<u8> {
    let mut f = OUTER_MACS.to_vec();
    f.extend([0x08, 0x00, 0x45, 0]);
    f.extend(((20 + 16 + inner.len()) as u16).to_be_bytes());
    f.extend([0, 0, 0, 0, 64, 17, 0, 0]);
    f.extend(src.octets());
    f.extend(dst.octets());
    let hc = !sum(&f[14..34], 0);
    f[24..26].copy_from_slice(&hc.to_be_bytes());
    f.extend(49_999u16.to_be_bytes());
    f.extend(4789u16.to_be_bytes());
    f.extend(((16 + inner.len()) as u16).to_be_bytes());
    f.extend([0, 0, flags, 0, 0, 0]);
    f.extend((vni << 8).to_be_bytes());
    f.extend(inner);
    f
}

#[test]
fn an_encap_entry_wraps_the_frame_in_vxlan_to_the_remote_vtep() {
    let Some(off) = offload(8) else { return };
    for frame in [
        Frame::new(v4(1), v4(2), TCP),
        Frame::new(v4(1), v4(2), UDP),
        Frame::new(v6(1), v6(2), TCP),
    ] {
        off.insert_encap(&frame.key(), &encap_action()).unwrap();
        let inner = frame.bytes();
        let (verdict, out) = run(&off, &inner);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        // Identification 0, TTL 64, UDP checksum 0, as Linux's vxlan sends them.
        assert_eq!(
            out,
            wrapped(&inner, LOCAL, REMOTE, VNI, 0x08),
            "{:?}",
            frame.key()
        );
        assert_eq!(sum(&out[14..34], 0), 0xffff, "outer IPv4 checksum");
        let used = off.usage(&frame.key()).unwrap().unwrap();
        assert_eq!((used.packets, used.bytes), (1, inner.len() as u64));
    }
}

#[test]
fn a_decap_entry_unwraps_the_frame_and_writes_the_inner_macs() {
    let Some(off) = offload(8) else { return };
    let flows = [(v4(3), v4(4)), (v6(3), v6(4))];
    for ((src, dst), proto) in flows.into_iter().flat_map(|f| [(f, TCP), (f, UDP)]) {
        let frame = Frame::new(src, dst, proto);
        let key = DecapKey {
            inner: frame.key(),
            tunnel: tunnel(),
        };
        let action = DecapAction {
            egress_ifindex: LO,
            eth_src: [2, 0, 0, 0, 0, 3],
            eth_dst: [2, 0, 0, 0, 0, 4],
        };
        off.insert_decap(&key, &action).unwrap();
        let inner = frame.bytes();
        let outer = wrapped(&inner, REMOTE, LOCAL, VNI, 0x08);
        // A UDP super-frame of the flow stays with userspace, untouched.
        if proto == UDP {
            assert_eq!(run_gso(&off, &outer, 1200), (TC_ACT_OK, outer.clone()));
        }
        let (verdict, out) = run(&off, &outer);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let mut want = inner.clone();
        want[..12].copy_from_slice(&[2, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 3]);
        // The inner ethertype too (the outer one stays where the program strips).
        assert_eq!(out, want);
        let used = off.decap_usage(&key).unwrap().unwrap();
        assert_eq!((used.packets, used.bytes), (1, outer.len() as u64));
        // The same 5-tuple as a plain flow on that interface is another entry.
        assert_eq!(off.usage(&frame.key()).unwrap(), None);
        off.remove_decap(&key).unwrap();
        assert_eq!(run(&off, &outer), (TC_ACT_OK, outer.clone()));
    }
}

#[test]
fn two_overlays_with_one_ipv6_inner_flow_keep_their_own_entries() {
    let Some(off) = offload(8) else { return };
    let frame = Frame::new(v6(3), v6(4), TCP);
    let inner = frame.bytes();
    let entries = [(VNI, 0x0a), (VNI + 1, 0x0b)].map(|(vni, mac)| {
        let key = DecapKey {
            inner: frame.key(),
            tunnel: Vxlan { vni, ..tunnel() },
        };
        let action = DecapAction {
            egress_ifindex: LO,
            eth_src: [2, 0, 0, 0, 0, mac],
            eth_dst: [2, 0, 0, 0, 0, mac],
        };
        off.insert_decap(&key, &action).unwrap();
        (vni, mac)
    });
    for (vni, mac) in entries {
        let (verdict, out) = run(&off, &wrapped(&inner, REMOTE, LOCAL, vni, 0x08));
        assert_eq!(verdict, TC_ACT_REDIRECT, "VNI {vni}");
        assert_eq!(
            out[..12],
            [2, 0, 0, 0, 0, mac, 2, 0, 0, 0, 0, mac],
            "VNI {vni}"
        );
    }
}

/// A decapsulating entry (to `LO`) of the TCP flow from `src` to `dst` in [`tunnel`]: its key,
/// an inner frame of it and the same with SYN.
fn decap_entry(off: &Offload, src: IpAddr, dst: IpAddr) -> (DecapKey, Vec<u8>, Vec<u8>) {
    let frame = Frame::new(src, dst, TCP);
    let key = DecapKey {
        inner: frame.key(),
        tunnel: tunnel(),
    };
    let action = DecapAction {
        egress_ifindex: LO,
        eth_src: [2; 6],
        eth_dst: [4; 6],
    };
    off.insert_decap(&key, &action).unwrap();
    let syn = Frame {
        tcp_flags: 0x02,
        ..frame
    };
    (key, frame.bytes(), syn.bytes())
}

#[test]
fn ipv6_vxlan_frames_of_another_tunnel_stay_with_userspace() {
    let Some(off) = offload(8) else { return };
    let (key, inner, syn) = decap_entry(&off, v6(3), v6(4));
    let other = Ipv4Addr::new(192, 0, 2, 9);
    let mut reserved = wrapped(&inner, REMOTE, LOCAL, VNI, 0x08);
    reserved[49] = 1;
    let misses = [
        ("another VNI", wrapped(&inner, REMOTE, LOCAL, VNI + 1, 0x08)),
        ("another VTEP", wrapped(&inner, other, LOCAL, VNI, 0x08)),
        ("not to us", wrapped(&inner, REMOTE, other, VNI, 0x08)),
        ("the VNI word's reserved byte set", reserved),
        (
            "two packets in one frame, outer lengths of both (UDP GSO)",
            udp_gso_frame(&inner, &inner),
        ),
        ("SYN", wrapped(&syn, REMOTE, LOCAL, VNI, 0x08)),
        (
            "the reverse flow",
            wrapped(
                &Frame::new(v6(4), v6(3), TCP).bytes(),
                REMOTE,
                LOCAL,
                VNI,
                0x08,
            ),
        ),
        ("not wrapped", inner.clone()),
    ];
    for (why, bytes) in misses {
        assert_eq!(run(&off, &bytes), (TC_ACT_OK, bytes), "{why}");
    }
    assert_eq!(off.decap_usage(&key).unwrap().unwrap().packets, 0);
    // The right tunnel: unwrapped.
    let (verdict, _) = run(&off, &wrapped(&inner, REMOTE, LOCAL, VNI, 0x08));
    assert_eq!(verdict, TC_ACT_REDIRECT);
}

#[test]
fn vxlan_frames_not_matching_every_part_of_the_key_stay_with_userspace() {
    let Some(off) = offload(8) else { return };
    let (key, inner, syn) = decap_entry(&off, v4(3), v4(4));
    let other = Ipv4Addr::new(192, 0, 2, 9);
    let mut other_port = wrapped(&inner, REMOTE, LOCAL, VNI, 0x08);
    other_port[36..38].copy_from_slice(&4790u16.to_be_bytes());
    let mut several = wrapped(&inner, REMOTE, LOCAL, VNI, 0x08);
    several.extend(wrapped(&inner, REMOTE, LOCAL, VNI, 0x08)[14..].to_vec());
    let misses = [
        ("two packets in one frame (UDP GSO)", several),
        (
            "two packets in one frame, outer lengths of both (UDP GSO)",
            udp_gso_frame(&inner, &inner),
        ),
        ("another VNI", wrapped(&inner, REMOTE, LOCAL, VNI + 1, 0x08)),
        ("another VTEP", wrapped(&inner, other, LOCAL, VNI, 0x08)),
        ("not to us", wrapped(&inner, REMOTE, other, VNI, 0x08)),
        ("no I flag", wrapped(&inner, REMOTE, LOCAL, VNI, 0)),
        ("SYN", wrapped(&syn, REMOTE, LOCAL, VNI, 0x08)),
        ("not UDP 4789", other_port),
        ("not wrapped", inner.clone()),
    ];
    for (why, bytes) in misses {
        assert_eq!(run(&off, &bytes), (TC_ACT_OK, bytes), "{why}");
    }
    assert_eq!(off.decap_usage(&key).unwrap().unwrap().packets, 0);
}
