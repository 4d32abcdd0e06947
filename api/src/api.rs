//! The daemon's HTTP/JSON API: paths, and the request and response types that are not already
//! model types. The CLI and the daemon share them, so the two cannot drift apart. The
//! reference page is docs/API.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_dataplane::offload::OffloadStats;

use crate::files::EndpointFiles;
use crate::model::{Endpoint, Network, Sandbox};

/// The API version, the first path segment of every route.
pub const VERSION: &str = "v1";
/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sluice/sluice.sock";
/// Where the daemon keeps its database and per-endpoint files unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/sluice";

/// The label sluice-cni puts on the networks it creates; with [`CNI_CREATOR`] as its value it
/// also tells sluiced that such a network goes when its last endpoint does (the plugin's last
/// DEL removes it, and so does a restart that releases that endpoint).
pub const CREATED_BY_LABEL: &str = "io.sluice.created-by";
/// The value of [`CREATED_BY_LABEL`] on networks sluice-cni made.
pub const CNI_CREATOR: &str = "sluice-cni";

/// Every error the API returns: HTTP status plus one line naming the problem (docker's shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The problem and, where it helps, the fix.
    pub message: String,
}

/// `POST /v1/networks/{network}/disconnect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectRequest {
    /// The endpoint's name or id.
    pub endpoint: String,
}

/// `POST /v1/networks/prune`: what was removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Names of the removed networks.
    #[serde(rename = "NetworksDeleted")]
    pub networks_deleted: Vec<String>,
}

/// One endpoint as `sluice ps` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    /// The endpoint's name (docker's container name).
    pub name: String,
    /// Its id.
    pub id: String,
    /// The network's name.
    pub network: String,
    /// Where its interface is.
    pub sandbox: Sandbox,
    /// Address with prefix; empty on an IPv6-only network.
    pub ipv4: String,
    /// v6 address with prefix, on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// Its MAC.
    pub mac: String,
    /// The interface inside the sandbox.
    pub ifname: String,
    /// The host end the dataplane reads.
    pub host_ifname: String,
    /// Published ports, docker ps style (`0.0.0.0:8080->80/tcp`).
    pub ports: Vec<String>,
    /// Extra names on the network.
    pub aliases: Vec<String>,
    /// The resolv.conf and hosts files written for it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<EndpointFiles>,
    /// The gateway of the default route that connecting set in the sandbox (only in connect's
    /// answer, and only when this endpoint's connect installed one: a sandbox's first routed
    /// network sets it, later ones do not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route: Option<String>,
    /// Its network's IPv4 gateway (docker's `NetworkSettings.Networks.NET.Gateway`; inspect's
    /// `IPAM.Config` leaves out a gateway the user did not give).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Its network's IPv6 gateway, when the endpoint has a v6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// The IPv4 address the user fixed with `--ip` (docker's `IPAMConfig.IPv4Address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_ipv4: Option<String>,
    /// The IPv6 address the user fixed with `--ip6` (docker's `IPAMConfig.IPv6Address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_ipv6: Option<String>,
}

impl EndpointView {
    /// The view of `e`, which is on `net`.
    pub fn new(e: &Endpoint, net: &Network, files: Option<EndpointFiles>) -> EndpointView {
        let prefix = net.subnet.map_or(32, |s| s.prefix);
        EndpointView {
            name: e.spec.name.clone(),
            id: e.id.clone(),
            network: net.spec.name.clone(),
            sandbox: e.spec.sandbox.clone(),
            ipv4: e.ip.map(|ip| format!("{ip}/{prefix}")).unwrap_or_default(),
            ipv6: e
                .ip6
                .map(|ip| format!("{ip}/{}", net.subnet6.map_or(128, |s| s.prefix))),
            mac: e.mac.to_string(),
            ifname: e.sandbox_ifname.clone(),
            host_ifname: e.host_ifname.clone(),
            ports: e
                .spec
                .publish
                .iter()
                .map(|p| match e.ip {
                    Some(_) => port_column(p),
                    None => port_column_v6_only(p),
                })
                .collect(),
            aliases: e.spec.aliases.clone(),
            files,
            default_route: None,
            gateway: net.gateway.map(|g| g.to_string()),
            gateway6: net
                .gateway6
                .filter(|_| e.ip6.is_some())
                .map(|g| g.to_string()),
            static_ipv4: e.spec.ip.map(|ip| ip.to_string()),
            static_ipv6: e.spec.ip6.map(|ip| ip.to_string()),
        }
    }
}

/// docker ps's PORTS entry for one mapping: `0.0.0.0:8080->80/tcp`, ranges as `a-b`; a
/// mapping whose host port is not picked yet is only its container side, `80/tcp`.
pub fn port_column(p: &crate::publish::PublishSpec) -> String {
    let container = format!("{}/{}", p.container_ports, p.proto_name());
    let Some(host_ports) = p.host_ports else {
        return container;
    };
    let host_ip = match (p.host_ip, p.host_ip6) {
        (_, Some(ip6)) => format!("[{ip6}]"),
        (ip, None) => ip.map_or_else(|| "0.0.0.0".to_string(), |ip| ip.to_string()),
    };
    format!("{host_ip}:{host_ports}->{container}")
}

/// [`port_column`] for an endpoint without a v4 address (an IPv6-only network): a mapping on
/// every address is published on v6's alone, shown as docker does, `[::]:8080->80/tcp`.
pub fn port_column_v6_only(p: &crate::publish::PublishSpec) -> String {
    let every = p.host_ip.is_none() && p.host_ip6.is_none();
    let on_v6 = crate::publish::PublishSpec {
        host_ip6: p
            .host_ip6
            .or(every.then_some(std::net::Ipv6Addr::UNSPECIFIED)),
        ..*p
    };
    port_column(&on_v6)
}

/// One port's counters in `sluice stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatsView {
    /// Interface name.
    pub port: String,
    /// The endpoint on it (`uplink` for the uplink).
    pub endpoint: String,
    /// The network it is on (empty for the uplink).
    pub network: String,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames dropped that arrived on (or were bound for) this port, by reason.
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    /// Frames the kernel had for sluice on this port since it was attached (queued to its
    /// AF_PACKET rings or sent by its TAP device), dropped ones included.
    #[serde(default)]
    pub kernel_packets: u64,
    /// Of those, frames lost before sluice could read them (a full ring or TAP queue; for a
    /// TAP also failed reads and malformed frames): in none of the other counters.
    #[serde(default)]
    pub kernel_drops: u64,
    /// Times a TPACKET_V3 ring froze because every block was held (0 for V2 rings and TAPs).
    #[serde(default)]
    pub kernel_freezes: u64,
    /// NAPT flows charged to this port (its endpoint's; connections to published ports on an
    /// uplink).
    #[serde(default)]
    pub flows: usize,
    /// Most flows the port's endpoint may hold (its network's `max_flows_per_endpoint` or the
    /// default); none for ports held only to the table's limit (uplinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_flows: Option<usize>,
}

/// One network's table sizes in `sluice stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatsView {
    /// The network.
    pub network: String,
    /// Endpoints on it.
    pub endpoints: usize,
    /// Learned and static FDB entries.
    pub fdb_entries: usize,
    /// Tracked NAPT flows of its endpoints.
    #[serde(default)]
    pub conntrack_entries: usize,
    /// Frames its ports received.
    #[serde(default)]
    pub rx_packets: u64,
    /// Frames its ports sent.
    #[serde(default)]
    pub tx_packets: u64,
    /// Frames dropped on its ports, by reason.
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    /// Frames the kernel dropped on its ports before sluice could read them.
    #[serde(default)]
    pub kernel_drops: u64,
}

/// `GET /v1/stats`: the dataplane's counters with names the operator knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    /// Per port.
    pub ports: Vec<PortStatsView>,
    /// Per network.
    pub networks: Vec<NetworkStatsView>,
    /// Drops by reason (reasons without drops left out).
    pub drops: BTreeMap<String, u64>,
    /// Tracked NAPT flows.
    pub conntrack_entries: usize,
    /// Frames that took their flow's shortcut (the dataplane's fast path) since start.
    #[serde(default)]
    pub shortcut_packets: u64,
    /// Frames the kernel dropped on the attached ports before sluice could read them.
    #[serde(default)]
    pub kernel_drops: u64,
    /// The kernel flow offload (`sluiced --offload tc`): flows and what the kernel forwarded.
    #[serde(default)]
    pub offload: OffloadStats,
}

/// One tracked flow in `sluice conntrack ls` (`conntrack -L`'s information).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackView {
    /// tcp, udp or icmp.
    pub protocol: String,
    /// The first packet's source, as it arrived.
    pub src: String,
    /// The first packet's destination, as it arrived.
    pub dst: String,
    /// Source of replies (after translation: the real peer).
    pub reply_src: String,
    /// Destination of replies (the NAT mapping: uplink address and port).
    pub reply_dst: String,
    /// TCP state, or UNREPLIED/REPLIED.
    pub state: String,
    /// Seconds until it expires without traffic.
    pub expires_in_secs: u64,
    /// The endpoint's network.
    pub network: String,
}

/// One FDB entry in `sluice fdb ls`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbView {
    /// The network.
    pub network: String,
    /// VLAN inside the network (0: none).
    pub vlan: u16,
    /// The MAC.
    pub mac: String,
    /// The interface it is reached through.
    pub port: String,
    /// The endpoint on that port, if any.
    pub endpoint: String,
    /// Endpoint MACs are static; learned ones age.
    pub is_static: bool,
    /// Seconds since last seen.
    pub idle_secs: u32,
}

/// `GET /v1/version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionView {
    /// sluice's version.
    pub version: String,
    /// The API version (`v1`).
    pub api_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_column_matches_docker_ps() {
        let p = |s: &str| port_column(&s.parse().unwrap());
        assert_eq!(p("8080:80"), "0.0.0.0:8080->80/tcp");
        assert_eq!(p("127.0.0.1:53:53/udp"), "127.0.0.1:53->53/udp");
        assert_eq!(p("9000-9001:80-81"), "0.0.0.0:9000-9001->80-81/tcp");
        let v6 = |s: &str| port_column_v6_only(&s.parse().unwrap());
        assert_eq!(v6("8080:80"), "[::]:8080->80/tcp");
        assert_eq!(v6("[fd00::1]:53:53/udp"), "[fd00::1]:53->53/udp");
    }
}
