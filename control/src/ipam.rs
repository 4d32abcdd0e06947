//! Address management with docker's semantics: which subnet a network gets when none is given,
//! and which address each endpoint gets. Pure bookkeeping; the state it needs (allocated
//! addresses) is rebuilt from the stored endpoints, so it is never persisted on its own. One
//! allocator, [`AddrPool`], serves both families ([`Pool`] for v4, `ipam6::Pool6` for v6).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use sluice_dataplane::config::Ipv4Cidr;

/// An address family a [`AddrPool`] hands out addresses of: its address and prefix types and
/// what differs between v4 and v6 (the subnet's own reserved addresses, the CLI flag errors
/// name). Addresses are numbered as `u128` so one allocator serves both.
pub trait Family: Copy + Eq + fmt::Debug + 'static {
    /// An address.
    type Addr: Copy + Ord + fmt::Debug + fmt::Display;
    /// A prefix.
    type Cidr: Copy + Eq + fmt::Debug + fmt::Display;
    /// The flag that sets an endpoint's static address (`--ip`, `--ip6`).
    const IP_FLAG: &'static str;
    /// True when `ip` lies in `c`.
    fn contains(c: &Self::Cidr, ip: Self::Addr) -> bool;
    /// The first and last address of `c`, as numbers.
    fn bounds(c: &Self::Cidr) -> (u128, u128);
    /// The address numbered `n` (inside the family's space).
    fn addr(n: u128) -> Self::Addr;
    /// What `ip` is reserved for as an address of the subnet itself, if it is.
    fn edge(subnet: &Self::Cidr, ip: Self::Addr) -> Option<&'static str>;
}

/// IPv4: the network and broadcast addresses are reserved (except in a /31 or /32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V4;

impl Family for V4 {
    type Addr = Ipv4Addr;
    type Cidr = Ipv4Cidr;
    const IP_FLAG: &'static str = "--ip";
    fn contains(c: &Ipv4Cidr, ip: Ipv4Addr) -> bool {
        c.contains(ip)
    }
    fn bounds(c: &Ipv4Cidr) -> (u128, u128) {
        (
            u128::from(u32::from(c.network())),
            u128::from(u32::from(c.broadcast())),
        )
    }
    fn addr(n: u128) -> Ipv4Addr {
        Ipv4Addr::from(n as u32)
    }
    fn edge(subnet: &Ipv4Cidr, ip: Ipv4Addr) -> Option<&'static str> {
        let edges = subnet.prefix <= 30;
        if edges && ip == subnet.network() {
            Some("the network address")
        } else if edges && ip == subnet.broadcast() {
            Some("the broadcast address")
        } else {
            None
        }
    }
}

/// Why an address cannot be handed out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError<F: Family> {
    /// Every address of the pool is in use or reserved.
    #[error("no free address left in {range}; remove an endpoint or use a larger --ip-range")]
    Exhausted {
        /// The range addresses come from.
        range: F::Cidr,
    },
    /// A static address outside the subnet.
    #[error("address {ip} is outside subnet {subnet}")]
    OutsideSubnet {
        /// The address.
        ip: F::Addr,
        /// The subnet.
        subnet: F::Cidr,
    },
    /// A static address that is reserved: the subnet's own (network, broadcast, subnet-router
    /// anycast), the gateway or an aux address.
    #[error("address {ip} is reserved ({why}); pick another {flag}", flag = F::IP_FLAG)]
    Reserved {
        /// The address.
        ip: F::Addr,
        /// What it is reserved for.
        why: String,
    },
    /// A static address another endpoint has.
    #[error("address {ip} is already in use; pick another {flag} or leave it out", flag = F::IP_FLAG)]
    InUse {
        /// The address.
        ip: F::Addr,
    },
}

/// Why a v4 address cannot be handed out.
pub type IpamError = PoolError<V4>;

/// The v4 addresses of one network (or one docker IPAM pool): the one allocator behind the
/// API's networks (and so CNI's) and the docker plugin's remote IPAM.
pub type Pool = AddrPool<V4>;

/// The addresses of one network of family `F`: what is reserved, what is allocated, and where
/// dynamic addresses come from. Only the addresses in use are kept (a v6 /64 holds 2^64), and
/// allocation steps over used and reserved addresses only, so its cost is bounded by the
/// endpoints, not by the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrPool<F: Family> {
    subnet: F::Cidr,
    range: F::Cidr,
    gateway: Option<F::Addr>,
    aux: BTreeMap<F::Addr, String>,
    used: BTreeSet<F::Addr>,
}

impl<F: Family> AddrPool<F> {
    /// A pool over `subnet` whose dynamic addresses come from `range` (default: the subnet).
    /// The subnet's own reserved addresses, `gateway` and `aux` (name, address) are never
    /// handed out. The caller has checked that all of them lie inside the subnet.
    pub fn new<'a>(
        subnet: F::Cidr,
        range: Option<F::Cidr>,
        gateway: F::Addr,
        aux: impl IntoIterator<Item = (&'a String, &'a F::Addr)>,
    ) -> Self {
        let mut p = Self::restore(subnet, range, Some(gateway), BTreeSet::new());
        p.aux = aux
            .into_iter()
            .map(|(name, ip)| (*ip, format!("auxiliary address {name:?}")))
            .collect();
        p
    }

    /// A pool as it was stored: its gateway (if it has one yet) and the addresses in use.
    pub fn restore(
        subnet: F::Cidr,
        range: Option<F::Cidr>,
        gateway: Option<F::Addr>,
        used: BTreeSet<F::Addr>,
    ) -> Self {
        AddrPool {
            subnet,
            range: range.unwrap_or(subnet),
            gateway,
            aux: BTreeMap::new(),
            used,
        }
    }

    /// The subnet.
    pub fn subnet(&self) -> F::Cidr {
        self.subnet
    }

    /// Where dynamic addresses come from (the subnet unless an ip range was given).
    pub fn range(&self) -> F::Cidr {
        self.range
    }

    /// The gateway, once it has one.
    pub fn gateway(&self) -> Option<F::Addr> {
        self.gateway
    }

    /// The addresses in use (the gateway is not among them).
    pub fn used(&self) -> &BTreeSet<F::Addr> {
        &self.used
    }

    /// What `ip` is reserved for, if it is: the subnet's own addresses, the gateway, an
    /// auxiliary address.
    fn reserved_for(&self, ip: F::Addr) -> Option<&str> {
        if let Some(why) = F::edge(&self.subnet, ip) {
            Some(why)
        } else if self.gateway == Some(ip) {
            Some("the gateway")
        } else {
            self.aux.get(&ip).map(String::as_str)
        }
    }

    /// True when an endpoint has `ip`.
    pub fn in_use(&self, ip: F::Addr) -> bool {
        self.used.contains(&ip)
    }

    /// The lowest address of `within` that is neither reserved nor in use. Every address it
    /// steps over is in use or reserved, so it takes at most `used + aux + 3` steps.
    pub fn lowest_free(&self, within: F::Cidr) -> Option<F::Addr> {
        let (first, last) = F::bounds(&within);
        (first..=last).map(F::addr).find(|ip| {
            F::contains(&self.subnet, *ip)
                && !self.used.contains(ip)
                && self.reserved_for(*ip).is_none()
        })
    }

    /// The lowest free address of the range (docker's default, non-serial allocation).
    pub fn allocate(&mut self) -> Result<F::Addr, PoolError<F>> {
        let ip = self
            .lowest_free(self.range)
            .ok_or(PoolError::Exhausted { range: self.range })?;
        self.used.insert(ip);
        Ok(ip)
    }

    /// Takes a static address: anywhere in the subnet (also outside the range, as docker
    /// allows), but not reserved and not in use.
    pub fn claim(&mut self, ip: F::Addr) -> Result<(), PoolError<F>> {
        self.check(ip)?;
        self.used.insert(ip);
        Ok(())
    }

    /// Whether `claim(ip)` would succeed, without taking it.
    pub fn check(&self, ip: F::Addr) -> Result<(), PoolError<F>> {
        if !F::contains(&self.subnet, ip) {
            return Err(PoolError::OutsideSubnet {
                ip,
                subnet: self.subnet,
            });
        }
        if let Some(why) = self.reserved_for(ip) {
            return Err(PoolError::Reserved {
                ip,
                why: why.to_string(),
            });
        }
        if self.used.contains(&ip) {
            return Err(PoolError::InUse { ip });
        }
        Ok(())
    }

    /// Gives `ip` back (the next allocation may hand it out again); false when it was not
    /// allocated.
    pub fn release(&mut self, ip: F::Addr) -> bool {
        self.used.remove(&ip)
    }

    /// Makes `ip` the gateway and returns the previous one, which is no longer reserved.
    pub fn set_gateway(&mut self, ip: F::Addr) -> Option<F::Addr> {
        self.gateway.replace(ip)
    }

    /// Drops the gateway if it is `ip`; false when it is not.
    pub fn release_gateway(&mut self, ip: F::Addr) -> bool {
        let was = self.gateway == Some(ip);
        if was {
            self.gateway = None;
        }
        was
    }
}

/// `c` with its host bits cleared (`10.0.0.5/24` is the subnet `10.0.0.0/24`).
pub fn network_of(c: Ipv4Cidr) -> Ipv4Cidr {
    Ipv4Cidr {
        addr: c.network(),
        prefix: c.prefix,
    }
}

/// True when `range` lies inside `subnet` (an `--ip-range` or docker's sub-pool).
pub fn range_within(range: Ipv4Cidr, subnet: Ipv4Cidr) -> bool {
    range.prefix >= subnet.prefix && subnet.contains(range.network())
}

/// The first of `others` (a name and a subnet each) that overlaps `subnet`.
pub fn first_overlap<K>(
    subnet: Ipv4Cidr,
    others: impl IntoIterator<Item = (K, Ipv4Cidr)>,
) -> Option<(K, Ipv4Cidr)> {
    others.into_iter().find(|(_, o)| o.overlaps(&subnet))
}

/// docker's default address pools in order: 172.17.0.0/16 to 172.31.0.0/16, then
/// 192.168.0.0/20 to 192.168.240.0/20.
pub fn default_pools() -> impl Iterator<Item = Ipv4Cidr> {
    let b = (17u8..=31).map(|o| Ipv4Cidr {
        addr: Ipv4Addr::new(172, o, 0, 0),
        prefix: 16,
    });
    let c = (0u8..16).map(|i| Ipv4Cidr {
        addr: Ipv4Addr::new(192, 168, i * 16, 0),
        prefix: 20,
    });
    b.chain(c)
}

/// The first default pool that overlaps none of `used`.
pub fn next_free_subnet<'a>(
    used: impl IntoIterator<Item = &'a Ipv4Cidr> + Clone,
) -> Option<Ipv4Cidr> {
    default_pools().find(|p| used.clone().into_iter().all(|u| !u.overlaps(p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn sequential_skipping_reserved() {
        let aux = [("r".to_string(), ip("10.0.0.3"))];
        let mut p = Pool::new(
            cidr("10.0.0.0/29"),
            None,
            ip("10.0.0.1"),
            aux.iter().map(|(a, b)| (a, b)),
        );
        assert_eq!(p.allocate(), Ok(ip("10.0.0.2")));
        assert_eq!(p.allocate(), Ok(ip("10.0.0.4")));
        assert_eq!(p.allocate(), Ok(ip("10.0.0.5")));
        assert_eq!(p.allocate(), Ok(ip("10.0.0.6")));
        assert_eq!(
            p.allocate(),
            Err(IpamError::Exhausted {
                range: cidr("10.0.0.0/29")
            })
        );
        assert!(p.release(ip("10.0.0.4")));
        assert!(!p.release(ip("10.0.0.4")));
        assert_eq!(p.allocate(), Ok(ip("10.0.0.4")), "released is reusable");
    }

    #[test]
    fn range_limits_dynamic_but_not_static() {
        let mut p = Pool::new(
            cidr("10.0.0.0/24"),
            Some(cidr("10.0.0.128/25")),
            ip("10.0.0.1"),
            [],
        );
        assert_eq!(p.allocate(), Ok(ip("10.0.0.128")));
        assert_eq!(p.claim(ip("10.0.0.7")), Ok(()));
        assert!(p.in_use(ip("10.0.0.7")));
    }

    #[test]
    fn static_errors() {
        let aux = [("printer".to_string(), ip("10.0.0.9"))];
        let mut p = Pool::new(
            cidr("10.0.0.0/24"),
            None,
            ip("10.0.0.254"),
            aux.iter().map(|(a, b)| (a, b)),
        );
        assert!(matches!(
            p.claim(ip("10.0.1.1")),
            Err(IpamError::OutsideSubnet { .. })
        ));
        for (a, why) in [
            ("10.0.0.0", "the network address"),
            ("10.0.0.255", "the broadcast address"),
            ("10.0.0.254", "the gateway"),
            ("10.0.0.9", "auxiliary address \"printer\""),
        ] {
            assert_eq!(
                p.claim(ip(a)),
                Err(IpamError::Reserved {
                    ip: ip(a),
                    why: why.into()
                })
            );
        }
        p.claim(ip("10.0.0.5")).unwrap();
        assert_eq!(
            p.claim(ip("10.0.0.5")),
            Err(IpamError::InUse { ip: ip("10.0.0.5") })
        );
        assert_eq!(
            p.allocate(),
            Ok(ip("10.0.0.1")),
            "gateway elsewhere: .1 is free"
        );
        assert_eq!(
            IpamError::InUse { ip: ip("10.0.0.5") }.to_string(),
            "address 10.0.0.5 is already in use; pick another --ip or leave it out"
        );
    }

    #[test]
    fn gateway_moves_and_point_to_point_subnets_have_no_edges() {
        let mut p = Pool::restore(cidr("10.0.0.0/31"), None, None, BTreeSet::new());
        assert_eq!(p.lowest_free(p.subnet()), Some(ip("10.0.0.0")));
        assert_eq!(p.set_gateway(ip("10.0.0.0")), None);
        assert_eq!(p.allocate(), Ok(ip("10.0.0.1")));
        assert_eq!(p.set_gateway(ip("10.0.0.1")), Some(ip("10.0.0.0")));
        assert_eq!(p.check(ip("10.0.0.0")), Ok(()), "the old gateway is free");
        assert!(!p.release_gateway(ip("10.0.0.0")));
        assert!(p.release_gateway(ip("10.0.0.1")));
        assert_eq!(p.gateway(), None);
    }

    #[test]
    fn default_pools_follow_docker() {
        let bridge = cidr("172.17.0.0/16");
        assert_eq!(next_free_subnet([&bridge]), Some(cidr("172.18.0.0/16")));
        let other = cidr("172.18.5.0/24");
        assert_eq!(
            next_free_subnet([&bridge, &other]),
            Some(cidr("172.19.0.0/16"))
        );
        let big = cidr("172.16.0.0/12");
        assert_eq!(next_free_subnet([&big]), Some(cidr("192.168.0.0/20")));
        let all = [cidr("172.16.0.0/12"), cidr("192.168.0.0/16")];
        assert_eq!(next_free_subnet(all.iter()), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Alloc,
        Static(u8),
        Release(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Alloc),
            any::<u8>().prop_map(Op::Static),
            any::<u8>().prop_map(Op::Release),
        ]
    }

    proptest! {
        #[test]
        fn never_twice_never_reserved(ops in proptest::collection::vec(op(), 0..200),
                                      prefix in 26u8..=30, ranged in any::<bool>(),
                                      aux_at in 0u8..64, gw_at in 1u8..3) {
            let subnet = Ipv4Cidr { addr: Ipv4Addr::new(10, 9, 8, 0), prefix };
            let size = 1u32 << (32 - prefix);
            let base = u32::from(subnet.network());
            let at = |o: u8| Ipv4Addr::from(base + u32::from(o) % size);
            let range = ranged.then(|| Ipv4Cidr { addr: at((size / 2) as u8), prefix: prefix + 1 });
            let gateway = at(gw_at);
            let aux = [("a".to_string(), at(aux_at))];
            let mut pool = Pool::new(subnet, range, gateway, aux.iter().map(|(a, b)| (a, b)));
            let reserved = [subnet.network(), subnet.broadcast(), gateway, at(aux_at)];
            let mut held = BTreeSet::new();
            for o in ops {
                match o {
                    Op::Alloc => match pool.allocate() {
                        Ok(a) => {
                            prop_assert!(!reserved.contains(&a));
                            prop_assert!(range.unwrap_or(subnet).contains(a));
                            prop_assert!(held.insert(a), "{} handed out twice", a);
                        }
                        Err(IpamError::Exhausted { .. }) => {
                            let r = range.unwrap_or(subnet);
                            let free = (u32::from(r.network())..=u32::from(r.broadcast()))
                                .map(Ipv4Addr::from)
                                .filter(|a| !reserved.contains(a) && !held.contains(a))
                                .count();
                            prop_assert_eq!(free, 0);
                        }
                        Err(e) => prop_assert!(false, "unexpected {}", e),
                    },
                    Op::Static(x) => {
                        let a = at(x);
                        let r = pool.claim(a);
                        prop_assert_eq!(r.is_ok(), !reserved.contains(&a) && !held.contains(&a));
                        if r.is_ok() {
                            held.insert(a);
                        }
                    }
                    Op::Release(x) => {
                        let a = at(x);
                        prop_assert_eq!(pool.release(a), held.remove(&a));
                        if !reserved.contains(&a) {
                            prop_assert_eq!(pool.check(a), Ok(()), "released address reusable");
                        }
                    }
                }
            }
        }
    }
}
