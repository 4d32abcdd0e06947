//! The `sluice` IPAM driver: pools (subnets) docker asks for with `--ipam-driver sluice`, and
//! the addresses handed out of them (the gateway, then endpoints, lowest free first), for both
//! families (`RequestPool` with `V6: true` for `--ipv6`; without a subnet a ULA /64 of sluice's
//! default v6 pool). Pools never overlap each other nor a sluice network. Every change is
//! written to a JSON file (temporary file, fsync, rename) before it is answered, so a sluiced
//! restart keeps them: docker does not ask again for pools and addresses it already holds. A
//! file of its own rather than a table in sluice's redb database: that database belongs to the
//! engine thread, and these few records are docker's bookkeeping, not sluice's state.
//!
//! The addresses themselves are kept by `ipam::AddrPool`, the allocator sluice's own networks
//! use; this module adds docker's pool ids and wording and the file (v4 pools under `pools` as
//! before, v6 pools under `pools6`). The file also keeps which docker networks joined a
//! cluster overlay by name (`-o overlay=NAME`, under `shared_overlays`): that overlay is not
//! named after the docker network, and libnetwork's later calls carry only docker's id.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_dataplane::config::{Ipv4Cidr, Ipv6Cidr};

use crate::ipam::{network_of, next_free_subnet, range_within, AddrPool, Family, PoolError, V4};
use crate::ipam6::{next_free_subnet6, V6};

/// The address space names sluice reports (docker only passes them back).
pub const LOCAL_ADDRESS_SPACE: &str = "sluice-local";
/// The global address space (sluice networks are local; kept for the protocol).
pub const GLOBAL_ADDRESS_SPACE: &str = "sluice-global";

/// Why an IPAM request is refused.
#[derive(Debug, thiserror::Error)]
pub enum DockerIpamError {
    /// An address or subnet that does not parse.
    #[error("{what} {value:?} is not valid: {why}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// The text given.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// The subnet overlaps a pool or a sluice network.
    #[error("subnet {subnet} overlaps {other} ({other_subnet})")]
    Overlap {
        /// The subnet asked for.
        subnet: String,
        /// What it overlaps.
        other: String,
        /// That one's subnet.
        other_subnet: String,
    },
    /// Every default pool is taken.
    #[error("no free subnet left in the default pools; give --subnet")]
    Exhausted,
    /// A pool id this driver never gave out (or already released).
    #[error("no such pool {0:?}")]
    NoSuchPool(String),
    /// The `--ip-range` is not inside the subnet.
    #[error("ip range {range} is not inside subnet {subnet}")]
    RangeOutside {
        /// The range.
        range: String,
        /// The subnet.
        subnet: String,
    },
    /// An address that cannot be handed out.
    #[error("address {ip} {why} in pool {subnet}")]
    Address {
        /// The address.
        ip: String,
        /// The pool.
        subnet: String,
        /// What is wrong (`is in use`, `is outside the subnet`, ...).
        why: &'static str,
    },
    /// No free address is left.
    #[error("no free address left in {0}")]
    Full(String),
    /// The file could not be read or written.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        why: String,
    },
}

/// What docker's IPAM needs of an address family beyond the allocator's: docker's text, the
/// subnet rules and the default pool a subnet comes from when none is given.
trait DockerFamily: Family {
    /// `IPv4` or `IPv6`, for errors.
    const NAME: &'static str;
    /// How a refused reserved address of the subnet itself is worded.
    const EDGE: &'static str;
    /// An address.
    fn parse_addr(s: &str) -> Option<Self::Addr>;
    /// `ip` when it is of this family.
    fn of_ip(ip: IpAddr) -> Option<Self::Addr>;
    /// A subnet, with its host bits cleared.
    fn parse_cidr(s: &str) -> Result<Self::Cidr, String>;
    /// The prefix length.
    fn prefix(c: &Self::Cidr) -> u8;
    /// True when the two share an address.
    fn overlaps(a: &Self::Cidr, b: &Self::Cidr) -> bool;
    /// True when `range` lies inside `subnet`.
    fn within(range: &Self::Cidr, subnet: &Self::Cidr) -> bool;
    /// The first default subnet that overlaps none of `used`.
    fn next_free(used: &[Self::Cidr]) -> Option<Self::Cidr>;
}

impl DockerFamily for V4 {
    const NAME: &'static str = "IPv4";
    const EDGE: &'static str = "is the network or broadcast address";
    fn parse_addr(s: &str) -> Option<Ipv4Addr> {
        s.parse().ok()
    }
    fn of_ip(ip: IpAddr) -> Option<Ipv4Addr> {
        match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }
    fn parse_cidr(s: &str) -> Result<Ipv4Cidr, String> {
        s.parse().map(network_of)
    }
    fn prefix(c: &Ipv4Cidr) -> u8 {
        c.prefix
    }
    fn overlaps(a: &Ipv4Cidr, b: &Ipv4Cidr) -> bool {
        a.overlaps(b)
    }
    fn within(range: &Ipv4Cidr, subnet: &Ipv4Cidr) -> bool {
        range_within(*range, *subnet)
    }
    fn next_free(used: &[Ipv4Cidr]) -> Option<Ipv4Cidr> {
        next_free_subnet(used.iter())
    }
}

impl DockerFamily for V6 {
    const NAME: &'static str = "IPv6";
    const EDGE: &'static str = "is the subnet-router anycast address";
    fn parse_addr(s: &str) -> Option<Ipv6Addr> {
        s.parse().ok()
    }
    fn of_ip(ip: IpAddr) -> Option<Ipv6Addr> {
        match ip {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }
    fn parse_cidr(s: &str) -> Result<Ipv6Cidr, String> {
        let c: Ipv6Cidr = s.parse()?;
        Ok(Ipv6Cidr {
            addr: c.network(),
            prefix: c.prefix,
        })
    }
    fn prefix(c: &Ipv6Cidr) -> u8 {
        c.prefix
    }
    fn overlaps(a: &Ipv6Cidr, b: &Ipv6Cidr) -> bool {
        a.overlaps(b)
    }
    fn within(range: &Ipv6Cidr, subnet: &Ipv6Cidr) -> bool {
        range.prefix >= subnet.prefix && subnet.contains(range.network())
    }
    fn next_free(used: &[Ipv6Cidr]) -> Option<Ipv6Cidr> {
        next_free_subnet6(used.iter())
    }
}

/// One pool as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "A: Deserialize<'de> + Ord"))]
struct PoolRecord<A: Ord> {
    subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<A>,
    #[serde(default)]
    addresses: BTreeSet<A>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    pools: BTreeMap<String, PoolRecord<Ipv4Addr>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pools6: BTreeMap<String, PoolRecord<Ipv6Addr>>,
    /// docker network id -> the overlay it joined.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    shared_overlays: BTreeMap<String, String>,
}

fn cidr<F: DockerFamily>(what: &'static str, s: &str) -> Result<F::Cidr, DockerIpamError> {
    F::parse_cidr(s).map_err(|why| DockerIpamError::Invalid {
        what,
        value: s.to_string(),
        why,
    })
}

/// An address docker sends bare (`10.0.0.5`) or with a prefix (`10.0.0.5/24`).
fn parse_addr<F: DockerFamily>(what: &'static str, s: &str) -> Result<F::Addr, DockerIpamError> {
    F::parse_addr(s.split('/').next().unwrap_or_default()).ok_or_else(|| DockerIpamError::Invalid {
        what,
        value: s.to_string(),
        why: format!("not an {} address", F::NAME),
    })
}

/// An IPv4 address docker sends bare (`10.0.0.5`) or with a prefix (`10.0.0.5/24`).
pub fn parse_ip(what: &'static str, s: &str) -> Result<Ipv4Addr, DockerIpamError> {
    parse_addr::<V4>(what, s)
}

/// An IPv6 address docker sends bare (`fd00::5`) or with a prefix (`fd00::5/64`).
pub fn parse_ip6(what: &'static str, s: &str) -> Result<Ipv6Addr, DockerIpamError> {
    parse_addr::<V6>(what, s)
}

fn record<F: DockerFamily>(p: &AddrPool<F>) -> PoolRecord<F::Addr> {
    PoolRecord {
        subnet: p.subnet().to_string(),
        range: (p.range() != p.subnet()).then(|| p.range().to_string()),
        gateway: p.gateway(),
        addresses: p.used().clone(),
    }
}

fn from_record<F: DockerFamily>(r: &PoolRecord<F::Addr>) -> Result<AddrPool<F>, DockerIpamError> {
    let subnet = cidr::<F>("stored subnet", &r.subnet)?;
    let range = r
        .range
        .as_deref()
        .map(|s| cidr::<F>("stored range", s))
        .transpose()?;
    Ok(AddrPool::restore(
        subnet,
        range,
        r.gateway,
        r.addresses.clone(),
    ))
}

fn from_records<F: DockerFamily>(
    stored: &BTreeMap<String, PoolRecord<F::Addr>>,
) -> Result<BTreeMap<String, AddrPool<F>>, DockerIpamError> {
    stored
        .iter()
        .map(|(id, r)| Ok((id.clone(), from_record(r)?)))
        .collect()
}

/// docker's wording for an address `claim` refuses.
fn address_error<F: DockerFamily>(p: &AddrPool<F>, e: PoolError<F>) -> DockerIpamError {
    let (ip, why) = match e {
        PoolError::OutsideSubnet { ip, .. } => (ip, "is outside the subnet"),
        PoolError::Reserved { ip, .. } if F::edge(&p.subnet(), ip).is_some() => (ip, F::EDGE),
        PoolError::Reserved { ip, .. } | PoolError::InUse { ip } => (ip, "is in use"),
        PoolError::Exhausted { range } => return DockerIpamError::Full(range.to_string()),
    };
    DockerIpamError::Address {
        ip: ip.to_string(),
        subnet: p.subnet().to_string(),
        why,
    }
}

/// A new pool of family `F`: `pool` (empty: the first free default subnet) with addresses from
/// `sub_pool` (empty: the whole pool), overlapping none of `pools` and none of the networks'
/// subnets of the family (`networks`: name and subnet text, either family).
fn new_pool<F: DockerFamily>(
    pools: &BTreeMap<String, AddrPool<F>>,
    pool: &str,
    sub_pool: &str,
    networks: &[(String, String)],
) -> Result<AddrPool<F>, DockerIpamError> {
    let nets = networks
        .iter()
        .filter_map(|(n, s)| Some((format!("network {n}"), F::parse_cidr(s).ok()?)));
    let held = pools
        .iter()
        .map(|(id, p)| (format!("pool {id}"), p.subnet()));
    let subnet = if pool.is_empty() {
        let used: Vec<F::Cidr> = nets.chain(held).map(|(_, s)| s).collect();
        F::next_free(&used).ok_or(DockerIpamError::Exhausted)?
    } else {
        let s = cidr::<F>("pool", pool)?;
        if let Some((other, o)) = nets.chain(held).find(|(_, o)| F::overlaps(o, &s)) {
            return Err(DockerIpamError::Overlap {
                subnet: s.to_string(),
                other,
                other_subnet: o.to_string(),
            });
        }
        s
    };
    let range = if sub_pool.is_empty() {
        None
    } else {
        let r = cidr::<F>("sub-pool", sub_pool)?;
        if !F::within(&r, &subnet) {
            return Err(DockerIpamError::RangeOutside {
                range: r.to_string(),
                subnet: subnet.to_string(),
            });
        }
        Some(r)
    };
    Ok(AddrPool::restore(subnet, range, None, BTreeSet::new()))
}

/// `RequestAddress` on one pool: `wanted`, or the lowest free address (of the subnet for the
/// gateway, of the range for an endpoint) that is not among `taken` (held elsewhere, e.g. by
/// other hosts of an overlay); `ip/prefix`.
fn take_address<F: DockerFamily>(
    p: &mut AddrPool<F>,
    wanted: &str,
    gateway: bool,
    taken: &[IpAddr],
) -> Result<String, DockerIpamError> {
    let ip = if wanted.is_empty() {
        let within = if gateway { p.subnet() } else { p.range() };
        let mut free = p.clone();
        for ip in taken.iter().filter_map(|ip| F::of_ip(*ip)) {
            // Addresses outside the pool or already held here change nothing.
            let _ = free.claim(ip);
        }
        free.lowest_free(within)
            .ok_or_else(|| DockerIpamError::Full(within.to_string()))?
    } else {
        let ip = parse_addr::<F>("address", wanted)?;
        p.check(ip).map_err(|e| address_error(p, e))?;
        ip
    };
    if gateway {
        if let Some(old) = p.set_gateway(ip) {
            p.claim(old).map_err(|e| address_error(p, e))?;
        }
    } else {
        p.claim(ip).map_err(|e| address_error(p, e))?;
    }
    Ok(format!("{ip}/{}", F::prefix(&p.subnet())))
}

/// `ReleaseAddress` on one pool.
fn give_back<F: DockerFamily>(p: &mut AddrPool<F>, address: &str) -> Result<(), DockerIpamError> {
    let ip = parse_addr::<F>("address", address)?;
    p.release_gateway(ip);
    p.release(ip);
    Ok(())
}

/// Every pool by id, per family (ids are the subnets, so they never clash).
#[derive(Clone, Debug, Default)]
struct Pools {
    v4: BTreeMap<String, AddrPool<V4>>,
    v6: BTreeMap<String, AddrPool<V6>>,
}

/// The pools and the docker networks' shared overlays, and where they are persisted (`None`:
/// memory only, for tests).
#[derive(Debug)]
pub struct DockerIpam {
    path: Option<PathBuf>,
    pools: Pools,
    /// docker network id -> the cluster overlay it joined with `-o overlay=NAME`.
    shared_overlays: BTreeMap<String, String>,
}

impl DockerIpam {
    /// Loads the pools from `path` (none yet if the file does not exist).
    pub fn open(path: &Path) -> Result<DockerIpam, DockerIpamError> {
        let file_err = |why: String| DockerIpamError::File {
            path: path.to_path_buf(),
            why,
        };
        let stored: Stored = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| file_err(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(e) => return Err(file_err(e.to_string())),
        };
        Ok(DockerIpam {
            path: Some(path.to_path_buf()),
            pools: Pools {
                v4: from_records(&stored.pools)?,
                v6: from_records(&stored.pools6)?,
            },
            shared_overlays: stored.shared_overlays,
        })
    }

    /// Pools in memory only.
    pub fn in_memory() -> DockerIpam {
        DockerIpam {
            path: None,
            pools: Pools::default(),
            shared_overlays: BTreeMap::new(),
        }
    }

    fn save(&self) -> Result<(), DockerIpamError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file_err = |e: std::io::Error| DockerIpamError::File {
            path: path.clone(),
            why: e.to_string(),
        };
        let stored = Stored {
            pools: self
                .pools
                .v4
                .iter()
                .map(|(id, p)| (id.clone(), record(p)))
                .collect(),
            pools6: self
                .pools
                .v6
                .iter()
                .map(|(id, p)| (id.clone(), record(p)))
                .collect(),
            shared_overlays: self.shared_overlays.clone(),
        };
        let body = serde_json::to_vec_pretty(&stored).map_err(|e| DockerIpamError::File {
            path: path.clone(),
            why: e.to_string(),
        })?;
        let tmp = path.with_extension("json.tmp");
        let mut f = crate::store::private_file(&tmp, true).map_err(file_err)?;
        f.write_all(&body).map_err(file_err)?;
        f.sync_all().map_err(file_err)?;
        std::fs::rename(&tmp, path).map_err(file_err)
    }

    /// Applies `change` and persists; on any error the pools stay as they were.
    fn change<T>(
        &mut self,
        change: impl FnOnce(&mut Pools) -> Result<T, DockerIpamError>,
    ) -> Result<T, DockerIpamError> {
        let before = self.pools.clone();
        let out = change(&mut self.pools).and_then(|v| self.save().map(|()| v));
        if out.is_err() {
            self.pools = before;
        }
        out
    }

    /// The cluster overlay docker network `docker_id` joined by name, if it did.
    pub fn shared_overlay(&self, docker_id: &str) -> Option<&str> {
        self.shared_overlays.get(docker_id).map(String::as_str)
    }

    /// Persists that docker network `docker_id` joined the cluster overlay `name`.
    pub fn join_overlay(&mut self, docker_id: &str, name: &str) -> Result<(), DockerIpamError> {
        let before = self
            .shared_overlays
            .insert(docker_id.to_string(), name.to_string());
        let saved = self.save();
        if saved.is_err() {
            match before {
                Some(old) => self.shared_overlays.insert(docker_id.to_string(), old),
                None => self.shared_overlays.remove(docker_id),
            };
        }
        saved
    }

    /// Forgets (persistently) which overlay docker network `docker_id` joined; its name.
    pub fn leave_overlay(&mut self, docker_id: &str) -> Result<Option<String>, DockerIpamError> {
        let Some(name) = self.shared_overlays.remove(docker_id) else {
            return Ok(None);
        };
        match self.save() {
            Ok(()) => Ok(Some(name)),
            Err(e) => {
                self.shared_overlays.insert(docker_id.to_string(), name);
                Err(e)
            }
        }
    }

    /// The subnets of every pool, both families.
    pub fn subnets(&self) -> Vec<String> {
        let v4 = self.pools.v4.values().map(|p| p.subnet().to_string());
        v4.chain(self.pools.v6.values().map(|p| p.subnet().to_string()))
            .collect()
    }

    /// `RequestPool`: `pool` (empty: the first free default pool of the family) with
    /// addresses from `sub_pool` (empty: the whole pool). `networks` are sluice's networks'
    /// subnets (name and subnet, either family), which a new pool must not overlap. Returns
    /// the pool id and the subnet.
    pub fn request_pool(
        &mut self,
        pool: &str,
        sub_pool: &str,
        v6: bool,
        networks: &[(String, String)],
    ) -> Result<(String, String), DockerIpamError> {
        self.change(|pools| {
            let subnet = if v6 {
                let p = new_pool(&pools.v6, pool, sub_pool, networks)?;
                let s = p.subnet().to_string();
                pools.v6.insert(s.clone(), p);
                s
            } else {
                let p = new_pool(&pools.v4, pool, sub_pool, networks)?;
                let s = p.subnet().to_string();
                pools.v4.insert(s.clone(), p);
                s
            };
            Ok((subnet.clone(), subnet))
        })
    }

    /// `ReleasePool`: forgets the pool and its addresses.
    pub fn release_pool(&mut self, id: &str) -> Result<(), DockerIpamError> {
        self.change(|pools| {
            let v4 = pools.v4.remove(id).is_some();
            if v4 || pools.v6.remove(id).is_some() {
                Ok(())
            } else {
                Err(DockerIpamError::NoSuchPool(id.to_string()))
            }
        })
    }

    /// `RequestAddress`: `wanted` (empty: the gateway gets the subnet's first address, an
    /// endpoint the lowest free one of the range). Returns the address with the subnet's
    /// prefix (`10.0.0.2/24`, `fd00::2/64`).
    pub fn request_address(
        &mut self,
        id: &str,
        wanted: &str,
        gateway: bool,
    ) -> Result<String, DockerIpamError> {
        self.request_address_avoiding(id, wanted, gateway, &[])
    }

    /// [`DockerIpam::request_address`] whose picked address (none is picked when `wanted` is
    /// given) is none of `taken`: the addresses the cluster holds in an overlay network,
    /// which its reservation would refuse.
    pub fn request_address_avoiding(
        &mut self,
        id: &str,
        wanted: &str,
        gateway: bool,
        taken: &[IpAddr],
    ) -> Result<String, DockerIpamError> {
        self.change(|pools| {
            if let Some(p) = pools.v4.get_mut(id) {
                take_address(p, wanted, gateway, taken)
            } else if let Some(p) = pools.v6.get_mut(id) {
                take_address(p, wanted, gateway, taken)
            } else {
                Err(DockerIpamError::NoSuchPool(id.to_string()))
            }
        })
    }

    /// `ReleaseAddress`: gives the address back (releasing one that is not held is not an
    /// error: docker retries releases).
    pub fn release_address(&mut self, id: &str, address: &str) -> Result<(), DockerIpamError> {
        self.change(|pools| {
            if let Some(p) = pools.v4.get_mut(id) {
                give_back(p, address)
            } else if let Some(p) = pools.v6.get_mut(id) {
                give_back(p, address)
            } else {
                Err(DockerIpamError::NoSuchPool(id.to_string()))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge() -> Vec<(String, String)> {
        vec![
            ("bridge".into(), "172.17.0.0/16".into()),
            ("v6net".into(), "fd00:5c1c:e::/64".into()),
        ]
    }

    struct TempFile(PathBuf);
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn pools_avoid_networks_and_each_other() {
        let mut m = DockerIpam::in_memory();
        let (id, s) = m.request_pool("", "", false, &bridge()).unwrap();
        assert_eq!(s, "172.18.0.0/16");
        assert_eq!(id, "172.18.0.0/16");
        let (_, s2) = m.request_pool("", "", false, &bridge()).unwrap();
        assert_eq!(s2, "172.19.0.0/16");
        let e = m
            .request_pool("172.18.5.0/24", "", false, &bridge())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "subnet 172.18.5.0/24 overlaps pool 172.18.0.0/16 (172.18.0.0/16)"
        );
        let e = m
            .request_pool("172.17.0.0/24", "", false, &bridge())
            .unwrap_err();
        assert!(e.to_string().contains("network bridge"), "{e}");
        assert!(matches!(
            m.request_pool("10.1.0.0/24", "10.2.0.0/25", false, &[]),
            Err(DockerIpamError::RangeOutside { .. })
        ));
        assert!(matches!(
            m.request_pool("10.1.0.300/24", "", false, &[]),
            Err(DockerIpamError::Invalid { .. })
        ));
        m.release_pool(&id).unwrap();
        assert!(matches!(
            m.release_pool(&id),
            Err(DockerIpamError::NoSuchPool(_))
        ));
        assert_eq!(
            m.request_pool("172.18.5.9/24", "", false, &bridge())
                .unwrap()
                .1,
            "172.18.5.0/24",
            "normalised, and free again after release"
        );
    }

    #[test]
    fn gateway_then_endpoints_lowest_free_first() {
        let mut m = DockerIpam::in_memory();
        let (id, _) = m.request_pool("10.125.0.0/24", "", false, &[]).unwrap();
        assert_eq!(m.request_address(&id, "", true).unwrap(), "10.125.0.1/24");
        assert_eq!(m.request_address(&id, "", false).unwrap(), "10.125.0.2/24");
        assert_eq!(m.request_address(&id, "", false).unwrap(), "10.125.0.3/24");
        assert_eq!(
            m.request_address(&id, "10.125.0.99", false).unwrap(),
            "10.125.0.99/24"
        );
        for (ip, why) in [
            ("10.125.0.99", "is in use"),
            ("10.125.0.1", "is in use"),
            ("10.125.0.255", "is the network or broadcast address"),
            ("10.126.0.1", "is outside the subnet"),
        ] {
            let e = m.request_address(&id, ip, false).unwrap_err();
            assert!(e.to_string().contains(why), "{ip}: {e}");
        }
        m.release_address(&id, "10.125.0.2").unwrap();
        m.release_address(&id, "10.125.0.2").unwrap();
        assert_eq!(
            m.request_address(&id, "", false).unwrap(),
            "10.125.0.2/24",
            "released addresses are reused"
        );
        m.release_address(&id, "10.125.0.1").unwrap();
        assert_eq!(
            m.request_address(&id, "10.125.0.1", true).unwrap(),
            "10.125.0.1/24",
            "the gateway can be requested again"
        );
        assert!(matches!(
            m.request_address("nope", "", false),
            Err(DockerIpamError::NoSuchPool(_))
        ));
    }

    #[test]
    fn picked_addresses_skip_what_the_cluster_holds() {
        let mut m = DockerIpam::in_memory();
        let (id, _) = m.request_pool("10.79.0.0/24", "", false, &[]).unwrap();
        let (id6, _) = m.request_pool("fd00:79::/64", "", true, &[]).unwrap();
        let taken: Vec<IpAddr> = ["10.79.0.2", "10.79.0.3", "fd00:79::2", "10.80.0.4"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let pick = |m: &mut DockerIpam, id: &str, wanted: &str| {
            m.request_address_avoiding(id, wanted, false, &taken)
                .unwrap()
        };
        assert_eq!(m.request_address(&id, "", true).unwrap(), "10.79.0.1/24");
        assert_eq!(m.request_address(&id6, "", true).unwrap(), "fd00:79::1/64");
        assert_eq!(
            pick(&mut m, &id, ""),
            "10.79.0.4/24",
            "held elsewhere: skipped"
        );
        assert_eq!(pick(&mut m, &id, ""), "10.79.0.5/24");
        assert_eq!(
            pick(&mut m, &id6, ""),
            "fd00:79::3/64",
            "each family its own"
        );
        assert_eq!(
            pick(&mut m, &id, "10.79.0.2"),
            "10.79.0.2/24",
            "an address asked for is docker's (the cluster's reservation judges it)"
        );
        m.release_address(&id, "10.79.0.4").unwrap();
        assert_eq!(
            m.request_address(&id, "", false).unwrap(),
            "10.79.0.3/24",
            "nothing of the cluster's is kept in the pool"
        );
    }

    #[test]
    fn sub_pool_limits_dynamic_addresses_and_small_pools_fill_up() {
        let mut m = DockerIpam::in_memory();
        let (id, _) = m
            .request_pool("10.5.0.0/24", "10.5.0.128/30", false, &[])
            .unwrap();
        m.request_address(&id, "", true).unwrap();
        let got: Vec<String> = (0..4)
            .map(|_| m.request_address(&id, "", false).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                "10.5.0.128/24",
                "10.5.0.129/24",
                "10.5.0.130/24",
                "10.5.0.131/24"
            ]
        );
        assert!(matches!(
            m.request_address(&id, "", false),
            Err(DockerIpamError::Full(_))
        ));
        assert_eq!(
            m.request_address(&id, "10.5.0.7", false).unwrap(),
            "10.5.0.7/24",
            "static addresses may lie outside the range"
        );
    }

    #[test]
    fn v6_pools_default_to_a_ula_64_and_hand_out_addresses_like_v4() {
        let mut m = DockerIpam::in_memory();
        let (id, s) = m.request_pool("", "", true, &bridge()).unwrap();
        assert_eq!(s, "fd00:5c1c:e:1::/64", "the network's /64 is skipped");
        assert_eq!(id, s);
        let (v4, _) = m.request_pool("", "", false, &bridge()).unwrap();
        assert_eq!(v4, "172.18.0.0/16", "v6 pools do not take v4 space");
        assert_eq!(
            m.request_address(&id, "", true).unwrap(),
            "fd00:5c1c:e:1::1/64"
        );
        assert_eq!(
            m.request_address(&id, "", false).unwrap(),
            "fd00:5c1c:e:1::2/64"
        );
        assert_eq!(
            m.request_address(&id, "fd00:5c1c:e:1::99/64", false)
                .unwrap(),
            "fd00:5c1c:e:1::99/64"
        );
        for (ip, why) in [
            ("fd00:5c1c:e:1::99", "is in use"),
            ("fd00:5c1c:e:1::", "is the subnet-router anycast address"),
            ("fd00:5c1c:e:2::1", "is outside the subnet"),
            ("10.0.0.1", "not an IPv6 address"),
        ] {
            let e = m.request_address(&id, ip, false).unwrap_err();
            assert!(e.to_string().contains(why), "{ip}: {e}");
        }
        m.release_address(&id, "fd00:5c1c:e:1::2").unwrap();
        assert_eq!(
            m.request_address(&id, "", false).unwrap(),
            "fd00:5c1c:e:1::2/64"
        );
        let e = m
            .request_pool("fd00:5c1c:e:1:8000::/80", "", true, &[])
            .unwrap_err();
        assert!(
            e.to_string().contains("overlaps pool fd00:5c1c:e:1::/64"),
            "{e}"
        );
        let e = m
            .request_pool("fd00:5c1c:e::/64", "", true, &bridge())
            .unwrap_err();
        assert!(e.to_string().contains("overlaps network v6net"), "{e}");
        let (r, _) = m
            .request_pool("fd00:28::/64", "fd00:28::100/120", true, &[])
            .unwrap();
        m.request_address(&r, "", true).unwrap();
        assert_eq!(m.request_address(&r, "", false).unwrap(), "fd00:28::100/64");
        assert!(matches!(
            m.request_pool("fd00:29::/64", "fd00:30::/80", true, &[]),
            Err(DockerIpamError::RangeOutside { .. })
        ));
        m.release_pool(&id).unwrap();
        assert!(matches!(
            m.request_address(&id, "", false),
            Err(DockerIpamError::NoSuchPool(_))
        ));
    }

    #[test]
    fn pools_survive_a_restart_and_failed_writes_change_nothing() {
        let f = TempFile(
            std::env::temp_dir().join(format!("sluice-docker-ipam-{}.json", std::process::id())),
        );
        let mut m = DockerIpam::open(&f.0).unwrap();
        let (id, _) = m
            .request_pool("10.7.0.0/24", "10.7.0.0/25", false, &[])
            .unwrap();
        m.request_address(&id, "", true).unwrap();
        m.request_address(&id, "", false).unwrap();
        let (id6, _) = m.request_pool("fd00:7::/64", "", true, &[]).unwrap();
        m.request_address(&id6, "", true).unwrap();
        m.request_address(&id6, "", false).unwrap();
        drop(m);
        let mut again = DockerIpam::open(&f.0).unwrap();
        assert_eq!(again.subnets(), ["10.7.0.0/24", "fd00:7::/64"]);
        assert_eq!(
            again.request_address(&id6, "", false).unwrap(),
            "fd00:7::3/64"
        );
        assert_eq!(
            again.request_address(&id, "", false).unwrap(),
            "10.7.0.3/24",
            "gateway .1 and .2 are still taken"
        );
        again.path = Some(PathBuf::from("/nonexistent-dir/sluice/ipam.json"));
        assert!(matches!(
            again.request_address(&id, "", false),
            Err(DockerIpamError::File { .. })
        ));
        again.path = Some(f.0.clone());
        assert_eq!(
            again.request_address(&id, "", false).unwrap(),
            "10.7.0.4/24",
            "the failed request took nothing"
        );
        std::fs::write(&f.0, b"{not json").unwrap();
        assert!(matches!(
            DockerIpam::open(&f.0),
            Err(DockerIpamError::File { .. })
        ));
    }

    #[test]
    fn shared_overlays_survive_a_restart_and_failed_writes_change_nothing() {
        let f = TempFile(
            std::env::temp_dir().join(format!("sluice-docker-shared-{}.json", std::process::id())),
        );
        let mut m = DockerIpam::open(&f.0).unwrap();
        m.request_pool("10.8.0.0/24", "", false, &[]).unwrap();
        m.join_overlay("d1", "ov").unwrap();
        m.join_overlay("d2", "ov").unwrap();
        drop(m);
        let mut again = DockerIpam::open(&f.0).unwrap();
        assert_eq!(
            (again.shared_overlay("d1"), again.shared_overlay("d3")),
            (Some("ov"), None)
        );
        assert_eq!(again.subnets(), ["10.8.0.0/24"], "pools kept beside them");
        again.path = Some(PathBuf::from("/nonexistent-dir/sluice/ipam.json"));
        assert!(again.join_overlay("d3", "ov").is_err());
        assert!(again.leave_overlay("d1").is_err());
        assert_eq!(
            (again.shared_overlay("d1"), again.shared_overlay("d3")),
            (Some("ov"), None),
            "failed writes changed nothing"
        );
        again.path = Some(f.0.clone());
        assert_eq!(again.leave_overlay("d1").unwrap().as_deref(), Some("ov"));
        assert_eq!(
            again.leave_overlay("d1").unwrap(),
            None,
            "docker repeats deletions"
        );
        let last = DockerIpam::open(&f.0).unwrap();
        assert_eq!(
            (last.shared_overlay("d1"), last.shared_overlay("d2")),
            (None, Some("ov"))
        );
    }
}
