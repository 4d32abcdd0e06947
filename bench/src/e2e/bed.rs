//! One peer's topology with its servers running: the docker-like topology (kernel bridge +
//! iptables, or sluice; more for the endpoints rows: 64 endpoints, 10,000 MACs), the OVS
//! bridge, or a namespace <-> host shape, warmed up.

use std::time::Duration;

use sluice_dataplane::config::L4Proto;
use sluice_lab::lab::{DockerLike, DockerLikeSpec, Forwarder, Lab, Publish, OUTSIDE};

use super::peers::{have_tool, Peer, PeerKind};
use super::scale::BedKind;
use super::{scale, shapes, Metric, Shape, TestKind};

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
    /// The same peer on the other beds of the endpoints rows ([`BedKind::Wide`],
    /// [`BedKind::Macs`]), for the rows measured there.
    more: Vec<(BedKind, Bed)>,
}

/// The docker-like topology of bed `kind` (endpoints `a`, `b`, ...) with a's published ports.
fn spec(kind: BedKind) -> DockerLikeSpec {
    let publish = |host_port, target_port| Publish {
        proto: L4Proto::Tcp,
        host_port,
        endpoint: "a".into(),
        target_port,
    };
    kind.spec(DockerLikeSpec {
        endpoints: scale::endpoint_names(2),
        publish: vec![publish(PUB_IPERF, IPERF_PORT), publish(PUB_SP, SP_TCP_PORT)],
        ..DockerLikeSpec::default()
    })
}

/// The servers a bed needs: (namespace, command, port it listens on).
type Server = (&'static str, Vec<String>, u16);

fn servers(shape: Shape, spec: &DockerLikeSpec, metrics: &[Metric]) -> Vec<Server> {
    let iperf = have_tool("iperf3") && metrics.iter().any(|m| m.unit != super::Unit::Us);
    let rr = metrics.iter().any(|m| m.unit == super::Unit::Us);
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
    out
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
        let spec = spec(kind);
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
                .spawn(ns, &args, &format!("srv{i}-{ns}-{}", args[0]))
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
        if self.lab.namespaces().iter().any(|n| n == OUTSIDE) {
            warm.push(("a", self.spec.outside_ip().to_string()));
        }
        for (ns, ip) in warm {
            self.lab
                .exec(ns, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "-q", &ip])
                .map_err(|e| format!("warm-up ping {ns} -> {ip}: {e}"))?;
        }
        Ok(())
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

    /// The address "b" of the a->b rows: endpoint b, or the host behind the tool's gateway.
    pub(super) fn target(&self) -> String {
        match self.shape {
            Shape::Bridge => self.spec.endpoint_ip(1).to_string(),
            Shape::NsHost => shapes::HOST_GW.to_string(),
        }
    }
}
