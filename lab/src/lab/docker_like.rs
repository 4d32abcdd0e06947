//! docker's default network in a [`Lab`]: a switch namespace `sw` holding the forwarder
//! (the kernel's bridge + iptables, or a sluice process), endpoint namespaces with `eth0`, and
//! an `outside` namespace behind the uplink.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use sluice_dataplane::config::{
    Config, Ipv4Cidr, L4Proto, NatConfig, NetworkConfig, PortConfig, PortForward, PortRange,
    PortRole, UplinkConfig,
};
use sluice_dataplane::frame::{NetworkId, PortId};
use sluice_dataplane::wire::MacAddr;

use super::{one_line, render, Lab, LabError, Result, IFNAME_MAX};

/// Who forwards inside the switch namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forwarder {
    /// docker0's design: a Linux bridge holding the gateway address, ip_forward, iptables
    /// MASQUERADE and DNAT, all inside `sw`.
    Kernel,
    /// A sluice process inside `sw` over the unaddressed veth ends.
    Sluice(SluiceLaunch),
}

impl Forwarder {
    /// Short name for reports ("kernel", "sluice").
    pub fn name(&self) -> &'static str {
        match self {
            Forwarder::Kernel => "kernel",
            Forwarder::Sluice(_) => "sluice",
        }
    }
}

/// How a sluice dataplane process is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SluiceLaunch {
    /// The `sluice` binary.
    pub bin: PathBuf,
    /// Extra arguments for `sluice dataplane` (e.g. `--workers 1`).
    pub args: Vec<String>,
}

impl SluiceLaunch {
    /// Runs `bin` with default settings.
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        SluiceLaunch {
            bin: bin.into(),
            args: Vec::new(),
        }
    }

    /// Where the dataplane started on `config` writes its counters (JSON, every 200 ms).
    pub fn stats_path(config: &Path) -> PathBuf {
        config.with_file_name("sluice-stats.json")
    }

    /// The command line that runs the dataplane on a config file.
    pub fn command(&self, config: &Path) -> Vec<OsString> {
        let mut cmd = vec![
            self.bin.clone().into_os_string(),
            "dataplane".into(),
            "--config".into(),
            config.as_os_str().to_owned(),
            "--stats-file".into(),
            Self::stats_path(config).into_os_string(),
        ];
        cmd.extend(self.args.iter().map(OsString::from));
        cmd
    }
}

/// A published port: `uplink_ip:host_port` on the uplink reaches `endpoint:target_port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// TCP or UDP.
    pub proto: L4Proto,
    /// Port on the uplink address.
    pub host_port: u16,
    /// Endpoint namespace name.
    pub endpoint: String,
    /// Port inside the endpoint.
    pub target_port: u16,
}

/// Shape of a docker-like topology: endpoints, published ports, MTU and offloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerLikeSpec {
    /// Endpoint namespace names (1-10 letters/digits each), e.g. `a`, `b`, `c`.
    pub endpoints: Vec<String>,
    /// Published ports.
    pub publish: Vec<Publish>,
    /// MTU of every link (None: the veth default, 1500).
    pub mtu: Option<u16>,
    /// Offload changes applied to every endpoint's and the outside's `eth0` (`ethtool -K`).
    pub endpoint_offloads: Vec<(String, bool)>,
    /// Inter-container communication (docker's `com.docker.network.bridge.enable_icc`);
    /// false: endpoints reach the gateway and the outside but not each other. The kernel
    /// forwarder's DROP rule sees bridged frames only with `br_netfilter` loaded, as in docker.
    pub icc: bool,
    /// Namespaces joined to the bridge by a plain access port (no address and, in sluice, no
    /// anti-spoofing: a link to another switch), e.g. to fill the FDB with many source MACs.
    /// Same naming rules as `endpoints`.
    pub access: Vec<String>,
    /// Most MACs sluice's network learns (None: its default, 8192); the kernel bridge has no
    /// limit.
    pub fdb_max: Option<usize>,
    /// Dual stack: the network, the endpoints and the uplink get v6 addresses too
    /// ([`super::docker_like_v6`]), with ip6tables NAT66 on the kernel forwarder.
    pub ipv6: bool,
}

impl Default for DockerLikeSpec {
    fn default() -> Self {
        DockerLikeSpec {
            endpoints: vec!["a".into(), "b".into()],
            publish: Vec::new(),
            mtu: None,
            endpoint_offloads: Vec::new(),
            icc: true,
            access: Vec::new(),
            fdb_max: None,
            ipv6: false,
        }
    }
}

/// The switch namespace.
pub const SW: &str = "sw";
/// The outside namespace (the "internet" behind the uplink).
pub const OUTSIDE: &str = "outside";
/// Name of the uplink veth end inside `sw`.
pub const UPLINK_IF: &str = "uplink0";
/// Name of the kernel bridge inside `sw`.
pub const BRIDGE_IF: &str = "br0";

impl DockerLikeSpec {
    /// docker's default subnet.
    pub fn subnet(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: Ipv4Addr::new(172, 17, 0, 0),
            prefix: 16,
        }
    }

    /// The gateway address (docker0's).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(172, 17, 0, 1)
    }

    /// The gateway MAC (docker style: 02:42 + address).
    pub fn gateway_mac(&self) -> MacAddr {
        MacAddr::from_ipv4(self.gateway())
    }

    /// The address of endpoint number `i` (.2, .3, ...).
    pub fn endpoint_ip(&self, i: usize) -> Ipv4Addr {
        let host = u32::try_from(i).unwrap_or(u32::MAX - 2).saturating_add(2);
        Ipv4Addr::from(u32::from(self.subnet().network()).saturating_add(host))
    }

    /// The address of the named endpoint.
    pub fn ip_of(&self, endpoint: &str) -> Option<Ipv4Addr> {
        self.endpoints
            .iter()
            .position(|e| e == endpoint)
            .map(|i| self.endpoint_ip(i))
    }

    /// The MAC of endpoint number `i` (docker style).
    pub fn endpoint_mac(&self, i: usize) -> MacAddr {
        MacAddr::from_ipv4(self.endpoint_ip(i))
    }

    /// The veth end inside `sw` that leads to endpoint `name`.
    pub fn sw_port(name: &str) -> String {
        format!("veth-{name}")
    }

    /// The forwarder's uplink address and prefix.
    pub fn uplink_ip(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: Ipv4Addr::new(198, 18, 0, 1),
            prefix: 24,
        }
    }

    /// The forwarder's uplink MAC.
    pub fn uplink_mac(&self) -> MacAddr {
        MacAddr::from_ipv4(self.uplink_ip().addr)
    }

    /// The outside namespace's address (also the uplink's next hop).
    pub fn outside_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 2)
    }

    fn mtu_or_default(&self) -> u16 {
        self.mtu.unwrap_or(1500)
    }

    /// The sluice configuration for this topology: one network, one endpoint port per
    /// endpoint (ids 0..n, in `endpoints` order), the uplink as port n, and the published ports.
    pub fn sluice_config(&self) -> Result<Config> {
        let net = NetworkId(0);
        let mut ports = Vec::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            ports.push(PortConfig {
                id: PortId(port_index(i)?),
                name: Self::sw_port(e),
                io: Default::default(),
                role: PortRole::Endpoint {
                    network: net,
                    vlan: 0,
                    mac: self.endpoint_mac(i),
                    ipv4: Some(self.endpoint_ip(i)),
                    ipv6: None,
                },
            });
        }
        let uplink_port = PortId(port_index(self.endpoints.len())?);
        ports.push(PortConfig {
            id: uplink_port,
            name: UPLINK_IF.into(),
            io: Default::default(),
            role: PortRole::Uplink,
        });
        for (i, a) in self.access.iter().enumerate() {
            ports.push(PortConfig {
                id: PortId(port_index(self.endpoints.len() + 1 + i)?),
                name: Self::sw_port(a),
                io: Default::default(),
                role: PortRole::Access {
                    network: net,
                    vlan: 0,
                },
            });
        }
        let defaults = NetworkConfig::new(net, "bridge", self.subnet(), self.gateway());
        let mut forwards = Vec::new();
        for p in &self.publish {
            let target_ip = self
                .ip_of(&p.endpoint)
                .ok_or_else(|| LabError::UnknownNs(p.endpoint.clone()))?;
            forwards.push(PortForward {
                proto: p.proto,
                host_ip: None,
                host_ip6: None,
                host_ports: PortRange::single(p.host_port),
                network: net,
                target_ip: Some(target_ip),
                target_ip6: None,
                target_ports: PortRange::single(p.target_port),
            });
        }
        let mut cfg = Config {
            networks: vec![NetworkConfig {
                gateway_mac: self.gateway_mac(),
                icc: self.icc,
                mtu: self.mtu_or_default(),
                fdb_max: self.fdb_max.unwrap_or(defaults.fdb_max),
                ..defaults
            }],
            ports,
            uplink: Some(UplinkConfig {
                port: uplink_port,
                ip: self.uplink_ip(),
                mac: self.uplink_mac(),
                next_hop: Some(self.outside_ip()),
                mtu: self.mtu_or_default(),
            }),
            network_uplinks: Vec::new(),
            forwards,
            nat: NatConfig::default(),
            overlays: Vec::new(),
            uplinks6: Vec::new(),
        };
        if self.ipv6 {
            self.add_v6(&mut cfg, uplink_port);
        }
        Ok(cfg)
    }

    /// The iptables rules docker 20.10 installs for this network, as argument lists (run
    /// inside `sw` only): MASQUERADE of the subnet, DNAT of each published port, and the
    /// FORWARD accepts with a DROP policy (bridge-internal traffic dropped without ICC).
    pub fn kernel_iptables(&self) -> Result<Vec<Vec<String>>> {
        self.kernel_rules(&RuleAddrs {
            subnet: self.subnet().to_string(),
            uplink_host: format!("{}/32", self.uplink_ip().addr),
            endpoint: |s, e| s.ip_of(e).map(|ip| (format!("{ip}/32"), ip.to_string())),
        })
    }

    /// docker's rules for one family: MASQUERADE of the subnet, DNAT of each published port
    /// and the FORWARD accepts with a DROP policy.
    pub(super) fn kernel_rules(&self, a: &RuleAddrs) -> Result<Vec<Vec<String>>> {
        let subnet = a.subnet.as_str();
        let br = BRIDGE_IF;
        let uplink = a.uplink_host.as_str();
        let mut rules: Vec<Vec<String>> = vec![
            s(&[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                subnet,
                "!",
                "-o",
                br,
                "-j",
                "MASQUERADE",
            ]),
            s(&["-P", "FORWARD", "DROP"]),
            s(&[
                "-A",
                "FORWARD",
                "-o",
                br,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ]),
            s(&["-A", "FORWARD", "-i", br, "!", "-o", br, "-j", "ACCEPT"]),
            s(&[
                "-A",
                "FORWARD",
                "-i",
                br,
                "-o",
                br,
                "-j",
                if self.icc { "ACCEPT" } else { "DROP" },
            ]),
        ];
        for p in &self.publish {
            let (host, dest) = (a.endpoint)(self, &p.endpoint)
                .ok_or_else(|| LabError::UnknownNs(p.endpoint.clone()))?;
            let proto = match p.proto {
                L4Proto::Tcp => "tcp",
                L4Proto::Udp => "udp",
                L4Proto::Icmp => {
                    return Err(LabError::BadName(
                        "icmp".into(),
                        "published ports are TCP or UDP",
                    ))
                }
            };
            let hp = p.host_port.to_string();
            let tp = p.target_port.to_string();
            rules.push(s(&[
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-d",
                uplink,
                "-p",
                proto,
                "--dport",
                &hp,
                "-j",
                "DNAT",
                "--to-destination",
                &format!("{dest}:{tp}"),
            ]));
            rules.push(s(&[
                "-A", "FORWARD", "-d", &host, "!", "-i", br, "-o", br, "-p", proto, "--dport", &tp,
                "-j", "ACCEPT",
            ]));
        }
        Ok(rules)
    }
}

/// The addresses [`DockerLikeSpec::kernel_rules`] names, in one family.
pub(super) struct RuleAddrs {
    /// The network's subnet.
    pub(super) subnet: String,
    /// The uplink's address as a host prefix.
    pub(super) uplink_host: String,
    /// An endpoint's address as a host prefix and as a DNAT destination (without the port).
    pub(super) endpoint: fn(&DockerLikeSpec, &str) -> Option<(String, String)>,
}

fn s(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn port_index(i: usize) -> Result<u16> {
    u16::try_from(i).map_err(|_| LabError::BadName(i.to_string(), "too many ports"))
}

/// A built docker-like topology: the lab, its shape, and the forwarder running in `sw`.
pub struct DockerLike {
    /// The namespaces and processes (dropped last: removes everything).
    pub lab: Lab,
    /// The shape it was built from.
    pub spec: DockerLikeSpec,
    /// The forwarder filling `sw`.
    pub forwarder: Forwarder,
    /// pid of the forwarder process (sluice), None for the kernel.
    pub forwarder_pid: Option<u32>,
}

impl DockerLike {
    /// Builds the topology in a new lab tagged `tag` and starts the forwarder; returns once
    /// every endpoint reaches the gateway and the outside reaches the uplink address.
    pub fn build(tag: &str, spec: DockerLikeSpec, forwarder: Forwarder) -> Result<DockerLike> {
        for e in spec.endpoints.iter().chain(&spec.access) {
            if e.len() > IFNAME_MAX - "veth-".len() || e == SW || e == OUTSIDE {
                return Err(LabError::BadName(
                    e.clone(),
                    "endpoint names are 1-10 characters, not sw/outside",
                ));
            }
        }
        let mut lab = Lab::new(tag)?;
        lab.add_ns(SW)?;
        lab.add_ns(OUTSIDE)?;
        let mtu = spec.mtu;
        let link = |lab: &Lab, ns: &str, dev: &str| -> Result<()> {
            if let Some(m) = mtu {
                lab.mtu(ns, dev, m)?;
            }
            lab.up(ns, dev)
        };
        let offloads: Vec<(&str, bool)> = spec
            .endpoint_offloads
            .iter()
            .map(|(f, on)| (f.as_str(), *on))
            .collect();
        for (i, e) in spec.endpoints.iter().enumerate() {
            lab.add_ns(e)?;
            let port = DockerLikeSpec::sw_port(e);
            lab.veth((SW, &port), (e, "eth0"))?;
            lab.mac(e, "eth0", spec.endpoint_mac(i))?;
            lab.addr(
                e,
                "eth0",
                &format!("{}/{}", spec.endpoint_ip(i), spec.subnet().prefix),
            )?;
            link(&lab, e, "eth0")?;
            link(&lab, SW, &port)?;
            lab.route(e, "default", spec.gateway())?;
            if !offloads.is_empty() {
                lab.ethtool_k(e, "eth0", &offloads)?;
            }
        }
        for a in &spec.access {
            lab.add_ns(a)?;
            lab.veth((SW, &DockerLikeSpec::sw_port(a)), (a, "eth0"))?;
            link(&lab, a, "eth0")?;
            link(&lab, SW, &DockerLikeSpec::sw_port(a))?;
        }
        lab.veth((SW, UPLINK_IF), (OUTSIDE, "eth0"))?;
        lab.addr(
            OUTSIDE,
            "eth0",
            &format!("{}/{}", spec.outside_ip(), spec.uplink_ip().prefix),
        )?;
        link(&lab, OUTSIDE, "eth0")?;
        link(&lab, SW, UPLINK_IF)?;
        if !offloads.is_empty() {
            lab.ethtool_k(OUTSIDE, "eth0", &offloads)?;
        }
        if spec.ipv6 {
            spec.address_v6(&lab)?;
        }
        let forwarder_pid = match &forwarder {
            Forwarder::Kernel => {
                fill_kernel(&lab, &spec)?;
                None
            }
            Forwarder::Sluice(launch) => Some(fill_sluice(&mut lab, &spec, launch)?),
        };
        let topo = DockerLike {
            lab,
            spec,
            forwarder,
            forwarder_pid,
        };
        topo.wait_ready(Duration::from_secs(10))?;
        Ok(topo)
    }

    /// Waits until each endpoint pings the gateway and the outside pings the uplink address.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        for e in &self.spec.endpoints {
            self.lab.wait_ping(e, self.spec.gateway(), timeout)?;
        }
        self.lab
            .wait_ping(OUTSIDE, self.spec.uplink_ip().addr, timeout)?;
        if self.spec.ipv6 {
            self.spec.wait_ready_v6(&self.lab, timeout)?;
        }
        Ok(())
    }

    /// The sluice process's latest counters (`Dataplane::stats` as JSON), if it runs one.
    pub fn sluice_stats(&self) -> Option<serde_json::Value> {
        self.forwarder_pid?;
        let path = SluiceLaunch::stats_path(&self.lab.dir().join("sluice.json"));
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// The address of the named endpoint; an error for an unknown name.
    pub fn ip(&self, endpoint: &str) -> Result<Ipv4Addr> {
        self.spec
            .ip_of(endpoint)
            .ok_or_else(|| LabError::UnknownNs(endpoint.into()))
    }
}

fn fill_kernel(lab: &Lab, spec: &DockerLikeSpec) -> Result<()> {
    lab.ip(SW, &["link", "add", BRIDGE_IF, "type", "bridge"])?;
    lab.mac(SW, BRIDGE_IF, spec.gateway_mac())?;
    if let Some(m) = spec.mtu {
        lab.mtu(SW, BRIDGE_IF, m)?;
    }
    lab.addr(
        SW,
        BRIDGE_IF,
        &format!("{}/{}", spec.gateway(), spec.subnet().prefix),
    )?;
    for e in spec.endpoints.iter().chain(&spec.access) {
        lab.ip(
            SW,
            &[
                "link",
                "set",
                &DockerLikeSpec::sw_port(e),
                "master",
                BRIDGE_IF,
            ],
        )?;
    }
    lab.up(SW, BRIDGE_IF)?;
    lab.addr(SW, UPLINK_IF, &spec.uplink_ip().to_cidr_string())?;
    lab.route(SW, "default", spec.outside_ip())?;
    lab.sysctl(SW, "net.ipv4.ip_forward", "1")?;
    for rule in spec.kernel_iptables()? {
        let args: Vec<&str> = rule.iter().map(String::as_str).collect();
        lab.iptables(SW, &args)?;
    }
    if spec.ipv6 {
        spec.fill_kernel_v6(lab)?;
    }
    Ok(())
}

fn fill_sluice(lab: &mut Lab, spec: &DockerLikeSpec, launch: &SluiceLaunch) -> Result<u32> {
    let cfg = spec.sluice_config()?;
    let path = lab.dir().join("sluice.json");
    let json = serde_json::to_vec_pretty(&cfg).map_err(|e| LabError::File {
        path: path.clone(),
        source: e.into(),
    })?;
    std::fs::write(&path, json).map_err(|source| LabError::File {
        path: path.clone(),
        source,
    })?;
    let pid = lab.spawn_os(SW, &launch.command(&path), "sluice")?;
    sleep(Duration::from_millis(200));
    if !lab.alive(pid) {
        let log = std::fs::read_to_string(lab.log_path("sluice")).unwrap_or_default();
        return Err(LabError::Failed {
            cmd: render(&launch.command(&path)),
            status: "exited at start-up".into(),
            stderr: one_line(&log),
        });
    }
    Ok(pid)
}

/// `ADDR/PREFIX` with the address kept (Ipv4Cidr's Display prints the network).
trait CidrString {
    fn to_cidr_string(&self) -> String;
}

impl CidrString for Ipv4Cidr {
    fn to_cidr_string(&self) -> String {
        format!("{}/{}", self.addr, self.prefix)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::check_ifname;

    fn spec() -> DockerLikeSpec {
        DockerLikeSpec {
            endpoints: vec!["a".into(), "b".into(), "c".into()],
            publish: vec![Publish {
                proto: L4Proto::Tcp,
                host_port: 8080,
                endpoint: "b".into(),
                target_port: 80,
            }],
            ..DockerLikeSpec::default()
        }
    }

    #[test]
    fn addressing_follows_docker() {
        let s = spec();
        assert_eq!(s.endpoint_ip(0), Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(s.ip_of("c"), Some(Ipv4Addr::new(172, 17, 0, 4)));
        assert_eq!(s.ip_of("zz"), None);
        assert_eq!(s.endpoint_mac(1).to_string(), "02:42:ac:11:00:03");
        assert_eq!(s.gateway_mac().to_string(), "02:42:ac:11:00:01");
        assert!(s.subnet().contains(s.gateway()));
        assert!(s.uplink_ip().contains(s.outside_ip()));
        assert!(!s.subnet().overlaps(&s.uplink_ip()));
    }

    #[test]
    fn sluice_config_matches_topology() {
        let s = spec();
        let cfg = s.sluice_config().unwrap();
        assert_eq!(cfg.ports.len(), 4);
        assert_eq!(cfg.ports[1].name, "veth-b");
        assert_eq!(
            cfg.ports[1].role,
            PortRole::Endpoint {
                network: NetworkId(0),
                vlan: 0,
                mac: s.endpoint_mac(1),
                ipv4: Some(Ipv4Addr::new(172, 17, 0, 3)),
                ipv6: None,
            }
        );
        let up = cfg.uplink.as_ref().unwrap();
        assert_eq!(up.port, PortId(3));
        assert_eq!(cfg.ports[3].role, PortRole::Uplink);
        assert_eq!(cfg.ports[3].name, UPLINK_IF);
        assert_eq!(up.next_hop, Some(s.outside_ip()));
        assert_eq!(cfg.forwards.len(), 1);
        assert_eq!(
            cfg.forwards[0].target_ip,
            Some(Ipv4Addr::new(172, 17, 0, 3))
        );
        assert_eq!(cfg.forwards[0].host_ports, PortRange::single(8080));
        for p in &cfg.ports {
            check_ifname(&p.name).unwrap();
        }
        let json = serde_json::to_string(&cfg).unwrap();
        let back: Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn access_ports_follow_the_uplink() {
        let s = DockerLikeSpec {
            access: vec!["m".into()],
            fdb_max: Some(20_000),
            ..spec()
        };
        let cfg = s.sluice_config().unwrap();
        assert_eq!(cfg.ports.len(), 5);
        assert_eq!(cfg.ports[4].id, PortId(4));
        assert_eq!(cfg.ports[4].name, "veth-m");
        assert_eq!(
            cfg.ports[4].role,
            PortRole::Access {
                network: NetworkId(0),
                vlan: 0
            }
        );
        assert_eq!(cfg.networks[0].fdb_max, 20_000);
        assert_eq!(spec().sluice_config().unwrap().networks[0].fdb_max, 8192);
    }

    #[test]
    fn unknown_publish_target_is_an_error() {
        let mut s = spec();
        s.publish[0].endpoint = "nope".into();
        assert!(matches!(s.sluice_config(), Err(LabError::UnknownNs(_))));
        assert!(matches!(s.kernel_iptables(), Err(LabError::UnknownNs(_))));
    }

    #[test]
    fn kernel_rules_are_dockers() {
        let rules: Vec<String> = spec()
            .kernel_iptables()
            .unwrap()
            .iter()
            .map(|r| r.join(" "))
            .collect();
        assert!(rules.contains(
            &"-t nat -A POSTROUTING -s 172.17.0.0/16 ! -o br0 -j MASQUERADE".to_string()
        ));
        assert!(rules.contains(
            &"-t nat -A PREROUTING -d 198.18.0.1/32 -p tcp --dport 8080 -j DNAT --to-destination 172.17.0.3:80"
                .to_string()
        ));
        assert!(rules.contains(
            &"-A FORWARD -d 172.17.0.3/32 ! -i br0 -o br0 -p tcp --dport 80 -j ACCEPT".to_string()
        ));
        assert!(rules.contains(&"-A FORWARD -i br0 -o br0 -j ACCEPT".to_string()));
    }

    #[test]
    fn icc_off_reaches_both_forwarders() {
        let s = DockerLikeSpec {
            icc: false,
            ..spec()
        };
        assert!(spec().sluice_config().unwrap().networks[0].icc);
        assert!(!s.sluice_config().unwrap().networks[0].icc);
        let rules: Vec<String> = s
            .kernel_iptables()
            .unwrap()
            .iter()
            .map(|r| r.join(" "))
            .collect();
        assert!(rules.contains(&"-A FORWARD -i br0 -o br0 -j DROP".to_string()));
        assert!(!rules.contains(&"-A FORWARD -i br0 -o br0 -j ACCEPT".to_string()));
    }

    #[test]
    fn sluice_command_line() {
        let mut l = SluiceLaunch::new("sluice");
        l.args.push("--workers=1".into());
        let c = l.command(Path::new("d/cfg.json"));
        assert_eq!(
            render(&c),
            "sluice dataplane --config d/cfg.json --stats-file d/sluice-stats.json --workers=1"
        );
    }
}
