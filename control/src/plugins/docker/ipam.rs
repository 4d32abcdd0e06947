//! The `sluice` IPAM driver: pools (subnets) docker asks for with `--ipam-driver sluice`, and
//! the addresses handed out of them (the gateway, then endpoints, lowest free first). Pools
//! never overlap each other nor a sluice network. Every change is written to a JSON file
//! (temporary file, fsync, rename) before it is answered, so a sluiced restart keeps them:
//! docker does not ask again for pools and addresses it already holds. A file of its own
//! rather than a table in sluice's redb database: that database belongs to the engine
//! thread, and these few records are docker's bookkeeping, not sluice's state.
//!
//! The addresses themselves are kept by `ipam::Pool`, the allocator sluice's own networks use;
//! this module adds docker's pool ids and wording and the file (whose format is unchanged).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_dataplane::config::Ipv4Cidr;

use crate::ipam::{first_overlap, network_of, next_free_subnet, range_within, IpamError, Pool};

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
    /// IPv6 was asked for.
    #[error("the sluice IPAM driver is IPv4 only (create the network without --ipv6)")]
    Ipv6,
    /// The subnet overlaps a pool or a sluice network.
    #[error("subnet {subnet} overlaps {other} ({other_subnet})")]
    Overlap {
        /// The subnet asked for.
        subnet: Ipv4Cidr,
        /// What it overlaps.
        other: String,
        /// That one's subnet.
        other_subnet: Ipv4Cidr,
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
        range: Ipv4Cidr,
        /// The subnet.
        subnet: Ipv4Cidr,
    },
    /// An address that cannot be handed out.
    #[error("address {ip} {why} in pool {subnet}")]
    Address {
        /// The address.
        ip: Ipv4Addr,
        /// The pool.
        subnet: Ipv4Cidr,
        /// What is wrong (`is in use`, `is outside the subnet`, ...).
        why: &'static str,
    },
    /// No free address is left.
    #[error("no free address left in {0}")]
    Full(Ipv4Cidr),
    /// The file could not be read or written.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        why: String,
    },
}

/// One pool as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PoolRecord {
    subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<Ipv4Addr>,
    #[serde(default)]
    addresses: BTreeSet<Ipv4Addr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    pools: BTreeMap<String, PoolRecord>,
}

fn cidr(what: &'static str, s: &str) -> Result<Ipv4Cidr, DockerIpamError> {
    let c: Ipv4Cidr = s.parse().map_err(|why| DockerIpamError::Invalid {
        what,
        value: s.to_string(),
        why,
    })?;
    Ok(network_of(c))
}

/// An address docker sends bare (`10.0.0.5`) or with a prefix (`10.0.0.5/24`).
pub fn parse_ip(what: &'static str, s: &str) -> Result<Ipv4Addr, DockerIpamError> {
    s.split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|_| DockerIpamError::Invalid {
            what,
            value: s.to_string(),
            why: "not an IPv4 address".into(),
        })
}

fn record(p: &Pool) -> PoolRecord {
    PoolRecord {
        subnet: p.subnet().to_string(),
        range: (p.range() != p.subnet()).then(|| p.range().to_string()),
        gateway: p.gateway(),
        addresses: p.used().clone(),
    }
}

fn from_record(r: &PoolRecord) -> Result<Pool, DockerIpamError> {
    let subnet = cidr("stored subnet", &r.subnet)?;
    let range = r
        .range
        .as_deref()
        .map(|s| cidr("stored range", s))
        .transpose()?;
    Ok(Pool::restore(subnet, range, r.gateway, r.addresses.clone()))
}

/// docker's wording for an address `claim` refuses.
fn address_error(p: &Pool, e: IpamError) -> DockerIpamError {
    let (ip, why) = match e {
        IpamError::OutsideSubnet { ip, .. } => (ip, "is outside the subnet"),
        IpamError::Reserved { ip, .. }
            if ip == p.subnet().network() || ip == p.subnet().broadcast() =>
        {
            (ip, "is the network or broadcast address")
        }
        IpamError::Reserved { ip, .. } | IpamError::InUse { ip } => (ip, "is in use"),
        IpamError::Exhausted { range } => return DockerIpamError::Full(range),
    };
    DockerIpamError::Address {
        ip,
        subnet: p.subnet(),
        why,
    }
}

/// The pools, and where they are persisted (`None`: memory only, for tests).
#[derive(Debug)]
pub struct DockerIpam {
    path: Option<PathBuf>,
    pools: BTreeMap<String, Pool>,
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
        let mut pools = BTreeMap::new();
        for (id, r) in &stored.pools {
            pools.insert(id.clone(), from_record(r)?);
        }
        Ok(DockerIpam {
            path: Some(path.to_path_buf()),
            pools,
        })
    }

    /// Pools in memory only.
    pub fn in_memory() -> DockerIpam {
        DockerIpam {
            path: None,
            pools: BTreeMap::new(),
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
                .iter()
                .map(|(id, p)| (id.clone(), record(p)))
                .collect(),
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
        change: impl FnOnce(&mut BTreeMap<String, Pool>) -> Result<T, DockerIpamError>,
    ) -> Result<T, DockerIpamError> {
        let before = self.pools.clone();
        let out = change(&mut self.pools).and_then(|v| self.save().map(|()| v));
        if out.is_err() {
            self.pools = before;
        }
        out
    }

    /// The subnets of every pool.
    pub fn subnets(&self) -> Vec<Ipv4Cidr> {
        self.pools.values().map(Pool::subnet).collect()
    }

    /// `RequestPool`: `pool` (empty: the first free default pool) with addresses from
    /// `sub_pool` (empty: the whole pool). `networks` are sluice's networks (name, subnet),
    /// which a new pool must not overlap. Returns the pool id and the subnet.
    pub fn request_pool(
        &mut self,
        pool: &str,
        sub_pool: &str,
        v6: bool,
        networks: &[(String, Ipv4Cidr)],
    ) -> Result<(String, Ipv4Cidr), DockerIpamError> {
        if v6 {
            return Err(DockerIpamError::Ipv6);
        }
        let subnet = if pool.is_empty() {
            let used: Vec<Ipv4Cidr> = networks
                .iter()
                .map(|(_, s)| *s)
                .chain(self.subnets())
                .collect();
            next_free_subnet(used.iter()).ok_or(DockerIpamError::Exhausted)?
        } else {
            let s = cidr("pool", pool)?;
            let others = networks.iter().map(|(n, s)| (format!("network {n}"), *s));
            let pools = self
                .pools
                .iter()
                .map(|(id, p)| (format!("pool {id}"), p.subnet()));
            if let Some((other, other_subnet)) = first_overlap(s, others.chain(pools)) {
                return Err(DockerIpamError::Overlap {
                    subnet: s,
                    other,
                    other_subnet,
                });
            }
            s
        };
        let range = if sub_pool.is_empty() {
            None
        } else {
            let r = cidr("sub-pool", sub_pool)?;
            if !range_within(r, subnet) {
                return Err(DockerIpamError::RangeOutside { range: r, subnet });
            }
            Some(r)
        };
        let id = subnet.to_string();
        self.change(|pools| {
            pools.insert(
                id.clone(),
                Pool::restore(subnet, range, None, BTreeSet::new()),
            );
            Ok((id, subnet))
        })
    }

    /// `ReleasePool`: forgets the pool and its addresses.
    pub fn release_pool(&mut self, id: &str) -> Result<(), DockerIpamError> {
        self.change(|pools| {
            pools
                .remove(id)
                .map(drop)
                .ok_or_else(|| DockerIpamError::NoSuchPool(id.to_string()))
        })
    }

    /// `RequestAddress`: `wanted` (empty: the gateway gets the subnet's first address, an
    /// endpoint the lowest free one of the range). Returns the address with the subnet's
    /// prefix.
    pub fn request_address(
        &mut self,
        id: &str,
        wanted: &str,
        gateway: bool,
    ) -> Result<Ipv4Cidr, DockerIpamError> {
        let wanted = if wanted.is_empty() {
            None
        } else {
            Some(parse_ip("address", wanted)?)
        };
        self.change(|pools| {
            let p = pools
                .get_mut(id)
                .ok_or_else(|| DockerIpamError::NoSuchPool(id.to_string()))?;
            let ip = match wanted {
                Some(ip) => {
                    p.check(ip).map_err(|e| address_error(p, e))?;
                    ip
                }
                None => {
                    let within = if gateway { p.subnet() } else { p.range() };
                    p.lowest_free(within).ok_or(DockerIpamError::Full(within))?
                }
            };
            if gateway {
                if let Some(old) = p.set_gateway(ip) {
                    p.claim(old).map_err(|e| address_error(p, e))?;
                }
            } else {
                p.claim(ip).map_err(|e| address_error(p, e))?;
            }
            Ok(Ipv4Cidr {
                addr: ip,
                prefix: p.subnet().prefix,
            })
        })
    }

    /// `ReleaseAddress`: gives the address back (releasing one that is not held is not an
    /// error: docker retries releases).
    pub fn release_address(&mut self, id: &str, address: &str) -> Result<(), DockerIpamError> {
        let ip = parse_ip("address", address)?;
        self.change(|pools| {
            let p = pools
                .get_mut(id)
                .ok_or_else(|| DockerIpamError::NoSuchPool(id.to_string()))?;
            p.release_gateway(ip);
            p.release(ip);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    fn bridge() -> Vec<(String, Ipv4Cidr)> {
        vec![("bridge".into(), c("172.17.0.0/16"))]
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
        assert_eq!(s, c("172.18.0.0/16"));
        assert_eq!(id, "172.18.0.0/16");
        let (_, s2) = m.request_pool("", "", false, &bridge()).unwrap();
        assert_eq!(s2, c("172.19.0.0/16"));
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
            m.request_pool("", "", true, &[]),
            Err(DockerIpamError::Ipv6)
        ));
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
            c("172.18.5.0/24"),
            "normalised, and free again after release"
        );
    }

    #[test]
    fn gateway_then_endpoints_lowest_free_first() {
        let mut m = DockerIpam::in_memory();
        let (id, _) = m.request_pool("10.125.0.0/24", "", false, &[]).unwrap();
        assert_eq!(
            m.request_address(&id, "", true).unwrap(),
            c("10.125.0.1/24")
        );
        assert_eq!(
            m.request_address(&id, "", false).unwrap().addr,
            "10.125.0.2".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(
            m.request_address(&id, "", false).unwrap().addr,
            "10.125.0.3".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(
            m.request_address(&id, "10.125.0.99", false).unwrap().addr,
            "10.125.0.99".parse::<Ipv4Addr>().unwrap()
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
            m.request_address(&id, "", false).unwrap().addr,
            "10.125.0.2".parse::<Ipv4Addr>().unwrap(),
            "released addresses are reused"
        );
        m.release_address(&id, "10.125.0.1").unwrap();
        assert_eq!(
            m.request_address(&id, "10.125.0.1", true).unwrap().addr,
            "10.125.0.1".parse::<Ipv4Addr>().unwrap(),
            "the gateway can be requested again"
        );
        assert!(matches!(
            m.request_address("nope", "", false),
            Err(DockerIpamError::NoSuchPool(_))
        ));
    }

    #[test]
    fn sub_pool_limits_dynamic_addresses_and_small_pools_fill_up() {
        let mut m = DockerIpam::in_memory();
        let (id, _) = m
            .request_pool("10.5.0.0/24", "10.5.0.128/30", false, &[])
            .unwrap();
        m.request_address(&id, "", true).unwrap();
        let got: Vec<String> = (0..4)
            .map(|_| m.request_address(&id, "", false).unwrap().addr.to_string())
            .collect();
        assert_eq!(
            got,
            ["10.5.0.128", "10.5.0.129", "10.5.0.130", "10.5.0.131"]
        );
        assert!(matches!(
            m.request_address(&id, "", false),
            Err(DockerIpamError::Full(_))
        ));
        assert_eq!(
            m.request_address(&id, "10.5.0.7", false).unwrap().addr,
            "10.5.0.7".parse::<Ipv4Addr>().unwrap(),
            "static addresses may lie outside the range"
        );
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
        drop(m);
        let mut again = DockerIpam::open(&f.0).unwrap();
        assert_eq!(again.subnets(), vec![c("10.7.0.0/24")]);
        assert_eq!(
            again.request_address(&id, "", false).unwrap().addr,
            "10.7.0.3".parse::<Ipv4Addr>().unwrap(),
            "gateway .1 and .2 are still taken"
        );
        again.path = Some(PathBuf::from("/nonexistent-dir/sluice/ipam.json"));
        assert!(matches!(
            again.request_address(&id, "", false),
            Err(DockerIpamError::File { .. })
        ));
        again.path = Some(f.0.clone());
        assert_eq!(
            again.request_address(&id, "", false).unwrap().addr,
            "10.7.0.4".parse::<Ipv4Addr>().unwrap(),
            "the failed request took nothing"
        );
        std::fs::write(&f.0, b"{not json").unwrap();
        assert!(matches!(
            DockerIpam::open(&f.0),
            Err(DockerIpamError::File { .. })
        ));
    }
}
