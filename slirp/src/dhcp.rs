//! DHCP for guests that are not configured with `-c`: every DISCOVER gets an OFFER and every
//! REQUEST an ACK of the one guest address (10.0.2.100), as libslirp does for slirp4netns.
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;

use crate::config::NetConfig;
use crate::counters::Drop;

/// The server's UDP port.
pub const SERVER_PORT: u16 = 67;
/// The client's UDP port.
pub const CLIENT_PORT: u16 = 68;

const OP_REPLY: u8 = 2;
const FIXED_LEN: usize = 236;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const OPTIONS_AT: usize = FIXED_LEN + 4;
const XID: std::ops::Range<usize> = 4..8;
const FLAGS: std::ops::Range<usize> = 10..12;
const YIADDR: std::ops::Range<usize> = 16..20;
const SIADDR: std::ops::Range<usize> = 20..24;
const CHADDR: std::ops::Range<usize> = 28..44;
const OPT_PAD: u8 = 0;
const OPT_END: u8 = 255;
const OPT_MSG_TYPE: u8 = 53;
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
/// The lease the guest is given, in seconds.
pub const LEASE_SECS: u32 = 86400;
/// The smallest BOOTP message (RFC 1542 asks replies to be padded to it).
const MIN_LEN: usize = 300;

/// The message type option of a client message.
fn message_type(msg: &[u8]) -> Result<u8, Drop> {
    if msg.len() < OPTIONS_AT || msg[0] != 1 || msg[OPTIONS_AT - 4..OPTIONS_AT] != MAGIC {
        return Err(Drop::Malformed);
    }
    let mut opts = &msg[OPTIONS_AT..];
    while let Some((&code, rest)) = opts.split_first() {
        match code {
            OPT_PAD => opts = rest,
            OPT_END => break,
            _ => {
                let (&len, rest) = rest.split_first().ok_or(Drop::Malformed)?;
                let value = rest.get(..usize::from(len)).ok_or(Drop::Malformed)?;
                if code == OPT_MSG_TYPE && len == 1 {
                    return Ok(value[0]);
                }
                opts = &rest[usize::from(len)..];
            }
        }
    }
    Err(Drop::Malformed)
}

/// Answers a client message (a UDP payload to port 67) into `out`: OFFER for DISCOVER, ACK
/// for REQUEST; `Ok(None)` for the other types (RELEASE, INFORM, ...).
pub fn reply(msg: &[u8], cfg: &NetConfig, out: &mut [u8]) -> Result<Option<usize>, Drop> {
    let answer = match message_type(msg)? {
        DISCOVER => OFFER,
        REQUEST => ACK,
        _ => return Ok(None),
    };
    out[..MIN_LEN].fill(0);
    out[0] = OP_REPLY;
    out[1] = 1;
    out[2] = 6;
    out[XID].copy_from_slice(&msg[XID]);
    out[FLAGS].copy_from_slice(&msg[FLAGS]);
    out[YIADDR].copy_from_slice(&cfg.guest.octets());
    out[SIADDR].copy_from_slice(&cfg.gateway.octets());
    out[CHADDR].copy_from_slice(&msg[CHADDR]);
    out[OPTIONS_AT - 4..OPTIONS_AT].copy_from_slice(&MAGIC);
    let mut at = OPTIONS_AT;
    let mut put = |code: u8, value: &[u8]| {
        out[at] = code;
        out[at + 1] = value.len() as u8;
        out[at + 2..at + 2 + value.len()].copy_from_slice(value);
        at += 2 + value.len();
    };
    put(OPT_MSG_TYPE, &[answer]);
    put(54, &cfg.gateway.octets());
    put(51, &LEASE_SECS.to_be_bytes());
    put(1, &cfg.netmask().octets());
    put(3, &cfg.gateway.octets());
    if cfg.dns_enabled {
        put(6, &cfg.dns.octets());
    }
    put(26, &cfg.mtu.to_be_bytes());
    out[at] = OPT_END;
    Ok(Some((at + 1).max(MIN_LEN)))
}

/// The address a reply goes to: broadcast, since the guest has no address yet.
pub const REPLY_TO: Ipv4Addr = Ipv4Addr::BROADCAST;

#[cfg(test)]
mod tests {
    use super::*;

    fn client(msg_type: u8) -> Vec<u8> {
        let mut m = vec![0u8; OPTIONS_AT];
        m[0] = 1;
        m[1] = 1;
        m[2] = 6;
        m[XID].copy_from_slice(&[1, 2, 3, 4]);
        m[CHADDR][..6].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        m[OPTIONS_AT - 4..].copy_from_slice(&MAGIC);
        m.extend_from_slice(&[
            OPT_PAD,
            12,
            2,
            b'h',
            b'i',
            OPT_MSG_TYPE,
            1,
            msg_type,
            OPT_END,
        ]);
        m
    }

    fn option(reply: &[u8], code: u8) -> Option<&[u8]> {
        let mut o = &reply[OPTIONS_AT..];
        while o[0] != OPT_END {
            let len = usize::from(o[1]);
            if o[0] == code {
                return Some(&o[2..2 + len]);
            }
            o = &o[2 + len..];
        }
        None
    }

    #[test]
    fn discover_gets_offer_and_request_gets_ack() {
        let cfg = NetConfig::from_cidr("10.0.2.0/24", 1500).unwrap();
        let mut out = vec![0u8; 600];
        for (ask, answer) in [(DISCOVER, OFFER), (REQUEST, ACK)] {
            let n = reply(&client(ask), &cfg, &mut out).unwrap().unwrap();
            assert!(n >= MIN_LEN);
            assert_eq!(out[0], OP_REPLY);
            assert_eq!(&out[XID], &[1, 2, 3, 4]);
            assert_eq!(&out[YIADDR], &[10, 0, 2, 100]);
            assert_eq!(&out[CHADDR][..6], &[2, 0, 0, 0, 0, 9]);
            assert_eq!(option(&out, OPT_MSG_TYPE), Some(&[answer][..]));
            assert_eq!(option(&out, 3), Some(&[10, 0, 2, 2][..]));
            assert_eq!(option(&out, 6), Some(&[10, 0, 2, 3][..]));
            assert_eq!(option(&out, 1), Some(&[255, 255, 255, 0][..]));
        }
    }

    #[test]
    fn others_are_ignored_and_garbage_dropped() {
        let cfg = NetConfig::from_cidr("10.0.2.0/24", 1500).unwrap();
        let mut out = vec![0u8; 600];
        assert_eq!(reply(&client(7), &cfg, &mut out), Ok(None));
        assert_eq!(reply(&[1u8; 20], &cfg, &mut out), Err(Drop::Malformed));
        let mut cut = client(DISCOVER);
        cut.truncate(cut.len() - 3);
        cut.extend_from_slice(&[OPT_MSG_TYPE, 9]);
        assert_eq!(reply(&cut, &cfg, &mut out), Err(Drop::Malformed));
    }
}
