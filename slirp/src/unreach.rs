//! Destination-unreachable errors to the guest (ICMP or ICMPv6 by the family of the flow):
//! what the host's socket learned (port closed, host or network unreachable) told the way the
//! guest's stack expects, with a quote rebuilt from the flow, since the guest's packet is gone
//! by the time the host answers. The guest matches the error to its socket by the quoted
//! addresses and the first 8 bytes of the L4 header.
#![forbid(unsafe_code)]

use std::io;
use std::net::IpAddr;

use sluice_dataplane::wire::{icmpv4, icmpv6};

use crate::frame::{ip_headers, v6, Ends, ETH_LEN};

/// How much of the quoted L4 header the errors carry (RFC 792's 8 bytes).
pub const QUOTED_L4: usize = 8;

/// Why the destination cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Nothing listens on the port.
    Port,
    /// The host does not answer.
    Host,
    /// No route to the network.
    Net,
}

impl Why {
    /// What a host socket's error says, as slirp4netns reads it.
    pub fn from_io(e: &io::Error) -> Why {
        match e.raw_os_error() {
            Some(libc::EHOSTUNREACH) => Why::Host,
            Some(libc::ENETUNREACH) => Why::Net,
            _ => Why::Port,
        }
    }

    /// (type, code) of the error in the family of `ip`.
    fn type_code(self, ip: IpAddr) -> (u8, u8) {
        match (ip.is_ipv6(), self) {
            (false, Why::Port) => (icmpv4::DEST_UNREACHABLE, icmpv4::CODE_PORT_UNREACHABLE),
            (false, Why::Host) => (icmpv4::DEST_UNREACHABLE, CODE_HOST_UNREACHABLE),
            (false, Why::Net) => (icmpv4::DEST_UNREACHABLE, CODE_NET_UNREACHABLE),
            (true, Why::Port) => (icmpv6::DEST_UNREACHABLE, icmpv6::CODE_PORT_UNREACHABLE),
            (true, Why::Host) => (icmpv6::DEST_UNREACHABLE, icmpv6::CODE_ADDR_UNREACHABLE),
            (true, Why::Net) => (icmpv6::DEST_UNREACHABLE, icmpv6::CODE_NO_ROUTE),
        }
    }
}

/// ICMPv4 destination unreachable codes the wire module does not name.
const CODE_NET_UNREACHABLE: u8 = 0;
const CODE_HOST_UNREACHABLE: u8 = 1;

/// Builds in `buf` the error from the remote to the guest (`ends`, as frames to the guest go)
/// about a packet of `proto` the guest sent it, whose first [`QUOTED_L4`] L4 bytes
/// `quote_l4` writes. Returns the frame length.
pub fn error_frame(
    buf: &mut [u8],
    ends: &Ends,
    proto: u8,
    why: Why,
    quote_l4: impl FnOnce(&mut [u8]),
) -> usize {
    let overhead = if ends.is_v6() {
        icmpv6::ERROR_OVERHEAD
    } else {
        icmpv4::ERROR_OVERHEAD
    };
    let quoted = Ends {
        src_mac: ends.dst_mac,
        dst_mac: ends.src_mac,
        src: ends.dst,
        dst: ends.src,
    };
    // The quote's own Ethernet header lands where the error's headers go, and is overwritten.
    let at = overhead - ETH_LEN;
    let end = at + ip_headers(&mut buf[at..], &quoted, proto, QUOTED_L4, 0);
    quote_l4(&mut buf[end - QUOTED_L4..end]);
    let (to, from) = (ends.dst_mac, ends.src_mac);
    let (msg_type, code) = why.type_code(ends.dst);
    match (ends.src, ends.dst) {
        (IpAddr::V4(remote), IpAddr::V4(guest)) => icmpv4::write_error(
            &mut buf[..end],
            (to, guest),
            (from, remote),
            (msg_type, code, 0),
        ),
        (remote, guest) => icmpv6::write_error(
            &mut buf[..end],
            (to, v6(guest)),
            (from, v6(remote)),
            (msg_type, code, 0),
        ),
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dataplane::wire::{EthernetFrame, Icmpv4Packet, Ipv4Packet, MacAddr};
    use std::net::Ipv4Addr;

    #[test]
    fn errors_map_and_quote() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(Why::from_io(&e(libc::ECONNREFUSED)), Why::Port);
        assert_eq!(Why::from_io(&e(libc::EHOSTUNREACH)), Why::Host);
        assert_eq!(Why::from_io(&e(libc::ENETUNREACH)), Why::Net);
        let ends = Ends {
            src_mac: MacAddr([0x52, 0x55, 10, 0, 2, 2]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            src: Ipv4Addr::new(192, 0, 2, 1).into(),
            dst: Ipv4Addr::new(10, 0, 2, 100).into(),
        };
        let mut buf = vec![0u8; 200];
        let n = error_frame(&mut buf, &ends, 1, Why::Host, |q| q.fill(0xab));
        let eth = EthernetFrame::new_checked(&buf[..n]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ip.dst(), Ipv4Addr::new(10, 0, 2, 100));
        let m = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(m.verify_checksum());
        assert_eq!((m.msg_type(), m.code()), (3, 1));
        let q = Ipv4Packet::new_checked(m.payload()).unwrap();
        assert!(q.verify_checksum());
        assert_eq!(
            (q.src(), q.dst(), q.protocol()),
            (Ipv4Addr::new(10, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 1), 1)
        );
        assert_eq!(q.payload(), &[0xab; QUOTED_L4]);
    }
}
