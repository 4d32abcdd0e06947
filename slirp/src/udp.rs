//! UDP: each (guest port, remote) pair is a flow carried by one connected host socket (or by a
//! host-forward listener for flows the host started); this module parses and builds the
//! datagrams and keeps the flow table.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};

use sluice_dataplane::wire::{udp, UdpPacket, IPPROTO_UDP};

use crate::counters::Drop;
use crate::frame::{self as eth_frame, ip_headers, Ends, L4_AT, L4_AT_V6};
use crate::unreach::{self, Why};

/// Where a datagram's payload goes in an IPv4 frame built by [`frame`].
pub const PAYLOAD_AT: usize = L4_AT + udp::HEADER_LEN;
/// Where a datagram's payload goes in an IPv6 frame built by [`frame`].
pub const PAYLOAD_AT_V6: usize = L4_AT_V6 + udp::HEADER_LEN;

/// Where the payload of a datagram to the guest from `remote` goes.
pub fn payload_at(remote: IpAddr) -> usize {
    if remote.is_ipv6() {
        PAYLOAD_AT_V6
    } else {
        PAYLOAD_AT
    }
}

/// A flow as the guest sees it: its port and the remote end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The guest's port.
    pub guest_port: u16,
    /// The remote address and port as the guest sees them.
    pub remote: SocketAddr,
}

/// A guest datagram, borrowed from its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// The payload.
    pub payload: &'a [u8],
}

/// Parses the UDP part of a guest packet from `src` to `dst`, checking the checksum when set
/// and `verify` (not when the guest's kernel left it partial for offload).
pub fn parse(l4: &[u8], src: IpAddr, dst: IpAddr, verify: bool) -> Result<Datagram<'_>, Drop> {
    let p = UdpPacket::new_checked(l4).map_err(|_| Drop::Malformed)?;
    if verify && p.checksum() != 0 && !eth_frame::udp_checksum_ok(&p, src, dst) {
        return Err(Drop::Malformed);
    }
    let (src_port, dst_port) = (p.src_port(), p.dst_port());
    let len = usize::from(p.len());
    Ok(Datagram {
        src_port,
        dst_port,
        payload: &l4[udp::HEADER_LEN..len],
    })
}

/// Finishes a frame whose `payload_len` bytes already lie at [`payload_at`] of the source;
/// returns its length.
pub fn frame(
    buf: &mut [u8],
    ends: &Ends,
    src_port: u16,
    dst_port: u16,
    payload_len: usize,
) -> usize {
    let l4_len = udp::HEADER_LEN + payload_len;
    let at = ends.l4_at();
    let mut p = UdpPacket::new_unchecked(&mut buf[at..at + l4_len]);
    p.set_src_port(src_port);
    p.set_dst_port(dst_port);
    p.set_len(l4_len as u16);
    eth_frame::fill_udp_checksum(&mut p, ends);
    ip_headers(buf, ends, IPPROTO_UDP, l4_len, 0)
}

/// Builds in `buf` the ICMP (or ICMPv6) port unreachable that tells the guest its datagrams on
/// flow `key` reach a closed port; `ends` are those of frames from the remote to the guest.
/// Returns the frame length.
pub fn port_unreachable(buf: &mut [u8], ends: &Ends, key: &FlowKey) -> usize {
    unreach::error_frame(buf, ends, IPPROTO_UDP, Why::Port, |q| {
        let mut p = UdpPacket::new_unchecked(q);
        p.set_src_port(key.guest_port);
        p.set_dst_port(key.remote.port());
        p.set_len(udp::HEADER_LEN as u16);
        p.set_checksum(0);
    })
}

/// A table of flows with a hard size limit: slots are reused, so the index is a stable handle
/// (the engine's poll token) while the flow lives.
#[derive(Debug)]
pub struct FlowTable<K, V> {
    index: HashMap<K, usize>,
    slots: Vec<Option<(K, V)>>,
    free: Vec<usize>,
    limit: usize,
}

impl<K: Copy + Eq + Hash, V> FlowTable<K, V> {
    /// An empty table that holds at most `limit` flows.
    pub fn new(limit: usize) -> Self {
        FlowTable {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            limit,
        }
    }

    /// The handle of `key`'s flow.
    pub fn find(&self, key: &K) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// Adds a flow; [`Drop::FlowLimit`] when the table is full.
    pub fn insert(&mut self, key: K, value: V) -> Result<usize, Drop> {
        if self.index.len() >= self.limit {
            return Err(Drop::FlowLimit);
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        self.slots[slot] = Some((key, value));
        self.index.insert(key, slot);
        Ok(slot)
    }

    /// The flow at `handle`.
    pub fn get_mut(&mut self, handle: usize) -> Option<(&K, &mut V)> {
        self.slots.get_mut(handle)?.as_mut().map(|(k, v)| (&*k, v))
    }

    /// Removes the flow at `handle`.
    pub fn remove(&mut self, handle: usize) -> Option<V> {
        let (key, value) = self.slots.get_mut(handle)?.take()?;
        self.index.remove(&key);
        self.free.push(handle);
        Some(value)
    }

    /// Handles of all live flows.
    pub fn handles(&self) -> Vec<usize> {
        self.index.values().copied().collect()
    }

    /// Number of live flows.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no flow lives.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sluice_dataplane::wire::{EthernetFrame, Ipv4Packet, MacAddr};
    use std::net::Ipv4Addr;

    pub(crate) fn ends() -> Ends {
        Ends {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([0x52, 0x55, 10, 0, 2, 2]),
            src: Ipv4Addr::new(10, 0, 2, 100).into(),
            dst: Ipv4Addr::new(10, 0, 2, 2).into(),
        }
    }

    #[test]
    fn built_datagram_parses_back() {
        let mut buf = vec![0u8; 200];
        buf[PAYLOAD_AT..PAYLOAD_AT + 5].copy_from_slice(b"hello");
        let n = frame(&mut buf, &ends(), 4000, 53, 5);
        let eth = EthernetFrame::new_checked(&buf[..n]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let (src, dst) = (ip.src().into(), ip.dst().into());
        let d = parse(ip.payload(), src, dst, true).unwrap();
        assert_eq!(
            d,
            Datagram {
                src_port: 4000,
                dst_port: 53,
                payload: b"hello"
            }
        );
        let mut bad = ip.payload().to_vec();
        bad[9] ^= 1;
        assert_eq!(parse(&bad, src, dst, true), Err(Drop::Malformed));
        assert_eq!(parse(&bad[..4], src, dst, true), Err(Drop::Malformed));
    }

    #[test]
    fn flow_table_limit_and_reuse() {
        let mut t: FlowTable<u16, &str> = FlowTable::new(2);
        let a = t.insert(1, "a").unwrap();
        let b = t.insert(2, "b").unwrap();
        assert_eq!(t.insert(3, "c"), Err(Drop::FlowLimit));
        assert_eq!(t.find(&2), Some(b));
        assert_eq!(t.remove(a), Some("a"));
        assert_eq!(t.remove(a), None);
        assert_eq!(t.insert(3, "c"), Ok(a));
        assert_eq!(t.get_mut(a).map(|(k, v)| (*k, *v)), Some((3, "c")));
        assert_eq!(t.len(), 2);
    }
}
