//! sluice as a CNI plugin (spec 1.0 and 1.1): the `sluice-cni` binary reads the runtime's
//! `CNI_*` variables and a `bridge`-shaped network configuration, and turns ADD, DEL, CHECK,
//! STATUS and GC into calls to sluiced's API. sluiced does all the work (network, IPAM, veth,
//! addresses, routes, published ports); the plugin only translates. [`config`] parses and maps
//! the configuration, [`result`] builds the CNI result, [`error`] is the CNI error object; this
//! module runs one command. See docs/cni.md.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod result;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use self::config::{
    endpoint_name, parse_cni_args, same_subnet, NetConf, CREATED_BY_LABEL, ENDPOINT_PREFIX,
};
use self::error::{
    CniError, CHECK_MISMATCH, DAEMON_REFUSED, INVALID_CONFIG, INVALID_ENV, IO_FAILURE,
    NOT_AVAILABLE, TRY_AGAIN_LATER, UNKNOWN_CONTAINER,
};
use self::result::{CniResult, VersionInfo};
use sluice_api::api::{DisconnectRequest, EndpointView, VersionView, CNI_CREATOR};
use sluice_api::client::{Client, ClientError};
use sluice_api::files::ResolvConf;
use sluice_api::model::{EndpointSpec, NetworkInspect, Placement, Sandbox};
use sluice_dataplane::config::{Ipv4Cidr, Ipv6Cidr};

/// The newest spec version the plugin speaks (VERSION's own `cniVersion`).
pub const LATEST_VERSION: &str = "1.1.0";
/// Every configuration version the plugin accepts.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0", "1.1.0"];

/// The runtime's `CNI_*` variables (unset ones are `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: Option<String>,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`.
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
    /// `CNI_ARGS`.
    pub args: Option<String>,
}

impl CniEnv {
    /// The variables of this process.
    pub fn from_process() -> CniEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        CniEnv {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
        }
    }

    fn need<'a>(&self, v: &'a Option<String>, name: &str) -> Result<&'a str, CniError> {
        v.as_deref().ok_or_else(|| {
            CniError::new(
                INVALID_ENV,
                format!("{name} is not set"),
                format!("{} needs {name}", self.command.as_deref().unwrap_or("?")),
            )
        })
    }
}

/// Runs one CNI command: what to print on stdout on success (nothing for DEL, CHECK, STATUS
/// and GC), or the error to print with exit code 1.
pub async fn run(env: &CniEnv, stdin: &[u8]) -> Result<Option<String>, CniError> {
    let command = env.command.as_deref().unwrap_or("");
    if command == "VERSION" {
        return serde_json::to_string(&VersionInfo::ours())
            .map(Some)
            .map_err(|e| CniError::new(IO_FAILURE, "cannot encode the version", e.to_string()));
    }
    if !matches!(command, "ADD" | "DEL" | "CHECK" | "STATUS" | "GC") {
        return Err(CniError::new(
            INVALID_ENV,
            "unknown CNI_COMMAND",
            format!("{command:?}: use ADD, DEL, CHECK, VERSION, STATUS or GC"),
        ));
    }
    let conf = config::parse(stdin)?;
    let version = conf.cni_version.clone();
    let client = Client::new(conf.socket());
    let done = match command {
        "ADD" => add(env, &conf, &client).await.map(Some),
        "DEL" => del(env, &conf, &client).await.map(|()| None),
        "CHECK" => check(env, &conf, &client).await.map(|()| None),
        _ if version.as_str() < "1.1.0" => Err(CniError::new(
            error::INCOMPATIBLE_VERSION,
            format!("{command} needs cniVersion 1.1.0"),
            format!("the configuration is {version}"),
        )),
        "STATUS" => status(&client).await.map(|()| None),
        _ => gc(&conf, &client).await.map(|()| None),
    };
    done.map_err(|e| e.with_version(&version))
}

/// A client error as a CNI error: unreachable daemon = try again later, refusals keep the
/// daemon's words.
fn from_client(e: ClientError) -> CniError {
    match &e {
        ClientError::Connect { .. } => {
            CniError::new(TRY_AGAIN_LATER, "sluiced is not reachable", e.to_string())
        }
        ClientError::Refused { status, message } => CniError::new(
            DAEMON_REFUSED,
            "sluiced refused the request",
            format!("{message} (HTTP {status})"),
        ),
        ClientError::Http(_) | ClientError::Decode(_) => {
            CniError::new(IO_FAILURE, "talking to sluiced failed", e.to_string())
        }
    }
}

fn is_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Refused { status: 404, .. })
}

/// The network of `conf`: the existing one if its addressing agrees, else a new one.
async fn ensure_network(conf: &NetConf, client: &Client) -> Result<NetworkInspect, CniError> {
    let spec = conf.network_spec()?;
    let path = format!("/networks/{}", conf.name);
    let net = match client.get::<NetworkInspect>(&path).await {
        Ok(n) => n,
        Err(e) if is_not_found(&e) => match client.post("/networks", &spec).await {
            Ok(v) => serde_json::from_value(v)
                .map_err(|e| CniError::new(IO_FAILURE, "unexpected answer", e.to_string()))?,
            // Another ADD created it meanwhile: use that one (checked below).
            Err(ClientError::Refused { status: 409, .. }) => {
                client.get(&path).await.map_err(from_client)?
            }
            Err(ClientError::Refused {
                status: 400,
                message,
            }) => {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    "sluiced refused the network",
                    message,
                ))
            }
            Err(e) => return Err(from_client(e)),
        },
        Err(e) => return Err(from_client(e)),
    };
    let conflict =
        |d: String| CniError::new(INVALID_CONFIG, "network exists with other settings", d);
    if net.driver != "bridge" {
        return Err(conflict(format!(
            "sluice network {} has driver {}, not bridge",
            net.name, net.driver
        )));
    }
    let have = net.ipam.config.first();
    if let Some(want) = spec.subnet {
        let got = have.and_then(|c| c.subnet.parse::<Ipv4Cidr>().ok());
        if !got.is_some_and(|g| same_subnet(&g, &want)) {
            return Err(conflict(format!(
                "sluice network {} has subnet {}, the configuration asks for {want}",
                net.name,
                have.map_or("none", |c| c.subnet.as_str())
            )));
        }
    }
    if let Some(want) = spec.gateway {
        let got = have.and_then(|c| c.gateway.as_deref());
        if got != Some(want.to_string().as_str()) {
            return Err(conflict(format!(
                "sluice network {} has gateway {}, the configuration asks for {want}",
                net.name,
                got.unwrap_or("none")
            )));
        }
    }
    if let Some(want) = spec.subnet6 {
        let same = |s: &str| {
            s.parse::<Ipv6Cidr>()
                .is_ok_and(|g| g.prefix == want.prefix && g.network() == want.network())
        };
        if !net.ipam.config.iter().any(|c| same(&c.subnet)) {
            return Err(conflict(format!(
                "sluice network {} has no IPv6 subnet {want}",
                net.name
            )));
        }
    }
    Ok(net)
}

async fn add(env: &CniEnv, conf: &NetConf, client: &Client) -> Result<String, CniError> {
    let cid = env.need(&env.container_id, "CNI_CONTAINERID")?;
    let netns = env.need(&env.netns, "CNI_NETNS")?;
    let ifname = env.need(&env.ifname, "CNI_IFNAME")?;
    let net = ensure_network(conf, client).await?;
    let spec = endpoint_spec(conf, &net.name, cid, netns, ifname, env.args.as_deref())?;
    let path = format!("/networks/{}/connect", net.name);
    let v = match client.post(&path, &spec).await {
        // The last DEL of the network removed it between our check and the connect: make it
        // again, once.
        Err(e) if is_not_found(&e) => {
            ensure_network(conf, client).await?;
            client.post(&path, &spec).await
        }
        other => other,
    }
    .map_err(from_client)?;
    let ep: EndpointView = serde_json::from_value(v)
        .map_err(|e| CniError::new(IO_FAILURE, "unexpected answer from sluiced", e.to_string()))?;
    let dns = ep
        .files
        .as_ref()
        .and_then(|f| std::fs::read_to_string(&f.resolv_conf).ok())
        .map(|t| ResolvConf::parse(&t));
    let r = result::build(&conf.cni_version, &ep, &net, netns, dns.as_ref());
    serde_json::to_string(&r)
        .map_err(|e| CniError::new(IO_FAILURE, "cannot encode the result", e.to_string()))
}

/// What ADD asks sluiced to connect: the attachment of container `cid`'s namespace `netns` as
/// `ifname` to `network`, with the static address, MAC and aliases of `CNI_ARGS` (`args`) and
/// the configuration's published ports.
pub fn endpoint_spec(
    conf: &NetConf,
    network: &str,
    cid: &str,
    netns: &str,
    ifname: &str,
    args: Option<&str>,
) -> Result<EndpointSpec, CniError> {
    let args = parse_cni_args(args.unwrap_or(""));
    Ok(EndpointSpec {
        network: network.to_string(),
        sandbox: Sandbox::Netns(PathBuf::from(netns)),
        name: endpoint_name(cid, ifname),
        ip: conf.static_ip(&args)?,
        ip6: conf.static_ip6()?,
        mac: conf.static_mac(&args)?,
        aliases: conf.aliases(&args),
        links: Vec::new(),
        publish: conf.publish()?,
        names: Default::default(),
        ifname: Some(ifname.to_string()),
        placement: Placement::Sandbox,
    })
}

/// DEL succeeds whenever the attachment is gone afterwards: also when the endpoint or network
/// is unknown, and when sluiced is not running (its restart releases endpoints whose
/// interface disappeared with the container's namespace).
async fn del(env: &CniEnv, conf: &NetConf, client: &Client) -> Result<(), CniError> {
    let cid = env.need(&env.container_id, "CNI_CONTAINERID")?;
    let ifname = env.need(&env.ifname, "CNI_IFNAME")?;
    disconnect(client, &conf.name, &endpoint_name(cid, ifname)).await?;
    remove_if_unused(client, &conf.name).await;
    Ok(())
}

/// Removes a network sluice-cni made once its last endpoint is gone, so that a runtime's
/// `network rm` (which calls no plugin) leaves nothing behind. Best effort: a network that got
/// an endpoint meanwhile is refused by sluiced and stays.
async fn remove_if_unused(client: &Client, network: &str) {
    let Ok(net) = client
        .get::<NetworkInspect>(&format!("/networks/{network}"))
        .await
    else {
        return;
    };
    let ours = net.labels.get(CREATED_BY_LABEL).map(String::as_str) == Some(CNI_CREATOR);
    if ours && net.containers.is_empty() {
        let _ = client.delete(&format!("/networks/{network}")).await;
    }
}

async fn disconnect(client: &Client, network: &str, endpoint: &str) -> Result<(), CniError> {
    let req = DisconnectRequest {
        endpoint: endpoint.to_string(),
    };
    match client
        .post(&format!("/networks/{network}/disconnect"), &req)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e @ ClientError::Connect { .. }) => {
            eprintln!("sluice-cni: DEL: {e}; nothing to remove");
            Ok(())
        }
        Err(e) => Err(from_client(e)),
    }
}

async fn endpoints_of(client: &Client, network: &str) -> Result<Vec<EndpointView>, CniError> {
    let all: Vec<EndpointView> = client.get("/endpoints").await.map_err(from_client)?;
    Ok(all.into_iter().filter(|e| e.network == network).collect())
}

async fn check(env: &CniEnv, conf: &NetConf, client: &Client) -> Result<(), CniError> {
    let cid = env.need(&env.container_id, "CNI_CONTAINERID")?;
    let netns = env.need(&env.netns, "CNI_NETNS")?;
    let ifname = env.need(&env.ifname, "CNI_IFNAME")?;
    let prev: CniResult = conf
        .prev_result
        .clone()
        .ok_or_else(|| CniError::new(INVALID_CONFIG, "CHECK needs prevResult", ""))
        .and_then(|v| {
            serde_json::from_value(v).map_err(|e| {
                CniError::new(
                    error::DECODE_FAILURE,
                    "cannot decode prevResult",
                    e.to_string(),
                )
            })
        })?;
    let want = prev.expected(ifname)?;
    let name = endpoint_name(cid, ifname);
    let ep = endpoints_of(client, &conf.name)
        .await?
        .into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| {
            CniError::new(
                UNKNOWN_CONTAINER,
                "no such attachment",
                format!("sluiced has no endpoint {name} on network {}", conf.name),
            )
        })?;
    let mismatch = |d: String| CniError::new(CHECK_MISMATCH, "attachment differs", d);
    if ep.ipv4 != want.address || !ep.mac.eq_ignore_ascii_case(&want.mac) {
        return Err(mismatch(format!(
            "sluiced has {} {}, prevResult {} {}",
            ep.ipv4, ep.mac, want.address, want.mac
        )));
    }
    if ep.sandbox != Sandbox::Netns(PathBuf::from(netns)) || ep.ifname != ifname {
        return Err(mismatch(format!(
            "sluiced has the endpoint in {} as {}",
            ep.sandbox, ep.ifname
        )));
    }
    let sandbox = Sandbox::Netns(PathBuf::from(netns));
    let link = sluice_netlink::sandbox_link(&sandbox, ifname)
        .await
        .map_err(|e| mismatch(e.to_string()))?
        .ok_or_else(|| mismatch(format!("{netns} has no interface {ifname}")))?;
    let addr: Option<Ipv4Cidr> = want.address.parse().ok();
    if !addr.is_some_and(|a| {
        link.addrs
            .iter()
            .any(|l| l.addr == a.addr && l.prefix == a.prefix)
    }) {
        return Err(mismatch(format!(
            "{ifname} in {netns} does not have address {}",
            want.address
        )));
    }
    if link.mac.map(|m| m.to_string()) != Some(want.mac.clone()) {
        return Err(mismatch(format!(
            "{ifname} in {netns} has MAC {}, not {}",
            link.mac.map_or_else(|| "none".into(), |m| m.to_string()),
            want.mac
        )));
    }
    if let Some(r) = prev.missing_route(&link.routes) {
        return Err(mismatch(format!(
            "{netns} has no route to {} via {} on {ifname}",
            r.dst,
            r.gw.as_deref().unwrap_or("the link")
        )));
    }
    Ok(())
}

async fn status(client: &Client) -> Result<(), CniError> {
    client
        .get::<VersionView>("/version")
        .await
        .map(drop)
        .map_err(|e| CniError::new(NOT_AVAILABLE, "sluiced is not available", e.to_string()))
}

/// GC: disconnects the network's plugin-made endpoints (`cni-...`) that belong to no valid
/// attachment. Endpoints connected by other means are never touched.
async fn gc(conf: &NetConf, client: &Client) -> Result<(), CniError> {
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        CniError::new(
            INVALID_CONFIG,
            "GC needs cni.dev/valid-attachments",
            "the runtime must list the attachments to keep",
        )
    })?;
    let keep: BTreeSet<String> = valid
        .iter()
        .map(|a| endpoint_name(&a.container_id, &a.ifname))
        .collect();
    let stale: Vec<String> = match client
        .get::<NetworkInspect>(&format!("/networks/{}", conf.name))
        .await
    {
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(from_client(e)),
        Ok(_) => endpoints_of(client, &conf.name)
            .await?
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n.starts_with(ENDPOINT_PREFIX) && !keep.contains(n))
            .collect(),
    };
    let mut failed = BTreeMap::new();
    for name in stale {
        if let Err(e) = disconnect(client, &conf.name, &name).await {
            failed.insert(name, e.details);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            DAEMON_REFUSED,
            "GC could not remove every stale endpoint",
            format!("{failed:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(command: &str) -> CniEnv {
        CniEnv {
            command: Some(command.into()),
            container_id: Some("c1".into()),
            netns: Some("/run/netns/none".into()),
            ifname: Some("eth0".into()),
            args: None,
        }
    }

    fn go(env: &CniEnv, stdin: &str) -> Result<Option<String>, CniError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(env, stdin.as_bytes()))
    }

    const NO_DAEMON: &str = r#"{"cniVersion": "1.1.0", "name": "n", "type": "sluice-cni", "socket": "/nonexistent/sluice.sock"}"#;

    #[test]
    fn version_needs_no_config() {
        let out = go(&env("VERSION"), "").unwrap().unwrap();
        let v: VersionInfo = serde_json::from_str(&out).unwrap();
        assert_eq!(v, VersionInfo::ours());
    }

    #[test]
    fn bad_environment_is_code_4() {
        assert_eq!(go(&env("FROB"), NO_DAEMON).unwrap_err().code, INVALID_ENV);
        assert_eq!(
            go(&CniEnv::default(), NO_DAEMON).unwrap_err().code,
            INVALID_ENV
        );
        let mut e = env("ADD");
        e.netns = None;
        let err = go(&e, NO_DAEMON).unwrap_err();
        assert_eq!((err.code, err.cni_version.as_str()), (INVALID_ENV, "1.1.0"));
    }

    #[test]
    fn without_daemon_del_succeeds_status_and_add_fail() {
        assert_eq!(go(&env("DEL"), NO_DAEMON).unwrap(), None);
        assert_eq!(
            go(&env("STATUS"), NO_DAEMON).unwrap_err().code,
            NOT_AVAILABLE
        );
        assert_eq!(
            go(&env("ADD"), NO_DAEMON).unwrap_err().code,
            TRY_AGAIN_LATER
        );
        let v10 = NO_DAEMON.replace("1.1.0", "1.0.0");
        assert_eq!(
            go(&env("STATUS"), &v10).unwrap_err().code,
            error::INCOMPATIBLE_VERSION
        );
        assert_eq!(go(&env("GC"), NO_DAEMON).unwrap_err().code, INVALID_CONFIG);
    }
}
