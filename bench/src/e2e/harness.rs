//! Runs the benchmark: builds one topology per peer (docker-like, OVS bridge, namespace <->
//! host), starts the servers, then measures every metric on every peer alternately, run after
//! run.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sluice_dataplane::config::L4Proto;
use sluice_lab::lab::{DockerLike, DockerLikeSpec, Forwarder, Lab, Publish, SluiceLaunch, OUTSIDE};

use super::parse;
use super::report::{cell, Cell, Row, RunInfo};
use super::{metrics, shapes, CpuUse, Metric, Sample, Shape, TestKind};

/// The port every iperf3 server listens on (in a, b and outside).
const IPERF_PORT: u16 = 5201;
/// sockperf TCP server port (in a, b and outside).
const SP_TCP_PORT: u16 = 11111;
/// sockperf UDP server port (in b).
const SP_UDP_PORT: u16 = 11112;
/// Published port on the uplink for iperf3 in a.
const PUB_IPERF: u16 = 15201;
/// Published port on the uplink for sockperf in a.
const PUB_SP: u16 = 18081;

/// What to measure and how.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Test groups.
    pub tests: Vec<TestKind>,
    /// Runs per forwarder.
    pub runs: usize,
    /// Seconds per measurement.
    pub duration: u32,
    /// Peers (report columns), measured in this order within each run.
    pub peers: Vec<Peer>,
}

/// What a peer is and which topology it gets.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerKind {
    /// A forwarder of the docker-like topology (kernel bridge + iptables, or sluice).
    Docker(Forwarder),
    /// slirp4netns between a namespace and its host.
    Slirp4netns,
    /// pasta between a namespace and its host.
    Pasta,
    /// Open vSwitch's userspace datapath bridging two endpoints.
    Ovs,
}

impl PeerKind {
    /// The topology the peer is measured on.
    pub fn shape(&self) -> Shape {
        match self {
            PeerKind::Slirp4netns | PeerKind::Pasta => Shape::NsHost,
            PeerKind::Docker(_) | PeerKind::Ovs => Shape::Bridge,
        }
    }
}

/// One column of the report: a peer and the test groups it is measured on.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    /// Column name ("kernel", "sluice", "iptables-nat", "slirp4netns", "pasta", "ovs").
    pub name: String,
    /// What forwards, on which topology.
    pub kind: PeerKind,
    /// The test groups this peer runs (a subset of the plan's).
    pub tests: Vec<TestKind>,
}

/// Every peer name `--peers` accepts, in the default order.
pub const PEER_NAMES: [&str; 6] = [
    "kernel",
    "sluice",
    "iptables-nat",
    "slirp4netns",
    "pasta",
    "ovs",
];

/// The optional peers outside the docker-like topology: name, kind, the tools they need and
/// the Debian package that has them.
const TOOL_PEERS: [(&str, PeerKind, &[&str], &str); 3] = [
    (
        "slirp4netns",
        PeerKind::Slirp4netns,
        &["slirp4netns"],
        "slirp4netns",
    ),
    ("pasta", PeerKind::Pasta, &["pasta"], "passt"),
    (
        "ovs",
        PeerKind::Ovs,
        &["ovs-vswitchd", "ovsdb-server", "ovsdb-tool", "ovs-vsctl"],
        "openvswitch-switch",
    ),
];

/// The test groups of the peers that have no NAT path of their own: OVS only bridges here,
/// slirp4netns and pasta have no second endpoint and no uplink.
const NO_NAT_TESTS: [TestKind; 4] = [TestKind::Tcp, TestKind::Tcp4, TestKind::Udp64, TestKind::Rr];

/// Resolves `--peers` names into peers, with one line per skipped peer or test. `kernel` and
/// `iptables-nat` are the same kernel topology: when both are asked for, the NAT rows go to
/// `iptables-nat` (the kernel's NAT path) and `kernel` keeps the bridge rows. slirp4netns,
/// pasta and ovs run the tests that make sense on their shape; the others are listed as
/// "n/a for this peer's shape".
pub fn resolve_peers(
    names: &[String],
    tests: &[TestKind],
    sluice: &SluiceLaunch,
    has: impl Fn(&str) -> bool,
) -> Result<(Vec<Peer>, Vec<String>), String> {
    let mut peers = Vec::new();
    let mut skipped = Vec::new();
    let with_nat_peer = names.iter().any(|n| n == "iptables-nat");
    for name in names {
        let (kind, peer_tests): (PeerKind, Vec<TestKind>) = match name.as_str() {
            "kernel" => (
                PeerKind::Docker(Forwarder::Kernel),
                tests
                    .iter()
                    .copied()
                    .filter(|t| !(with_nat_peer && *t == TestKind::Nat))
                    .collect(),
            ),
            "iptables-nat" => (
                PeerKind::Docker(Forwarder::Kernel),
                tests
                    .iter()
                    .copied()
                    .filter(|t| *t == TestKind::Nat)
                    .collect(),
            ),
            "sluice" => (
                PeerKind::Docker(Forwarder::Sluice(sluice.clone())),
                tests.to_vec(),
            ),
            other => match TOOL_PEERS.iter().find(|(n, ..)| *n == other) {
                Some((n, kind, tools, pkg)) => {
                    if let Some(tool) = tools.iter().find(|t| !has(t)) {
                        skipped.push(format!(
                            "{n}: skipped, {tool} is not installed (apt-get install {pkg})"
                        ));
                        continue;
                    }
                    let na: Vec<&str> = tests
                        .iter()
                        .filter(|t| !NO_NAT_TESTS.contains(t))
                        .map(|t| t.name())
                        .collect();
                    let own: Vec<TestKind> = tests
                        .iter()
                        .copied()
                        .filter(|t| NO_NAT_TESTS.contains(t))
                        .collect();
                    if !na.is_empty() && !own.is_empty() {
                        skipped.push(format!(
                            "{n}: {} n/a for this peer's shape ({})",
                            na.join(", "),
                            kind.shape().text()
                        ));
                    }
                    (kind.clone(), own)
                }
                None => {
                    return Err(format!(
                        "unknown peer {other:?} (expected {})",
                        PEER_NAMES.join(", ")
                    ))
                }
            },
        };
        if peer_tests.is_empty() {
            skipped.push(format!(
                "{name}: skipped, none of the selected tests applies ({name} measures {})",
                match name.as_str() {
                    "iptables-nat" => "nat",
                    "kernel" => "the bridge tests",
                    _ => "tcp, tcp4, udp64, rr",
                }
            ));
            continue;
        }
        if peers.iter().any(|p: &Peer| &p.name == name) {
            return Err(format!("peer {name:?} is listed twice"));
        }
        peers.push(Peer {
            name: name.clone(),
            kind,
            tests: peer_tests,
        });
    }
    Ok((peers, skipped))
}

/// What the progress callback of [`run`] receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress<'a> {
    /// A measurement starts: which peer, which test, run i/N and the time left (transient:
    /// a terminal can overwrite it).
    Status(&'a str),
    /// A line to keep: a result, a skipped peer, a set-up step.
    Line(&'a str),
}

/// Seconds left, from the measurements done so far (or the duration plus start-up costs
/// before the first one).
pub fn time_left(done: usize, total: usize, elapsed_s: f64, duration: u32) -> f64 {
    let per = if done == 0 {
        f64::from(duration) + 2.0
    } else {
        elapsed_s / done as f64
    };
    per * total.saturating_sub(done) as f64
}

/// "1m05s" or "42s".
pub fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// What a benchmark run produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Names of the forwarders that were measured (report column order).
    pub forwarders: Vec<String>,
    /// One row per metric.
    pub rows: Vec<Row>,
    /// One line per forwarder or test that was skipped, with the reason.
    pub skipped: Vec<String>,
    /// True when the run was interrupted before all runs completed.
    pub interrupted: bool,
}

/// True when `tool` is an executable file in `PATH` (or a path to one).
pub fn have_tool(tool: &str) -> bool {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if tool.contains('/') {
        return is_exec(Path::new(tool));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| is_exec(&d.join(tool))))
}

/// Why the peer `name` of `kind` cannot be measured here, if it cannot (the tools of
/// slirp4netns, pasta and ovs are checked when the peers are resolved).
pub fn peer_unavailable(name: &str, kind: &PeerKind) -> Option<String> {
    match kind {
        PeerKind::Docker(Forwarder::Kernel) => {
            (!have_tool("iptables")).then(|| format!("{name}: skipped, iptables is not installed"))
        }
        PeerKind::Docker(Forwarder::Sluice(l)) => {
            (!have_tool(&l.bin.to_string_lossy())).then(|| {
                format!(
                    "{name}: skipped, {} is not an executable (build it or pass --sluice-bin)",
                    l.bin.display()
                )
            })
        }
        PeerKind::Slirp4netns | PeerKind::Pasta | PeerKind::Ovs => None,
    }
}

/// How 64-byte UDP is generated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UdpGen {
    Trafgen,
    Iperf3,
}

/// The metrics to run given the installed tools; the rest are reported as skipped.
fn select_metrics(
    tests: &[TestKind],
    has: impl Fn(&str) -> bool,
    skipped: &mut Vec<String>,
) -> (Vec<Metric>, UdpGen) {
    let mut out = Vec::new();
    let udp = if has("trafgen") {
        UdpGen::Trafgen
    } else {
        UdpGen::Iperf3
    };
    for k in TestKind::ALL.into_iter().filter(|k| tests.contains(k)) {
        for m in k.metrics() {
            let tool = if m.unit == super::Unit::Us {
                "sockperf"
            } else {
                "iperf3"
            };
            let by_trafgen = *m == metrics::UDP64 && udp == UdpGen::Trafgen;
            if has(tool) || by_trafgen {
                out.push(*m);
            } else {
                skipped.push(format!("{}: skipped, {tool} is not installed", m.name));
            }
        }
    }
    (out, udp)
}

/// One peer's topology with its servers running.
struct Bed {
    /// The namespaces and processes (dropping it removes everything).
    lab: Lab,
    /// Addresses of the bridge shape (also used for the OVS bridge).
    spec: DockerLikeSpec,
    /// The forwarding process (sluice, slirp4netns, pasta, ovs-vswitchd); None for the kernel.
    pid: Option<u32>,
    /// The topology.
    shape: Shape,
}

fn spec() -> DockerLikeSpec {
    let publish = |host_port, target_port| Publish {
        proto: L4Proto::Tcp,
        host_port,
        endpoint: "a".into(),
        target_port,
    };
    DockerLikeSpec {
        endpoints: vec!["a".into(), "b".into()],
        publish: vec![publish(PUB_IPERF, IPERF_PORT), publish(PUB_SP, SP_TCP_PORT)],
        ..DockerLikeSpec::default()
    }
}

/// The servers a bed needs: (namespace, command, port it listens on).
type Server = (&'static str, Vec<String>, u16);

fn servers(shape: Shape, spec: &DockerLikeSpec, metrics: &[Metric]) -> Vec<Server> {
    let iperf = have_tool("iperf3") && metrics.iter().any(|m| m.unit != super::Unit::Us);
    let rr = metrics.iter().any(|m| m.unit == super::Unit::Us);
    let nat = metrics
        .iter()
        .any(|m| TestKind::of(m) == Some(TestKind::Nat));
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
    fn build(peer: &Peer, metrics: &[Metric]) -> Result<Bed, String> {
        let err = |e: sluice_lab::lab::LabError| e.to_string();
        let spec = spec();
        let mut bed = match &peer.kind {
            PeerKind::Docker(forwarder) => {
                let tag = match (peer.name.as_str(), forwarder) {
                    ("iptables-nat", _) => "bn",
                    (_, Forwarder::Kernel) => "bk",
                    (_, Forwarder::Sluice(_)) => "bs",
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
                }
            }
        };
        let servers = servers(bed.shape, &bed.spec, metrics);
        for (i, (ns, args, _)) in servers.iter().enumerate() {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bed.lab
                .spawn(ns, &args, &format!("srv{i}-{ns}-{}", args[0]))
                .map_err(err)?;
        }
        for (ns, _, port) in &servers {
            bed.lab
                .wait_listen(ns, *port, Duration::from_secs(10))
                .map_err(err)?;
        }
        if bed.shape == Shape::Bridge {
            // Warm-up: ARP / FDB entries on every path used.
            let (a, b) = (bed.spec.endpoint_ip(0), bed.spec.endpoint_ip(1));
            let mut warm = vec![("a", b.to_string()), ("b", a.to_string())];
            if bed.lab.namespaces().iter().any(|n| n == OUTSIDE) {
                warm.push(("a", bed.spec.outside_ip().to_string()));
            }
            for (ns, ip) in warm {
                bed.lab
                    .exec(ns, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "-q", &ip])
                    .map_err(|e| format!("warm-up ping {ns} -> {ip}: {e}"))?;
            }
        }
        Ok(bed)
    }

    fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The address "b" of the a->b rows: endpoint b, or the host behind the tool's gateway.
    fn target(&self) -> String {
        match self.shape {
            Shape::Bridge => self.spec.endpoint_ip(1).to_string(),
            Shape::NsHost => shapes::HOST_GW.to_string(),
        }
    }
}

fn read_proc(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

fn proc_ticks(pid: Option<u32>) -> Option<u64> {
    pid.and_then(|p| read_proc(&format!("/proc/{p}/stat")))
        .and_then(|s| parse::pid_stat_ticks(&s).ok())
}

fn out_text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .chars()
        .take(120)
        .collect()
}

type Measured = Result<(f64, String), String>;

fn m_iperf_tcp(bed: &Bed, ns: &str, ip: &str, port: u16, streams: u32, dur: u32) -> Measured {
    let (t, p, n, d) = (
        (dur + 15).to_string(),
        port.to_string(),
        streams.to_string(),
        dur.to_string(),
    );
    let o = bed
        .lab
        .exec_output(
            ns,
            &[
                "timeout", &t, "iperf3", "-c", ip, "-p", &p, "-t", &d, "-P", &n, "-J",
            ],
        )
        .map_err(|e| e.to_string())?;
    let (out, err) = out_text(&o);
    let r = parse::iperf3_tcp(&out).map_err(|e| {
        if out.trim().is_empty() {
            format!("iperf3: {}", first_line(&err))
        } else {
            e.to_string()
        }
    })?;
    Ok((
        r.gbps,
        format!(
            "retr {}; iperf3 cpu snd {:.0}% rcv {:.0}%",
            r.retransmits, r.client_cpu, r.server_cpu
        ),
    ))
}

fn m_sockperf(bed: &Bed, ns: &str, ip: &str, port: u16, tcp: bool, dur: u32) -> Measured {
    let (t, p, d) = ((dur + 15).to_string(), port.to_string(), dur.to_string());
    let mut args = vec!["timeout", &t, "sockperf", "pp"];
    if tcp {
        args.push("--tcp");
    }
    args.extend_from_slice(&["-i", ip, "-p", &p, "-m", "64", "-t", &d, "--full-rtt"]);
    let o = bed.lab.exec_output(ns, &args).map_err(|e| e.to_string())?;
    let (out, err) = out_text(&o);
    let r = parse::sockperf(&format!("{out}\n{err}")).map_err(|e| e.to_string())?;
    let f = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.1}"));
    Ok((
        r.avg_us,
        format!("p50 {}us p99 {}us", f(r.p50_us), f(r.p99_us)),
    ))
}

fn link_counters(bed: &Bed, ns: &str) -> Result<parse::LinkCounters, String> {
    let out = bed
        .lab
        .ip(ns, &["-s", "-j", "link", "show", "dev", "eth0"])
        .map_err(|e| e.to_string())?;
    parse::ip_link_counters(&out).map_err(|e| e.to_string())
}

fn m_udp64(bed: &Bed, gen: UdpGen, dur: u32) -> Measured {
    let spec = &bed.spec;
    let b_ip = bed.target();
    // trafgen writes frames addressed to endpoint b's MAC: only the bridge shape has one.
    let gen = if bed.shape == Shape::NsHost {
        UdpGen::Iperf3
    } else {
        gen
    };
    match gen {
        UdpGen::Trafgen => {
            let cfg = bed.lab.dir().join("udp64.trafgen");
            let text = format!(
                "{{ eth(da={}, sa={}, type=0x0800), ipv4(saddr={}, daddr={b_ip}, ttl=64), \
                 udp(sp=40000, dp=9), fill(0x41, 64) }}\n",
                spec.endpoint_mac(1),
                spec.endpoint_mac(0),
                spec.endpoint_ip(0),
            );
            std::fs::write(&cfg, text).map_err(|e| format!("{}: {e}", cfg.display()))?;
            let cfg = cfg.to_string_lossy().into_owned();
            let d = dur.to_string();
            let r0 = link_counters(bed, "b")?;
            let t0 = Instant::now();
            let o = bed
                .lab
                .exec_output(
                    "a",
                    &[
                        "timeout",
                        "-s",
                        "INT",
                        &d,
                        "trafgen",
                        "-o",
                        "eth0",
                        "-i",
                        &cfg,
                        "-P",
                        "1",
                        "--no-sock-mem",
                        "--notouch-irq",
                    ],
                )
                .map_err(|e| e.to_string())?;
            let elapsed = t0.elapsed().as_secs_f64();
            sleep(Duration::from_millis(50));
            let r1 = link_counters(bed, "b")?;
            let (out, err) = out_text(&o);
            let sent = parse::trafgen_sent(&out)
                .or_else(|_| parse::trafgen_sent(&err))
                .map_err(|_| format!("trafgen: {}", first_line(&format!("{err}\n{out}"))))?;
            let rx = r1.rx_packets.saturating_sub(r0.rx_packets) as f64;
            Ok((
                rx / elapsed / 1000.0,
                format!("trafgen sent {:.1} kpps", sent as f64 / elapsed / 1000.0),
            ))
        }
        UdpGen::Iperf3 => {
            let (t, p, d) = (
                (dur + 15).to_string(),
                IPERF_PORT.to_string(),
                dur.to_string(),
            );
            let o = bed
                .lab
                .exec_output(
                    "a",
                    &[
                        "timeout", &t, "iperf3", "-c", &b_ip, "-p", &p, "-u", "-b", "0", "-l",
                        "64", "-t", &d, "-J",
                    ],
                )
                .map_err(|e| e.to_string())?;
            let (out, _) = out_text(&o);
            let r = parse::iperf3_udp(&out).map_err(|e| e.to_string())?;
            Ok((
                r.received_pps / 1000.0,
                format!("iperf3 -u sent {:.1} kpps", r.sent_pps / 1000.0),
            ))
        }
    }
}

fn measure(bed: &Bed, m: Metric, gen: UdpGen, dur: u32) -> Measured {
    let spec = &bed.spec;
    let b = bed.target();
    let o = spec.outside_ip().to_string();
    let up = spec.uplink_ip().addr.to_string();
    match m {
        metrics::TCP1 => m_iperf_tcp(bed, "a", &b, IPERF_PORT, 1, dur),
        metrics::TCP4 => m_iperf_tcp(bed, "a", &b, IPERF_PORT, 4, dur),
        metrics::UDP64 => m_udp64(bed, gen, dur),
        metrics::TCP_RR => m_sockperf(bed, "a", &b, SP_TCP_PORT, true, dur),
        metrics::UDP_RR => m_sockperf(bed, "a", &b, SP_UDP_PORT, false, dur),
        metrics::NAT_OUT_TCP1 => m_iperf_tcp(bed, "a", &o, IPERF_PORT, 1, dur),
        metrics::NAT_IN_TCP1 => m_iperf_tcp(bed, OUTSIDE, &up, PUB_IPERF, 1, dur),
        metrics::NAT_OUT_RR => m_sockperf(bed, "a", &o, SP_TCP_PORT, true, dur),
        metrics::NAT_IN_RR => m_sockperf(bed, OUTSIDE, &up, PUB_SP, true, dur),
        other => Err(format!("no measurement for {}", other.name)),
    }
}

/// Busy % of all CPUs over `window`, in % of one CPU.
fn busy_over(window: Duration, hz: f64) -> Option<f64> {
    let a = read_proc("/proc/stat").and_then(|s| parse::proc_stat(&s).ok())?;
    sleep(window);
    let b = read_proc("/proc/stat").and_then(|s| parse::proc_stat(&s).ok())?;
    CpuUse::between(&a, &b, None, hz, window.as_secs_f64()).busy_pct
}

/// Lets the previous measurement's traffic drain, then waits (at most ~5 s) for the machine to
/// be quiet; returns the last background busy figure.
fn settle(hz: f64) -> Option<f64> {
    const QUIET_PCT: f64 = 30.0;
    let mut last = None;
    for _ in 0..10 {
        last = busy_over(Duration::from_millis(500), hz);
        if !matches!(last, Some(b) if b > QUIET_PCT) {
            break;
        }
    }
    last
}

fn measure_with_cpu(bed: &Bed, m: Metric, gen: UdpGen, dur: u32, hz: f64) -> Sample {
    let s0 = read_proc("/proc/stat").and_then(|s| parse::proc_stat(&s).ok());
    let p0 = proc_ticks(bed.pid());
    let t0 = Instant::now();
    let r = measure(bed, m, gen, dur);
    let elapsed = t0.elapsed().as_secs_f64();
    let p1 = proc_ticks(bed.pid());
    let s1 = read_proc("/proc/stat").and_then(|s| parse::proc_stat(&s).ok());
    let cpu = match (s0, s1) {
        (Some(a), Some(b)) => CpuUse::between(&a, &b, p0.zip(p1), hz, elapsed),
        _ => CpuUse::default(),
    };
    let (value, note) = match r {
        Ok((v, n)) => (Ok(v), n),
        Err(e) => (Err(e), String::new()),
    };
    Sample { value, note, cpu }
}

/// Runs the plan; `progress` receives a status before and a line after each measurement;
/// stops early (keeping what was measured) when `stop` becomes true. Every namespace is
/// removed before it returns.
pub fn run(plan: &Plan, stop: &AtomicBool, mut progress: impl FnMut(Progress)) -> Outcome {
    let mut skipped = Vec::new();
    let (metrics, gen) = select_metrics(&plan.tests, have_tool, &mut skipped);
    if gen == UdpGen::Iperf3 && metrics.contains(&metrics::UDP64) {
        skipped.push("udp64: trafgen is not installed, using iperf3 -u -l 64 -b 0".into());
    }
    let mut beds: Vec<(&Peer, Bed)> = Vec::new();
    for p in &plan.peers {
        if let Some(why) = peer_unavailable(&p.name, &p.kind) {
            progress(Progress::Line(&why));
            skipped.push(why);
            continue;
        }
        let own: Vec<Metric> = metrics
            .iter()
            .copied()
            .filter(|m| TestKind::of(m).is_some_and(|k| p.tests.contains(&k)))
            .collect();
        if own.is_empty() {
            continue;
        }
        progress(Progress::Line(&format!(
            "{}: building the topology",
            p.name
        )));
        match Bed::build(p, &own) {
            Ok(bed) => beds.push((p, bed)),
            Err(e) => {
                let why = format!("{}: skipped, set-up failed: {e}", p.name);
                progress(Progress::Line(&why));
                skipped.push(why);
            }
        }
    }
    let applies = |p: &Peer, m: &Metric| TestKind::of(m).is_some_and(|k| p.tests.contains(&k));
    let per_run: usize = metrics
        .iter()
        .map(|m| beds.iter().filter(|(p, _)| applies(p, m)).count())
        .sum();
    let total = per_run * plan.runs;
    let mut done = 0;
    let started = Instant::now();
    let hz = clock_ticks();
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); beds.len()]; metrics.len()];
    let mut interrupted = false;
    'runs: for run in 0..plan.runs {
        for (mi, m) in metrics.iter().enumerate() {
            for (bi, (peer, bed)) in beds.iter().enumerate() {
                if !applies(peer, m) {
                    continue;
                }
                if stop.load(Ordering::Relaxed) {
                    interrupted = true;
                    break 'runs;
                }
                let name = &peer.name;
                let test = TestKind::of(m).map_or("?", TestKind::name);
                progress(Progress::Status(&format!(
                    "[{}/{total}] run {}/{}: {name}, {test} ({}): measuring {}s, about {} left",
                    done + 1,
                    run + 1,
                    plan.runs,
                    m.name,
                    plan.duration,
                    fmt_secs(time_left(
                        done,
                        total,
                        started.elapsed().as_secs_f64(),
                        plan.duration
                    ))
                )));
                // Idle forwarders that poll would steal CPU from the one measured: freeze them.
                for (oi, (_, other)) in beds.iter().enumerate() {
                    if oi != bi {
                        if let Some(pid) = other.pid() {
                            other.lab.pause(pid);
                        }
                    }
                }
                if let Some(pid) = bed.pid() {
                    bed.lab.resume(pid);
                }
                let background = settle(hz);
                let mut s = measure_with_cpu(bed, *m, gen, plan.duration, hz);
                s.cpu.background_pct = background;
                done += 1;
                progress(Progress::Line(&format!(
                    "[{done}/{total}] run {}/{} {name:<12} {:<26} {} {} {}",
                    run + 1,
                    plan.runs,
                    m.name,
                    match &s.value {
                        Ok(v) => format!("{v:.2}"),
                        Err(e) => format!("FAIL ({e})"),
                    },
                    m.unit_text(),
                    [s.note.clone(), super::report::cpu_text(&s.cpu)].join("; ")
                )));
                samples[mi][bi].push(s);
            }
        }
    }
    for (_, bed) in &beds {
        if let Some(pid) = bed.pid() {
            bed.lab.resume(pid);
        }
    }
    let rows = metrics
        .iter()
        .zip(samples)
        .map(|(m, per_bed)| Row {
            metric: *m,
            cells: per_bed
                .iter()
                .zip(&beds)
                .map(|(s, (p, _))| Cell {
                    na: !applies(p, m),
                    ..cell(s)
                })
                .collect(),
        })
        .collect();
    let forwarders = beds.iter().map(|(p, _)| p.name.clone()).collect();
    drop(beds);
    Outcome {
        forwarders,
        rows,
        skipped,
        interrupted,
    }
}

/// The machine description for the report.
pub fn run_info(command: String, date: String) -> RunInfo {
    RunInfo {
        date,
        kernel: read_proc("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into()),
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: read_proc("/proc/cpuinfo")
            .and_then(|s| parse::cpu_model(&s))
            .unwrap_or_else(|| "unknown CPU".into()),
        command,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_follow_installed_tools() {
        let mut skipped = Vec::new();
        let (m, g) = select_metrics(&TestKind::ALL, |_| true, &mut skipped);
        assert_eq!(m.len(), 9);
        assert_eq!(g, UdpGen::Trafgen);
        assert!(skipped.is_empty());

        let (m, g) = select_metrics(
            &[TestKind::Udp64, TestKind::Rr],
            |t| t == "iperf3",
            &mut skipped,
        );
        assert_eq!(m, vec![metrics::UDP64]);
        assert_eq!(g, UdpGen::Iperf3);
        assert_eq!(skipped.len(), 2);
        assert!(skipped[0].contains("sockperf is not installed"));

        skipped.clear();
        let (m, _) = select_metrics(
            &[TestKind::Udp64, TestKind::Tcp],
            |t| t == "trafgen",
            &mut skipped,
        );
        assert_eq!(m, vec![metrics::UDP64]);
        assert_eq!(
            skipped,
            vec!["tcp1 a->b: skipped, iperf3 is not installed".to_string()]
        );
    }

    fn names(s: &str) -> Vec<String> {
        s.split(',').map(String::from).collect()
    }

    #[test]
    fn peers_map_onto_forwarders_and_tests() {
        let sl = SluiceLaunch::new("sluice");
        let (p, skipped) =
            resolve_peers(&names("kernel,sluice"), &TestKind::ALL, &sl, |_| true).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].tests, TestKind::ALL.to_vec());
        assert!(skipped.is_empty());

        let all = names("kernel,sluice,iptables-nat,slirp4netns,pasta,ovs");
        let (p, skipped) =
            resolve_peers(&all, &[TestKind::Tcp, TestKind::Nat], &sl, |t| t == "pasta").unwrap();
        let got: Vec<(&str, &[TestKind])> = p
            .iter()
            .map(|p| (p.name.as_str(), p.tests.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("kernel", &[TestKind::Tcp][..]),
                ("sluice", &[TestKind::Tcp, TestKind::Nat][..]),
                ("iptables-nat", &[TestKind::Nat][..]),
                ("pasta", &[TestKind::Tcp][..]),
            ]
        );
        assert_eq!(p[2].kind, PeerKind::Docker(Forwarder::Kernel));
        assert_eq!(p[3].kind, PeerKind::Pasta);
        assert_eq!(
            skipped,
            vec![
                "slirp4netns: skipped, slirp4netns is not installed (apt-get install slirp4netns)",
                "pasta: nat n/a for this peer's shape (namespace <-> host)",
                "ovs: skipped, ovs-vswitchd is not installed (apt-get install openvswitch-switch)",
            ]
        );

        // Every tool present: the three peers run their shape's tests, NAT is n/a for them.
        let (p, skipped) = resolve_peers(&all, &TestKind::ALL, &sl, |_| true).unwrap();
        let shaped: Vec<(&str, Shape, &[TestKind])> = p[3..]
            .iter()
            .map(|p| (p.name.as_str(), p.kind.shape(), p.tests.as_slice()))
            .collect();
        assert_eq!(
            shaped,
            vec![
                ("slirp4netns", Shape::NsHost, &NO_NAT_TESTS[..]),
                ("pasta", Shape::NsHost, &NO_NAT_TESTS[..]),
                ("ovs", Shape::Bridge, &NO_NAT_TESTS[..]),
            ]
        );
        assert_eq!(skipped.len(), 3);
        assert_eq!(skipped[2], "ovs: nat n/a for this peer's shape (bridge)");
        // The report finds the shape from the name alone: both must agree.
        assert!(p.iter().all(|p| p.kind.shape() == Shape::of_peer(&p.name)));
        // ovs needs all of its tools.
        let (_, skipped) =
            resolve_peers(&names("ovs"), &[TestKind::Tcp], &sl, |t| t != "ovsdb-tool").unwrap();
        assert_eq!(
            skipped,
            vec!["ovs: skipped, ovsdb-tool is not installed (apt-get install openvswitch-switch)"]
        );
        // Only NAT asked: nothing left for a peer without a NAT path.
        let (p, skipped) =
            resolve_peers(&names("slirp4netns"), &[TestKind::Nat], &sl, |_| true).unwrap();
        assert!(p.is_empty());
        assert_eq!(
            skipped,
            vec![
                "slirp4netns: skipped, none of the selected tests applies (slirp4netns measures \
                 tcp, tcp4, udp64, rr)"
            ]
        );

        let (p, skipped) =
            resolve_peers(&names("iptables-nat"), &[TestKind::Tcp], &sl, |_| true).unwrap();
        assert!(p.is_empty());
        assert!(skipped[0].starts_with("iptables-nat: skipped, none of the selected tests"));
        assert!(resolve_peers(&names("docker"), &[TestKind::Tcp], &sl, |_| true).is_err());
        assert!(resolve_peers(&names("kernel,kernel"), &[TestKind::Tcp], &sl, |_| true).is_err());
    }

    #[test]
    fn time_left_estimates() {
        assert_eq!(time_left(0, 4, 0.0, 2), 16.0);
        assert_eq!(time_left(2, 4, 10.0, 2), 10.0);
        assert_eq!(time_left(4, 4, 20.0, 2), 0.0);
        assert_eq!(fmt_secs(42.4), "42s");
        assert_eq!(fmt_secs(65.0), "1m05s");
    }

    #[test]
    fn missing_sluice_binary_is_a_reason_not_a_panic() {
        let f = PeerKind::Docker(Forwarder::Sluice(SluiceLaunch::new(
            "does-not-exist/sluice",
        )));
        assert!(peer_unavailable("sluice", &f)
            .unwrap()
            .starts_with("sluice: skipped"));
        assert_eq!(peer_unavailable("ovs", &PeerKind::Ovs), None);
        assert!(have_tool("sh"));
        assert!(!have_tool("no-such-tool-here"));
    }
}
