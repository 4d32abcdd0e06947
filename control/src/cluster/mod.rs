//! The cluster store (`sluiced --cluster-store etcd://... --cluster-advertise IP`): overlay
//! networks made global through etcd v3, as docker's classic overlay kept them in its KV
//! store. Created on one host, an overlay network appears on every host; removed on one, it
//! goes everywhere (refused while any host has endpoints on it). Its addresses are reserved in
//! etcd with compare-and-swap transactions, so two hosts never hand out one address; each
//! endpoint is published under this host's lease, which the daemon keeps alive; each daemon
//! watches the store and feeds the other hosts' endpoints into its VXLAN remote table. A host
//! that dies stops renewing its lease, etcd deletes its records, and the other hosts drop its
//! endpoints from their tables.
//!
//! Local state (redb) still holds what this host needs to restart; on start (and whenever its
//! lease was lost) a host publishes again the endpoints it still has.

pub mod base64;
pub mod etcd;
pub mod follow;
pub mod gateway;
pub mod records;
pub mod security;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_dataplane::config::Config;

use crate::api::{EndpointView, PruneReport};
use crate::daemon::engine::EngineError;
use crate::daemon::handle::LocalEngine;
use crate::ipam::{AddrPool, Family, Pool};
use crate::ipam6::Pool6;
use crate::model::{Driver, Endpoint, EndpointSpec, Network, NetworkInspect, NetworkSpec};
use crate::state::{State, PREDEFINED};
use etcd::{Etcd, EtcdError};
use records::{EndpointRecord, Remotes};

/// How often a contended address reservation is tried again before giving up.
const RESERVE_TRIES: usize = 32;

/// Why a cluster-wide change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// etcd could not be reached or refused the call.
    #[error(transparent)]
    Store(#[from] EtcdError),
    /// This host holds no lease yet (the store has not answered since the daemon started).
    #[error("this host is not registered with the cluster store yet (etcd at {0})")]
    NoLease(String),
    /// Another host created a network of that name, or with that VNI, first.
    #[error("network {name} (VNI {vni}) already exists in the cluster")]
    Taken {
        /// The network's name.
        name: String,
        /// Its VNI.
        vni: u32,
    },
    /// A static address is held by another endpoint of the cluster.
    #[error("address {ip} is already in use in network {network} (cluster-wide)")]
    AddressTaken {
        /// The network.
        network: String,
        /// The address.
        ip: IpAddr,
    },
    /// No address is free, or the reservations kept colliding.
    #[error("no free address in network {network} across the cluster")]
    Exhausted {
        /// The network.
        network: String,
    },
    /// Hosts still have endpoints on the network.
    #[error("network {network} has active endpoints on hosts {hosts}")]
    HasEndpoints {
        /// The network.
        network: String,
        /// Their hosts' VTEPs.
        hosts: String,
    },
}

impl ClusterError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ClusterError::Store(EtcdError::BadUrl { .. }) => 500,
            ClusterError::Store(_) | ClusterError::NoLease(_) => 503,
            _ => 409,
        }
    }
}

/// This host's membership of the cluster.
#[derive(Debug)]
pub struct Cluster {
    etcd: Etcd,
    me: Ipv4Addr,
    /// This host's name, for the other hosts' `inspect`.
    node: String,
    ttl: i64,
    lease: AtomicI64,
    /// Held while this host reserves an address: its own connects never race each other
    /// for one address, so the compare-and-swap retries only against other hosts.
    reserving: tokio::sync::Mutex<()>,
    /// The other hosts' endpoints as last applied (for `inspect`).
    known: Mutex<Remotes>,
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl Cluster {
    /// A member of the cluster in `etcd`, advertising `me` (this host's VTEP, its uplink
    /// address), holding its records under a lease of `ttl` seconds.
    pub fn new(etcd: Etcd, me: Ipv4Addr, ttl: u32) -> Cluster {
        let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        Cluster {
            etcd,
            me,
            node,
            ttl: i64::from(ttl.max(2)),
            lease: AtomicI64::new(0),
            reserving: tokio::sync::Mutex::new(()),
            known: Mutex::new(Remotes::new()),
        }
    }

    /// Starts keeping the lease alive and following the store, on the current tokio runtime;
    /// `local` is the engine without the cluster (what the store's changes are applied to).
    pub fn start(self: &Arc<Self>, local: LocalEngine) {
        tokio::spawn(Arc::clone(self).keep_leased(local.clone()));
        tokio::spawn(Arc::clone(self).follow(local));
    }

    fn lease(&self) -> Result<i64, ClusterError> {
        match self.lease.load(Ordering::Relaxed) {
            0 => Err(ClusterError::NoLease(self.etcd.endpoints())),
            id => Ok(id),
        }
    }

    /// Renews the lease every third of its TTL, each member given that third to answer (so
    /// one that hangs leaves time to renew through another); when the lease is lost (or was
    /// never granted), takes a new one and publishes this host's endpoints again.
    async fn keep_leased(self: Arc<Self>, local: LocalEngine) {
        let period = Duration::from_millis((self.ttl as u64 * 1000 / 3).max(500));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let lease = self.lease.load(Ordering::Relaxed);
            let lost = match lease {
                0 => true,
                id => match self.etcd.keep_alive(id, period).await {
                    Ok(ttl) => ttl == 0,
                    Err(EtcdError::Unreachable { .. }) => false,
                    Err(e) => {
                        tracing::warn!("cluster lease {id:x}: {e}");
                        true
                    }
                },
            };
            if lost {
                match self.register(&local).await {
                    Ok(n) => tracing::info!(
                        "registered with the cluster store as {} ({n} endpoints published)",
                        self.me
                    ),
                    Err(e) => tracing::warn!("cannot register with the cluster store: {e}"),
                }
            }
        }
    }

    /// Takes a new lease and publishes this host and its overlay endpoints under it.
    async fn register(&self, local: &LocalEngine) -> Result<usize, EngineError> {
        let lease = self
            .etcd
            .grant(self.ttl)
            .await
            .map_err(ClusterError::from)?;
        let host = serde_json::json!({ "name": self.node });
        self.etcd
            .put(&records::host_key(self.me), &json(&host), lease)
            .await
            .map_err(ClusterError::from)?;
        let mut published = 0;
        for (net, eps) in local.overlays().await? {
            for e in eps {
                if self.republish(&net.spec.name, &e, lease).await? {
                    published += 1;
                }
            }
        }
        self.lease.store(lease, Ordering::Relaxed);
        Ok(published)
    }

    /// Publishes endpoint `e` of `network` under `lease`, taking over its records when an
    /// older lease of this host still holds them; false when its address now belongs to
    /// another host.
    async fn republish(
        &self,
        network: &str,
        e: &Endpoint,
        lease: i64,
    ) -> Result<bool, ClusterError> {
        let (mut items, record) = self.endpoint_items(network, e);
        let v4 = items[0].0.clone();
        items.push(record);
        if self.etcd.create_all(&items, lease).await? {
            return Ok(true);
        }
        let (held, _) = self.etcd.range(&records::ipam_prefix(network)).await?;
        let mine = held
            .iter()
            .any(|kv| kv.key == v4 && kv.value == self.me.to_string().as_bytes());
        if !mine {
            tracing::error!(
                "address {} of network {network} is held by another host: endpoint {} is not published",
                overlay_ip(e),
                e.spec.name
            );
            return Ok(false);
        }
        for (k, v) in &items {
            self.etcd.put(k, v, lease).await?;
        }
        Ok(true)
    }

    /// The address reservations (v4, then v6 on a dual-stack network) and the record of
    /// endpoint `e` of `network`.
    #[allow(clippy::type_complexity)]
    fn endpoint_items(
        &self,
        network: &str,
        e: &Endpoint,
    ) -> (Vec<(String, Vec<u8>)>, (String, Vec<u8>)) {
        let rec = EndpointRecord {
            id: e.id.clone(),
            name: e.spec.name.clone(),
            host: self.me,
            node: self.node.clone(),
            mac: e.mac,
            ip: overlay_ip(e),
            ip6: e.ip6,
            aliases: e.spec.aliases.clone(),
        };
        let held = || self.me.to_string().into_bytes();
        let reservations = std::iter::once(IpAddr::V4(overlay_ip(e)))
            .chain(e.ip6.map(IpAddr::V6))
            .map(|ip| (records::ipam_key(network, ip), held()))
            .collect();
        (
            reservations,
            (records::endpoint_key(network, &e.id), json(&rec)),
        )
    }

    /// The overlay network `key` names on this host, with its local endpoints.
    async fn overlay(
        &self,
        local: &LocalEngine,
        key: &str,
    ) -> Result<Option<(Network, Vec<Endpoint>)>, EngineError> {
        let Ok(view) = local.inspect(key.to_string()).await else {
            return Ok(None);
        };
        Ok(local
            .overlays()
            .await?
            .into_iter()
            .find(|(n, _)| n.spec.name == view.name))
    }

    /// `network inspect`: for an overlay, docker's `Peers` (this host and every host with
    /// endpoints on it) and the other hosts' endpoints among `Containers` (keyed `ep-ID`, as
    /// docker lists endpoints of other hosts), every entry with its host's VTEP.
    pub async fn inspect(
        &self,
        local: &LocalEngine,
        key: String,
    ) -> Result<NetworkInspect, EngineError> {
        let mut view = local.inspect(key).await?;
        if view.driver != Driver::Overlay.as_str() {
            return Ok(view);
        }
        let remote = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&view.name)
            .cloned();
        add_peers(&mut view, (self.me, &self.node), remote.as_ref());
        Ok(view)
    }

    /// `network create` of an overlay: made here, then published with its VNI in one
    /// compare-and-swap (undone here when another host was first).
    pub async fn create_network(
        &self,
        local: &LocalEngine,
        spec: NetworkSpec,
    ) -> Result<NetworkInspect, EngineError> {
        if spec.driver != Driver::Overlay {
            return local.create_network(spec).await;
        }
        let name = spec.name.clone();
        let mut view = local.create_network(spec.clone()).await?;
        if spec.subnet.is_none() || (spec.enable_ipv6 && spec.subnet6.is_none()) {
            // Every host's part must hold the same addressing, and addresses are reserved
            // cluster-wide and then given as static ones, which docker's rules allow only on
            // a user-given subnet: the subnet picked here becomes the network's own.
            if let Some((net, _)) = self.overlay(local, &name).await? {
                local.remove_network(name.clone()).await?;
                view = local.create_network(fixed(&net)).await?;
            }
        }
        let published = match self.overlay(local, &name).await? {
            Some((net, _)) => self.publish_network(&net).await,
            None => return Ok(view),
        };
        match published {
            Ok(()) => Ok(view),
            Err(e) => {
                if let Err(undo) = local.remove_network(name.clone()).await {
                    tracing::error!("cannot undo network {name} after {e}: {undo}");
                }
                Err(e.into())
            }
        }
    }

    async fn publish_network(&self, net: &Network) -> Result<(), ClusterError> {
        let rec = fixed(net);
        let vni = rec.options.vni.unwrap_or_default();
        let items = [
            (records::network_key(&rec.name), json(&rec)),
            (records::vni_key(vni), rec.name.clone().into_bytes()),
        ];
        if self.etcd.create_all(&items, 0).await? {
            Ok(())
        } else {
            Err(ClusterError::Taken {
                name: rec.name,
                vni,
            })
        }
    }

    /// `network rm` of an overlay: refused while any host has endpoints on it; removed from
    /// the store with its users' records (every host's watch removes its part) and here.
    pub async fn remove_network(
        &self,
        local: &LocalEngine,
        key: String,
    ) -> Result<String, EngineError> {
        let Some((net, _)) = self.overlay(local, &key).await? else {
            return local.remove_network(key).await;
        };
        let name = net.spec.name.clone();
        let (eps, _) = self
            .etcd
            .range(&records::endpoints_prefix(&name))
            .await
            .map_err(ClusterError::from)?;
        if !eps.is_empty() {
            let hosts: BTreeSet<String> = eps
                .iter()
                .filter_map(|kv| serde_json::from_slice::<EndpointRecord>(&kv.value).ok())
                .map(|r| r.host.to_string())
                .collect();
            return Err(ClusterError::HasEndpoints {
                network: name,
                hosts: hosts.into_iter().collect::<Vec<_>>().join(", "),
            }
            .into());
        }
        let vni = net.spec.options.vni.unwrap_or_default();
        let (users, _) = self
            .etcd
            .range(&records::users_prefix(&name))
            .await
            .map_err(ClusterError::from)?;
        let keys: Vec<String> = [records::network_key(&name), records::vni_key(vni)]
            .into_iter()
            .chain(users.into_iter().map(|kv| kv.key))
            .collect();
        self.etcd
            .delete_all(&keys)
            .await
            .map_err(ClusterError::from)?;
        match local.remove_network(name.clone()).await {
            // The watch removed it first.
            Err(e) if e.status() == 404 => Ok(name),
            r => r,
        }
    }

    /// `network prune`: every user network without endpoints here, as without a cluster,
    /// except that overlays go cluster-wide and stay while other hosts have endpoints on them
    /// or docker networks (of any host) use them.
    pub async fn prune(&self, local: &LocalEngine) -> Result<PruneReport, EngineError> {
        let mut report = PruneReport::default();
        for n in local.list().await? {
            if !n.containers.is_empty() || PREDEFINED.contains(&n.name.as_str()) {
                continue;
            }
            if n.driver == Driver::Overlay.as_str() && self.used(&n.name).await? {
                continue;
            }
            match self.remove_network(local, n.name).await {
                Ok(name) => report.networks_deleted.push(name),
                Err(EngineError::Cluster(ClusterError::HasEndpoints { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        report.networks_deleted.sort();
        Ok(report)
    }

    /// `network connect` to an overlay: the addresses reserved cluster-wide first, the
    /// endpoint made here with them, then published under this host's lease.
    pub async fn connect(
        &self,
        local: &LocalEngine,
        mut spec: EndpointSpec,
    ) -> Result<EndpointView, EngineError> {
        let Some((net, _)) = self.overlay(local, &spec.network).await? else {
            return local.connect(spec).await;
        };
        let name = net.spec.name.clone();
        let lease = self.lease()?;
        let (ip, ip6) = self.reserve_both(&net, &spec, lease).await?;
        spec.ip = Some(ip);
        spec.ip6 = ip6;
        let unreserve = || async {
            let keys: Vec<String> = std::iter::once(IpAddr::V4(ip))
                .chain(ip6.map(IpAddr::V6))
                .map(|ip| records::ipam_key(&name, ip))
                .collect();
            if let Err(e) = self.etcd.delete_all(&keys).await {
                tracing::warn!("cannot release {ip} of {name} in the cluster store: {e}");
            }
        };
        let view = match local.connect(spec).await {
            Ok(v) => v,
            Err(e) => {
                unreserve().await;
                return Err(e);
            }
        };
        let e = local
            .overlays()
            .await?
            .into_iter()
            .filter(|(n, _)| n.spec.name == name)
            .flat_map(|(_, eps)| eps)
            .find(|e| e.id == view.id);
        let published = match e {
            Some(e) => {
                let (_, record) = self.endpoint_items(&name, &e);
                self.etcd.put(&record.0, &record.1, lease).await
            }
            None => Ok(()),
        };
        if let Err(err) = published {
            if let Err(undo) = local.disconnect(name.clone(), view.id.clone()).await {
                tracing::error!("cannot undo endpoint {} after {err}: {undo}", view.name);
            }
            unreserve().await;
            return Err(ClusterError::from(err).into());
        }
        Ok(view)
    }

    /// Reserves the endpoint's v4 address and, on a dual-stack network, its v6 one (each the
    /// one asked for, or the lowest free across the cluster); none is left reserved when
    /// one fails.
    async fn reserve_both(
        &self,
        net: &Network,
        spec: &EndpointSpec,
        lease: i64,
    ) -> Result<(Ipv4Addr, Option<std::net::Ipv6Addr>), ClusterError> {
        let name = &net.spec.name;
        let exhausted = || ClusterError::Exhausted {
            network: name.clone(),
        };
        let (Some(subnet), Some(gateway)) = (net.subnet, net.gateway) else {
            return Err(exhausted());
        };
        let _one_at_a_time = self.reserving.lock().await;
        let pool = Pool::new(subnet, net.spec.ip_range, gateway, &net.spec.aux_addresses);
        let ip = self.reserve(name, pool, spec.ip, lease).await?;
        let (Some(subnet6), Some(gateway6)) = (net.subnet6, net.gateway6) else {
            return Ok((ip, None));
        };
        let pool6 = Pool6::new(
            subnet6,
            net.spec.ip_range6,
            gateway6,
            &net.spec.aux_addresses6,
        );
        match self.reserve(name, pool6, spec.ip6, lease).await {
            Ok(ip6) => Ok((ip, Some(ip6))),
            Err(e) => {
                if let Err(undo) = self.etcd.delete_all(&[records::ipam_key(name, ip)]).await {
                    tracing::warn!("cannot release {ip} of {name} in the cluster store: {undo}");
                }
                Err(e)
            }
        }
    }

    /// Reserves `asked`, or the lowest address of `base` free across the cluster, in network
    /// `name` (the store's reservations of the other family do not parse as `F`'s addresses
    /// and are skipped).
    async fn reserve<F: Family>(
        &self,
        name: &str,
        base: AddrPool<F>,
        asked: Option<F::Addr>,
        lease: i64,
    ) -> Result<F::Addr, ClusterError>
    where
        F::Addr: Into<IpAddr> + FromStr,
    {
        let exhausted = || ClusterError::Exhausted {
            network: name.to_string(),
        };
        let prefix = records::ipam_prefix(name);
        for _ in 0..RESERVE_TRIES {
            let ip = match asked {
                Some(ip) => ip,
                None => {
                    let (held, _) = self.etcd.range(&prefix).await?;
                    let mut pool = base.clone();
                    for kv in held {
                        if let Ok(ip) = kv.key[prefix.len()..].parse::<F::Addr>() {
                            let _ = pool.claim(ip);
                        }
                    }
                    pool.allocate().map_err(|_| exhausted())?
                }
            };
            let item = [(
                records::ipam_key(name, ip.into()),
                self.me.to_string().into_bytes(),
            )];
            if self.etcd.create_all(&item, lease).await? {
                return Ok(ip);
            }
            if asked.is_some() {
                return Err(ClusterError::AddressTaken {
                    network: name.to_string(),
                    ip: ip.into(),
                });
            }
        }
        Err(exhausted())
    }

    /// The addresses (both families) reserved in overlay network `name` across the cluster.
    pub async fn reserved(&self, name: &str) -> Result<Vec<IpAddr>, ClusterError> {
        let prefix = records::ipam_prefix(name);
        let (held, _) = self.etcd.range(&prefix).await?;
        Ok(held
            .iter()
            .filter_map(|kv| kv.key[prefix.len()..].parse().ok())
            .collect())
    }

    /// Records that `user` (a docker network of this host) uses overlay network `name`; the
    /// record outlives this host's lease, as docker's network does.
    pub async fn add_user(&self, name: &str, user: &str) -> Result<(), ClusterError> {
        let key = records::user_key(name, self.me, user);
        Ok(self.etcd.put(&key, self.node.as_bytes(), 0).await?)
    }

    /// Whether a docker network of any host uses overlay network `name`.
    async fn used(&self, name: &str) -> Result<bool, ClusterError> {
        let (users, _) = self.etcd.range(&records::users_prefix(name)).await?;
        Ok(!users.is_empty())
    }

    /// Drops `user`'s record of [`Cluster::add_user`]; how many users, on any host, overlay
    /// network `name` has left.
    pub async fn drop_user(&self, name: &str, user: &str) -> Result<usize, ClusterError> {
        let key = records::user_key(name, self.me, user);
        self.etcd.delete_all(&[key]).await?;
        let (left, _) = self.etcd.range(&records::users_prefix(name)).await?;
        Ok(left.len())
    }

    /// `network disconnect` from an overlay: removed here, then its records from the store.
    pub async fn disconnect(
        &self,
        local: &LocalEngine,
        network: String,
        endpoint: String,
    ) -> Result<(), EngineError> {
        let found = self.overlay(local, &network).await?;
        local.disconnect(network, endpoint.clone()).await?;
        let Some((net, eps)) = found else {
            return Ok(());
        };
        let name = &net.spec.name;
        if let Some(e) = eps
            .iter()
            .find(|e| e.spec.name == endpoint || e.id.starts_with(&endpoint))
        {
            let (reservations, record) = self.endpoint_items(name, e);
            let keys: Vec<String> = std::iter::once(record.0)
                .chain(reservations.into_iter().map(|(k, _)| k))
                .collect();
            if let Err(err) = self.etcd.delete_all(&keys).await {
                tracing::warn!(
                    "endpoint {} left {name} here, but not in the store: {err}",
                    e.spec.name
                );
            }
        }
        Ok(())
    }
}

/// Adds to the view of an overlay network this host (`me`: VTEP and name) and the hosts of
/// its `remote` endpoints as `Peers`, and those endpoints to `Containers`.
fn add_peers(
    view: &mut NetworkInspect,
    me: (Ipv4Addr, &str),
    remote: Option<&Vec<EndpointRecord>>,
) {
    let prefix = view
        .ipam
        .config
        .first()
        .and_then(|c| c.subnet.split_once('/'))
        .map_or("32".to_string(), |(_, p)| p.to_string());
    let prefix6 = view
        .ipam
        .config
        .iter()
        .find_map(|c| c.subnet.contains(':').then(|| c.subnet.split_once('/')))
        .flatten()
        .map_or("128".to_string(), |(_, p)| p.to_string());
    let mut peers = std::collections::BTreeMap::from([(me.0, me.1.to_string())]);
    for c in view.containers.values_mut() {
        c.host = Some(me.0.to_string());
    }
    for r in remote.into_iter().flatten() {
        peers.entry(r.host).or_insert_with(|| r.node.clone());
        let entry = crate::model::ContainerView {
            name: r.name.clone(),
            endpoint_id: r.id.clone(),
            mac_address: r.mac.to_string(),
            ipv4_address: format!("{}/{prefix}", r.ip),
            ipv6_address: r
                .ip6
                .map(|ip6| format!("{ip6}/{prefix6}"))
                .unwrap_or_default(),
            resolv_conf_path: None,
            hosts_path: None,
            host: Some(r.host.to_string()),
        };
        view.containers.insert(format!("ep-{}", r.id), entry);
    }
    let peers = peers.into_iter().map(|(ip, name)| crate::model::PeerView {
        name: if name.is_empty() {
            ip.to_string()
        } else {
            name
        },
        ip: ip.to_string(),
    });
    view.swarm.peers = Some(peers.collect());
}

/// An overlay endpoint's address: overlay networks always have IPv4 (`--ipv4=false` needs
/// the bridge driver), so every endpoint of one has a v4 address.
fn overlay_ip(e: &Endpoint) -> Ipv4Addr {
    e.ip.unwrap_or(Ipv4Addr::UNSPECIFIED)
}

/// `net`'s spec with the addressing this host decided for it (subnet, gateway, VNI), as every
/// host creates its part from it.
fn fixed(net: &Network) -> NetworkSpec {
    let mut spec = net.spec.clone();
    spec.subnet = net.subnet;
    spec.gateway = net.gateway;
    spec.subnet6 = net.subnet6;
    spec.gateway6 = net.gateway6;
    spec
}

/// Puts the other hosts' endpoints (`remotes`, by overlay network name) into `cfg`'s overlay
/// tables; records that clash with this host's endpoints or leave the subnet are skipped (a
/// v6 address that does, or on a network without IPv6, is left out), so a bad record in the
/// store never makes the dataplane refuse a configuration.
pub fn fill_remotes(state: &State, cfg: &mut Config, remotes: &Remotes) {
    for o in &mut cfg.overlays {
        let Some(net) = state.networks().find(|n| n.dataplane_id == o.network) else {
            continue;
        };
        let (Some(list), Some(subnet)) = (remotes.get(&net.spec.name), net.subnet) else {
            continue;
        };
        let local: Vec<&Endpoint> = state.endpoints_of(&net.id).collect();
        o.remotes = records::remote_endpoints(list)
            .filter(|r| subnet.contains(r.ipv4) && !r.mac.is_multicast())
            .filter(|r| !local.iter().any(|e| e.mac == r.mac || e.ip == Some(r.ipv4)))
            .map(|mut r| {
                r.ipv6 = r.ipv6.filter(|ip6| {
                    net.subnet6.is_some_and(|s| s.contains(*ip6))
                        && !local.iter().any(|e| e.ip6 == Some(*ip6))
                });
                r
            })
            .collect();
    }
}
