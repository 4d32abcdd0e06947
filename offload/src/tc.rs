//! The rtnetlink requests that attach the TC program: a clsact qdisc and a cls_bpf filter in
//! direct-action mode on its ingress hook, with a fixed priority and handle so that detaching
//! removes exactly ours. Synchronous: one socket per call, in the calling thread's namespace.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::sys;

const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_FD: u16 = 6;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const TC_H_CLSACT: u32 = 0xffff_fff1;
const TC_H_MIN_INGRESS: u32 = 0xfff2;
const ETH_P_ALL: u16 = 0x0003;

/// Our filter's priority on the ingress hook (filters run in priority order; ours is the only
/// one sluice installs there).
pub(crate) const PRIORITY: u16 = 0x5c1;
/// Our filter's handle.
pub(crate) const HANDLE: u32 = 0x5c1;
/// The program name cls_bpf reports (`tc filter show`).
pub(crate) const NAME: &str = "sluice_offload";

/// `TC_H_MAKE(maj, min)`.
const fn tc_h_make(maj: u32, min: u32) -> u32 {
    (maj & 0xffff_0000) | (min & 0x0000_ffff)
}

/// One rtnetlink request with a `struct tcmsg` header.
struct Request(Vec<u8>);

impl Request {
    fn new(kind: u16, flags: u16, ifindex: u32, handle: u32, parent: u32, info: u32) -> Request {
        let mut b = Vec::with_capacity(128);
        b.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set by `finish`
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        b.extend_from_slice(&1u32.to_ne_bytes()); // seq
        b.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
        b.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        b.extend_from_slice(&ifindex.to_ne_bytes());
        b.extend_from_slice(&handle.to_ne_bytes());
        b.extend_from_slice(&parent.to_ne_bytes());
        b.extend_from_slice(&info.to_ne_bytes());
        Request(b)
    }

    /// Appends an attribute; returns where it starts (for [`Request::end_nested`]).
    fn attr(&mut self, kind: u16, data: &[u8]) -> usize {
        let at = self.0.len();
        self.0
            .extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        at
    }

    fn attr_str(&mut self, kind: u16, s: &str) {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data);
    }

    fn end_nested(&mut self, at: usize) {
        let len = (self.0.len() - at) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// Sends `req` and waits for the kernel's acknowledgement.
fn transact(req: Request) -> io::Result<()> {
    let mut sock = sys::route_socket()?;
    sock.write_all(&req.finish())?;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = sock.read(&mut buf)?;
        let mut msg = &buf[..n];
        while msg.len() >= 16 {
            let len = u32::from_ne_bytes(msg[..4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes([msg[4], msg[5]]);
            if kind == NLMSG_ERROR && msg.len() >= 20 {
                let errno = -i32::from_ne_bytes(msg[16..20].try_into().expect("4 bytes"));
                return if errno == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(errno))
                };
            }
            if len < 16 || len > msg.len() {
                break;
            }
            msg = &msg[len.next_multiple_of(4).min(msg.len())..];
        }
    }
}

/// The clsact qdisc's identity: handle and parent.
fn clsact(kind: u16, flags: u16, ifindex: u32) -> Request {
    let mut req = Request::new(
        kind,
        flags,
        ifindex,
        tc_h_make(TC_H_CLSACT, 0),
        TC_H_CLSACT,
        0,
    );
    req.attr_str(TCA_KIND, "clsact");
    req
}

/// Adds a clsact qdisc; false when the interface already had one.
pub(crate) fn add_clsact(ifindex: u32) -> io::Result<bool> {
    match transact(clsact(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, ifindex)) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes the clsact qdisc (and every filter under it).
pub(crate) fn del_clsact(ifindex: u32) -> io::Result<()> {
    transact(clsact(RTM_DELQDISC, 0, ifindex))
}

/// Our filter's identity: handle, the ingress hook, priority and protocol.
fn filter(kind: u16, flags: u16, ifindex: u32) -> Request {
    let parent = tc_h_make(TC_H_CLSACT, TC_H_MIN_INGRESS);
    let info = u32::from(PRIORITY) << 16 | u32::from(ETH_P_ALL.to_be());
    let mut req = Request::new(kind, flags, ifindex, HANDLE, parent, info);
    req.attr_str(TCA_KIND, "bpf");
    req
}

/// Installs (or replaces) our cls_bpf filter running `prog` in direct-action mode.
pub(crate) fn add_filter(ifindex: u32, prog: BorrowedFd) -> io::Result<()> {
    let mut req = filter(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_REPLACE, ifindex);
    let opts = req.attr(TCA_OPTIONS | NLA_F_NESTED, &[]);
    req.attr(TCA_BPF_FD, &(prog.as_raw_fd() as u32).to_ne_bytes());
    req.attr_str(TCA_BPF_NAME, NAME);
    req.attr(TCA_BPF_FLAGS, &TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes());
    req.end_nested(opts);
    transact(req)
}

/// Deletes our filter.
pub(crate) fn del_filter(ifindex: u32) -> io::Result<()> {
    transact(filter(RTM_DELTFILTER, 0, ifindex))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_request_matches_tc_s_encoding() {
        let mut req = filter(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_REPLACE, 7);
        let opts = req.attr(TCA_OPTIONS | NLA_F_NESTED, &[]);
        req.attr(TCA_BPF_FLAGS, &TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes());
        req.end_nested(opts);
        let b = req.finish();
        assert_eq!(b.len(), 16 + 20 + 8 + 4 + 8);
        assert_eq!(
            u32::from_ne_bytes(b[..4].try_into().unwrap()) as usize,
            b.len()
        );
        // tcmsg: ifindex 7, handle, parent ffff:fff2, info prio << 16 | htons(ETH_P_ALL).
        assert_eq!(&b[20..24], &7u32.to_ne_bytes());
        assert_eq!(&b[28..32], &0xffff_fff2u32.to_ne_bytes());
        assert_eq!(&b[32..36], &(0x05c1_0300u32).to_ne_bytes());
        // "bpf\0" kind, then the nested options of one 8-byte attribute.
        assert_eq!(&b[36..44], &[8, 0, 1, 0, b'b', b'p', b'f', 0]);
        assert_eq!(&b[44..48], &[12, 0, 2, 0x80]);
        assert_eq!(&b[48..56], &[8, 0, 8, 0, 1, 0, 0, 0]);
    }
}
