//! ICMP echo: answered in place for the gateway and the DNS address, carried by unprivileged
//! ping sockets (SOCK_DGRAM, IPPROTO_ICMP) for other hosts.
#![forbid(unsafe_code)]

use sluice_dataplane::wire::{icmpv4, Icmpv4Packet, IPPROTO_ICMP};

use crate::counters::Drop;
use crate::frame::{ipv4_headers, Ends, L4_AT};

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

/// Writes an echo message (`msg_type` request or reply) with `echo` into `buf[L4_AT..]`
/// without the IP headers; returns its length.
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

/// Builds the full echo-reply frame for the guest in `out`; returns its length.
pub fn reply_frame(out: &mut [u8], ends: &Ends, echo: &Echo<'_>) -> usize {
    let len = write_echo(&mut out[L4_AT..], icmpv4::ECHO_REPLY, echo);
    ipv4_headers(out, ends, IPPROTO_ICMP, len, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dataplane::wire::{EthernetFrame, Ipv4Packet, MacAddr};
    use std::net::Ipv4Addr;

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
            src: Ipv4Addr::new(10, 0, 2, 2),
            dst: Ipv4Addr::new(10, 0, 2, 100),
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
