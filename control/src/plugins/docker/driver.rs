//! What each libnetwork call does, as a client of sluice's engine ([`EngineHandle`]):
//!
//! - CreateNetwork: a sluice network `docker-<id12>` with docker's subnets and gateways (one
//!   per family: `--ipv6` makes it dual stack with docker's v6 subnet), the
//!   `-o` options mapped onto sluice's (`mtu`, `icc`, `vlan`, `parent` and docker's long
//!   keys), `--internal`, and the label `com.docker.network.id` by which later calls (also
//!   after a restart of sluiced) find it again. With `-o overlay=NAME` (a cluster store
//!   needed) the docker network is this host's use of the cluster's overlay `NAME` instead:
//!   made from the request when no host has it yet, else joined when docker's subnets,
//!   gateways and `-o vni` agree with it; the use is recorded in the cluster store and the
//!   docker id -> `NAME` map in the IPAM file (later calls, also after a restart, go by it).
//! - CreateEndpoint: a hand-off endpoint (`Placement::HandOff`): sluice creates the veth pair,
//!   attaches the host end to its bridge and leaves the peer in dockerd's namespace; docker's
//!   addresses (v4 and v6) and MAC are taken as given, `-p` mappings become sluice's DNAT
//!   (dockerd sets up no port mapping for plugin networks; sluice publishes them on the
//!   uplink's v4 and v6 addresses). The endpoint's name is `<endpoint id12>`.
//! - Join: names that peer (`SrcName`) for docker to move into the container as `ethN`, and
//!   the gateways for the default routes, v4 and v6 (none on internal networks).
//! - DeleteEndpoint, DeleteNetwork: disconnect and remove (already gone is fine: docker
//!   repeats deletions after failures). A shared overlay only loses this host's use; it
//!   leaves the cluster with the last docker network of any host that used it, when the
//!   plugin made it and no host has endpoints on it.
//! - The IPAM calls go to [`DockerIpam`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use sluice_dataplane::config::{Ipv4Cidr, Ipv6Cidr, L4Proto, PortRange};
use sluice_dataplane::wire::MacAddr;
use tokio::sync::Mutex;

use super::ipam::{
    parse_ip, parse_ip6, DockerIpam, DockerIpamError, GLOBAL_ADDRESS_SPACE, LOCAL_ADDRESS_SPACE,
};
use super::protocol::*;
use crate::api::EndpointView;
use crate::daemon::engine::EngineError;
use crate::daemon::handle::EngineHandle;
use crate::model::{
    Driver, EndpointSpec, NetworkInspect, NetworkOptions, NetworkSpec, Placement, Sandbox,
};
use crate::publish::PublishSpec;

/// The label that ties a sluice network to docker's network id.
pub const LABEL_NETWORK_ID: &str = "com.docker.network.id";

/// The label of an overlay the plugin made for `-o overlay=NAME`: it goes with the last
/// docker network that uses it (an overlay made otherwise stays when docker leaves it).
pub const LABEL_SHARED: &str = "sluice.docker.shared-overlay";

/// Why a call failed; docker shows the message to the user.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The body is not what the call expects.
    #[error("invalid {call} request: {why}")]
    BadRequest {
        /// The call.
        call: String,
        /// What serde said.
        why: String,
    },
    /// A request sluice cannot honour (IPv6, an unknown option, a protocol other than tcp/udp).
    #[error("{0}")]
    Refused(String),
    /// docker names a network or endpoint sluice does not have.
    #[error("sluice has no {0}")]
    NotFound(String),
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The IPAM driver refused or failed.
    #[error(transparent)]
    Ipam(#[from] DockerIpamError),
    /// A path that is not a libnetwork call.
    #[error("unknown plugin call {0}")]
    UnknownCall(String),
}

/// A call's body as its request type (an empty body is `{}`).
pub(crate) fn parse<T: DeserializeOwned>(call: Call, body: &[u8]) -> Result<T, PluginError> {
    // An empty body is an empty object (some callers send none for argument-less calls).
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| PluginError::BadRequest {
        call: format!("{call:?}"),
        why: e.to_string(),
    })
}

fn json<T: Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or_else(|_| Value::Object(Map::new()))
}

fn empty() -> Value {
    Value::Object(Map::new())
}

/// The first 12 characters of a docker id (docker's short form).
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The sluice network made for docker network `id`.
pub fn network_name(id: &str) -> String {
    format!("docker-{}", short(id))
}

/// The stand-in sandbox of a hand-off endpoint: docker names the container's namespace only at
/// Join, after the interface exists, and sluice never enters it.
fn handoff_sandbox(endpoint_id: &str) -> Sandbox {
    Sandbox::Netns(PathBuf::from(format!("docker-endpoint:{endpoint_id}")))
}

/// A string form of an option value (`-o` values are strings; numbers and booleans are
/// accepted too).
fn option_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `-o driver=overlay`: the network spans the hosts of sluiced's cluster store instead of
/// being the driver its other options imply.
const OPT_DRIVER: &str = "driver";

/// `-o overlay=NAME`: the docker network is this host's use of the cluster's overlay `NAME`
/// (the same on every host), not an overlay of its own.
const OPT_OVERLAY: &str = "overlay";

/// The generic options (`-o`).
fn generic(options: &Map<String, Value>) -> Option<&Map<String, Value>> {
    match options.get(OPT_GENERIC) {
        Some(Value::Object(generic)) => Some(generic),
        _ => None,
    }
}

/// The cluster overlay `-o overlay=NAME` names, if any.
fn shared_overlay(options: &Map<String, Value>) -> Result<Option<String>, PluginError> {
    match generic(options)
        .and_then(|g| g.get(OPT_OVERLAY))
        .map(option_text)
    {
        None => Ok(None),
        Some(Some(name)) if !name.is_empty() => Ok(Some(name)),
        Some(_) => Err(PluginError::Refused(
            "-o overlay= needs the name of the cluster's overlay network".into(),
        )),
    }
}

/// The driver `-o driver=NAME` asks for, if any (only `overlay`, which `-o overlay=NAME`
/// implies: the others follow from their options).
fn asked_driver(options: &Map<String, Value>) -> Result<Option<Driver>, PluginError> {
    let Some(generic) = generic(options) else {
        return Ok(None);
    };
    match generic.get(OPT_DRIVER).map(option_text) {
        None if generic.contains_key(OPT_OVERLAY) => Ok(Some(Driver::Overlay)),
        None => Ok(None),
        Some(Some(d)) if d == Driver::Overlay.as_str() => Ok(Some(Driver::Overlay)),
        Some(d) => Err(PluginError::Refused(format!(
            "-o driver={}: sluice's docker driver offers -o driver=overlay (the other drivers follow from their options)",
            d.unwrap_or_default()
        ))),
    }
}

/// `com.docker.network.generic` mapped onto sluice's network options.
fn network_options(options: &Map<String, Value>) -> Result<NetworkOptions, PluginError> {
    let mut o = NetworkOptions::default();
    if let Some(generic) = generic(options) {
        for (k, v) in generic
            .iter()
            .filter(|(k, _)| *k != OPT_DRIVER && *k != OPT_OVERLAY)
        {
            let text = option_text(v)
                .ok_or_else(|| PluginError::Refused(format!("option {k} has no value")))?;
            o.set(&format!("{k}={text}"))
                .map_err(|e| PluginError::Refused(e.to_string()))?;
        }
    }
    Ok(o)
}

/// docker's `com.docker.network.portmap` as sluice's published ports.
fn publish(bindings: &[PortBinding]) -> Result<Vec<PublishSpec>, PluginError> {
    bindings
        .iter()
        .map(|b| {
            let proto = match b.proto {
                6 => L4Proto::Tcp,
                17 => L4Proto::Udp,
                p => {
                    return Err(PluginError::Refused(format!(
                        "cannot publish IP protocol {p} (tcp and udp only)"
                    )))
                }
            };
            // Every address, `0.0.0.0` and `::` alike, is both families' uplink addresses.
            let (host_ip, host_ip6) = match b.host_ip.parse::<IpAddr>() {
                _ if b.host_ip.is_empty() => (None, None),
                Ok(ip) if ip.is_unspecified() => (None, None),
                Ok(IpAddr::V4(ip)) => (Some(ip), None),
                Ok(IpAddr::V6(ip)) => (None, Some(ip)),
                Err(_) => {
                    return Err(PluginError::Refused(format!(
                        "host address {:?} is not an IP address",
                        b.host_ip
                    )))
                }
            };
            Ok(PublishSpec {
                host_ip,
                host_ip6,
                // docker's HostPort..HostPortEnd means "one free port of the range": sluice
                // takes the first. HostPort 0 (`-p 80`, `-P`) leaves the pick to the daemon.
                host_ports: (b.host_port != 0).then(|| PortRange::single(b.host_port)),
                container_ports: PortRange::single(b.port),
                proto,
            })
        })
        .collect()
}

/// One family's subnet, gateway and aux addresses as docker's IPAM gave them.
struct Addressing<C, A> {
    subnet: C,
    gateway: Option<A>,
    aux: BTreeMap<String, A>,
}

/// `d` parsed with the family's subnet and address parsers.
fn addressing<C: std::str::FromStr<Err = String>, A>(
    d: &IpamData,
    parse: fn(&'static str, &str) -> Result<A, DockerIpamError>,
) -> Result<Addressing<C, A>, PluginError> {
    let gateway = match d.gateway.as_str() {
        "" => None,
        g => Some(parse("gateway", g)?),
    };
    let aux = d
        .aux_addresses
        .iter()
        .map(|(k, v)| Ok((k.clone(), parse("auxiliary address", v)?)))
        .collect::<Result<_, DockerIpamError>>()?;
    Ok(Addressing {
        subnet: d.pool.parse().map_err(PluginError::Refused)?,
        gateway,
        aux,
    })
}

/// The sluice network of a `CreateNetwork` request (checked for what sluice supports; whether
/// sluiced accepts it is the engine's call). `--ipv6` makes it dual stack: docker's v6 subnet
/// (from `IPv6Data`), or one sluice picks when docker's IPAM gave none.
pub fn network_spec(r: &CreateNetworkRequest) -> Result<NetworkSpec, PluginError> {
    let enable_ipv4 = !r.options.contains_key(OPT_ENABLE_IPV4) || flag(&r.options, OPT_ENABLE_IPV4);
    let v4 = match r.ipv4_data.as_slice() {
        [] if !enable_ipv4 => None,
        [v4] if enable_ipv4 => Some(addressing::<Ipv4Cidr, _>(v4, parse_ip)?),
        other => {
            return Err(PluginError::Refused(format!(
            "a sluice network has exactly one IPv4 subnet (none with --ipv4=false), docker gave {}",
            other.len()
        )))
        }
    };
    let v6 = match r.ipv6_data.as_slice() {
        [] => None,
        [d] => Some(addressing::<Ipv6Cidr, _>(d, parse_ip6)?),
        more => {
            return Err(PluginError::Refused(format!(
                "a sluice network has at most one IPv6 subnet, docker gave {}",
                more.len()
            )))
        }
    };
    let options = network_options(&r.options)?;
    let (name, label) = match shared_overlay(&r.options)? {
        Some(name) => (name, (LABEL_SHARED, "true".to_string())),
        None => (
            network_name(&r.network_id),
            (LABEL_NETWORK_ID, r.network_id.clone()),
        ),
    };
    Ok(NetworkSpec {
        name,
        driver: asked_driver(&r.options)?.unwrap_or_else(|| crate::driver::for_docker(&options)),
        subnet: v4.as_ref().map(|a| a.subnet),
        gateway: v4.as_ref().and_then(|a| a.gateway),
        ip_range: None,
        aux_addresses: v4.map(|a| a.aux).unwrap_or_default(),
        enable_ipv4,
        internal: flag(&r.options, OPT_INTERNAL),
        options,
        labels: [(label.0.to_string(), label.1)].into(),
        uplink: None,
        enable_ipv6: flag(&r.options, OPT_ENABLE_IPV6) || v6.is_some(),
        subnet6: v6.as_ref().map(|a| a.subnet),
        gateway6: v6.as_ref().and_then(|a| a.gateway),
        aux_addresses6: v6.map(|a| a.aux).unwrap_or_default(),
        ..NetworkSpec::default()
    })
}

/// The networks' subnets (name and subnet) a new IPAM pool `pool` must not overlap: all but
/// that of an overlay whose subnet is exactly `pool`, which a docker network of this host may
/// join (`-o overlay=NAME`) with the pool as its share of the addresses.
fn subnets_in_the_way(networks: Vec<NetworkInspect>, pool: &str) -> Vec<(String, String)> {
    networks
        .into_iter()
        .filter(|n| {
            n.driver != Driver::Overlay.as_str() || !n.ipam.config.iter().any(|c| c.subnet == pool)
        })
        .flat_map(|n| {
            let name = n.name;
            n.ipam
                .config
                .into_iter()
                .map(move |c| (name.clone(), c.subnet))
        })
        .collect()
}

/// Refuses to join `overlay` with a docker network made from `spec` unless docker's subnets,
/// gateways and `-o vni` are the overlay's (every host's part holds the same addressing).
fn check_joinable(overlay: &NetworkInspect, spec: &NetworkSpec) -> Result<(), PluginError> {
    let name = &overlay.name;
    let refuse = |why: String| Err(PluginError::Refused(format!("-o overlay={name}: {why}")));
    if overlay.driver != Driver::Overlay.as_str() {
        return refuse(format!(
            "{name} is a {} network, not an overlay",
            overlay.driver
        ));
    }
    let given = [
        spec.subnet
            .map(|s| (s.to_string(), spec.gateway.map(|g| g.to_string()))),
        spec.subnet6
            .map(|s| (s.to_string(), spec.gateway6.map(|g| g.to_string()))),
    ];
    for (subnet, gateway) in given.into_iter().flatten() {
        let Some(have) = overlay.ipam.config.iter().find(|c| c.subnet == subnet) else {
            let theirs: Vec<&str> = overlay
                .ipam
                .config
                .iter()
                .map(|c| c.subnet.as_str())
                .collect();
            return refuse(format!(
                "the overlay's subnet is {}, this docker network's {subnet}: give docker --subnet {}",
                theirs.join(" and "),
                theirs.join(" --subnet ")
            ));
        };
        if let (Some(g), Some(h)) = (gateway, &have.gateway) {
            if g != *h {
                return refuse(format!(
                    "the overlay's gateway is {h}, this docker network's {g}: give docker --gateway {h}"
                ));
            }
        }
    }
    let vni = overlay.options.get("vni");
    match spec.options.vni {
        Some(v) if vni != Some(&v.to_string()) => refuse(format!(
            "the overlay's VNI is {}, this docker network asks for -o vni={v}",
            vni.map_or("unknown", String::as_str)
        )),
        _ => Ok(()),
    }
}

/// The sluice endpoint of a `CreateEndpoint` request on the sluice network `network` (its id).
pub fn endpoint_spec(
    r: &CreateEndpointRequest,
    network: String,
) -> Result<EndpointSpec, PluginError> {
    let ip = match r.interface.address.as_str() {
        "" => None,
        a => Some(parse_ip("address", a)?),
    };
    let ip6 = match r.interface.address_ipv6.as_str() {
        "" => None,
        a => Some(parse_ip6("IPv6 address", a)?),
    };
    let mac = match r.interface.mac_address.as_str() {
        "" => None,
        m => Some(
            m.parse::<MacAddr>()
                .map_err(|_| PluginError::Refused(format!("{m:?} is not a MAC address")))?,
        ),
    };
    let bindings = port_bindings(&r.options).map_err(|e| PluginError::BadRequest {
        call: "CreateEndpoint".into(),
        why: format!("{OPT_PORTMAP}: {e}"),
    })?;
    Ok(EndpointSpec {
        network,
        sandbox: handoff_sandbox(&r.endpoint_id),
        name: short(&r.endpoint_id).to_string(),
        ip,
        ip6,
        mac,
        aliases: Vec::new(),
        links: Vec::new(),
        publish: publish(&bindings)?,
        names: Default::default(),
        ifname: None,
        placement: Placement::HandOff,
    })
}

/// The remote network driver and IPAM driver over one engine.
#[derive(Debug)]
pub struct DockerPlugin {
    engine: EngineHandle,
    ipam: Mutex<DockerIpam>,
}

impl DockerPlugin {
    /// A plugin that changes `engine` and keeps its IPAM pools in `ipam`.
    pub fn new(engine: EngineHandle, ipam: DockerIpam) -> DockerPlugin {
        DockerPlugin {
            engine,
            ipam: Mutex::new(ipam),
        }
    }

    /// Answers one call: the JSON to send back, or the error to send as `{"Err": ...}`.
    pub async fn call(&self, call: Call, body: &[u8]) -> Result<Value, PluginError> {
        match call {
            Call::Activate => Ok(json(ActivateResponse {
                implements: vec!["NetworkDriver", "IpamDriver"],
            })),
            Call::NetCapabilities => Ok(json(CapabilitiesResponse {
                scope: "local",
                connectivity_scope: "local",
            })),
            Call::CreateNetwork => self.create_network(parse(call, body)?).await,
            Call::DeleteNetwork => self.delete_network(parse(call, body)?).await,
            Call::CreateEndpoint => self.create_endpoint(parse(call, body)?).await,
            Call::EndpointOperInfo => {
                parse::<EndpointRequest>(call, body)?;
                Ok(json(OperInfoResponse::default()))
            }
            Call::DeleteEndpoint => self.delete_endpoint(parse(call, body)?).await,
            Call::Join => self.join(parse(call, body)?).await,
            Call::Leave | Call::ProgramExternalConnectivity | Call::RevokeExternalConnectivity => {
                // Published ports were set up with the endpoint and go with it.
                parse::<EndpointRequest>(call, body)?;
                Ok(empty())
            }
            Call::DiscoverNew | Call::DiscoverDelete => {
                parse::<DiscoveryRequest>(call, body)?;
                Ok(empty())
            }
            Call::IpamCapabilities => Ok(json(IpamCapabilitiesResponse::default())),
            Call::GetDefaultAddressSpaces => Ok(json(AddressSpacesResponse {
                local_default_address_space: LOCAL_ADDRESS_SPACE,
                global_default_address_space: GLOBAL_ADDRESS_SPACE,
            })),
            Call::RequestPool => self.request_pool(parse(call, body)?).await,
            Call::ReleasePool => {
                let r: ReleasePoolRequest = parse(call, body)?;
                match self.ipam.lock().await.release_pool(&r.pool_id) {
                    Ok(()) | Err(DockerIpamError::NoSuchPool(_)) => Ok(empty()),
                    Err(e) => Err(e.into()),
                }
            }
            Call::RequestAddress => self.request_address(parse(call, body)?).await,
            Call::ReleaseAddress => {
                let r: ReleaseAddressRequest = parse(call, body)?;
                match self
                    .ipam
                    .lock()
                    .await
                    .release_address(&r.pool_id, &r.address)
                {
                    Ok(()) | Err(DockerIpamError::NoSuchPool(_)) => Ok(empty()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// The sluice network of docker network `id`: the shared overlay it joined, else the one
    /// whose label names it.
    async fn network(&self, id: &str) -> Result<Option<NetworkInspect>, PluginError> {
        let shared = self
            .ipam
            .lock()
            .await
            .shared_overlay(id)
            .map(str::to_string);
        Ok(self
            .engine
            .list()
            .await?
            .into_iter()
            .find(|n| match &shared {
                Some(name) => n.name == *name,
                None => n.labels.get(LABEL_NETWORK_ID).is_some_and(|l| l == id),
            }))
    }

    /// The sluice network named `name`, if this host has it.
    async fn named(&self, name: &str) -> Result<Option<NetworkInspect>, PluginError> {
        Ok(self
            .engine
            .list()
            .await?
            .into_iter()
            .find(|n| n.name == name))
    }

    async fn existing_network(&self, id: &str) -> Result<NetworkInspect, PluginError> {
        self.network(id)
            .await?
            .ok_or_else(|| PluginError::NotFound(format!("network for docker network {id}")))
    }

    async fn endpoint(
        &self,
        net: &NetworkInspect,
        endpoint_id: &str,
    ) -> Result<Option<EndpointView>, PluginError> {
        Ok(self
            .engine
            .endpoints()
            .await?
            .into_iter()
            .find(|e| e.network == net.name && e.name == short(endpoint_id)))
    }

    async fn create_network(&self, r: CreateNetworkRequest) -> Result<Value, PluginError> {
        let spec = network_spec(&r);
        if spec.is_ok() && self.network(&r.network_id).await?.is_some() {
            return Ok(empty());
        }
        if spec.as_ref().is_ok_and(|s| s.driver == Driver::Overlay) && !self.engine.clustered() {
            return Err(PluginError::Refused(
                "-o driver=overlay needs a cluster store: start sluiced with --cluster-store etcd://HOST:PORT[,...]"
                    .into(),
            ));
        }
        let spec = spec?;
        if spec.labels.contains_key(LABEL_SHARED) {
            return self.join_shared(&r.network_id, spec).await;
        }
        self.engine.create_network(spec).await?;
        Ok(empty())
    }

    /// `-o overlay=NAME`: docker network `docker_id` joins the cluster's overlay `spec.name`,
    /// made from `spec` when no host has it yet (another host making it meanwhile is joined).
    async fn join_shared(&self, docker_id: &str, spec: NetworkSpec) -> Result<Value, PluginError> {
        let name = spec.name.clone();
        let overlay = match self.named(&name).await? {
            Some(n) => n,
            None => match self.engine.create_network(spec.clone()).await {
                Ok(n) => n,
                Err(e) if e.status() == 409 => self.followed(&name).await?.ok_or(e)?,
                Err(e) => return Err(e.into()),
            },
        };
        check_joinable(&overlay, &spec)?;
        self.engine.use_overlay(&name, docker_id).await?;
        self.ipam.lock().await.join_overlay(docker_id, &name)?;
        Ok(empty())
    }

    /// Network `name` once this host's watch of the cluster store made its part (within 5 s).
    async fn followed(&self, name: &str) -> Result<Option<NetworkInspect>, PluginError> {
        for _ in 0..50 {
            if let Some(n) = self.named(name).await? {
                return Ok(Some(n));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(None)
    }

    async fn delete_network(&self, r: NetworkRequest) -> Result<Value, PluginError> {
        let shared = self
            .ipam
            .lock()
            .await
            .shared_overlay(&r.network_id)
            .map(str::to_string);
        if let Some(name) = shared {
            return self.leave_shared(&r.network_id, &name).await;
        }
        if let Some(net) = self.network(&r.network_id).await? {
            match self.engine.remove_network(net.id).await {
                Ok(_) => {}
                Err(e) if e.status() == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(empty())
    }

    /// DeleteNetwork of docker network `docker_id`, which joined overlay `name`: this host's
    /// use of it ends; the overlay goes too when that was the last use on any host, the plugin
    /// made it, and no host has endpoints on it (else it stays, logged).
    async fn leave_shared(&self, docker_id: &str, name: &str) -> Result<Value, PluginError> {
        let left = self.engine.leave_overlay(name, docker_id).await?;
        self.ipam.lock().await.leave_overlay(docker_id)?;
        let ours = self
            .named(name)
            .await?
            .filter(|n| n.labels.contains_key(LABEL_SHARED));
        let Some(net) = ours.filter(|_| left == 0) else {
            return Ok(empty());
        };
        match self.engine.remove_network(net.id).await {
            Ok(_) => {}
            Err(e) if e.status() == 404 => {}
            Err(e) if e.status() == 409 => {
                tracing::info!("overlay {name} stays without docker networks: {e}");
            }
            Err(e) => return Err(e.into()),
        }
        Ok(empty())
    }

    async fn create_endpoint(&self, r: CreateEndpointRequest) -> Result<Value, PluginError> {
        let net = self.existing_network(&r.network_id).await?;
        let spec = endpoint_spec(&r, net.id)?;
        let (ip, ip6, mac) = (spec.ip, spec.ip6, spec.mac);
        let v = self.engine.connect(spec).await?;
        // docker refuses an answer that restates what it gave: fill in only what it left out.
        let reply = EndpointInterfaceReply {
            address: if ip.is_none() { v.ipv4 } else { String::new() },
            address_ipv6: v.ipv6.filter(|_| ip6.is_none()).unwrap_or_default(),
            mac_address: if mac.is_none() { v.mac } else { String::new() },
        };
        let interface = (reply != EndpointInterfaceReply::default()).then_some(reply);
        Ok(json(CreateEndpointResponse { interface }))
    }

    async fn delete_endpoint(&self, r: EndpointRequest) -> Result<Value, PluginError> {
        let Some(net) = self.network(&r.network_id).await? else {
            return Ok(empty());
        };
        match self
            .engine
            .disconnect(net.id, short(&r.endpoint_id).to_string())
            .await
        {
            Ok(()) => Ok(empty()),
            Err(e) if e.status() == 404 => Ok(empty()),
            Err(e) => Err(e.into()),
        }
    }

    async fn join(&self, r: JoinRequest) -> Result<Value, PluginError> {
        let net = self.existing_network(&r.network_id).await?;
        let ep = self.endpoint(&net, &r.endpoint_id).await?.ok_or_else(|| {
            PluginError::NotFound(format!(
                "endpoint {} on network {}",
                short(&r.endpoint_id),
                net.name
            ))
        })?;
        let on_link = !net.internal && net.routes_on_link();
        let routed = !net.internal && !on_link;
        // The endpoint's gateway of the family (v6 only on a dual-stack network).
        let gateway = |v6: bool| {
            let g = if v6 { &ep.gateway6 } else { &ep.gateway };
            g.clone().filter(|_| routed).unwrap_or_default()
        };
        let connected = |destination: &str| StaticRoute {
            destination: destination.into(),
            route_type: 1,
            next_hop: String::new(),
        };
        let mut static_routes = Vec::new();
        if on_link {
            static_routes.push(connected("0.0.0.0/0"));
            if net.enable_ipv6 {
                static_routes.push(connected("::/0"));
            }
        }
        Ok(json(JoinResponse {
            interface_name: InterfaceName {
                src_name: ep.ifname,
                dst_prefix: "eth".into(),
            },
            gateway: gateway(false),
            gateway_ipv6: gateway(true),
            // sluice routes the network itself: docker must not add its gateway bridge.
            disable_gateway_service: true,
            static_routes,
        }))
    }

    /// `RequestAddress`: docker's pick, or the lowest free address of the pool; on an
    /// overlay network one that no host of the cluster holds (CreateEndpoint's cluster-wide
    /// reservation would refuse it).
    async fn request_address(&self, r: RequestAddressRequest) -> Result<Value, PluginError> {
        let taken = if r.address.is_empty() && !r.is_gateway() {
            self.taken_in_cluster(&r.pool_id).await?
        } else {
            Vec::new()
        };
        let address = self.ipam.lock().await.request_address_avoiding(
            &r.pool_id,
            &r.address,
            r.is_gateway(),
            &taken,
        )?;
        Ok(json(RequestAddressResponse {
            address,
            data: BTreeMap::new(),
        }))
    }

    /// The addresses reserved across the cluster in the overlay network on pool `pool_id`
    /// (pool ids are subnets); none without a cluster store or such a network.
    async fn taken_in_cluster(&self, pool_id: &str) -> Result<Vec<IpAddr>, PluginError> {
        if !self.engine.clustered() {
            return Ok(Vec::new());
        }
        let overlay = self.engine.list().await?.into_iter().find(|n| {
            n.driver == Driver::Overlay.as_str()
                && n.ipam.config.iter().any(|c| c.subnet == pool_id)
        });
        match overlay {
            Some(n) => Ok(self.engine.reserved_in_cluster(&n.name).await?),
            None => Ok(Vec::new()),
        }
    }

    async fn request_pool(&self, r: RequestPoolRequest) -> Result<Value, PluginError> {
        let networks = subnets_in_the_way(self.engine.list().await?, &r.pool);
        let (pool_id, pool) =
            self.ipam
                .lock()
                .await
                .request_pool(&r.pool, &r.sub_pool, r.v6, &networks)?;
        Ok(json(RequestPoolResponse {
            pool_id,
            pool,
            data: BTreeMap::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::handle;
    use crate::plugins::docker::protocol::tests::captured;
    use serde_json::json;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn tmp(tag: &str) -> Tmp {
        static N: AtomicU32 = AtomicU32::new(0);
        Tmp(std::env::temp_dir().join(format!(
            "sluice-docker-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )))
    }

    /// A real engine over fake plumbing, on its own thread, and a runtime to call it from.
    fn plugin(db: &Tmp) -> (DockerPlugin, tokio::runtime::Runtime) {
        let en = handle::spawn_fake(db.0.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (DockerPlugin::new(en, DockerIpam::in_memory()), rt)
    }

    fn call(p: &DockerPlugin, rt: &tokio::runtime::Runtime, path: &str, body: Value) -> Value {
        let c = Call::from_path(path).unwrap();
        rt.block_on(p.call(c, body.to_string().as_bytes()))
            .unwrap_or_else(|e| panic!("{path} {body}: {e}"))
    }

    fn call_err(p: &DockerPlugin, rt: &tokio::runtime::Runtime, path: &str, body: Value) -> String {
        let c = Call::from_path(path).unwrap();
        rt.block_on(p.call(c, body.to_string().as_bytes()))
            .unwrap_err()
            .to_string()
    }

    /// The capture's IPAM answers came from a stub; sluice's must differ only in names.
    #[test]
    fn replays_every_captured_call_in_order() {
        let db = tmp("replay");
        let (p, rt) = plugin(&db);
        let mut pool_id = String::new();
        for (section, path, req, stub_reply) in captured() {
            // That dockerd had no docker0, so its IPAM gave out 172.17.0.0/16, which sluice's
            // predefined `bridge` network holds (see refusals_name_the_problem).
            let req: Value =
                serde_json::from_str(&req.to_string().replace("172.17.", "172.30.")).unwrap();
            let mut req = req;
            if req.get("PoolID").is_some() {
                req["PoolID"] = Value::String(pool_id.clone());
            }
            if section.starts_with("D1") && path.ends_with("CreateNetwork") {
                let e = call_err(&p, &rt, &path, req.clone());
                assert!(e.contains("unknown option \"rc.opt\""), "{e}");
                req["Options"][OPT_GENERIC] = json!({"mtu": "1450"});
            }
            let got = call(&p, &rt, &path, req.clone());
            let c = Call::from_path(&path).unwrap();
            if c == Call::RequestPool {
                pool_id = got["PoolID"].as_str().unwrap().to_string();
            }
            match c {
                Call::Activate => {
                    assert_eq!(got, json!({"Implements": ["NetworkDriver", "IpamDriver"]}))
                }
                Call::Join => {
                    assert!(got["InterfaceName"]["SrcName"]
                        .as_str()
                        .unwrap()
                        .starts_with("sp"));
                    assert_eq!(got["InterfaceName"]["DstPrefix"], "eth");
                    if section.starts_with("D2") || section.starts_with("E1") {
                        assert_eq!(got["Gateway"], stub_reply["Gateway"], "{section}");
                    }
                }
                Call::CreateEndpoint => {
                    let gave_mac = req["Interface"]["MacAddress"] != "";
                    assert_eq!(got["Interface"].get("Address"), None, "{section}");
                    assert_eq!(
                        got["Interface"].get("MacAddress").is_some(),
                        !gave_mac,
                        "{section}: {got}"
                    );
                }
                Call::IpamCapabilities => assert_eq!(
                    got,
                    json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
                ),
                Call::GetDefaultAddressSpaces | Call::RequestPool => {
                    assert_eq!(
                        got.as_object().unwrap().keys().collect::<Vec<_>>(),
                        stub_reply.as_object().unwrap().keys().collect::<Vec<_>>()
                    );
                }
                // The stub's pool was 10.125.0.0/24; sluice picks the first free default pool.
                Call::RequestAddress => {
                    assert!(got["Address"].as_str().unwrap().starts_with("172.18.0."))
                }
                _ => assert_eq!(got, stub_reply, "{section} {path}"),
            }
            if section.starts_with("D2") && c == Call::CreateEndpoint {
                let en = rt.block_on(p.engine.endpoints()).unwrap();
                let e = en.iter().find(|e| e.name == "629e93284480").unwrap();
                assert_eq!(e.ipv4, "10.124.0.99/24");
                assert_eq!(e.mac, "02:42:0a:7c:00:63");
                assert_eq!(e.ports, ["0.0.0.0:18081->80/tcp"]);
                assert!(e.ifname.starts_with("sp"));
            }
        }
        let left = rt.block_on(p.engine.list()).unwrap();
        assert_eq!(
            left.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["bridge", "host", "none"],
            "every docker network was removed"
        );
        assert!(rt.block_on(p.engine.endpoints()).unwrap().is_empty());
    }

    #[test]
    fn bad_options_and_unusable_pools_are_refused_at_create() {
        let db = tmp("badopts");
        let (p, rt) = plugin(&db);
        let create = |generic: Value, pool: &str| {
            call_err(
                &p,
                &rt,
                "/NetworkDriver.CreateNetwork",
                json!({"NetworkID": "ef".repeat(32), "Options": {"com.docker.network.generic": generic},
                  "IPv4Data": [{"AddressSpace": "x", "Pool": pool, "Gateway": ""}]}),
            )
        };
        assert!(create(json!({"mtu": "0"}), "10.89.0.0/24").contains("mtu"));
        assert!(create(json!({"vlan": "5000"}), "10.89.0.0/24").contains("vlan"));
        assert!(create(json!({"parent": "eth0\nx"}), "10.89.0.0/24").contains("parent"));
        assert!(create(json!({}), "127.0.0.0/8").contains("loopback"));
        assert!(rt.block_on(p.engine.endpoints()).unwrap().is_empty());
    }

    #[test]
    fn the_overlay_driver_option_needs_a_cluster_store() {
        let db = tmp("overlayopt");
        let (p, rt) = plugin(&db);
        let create = |generic: Value| {
            call_err(
                &p,
                &rt,
                "/NetworkDriver.CreateNetwork",
                json!({"NetworkID": "ef".repeat(32), "Options": {"com.docker.network.generic": generic},
                  "IPv4Data": [{"AddressSpace": "x", "Pool": "10.86.0.0/24", "Gateway": ""}]}),
            )
        };
        let no_store = create(json!({"driver": "overlay", "vni": "5000"}));
        assert!(no_store.contains("--cluster-store"), "{no_store}");
        let other = create(json!({"driver": "macvlan"}));
        assert!(other.contains("-o driver=overlay"), "{other}");
        let req: CreateNetworkRequest = serde_json::from_value(json!({
            "NetworkID": "ef".repeat(32),
            "Options": {"com.docker.network.generic": {"driver": "overlay", "vni": "5000"}},
            "IPv4Data": [{"AddressSpace": "x", "Pool": "10.86.0.0/24", "Gateway": ""}]}))
        .unwrap();
        let spec = network_spec(&req).unwrap();
        assert_eq!(
            (spec.driver, spec.options.vni),
            (Driver::Overlay, Some(5000))
        );
        assert!(
            rt.block_on(p.engine.list()).unwrap().len() == 3,
            "nothing made"
        );
    }

    /// A `CreateNetworkRequest` of docker network `id` with `-o` options `generic` on `pool`.
    fn create_request(id: &str, generic: Value, pool: &str, gateway: &str) -> CreateNetworkRequest {
        serde_json::from_value(
            json!({"NetworkID": id, "Options": {"com.docker.network.generic": generic},
            "IPv4Data": [{"AddressSpace": "x", "Pool": pool, "Gateway": gateway}]}),
        )
        .unwrap()
    }

    #[test]
    fn shared_overlays_are_named_and_need_a_cluster_store() {
        let req = |generic: Value| create_request(&"ab".repeat(32), generic, "10.84.0.0/24", "");
        let s = network_spec(&req(json!({"overlay": "shared", "vni": "5001"}))).unwrap();
        assert_eq!(
            (s.name.as_str(), s.driver, s.options.vni),
            ("shared", Driver::Overlay, Some(5001))
        );
        assert_eq!(
            s.labels,
            [(LABEL_SHARED.to_string(), "true".to_string())].into()
        );
        let with_driver = network_spec(&req(json!({"overlay": "shared", "driver": "overlay"})));
        assert_eq!(with_driver.unwrap().name, "shared");
        let e = network_spec(&req(json!({"overlay": ""})))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs the name"), "{e}");
        let e = network_spec(&req(json!({"overlay": "shared", "driver": "macvlan"})));
        assert!(e.unwrap_err().to_string().contains("-o driver=overlay"));
        let db = tmp("sharedopt");
        let (p, rt) = plugin(&db);
        let e = call_err(
            &p,
            &rt,
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n1", "Options": {"com.docker.network.generic": {"overlay": "shared"}},
                   "IPv4Data": [{"Pool": "10.84.0.0/24", "Gateway": "10.84.0.1/24"}]}),
        );
        assert!(e.contains("--cluster-store"), "{e}");
        assert_eq!(
            rt.block_on(p.engine.list()).unwrap().len(),
            3,
            "nothing made"
        );
    }

    #[test]
    fn joining_a_shared_overlay_needs_its_addressing() {
        let db = tmp("joinable");
        let (p, rt) = plugin(&db);
        call(
            &p,
            &rt,
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n1", "IPv4Data": [{"Pool": "10.84.0.0/24", "Gateway": "10.84.0.1/24"}]}),
        );
        let bridge = rt.block_on(p.engine.inspect(network_name("n1"))).unwrap();
        let spec = |generic: Value, pool: &str, gateway: &str| {
            network_spec(&create_request("n2", generic, pool, gateway)).unwrap()
        };
        let same = spec(json!({"overlay": "x"}), "10.84.0.0/24", "10.84.0.1/24");
        let e = check_joinable(&bridge, &same).unwrap_err().to_string();
        assert!(
            e.contains("docker-n1 is a bridge network, not an overlay"),
            "{e}"
        );
        // The cluster's overlay as this host shows it.
        let mut overlay = bridge.clone();
        overlay.driver = Driver::Overlay.as_str().into();
        overlay.options.insert("vni".into(), "4096".into());
        check_joinable(&overlay, &same).unwrap();
        let vni = json!({"overlay": "x", "vni": "4096"});
        check_joinable(&overlay, &spec(vni, "10.84.0.0/24", "")).unwrap();
        let refused = |generic: Value, pool: &str, gateway: &str| {
            check_joinable(&overlay, &spec(generic, pool, gateway))
                .unwrap_err()
                .to_string()
        };
        let e = refused(json!({"overlay": "x"}), "10.83.0.0/24", "10.83.0.1/24");
        assert!(
            e.contains("subnet is 10.84.0.0/24, this docker network's 10.83.0.0/24"),
            "{e}"
        );
        let e = refused(json!({"overlay": "x"}), "10.84.0.0/24", "10.84.0.254/24");
        assert!(
            e.contains("gateway is 10.84.0.1, this docker network's 10.84.0.254"),
            "{e}"
        );
        let e = refused(json!({"overlay": "x", "vni": "5000"}), "10.84.0.0/24", "");
        assert!(e.contains("VNI is 4096") && e.contains("vni=5000"), "{e}");
        // sluice's IPAM gives a pool of exactly an overlay's subnet (this host's share of it).
        assert!(subnets_in_the_way(vec![overlay.clone()], "10.84.0.0/24").is_empty());
        assert_eq!(
            subnets_in_the_way(vec![overlay, bridge.clone()], "10.84.0.0/25"),
            [
                ("docker-n1".to_string(), "10.84.0.0/24".to_string()),
                ("docker-n1".to_string(), "10.84.0.0/24".to_string())
            ]
        );
        assert_eq!(subnets_in_the_way(vec![bridge], "10.84.0.0/24").len(), 1);
    }

    #[test]
    fn docker_ids_find_their_shared_overlay_and_the_last_one_removes_it() {
        let db = tmp("sharedmap");
        let (p, rt) = plugin(&db);
        // Stand-ins for cluster overlays (the fake engine has no cluster store): one the
        // plugin made, one made otherwise.
        let made = [(LABEL_SHARED.to_string(), "true".to_string())];
        for (name, pool, labels) in [
            ("made", "10.82.0.0/24", made.into()),
            ("other", "10.81.0.0/24", BTreeMap::new()),
        ] {
            let spec = NetworkSpec {
                name: name.into(),
                subnet: Some(pool.parse().unwrap()),
                labels,
                ..NetworkSpec::default()
            };
            rt.block_on(p.engine.create_network(spec)).unwrap();
        }
        rt.block_on(async {
            let mut ipam = p.ipam.lock().await;
            ipam.join_overlay("d1", "made").unwrap();
            ipam.join_overlay("d2", "other").unwrap();
        });
        // docker repeats a CreateNetwork it already made: nothing new.
        let again = json!({"NetworkID": "d1", "Options": {"com.docker.network.generic": {"overlay": "made"}},
                           "IPv4Data": [{"Pool": "10.82.0.0/24", "Gateway": "10.82.0.1/24"}]});
        call(&p, &rt, "/NetworkDriver.CreateNetwork", again);
        assert_eq!(rt.block_on(p.engine.list()).unwrap().len(), 5);
        call(
            &p,
            &rt,
            "/NetworkDriver.CreateEndpoint",
            json!({"NetworkID": "d1", "EndpointID": "e1", "Interface": {"Address": "10.82.0.5/24"}}),
        );
        let eps = rt.block_on(p.engine.endpoints()).unwrap();
        assert_eq!(
            (eps[0].network.as_str(), eps[0].ipv4.as_str()),
            ("made", "10.82.0.5/24")
        );
        for id in ["d1", "d2"] {
            call(
                &p,
                &rt,
                "/NetworkDriver.DeleteEndpoint",
                json!({"NetworkID": id, "EndpointID": "e1"}),
            );
            call(
                &p,
                &rt,
                "/NetworkDriver.DeleteNetwork",
                json!({"NetworkID": id}),
            );
        }
        let names: Vec<String> = rt
            .block_on(p.engine.list())
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert!(!names.contains(&"made".to_string()), "{names:?}");
        assert!(
            names.contains(&"other".to_string()),
            "made otherwise: stays"
        );
        let ipam = rt.block_on(p.ipam.lock());
        assert_eq!(
            (ipam.shared_overlay("d1"), ipam.shared_overlay("d2")),
            (None, None)
        );
    }

    #[test]
    fn ipvlan_l3_joins_with_a_default_route_on_the_link() {
        let db = tmp("ipvl3");
        let (p, rt) = plugin(&db);
        let id = "ef".repeat(32);
        call(
            &p,
            &rt,
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID": id, "Options": {"com.docker.network.generic": {"ipvlan_mode": "l3"}},
              "IPv4Data": [{"AddressSpace": "x", "Pool": "10.87.0.0/24", "Gateway": "10.87.0.1/24"}]}),
        );
        let n = rt.block_on(p.engine.inspect(network_name(&id))).unwrap();
        assert_eq!(n.driver, "ipvlan");
        let ep = "12".repeat(32);
        call(
            &p,
            &rt,
            "/NetworkDriver.CreateEndpoint",
            json!({"NetworkID": id, "EndpointID": ep, "Interface": {"Address": "", "MacAddress": ""}, "Options": null}),
        );
        let join = call(
            &p,
            &rt,
            "/NetworkDriver.Join",
            json!({"NetworkID": id, "EndpointID": ep, "SandboxKey": "/x", "Options": {}}),
        );
        assert_eq!(join.get("Gateway"), None, "l3: no gateway");
        assert_eq!(
            join["StaticRoutes"],
            json!([{"Destination": "0.0.0.0/0", "RouteType": 1}])
        );
    }

    #[test]
    fn options_internal_and_gateways_map_onto_sluice() {
        let db = tmp("opts");
        let (p, rt) = plugin(&db);
        let id = "ab".repeat(32);
        call(
            &p,
            &rt,
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID": id, "Options": {
                "com.docker.network.generic": {"mtu": "1400", "com.docker.network.bridge.enable_icc": "false", "vlan": "7"},
                "com.docker.network.internal": true},
              "IPv4Data": [{"AddressSpace": "x", "Pool": "10.88.0.0/24", "Gateway": "10.88.0.254/24",
                            "AuxAddresses": {"printer": "10.88.0.9/24"}}]}),
        );
        let n = rt.block_on(p.engine.inspect(network_name(&id))).unwrap();
        assert!(n.internal);
        assert_eq!(n.labels[LABEL_NETWORK_ID], id);
        assert_eq!(n.options["com.docker.network.driver.mtu"], "1400");
        assert_eq!(n.options["com.docker.network.bridge.enable_icc"], "false");
        assert_eq!(n.options["vlan"], "7");
        assert_eq!(n.ipam.config[0].gateway.as_deref(), Some("10.88.0.254"));
        assert_eq!(n.ipam.config[0].auxiliary_addresses["printer"], "10.88.0.9");
        let ep = "cd".repeat(32);
        let got = call(
            &p,
            &rt,
            "/NetworkDriver.CreateEndpoint",
            json!({"NetworkID": id, "EndpointID": ep, "Interface": {"Address": "", "MacAddress": ""}, "Options": null}),
        );
        assert_eq!(got["Interface"]["Address"], "10.88.0.1/24");
        assert_eq!(got["Interface"]["MacAddress"], "02:42:0a:58:00:01");
        let join = call(
            &p,
            &rt,
            "/NetworkDriver.Join",
            json!({"NetworkID": id, "EndpointID": ep, "SandboxKey": "/x", "Options": {}}),
        );
        assert_eq!(join.get("Gateway"), None, "internal: no default route");
        assert_eq!(join["DisableGatewayService"], true);
        // Repeated deletions (docker retries) succeed.
        for _ in 0..2 {
            call(
                &p,
                &rt,
                "/NetworkDriver.DeleteEndpoint",
                json!({"NetworkID": id, "EndpointID": ep}),
            );
        }
        for _ in 0..2 {
            call(
                &p,
                &rt,
                "/NetworkDriver.DeleteNetwork",
                json!({"NetworkID": id}),
            );
        }
        assert!(rt.block_on(p.engine.inspect(network_name(&id))).is_err());
    }

    #[test]
    fn host_port_zero_gets_a_port_of_the_daemons_range() {
        let db = tmp("ephemeral");
        let (p, rt) = plugin(&db);
        call(
            &p,
            &rt,
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n1", "IPv4Data": [{"Pool": "10.89.0.0/24", "Gateway": "10.89.0.1/24"}]}),
        );
        // `docker run -p 80 -p 127.0.0.1::53/udp`, or `-P` with those ports exposed.
        call(
            &p,
            &rt,
            "/NetworkDriver.CreateEndpoint",
            json!({"NetworkID": "n1", "EndpointID": "e1", "Interface": {"Address": "10.89.0.5/24"},
                   "Options": {"com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}, {"Proto": 17, "Port": 53}],
                               "com.docker.network.portmap": [{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 0, "HostPortEnd": 0},
                                                              {"Proto": 17, "IP": "", "Port": 53, "HostIP": "127.0.0.1", "HostPort": 0, "HostPortEnd": 0}]}}),
        );
        let eps = rt.block_on(p.engine.endpoints()).unwrap();
        assert_eq!(
            eps[0].ports,
            ["0.0.0.0:61000->80/tcp", "127.0.0.1:61000->53/udp"]
        );
    }

    /// docker 28's `docker network create -d sluice --ipv4=false --ipv6 --subnet V6 NET`: no
    /// IPv4 data, `enable_ipv4` false in the options.
    #[test]
    fn v6_only_networks_come_without_ipv4_data() {
        let r = |options: Value, v4: Value| -> CreateNetworkRequest {
            serde_json::from_value(json!({"NetworkID": "ab".repeat(32), "Options": options,
                "IPv4Data": v4, "IPv6Data": [{"Pool": "fd00:28::/64", "Gateway": "fd00:28::1/64"}]}))
            .unwrap()
        };
        let off = json!({"com.docker.network.enable_ipv4": false, "com.docker.network.enable_ipv6": true});
        let s = network_spec(&r(off.clone(), json!([]))).unwrap();
        assert!(!s.enable_ipv4 && s.enable_ipv6);
        assert_eq!((s.subnet, s.gateway), (None, None));
        assert_eq!(s.subnet6, Some("fd00:28::/64".parse().unwrap()));
        let v4 = json!([{"Pool": "10.89.0.0/24"}]);
        assert!(
            network_spec(&r(off, v4.clone())).is_err(),
            "v4 data with --ipv4=false"
        );
        assert!(
            network_spec(&r(json!({}), json!([]))).is_err(),
            "no v4 data with IPv4"
        );
        assert!(network_spec(&r(json!({}), v4)).unwrap().enable_ipv4);
    }

    /// `docker network create -d sluice --ipam-driver sluice --ipv6 --subnet ... --subnet ...`
    /// then `docker run`: dockerd's calls in order (libnetwork's remote API, v6 parts).
    #[test]
    fn dual_stack_networks_take_dockers_v6_pool_addresses_and_gateway() {
        let db = tmp("dual");
        let (p, rt) = plugin(&db);
        let pool6 = call(
            &p,
            &rt,
            "/IpamDriver.RequestPool",
            json!({"AddressSpace": "sluice-local", "Pool": "fd00:28::/64", "SubPool": "", "Options": {}, "V6": true}),
        );
        assert_eq!(
            pool6,
            json!({"PoolID": "fd00:28::/64", "Pool": "fd00:28::/64", "Data": {}})
        );
        let gw6 = call(
            &p,
            &rt,
            "/IpamDriver.RequestAddress",
            json!({"PoolID": "fd00:28::/64", "Address": "", "Options": {"RequestAddressType": GATEWAY_REQUEST}}),
        );
        assert_eq!(gw6["Address"], "fd00:28::1/64");
        let id = "d6".repeat(32);
        call(
            &p,
            &rt,
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID": id, "Options": {"com.docker.network.enable_ipv6": true, "com.docker.network.generic": {}},
              "IPv4Data": [{"AddressSpace": "sluice-local", "Pool": "10.86.0.0/24", "Gateway": "10.86.0.1/24"}],
              "IPv6Data": [{"AddressSpace": "sluice-local", "Pool": "fd00:28::/64", "Gateway": "fd00:28::1/64",
                            "AuxAddresses": {"router": "fd00:28::fe/64"}}]}),
        );
        let n = rt.block_on(p.engine.inspect(network_name(&id))).unwrap();
        assert!(n.enable_ipv6);
        assert_eq!(n.ipam.config[1].subnet, "fd00:28::/64");
        assert_eq!(n.ipam.config[1].gateway.as_deref(), Some("fd00:28::1"));
        assert_eq!(
            n.ipam.config[1].auxiliary_addresses["router"],
            "fd00:28::fe"
        );
        let addr6 = call(
            &p,
            &rt,
            "/IpamDriver.RequestAddress",
            json!({"PoolID": "fd00:28::/64", "Address": "", "Options": null}),
        );
        assert_eq!(addr6["Address"], "fd00:28::2/64");
        let (a, b) = ("a6".repeat(32), "b6".repeat(32));
        let got = call(
            &p,
            &rt,
            "/NetworkDriver.CreateEndpoint",
            json!({"NetworkID": id, "EndpointID": a, "Interface": {"Address": "10.86.0.2/24", "AddressIPv6": "fd00:28::2/64", "MacAddress": ""},
                   "Options": {"com.docker.network.portmap": [{"Proto": 6, "IP": "", "Port": 80, "HostIP": "::", "HostPort": 8080, "HostPortEnd": 8080}]}}),
        );
        assert_eq!(got["Interface"].get("AddressIPv6"), None, "docker gave it");
        // An endpoint docker's IPAM gave no v6 address (its own IPAM without a v6 pool).
        let got = call(
            &p,
            &rt,
            "/NetworkDriver.CreateEndpoint",
            json!({"NetworkID": id, "EndpointID": b, "Interface": {"Address": "10.86.0.3/24", "AddressIPv6": ""}, "Options": null}),
        );
        assert_eq!(got["Interface"]["AddressIPv6"], "fd00:28::3/64");
        let eps = rt.block_on(p.engine.endpoints()).unwrap();
        let ea = eps.iter().find(|e| e.name == short(&a)).unwrap();
        assert_eq!(ea.ipv6.as_deref(), Some("fd00:28::2/64"));
        assert_eq!(ea.ports, ["0.0.0.0:8080->80/tcp"], "`::` is every address");
        let join = call(
            &p,
            &rt,
            "/NetworkDriver.Join",
            json!({"NetworkID": id, "EndpointID": a, "SandboxKey": "/x", "Options": {}}),
        );
        assert_eq!(join["Gateway"], "10.86.0.1");
        assert_eq!(join["GatewayIPv6"], "fd00:28::1");
        // `--ipv6` with docker's IPAM giving no v6 subnet: sluice picks a ULA /64.
        let id2 = "e6".repeat(32);
        call(
            &p,
            &rt,
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID": id2, "Options": {"com.docker.network.enable_ipv6": true},
              "IPv4Data": [{"Pool": "10.85.0.0/24", "Gateway": "10.85.0.1/24"}], "IPv6Data": []}),
        );
        let n2 = rt.block_on(p.engine.inspect(network_name(&id2))).unwrap();
        assert!(n2.enable_ipv6);
        assert_eq!(n2.ipam.config[1].subnet, "fd00:5c1c:e::/64");
        let pool = call(&p, &rt, "/IpamDriver.RequestPool", json!({"V6": true}));
        assert_eq!(
            pool["Pool"], "fd00:5c1c:e:1::/64",
            "sluice's networks' v6 subnets are skipped"
        );
    }

    #[test]
    fn refusals_name_the_problem() {
        let db = tmp("refuse");
        let (p, rt) = plugin(&db);
        let net = |opts: Value, v4: Value| json!({"NetworkID": "n1", "Options": opts, "IPv4Data": v4, "IPv6Data": []});
        let v4 = json!([{"Pool": "10.89.0.0/24", "Gateway": "10.89.0.1/24"}]);
        let e = call_err(
            &p,
            &rt,
            "/NetworkDriver.CreateNetwork",
            net(
                json!({"com.docker.network.generic": {"com.docker.network.bridge.name": "x"}}),
                v4.clone(),
            ),
        );
        assert!(e.contains("unknown option"), "{e}");
        let two6 = json!([{"Pool": "fd00:1::/64"}, {"Pool": "fd00:2::/64"}]);
        let mut r = net(json!({"com.docker.network.enable_ipv6": true}), v4.clone());
        r["IPv6Data"] = two6;
        let e = call_err(&p, &rt, "/NetworkDriver.CreateNetwork", r);
        assert!(e.contains("at most one IPv6 subnet"), "{e}");
        r = net(json!({}), v4.clone());
        r["IPv6Data"] = json!([{"Pool": "fd00:1::/64", "Gateway": "10.89.0.1/24"}]);
        let e = call_err(&p, &rt, "/NetworkDriver.CreateNetwork", r);
        assert!(e.contains("not an IPv6 address"), "{e}");
        let e = call_err(
            &p,
            &rt,
            "/NetworkDriver.CreateNetwork",
            net(json!({}), json!([])),
        );
        assert!(e.contains("exactly one IPv4 subnet"), "{e}");
        let e = call_err(
            &p,
            &rt,
            "/NetworkDriver.CreateNetwork",
            net(
                json!({}),
                json!([{"Pool": "172.17.5.0/24", "Gateway": "172.17.5.1/24"}]),
            ),
        );
        assert!(e.contains("overlaps"), "{e}");
        call(
            &p,
            &rt,
            "/NetworkDriver.CreateNetwork",
            net(json!({}), v4.clone()),
        );
        call(&p, &rt, "/NetworkDriver.CreateNetwork", net(json!({}), v4));
        let e = call_err(
            &p,
            &rt,
            "/NetworkDriver.CreateEndpoint",
            json!({"NetworkID": "nope", "EndpointID": "e1", "Interface": {"Address": "10.89.0.5/24"}}),
        );
        assert!(e.contains("sluice has no network"), "{e}");
        let e = call_err(
            &p,
            &rt,
            "/NetworkDriver.Join",
            json!({"NetworkID": "n1", "EndpointID": "e9", "SandboxKey": "/x"}),
        );
        assert!(e.contains("no endpoint e9"), "{e}");
        let e = call_err(&p, &rt, "/NetworkDriver.Join", json!({"NetworkID": 5}));
        assert!(e.starts_with("invalid Join request"), "{e}");
        let e = call_err(
            &p,
            &rt,
            "/IpamDriver.RequestPool",
            json!({"Pool": "10.89.0.128/25"}),
        );
        assert!(e.contains("overlaps network docker-n1"), "{e}");
        let e = call_err(
            &p,
            &rt,
            "/IpamDriver.RequestPool",
            json!({"Pool": "fd00:1::/64", "SubPool": "fd00:2::/80", "V6": true}),
        );
        assert!(e.contains("is not inside subnet fd00:1::/64"), "{e}");
    }

    #[test]
    fn unpublishable_ports_are_refused_and_host_ips_kept() {
        let b = |proto, host_ip: &str| PortBinding {
            proto,
            ip: String::new(),
            port: 53,
            host_ip: host_ip.into(),
            host_port: 5353,
            host_port_end: 5360,
        };
        let p = publish(&[b(17, "127.0.0.1"), b(6, "0.0.0.0")]).unwrap();
        assert_eq!(p[0].to_string(), "127.0.0.1:5353:53/udp");
        assert_eq!(p[1].host_ip, None);
        let any = PortBinding {
            host_port: 0,
            host_port_end: 0,
            ..b(6, "")
        };
        assert_eq!(publish(&[any]).unwrap()[0].host_ports, None, "-p 53, -P");
        assert!(publish(&[b(132, "")]).is_err());
        assert!(publish(&[b(6, "x")]).is_err());
        let v6 = publish(&[b(6, "2001:db8::2"), b(6, "::")]).unwrap();
        assert_eq!(v6[0].to_string(), "[2001:db8::2]:5353:53/tcp");
        assert_eq!((v6[1].host_ip, v6[1].host_ip6), (None, None));
    }
}
