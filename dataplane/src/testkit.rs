//! Frames and configurations for tests, benchmarks and the fuzz target: hand-built packets with
//! correct checksums, a docker-like scenario, and a helper that runs owned frames through a
//! worker. Not used by the dataplane itself.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::batch::Batch;
use crate::config::{
    Config, Ipv6Cidr, L4Proto, NatConfig, NetworkConfig, NetworkV6, PortConfig, PortForward,
    PortRange, PortRole, UplinkConfig, UplinkV6,
};
use crate::frame::{Frame, GsoType, Meta, NetworkId, Offload, PortId, Verdict, HEADROOM};
use crate::overlay::{OverlayConfig, RemoteEndpoint};
use crate::pipeline::udp_gso;
use crate::pipeline::Worker;
use crate::time::Millis;
use crate::wire::checksum;
use crate::wire::MacAddr;

/// An Ethernet frame around `payload`.
pub fn eth(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(14 + payload.len());
    v.extend_from_slice(&dst.0);
    v.extend_from_slice(&src.0);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// The same frame with an 802.1Q tag `vid` inserted after the addresses.
pub fn tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut v = frame[..12].to_vec();
    v.extend_from_slice(&0x8100u16.to_be_bytes());
    v.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    v.extend_from_slice(&frame[12..]);
    v
}

/// An IPv4 packet (20-byte header, DF set) around an L4 payload.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut h = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, ttl, proto, 0, 0];
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = checksum::internet_checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(l4);
    h
}

fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &mut [u8], at: usize) {
    let ps = checksum::pseudo_header_sum_v4(src, dst, proto, l4.len() as u16);
    let c = !checksum::fold(checksum::ones_sum(l4, ps));
    let c = if proto == 17 && c == 0 { 0xffff } else { c };
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// A UDP datagram in IPv4, checksummed.
pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(8 + payload.len());
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    l4_checksum(src, dst, 17, &mut l4, 6);
    ipv4(src, dst, 17, 64, &l4)
}

/// TCP SYN flag.
pub const SYN: u8 = 0x02;
/// TCP ACK flag.
pub const ACK: u8 = 0x10;

/// A TCP segment in IPv4, checksummed.
pub fn tcp(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(20 + payload.len());
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&1u32.to_be_bytes());
    l4.extend_from_slice(&0u32.to_be_bytes());
    l4.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(payload);
    l4_checksum(src, dst, 6, &mut l4, 16);
    ipv4(src, dst, 6, 64, &l4)
}

/// An ICMP echo request (or reply) in IPv4, checksummed.
pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, request: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut l4 = vec![if request { 8 } else { 0 }, 0, 0, 0];
    l4.extend_from_slice(&id.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(b"sluice-ping");
    let c = checksum::internet_checksum(&l4);
    l4[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, 1, 64, &l4)
}

/// A broadcast ARP request frame.
pub fn arp_request(sender_mac: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&sender_mac.0);
    a.extend_from_slice(&sender_ip.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target_ip.octets());
    eth(MacAddr::BROADCAST, sender_mac, 0x0806, &a)
}

/// An ARP reply frame from `sender` to `target`.
pub fn arp_reply(
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 2];
    a.extend_from_slice(&sender_mac.0);
    a.extend_from_slice(&sender_ip.octets());
    a.extend_from_slice(&target_mac.0);
    a.extend_from_slice(&target_ip.octets());
    eth(target_mac, sender_mac, 0x0806, &a)
}

/// The uplink's port in `Scenario`.
pub const UPLINK: PortId = PortId(0);
/// Endpoint A's port.
pub const PORT_A: PortId = PortId(1);
/// Endpoint B's port.
pub const PORT_B: PortId = PortId(2);
/// The trunk port (VLANs 10 and 20).
pub const TRUNK: PortId = PortId(3);
/// Endpoint C's port, on the second network.
pub const PORT_C: PortId = PortId(4);

/// A docker-like setup: network "bridge" 172.17.0.0/16 (gateway .1) with endpoints A (.2) and
/// B (.3) and a trunk; network "other" 172.18.0.0/16 with endpoint C (.2); an uplink at
/// 192.0.2.1/24 with next hop 192.0.2.254; tcp and udp 8080 published to B:80.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The configuration.
    pub config: Config,
}

impl Scenario {
    /// Gateway of "bridge".
    pub const GW: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
    /// Gateway MAC of "bridge".
    pub const GW_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x01]);
    /// Endpoint A.
    pub const A: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
    /// Endpoint B.
    pub const B: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
    /// Endpoint C (network "other").
    pub const C: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
    /// The uplink address.
    pub const UP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    /// The uplink MAC.
    pub const UP_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
    /// The next hop.
    pub const HOP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
    /// The next hop's MAC.
    pub const HOP_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0xfe]);
    /// A host on the internet.
    pub const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

    /// MAC of an endpoint address (docker's scheme).
    pub fn mac(ip: Ipv4Addr) -> MacAddr {
        MacAddr::from_ipv4(ip)
    }

    /// The scenario's configuration.
    pub fn new() -> Self {
        let net = |id: u16, name: &str, third: u8| NetworkConfig {
            fdb_max: 1 << 20,
            external_gateway: false,
            uplink: None,
            ..NetworkConfig::new(
                NetworkId(id),
                name,
                format!("172.{third}.0.0/16").parse().expect("valid cidr"),
                Ipv4Addr::new(172, third, 0, 1),
            )
        };
        let endpoint = |id: PortId, network: u16, ip: Ipv4Addr| PortConfig {
            id,
            name: format!("ep{}", id.0),
            io: Default::default(),
            role: PortRole::Endpoint {
                network: NetworkId(network),
                vlan: 0,
                mac: Self::mac(ip),
                ipv4: Some(ip),
                ipv6: None,
            },
        };
        let forward = |proto| PortForward {
            proto,
            host_ip: None,
            host_ip6: None,
            host_ports: PortRange::single(8080),
            network: NetworkId(0),
            target_ip: Some(Self::B),
            target_ip6: None,
            target_ports: PortRange::single(80),
        };
        Scenario {
            config: Config {
                networks: vec![net(0, "bridge", 17), net(1, "other", 18)],
                ports: vec![
                    PortConfig {
                        id: UPLINK,
                        name: "uplink".into(),
                        io: Default::default(),
                        role: PortRole::Uplink,
                    },
                    endpoint(PORT_A, 0, Self::A),
                    endpoint(PORT_B, 0, Self::B),
                    PortConfig {
                        id: TRUNK,
                        name: "trunk".into(),
                        io: Default::default(),
                        role: PortRole::Trunk {
                            network: NetworkId(0),
                            allowed: vec![10, 20],
                            native: Some(0),
                        },
                    },
                    endpoint(PORT_C, 1, Self::C),
                ],
                uplink: Some(UplinkConfig {
                    port: UPLINK,
                    ip: "192.0.2.1/24".parse().expect("valid cidr"),
                    mac: Self::UP_MAC,
                    next_hop: Some(Self::HOP),
                    mtu: 1500,
                }),
                network_uplinks: Vec::new(),
                forwards: vec![forward(L4Proto::Tcp), forward(L4Proto::Udp)],
                nat: NatConfig::default(),
                overlays: Vec::new(),
                uplinks6: Vec::new(),
            },
        }
    }

    /// An IPv4 frame from endpoint `src` to its gateway MAC.
    pub fn from_endpoint(src: Ipv4Addr, ip_packet: &[u8]) -> Vec<u8> {
        let gw = MacAddr([0x02, 0x42, 0xac, src.octets()[1], 0x00, 0x01]);
        eth(gw, Self::mac(src), 0x0800, ip_packet)
    }

    /// An IPv4 frame arriving from the next hop on the uplink.
    pub fn from_outside(ip_packet: &[u8]) -> Vec<u8> {
        eth(Self::UP_MAC, Self::HOP_MAC, 0x0800, ip_packet)
    }
}

/// The v6 side of the scenario: "bridge" dual stack (fd00:17::/64), A and B with v6 addresses,
/// and a v6 side on the uplink (2001:db8:1::1/64, next hop 2001:db8:1::fe).
impl Scenario {
    /// v6 gateway of "bridge".
    pub const GW6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 1);
    /// Endpoint A's v6 address.
    pub const A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 2);
    /// Endpoint B's v6 address.
    pub const B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 3);
    /// A host on the v6 internet.
    pub const FAR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
    /// The uplink's v6 address.
    pub const UP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
    /// The v6 next hop.
    pub const HOP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xfe);

    /// The scenario with network "bridge" dual stack, A and B with v6 addresses.
    pub fn dual_stack() -> Self {
        let mut s = Self::new();
        s.config.networks[0].ipv6 = Some(NetworkV6 {
            subnet: Ipv6Cidr::new(Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 0), 64)
                .expect("valid prefix"),
            gateway: Self::GW6,
            routed: false,
        });
        for p in &mut s.config.ports {
            if let PortRole::Endpoint { ipv4, ipv6, .. } = &mut p.role {
                *ipv6 = match *ipv4 {
                    Some(ip) if ip == Self::A => Some(Self::A6),
                    Some(ip) if ip == Self::B => Some(Self::B6),
                    _ => None,
                };
            }
        }
        s
    }

    /// [`Scenario::dual_stack`] with a v6 side on the default uplink: NAT66, or routed v6
    /// when `routed`.
    pub fn nat66(routed: bool) -> Self {
        let mut s = Self::dual_stack();
        if let Some(v6) = s.config.networks[0].ipv6.as_mut() {
            v6.routed = routed;
        }
        let port = s.config.uplink.as_ref().map_or(PortId(0), |u| u.port);
        s.config.uplinks6.push(UplinkV6 {
            port,
            ip: Ipv6Cidr::new(Self::UP6, 64).expect("valid prefix"),
            next_hop: Some(Self::HOP6),
        });
        s
    }
}

/// The overlay side of the scenario: network "other" (C, MTU 1450, dual stack fd00:18::/64) is
/// an overlay (VNI 4096) whose remote endpoint R lives behind the VTEP 192.0.2.2 on the uplink's
/// subnet.
impl Scenario {
    /// The remote endpoint.
    pub const R: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 9);
    /// C's v6 address.
    pub const C6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 2);
    /// R's v6 address.
    pub const R6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 9);
    /// The remote host's VTEP.
    pub const VTEP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    /// The remote VTEP's MAC.
    pub const VTEP_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x02]);

    /// The scenario with network "other" an overlay.
    pub fn overlay() -> Self {
        let mut s = Self::new();
        let other = &mut s.config.networks[1];
        other.mtu = 1450;
        other.ipv6 = Some(NetworkV6 {
            subnet: Ipv6Cidr::new(Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0), 64)
                .expect("valid prefix"),
            gateway: Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1),
            routed: false,
        });
        for p in &mut s.config.ports {
            if let (PortRole::Endpoint { ipv6, .. }, true) = (&mut p.role, p.id == PORT_C) {
                *ipv6 = Some(Self::C6);
            }
        }
        s.config.overlays.push(OverlayConfig {
            network: NetworkId(1),
            vni: 4096,
            remotes: vec![RemoteEndpoint {
                mac: Self::mac(Self::R),
                ipv4: Self::R,
                ipv6: Some(Self::R6),
                vtep: Self::VTEP,
            }],
        });
        s
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Self::new()
    }
}

/// Owned frame buffers with headroom, for running test frames through a worker.
#[derive(Debug, Default)]
pub struct Frames {
    bufs: Vec<(Vec<u8>, usize, PortId)>,
}

impl Frames {
    /// No frames.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a frame arriving on `ingress`.
    pub fn push(&mut self, ingress: PortId, frame: &[u8]) -> &mut Self {
        let mut b = vec![0u8; HEADROOM + frame.len() + 64];
        b[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        self.bufs.push((b, frame.len(), ingress));
        self
    }

    /// Runs the frames as one batch (at most `MAX_BATCH`) and returns each verdict with the
    /// frame's bytes afterwards.
    pub fn run(&mut self, worker: &mut Worker, now: Millis) -> Vec<(Verdict, Vec<u8>)> {
        let mut batch = Batch::new();
        for (buf, len, ingress) in self.bufs.iter_mut() {
            let meta = Meta {
                ingress: *ingress,
                ..Meta::default()
            };
            if let Some(f) = Frame::new(buf, HEADROOM, *len, meta) {
                if batch.push(f).is_err() {
                    break;
                }
            }
        }
        worker.process(&mut batch, now);
        batch
            .frames()
            .iter()
            .map(|f| (f.meta.verdict, f.data().to_vec()))
            .collect()
    }
}

/// Runs one frame through `worker`.
pub fn run_one(
    worker: &mut Worker,
    ingress: PortId,
    frame: &[u8],
    now: Millis,
) -> (Verdict, Vec<u8>) {
    let mut out = Frames::new().push(ingress, frame).run(worker, now);
    out.pop().unwrap_or((Verdict::Pending, Vec::new()))
}

/// The fuzz target's body: `data` is read as records `[port, len_hi, len_lo, frame...]`, each
/// frame run through one worker of `Scenario::nat66` (v4 and v6; state carries over, so replies meet flows), with
/// housekeeping between records. Every frame must end with a verdict; nothing may panic.
pub fn fuzz_frames(data: &[u8]) {
    let Ok(dp) = crate::pipeline::Dataplane::new(&Scenario::nat66(false).config) else {
        return;
    };
    let mut w = dp.worker();
    let mut rest = data;
    let mut now = Millis(1_000_000);
    while let [port, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (frame, next) = tail.split_at(len);
        let (verdict, _) = run_one(&mut w, PortId(u16::from(*port % 8)), frame, now);
        assert_ne!(verdict, Verdict::Pending, "every frame ends with a verdict");
        now = now.plus_secs(u32::from(*port / 8));
        dp.housekeeping(now);
        rest = next;
    }
}

/// The GSO kinds a record of [`fuzz_overlay`] picks from.
const FUZZ_GSO: [GsoType; 4] = [
    GsoType::None,
    GsoType::TcpV4,
    GsoType::TcpV6,
    GsoType::UdpL4,
];

/// The fuzz target `overlay`'s body: `data` is read as records `[port, kind, size_hi, size_lo,
/// csum_start, csum_offset, len_hi, len_lo, frame...]`, each frame run through one worker of
/// `Scenario::overlay` with the offload state the record says (GSO kind `kind % 4` of
/// [`FUZZ_GSO`] and size, checksum partial at bit 2, verified at bit 3), then handled as the
/// runtime handles its verdict: a tunnelled super-frame packed into UDP GSO frames and each of
/// those cut into datagrams, a split datagram's parts run through the worker again. Every frame
/// must end with a verdict; nothing may panic. Returns the number of wrapped datagrams cut.
pub fn fuzz_overlay(data: &[u8]) -> usize {
    let Ok(dp) = crate::pipeline::Dataplane::new(&Scenario::overlay().config) else {
        return 0;
    };
    let mut w = dp.worker();
    let now = Millis(1_000_000);
    // The remote VTEP's MAC first, so that frames to R are wrapped.
    let learn = arp_reply(
        Scenario::VTEP_MAC,
        Scenario::VTEP,
        Scenario::UP_MAC,
        Scenario::UP,
    );
    run_one(&mut w, UPLINK, &learn, now);
    let mut packed = vec![0u8; udp_gso::MAX_FRAME];
    let mut cut = 0;
    let mut rest = data;
    while let [port, kind, s_hi, s_lo, start, offset, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        let meta = Meta {
            ingress: PortId(u16::from(*port % 8)),
            offload: Offload {
                gso: FUZZ_GSO[usize::from(kind % 4)],
                gso_size: u16::from_be_bytes([*s_hi, *s_lo]),
                csum_partial: kind & 4 != 0,
                data_valid: kind & 8 != 0,
                csum_start: u16::from(*start),
                csum_offset: u16::from(*offset),
                ..Offload::default()
            },
            ..Meta::default()
        };
        let mut buf = vec![0u8; HEADROOM + frame.len()];
        buf[HEADROOM..].copy_from_slice(frame);
        let mut batch = Batch::new();
        let Some(f) = Frame::new(&mut buf, HEADROOM, frame.len(), meta) else {
            continue;
        };
        if batch.push(f).is_err() {
            continue;
        }
        w.process(&mut batch, now);
        for f in batch.frames() {
            assert_ne!(
                f.meta.verdict,
                Verdict::Pending,
                "every frame ends with a verdict"
            );
            if f.meta.offload.gso.is_tunnel() {
                let _ = udp_gso::each_udp_frame(f, &mut packed, |p| {
                    udp_gso::each_datagram(p, |_| cut += 1);
                });
            }
        }
        udp_gso::split_unjoined(&mut w, &batch, now, |_, one, _| {
            for f in one.frames() {
                assert_ne!(
                    f.meta.verdict,
                    Verdict::Pending,
                    "every part ends with a verdict"
                );
            }
        });
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One record of [`fuzz_overlay`]'s input.
    fn record(port: PortId, kind: u8, size: u16, csum: (u8, u8), frame: &[u8]) -> Vec<u8> {
        let mut r = vec![port.0 as u8, kind];
        r.extend(size.to_be_bytes());
        r.extend([csum.0, csum.1]);
        r.extend((frame.len() as u16).to_be_bytes());
        r.extend(frame);
        r
    }

    #[test]
    fn the_overlay_fuzz_body_wraps_super_frames_and_takes_any_bytes() {
        let c_to_r = |ip: Vec<u8>| {
            eth(
                Scenario::mac(Scenario::R),
                Scenario::mac(Scenario::C),
                0x0800,
                &ip,
            )
        };
        let payload = vec![0x5a; 4000];
        let u = udp(Scenario::C, 4000, Scenario::R, 443, &payload);
        let t = tcp(Scenario::C, 40000, Scenario::R, 5201, 0x10, &payload);
        // C's UDP super-frame (4 datagrams of 1200 bytes at most) and TCP super-frame (3
        // segments of 1400) are wrapped and cut; garbage from the uplink is dropped.
        let mut data = record(PORT_C, 3 | 4, 1200, (34, 6), &c_to_r(u));
        data.extend(record(PORT_C, 1 | 4, 1400, (34, 16), &c_to_r(t)));
        data.extend(record(UPLINK, 3, 7, (0, 0), &[0xff; 90]));
        assert_eq!(fuzz_overlay(&data), 4 + 3);
        assert_eq!(fuzz_overlay(&data[..data.len() / 2]), 4);
    }

    proptest! {
        /// The fuzz target `overlay` on arbitrary input.
        #[test]
        fn overlay_fuzz_target_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            fuzz_overlay(&data);
        }

        /// The fuzz target `overlay` on C's super-frames with flipped bytes: the offload state
        /// (GSO kind and size, checksum offsets) and the headers.
        #[test]
        fn overlay_fuzz_target_on_mutated_super_frames(
            flips in proptest::collection::vec((0usize..2, 0usize..100, any::<u8>()), 0..6),
        ) {
            let c_to_r = |ip: Vec<u8>| {
                eth(Scenario::mac(Scenario::R), Scenario::mac(Scenario::C), 0x0800, &ip)
            };
            let payload = vec![0x33; 2500];
            let mut items = [
                record(PORT_C, 3 | 4, 1000, (34, 6), &c_to_r(udp(Scenario::C, 1, Scenario::R, 2, &payload))),
                record(PORT_C, 1 | 4, 1000, (34, 16), &c_to_r(tcp(Scenario::C, 1, Scenario::R, 2, 0x10, &payload))),
            ];
            for (i, at, val) in flips {
                items[i][at] ^= val;
            }
            fuzz_overlay(&items.concat());
        }
    }
}
