//! IPv6 address management beside the v4 [`crate::ipam::Pool`], with the same semantics
//! (lowest free address of the range, static addresses anywhere in the subnet, aux addresses
//! and the gateway reserved) over prefixes too large for anything proportional to their size:
//! a /64 holds 2^64 addresses, so the pool keeps only the set of addresses in use and a cursor
//! below which every address is taken. Allocation scans from the cursor and steps over at most
//! as many addresses as are in use or reserved, so it is bounded by the endpoints, not the
//! prefix. Also where a network's v6 prefix comes from when none is given: /64s of a ULA /48.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;

use sluice_dataplane::config::Ipv6Cidr;

/// Why a v6 address cannot be handed out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ipam6Error {
    /// Every address of the range is in use or reserved.
    #[error("no free address left in {range}; remove an endpoint or use a larger --ip-range")]
    Exhausted {
        /// The range addresses come from.
        range: Ipv6Cidr,
    },
    /// A static address outside the subnet.
    #[error("address {ip} is outside subnet {subnet}")]
    OutsideSubnet {
        /// The address.
        ip: Ipv6Addr,
        /// The subnet.
        subnet: Ipv6Cidr,
    },
    /// A static address that is the subnet-router anycast address, the gateway or an aux
    /// address.
    #[error("address {ip} is reserved ({why}); pick another --ip6")]
    Reserved {
        /// The address.
        ip: Ipv6Addr,
        /// What it is reserved for.
        why: String,
    },
    /// A static address another endpoint has.
    #[error("address {ip} is already in use; pick another --ip6 or leave it out")]
    InUse {
        /// The address.
        ip: Ipv6Addr,
    },
}

/// The v6 addresses of one network: reserved, allocated, and where dynamic ones come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool6 {
    subnet: Ipv6Cidr,
    range: Ipv6Cidr,
    gateway: Option<Ipv6Addr>,
    aux: BTreeMap<Ipv6Addr, String>,
    used: BTreeSet<Ipv6Addr>,
    /// Every address of the range below it is in use or reserved (lowest-free allocation
    /// starts here).
    cursor: u128,
}

/// The first and last address of `c`, as numbers.
fn bounds(c: Ipv6Cidr) -> (u128, u128) {
    let first = u128::from(c.network());
    (first, first | !c.mask())
}

impl Pool6 {
    /// A pool over `subnet` whose dynamic addresses come from `range` (default: the subnet).
    /// The subnet-router anycast address (the prefix itself), `gateway` and `aux` (name,
    /// address) are never handed out. The caller has checked they lie inside the subnet.
    pub fn new<'a>(
        subnet: Ipv6Cidr,
        range: Option<Ipv6Cidr>,
        gateway: Ipv6Addr,
        aux: impl IntoIterator<Item = (&'a String, &'a Ipv6Addr)>,
    ) -> Pool6 {
        let mut p = Pool6::restore(subnet, range, Some(gateway), BTreeSet::new());
        p.aux = aux
            .into_iter()
            .map(|(name, ip)| (*ip, format!("auxiliary address {name:?}")))
            .collect();
        p
    }

    /// A pool as it was stored: its gateway (if it has one) and the addresses in use.
    pub fn restore(
        subnet: Ipv6Cidr,
        range: Option<Ipv6Cidr>,
        gateway: Option<Ipv6Addr>,
        used: BTreeSet<Ipv6Addr>,
    ) -> Pool6 {
        let range = range.unwrap_or(subnet);
        Pool6 {
            subnet,
            range,
            gateway,
            aux: BTreeMap::new(),
            used,
            cursor: bounds(range).0,
        }
    }

    /// The subnet.
    pub fn subnet(&self) -> Ipv6Cidr {
        self.subnet
    }

    /// Where dynamic addresses come from (the subnet unless an ip range was given).
    pub fn range(&self) -> Ipv6Cidr {
        self.range
    }

    /// The gateway, if it has one.
    pub fn gateway(&self) -> Option<Ipv6Addr> {
        self.gateway
    }

    /// The addresses in use (the gateway is not among them).
    pub fn used(&self) -> &BTreeSet<Ipv6Addr> {
        &self.used
    }

    /// What `ip` is reserved for, if it is: the subnet-router anycast address (RFC 4291
    /// section 2.6.1, except in a /127 or /128), the gateway, an auxiliary address.
    fn reserved_for(&self, ip: Ipv6Addr) -> Option<&str> {
        if self.subnet.prefix <= 126 && ip == self.subnet.network() {
            Some("the subnet-router anycast address")
        } else if self.gateway == Some(ip) {
            Some("the gateway")
        } else {
            self.aux.get(&ip).map(String::as_str)
        }
    }

    /// True when an endpoint has `ip`.
    pub fn in_use(&self, ip: Ipv6Addr) -> bool {
        self.used.contains(&ip)
    }

    /// The lowest free address of the range: docker's default allocation. Every address it
    /// steps over is in use or reserved, so it takes at most `used + aux + 3` steps.
    pub fn allocate(&mut self) -> Result<Ipv6Addr, Ipam6Error> {
        let (_, last) = bounds(self.range);
        let mut n = self.cursor;
        loop {
            let ip = Ipv6Addr::from(n);
            if n > last {
                return Err(Ipam6Error::Exhausted { range: self.range });
            }
            if self.subnet.contains(ip)
                && !self.used.contains(&ip)
                && self.reserved_for(ip).is_none()
            {
                self.used.insert(ip);
                self.cursor = n.saturating_add(1);
                return Ok(ip);
            }
            n = match n.checked_add(1) {
                Some(next) => next,
                None => return Err(Ipam6Error::Exhausted { range: self.range }),
            };
        }
    }

    /// Takes a static address: anywhere in the subnet (also outside the range, as docker
    /// allows), but not reserved and not in use.
    pub fn claim(&mut self, ip: Ipv6Addr) -> Result<(), Ipam6Error> {
        self.check(ip)?;
        self.used.insert(ip);
        Ok(())
    }

    /// Whether `claim(ip)` would succeed, without taking it.
    pub fn check(&self, ip: Ipv6Addr) -> Result<(), Ipam6Error> {
        if !self.subnet.contains(ip) {
            return Err(Ipam6Error::OutsideSubnet {
                ip,
                subnet: self.subnet,
            });
        }
        if let Some(why) = self.reserved_for(ip) {
            return Err(Ipam6Error::Reserved {
                ip,
                why: why.to_string(),
            });
        }
        if self.used.contains(&ip) {
            return Err(Ipam6Error::InUse { ip });
        }
        Ok(())
    }

    /// Gives `ip` back (the next allocation may hand it out again); false when it was not
    /// allocated.
    pub fn release(&mut self, ip: Ipv6Addr) -> bool {
        let was = self.used.remove(&ip);
        if was {
            self.cursor = self.cursor.min(u128::from(ip).max(bounds(self.range).0));
        }
        was
    }
}

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
