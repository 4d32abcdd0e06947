//! Runs the benchmark: builds one docker-like topology per forwarder, starts the servers, then
//! measures every metric on every forwarder alternately, run after run.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sluice_control::lab::{DockerLike, DockerLikeSpec, Forwarder, Publish, SluiceLaunch, OUTSIDE};
use sluice_dataplane::config::L4Proto;

use super::parse;
use super::report::{cell, Row, RunInfo};
use super::{metrics, CpuUse, Metric, Sample, TestKind};

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

/// One column of the report: a forwarder and the test groups it is measured on.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    /// Column name ("kernel", "sluice", "iptables-nat").
    pub name: String,
    /// Who forwards in the docker-like topology.
    pub forwarder: Forwarder,
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

/// Peers whose topology is not written yet: name, the tool they need, its Debian package.
const NOT_YET: [(&str, &str, &str); 3] = [
    ("slirp4netns", "slirp4netns", "slirp4netns"),
    ("pasta", "pasta", "passt"),
    ("ovs", "ovs-vswitchd", "openvswitch-switch"),
];

/// Resolves `--peers` names into peers, with one line per skipped peer. `kernel` and
/// `iptables-nat` are the same kernel topology: when both are asked for, the NAT rows go to
/// `iptables-nat` (the kernel's NAT path) and `kernel` keeps the bridge rows.
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
        let (forwarder, peer_tests): (Forwarder, Vec<TestKind>) = match name.as_str() {
            "kernel" => (
                Forwarder::Kernel,
                tests
                    .iter()
                    .copied()
                    .filter(|t| !(with_nat_peer && *t == TestKind::Nat))
                    .collect(),
            ),
            "iptables-nat" => (
                Forwarder::Kernel,
                tests
                    .iter()
                    .copied()
                    .filter(|t| *t == TestKind::Nat)
                    .collect(),
            ),
            "sluice" => (Forwarder::Sluice(sluice.clone()), tests.to_vec()),
            other => match NOT_YET.iter().find(|(n, _, _)| *n == other) {
                Some((n, tool, pkg)) => {
                    skipped.push(if has(tool) {
                        format!("{n}: skipped, not implemented yet")
                    } else {
                        format!("{n}: skipped, {tool} is not installed (apt-get install {pkg})")
                    });
                    continue;
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
                if name == "iptables-nat" {
                    "nat"
                } else {
                    "the bridge tests"
                }
            ));
            continue;
        }
        if peers.iter().any(|p: &Peer| &p.name == name) {
            return Err(format!("peer {name:?} is listed twice"));
        }
        peers.push(Peer {
            name: name.clone(),
            forwarder,
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

/// Why `forwarder` cannot be measured here, if it cannot.
pub fn forwarder_unavailable(forwarder: &Forwarder) -> Option<String> {
    match forwarder {
        Forwarder::Kernel => (!have_tool("iptables"))
            .then(|| "kernel: skipped, iptables is not installed".to_string()),
        Forwarder::Sluice(l) => (!have_tool(&l.bin.to_string_lossy())).then(|| {
            format!(
                "sluice: skipped, {} is not an executable (build it or pass --sluice-bin)",
                l.bin.display()
            )
        }),
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

/// One forwarder's topology with its servers running.
struct Bed {
    topo: DockerLike,
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

impl Bed {
    fn build(peer: &Peer, metrics: &[Metric]) -> Result<Bed, String> {
        let tag = match (peer.name.as_str(), &peer.forwarder) {
            ("iptables-nat", _) => "bn",
            (_, Forwarder::Kernel) => "bk",
            (_, Forwarder::Sluice(_)) => "bs",
        };
        let mut topo =
            DockerLike::build(tag, spec(), peer.forwarder.clone()).map_err(|e| e.to_string())?;
        let a = topo.ip("a").map_err(|e| e.to_string())?.to_string();
        let b = topo.ip("b").map_err(|e| e.to_string())?.to_string();
        let o = topo.spec.outside_ip().to_string();
        let iperf = have_tool("iperf3") && metrics.iter().any(|m| m.unit != super::Unit::Us);
        let rr = metrics.iter().any(|m| m.unit == super::Unit::Us);
        let mut servers: Vec<(&str, Vec<String>, u16)> = Vec::new();
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ip_port = IPERF_PORT.to_string();
        let sp_tcp = SP_TCP_PORT.to_string();
        let sp_udp = SP_UDP_PORT.to_string();
        for ns in ["a", "b", OUTSIDE] {
            if iperf {
                servers.push((ns, v(&["iperf3", "-s", "-p", &ip_port]), IPERF_PORT));
            }
            if rr {
                let ip = match ns {
                    "a" => &a,
                    "b" => &b,
                    _ => &o,
                };
                servers.push((
                    ns,
                    v(&["sockperf", "sr", "--tcp", "-i", ip, "-p", &sp_tcp]),
                    SP_TCP_PORT,
                ));
                if ns == "b" {
                    servers.push((
                        ns,
                        v(&["sockperf", "sr", "-i", ip, "-p", &sp_udp]),
                        SP_UDP_PORT,
                    ));
                }
            }
        }
        for (i, (ns, args, _)) in servers.iter().enumerate() {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            topo.lab
                .spawn(ns, &args, &format!("srv{i}-{ns}-{}", args[0]))
                .map_err(|e| e.to_string())?;
        }
        for (ns, _, port) in &servers {
            topo.lab
                .wait_listen(ns, *port, Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
        }
        // Warm-up: ARP / FDB entries on every path used.
        let warm = [("a", b.as_str()), ("a", o.as_str()), ("b", a.as_str())];
        for (ns, ip) in warm {
            topo.lab
                .exec(ns, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "-q", ip])
                .map_err(|e| format!("warm-up ping {ns} -> {ip}: {e}"))?;
        }
        Ok(Bed { topo })
    }

    fn pid(&self) -> Option<u32> {
        self.topo.forwarder_pid
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
        .topo
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
    let o = bed
        .topo
        .lab
        .exec_output(ns, &args)
        .map_err(|e| e.to_string())?;
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
        .topo
        .lab
        .ip(ns, &["-s", "-j", "link", "show", "dev", "eth0"])
        .map_err(|e| e.to_string())?;
    parse::ip_link_counters(&out).map_err(|e| e.to_string())
}

fn m_udp64(bed: &Bed, gen: UdpGen, dur: u32) -> Measured {
    let spec = &bed.topo.spec;
    let b_ip = spec.endpoint_ip(1).to_string();
    match gen {
        UdpGen::Trafgen => {
            let cfg = bed.topo.lab.dir().join("udp64.trafgen");
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
                .topo
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
                .topo
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
    let spec = &bed.topo.spec;
    let b = spec.endpoint_ip(1).to_string();
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
        if let Some(why) = forwarder_unavailable(&p.forwarder) {
            let why = why.replacen(p.forwarder.name(), &p.name, 1);
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
                            other.topo.lab.pause(pid);
                        }
                    }
                }
                if let Some(pid) = bed.pid() {
                    bed.topo.lab.resume(pid);
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
            bed.topo.lab.resume(pid);
        }
    }
    let rows = metrics
        .iter()
        .zip(samples)
        .map(|(m, per_bed)| Row {
            metric: *m,
            cells: per_bed.iter().map(|s| cell(s)).collect(),
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

        let (p, skipped) = resolve_peers(
            &names("kernel,sluice,iptables-nat,slirp4netns,pasta,ovs"),
            &[TestKind::Tcp, TestKind::Nat],
            &sl,
            |t| t == "pasta",
        )
        .unwrap();
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
            ]
        );
        assert_eq!(p[2].forwarder, Forwarder::Kernel);
        assert_eq!(
            skipped,
            vec![
                "slirp4netns: skipped, slirp4netns is not installed (apt-get install slirp4netns)",
                "pasta: skipped, not implemented yet",
                "ovs: skipped, ovs-vswitchd is not installed (apt-get install openvswitch-switch)",
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
        let f = Forwarder::Sluice(sluice_control::lab::SluiceLaunch::new(
            "does-not-exist/sluice",
        ));
        assert!(forwarder_unavailable(&f)
            .unwrap()
            .starts_with("sluice: skipped"));
        assert!(have_tool("sh"));
        assert!(!have_tool("no-such-tool-here"));
    }
}
