//! IPv6 address management: the v6 [`Family`] of the one allocator ([`AddrPool`], the v4
//! pool's semantics: lowest free address of the range, static addresses anywhere in the
//! subnet, aux addresses and the gateway reserved), over prefixes too large for anything
//! proportional to their size (a /64 holds 2^64 addresses: the pool keeps only the addresses
//! in use, and allocation steps over used and reserved ones only). Also where a network's v6
//! prefix comes from when none is given: /64s of a ULA /48.

use std::net::Ipv6Addr;

use sluice_dataplane::config::Ipv6Cidr;

use crate::ipam::{AddrPool, Family, PoolError};

/// IPv6: the subnet-router anycast address (the prefix itself, RFC 4291 section 2.6.1) is
/// reserved, except in a /127 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V6;

impl Family for V6 {
    type Addr = Ipv6Addr;
    type Cidr = Ipv6Cidr;
    const IP_FLAG: &'static str = "--ip6";
    fn contains(c: &Ipv6Cidr, ip: Ipv6Addr) -> bool {
        c.contains(ip)
    }
    fn bounds(c: &Ipv6Cidr) -> (u128, u128) {
        let first = u128::from(c.network());
        (first, first | !c.mask())
    }
    fn addr(n: u128) -> Ipv6Addr {
        Ipv6Addr::from(n)
    }
    fn edge(subnet: &Ipv6Cidr, ip: Ipv6Addr) -> Option<&'static str> {
        (subnet.prefix <= 126 && ip == subnet.network())
            .then_some("the subnet-router anycast address")
    }
}

/// Why a v6 address cannot be handed out.
pub type Ipam6Error = PoolError<V6>;

/// The v6 addresses of one network: reserved, allocated, and where dynamic ones come from.
pub type Pool6 = AddrPool<V6>;

/// The ULA /48 the default v6 prefixes come from (fd00:5c1c:e::/48, "sluice"), split into
/// /64s in order, as docker splits its default address pools.
pub const DEFAULT_POOL6: Ipv6Cidr = Ipv6Cidr {
    addr: Ipv6Addr::new(0xfd00, 0x5c1c, 0xe, 0, 0, 0, 0, 0),
    prefix: 48,
};

/// The first /64 of [`DEFAULT_POOL6`] that overlaps none of `used`.
pub fn next_free_subnet6<'a>(
    used: impl IntoIterator<Item = &'a Ipv6Cidr> + Clone,
) -> Option<Ipv6Cidr> {
    let base = u128::from(DEFAULT_POOL6.network());
    (0u128..1 << 16)
        .map(|i| Ipv6Cidr {
            addr: Ipv6Addr::from(base | i << 64),
            prefix: 64,
        })
        .find(|p| used.clone().into_iter().all(|u| !u.overlaps(p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn cidr(s: &str) -> Ipv6Cidr {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn lowest_free_skipping_reserved_and_reusing_released() {
        let aux = [("r".to_string(), ip("fd00:9::3"))];
        let mut p = Pool6::new(
            cidr("fd00:9::/64"),
            None,
            ip("fd00:9::1"),
            aux.iter().map(|(a, b)| (a, b)),
        );
        assert_eq!(p.allocate(), Ok(ip("fd00:9::2")));
        assert_eq!(p.allocate(), Ok(ip("fd00:9::4")));
        assert_eq!(p.allocate(), Ok(ip("fd00:9::5")));
        assert!(p.release(ip("fd00:9::2")));
        assert!(!p.release(ip("fd00:9::2")));
        assert_eq!(p.allocate(), Ok(ip("fd00:9::2")), "released is reusable");
        assert_eq!(p.allocate(), Ok(ip("fd00:9::6")));
    }

    #[test]
    fn small_range_exhausts_and_static_addresses_go_anywhere_in_the_subnet() {
        let mut p = Pool6::new(
            cidr("fd00:9::/64"),
            Some(cidr("fd00:9::ff00/126")),
            ip("fd00:9::1"),
            [],
        );
        for want in [
            "fd00:9::ff00",
            "fd00:9::ff01",
            "fd00:9::ff02",
            "fd00:9::ff03",
        ] {
            assert_eq!(p.allocate(), Ok(ip(want)));
        }
        assert_eq!(
            p.allocate(),
            Err(Ipam6Error::Exhausted {
                range: cidr("fd00:9::ff00/126")
            })
        );
        assert_eq!(p.claim(ip("fd00:9::7")), Ok(()));
        assert_eq!(
            p.claim(ip("fd00:9::7")),
            Err(Ipam6Error::InUse {
                ip: ip("fd00:9::7")
            })
        );
        assert!(matches!(
            p.claim(ip("fd00:9::")),
            Err(Ipam6Error::Reserved { .. })
        ));
        assert!(matches!(
            p.claim(ip("fd00:9::1")),
            Err(Ipam6Error::Reserved { .. })
        ));
        assert!(matches!(
            p.check(ip("fd00:a::1")),
            Err(Ipam6Error::OutsideSubnet { .. })
        ));
        // The last address of a /0-sized walk cannot overflow.
        let mut all = Pool6::restore(
            cidr("::/0"),
            Some(cidr("ffff::/128")),
            None,
            BTreeSet::new(),
        );
        let top = ip("ffff::");
        assert_eq!(all.allocate(), Ok(top));
        assert!(all.allocate().is_err());
    }

    #[test]
    fn restored_pool_continues_where_it_was() {
        let used: BTreeSet<_> = [ip("fd00:9::2"), ip("fd00:9::3"), ip("fd00:9::9")].into();
        let mut p = Pool6::restore(cidr("fd00:9::/64"), None, Some(ip("fd00:9::1")), used);
        assert_eq!(p.allocate(), Ok(ip("fd00:9::4")));
        assert!(p.in_use(ip("fd00:9::9")));
        assert_eq!(p.gateway(), Some(ip("fd00:9::1")));
        assert_eq!(p.used().len(), 4);
    }

    #[test]
    fn default_prefixes_are_ula_64s_not_in_use() {
        let first = next_free_subnet6([].iter()).unwrap();
        assert_eq!(first, cidr("fd00:5c1c:e::/64"));
        let taken = [first, cidr("fd00:5c1c:e:1::/64")];
        assert_eq!(
            next_free_subnet6(taken.iter()),
            Some(cidr("fd00:5c1c:e:2::/64"))
        );
        assert_eq!(next_free_subnet6([DEFAULT_POOL6].iter()), None);
    }

    proptest! {
        /// Against a plain model: allocation is always the lowest free address of the range.
        #[test]
        fn allocation_is_lowest_free(ops in proptest::collection::vec((any::<bool>(), 0u8..24), 1..80)) {
            let mut p = Pool6::new(cidr("fd00::/64"), Some(cidr("fd00::/108")), ip("fd00::1"), []);
            let mut model = BTreeSet::new();
            for (alloc, k) in ops {
                if alloc {
                    let want = (2u128..).find(|n| !model.contains(n)).unwrap();
                    prop_assert_eq!(p.allocate(), Ok(Ipv6Addr::from(u128::from(ip("fd00::")) + want)));
                    model.insert(want);
                } else {
                    let n = u128::from(k);
                    let a = Ipv6Addr::from(u128::from(ip("fd00::")) + n);
                    prop_assert_eq!(p.release(a), model.remove(&n));
                }
            }
        }
    }
}
