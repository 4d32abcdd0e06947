//! ARP for IPv4 over Ethernet (RFC 826), the only kind the gateway answers.

use std::net::Ipv4Addr;

use super::{read_4, read_mac, read_u16, write_mac, write_u16, MacAddr, WireError};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// Operation: who has `target_ip`?
pub const OP_REQUEST: u16 = 1;
/// Operation: `sender_ip` is at `sender_mac`.
pub const OP_REPLY: u16 = 2;

const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;

/// A zero-copy view of an Ethernet/IPv4 ARP packet, so the gateway can answer requests for its
/// address and the bridge can learn from them without copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps `buffer` without any check; accessors may panic if it is shorter than 28 bytes.
    pub fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps `buffer` after checking it holds 28 bytes of Ethernet/IPv4 ARP (hardware type 1,
    /// protocol 0x0800, lengths 6 and 4). Trailing bytes (Ethernet padding) are allowed.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(WireError::Truncated("ARP"));
        }
        if read_u16(b, 0) != HTYPE_ETHERNET
            || read_u16(b, 2) != PTYPE_IPV4
            || b[4] != 6
            || b[5] != 4
        {
            return Err(WireError::Malformed("ARP"));
        }
        Ok(ArpPacket { buffer })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The operation ([`OP_REQUEST`], [`OP_REPLY`] or something the gateway ignores).
    #[inline]
    pub fn operation(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 6)
    }

    /// Sender hardware address.
    #[inline]
    pub fn sender_mac(&self) -> MacAddr {
        read_mac(self.buffer.as_ref(), 8)
    }

    /// Sender protocol address.
    #[inline]
    pub fn sender_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_4(self.buffer.as_ref(), 14))
    }

    /// Target hardware address.
    #[inline]
    pub fn target_mac(&self) -> MacAddr {
        read_mac(self.buffer.as_ref(), 18)
    }

    /// Target protocol address.
    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_4(self.buffer.as_ref(), 24))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes the fixed Ethernet/IPv4 fields (types and lengths), for building a packet in a
    /// fresh buffer wrapped with [`ArpPacket::new_unchecked`].
    #[inline]
    pub fn init_ethernet_ipv4(&mut self) {
        let b = self.buffer.as_mut();
        write_u16(b, 0, HTYPE_ETHERNET);
        write_u16(b, 2, PTYPE_IPV4);
        b[4] = 6;
        b[5] = 4;
    }

    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, op: u16) {
        write_u16(self.buffer.as_mut(), 6, op);
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_sender_mac(&mut self, mac: MacAddr) {
        write_mac(self.buffer.as_mut(), 8, mac);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_sender_ip(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[14..18].copy_from_slice(&ip.octets());
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_target_mac(&mut self, mac: MacAddr) {
        write_mac(self.buffer.as_mut(), 18, mac);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_target_ip(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[24..28].copy_from_slice(&ip.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse() {
        let mut buf = [0u8; 42];
        let mut p = ArpPacket::new_unchecked(&mut buf[..]);
        p.init_ethernet_ipv4();
        p.set_operation(OP_REQUEST);
        p.set_sender_mac(MacAddr([2, 0x42, 0xac, 0x11, 0, 2]));
        p.set_sender_ip(Ipv4Addr::new(172, 17, 0, 2));
        p.set_target_mac(MacAddr::default());
        p.set_target_ip(Ipv4Addr::new(172, 17, 0, 1));
        assert_eq!(
            &buf[..8],
            &[0, 1, 8, 0, 6, 4, 0, 1],
            "fixed fields on the wire"
        );
        let p = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!(
            p.sender_mac(),
            MacAddr::from_ipv4(Ipv4Addr::new(172, 17, 0, 2))
        );
        assert_eq!(p.sender_ip(), Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(p.target_mac(), MacAddr::default());
        assert_eq!(p.target_ip(), Ipv4Addr::new(172, 17, 0, 1));
    }

    #[test]
    fn rejects_other_kinds_and_short_buffers() {
        let mut buf = [0u8; 28];
        ArpPacket::new_unchecked(&mut buf[..]).init_ethernet_ipv4();
        assert!(ArpPacket::new_checked(&buf[..]).is_ok());
        assert_eq!(
            ArpPacket::new_checked(&buf[..27]),
            Err(WireError::Truncated("ARP"))
        );
        for (i, v) in [(1, 6), (2, 0x86), (4, 8), (5, 16)] {
            let mut bad = buf;
            bad[i] = v;
            assert_eq!(
                ArpPacket::new_checked(&bad[..]),
                Err(WireError::Malformed("ARP"))
            );
        }
    }
}
