//! The daemon's single writer: every change is validated against a copy of the state,
//! plumbed (interface, dataplane port), applied to the dataplane (an atomic table swap), and
//! persisted, in that order; a failure at any step undoes the steps before it, so a refused
//! or failed request leaves nothing half-applied. On start it restores what the database
//! holds: endpoints whose interface is gone are released, interfaces no endpoint owns are
//! deleted, and the rest are forwarded again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use sluice_dataplane::config::{Config, Ipv4Cidr, NatConfig};
use sluice_dataplane::pipeline::Dataplane;
use sluice_dataplane::tables::ConfigError;
use sluice_dataplane::time::Millis;

use crate::api::{ConntrackView, EndpointView, FdbView, PruneReport, StatsView};
use crate::cluster::records::Remotes;
use crate::compile::{dataplane_config, UplinkSettings};
use crate::daemon::names::Names;
use crate::daemon::plumbing::{Attachment, Plumbing, PlumbingError};
use crate::daemon::stats;
use crate::dns::files::FilesError;
use crate::driver;
use crate::model::{Driver, Endpoint, EndpointSpec, Network, NetworkInspect, NetworkSpec};
use crate::netlink::{SandboxIface, SandboxIpv6};
use crate::state::{State, StateError, PREDEFINED};
use crate::store::{Store, StoreError};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Refused by the rules or the database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A name option cannot be honoured (a `--link` to a missing endpoint).
    #[error(transparent)]
    Names(#[from] FilesError),
    /// The interface or port could not be set up.
    #[error(transparent)]
    Plumbing(#[from] PlumbingError),
    /// The dataplane refused the configuration (a bug if the state's rules passed).
    #[error("dataplane refused the configuration: {0}")]
    Dataplane(#[from] ConfigError),
    /// The cluster store refused or could not be reached.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The daemon is shutting down.
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

impl From<StateError> for EngineError {
    fn from(e: StateError) -> Self {
        EngineError::Store(StoreError::State(e))
    }
}

impl EngineError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        use StateError as S;
        match self {
            EngineError::Store(StoreError::State(s)) => match s {
                S::NoSuchNetwork(_) | S::NoSuchEndpoint { .. } => 404,
                S::Predefined(_) => 403,
                S::NameTaken(_)
                | S::IdTaken(_)
                | S::Overlap { .. }
                | S::Overlap6 { .. }
                | S::Ipam6 { .. }
                | S::HasEndpoints { .. }
                | S::AlreadyConnected { .. }
                | S::EndpointNameTaken { .. }
                | S::MacInUse { .. }
                | S::PortClash { .. }
                | S::HostPortsExhausted { .. }
                | S::PoolsExhausted
                | S::Ipam { .. }
                | S::TooManyEndpoints
                | S::TooManyNetworks => 409,
                S::Invalid(i) => i.status(),
                _ => 400,
            },
            EngineError::Names(FilesError::NoLinkTarget { .. }) => 404,
            EngineError::Names(FilesError::Io { .. }) => 500,
            EngineError::Names(_) => 400,
            EngineError::Plumbing(p) => p.client_status().unwrap_or(500),
            EngineError::Cluster(c) => c.status(),
            EngineError::ShuttingDown => 503,
            _ => 500,
        }
    }
}

/// The state, the dataplane and the machine, changed together.
pub struct Engine<P: Plumbing> {
    store: Store,
    dp: Arc<Dataplane>,
    plumbing: P,
    uplink: Option<UplinkSettings>,
    nat: NatConfig,
    names: Option<Names>,
    /// Overlay endpoints on other hosts, by network name, as the cluster store lists them.
    remotes: Remotes,
}

/// What restoring found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Endpoints forwarded again.
    pub endpoints: usize,
    /// Endpoints released because their interface was gone (`network/name`).
    pub released: Vec<String>,
    /// Interfaces deleted because no endpoint owned them.
    pub deleted: Vec<String>,
    /// Networks sluice-cni made that a release left empty, removed as the plugin's last DEL
    /// would have removed them.
    pub removed_networks: Vec<String>,
}

impl<P: Plumbing> Engine<P> {
    /// Restores the stored state onto the machine and starts forwarding.
    pub async fn open(
        mut store: Store,
        mut plumbing: P,
        uplink: Option<UplinkSettings>,
        nat: NatConfig,
        names: Option<Names>,
    ) -> Result<(Engine<P>, Restored), EngineError> {
        let mut restored = Restored::default();
        if let Some(u) = &uplink {
            store.set_own_addresses(vec![(format!("uplink {}", u.name), u.ip)]);
        }
        let endpoints: Vec<Endpoint> = store.state().endpoints().cloned().collect();
        for e in endpoints {
            if plumbing.exists(&e.host_ifname).await? {
                restored.endpoints += 1;
                continue;
            }
            let net = store.state().network(&e.network_id)?.spec.name.clone();
            store.disconnect(&e.network_id, &e.id)?;
            if let Some(n) = &names {
                n.forget(&e.id);
            }
            restored.released.push(format!("{net}/{}", e.spec.name));
            if cni_made_and_empty(store.state(), &e.network_id) {
                store.remove_network(&e.network_id)?;
                restored.removed_networks.push(net);
            }
        }
        let owned: HashSet<String> = store
            .state()
            .endpoints()
            .map(|e| e.host_ifname.clone())
            .collect();
        for name in plumbing.ours().await? {
            if !owned.contains(&name) {
                plumbing.delete_link(&name).await?;
                restored.deleted.push(name);
            }
        }
        let cfg = dataplane_config(store.state(), uplink.as_ref(), nat.clone());
        let dp = Dataplane::new(&cfg)?;
        plumbing.start(&dp)?;
        if let Some(n) = &names {
            n.sync(store.state(), None);
        }
        let engine = Engine {
            store,
            dp,
            plumbing,
            uplink,
            nat,
            names,
            remotes: Remotes::new(),
        };
        Ok((engine, restored))
    }

    /// The current state.
    pub fn state(&self) -> &State {
        self.store.state()
    }

    /// The dataplane (for counters and table snapshots).
    pub fn dataplane(&self) -> &Arc<Dataplane> {
        &self.dp
    }

    fn config(&self, state: &State) -> Config {
        let mut cfg = dataplane_config(state, self.uplink.as_ref(), self.nat.clone());
        crate::cluster::fill_remotes(state, &mut cfg, &self.remotes);
        cfg
    }

    /// Replaces the overlay endpoints of other hosts (from the cluster store): in the
    /// dataplane's remote tables and in the embedded resolvers' names.
    pub fn set_remotes(&mut self, remotes: Remotes) -> Result<(), EngineError> {
        if remotes == self.remotes {
            return Ok(());
        }
        let old = std::mem::replace(&mut self.remotes, remotes);
        if let Err(e) = self.dp.apply(&self.config(self.store.state())) {
            self.remotes = old;
            return Err(e.into());
        }
        if let Some(n) = &mut self.names {
            n.set_remotes(&self.remotes);
            n.sync(self.store.state(), Some(&[]));
        }
        Ok(())
    }

    /// The overlay networks and their endpoints on this host (for the cluster store).
    pub fn overlays(&self) -> Vec<(Network, Vec<Endpoint>)> {
        let s = self.state();
        s.networks()
            .filter(|n| n.spec.driver == Driver::Overlay)
            .map(|n| (n.clone(), s.endpoints_of(&n.id).cloned().collect()))
            .collect()
    }

    /// Puts the dataplane back on the committed state after a failed step.
    fn reapply_current(&self) {
        if let Err(e) = self.dp.apply(&self.config(self.store.state())) {
            tracing::error!("cannot restore the dataplane configuration: {e}");
        }
    }

    /// `network create`.
    pub async fn create_network(
        &mut self,
        spec: NetworkSpec,
    ) -> Result<NetworkInspect, EngineError> {
        let pending = self.store.prepare_create_network(spec)?;
        let cfg = self.config(pending.state());
        // The network's own interfaces (macvlan parent, own uplink) must exist; their ports
        // are opened before the tables that use them are applied.
        let own: Vec<_> = pending
            .value()
            .own_ports()
            .filter_map(|id| cfg.ports.iter().find(|p| p.id == id).cloned())
            .collect();
        for p in &own {
            if !self.plumbing.exists(&p.name).await? {
                return Err(PlumbingError::NoSuchInterface(p.name.clone()).into());
            }
        }
        let mut opened = Vec::new();
        let undo = |en: &mut Self, opened: &[sluice_dataplane::frame::PortId]| {
            for id in opened {
                en.plumbing.close_port(*id);
            }
        };
        for p in &own {
            if let Err(e) = self.plumbing.open_port(p) {
                undo(self, &opened);
                return Err(e.into());
            }
            opened.push(p.id);
        }
        if let Err(e) = self.dp.apply(&cfg) {
            undo(self, &opened);
            return Err(e.into());
        }
        match self.store.commit(pending) {
            Ok(n) => Ok(driver::inspect(&n, [])),
            Err(e) => {
                self.reapply_current();
                undo(self, &opened);
                Err(e.into())
            }
        }
    }

    /// `network rm`.
    pub async fn remove_network(&mut self, key: &str) -> Result<String, EngineError> {
        let pending = self.store.prepare_remove_network(key)?;
        self.dp.apply(&self.config(pending.state()))?;
        for id in pending.value().own_ports() {
            self.plumbing.close_port(id);
        }
        match self.store.commit(pending) {
            Ok(n) => Ok(n.spec.name),
            Err(e) => {
                self.reapply_current();
                Err(e.into())
            }
        }
    }

    /// `network prune`: every user network without endpoints.
    pub async fn prune(&mut self) -> Result<PruneReport, EngineError> {
        let idle: Vec<String> = self
            .state()
            .networks()
            .filter(|n| !PREDEFINED.contains(&n.spec.name.as_str()))
            .filter(|n| self.state().endpoints_of(&n.id).next().is_none())
            .map(|n| n.id.clone())
            .collect();
        let mut report = PruneReport::default();
        for id in idle {
            report
                .networks_deleted
                .push(self.remove_network(&id).await?);
        }
        report.networks_deleted.sort();
        Ok(report)
    }

    /// `network ls`.
    pub fn list(&self) -> Vec<NetworkInspect> {
        let s = self.state();
        let mut out: Vec<NetworkInspect> = s
            .networks()
            .map(|n| self.with_files(driver::inspect(n, s.endpoints_of(&n.id))))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// `network inspect`.
    pub fn inspect(&self, key: &str) -> Result<NetworkInspect, EngineError> {
        Ok(self.with_files(self.state().inspect(key)?))
    }

    /// Adds each endpoint's resolv.conf and hosts paths (when sluiced writes them).
    fn with_files(&self, mut n: NetworkInspect) -> NetworkInspect {
        if let Some(names) = &self.names {
            for (id, c) in n.containers.iter_mut() {
                let f = names.files(id);
                c.resolv_conf_path = Some(f.resolv_conf.display().to_string());
                c.hosts_path = Some(f.hosts.display().to_string());
            }
        }
        n
    }

    /// `network connect`: address, interface in the sandbox, dataplane port, persisted.
    pub async fn connect(&mut self, spec: EndpointSpec) -> Result<EndpointView, EngineError> {
        let t0 = Instant::now();
        let pending = self.store.prepare_connect(spec)?;
        let e = pending.value().clone();
        let net = pending.state().network(&e.network_id)?.clone();
        let cfg = self.config(pending.state());
        let port = cfg
            .ports
            .iter()
            .find(|p| p.id == e.port)
            .cloned()
            .ok_or_else(|| PlumbingError::NoPort(e.spec.name.clone()))?;
        if let Some(n) = &self.names {
            n.texts(pending.state(), &e)?;
        }
        let default_route = !net.spec.internal && !self.has_default_route(&e.spec.sandbox);
        let on_link =
            default_route && crate::driver::of(net.spec.driver).default_route_on_link(&net);
        let gateway = net.gateway.filter(|_| default_route && !on_link);
        let gateway6 = net.gateway6.filter(|_| default_route && !on_link);
        let attachment = Attachment {
            sandbox: e.spec.sandbox.clone(),
            iface: SandboxIface {
                host_ifname: e.host_ifname.clone(),
                sandbox_ifname: e.sandbox_ifname.clone(),
                mac: e.mac,
                ip: e.ip.map(|addr| Ipv4Cidr {
                    addr,
                    prefix: net.subnet.map_or(32, |s| s.prefix),
                }),
                gateway,
                default_on_link: on_link,
                mtu: crate::driver::of(net.spec.driver).mtu(&net),
                ipv6: e.ip6.map(|addr| SandboxIpv6 {
                    addr,
                    prefix: net.subnet6.map_or(128, |s| s.prefix),
                    gateway: gateway6,
                }),
            },
            placement: e.spec.placement,
        };
        let t1 = Instant::now();
        self.plumbing.attach(&attachment, &port).await?;
        let t2 = Instant::now();
        if let Err(err) = self.dp.apply(&cfg) {
            self.undo_attach(&e).await;
            return Err(err.into());
        }
        let t3 = Instant::now();
        match self.store.commit(pending) {
            Ok(e) => {
                let t4 = Instant::now();
                let files = self.names.as_ref().map(|n| {
                    n.sync(self.store.state(), Some(&[&e.spec.sandbox]));
                    n.files(&e.id)
                });
                let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
                tracing::debug!(
                    endpoint = %e.spec.name,
                    prepare_ms = ms(t0, t1),
                    plumb_ms = ms(t1, t2),
                    apply_ms = ms(t2, t3),
                    commit_ms = ms(t3, t4),
                    names_ms = ms(t4, Instant::now()),
                    "connected"
                );
                let mut view = EndpointView::new(&e, &net, files);
                view.default_route = match (gateway, gateway6) {
                    (Some(g), _) => Some(g.to_string()),
                    (None, g6) => g6.filter(|_| e.ip.is_none()).map(|g| g.to_string()),
                };
                Ok(view)
            }
            Err(err) => {
                self.reapply_current();
                self.undo_attach(&e).await;
                Err(err.into())
            }
        }
    }

    /// Whether an endpoint of a routed network is already in `sandbox`: that one's connect set
    /// the sandbox's default route, and a second default route is not added.
    fn has_default_route(&self, sandbox: &crate::model::Sandbox) -> bool {
        let s = self.state();
        s.endpoints().any(|o| {
            &o.spec.sandbox == sandbox
                && s.network(&o.network_id).is_ok_and(|n| {
                    (n.gateway.is_some() || n.gateway6.is_some()) && !n.spec.internal
                })
        })
    }

    async fn undo_attach(&mut self, e: &Endpoint) {
        if let Err(err) = self.plumbing.detach(&e.host_ifname, e.port).await {
            tracing::error!(
                "cannot remove {} after a failed connect: {err}",
                e.host_ifname
            );
        }
    }

    /// `network disconnect`: the port leaves the dataplane, the interface is deleted, the
    /// address released.
    pub async fn disconnect(&mut self, network: &str, endpoint: &str) -> Result<(), EngineError> {
        let pending = self.store.prepare_disconnect(network, endpoint)?;
        let e = pending.value().clone();
        self.dp.apply(&self.config(pending.state()))?;
        if let Err(err) = self.plumbing.detach(&e.host_ifname, e.port).await {
            tracing::warn!("disconnect {}: {err}", e.spec.name);
        }
        self.store.commit(pending)?;
        if let Some(n) = &self.names {
            n.forget(&e.id);
            n.sync(self.store.state(), Some(&[&e.spec.sandbox]));
        }
        Ok(())
    }

    /// `ps`: every endpoint, by network then name.
    pub fn endpoints(&self) -> Vec<EndpointView> {
        let s = self.state();
        let mut out: Vec<EndpointView> = s
            .endpoints()
            .filter_map(|e| {
                let n = s.network(&e.network_id).ok()?;
                let files = self.names.as_ref().map(|names| names.files(&e.id));
                Some(EndpointView::new(e, n, files))
            })
            .collect();
        out.sort_by(|a, b| (&a.network, &a.name).cmp(&(&b.network, &b.name)));
        out
    }

    /// `stats`: the dataplane's counters and the kernel's counts of its ports, named by
    /// endpoint and network, with the flows charged to each endpoint.
    pub fn stats(&self) -> StatsView {
        let dataplane = self.dp.stats_with_flows();
        let flows = {
            let ct = self.dp.conntrack();
            dataplane
                .ports
                .iter()
                .map(|p| (p.id, ct.owned_by(p.id)))
                .collect()
        };
        let sources = stats::Sources {
            dataplane: &dataplane,
            tables: &self.dp.tables(),
            kernel: &self.plumbing.kernel_stats(),
            flows: &flows,
        };
        stats::view(self.state(), &sources)
    }

    fn network_name(&self, id: Option<sluice_dataplane::frame::NetworkId>) -> String {
        id.and_then(|id| self.state().networks().find(|n| n.dataplane_id == id))
            .map(|n| n.spec.name.clone())
            .unwrap_or_default()
    }

    /// `conntrack ls`.
    pub fn conntrack(&self) -> Vec<ConntrackView> {
        let mut out: Vec<ConntrackView> = self
            .dp
            .conntrack_entries(Millis::now())
            .into_iter()
            .map(|c| ConntrackView {
                protocol: format!("{:?}", c.protocol).to_lowercase(),
                src: c.original.src.to_string(),
                dst: c.original.dst.to_string(),
                reply_src: c.reply.src.to_string(),
                reply_dst: c.reply.dst.to_string(),
                state: c.state.to_string(),
                expires_in_secs: c.expires_in_secs,
                network: self.network_name(c.network),
            })
            .collect();
        out.sort_by(|a, b| (&a.network, &a.src, &a.dst).cmp(&(&b.network, &b.src, &b.dst)));
        out
    }

    /// `fdb ls`.
    pub fn fdb(&self) -> Vec<FdbView> {
        let tables = self.dp.tables();
        let s = self.state();
        let mut out: Vec<FdbView> = self
            .dp
            .fdb_entries(Millis::now())
            .into_iter()
            .map(|f| FdbView {
                network: self.network_name(Some(f.network)),
                vlan: f.entry.vlan,
                mac: f.entry.mac.to_string(),
                port: tables
                    .port(f.entry.port)
                    .map(|p| p.config.name.clone())
                    .unwrap_or_default(),
                endpoint: s
                    .endpoints()
                    .find(|e| e.port == f.entry.port)
                    .map(|e| e.spec.name.clone())
                    .unwrap_or_default(),
                is_static: f.entry.is_static,
                idle_secs: f.entry.idle_secs,
            })
            .collect();
        out.sort_by(|a, b| (&a.network, a.vlan, &a.mac).cmp(&(&b.network, b.vlan, &b.mac)));
        out
    }

    /// Stops forwarding; interfaces and state stay for the next start.
    pub fn shutdown(mut self) {
        self.plumbing.stop();
    }
}

/// Whether network `id` was made by sluice-cni and has no endpoint left.
fn cni_made_and_empty(state: &State, id: &str) -> bool {
    state.network(id).is_ok_and(|n| {
        n.spec
            .labels
            .get(crate::api::CREATED_BY_LABEL)
            .map(String::as_str)
            == Some(crate::api::CNI_CREATOR)
            && state.endpoints_of(&n.id).next().is_none()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::daemon::plumbing::fake::Fake;
    use crate::model::Sandbox;
    use crate::store::tests::TempDb;
    use std::path::PathBuf;

    pub(crate) fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn open(db: &TempDb, fake: Fake) -> (Engine<Fake>, Restored) {
        block(Engine::open(
            Store::open(&db.0).unwrap(),
            fake,
            None,
            NatConfig::default(),
            None,
        ))
        .unwrap()
    }

    fn ep(network: &str, name: &str, ns: &str) -> EndpointSpec {
        EndpointSpec {
            sandbox: Sandbox::Netns(PathBuf::from(format!("/run/netns/{ns}"))),
            ..crate::state::tests::ep(network, name, 0)
        }
    }

    fn net(name: &str, subnet: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            subnet: Some(subnet.parse().unwrap()),
            ..NetworkSpec::default()
        }
    }

    #[test]
    fn connect_plumbs_applies_and_persists() {
        let db = TempDb::new("connect");
        let (mut en, _) = open(&db, Fake::default());
        assert!(en.plumbing.started);
        block(en.create_network(net("a", "10.9.0.0/24"))).unwrap();
        let v = block(en.connect(ep("a", "web", "x"))).unwrap();
        assert_eq!(v.ipv4, "10.9.0.2/24");
        let link = &en.plumbing.links[&v.host_ifname].iface;
        assert_eq!(link.sandbox_ifname, "eth0");
        assert_eq!(link.gateway, Some("10.9.0.1".parse().unwrap()));
        assert!(en
            .dp
            .tables()
            .ports()
            .any(|p| p.config.name == v.host_ifname));
        let second = block(en.connect(ep("bridge", "web", "x"))).unwrap();
        let link = &en.plumbing.links[&second.host_ifname].iface;
        assert_eq!(
            (link.sandbox_ifname.as_str(), link.gateway),
            ("eth1", None),
            "only the sandbox's first network sets the default route"
        );
        assert_eq!(en.endpoints().len(), 2);
    }

    #[test]
    fn dual_stack_endpoints_get_a_v6_address_and_default_route() {
        let db = TempDb::new("dual");
        let (mut en, _) = open(&db, Fake::default());
        let spec = NetworkSpec {
            enable_ipv6: true,
            subnet6: Some("fd00:9::/64".parse().unwrap()),
            ..net("a", "10.9.0.0/24")
        };
        block(en.create_network(spec)).unwrap();
        let v = block(en.connect(ep("a", "web", "x"))).unwrap();
        assert_eq!(v.ipv6.as_deref(), Some("fd00:9::2/64"));
        let link = &en.plumbing.links[&v.host_ifname].iface;
        assert_eq!(
            link.ipv6,
            Some(SandboxIpv6 {
                addr: "fd00:9::2".parse().unwrap(),
                prefix: 64,
                gateway: Some("fd00:9::1".parse().unwrap()),
            })
        );
        let v4 = block(en.connect(ep("bridge", "web", "y"))).unwrap();
        assert_eq!(en.plumbing.links[&v4.host_ifname].iface.ipv6, None);
        assert_eq!(v4.ipv6, None);
    }

    #[test]
    fn v6_only_endpoints_get_only_a_v6_address_and_route() {
        let db = TempDb::new("v6only");
        let (mut en, _) = open(&db, Fake::default());
        let spec = NetworkSpec {
            name: "six".into(),
            enable_ipv4: false,
            enable_ipv6: true,
            subnet6: Some("fd00:9::/64".parse().unwrap()),
            ..NetworkSpec::default()
        };
        block(en.create_network(spec)).unwrap();
        let v = block(en.connect(ep("six", "web", "x"))).unwrap();
        assert_eq!(v.ipv4, "");
        assert_eq!(v.ipv6.as_deref(), Some("fd00:9::2/64"));
        assert_eq!(v.gateway, None);
        assert_eq!(v.default_route.as_deref(), Some("fd00:9::1"));
        let link = &en.plumbing.links[&v.host_ifname].iface;
        assert_eq!((link.ip, link.gateway), (None, None));
        assert_eq!(
            link.ipv6.unwrap().gateway,
            Some("fd00:9::1".parse().unwrap())
        );
        link.validate().unwrap();
    }

    #[test]
    fn failed_attach_leaves_nothing() {
        let db = TempDb::new("fail");
        let (mut en, _) = open(&db, Fake::default());
        block(en.create_network(net("a", "10.9.0.0/24"))).unwrap();
        let before = en.state().clone();
        en.plumbing.fail_attach = true;
        let err = block(en.connect(ep("a", "web", "x"))).unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert_eq!(en.state(), &before);
        assert!(en.plumbing.links.is_empty());
        assert_eq!(en.dp.tables().ports().count(), 0);
        let v = block(en.connect(ep("a", "web", "x"))).unwrap();
        assert_eq!(v.ipv4, "10.9.0.2/24", "the address was not leaked");
    }

    #[test]
    fn disconnect_and_remove_undo_everything() {
        let db = TempDb::new("disconnect");
        let (mut en, _) = open(&db, Fake::default());
        block(en.create_network(net("a", "10.9.0.0/24"))).unwrap();
        block(en.connect(ep("a", "web", "x"))).unwrap();
        let err = block(en.remove_network("a")).unwrap_err();
        assert_eq!(err.status(), 409);
        block(en.disconnect("a", "web")).unwrap();
        assert!(en.plumbing.links.is_empty() && en.plumbing.ports.is_empty());
        assert_eq!(block(en.disconnect("a", "web")).unwrap_err().status(), 404);
        block(en.create_network(net("b", "10.10.0.0/24"))).unwrap();
        assert_eq!(
            block(en.prune()).unwrap().networks_deleted,
            vec!["a".to_string(), "b".to_string()]
        );
        assert_eq!(en.list().len(), 3, "the predefined networks stay");
        assert_eq!(
            block(en.remove_network("bridge")).unwrap_err().status(),
            403
        );
    }

    #[test]
    fn restore_releases_vanished_endpoints_and_deletes_strays() {
        let db = TempDb::new("restore");
        let (mut en, _) = open(&db, Fake::default());
        block(en.create_network(net("a", "10.9.0.0/24"))).unwrap();
        let kept = block(en.connect(ep("a", "kept", "x"))).unwrap();
        let gone = block(en.connect(ep("a", "gone", "y"))).unwrap();
        let mut fake = std::mem::take(&mut en.plumbing);
        en.shutdown();
        fake.links.remove(&gone.host_ifname);
        let mut stray = fake.links[&kept.host_ifname].clone();
        stray.iface.host_ifname = "slstray".into();
        fake.links.insert("slstray".into(), stray);
        let (en, restored) = open(&db, fake);
        assert_eq!(restored.endpoints, 1);
        assert_eq!(restored.released, vec!["a/gone".to_string()]);
        assert_eq!(restored.deleted, vec!["slstray".to_string()]);
        assert_eq!(en.endpoints().len(), 1);
        assert!(en
            .dp
            .tables()
            .ports()
            .any(|p| p.config.name == kept.host_ifname));
        drop(en);
        let (_, again) = open(&db, Fake::default());
        assert_eq!(
            again.released,
            vec!["a/kept".to_string()],
            "state was persisted"
        );
    }

    #[test]
    fn restore_removes_cni_networks_it_leaves_empty() {
        let db = TempDb::new("restore-cni");
        let (mut en, _) = open(&db, Fake::default());
        let cni = |name: &str, subnet: &str| NetworkSpec {
            labels: [(
                crate::api::CREATED_BY_LABEL.to_string(),
                crate::api::CNI_CREATOR.to_string(),
            )]
            .into(),
            ..net(name, subnet)
        };
        block(en.create_network(cni("made", "10.9.0.0/24"))).unwrap();
        block(en.create_network(cni("busy", "10.10.0.0/24"))).unwrap();
        block(en.create_network(net("plain", "10.11.0.0/24"))).unwrap();
        let gone = [
            block(en.connect(ep("made", "g1", "y"))).unwrap(),
            block(en.connect(ep("busy", "g2", "y"))).unwrap(),
            block(en.connect(ep("plain", "g3", "y"))).unwrap(),
        ];
        block(en.connect(ep("busy", "kept", "x"))).unwrap();
        let mut fake = std::mem::take(&mut en.plumbing);
        en.shutdown();
        for g in &gone {
            fake.links.remove(&g.host_ifname);
        }
        let (en, restored) = open(&db, fake);
        assert_eq!(restored.released.len(), 3);
        assert_eq!(restored.removed_networks, vec!["made".to_string()]);
        assert!(en.state().network("made").is_err());
        assert!(
            en.state().network("busy").is_ok(),
            "it still has an endpoint"
        );
        assert!(
            en.state().network("plain").is_ok(),
            "not made by sluice-cni"
        );
        drop(en);
        let (en, _) = open(&db, Fake::default());
        assert!(
            en.state().network("made").is_err(),
            "the removal was persisted"
        );
    }

    #[test]
    fn the_first_routed_network_of_a_sandbox_sets_its_default_route() {
        let db = TempDb::new("default-route");
        let (mut en, _) = open(&db, Fake::default());
        let internal = NetworkSpec {
            internal: true,
            ..net("i", "10.9.0.0/24")
        };
        block(en.create_network(internal)).unwrap();
        block(en.create_network(net("a", "10.10.0.0/24"))).unwrap();
        block(en.create_network(net("b", "10.11.0.0/24"))).unwrap();
        let i = block(en.connect(ep("i", "w", "x"))).unwrap();
        let a = block(en.connect(ep("a", "w", "x"))).unwrap();
        let b = block(en.connect(ep("b", "w", "x"))).unwrap();
        let other = block(en.connect(ep("b", "v", "y"))).unwrap();
        let routes = [&i, &a, &b, &other].map(|v| v.default_route.as_deref());
        assert_eq!(
            routes,
            [None, Some("10.10.0.1"), None, Some("10.11.0.1")],
            "what connect answers is what it installed"
        );
        let gw = |v: &EndpointView| en.plumbing.links[&v.host_ifname].iface.gateway;
        assert_eq!(
            [gw(&i), gw(&a), gw(&b), gw(&other)],
            [
                None,
                Some("10.10.0.1".parse().unwrap()),
                None,
                Some("10.11.0.1".parse().unwrap())
            ]
        );
    }

    #[test]
    fn macvlan_parents_are_opened_and_closed() {
        let db = TempDb::new("macvlan");
        let fake = Fake {
            parents: vec!["eth7".into()],
            ..Fake::default()
        };
        let (mut en, _) = open(&db, fake);
        let mut m = net("m", "10.9.0.0/24");
        m.driver = crate::model::Driver::Macvlan;
        m.options.set("parent=eth8").unwrap();
        let err = block(en.create_network(m.clone())).unwrap_err();
        assert!(err.to_string().contains("eth8 does not exist"), "{err}");
        let mut own = net("u", "10.20.0.0/24");
        own.uplink = Some(crate::model::UplinkSpec {
            name: "eth7".into(),
            ip: "203.0.113.2/24".parse().unwrap(),
            gateway: None,
            mac: None,
            ip6: None,
            gateway6: None,
        });
        block(en.create_network(own)).unwrap();
        assert!(en
            .dp
            .tables()
            .uplink_on(en.state().network("u").unwrap().uplink_port.unwrap())
            .is_some());
        block(en.remove_network("u")).unwrap();
        assert!(en.plumbing.ports.is_empty());
        assert!(en.state().network("m").is_err(), "nothing was created");
        m.options.set("parent=eth7.20").unwrap();
        block(en.create_network(m)).unwrap();
        assert!(en.plumbing.ports.values().any(|n| n == "eth7"));
        assert!(en.dp.tables().ports().any(|p| p.config.name == "eth7"));
        block(en.remove_network("m")).unwrap();
        assert!(en.plumbing.ports.is_empty());
    }

    #[test]
    fn stats_name_ports_by_endpoint() {
        let db = TempDb::new("stats");
        let (mut en, _) = open(&db, Fake::default());
        block(en.create_network(net("a", "10.9.0.0/24"))).unwrap();
        let v = block(en.connect(ep("a", "web", "x"))).unwrap();
        let s = en.stats();
        let row = s.ports.iter().find(|p| p.port == v.host_ifname).unwrap();
        assert_eq!((row.endpoint.as_str(), row.network.as_str()), ("web", "a"));
        let a = s.networks.iter().find(|n| n.network == "a").unwrap();
        assert_eq!(a.endpoints, 1);
    }

    #[test]
    fn stats_show_kernel_drops_and_flows_per_endpoint() {
        use sluice_dataplane::config::L4Proto;
        use sluice_dataplane::nat::{NatAction, Owner, Tuple};
        use sluice_dataplane::port::KernelPortStats;

        let db = TempDb::new("kstats");
        let (mut en, _) = open(&db, Fake::default());
        let mut quoted = net("q", "10.9.1.0/24");
        quoted.options.set("max_flows_per_endpoint=50").unwrap();
        block(en.create_network(net("a", "10.9.0.0/24"))).unwrap();
        block(en.create_network(quoted)).unwrap();
        let web = block(en.connect(ep("a", "web", "x"))).unwrap();
        let db_ep = block(en.connect(ep("q", "db", "y"))).unwrap();
        let port = |name: &str| {
            en.state()
                .endpoints()
                .find(|e| e.spec.name == name)
                .unwrap()
                .port
        };
        let (web_port, db_port) = (port("web"), port("db"));
        let k = |packets, drops, freezes| KernelPortStats {
            packets,
            drops,
            freezes,
        };
        en.plumbing.kernel.insert(web_port.0, k(1000, 720, 1));
        en.plumbing.kernel.insert(db_port.0, k(10, 5, 0));
        {
            let mut ct = en.dp.conntrack();
            for src_port in [1000, 1001, 1002] {
                let t = Tuple {
                    proto: L4Proto::Udp,
                    src: web.ipv4.parse::<Ipv4Cidr>().unwrap().addr,
                    src_port,
                    dst: "192.0.2.9".parse().unwrap(),
                    dst_port: 53,
                };
                let owner = Owner::unlimited(web_port);
                ct.create_for(&t, NatAction::default(), Millis(0), &owner)
                    .unwrap();
            }
        }
        let s = en.stats();
        let row = |ifname: &str| s.ports.iter().find(|p| p.port == ifname).unwrap();
        let (w, d) = (row(&web.host_ifname), row(&db_ep.host_ifname));
        assert_eq!(
            (w.kernel_packets, w.kernel_drops, w.kernel_freezes),
            (1000, 720, 1)
        );
        assert_eq!(w.flows, 3);
        let default_quota = NatConfig::default().default_max_flows_per_endpoint();
        assert_eq!(w.max_flows, Some(default_quota));
        assert_eq!((d.kernel_drops, d.flows, d.max_flows), (5, 0, Some(50)));
        let network = |name: &str| s.networks.iter().find(|n| n.network == name).unwrap();
        assert_eq!(network("a").kernel_drops, 720);
        assert_eq!(network("a").conntrack_entries, 3);
        assert_eq!(network("q").kernel_drops, 5);
        assert_eq!(s.kernel_drops, 725);
    }
}
