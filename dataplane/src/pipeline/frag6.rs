//! IPv6 fragments through NAT66, as the kernel's conntrack sees them without reassembly: the
//! first fragment carries the ports and is translated by its flow; the others carry none, so
//! the flow of each packet's first fragment is remembered by (source, destination, fragment
//! identification) in a small table of fixed size, and later fragments are translated by it.
//! A later fragment whose first fragment was not seen (lost, reordered, or pushed out of the
//! table) is a counted `fragment` drop.
//!
//! The table is direct-mapped: [`SLOTS`] entries, the slot picked by a randomly seeded hash
//! (the keys come from traffic), a newer packet taking an older one's slot. It never grows
//! and needs no expiry pass: an entry older than [`LIFETIME_SECS`] is ignored.

use std::hash::{BuildHasher, RandomState};
use std::net::Ipv6Addr;

use super::ipv6::V6Info;
use crate::nat::v6::Tuple6;
use crate::time::Millis;

/// Entries in the table: packets being fragmented at the same time through one dataplane.
pub const SLOTS: usize = 256;

/// How long a first fragment is remembered (the kernel's `ip6frag_time`).
pub const LIFETIME_SECS: u32 = 60;

/// What identifies the fragments of one packet.
type Key = (Ipv6Addr, Ipv6Addr, u32);

/// One remembered first fragment: its key, its flow's tuple, and when it is forgotten.
#[derive(Clone, Copy, Debug)]
struct Entry {
    key: Key,
    tuple: Tuple6,
    expires: Millis,
}

/// The first fragments' flows, for the fragments that follow them.
#[derive(Debug)]
pub struct Frags6 {
    slots: Box<[Option<Entry>]>,
    seed: RandomState,
}

impl Default for Frags6 {
    fn default() -> Self {
        Frags6 {
            slots: vec![None; SLOTS].into_boxed_slice(),
            seed: RandomState::new(),
        }
    }
}

impl Frags6 {
    /// The fragment key of packet `ip`, when it is a fragment.
    fn key(ip: &V6Info) -> Option<Key> {
        ip.frag.map(|f| (ip.src, ip.dst, f.ident))
    }

    fn slot(&self, key: &Key) -> usize {
        self.seed.hash_one(key) as usize % SLOTS
    }

    /// Remembers that packet `ip` has flow `tuple`, when it is a first fragment with more to
    /// come.
    pub(super) fn remember(&mut self, ip: &V6Info, tuple: Tuple6, now: Millis) {
        let first = ip.frag.is_some_and(|f| f.offset == 0 && f.more);
        if let Some(key) = Self::key(ip).filter(|_| first) {
            let i = self.slot(&key);
            self.slots[i] = Some(Entry {
                key,
                tuple,
                expires: now.plus_secs(LIFETIME_SECS),
            });
        }
    }

    /// The flow tuple of the first fragment of the packet `ip` is a later fragment of.
    pub(super) fn lookup(&self, ip: &V6Info, now: Millis) -> Option<Tuple6> {
        let key = Self::key(ip)?;
        let e = self.slots[self.slot(&key)]?;
        (e.key == key && e.expires > now).then_some(e.tuple)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::L4Proto;
    use crate::wire::ipv6::Fragment;

    const A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    const B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
    const T0: Millis = Millis(1_000);

    fn info(offset: u16, more: bool, ident: u32) -> V6Info {
        V6Info {
            l3: 14,
            src: A,
            dst: B,
            hop_limit: 64,
            total: 1280,
            proto: 17,
            l4: 48,
            frag: Some(Fragment {
                offset,
                more,
                ident,
            }),
        }
    }

    fn tuple(port: u16) -> Tuple6 {
        Tuple6 {
            proto: L4Proto::Udp,
            src: A,
            src_port: port,
            dst: B,
            dst_port: 53,
        }
    }

    #[test]
    fn later_fragments_find_their_first_until_it_expires() {
        let mut t = Frags6::default();
        t.remember(&info(0, true, 7), tuple(1000), T0);
        assert_eq!(t.lookup(&info(1232, true, 7), T0), Some(tuple(1000)));
        assert_eq!(t.lookup(&info(2464, false, 7), T0), Some(tuple(1000)));
        assert_eq!(t.lookup(&info(1232, false, 8), T0), None, "other packet");
        let late = T0.plus_secs(LIFETIME_SECS);
        assert_eq!(t.lookup(&info(1232, false, 7), late), None, "expired");
    }

    #[test]
    fn only_first_fragments_are_remembered_and_the_table_stays_bounded() {
        let mut t = Frags6::default();
        t.remember(&info(1232, true, 1), tuple(1), T0);
        t.remember(&info(0, false, 2), tuple(2), T0);
        let mut whole = info(0, true, 3);
        whole.frag = None;
        t.remember(&whole, tuple(3), T0);
        assert!(t.slots.iter().all(Option::is_none));
        for id in 0..(4 * SLOTS as u32) {
            t.remember(&info(0, true, id), tuple(id as u16), T0);
        }
        assert_eq!(t.slots.len(), SLOTS);
        let last = 4 * SLOTS as u32 - 1;
        assert_eq!(
            t.lookup(&info(8, false, last), T0),
            Some(tuple(last as u16))
        );
    }

    #[test]
    fn the_table_is_a_fixed_few_kilobytes() {
        let bytes = std::mem::size_of::<Option<Entry>>() * SLOTS;
        println!("fragment table: {bytes} bytes");
        assert!(bytes <= 32 * 1024, "{bytes}");
    }
}
