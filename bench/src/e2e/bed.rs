//! One peer's topology with its servers running: the docker-like topology (kernel bridge +
//! iptables, or sluice; more for the endpoints rows: 64 endpoints, 10,000 MACs), the OVS
//! bridge, or a namespace <-> host shape, warmed up.

use std::time::Duration;

use sluice_dataplane::config::L4Proto;
use sluice_lab::lab::{DockerLike, DockerLikeSpec, Forwarder, Lab, Publish, OUTSIDE};

use super::peers::{have_tool, Peer, PeerKind};
use super::scale::BedKind;
use super::{scale, shapes, streams, v6, Metric, Shape, TestKind};

/// The port every iperf3 server listens on (in a, b and outside).
pub(super) const IPERF_PORT: u16 = 5201;

/// sockperf TCP server port (in a, b and outside).
pub(super) const SP_TCP_PORT: u16 = 11111;

/// sockperf UDP server port (in b).
pub(super) const SP_UDP_PORT: u16 = 11112;

/// Published port on the uplink for iperf3 in a.
pub(super) const PUB_IPERF: u16 = 15201;

/// Published port on the uplink for sockperf in a.
pub(super) const PUB_SP: u16 = 18081;

/// One peer's topology with its servers running.
pub(super) struct Bed {
    /// The namespaces and processes (dropping it removes everything).
    pub(super) lab: Lab,
    /// Addresses of the bridge shape (also used for the OVS bridge).
    pub(super) spec: DockerLikeSpec,
    /// The forwarding process (sluice, slirp4netns, pasta, ovs-vswitchd); None for the kernel.
    pid: Option<u32>,
    /// The topology.
    pub(super) shape: Shape,
    /// The forwarder hands established flows to the kernel (the `sluice` peer: the flow
    /// offload is on unless `--offload=off`).
    kernel_offload: bool,
    /// The same peer on the other beds of the endpoints rows ([`BedKind::Wide`],
    /// [`BedKind::Macs`]), for the rows measured there.
    more: Vec<(BedKind, Bed)>,
}

/// The docker-like topology of bed `kind` (endpoints `a`, `b`, ...) with a's published ports,
/// dual stack when `ipv6`.
fn spec(kind: BedKind, ipv6: bool) -> DockerLikeSpec {
    let publish = |host_port, target_port| Publish {
        proto: L4Proto::Tcp,
        host_port,
        endpoint: "a".into(),
        target_port,
    };
    kind.spec(DockerLikeSpec {
        endpoints: scale::endpoint_names(2),
        publish: vec![publish(PUB_IPERF, IPERF_PORT), publish(PUB_SP, SP_TCP_PORT)],
        ipv6,
        ..DockerLikeSpec::default()
    })
}

/// The servers a bed needs: (namespace, command, port it listens on).
type Server = (&'static str, Vec<String>, u16);

fn servers(shape: Shape, spec: &DockerLikeSpec, metrics: &[Metric]) -> Vec<Server> {
    let iperf = have_tool("iperf3") && metrics.iter().any(|m| m.unit != super::Unit::Us);
    let rr = |v6_rows: bool| {
        metrics
            .iter()
            .any(|m| m.unit == super::Unit::Us && v6::twin(m).is_some() == v6_rows)
    };
    let (rr6, rr) = (rr(true), rr(false));
    let four = metrics
        .iter()
        .any(|m| v6::twin(m).unwrap_or(*m) == super::metrics::TCP4);
    let nat = metrics
        .iter()
        .any(|m| TestKind::of(m).is_some_and(TestKind::through_nat));
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let ip_port = IPERF_PORT.to_string();
    let sp_tcp = SP_TCP_PORT.to_string();
    let sp_udp = SP_UDP_PORT.to_string();
    let mut out: Vec<Server> = Vec::new();
    // (namespace, address the sockperf servers bind, TCP sockperf, UDP sockperf)
    let places: Vec<(&'static str, String, bool, bool)> = match shape {
        Shape::NsHost => vec![(shapes::HOST, "127.0.0.1".into(), true, true)],
        Shape::Bridge => {
            let mut p = vec![
                ("a", spec.endpoint_ip(0).to_string(), nat, false),
                ("b", spec.endpoint_ip(1).to_string(), true, true),
            ];
            if nat {
                p.push((OUTSIDE, spec.outside_ip().to_string(), true, false));
            }
            p
        }
    };
    for (ns, ip, sp_tcp_on, sp_udp_on) in places {
        if iperf {
            let mut cmd = v(&["iperf3", "-s", "-p", &ip_port]);
            if shape == Shape::NsHost {
                cmd.extend(v(&["-B", &ip]));
            }
            out.push((ns, cmd, IPERF_PORT));
            if four && ns == "b" {
                let extra = streams::extra_servers(IPERF_PORT, None);
                out.extend(extra.into_iter().map(|(cmd, port)| (ns, cmd, port)));
            }
        }
        if rr && sp_tcp_on {
            out.push((
                ns,
                v(&["sockperf", "sr", "--tcp", "-i", &ip, "-p", &sp_tcp]),
                SP_TCP_PORT,
            ));
        }
        if rr && sp_udp_on {
            out.push((
                ns,
                v(&["sockperf", "sr", "-i", &ip, "-p", &sp_udp]),
                SP_UDP_PORT,
            ));
        }
    }
    if rr6 && shape == Shape::Bridge {
        out.extend(rr6_servers(spec, nat));
    }
    out
}

/// The servers of the v6 RR rows (this binary's [`super::rr`]): TCP and UDP in b, TCP in a
/// and the outside for the NAT rows.
fn rr6_servers(spec: &DockerLikeSpec, nat: bool) -> Vec<Server> {
    let at = |ip: std::net::Ipv6Addr, port| std::net::SocketAddr::new(ip.into(), port).to_string();
    let b = spec.endpoint_ip6(1);
    let mut out = vec![
        (
            "b",
            rr_command("--rr-server", &at(b, SP_TCP_PORT), false),
            SP_TCP_PORT,
        ),
        (
            "b",
            rr_command("--rr-server", &at(b, SP_UDP_PORT), true),
            SP_UDP_PORT,
        ),
    ];
    if nat {
        for (ns, ip) in [("a", spec.endpoint_ip6(0)), (OUTSIDE, spec.outside_ip6())] {
            out.push((
                ns,
                rr_command("--rr-server", &at(ip, SP_TCP_PORT), false),
                SP_TCP_PORT,
            ));
        }
    }
    out
}

/// This binary run as the RR tool: `flag` (`--rr-server` or `--rr-client`) on `addr`.
pub(super) fn rr_command(flag: &str, addr: &str, udp: bool) -> Vec<String> {
    let exe = std::env::current_exe().map_or("sluice-e2e-bench".into(), |p| {
        p.to_string_lossy().into_owned()
    });
    let mut cmd = vec![exe, flag.to_string(), addr.to_string()];
    if udp {
        cmd.push("--rr-udp".into());
    }
    cmd
}

/// The file name of a command's program, for log names.
fn tool_name(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

impl Bed {
    /// Builds the peer's topology for `metrics`, and the other beds of the endpoints rows when
    /// some of them are measured there.
    pub(super) fn build(peer: &Peer, metrics: &[Metric]) -> Result<Bed, String> {
        let on = |kind| -> Vec<Metric> {
            let mut own = metrics.to_vec();
            own.retain(|m| BedKind::of(m) == kind);
            own
        };
        let mut bed = Bed::build_on(peer, &on(BedKind::Main), BedKind::Main)?;
        if matches!(peer.kind, PeerKind::Docker(_)) {
            for kind in [BedKind::Wide, BedKind::Macs] {
                let own = on(kind);
                if !own.is_empty() {
                    bed.more.push((kind, Bed::build_on(peer, &own, kind)?));
                }
            }
        }
        Ok(bed)
    }

    /// The peer's topology of bed `kind` (the bridge shape), servers started and paths warmed
    /// up.
    fn build_on(peer: &Peer, metrics: &[Metric], kind: BedKind) -> Result<Bed, String> {
        let err = |e: sluice_lab::lab::LabError| e.to_string();
        let spec = spec(kind, v6::any_v6(metrics));
        let mut bed = match &peer.kind {
            PeerKind::Docker(forwarder) => {
                let tag = match (peer.name.as_str(), forwarder, kind) {
                    ("iptables-nat", ..) => "bn",
                    (_, Forwarder::Kernel, BedKind::Main) => "bk",
                    (_, Forwarder::Kernel, BedKind::Wide) => "wk",
                    (_, Forwarder::Kernel, BedKind::Macs) => "mk",
                    (_, Forwarder::Sluice(_), BedKind::Main) => "bs",
                    (_, Forwarder::Sluice(_), BedKind::Wide) => "ws",
                    (_, Forwarder::Sluice(_), BedKind::Macs) => "ms",
                };
                let topo = DockerLike::build(tag, spec, forwarder.clone()).map_err(err)?;
                let DockerLike {
                    lab,
                    spec,
                    forwarder_pid,
                    ..
                } = topo;
                Bed {
                    lab,
                    spec,
                    pid: forwarder_pid,
                    shape: Shape::Bridge,
                    kernel_offload: matches!(forwarder, Forwarder::Sluice(l)
                        if super::peers::offloads(&l.args)),
                    more: Vec::new(),
                }
            }
            kind => {
                let tag = match kind {
                    PeerKind::Slirp4netns => "bh",
                    PeerKind::Pasta => "bp",
                    _ => "bo",
                };
                let mut lab = Lab::new(tag).map_err(err)?;
                let pid = match kind {
                    PeerKind::Slirp4netns => shapes::slirp4netns(&mut lab)?,
                    PeerKind::Pasta => shapes::pasta(&mut lab)?,
                    _ => shapes::ovs_bridge(&mut lab, &spec)?,
                };
                Bed {
                    lab,
                    spec,
                    pid: Some(pid),
                    shape: kind.shape(),
                    kernel_offload: false,
                    more: Vec::new(),
                }
            }
        };
        bed.start_servers(metrics)?;
        bed.warm_up()?;
        Ok(bed)
    }

    fn start_servers(&mut self, metrics: &[Metric]) -> Result<(), String> {
        let err = |e: sluice_lab::lab::LabError| e.to_string();
        let servers = servers(self.shape, &self.spec, metrics);
        for (i, (ns, args, _)) in servers.iter().enumerate() {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.lab
                .spawn(ns, &args, &format!("srv{i}-{ns}-{}", tool_name(args[0])))
                .map_err(err)?;
        }
        for (ns, _, port) in &servers {
            self.lab
                .wait_listen(ns, *port, Duration::from_secs(10))
                .map_err(err)?;
        }
        Ok(())
    }

    /// Warm-up: ARP / FDB entries on every path used.
    fn warm_up(&self) -> Result<(), String> {
        if self.shape != Shape::Bridge {
            return Ok(());
        }
        let (a, b) = (self.spec.endpoint_ip(0), self.spec.endpoint_ip(1));
        let mut warm = vec![("a", b.to_string()), ("b", a.to_string())];
        let outside = self.lab.namespaces().iter().any(|n| n == OUTSIDE);
        if outside {
            warm.push(("a", self.spec.outside_ip().to_string()));
        }
        if self.spec.ipv6 {
            let s = &self.spec;
            warm.push(("a", s.endpoint_ip6(1).to_string()));
            warm.push(("b", s.endpoint_ip6(0).to_string()));
            if outside {
                warm.push(("a", s.outside_ip6().to_string()));
            }
        }
        for (ns, ip) in warm {
            self.lab
                .exec(ns, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "-q", &ip])
                .map_err(|e| format!("warm-up ping {ns} -> {ip}: {e}"))?;
        }
        Ok(())
    }

    /// True when the peer hands established flows to the kernel (its softirq time forwards).
    pub(super) fn kernel_offload(&self) -> bool {
        self.kernel_offload
    }

    /// The forwarding process of the bed a metric is measured on.
    pub(super) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Every forwarding process of the peer (its other beds' too).
    pub(super) fn pids(&self) -> Vec<u32> {
        self.pid
            .into_iter()
            .chain(self.more.iter().filter_map(|(_, b)| b.pid))
            .collect()
    }

    /// The bed `m` is measured on: one of the others for the endpoints rows measured there.
    pub(super) fn for_metric(&self, m: &Metric) -> &Bed {
        let kind = BedKind::of(m);
        self.more
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(self, |(_, b)| b)
    }

    /// The v4 addresses the rows use: endpoint b (or the host behind the tool's gateway), the
    /// outside and the uplink.
    pub(super) fn addrs_v4(&self) -> v6::Addrs {
        let b = match self.shape {
            Shape::Bridge => self.spec.endpoint_ip(1),
            Shape::NsHost => shapes::HOST_GW,
        };
        v6::Addrs {
            b: b.into(),
            outside: self.spec.outside_ip().into(),
            uplink: self.spec.uplink_ip().addr.into(),
        }
    }

    /// The address "b" of the a->b rows: endpoint b, or the host behind the tool's gateway.
    pub(super) fn target(&self) -> String {
        self.addrs_v4().b.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::{metrics, v6};

    #[test]
    fn v6_rr_rows_start_this_binarys_servers_on_v6_addresses() {
        let spec = spec(BedKind::Main, true);
        assert!(spec.ipv6 && !super::spec(BedKind::Main, false).ipv6);
        let cmds: Vec<(&str, String, u16)> =
            servers(Shape::Bridge, &spec, &[v6::TCP_RR, v6::NAT_IN_RR])
                .into_iter()
                .map(|(ns, cmd, port)| (ns, cmd[1..].join(" "), port))
                .collect();
        assert_eq!(
            cmds,
            vec![
                ("b", "--rr-server [fd00:17::3]:11111".into(), SP_TCP_PORT),
                (
                    "b",
                    "--rr-server [fd00:17::3]:11112 --rr-udp".into(),
                    SP_UDP_PORT
                ),
                ("a", "--rr-server [fd00:17::2]:11111".into(), SP_TCP_PORT),
                (
                    OUTSIDE,
                    "--rr-server [2001:db8:18::2]:11111".into(),
                    SP_TCP_PORT
                ),
            ]
        );
        // The v4 RR rows keep sockperf, bound to the v4 addresses.
        let v4 = servers(Shape::Bridge, &spec, &[metrics::TCP_RR]);
        assert!(v4.iter().all(|(_, cmd, _)| cmd[0] == "sockperf"));
        assert_eq!(tool_name("/usr/bin/sluice-e2e-bench"), "sluice-e2e-bench");
    }
}
