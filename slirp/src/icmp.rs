//! ICMP echo: answered in place for the gateway and the DNS address, carried by unprivileged
//! ping sockets (SOCK_DGRAM, IPPROTO_ICMP) for other hosts.
#![forbid(unsafe_code)]

use std::net::IpAddr;

use sluice_dataplane::wire::{icmpv4, icmpv6, Icmpv4Packet, Icmpv6Packet};
use sluice_dataplane::wire::{IPPROTO_ICMP, IPPROTO_ICMPV6};

use crate::counters::Drop;
use crate::frame::{ip_headers, Ends};

/// An echo request or reply, borrowed from a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo<'a> {
    /// The identifier (the guest's, or the ping socket's on replies from the host).
    pub ident: u16,
    /// The sequence number.
    pub seq: u16,
    /// The data after the header.
    pub data: &'a [u8],
}

/// Reads an echo message of `msg_type` (request from the guest, reply from a ping socket);
/// other ICMP messages are [`Drop::Unsupported`], bad ones [`Drop::Malformed`].
pub fn parse_echo(icmp: &[u8], msg_type: u8) -> Result<Echo<'_>, Drop> {
    let p = Icmpv4Packet::new_checked(icmp).map_err(|_| Drop::Malformed)?;
    if p.msg_type() != msg_type || p.code() != 0 {
        return Err(Drop::Unsupported);
    }
    if msg_type == icmpv4::ECHO_REQUEST && !p.verify_checksum() {
        return Err(Drop::Malformed);
    }
    Ok(Echo {
        ident: p.echo_ident(),
        seq: p.echo_seq(),
        data: &icmp[icmpv4::HEADER_LEN..],
    })
}

/// Reads an ICMPv6 echo message of `msg_type` (the checksum is the caller's: it needs the
/// addresses); other messages are [`Drop::Unsupported`], bad ones [`Drop::Malformed`].
pub fn parse_echo6(icmp: &[u8], msg_type: u8) -> Result<Echo<'_>, Drop> {
    let p = Icmpv6Packet::new_checked(icmp).map_err(|_| Drop::Malformed)?;
    if p.msg_type() != msg_type || p.code() != 0 {
        return Err(Drop::Unsupported);
    }
    Ok(Echo {
        ident: p.echo_ident(),
        seq: p.echo_seq(),
        data: &icmp[icmpv6::HEADER_LEN..],
    })
}

/// The echo types of the family of `ip`: (request, reply).
pub fn echo_types(ip: IpAddr) -> (u8, u8) {
    if ip.is_ipv6() {
        (icmpv6::ECHO_REQUEST, icmpv6::ECHO_REPLY)
    } else {
        (icmpv4::ECHO_REQUEST, icmpv4::ECHO_REPLY)
    }
}

/// Writes an echo message (`msg_type` request or reply) with `echo` into `buf` without the
/// IP headers; returns its length. The checksum is ICMPv4's (an ICMPv6 message gets its own
/// from the kernel of a ping socket, or from [`reply_frame`]).
pub fn write_echo(buf: &mut [u8], msg_type: u8, echo: &Echo<'_>) -> usize {
    let len = icmpv4::HEADER_LEN + echo.data.len();
    buf[icmpv4::HEADER_LEN..len].copy_from_slice(echo.data);
    let mut p = Icmpv4Packet::new_unchecked(&mut buf[..len]);
    p.set_msg_type(msg_type);
    p.set_code(0);
    p.set_echo_ident(echo.ident);
    p.set_echo_seq(echo.seq);
    p.fill_checksum();
    len
}

/// Builds the full echo-reply frame (ICMP or ICMPv6 by the family of `ends`) for the guest in
/// `out`; returns its length.
pub fn reply_frame(out: &mut [u8], ends: &Ends, echo: &Echo<'_>) -> usize {
    let at = ends.l4_at();
    let len = write_echo(&mut out[at..], echo_types(ends.dst).1, echo);
    let proto = match (ends.src, ends.dst) {
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            Icmpv6Packet::new_unchecked(&mut out[at..at + len]).fill_checksum(src, dst);
            IPPROTO_ICMPV6
        }
        _ => IPPROTO_ICMP,
    };
    ip_headers(out, ends, proto, len, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dataplane::wire::{EthernetFrame, Ipv4Packet, Ipv6Packet, MacAddr};
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn request_round_trips_into_a_reply() {
        let mut req = vec![0u8; 64];
        let echo = Echo {
            ident: 7,
            seq: 3,
            data: b"hello ping",
        };
        let n = write_echo(&mut req, icmpv4::ECHO_REQUEST, &echo);
        let parsed = parse_echo(&req[..n], icmpv4::ECHO_REQUEST).unwrap();
        assert_eq!(parsed, echo);
        let ends = Ends {
            src_mac: MacAddr([0x52, 0x55, 10, 0, 2, 2]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            src: Ipv4Addr::new(10, 0, 2, 2).into(),
            dst: Ipv4Addr::new(10, 0, 2, 100).into(),
        };
        let mut out = vec![0u8; 200];
        let len = reply_frame(&mut out, &ends, &parsed);
        let eth = EthernetFrame::new_checked(&out[..len]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(parse_echo(ip.payload(), icmpv4::ECHO_REPLY).unwrap(), echo);
    }

    #[test]
    fn v6_reply_frame_has_a_right_checksum() {
        let echo = Echo {
            ident: 9,
            seq: 4,
            data: b"six",
        };
        let (gw, guest): (Ipv6Addr, Ipv6Addr) =
            ("fd00::2".parse().unwrap(), "fd00::64".parse().unwrap());
        let ends = Ends {
            src_mac: MacAddr([0x52, 0x55, 10, 0, 2, 2]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            src: gw.into(),
            dst: guest.into(),
        };
        let mut out = vec![0u8; 200];
        let len = reply_frame(&mut out, &ends, &echo);
        let eth = EthernetFrame::new_checked(&out[..len]).unwrap();
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ip.next_header(), IPPROTO_ICMPV6);
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(gw, guest));
        assert_eq!(parse_echo6(ip.payload(), icmpv6::ECHO_REPLY), Ok(echo));
        assert_eq!(
            parse_echo6(ip.payload(), icmpv6::ECHO_REQUEST),
            Err(Drop::Unsupported)
        );
        assert_eq!(parse_echo6(&[0u8; 3], 0), Err(Drop::Malformed));
    }

    #[test]
    fn bad_requests_are_drops() {
        let mut req = vec![0u8; 16];
        let n = write_echo(
            &mut req,
            icmpv4::ECHO_REQUEST,
            &Echo {
                ident: 1,
                seq: 1,
                data: b"x",
            },
        );
        req[8] ^= 0xff;
        assert_eq!(
            parse_echo(&req[..n], icmpv4::ECHO_REQUEST),
            Err(Drop::Malformed)
        );
        assert_eq!(
            parse_echo(&req[..3], icmpv4::ECHO_REQUEST),
            Err(Drop::Malformed)
        );
        req[0] = icmpv4::DEST_UNREACHABLE;
        assert_eq!(
            parse_echo(&req[..n], icmpv4::ECHO_REQUEST),
            Err(Drop::Unsupported)
        );
    }
}
