//! Which egress interfaces take `bpf_redirect_peer`: a veth whose peer lives in another network
//! namespace. Redirecting to such a veth's peer hands the frame straight to the other
//! namespace's receive path, skipping the transmit and the backlog queue a plain
//! `bpf_redirect` goes through (what Cilium does for pods); a veth whose peer shares our
//! namespace would drop it, and other kinds have no peer. A veth's peer may move into its
//! container after sluice attached (docker moves it after the plugin's Join), so a veth is asked
//! about again until its peer has left; the questions go over an rtnetlink socket opened in the
//! interface's namespace when it was attached.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use crate::sys;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLM_F_REQUEST: u16 = 0x1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_INFO_KIND: u16 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// What an interface is, as far as `bpf_redirect_peer` cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Not a veth: plain redirect, for good.
    Other,
    /// A veth whose peer is in our namespace (for now).
    VethHere,
    /// A veth whose peer is in another namespace.
    VethElsewhere,
}

/// An attached interface: its answer once final, or the socket to ask again on.
#[derive(Debug)]
enum Target {
    Ask(Arc<File>),
    Known(bool),
}

/// The attached interfaces and what they answered.
#[derive(Debug, Default)]
pub(crate) struct PeerTargets {
    /// One rtnetlink socket per namespace (by the namespace's inode).
    sockets: HashMap<u64, Arc<File>>,
    links: HashMap<u32, Target>,
}

impl PeerTargets {
    /// `ifindex` was attached by this thread, in its namespace.
    pub(crate) fn attached(&mut self, ifindex: u32) -> io::Result<()> {
        let ns = std::fs::metadata("/proc/thread-self/ns/net")?.ino();
        let socket = match self.sockets.get(&ns) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(sys::route_socket()?);
                self.sockets.insert(ns, s.clone());
                s
            }
        };
        self.links.insert(ifindex, Target::Ask(socket));
        Ok(())
    }

    /// `ifindex` was detached.
    pub(crate) fn detached(&mut self, ifindex: u32) {
        self.links.remove(&ifindex);
    }

    /// Whether frames out of `ifindex` go to its peer: false for an interface never attached
    /// or one the kernel cannot describe.
    pub(crate) fn is_peer(&mut self, ifindex: u32) -> bool {
        let Some(target) = self.links.get_mut(&ifindex) else {
            return false;
        };
        let socket = match target {
            Target::Known(peer) => return *peer,
            Target::Ask(socket) => socket,
        };
        match kind(socket, ifindex) {
            Ok(Kind::VethHere) | Err(_) => false,
            Ok(k) => {
                let peer = k == Kind::VethElsewhere;
                *target = Target::Known(peer);
                peer
            }
        }
    }
}

/// Asks the kernel what `ifindex` is, over `socket`.
fn kind(mut socket: &File, ifindex: u32) -> io::Result<Kind> {
    socket.write_all(&getlink(ifindex))?;
    let mut buf = vec![0u8; 16384];
    let n = socket.read(&mut buf)?;
    parse_reply(&buf[..n])
}

/// An RTM_GETLINK request for one interface.
fn getlink(ifindex: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(NLMSG_HDR + IFINFOMSG);
    b.extend_from_slice(&((NLMSG_HDR + IFINFOMSG) as u32).to_ne_bytes());
    b.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    b.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    b.extend_from_slice(&1u32.to_ne_bytes()); // seq
    b.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    b.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]); // family, pad, type
    b.extend_from_slice(&ifindex.to_ne_bytes());
    b.extend_from_slice(&[0; 8]); // flags, change
    b
}

/// Reads the kernel's answer: an error, or one RTM_NEWLINK whose attributes say the kind and
/// whether the link's peer has a namespace id (it has one only when it lives elsewhere).
fn parse_reply(msg: &[u8]) -> io::Result<Kind> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "short rtnetlink reply");
    let head = msg.get(..NLMSG_HDR).ok_or_else(bad)?;
    let len = u32::from_ne_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let kind = u16::from_ne_bytes([head[4], head[5]]);
    let body = msg.get(NLMSG_HDR..len.min(msg.len())).ok_or_else(bad)?;
    if kind == NLMSG_ERROR {
        let errno = body.get(..4).ok_or_else(bad)?;
        let errno = -i32::from_ne_bytes(errno.try_into().expect("4 bytes"));
        return Err(io::Error::from_raw_os_error(errno));
    }
    if kind != RTM_NEWLINK {
        return Err(bad());
    }
    let attrs_at = body.get(IFINFOMSG..).ok_or_else(bad)?;
    let mut veth = false;
    let mut elsewhere = false;
    for (ty, data) in attrs(attrs_at) {
        match ty {
            IFLA_LINK_NETNSID => elsewhere = true,
            IFLA_LINKINFO => {
                veth = attrs(data).any(|(t, d)| t == IFLA_INFO_KIND && d.starts_with(b"veth\0"));
            }
            _ => {}
        }
    }
    Ok(match (veth, elsewhere) {
        (false, _) => Kind::Other,
        (true, false) => Kind::VethHere,
        (true, true) => Kind::VethElsewhere,
    })
}

/// The (type, payload) attributes packed in `b`; a truncated one ends the walk.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes([*b.first()?, *b.get(1)?]));
        let ty = u16::from_ne_bytes([*b.get(2)?, *b.get(3)?]) & NLA_TYPE_MASK;
        let data = b.get(4..len)?;
        b = b.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((ty, data))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut a = ((4 + data.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(data);
        a.resize(a.len().next_multiple_of(4), 0);
        a
    }

    fn newlink(attrs: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = attrs.concat();
        let mut m = ((NLMSG_HDR + IFINFOMSG + body.len()) as u32)
            .to_ne_bytes()
            .to_vec();
        m.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[0; IFINFOMSG]);
        m.extend_from_slice(&body);
        m
    }

    fn linkinfo(kind: &[u8]) -> Vec<u8> {
        attr(IFLA_LINKINFO | 0x8000, &attr(IFLA_INFO_KIND, kind))
    }

    #[test]
    fn only_a_veth_with_its_peer_in_another_namespace_qualifies() {
        let nsid = attr(IFLA_LINK_NETNSID, &3i32.to_ne_bytes());
        let name = attr(3, b"eth0\0");
        let cases = [
            (
                vec![name.clone(), linkinfo(b"veth\0"), nsid.clone()],
                Kind::VethElsewhere,
            ),
            (vec![linkinfo(b"veth\0"), name.clone()], Kind::VethHere),
            (vec![linkinfo(b"vethx\0"), nsid.clone()], Kind::Other),
            (vec![linkinfo(b"macvlan\0"), nsid.clone()], Kind::Other),
            (vec![nsid, name], Kind::Other),
        ];
        for (attrs, want) in cases {
            assert_eq!(parse_reply(&newlink(&attrs)).unwrap(), want);
        }
    }

    #[test]
    fn errors_and_short_replies_are_errors() {
        let mut err = 36u32.to_ne_bytes().to_vec();
        err.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err.extend_from_slice(&[0; 10]);
        err.extend_from_slice(&(-libc::ENODEV).to_ne_bytes());
        err.extend_from_slice(&[0; 16]);
        assert_eq!(
            parse_reply(&err).unwrap_err().raw_os_error(),
            Some(libc::ENODEV)
        );
        assert!(parse_reply(&err[..10]).is_err());
        let mut truncated = newlink(&[linkinfo(b"veth\0")]);
        truncated.truncate(NLMSG_HDR + 4);
        assert!(parse_reply(&truncated).is_err());
    }

    #[test]
    fn the_request_asks_for_one_interface() {
        let r = getlink(42);
        assert_eq!(r.len(), 32);
        assert_eq!(&r[4..6], &RTM_GETLINK.to_ne_bytes());
        assert_eq!(&r[20..24], &42u32.to_ne_bytes());
    }

    #[test]
    fn loopback_is_not_a_peer_target_and_unattached_interfaces_are_not_either() {
        let mut t = PeerTargets::default();
        assert!(!t.is_peer(1));
        t.attached(1).unwrap();
        assert!(!t.is_peer(1));
        assert!(matches!(t.links[&1], Target::Known(false)));
        t.detached(1);
        assert!(t.links.is_empty());
    }
}
