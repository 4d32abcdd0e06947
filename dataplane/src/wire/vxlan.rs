//! VXLAN headers (RFC 7348): the 8 bytes in front of an overlay network's Ethernet frame inside
//! a UDP datagram to port 4789. Only the I flag (a valid VNI follows) and the 24-bit VNI carry
//! meaning; every other bit is reserved, sent as 0 and ignored on receipt.

use std::hash::BuildHasher;
use std::net::Ipv4Addr;

use super::ethernet::{self, EthernetFrame, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use super::ipv4::{self, Ipv4Packet};
use super::ipv6::Ipv6Packet;
use super::udp::{self, UdpPacket};
use super::view::{at_least, view};
use super::{read_u32, write_u32, MacAddr, WireError, IPPROTO_UDP};
use crate::hash::KeyHasherBuilder;

/// Offsets of the VXLAN header's fields.
mod field {
    /// Flags byte (bit 3: I), then 24 reserved bits.
    pub const FLAGS: usize = 0;
    /// VNI (high 24 bits) and a reserved byte.
    pub const VNI: usize = 4;
}

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;

/// The IANA UDP port of VXLAN.
pub const UDP_PORT: u16 = 4789;

/// The I flag: the VNI is valid. The only flag RFC 7348 defines.
pub const FLAG_I: u8 = 0x08;

/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// Bytes an IPv4 VXLAN encapsulation puts in front of the inner frame: outer Ethernet, IPv4
/// without options, UDP and VXLAN headers.
pub const OVERHEAD_V4: usize =
    ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN + HEADER_LEN;

/// TTL of the outer IPv4 header (the kernel's vxlan default follows the host's, 64).
const OUTER_TTL: u8 = 64;

/// First UDP source port of the range encapsulations spread flows over (RFC 7348 suggests the
/// dynamic range 49152-65535).
const SRC_PORT_BASE: u16 = 49152;

view! {
    /// A zero-copy view of a VXLAN header and the inner Ethernet frame after it.
    ///
    /// After [`VxlanHeader::new_checked`] no accessor panics: the header is present (the I flag is
    /// the caller's to check, so that a missing one is counted apart from a short buffer).
    pub struct VxlanHeader;
    /// Wraps `buffer` after checking the header is present.
    checked by |b| at_least(b, HEADER_LEN, "VXLAN");
}

impl<T: AsRef<[u8]>> VxlanHeader<T> {
    /// The flags byte.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// True when the I flag says the VNI is valid (RFC 7348 requires it set).
    #[inline]
    pub fn vni_valid(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// The VXLAN network identifier.
    #[inline]
    pub fn vni(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VNI) >> 8
    }

    /// The inner Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanHeader<T> {
    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the VNI (its low 24 bits), clearing the reserved byte after it.
    #[inline]
    pub fn set_vni(&mut self, vni: u32) {
        write_u32(self.buffer.as_mut(), field::VNI, (vni & MAX_VNI) << 8);
    }

    /// Writes a whole header: the I flag, reserved bits 0, and `vni`.
    #[inline]
    pub fn emit(&mut self, vni: u32) {
        let b = self.buffer.as_mut();
        b[..HEADER_LEN].fill(0);
        self.set_flags(FLAG_I);
        self.set_vni(vni);
    }

    /// The inner Ethernet frame, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The outer headers of one IPv4 encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterV4 {
    /// The underlay next hop's MAC.
    pub dst_mac: MacAddr,
    /// This host's uplink MAC.
    pub src_mac: MacAddr,
    /// This host's VTEP (uplink) address.
    pub src: Ipv4Addr,
    /// The peer's VTEP address.
    pub dst: Ipv4Addr,
    /// UDP source port (from the inner flow, see [`source_port`]).
    pub src_port: u16,
    /// The overlay network's VNI.
    pub vni: u32,
}

/// Writes the outer Ethernet, IPv4, UDP and VXLAN headers over the first [`OVERHEAD_V4`]
/// bytes of `frame`, whose rest is the inner Ethernet frame. The UDP checksum is 0, which RFC
/// 7348 allows over IPv4; the IPv4 header checksum is computed. Fails when the frame is
/// shorter than the headers or too long for one IPv4 packet.
pub fn write_outer_v4(frame: &mut [u8], o: &OuterV4) -> Result<(), WireError> {
    let ip_len = frame
        .len()
        .checked_sub(ethernet::HEADER_LEN)
        .filter(|n| *n >= OVERHEAD_V4 - ethernet::HEADER_LEN)
        .ok_or(WireError::Truncated("VXLAN encapsulation"))?;
    let ip_len = u16::try_from(ip_len).map_err(|_| WireError::Malformed("IPv4 (length)"))?;
    let (eth, rest) = frame.split_at_mut(ethernet::HEADER_LEN);
    let mut eth = EthernetFrame::new_unchecked(eth);
    eth.set_dst(o.dst_mac);
    eth.set_src(o.src_mac);
    eth.set_ethertype(ETHERTYPE_IPV4);
    let (ip, rest) = rest.split_at_mut(ipv4::MIN_HEADER_LEN);
    let mut ip = Ipv4Packet::new_unchecked(ip);
    ip.init_header();
    ip.set_tos(0);
    ip.set_total_len(ip_len);
    ip.set_ident(0);
    ip.set_flags_frag(false, false, 0);
    ip.set_ttl(OUTER_TTL);
    ip.set_protocol(IPPROTO_UDP);
    ip.set_src(o.src);
    ip.set_dst(o.dst);
    ip.fill_checksum();
    let (udp_hdr, vxlan) = rest.split_at_mut(udp::HEADER_LEN);
    let mut udp = UdpPacket::new_unchecked(udp_hdr);
    udp.set_src_port(o.src_port);
    udp.set_dst_port(UDP_PORT);
    udp.set_len(ip_len - ipv4::MIN_HEADER_LEN as u16);
    udp.set_checksum(0);
    VxlanHeader::new_unchecked(vxlan).emit(o.vni);
    Ok(())
}

/// The UDP source port for an encapsulation of `inner`, from a hash of its Ethernet addresses
/// and, for IPv4 and IPv6 (without extension headers), its addresses and first four L4 bytes
/// (the ports of TCP and UDP), so that one flow keeps one port and receivers can spread flows
/// over queues (RFC 7348, section 5).
pub fn source_port(inner: &[u8]) -> u16 {
    let mut key = [0u64; 3];
    if let Ok(eth) = EthernetFrame::new_checked(inner) {
        key[0] = eth.dst().to_u64() ^ (eth.src().to_u64() << 16);
        let l4 = match eth.ethertype() {
            ETHERTYPE_IPV4 => Ipv4Packet::new_checked(eth.payload()).ok().map(|ip| {
                key[1] = (u64::from(u32::from(ip.src())) << 32) | u64::from(u32::from(ip.dst()));
                ip.payload().get(..4).map(|l4| read_u32(l4, 0))
            }),
            ETHERTYPE_IPV6 => Ipv6Packet::new_checked(eth.payload()).ok().map(|ip| {
                let both = u128::from(ip.src()) ^ u128::from(ip.dst()).rotate_left(64);
                key[1] = (both as u64) ^ ((both >> 64) as u64).rotate_left(32);
                ip.payload().get(..4).map(|l4| read_u32(l4, 0))
            }),
            _ => None,
        };
        key[2] = l4.flatten().map_or(0, u64::from);
    }
    let h = KeyHasherBuilder::default().hash_one(key);
    SRC_PORT_BASE + (h % u64::from(u16::MAX - SRC_PORT_BASE + 1)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_rfc_layout() {
        // Flags 0x08, reserved, VNI 0x123456, reserved; then one inner byte.
        let b = [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0x00, 0xaa];
        let h = VxlanHeader::new_checked(&b[..]).unwrap();
        assert!(h.vni_valid());
        assert_eq!(h.vni(), 0x12_3456);
        assert_eq!(h.payload(), &[0xaa]);
        let no_i = [0x00, 0, 0, 0, 0, 0x10, 0, 0];
        assert!(!VxlanHeader::new_checked(&no_i[..]).unwrap().vni_valid());
    }

    #[test]
    fn short_buffers_are_truncated() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                VxlanHeader::new_checked(&[0x08u8; 8][..n]),
                Err(WireError::Truncated("VXLAN"))
            );
        }
    }

    #[test]
    fn emit_clears_reserved_bits_and_masks_the_vni() {
        let mut b = [0xffu8; 9];
        let mut h = VxlanHeader::new_checked(&mut b[..]).unwrap();
        h.emit(0x0100_1000);
        h.payload_mut()[0] = 1;
        assert_eq!(b, [0x08, 0, 0, 0, 0x00, 0x10, 0x00, 0, 1]);
        let h = VxlanHeader::new_unchecked(&b[..]);
        assert_eq!((h.flags(), h.vni()), (FLAG_I, 0x1000));
    }

    #[test]
    fn outer_headers_are_a_valid_udp_packet_to_4789() {
        let inner = [0x5au8; 60];
        let mut f = vec![0xffu8; OVERHEAD_V4];
        f.extend_from_slice(&inner);
        let o = OuterV4 {
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(192, 0, 2, 2),
            src_port: 50000,
            vni: 4096,
        };
        write_outer_v4(&mut f, &o).unwrap();
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(
            (eth.dst(), eth.src(), eth.ethertype()),
            (o.dst_mac, o.src_mac, 0x0800)
        );
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(
            (ip.src(), ip.dst(), ip.protocol(), ip.ttl()),
            (o.src, o.dst, 17, 64)
        );
        assert_eq!(usize::from(ip.total_len()), f.len() - 14);
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (u.src_port(), u.dst_port(), u.checksum()),
            (50000, UDP_PORT, 0)
        );
        let v = VxlanHeader::new_checked(u.payload()).unwrap();
        assert!(v.vni_valid());
        assert_eq!(v.vni(), 4096);
        assert_eq!(v.payload(), &inner[..]);
        assert!(write_outer_v4(&mut [0u8; OVERHEAD_V4 - 1], &o).is_err());
    }

    #[test]
    fn source_ports_stay_in_the_dynamic_range_and_follow_the_flow() {
        let mut a = [0u8; 60];
        a[12..14].copy_from_slice(&[0x08, 0x00]);
        a[14] = 0x45;
        a[16..18].copy_from_slice(&46u16.to_be_bytes());
        let mut b = a;
        b[34] = 1;
        let (pa, pb) = (source_port(&a), source_port(&b));
        assert!(pa >= SRC_PORT_BASE && pb >= SRC_PORT_BASE);
        assert_eq!(pa, source_port(&a));
        assert_ne!(pa, pb, "another L4 port, another outer source port");
        assert!(source_port(&[]) >= SRC_PORT_BASE);
        // IPv6: the addresses and the L4 ports count too.
        let mut a6 = [0u8; 80];
        a6[12..14].copy_from_slice(&[0x86, 0xdd]);
        a6[14] = 0x60;
        a6[18..20].copy_from_slice(&20u16.to_be_bytes());
        let mut b6 = a6;
        b6[54] = 1;
        let mut c6 = a6;
        c6[37] = 1;
        let (pa, pb, pc) = (source_port(&a6), source_port(&b6), source_port(&c6));
        assert_ne!(pa, pb, "another L4 port, another outer source port");
        assert_ne!(pa, pc, "another address, another outer source port");
    }
}
