//! The flow map's key and value as the BPF programs see them: `#[repr(C)]` structs, their byte
//! encodings, and the field offsets the programs use (all from `offset_of!`, in one place).

use std::mem::{offset_of, size_of};
use std::net::IpAddr;

use crate::{FlowAction, FlowKey, FlowUsage};

/// The map key: addresses zero-padded to 16 bytes, ports in network order as on the wire.
#[repr(C)]
pub(crate) struct RawKey {
    ifindex: u32,
    src: [u8; 16],
    dst: [u8; 16],
    sport: [u8; 2],
    dport: [u8; 2],
    proto: u8,
    family: u8,
    pad: [u8; 2],
    /// A decapsulating key of an IPv6 inner flow's VXLAN header VNI word (see
    /// `tunnel::FAMILY_VXLAN6`); zero in every other key.
    vni: [u8; 4],
}

/// Key offsets and size, for the programs.
pub(crate) mod key {
    use super::*;
    pub const SIZE: usize = size_of::<RawKey>();
    pub const IFINDEX: i16 = offset_of!(RawKey, ifindex) as i16;
    pub const SRC: i16 = offset_of!(RawKey, src) as i16;
    pub const DST: i16 = offset_of!(RawKey, dst) as i16;
    /// Source then destination port: one 4-byte load from the L4 header fills both.
    pub const PORTS: i16 = offset_of!(RawKey, sport) as i16;
    pub const DPORT: i16 = offset_of!(RawKey, dport) as i16;
    pub const PROTO: i16 = offset_of!(RawKey, proto) as i16;
    pub const FAMILY: i16 = offset_of!(RawKey, family) as i16;
    pub const VNI: i16 = offset_of!(RawKey, vni) as i16;
}

/// `family` of an IPv4 key.
pub(crate) const FAMILY_V4: u8 = 4;
/// `family` of an IPv6 key.
pub(crate) const FAMILY_V6: u8 = 6;

/// `family` of a VXLAN decapsulation key (an IPv4 frame inside VXLAN over IPv4 arriving on
/// the uplink): `src` holds the inner source, then the outer source (the remote VTEP), then
/// the VXLAN header's VNI word; `dst` the inner destination, then the outer destination (our
/// VTEP); ports and protocol are the inner frame's.
pub(crate) const FAMILY_VXLAN4: u8 = 0x44;

/// The map value: counters the TC program updates, then the action it applies.
#[repr(C)]
pub(crate) struct RawValue {
    packets: u64,
    bytes: u64,
    last_used_ns: u64,
    egress_ifindex: u32,
    flags: u32,
    /// Destination then source MAC: the first 12 bytes of the Ethernet header in one store.
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    nat_sport: [u8; 2],
    nat_dport: [u8; 2],
    snat_addr: [u8; 16],
    dnat_addr: [u8; 16],
}

/// Value offsets, size and flag bits, for the programs.
pub(crate) mod value {
    use super::*;
    pub const SIZE: usize = size_of::<RawValue>();
    pub const PACKETS: i16 = offset_of!(RawValue, packets) as i16;
    pub const BYTES: i16 = offset_of!(RawValue, bytes) as i16;
    pub const LAST_USED: i16 = offset_of!(RawValue, last_used_ns) as i16;
    pub const EGRESS: i16 = offset_of!(RawValue, egress_ifindex) as i16;
    pub const FLAGS: i16 = offset_of!(RawValue, flags) as i16;
    pub const MACS: i16 = offset_of!(RawValue, eth_dst) as i16;
    pub const NAT_SPORT: i16 = offset_of!(RawValue, nat_sport) as i16;
    pub const NAT_DPORT: i16 = offset_of!(RawValue, nat_dport) as i16;
    pub const SNAT_ADDR: i16 = offset_of!(RawValue, snat_addr) as i16;
    pub const DNAT_ADDR: i16 = offset_of!(RawValue, dnat_addr) as i16;
    /// `flags`: decrement the TTL / hop limit.
    pub const DEC_TTL: i32 = 1;
    /// `flags`: rewrite the source address and port.
    pub const SNAT: i32 = 2;
    /// `flags`: rewrite the destination address and port.
    pub const DNAT: i32 = 4;
    /// `flags`: wrap the frame in VXLAN over IPv4 (the outer MACs in `MACS`, the outer
    /// IPv4/UDP/VXLAN headers' template at `OUTER`).
    pub const ENCAP: i32 = 8;
    /// `flags`: strip the outer 50 bytes of a VXLAN frame (the inner MACs in `MACS`).
    pub const DECAP: i32 = 16;
    /// `flags`: `egress_ifindex` is a veth whose peer is in another namespace: the frame goes
    /// straight to that peer's receive path (`bpf_redirect_peer`).
    pub const PEER: i32 = 32;
    /// An encapsulating entry's outer IPv4 + UDP + VXLAN headers (36 bytes, lengths and IPv4
    /// checksum zero), in the place the NAT fields take in other entries.
    pub const OUTER: i16 = NAT_SPORT;
    /// Length of [`OUTER`].
    pub const OUTER_LEN: usize = 36;
    const _: () = assert!(OUTER as usize + OUTER_LEN == SIZE);
}

/// The address bytes zero-padded to 16, and the key family.
fn addr16(ip: IpAddr) -> ([u8; 16], u8) {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            out[..4].copy_from_slice(&v4.octets());
            (out, FAMILY_V4)
        }
        IpAddr::V6(v6) => (v6.octets(), FAMILY_V6),
    }
}

/// Writes `bytes` at `off` of `buf`.
fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

impl RawKey {
    /// The key of `k`.
    pub(crate) fn new(k: &FlowKey) -> RawKey {
        let (src, family) = addr16(k.src);
        RawKey {
            ifindex: k.ifindex,
            src,
            dst: addr16(k.dst).0,
            sport: k.sport.to_be_bytes(),
            dport: k.dport.to_be_bytes(),
            proto: k.proto,
            family,
            pad: [0; 2],
            vni: [0; 4],
        }
    }

    /// The bytes the map stores.
    pub(crate) fn to_bytes(&self) -> [u8; key::SIZE] {
        let mut b = [0u8; key::SIZE];
        put(
            &mut b,
            offset_of!(RawKey, ifindex),
            &self.ifindex.to_ne_bytes(),
        );
        put(&mut b, offset_of!(RawKey, src), &self.src);
        put(&mut b, offset_of!(RawKey, dst), &self.dst);
        put(&mut b, offset_of!(RawKey, sport), &self.sport);
        put(&mut b, offset_of!(RawKey, dport), &self.dport);
        put(&mut b, offset_of!(RawKey, proto), &[self.proto]);
        put(&mut b, offset_of!(RawKey, family), &[self.family]);
        put(&mut b, offset_of!(RawKey, pad), &self.pad);
        put(&mut b, offset_of!(RawKey, vni), &self.vni);
        b
    }
}

impl RawValue {
    /// The value of `a`, counters zero and last use `now_ns` (so that a fresh entry is not aged
    /// out before its first frame).
    pub(crate) fn new(a: &FlowAction, now_ns: u64) -> RawValue {
        let mut flags = 0;
        if a.decrement_ttl {
            flags |= value::DEC_TTL;
        }
        let (snat_addr, nat_sport) = a.snat.map_or(([0; 16], 0), |(ip, p)| (addr16(ip).0, p));
        let (dnat_addr, nat_dport) = a.dnat.map_or(([0; 16], 0), |(ip, p)| (addr16(ip).0, p));
        if a.snat.is_some() {
            flags |= value::SNAT;
        }
        if a.dnat.is_some() {
            flags |= value::DNAT;
        }
        RawValue {
            packets: 0,
            bytes: 0,
            last_used_ns: now_ns,
            egress_ifindex: a.egress_ifindex,
            flags: flags as u32,
            eth_dst: a.eth_dst,
            eth_src: a.eth_src,
            nat_sport: nat_sport.to_be_bytes(),
            nat_dport: nat_dport.to_be_bytes(),
            snat_addr,
            dnat_addr,
        }
    }

    /// The bytes the map stores.
    pub(crate) fn to_bytes(&self) -> [u8; value::SIZE] {
        let mut b = [0u8; value::SIZE];
        put(
            &mut b,
            offset_of!(RawValue, packets),
            &self.packets.to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(RawValue, bytes),
            &self.bytes.to_ne_bytes(),
        );
        let last = self.last_used_ns.to_ne_bytes();
        put(&mut b, offset_of!(RawValue, last_used_ns), &last);
        let egress = self.egress_ifindex.to_ne_bytes();
        put(&mut b, offset_of!(RawValue, egress_ifindex), &egress);
        put(
            &mut b,
            offset_of!(RawValue, flags),
            &self.flags.to_ne_bytes(),
        );
        put(&mut b, offset_of!(RawValue, eth_dst), &self.eth_dst);
        put(&mut b, offset_of!(RawValue, eth_src), &self.eth_src);
        put(&mut b, offset_of!(RawValue, nat_sport), &self.nat_sport);
        put(&mut b, offset_of!(RawValue, nat_dport), &self.nat_dport);
        put(&mut b, offset_of!(RawValue, snat_addr), &self.snat_addr);
        put(&mut b, offset_of!(RawValue, dnat_addr), &self.dnat_addr);
        b
    }
}

/// Adds `flag` to an encoded value's flags.
pub(crate) fn add_flag(b: &mut [u8; value::SIZE], flag: i32) {
    let at = value::FLAGS as usize;
    let flags = u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes")) | flag as u32;
    b[at..at + 4].copy_from_slice(&flags.to_ne_bytes());
}

/// The egress interface of an encoded value.
pub(crate) fn egress(b: &[u8; value::SIZE]) -> u32 {
    let at = value::EGRESS as usize;
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The counters of a value the map returned.
pub(crate) fn usage(b: &[u8; value::SIZE]) -> FlowUsage {
    let u64_at = |off: i16| {
        let off = off as usize;
        u64::from_ne_bytes(b[off..off + 8].try_into().expect("8 bytes"))
    };
    FlowUsage {
        packets: u64_at(value::PACKETS),
        bytes: u64_at(value::BYTES),
        last_used_ns: u64_at(value::LAST_USED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn layouts_have_the_sizes_and_alignment_the_programs_assume() {
        assert_eq!(key::SIZE, 48);
        assert_eq!(
            (key::SRC, key::DST, key::PORTS, key::DPORT),
            (4, 20, 36, 38)
        );
        assert_eq!((key::PROTO, key::FAMILY, key::VNI), (40, 41, 44));
        assert_eq!(value::SIZE, 80);
        assert_eq!((value::EGRESS, value::FLAGS, value::MACS), (24, 28, 32));
        assert_eq!(
            (value::NAT_SPORT, value::SNAT_ADDR, value::DNAT_ADDR),
            (44, 48, 64)
        );
        // Every word the programs load or store with one instruction is aligned to its size.
        for off in [
            key::SRC,
            key::DST,
            key::PORTS,
            value::SNAT_ADDR,
            value::DNAT_ADDR,
        ] {
            assert_eq!(off % 4, 0);
        }
    }

    #[test]
    fn ipv4_key_is_zero_padded_with_ports_in_network_order() {
        let k = FlowKey {
            ifindex: 7,
            src: Ipv4Addr::new(10, 1, 0, 2).into(),
            dst: Ipv4Addr::new(10, 2, 0, 2).into(),
            proto: 6,
            sport: 40001,
            dport: 5201,
        };
        let b = RawKey::new(&k).to_bytes();
        let mut want = [0u8; 48];
        want[..4].copy_from_slice(&7u32.to_ne_bytes());
        want[4..8].copy_from_slice(&[10, 1, 0, 2]);
        want[20..24].copy_from_slice(&[10, 2, 0, 2]);
        want[36..40].copy_from_slice(&[0x9c, 0x41, 0x14, 0x51]);
        want[40] = 6;
        want[41] = 4;
        assert_eq!(b, want);
    }

    #[test]
    fn value_carries_macs_in_header_order_and_nat_flags() {
        let v6: IpAddr = "fd00::9".parse::<Ipv6Addr>().unwrap().into();
        let a = FlowAction {
            egress_ifindex: 3,
            eth_src: [2, 0, 0, 0, 0, 1],
            eth_dst: [2, 0, 0, 0, 0, 2],
            decrement_ttl: true,
            snat: None,
            dnat: Some((v6, 8080)),
        };
        let b = RawValue::new(&a, 99).to_bytes();
        assert_eq!(
            usage(&b),
            FlowUsage {
                packets: 0,
                bytes: 0,
                last_used_ns: 99
            }
        );
        assert_eq!(&b[24..28], &3u32.to_ne_bytes());
        assert_eq!(&b[28..32], &5u32.to_ne_bytes());
        assert_eq!(&b[32..44], &[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        assert_eq!(&b[44..48], &[0, 0, 0x1f, 0x90]);
        assert_eq!(&b[48..64], &[0; 16]);
        assert_eq!(b[64], 0xfd);
        assert_eq!(b[79], 9);
    }

    #[test]
    fn a_flag_added_to_an_encoded_value_keeps_the_others() {
        let a = FlowAction {
            egress_ifindex: 11,
            eth_src: [0; 6],
            eth_dst: [0; 6],
            decrement_ttl: true,
            snat: None,
            dnat: None,
        };
        let mut b = RawValue::new(&a, 0).to_bytes();
        add_flag(&mut b, value::PEER);
        assert_eq!(&b[28..32], &33u32.to_ne_bytes());
        assert_eq!(egress(&b), 11);
    }
}
