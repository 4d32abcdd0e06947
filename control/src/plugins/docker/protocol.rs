//! The libnetwork remote driver and remote IPAM protocols: one POST per call, path
//! `/Plugin.Activate`, `/NetworkDriver.X` or `/IpamDriver.X`, JSON in and out (docker sends
//! `Content-Type: application/vnd.docker.plugins.v1.2+json`). Field names are docker's
//! (PascalCase, `NetworkID`, `IPv4Data`, `V6`); docker sends `null` for empty maps and lists,
//! so every collection defaults. An error is `{"Err": "..."}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The content type docker's plugin client sends and expects back.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// docker's generic driver options (`-o KEY=VALUE` of `docker network create`).
pub const OPT_GENERIC: &str = "com.docker.network.generic";
/// Set (true) on the options of a network created with `--internal`.
pub const OPT_INTERNAL: &str = "com.docker.network.internal";
/// Whether the network was created with `--ipv6`.
pub const OPT_ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
/// Whether the network has IPv4 (docker 28's `--ipv4`; false: IPv6-only).
pub const OPT_ENABLE_IPV4: &str = "com.docker.network.enable_ipv4";
/// The published ports (`-p`) of an endpoint.
pub const OPT_PORTMAP: &str = "com.docker.network.portmap";
/// `RequestAddressType` value of the gateway's address request.
pub const GATEWAY_REQUEST: &str = "com.docker.network.gateway";

/// `null` or absent: the type's default (docker sends `"Options": null`).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Every call the server answers, by its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `/Plugin.Activate`: which APIs the plugin implements.
    Activate,
    /// `/NetworkDriver.GetCapabilities`.
    NetCapabilities,
    /// `/NetworkDriver.CreateNetwork`.
    CreateNetwork,
    /// `/NetworkDriver.DeleteNetwork`.
    DeleteNetwork,
    /// `/NetworkDriver.CreateEndpoint`.
    CreateEndpoint,
    /// `/NetworkDriver.EndpointOperInfo`.
    EndpointOperInfo,
    /// `/NetworkDriver.DeleteEndpoint`.
    DeleteEndpoint,
    /// `/NetworkDriver.Join`.
    Join,
    /// `/NetworkDriver.Leave`.
    Leave,
    /// `/NetworkDriver.ProgramExternalConnectivity`.
    ProgramExternalConnectivity,
    /// `/NetworkDriver.RevokeExternalConnectivity`.
    RevokeExternalConnectivity,
    /// `/NetworkDriver.DiscoverNew`.
    DiscoverNew,
    /// `/NetworkDriver.DiscoverDelete`.
    DiscoverDelete,
    /// `/IpamDriver.GetCapabilities`.
    IpamCapabilities,
    /// `/IpamDriver.GetDefaultAddressSpaces`.
    GetDefaultAddressSpaces,
    /// `/IpamDriver.RequestPool`.
    RequestPool,
    /// `/IpamDriver.ReleasePool`.
    ReleasePool,
    /// `/IpamDriver.RequestAddress`.
    RequestAddress,
    /// `/IpamDriver.ReleaseAddress`.
    ReleaseAddress,
}

impl Call {
    /// The call a request path names; `None` for anything else.
    pub fn from_path(path: &str) -> Option<Call> {
        Some(match path.trim_start_matches('/') {
            "Plugin.Activate" => Call::Activate,
            "NetworkDriver.GetCapabilities" => Call::NetCapabilities,
            "NetworkDriver.CreateNetwork" => Call::CreateNetwork,
            "NetworkDriver.DeleteNetwork" => Call::DeleteNetwork,
            "NetworkDriver.CreateEndpoint" => Call::CreateEndpoint,
            "NetworkDriver.EndpointOperInfo" => Call::EndpointOperInfo,
            "NetworkDriver.DeleteEndpoint" => Call::DeleteEndpoint,
            "NetworkDriver.Join" => Call::Join,
            "NetworkDriver.Leave" => Call::Leave,
            "NetworkDriver.ProgramExternalConnectivity" => Call::ProgramExternalConnectivity,
            "NetworkDriver.RevokeExternalConnectivity" => Call::RevokeExternalConnectivity,
            "NetworkDriver.DiscoverNew" => Call::DiscoverNew,
            "NetworkDriver.DiscoverDelete" => Call::DiscoverDelete,
            "IpamDriver.GetCapabilities" => Call::IpamCapabilities,
            "IpamDriver.GetDefaultAddressSpaces" => Call::GetDefaultAddressSpaces,
            "IpamDriver.RequestPool" => Call::RequestPool,
            "IpamDriver.ReleasePool" => Call::ReleasePool,
            "IpamDriver.RequestAddress" => Call::RequestAddress,
            "IpamDriver.ReleaseAddress" => Call::ReleaseAddress,
            _ => return None,
        })
    }
}

/// One address family's addressing of a network, as docker's IPAM decided it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamData {
    /// The IPAM driver's address space.
    #[serde(default, deserialize_with = "null_default")]
    pub address_space: String,
    /// The subnet, CIDR.
    #[serde(default, deserialize_with = "null_default")]
    pub pool: String,
    /// The gateway with the subnet's prefix (`10.0.0.1/24`).
    #[serde(default, deserialize_with = "null_default")]
    pub gateway: String,
    /// `--aux-address` entries, each `ip/prefix`.
    #[serde(default, deserialize_with = "null_default")]
    pub aux_addresses: BTreeMap<String, String>,
}

/// `NetworkDriver.CreateNetwork`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateNetworkRequest {
    /// docker's network id (64 hex).
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// `com.docker.network.generic` (the `-o` options), `com.docker.network.internal`, ...
    #[serde(default, deserialize_with = "null_default")]
    pub options: Map<String, Value>,
    /// The IPv4 subnets.
    #[serde(rename = "IPv4Data", default, deserialize_with = "null_default")]
    pub ipv4_data: Vec<IpamData>,
    /// The IPv6 subnets (`--ipv6`; at most one).
    #[serde(rename = "IPv6Data", default, deserialize_with = "null_default")]
    pub ipv6_data: Vec<IpamData>,
}

/// Calls that name only a network (`DeleteNetwork`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct NetworkRequest {
    /// docker's network id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// The interface docker's IPAM chose for an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInterface {
    /// `ip/prefix`, empty when docker has none.
    #[serde(default, deserialize_with = "null_default")]
    pub address: String,
    /// The v6 `ip/prefix` on a dual-stack network, empty when docker has none.
    #[serde(rename = "AddressIPv6", default, deserialize_with = "null_default")]
    pub address_ipv6: String,
    /// `--mac-address`, empty when not given.
    #[serde(default, deserialize_with = "null_default")]
    pub mac_address: String,
}

/// One published port of `com.docker.network.portmap`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    /// IP protocol number: 6 TCP, 17 UDP.
    pub proto: u8,
    /// The container address (empty).
    #[serde(rename = "IP", default, deserialize_with = "null_default")]
    pub ip: String,
    /// The container port.
    pub port: u16,
    /// The host address, empty for every address.
    #[serde(rename = "HostIP", default, deserialize_with = "null_default")]
    pub host_ip: String,
    /// The first host port (0: docker would pick one, which plugins cannot do).
    #[serde(default)]
    pub host_port: u16,
    /// The last host port (0 or `HostPort` for one port).
    #[serde(default)]
    pub host_port_end: u16,
}

/// `NetworkDriver.CreateEndpoint`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpointRequest {
    /// docker's network id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// docker's endpoint id (64 hex).
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// Address and MAC, if docker has them.
    #[serde(default, deserialize_with = "null_default")]
    pub interface: EndpointInterface,
    /// `com.docker.network.portmap`, `...exposedports`, `...endpoint.macaddress`.
    #[serde(default, deserialize_with = "null_default")]
    pub options: Map<String, Value>,
}

/// The interface part of the CreateEndpoint answer: only what the driver chose itself
/// (docker refuses an answer that changes what it gave).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInterfaceReply {
    /// The address, only when docker gave none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// The v6 address, only when docker gave none on a dual-stack network.
    #[serde(rename = "AddressIPv6", skip_serializing_if = "String::is_empty")]
    pub address_ipv6: String,
    /// The MAC, only when docker gave none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

/// The CreateEndpoint answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpointResponse {
    /// What the driver filled in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterfaceReply>,
}

/// Calls that name an endpoint: `DeleteEndpoint`, `EndpointOperInfo`, `Leave`,
/// `RevokeExternalConnectivity`, and (with options) `ProgramExternalConnectivity`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointRequest {
    /// docker's network id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// docker's endpoint id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// Present on `ProgramExternalConnectivity`.
    #[serde(default, deserialize_with = "null_default")]
    pub options: Map<String, Value>,
}

/// `NetworkDriver.Join`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinRequest {
    /// docker's network id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// docker's endpoint id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The container's namespace (a path in dockerd's mount namespace).
    #[serde(default, deserialize_with = "null_default")]
    pub sandbox_key: String,
    /// The endpoint's options again.
    #[serde(default, deserialize_with = "null_default")]
    pub options: Map<String, Value>,
}

/// Which interface docker moves into the container, and what it is renamed to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    /// The veth end in dockerd's namespace.
    pub src_name: String,
    /// docker appends a number (`eth` -> `eth0`, `eth1`).
    pub dst_prefix: String,
}

/// The Join answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    /// The interface to move.
    pub interface_name: InterfaceName,
    /// The default route's next hop (none on internal networks).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// The v6 default route's next hop (dual-stack networks; none on internal ones).
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    /// True: docker must not add its own gateway network for outside access.
    pub disable_gateway_service: bool,
    /// Routes docker adds in the sandbox (a connected default route on ipvlan's `l3`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub static_routes: Vec<StaticRoute>,
}

/// One of libnetwork's `StaticRoutes` in a join answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StaticRoute {
    /// The destination prefix.
    pub destination: String,
    /// libnetwork's route type: 0 via `next_hop`, 1 on the link (`CONNECTED`).
    pub route_type: u8,
    /// The next hop (none on the link).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_hop: String,
}

/// `NetworkDriver.DiscoverNew` / `DiscoverDelete` (node discovery; nothing for sluice to do).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DiscoveryRequest {
    /// The kind of discovery.
    #[serde(default)]
    pub discovery_type: i64,
    /// Its data.
    #[serde(default)]
    pub discovery_data: Value,
}

/// `Plugin.Activate`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActivateResponse {
    /// The plugin APIs.
    pub implements: Vec<&'static str>,
}

/// `NetworkDriver.GetCapabilities`' answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CapabilitiesResponse {
    /// `local`: networks exist on this host only.
    pub scope: &'static str,
    /// `local`.
    pub connectivity_scope: &'static str,
}

/// `NetworkDriver.EndpointOperInfo`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct OperInfoResponse {
    /// Shown by `docker inspect`.
    pub value: Map<String, Value>,
}

/// `IpamDriver.GetCapabilities`' answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IpamCapabilitiesResponse {
    /// Whether RequestAddress needs the MAC.
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    /// Whether docker must replay its allocations after a restart (no: sluice persists them).
    #[serde(rename = "RequiresRequestReplay")]
    pub requires_request_replay: bool,
}

/// `IpamDriver.GetDefaultAddressSpaces`' answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressSpacesResponse {
    /// For local-scope networks.
    pub local_default_address_space: &'static str,
    /// For global-scope networks.
    pub global_default_address_space: &'static str,
}

/// `IpamDriver.RequestPool`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPoolRequest {
    /// The address space (from GetDefaultAddressSpaces).
    #[serde(default, deserialize_with = "null_default")]
    pub address_space: String,
    /// `--subnet`, empty for "pick one".
    #[serde(default, deserialize_with = "null_default")]
    pub pool: String,
    /// `--ip-range`, empty for the whole pool.
    #[serde(default, deserialize_with = "null_default")]
    pub sub_pool: String,
    /// `--ipam-opt`.
    #[serde(default, deserialize_with = "null_default")]
    pub options: BTreeMap<String, String>,
    /// An IPv6 pool (`--ipv6`).
    #[serde(rename = "V6", default)]
    pub v6: bool,
}

/// `IpamDriver.RequestPool`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPoolResponse {
    /// The pool's handle in later calls.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The subnet, CIDR.
    pub pool: String,
    /// Extra data (none).
    pub data: BTreeMap<String, String>,
}

/// `IpamDriver.ReleasePool`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ReleasePoolRequest {
    /// The pool.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

/// `IpamDriver.RequestAddress`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestAddressRequest {
    /// The pool.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// A wanted address (`--ip`, `--gateway`), empty for "pick one".
    #[serde(default, deserialize_with = "null_default")]
    pub address: String,
    /// `RequestAddressType: com.docker.network.gateway` for the gateway.
    #[serde(default, deserialize_with = "null_default")]
    pub options: BTreeMap<String, String>,
}

impl RequestAddressRequest {
    /// True when docker asks for the network's gateway address.
    pub fn is_gateway(&self) -> bool {
        self.options
            .get("RequestAddressType")
            .is_some_and(|t| t == GATEWAY_REQUEST)
    }
}

/// `IpamDriver.RequestAddress`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestAddressResponse {
    /// `ip/prefix`.
    pub address: String,
    /// Extra data (none).
    pub data: BTreeMap<String, String>,
}

/// `IpamDriver.ReleaseAddress`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReleaseAddressRequest {
    /// The pool.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The address (without prefix).
    #[serde(default, deserialize_with = "null_default")]
    pub address: String,
}

/// Every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// One line naming the problem; docker shows it to the user.
    #[serde(rename = "Err")]
    pub err: String,
}

/// The published ports in an endpoint's options (none when absent or `null`).
pub fn port_bindings(options: &Map<String, Value>) -> Result<Vec<PortBinding>, serde_json::Error> {
    match options.get(OPT_PORTMAP) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone()),
    }
}

/// A boolean option that docker may send as `true` or `"true"`.
pub fn flag(options: &Map<String, Value>, key: &str) -> bool {
    match options.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde::de::DeserializeOwned;

    /// Every call a real dockerd 20.10 made to remote network and IPAM plugins, with the
    /// plugin's answers (captured with stub plugins; ids abbreviated to 12 characters).
    pub(crate) const CAPTURE: &str = include_str!("testdata/libnetwork-calls-dockerd-20.10.txt");

    /// (section, path, request body, answer) of every captured call.
    pub(crate) fn captured() -> Vec<(String, String, Value, Value)> {
        let mut out = Vec::new();
        let mut section = String::new();
        for line in CAPTURE.lines() {
            if let Some(s) = line.strip_prefix("## ") {
                section = s.to_string();
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(_sock), Some(path)) = (words.next(), words.next()) else {
                continue;
            };
            let rest = line[line.find(path).unwrap() + path.len()..].trim();
            let (req, reply) = rest.split_once(" -> ").unwrap();
            out.push((
                section.clone(),
                path.to_string(),
                serde_json::from_str(req).unwrap(),
                serde_json::from_str(reply).unwrap(),
            ));
        }
        out
    }

    fn parses<T: DeserializeOwned>(v: &Value) -> T {
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    #[test]
    fn every_captured_body_parses_into_its_type() {
        let calls = captured();
        assert_eq!(calls.len(), 71);
        for (_, path, req, _) in &calls {
            let call = Call::from_path(path).unwrap_or_else(|| panic!("unknown {path}"));
            match call {
                Call::CreateNetwork => {
                    let r: CreateNetworkRequest = parses(req);
                    assert!(!r.network_id.is_empty() && r.ipv4_data.len() == 1);
                    assert!(r.ipv6_data.is_empty());
                    assert!(!flag(&r.options, OPT_ENABLE_IPV6));
                }
                Call::DeleteNetwork => {
                    assert!(!parses::<NetworkRequest>(req).network_id.is_empty())
                }
                Call::CreateEndpoint => {
                    let r: CreateEndpointRequest = parses(req);
                    assert!(r.interface.address.contains('/'));
                    port_bindings(&r.options).unwrap();
                }
                Call::Join => assert!(parses::<JoinRequest>(req)
                    .sandbox_key
                    .starts_with("/var/run/docker/netns/")),
                Call::EndpointOperInfo
                | Call::DeleteEndpoint
                | Call::Leave
                | Call::ProgramExternalConnectivity
                | Call::RevokeExternalConnectivity => {
                    assert!(!parses::<EndpointRequest>(req).endpoint_id.is_empty())
                }
                Call::RequestPool => assert!(!parses::<RequestPoolRequest>(req).v6),
                Call::RequestAddress => {
                    parses::<RequestAddressRequest>(req);
                }
                Call::ReleaseAddress => {
                    assert!(!parses::<ReleaseAddressRequest>(req).address.is_empty())
                }
                Call::ReleasePool => {
                    parses::<ReleasePoolRequest>(req);
                }
                Call::Activate
                | Call::NetCapabilities
                | Call::IpamCapabilities
                | Call::GetDefaultAddressSpaces
                | Call::DiscoverNew
                | Call::DiscoverDelete => assert_eq!(req, &serde_json::json!({})),
            }
        }
    }

    #[test]
    fn options_carry_ports_gateway_requests_and_flags() {
        let calls = captured();
        let (_, _, req, _) = calls
            .iter()
            .find(|(s, p, _, _)| s.starts_with("D2") && p.ends_with("CreateEndpoint"))
            .unwrap();
        let r: CreateEndpointRequest = parses(req);
        assert_eq!(r.interface.mac_address, "02:42:0a:7c:00:63");
        assert_eq!(
            port_bindings(&r.options).unwrap(),
            vec![PortBinding {
                proto: 6,
                ip: String::new(),
                port: 80,
                host_ip: String::new(),
                host_port: 18081,
                host_port_end: 18081,
            }]
        );
        let gw: Vec<RequestAddressRequest> = calls
            .iter()
            .filter(|(_, p, _, _)| p.ends_with("RequestAddress"))
            .map(|(_, _, r, _)| parses(r))
            .collect();
        assert_eq!(
            gw.iter().map(|r| r.is_gateway()).collect::<Vec<_>>(),
            [true, false]
        );
        let mut o = Map::new();
        o.insert(OPT_INTERNAL.into(), Value::Bool(true));
        o.insert("x".into(), Value::String("True".into()));
        assert!(flag(&o, OPT_INTERNAL) && flag(&o, "x") && !flag(&o, "y"));
    }

    #[test]
    fn answers_have_dockers_field_names() {
        let j = serde_json::to_value(JoinResponse {
            interface_name: InterfaceName {
                src_name: "spab".into(),
                dst_prefix: "eth".into(),
            },
            gateway: String::new(),
            gateway_ipv6: "fd00::1".into(),
            disable_gateway_service: false,
            static_routes: vec![StaticRoute {
                destination: "0.0.0.0/0".into(),
                route_type: 1,
                next_hop: String::new(),
            }],
        })
        .unwrap();
        assert_eq!(
            j,
            serde_json::json!({"InterfaceName": {"SrcName": "spab", "DstPrefix": "eth"},
                "GatewayIPv6": "fd00::1", "DisableGatewayService": false,
                "StaticRoutes": [{"Destination": "0.0.0.0/0", "RouteType": 1}]})
        );
        let e = serde_json::to_value(CreateEndpointResponse {
            interface: Some(EndpointInterfaceReply {
                address: String::new(),
                address_ipv6: "fd00::2/64".into(),
                mac_address: "02:42:0a:00:00:02".into(),
            }),
        })
        .unwrap();
        assert_eq!(
            e,
            serde_json::json!({"Interface": {"AddressIPv6": "fd00::2/64", "MacAddress": "02:42:0a:00:00:02"}})
        );
        assert_eq!(
            serde_json::to_value(CreateEndpointResponse::default()).unwrap(),
            serde_json::json!({})
        );
        assert_eq!(
            serde_json::to_value(RequestPoolResponse {
                pool_id: "p".into(),
                pool: "10.0.0.0/24".into(),
                data: BTreeMap::new()
            })
            .unwrap(),
            serde_json::json!({"PoolID": "p", "Pool": "10.0.0.0/24", "Data": {}})
        );
        assert_eq!(Call::from_path("/NetworkDriver.Nope"), None);
    }
}
