//! One measurement: the tools run in a bed's namespaces (iperf3, sockperf, trafgen), their
//! outputs parsed, and the CPU the forwarder and the machine spent meanwhile.

use std::net::{IpAddr, SocketAddr};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sluice_lab::lab::OUTSIDE;

use super::bed::{self, Bed, IPERF_PORT, PUB_IPERF, PUB_SP, SP_TCP_PORT, SP_UDP_PORT};
use super::{
    metrics, parse, scale, streams, v6, CpuUse, ForwarderTicks, Metric, Sample, Shape, TestKind,
};

/// How 64-byte UDP is generated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UdpGen {
    Trafgen,
    Iperf3,
}

/// The metrics to run given the installed tools; the rest are reported as skipped.
pub(super) fn select_metrics(
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
            let by_trafgen = v6::twin(m).unwrap_or(*m) == metrics::UDP64 && udp == UdpGen::Trafgen;
            // The v6 RR rows run this binary's own tool (super::rr).
            let own_rr = m.unit == super::Unit::Us && v6::twin(m).is_some();
            let fills = scale::flows_before(m) > 0 || scale::BedKind::of(m) == scale::BedKind::Macs;
            if fills && udp != UdpGen::Trafgen {
                skipped.push(format!(
                    "{}: skipped, trafgen (which opens the flows, fills the FDB) is not installed",
                    m.name
                ));
            } else if has(tool) || by_trafgen || own_rr {
                out.push(*m);
            } else {
                skipped.push(format!("{}: skipped, {tool} is not installed", m.name));
            }
        }
    }
    (out, udp)
}

pub(super) fn read_proc(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

pub(super) fn clock_ticks() -> f64 {
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

/// The name prefix of sluice's forwarding threads (`sluice-w0`, ...).
const WORKER_THREADS: &str = "sluice-w";

/// User + system ticks of the process's sluice worker threads; None when it has none.
pub(super) fn worker_ticks(pid: Option<u32>) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{}/task", pid?)).ok()?;
    let stats: Vec<String> = dir
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .collect();
    parse::threads_ticks(stats.iter().map(String::as_str), WORKER_THREADS)
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

fn m_iperf_tcp(bed: &Bed, ns: &str, ip: &str, port: u16, dur: u32) -> Measured {
    let args = streams::client(ip, port, dur);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = bed.lab.exec_output(ns, &args).map_err(|e| e.to_string())?;
    let (out, err) = out_text(&o);
    let r = parse::iperf3_tcp(&out).map_err(|e| {
        if out.trim().is_empty() {
            format!("iperf3: {}", first_line(&err))
        } else {
            e.to_string()
        }
    })?;
    Ok((r.gbps, iperf_note(&r)))
}

/// The four-stream row: four clients in `a`, one stream each, to `b`'s four servers.
fn m_iperf_tcp4(bed: &Bed, ip: &str, dur: u32) -> Measured {
    let r = streams::run(&bed.lab, "a", ip, IPERF_PORT, dur)?;
    Ok((r.gbps, iperf_note(&r)))
}

fn iperf_note(r: &parse::IperfTcp) -> String {
    format!(
        "retr {}; iperf3 cpu snd {:.0}% rcv {:.0}%",
        r.retransmits, r.client_cpu, r.server_cpu
    )
}

fn m_sockperf(bed: &Bed, ns: &str, ip: IpAddr, port: u16, tcp: bool, dur: u32) -> Measured {
    let (t, p, d) = ((dur + 15).to_string(), port.to_string(), dur.to_string());
    let (ip, addr) = (ip.to_string(), SocketAddr::new(ip, port).to_string());
    let mut args = vec!["timeout", &t];
    let rr_client = bed::rr_command("--rr-client", &addr, !tcp);
    if ip.contains(':') {
        args.extend(rr_client.iter().map(String::as_str));
        args.extend(["--duration", &d]);
    } else {
        args.extend(["sockperf", "pp"]);
        if tcp {
            args.push("--tcp");
        }
        args.extend_from_slice(&["-i", &ip, "-p", &p, "-m", "64", "-t", &d, "--full-rtt"]);
    }
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

fn m_udp64(bed: &Bed, gen: UdpGen, dur: u32, over_v6: bool) -> Measured {
    let spec = &bed.spec;
    let b_ip = if over_v6 {
        spec.endpoint_ip6(1).to_string()
    } else {
        bed.target()
    };
    // trafgen writes frames addressed to endpoint b's MAC: only the bridge shape has one.
    let gen = if bed.shape == Shape::NsHost {
        UdpGen::Iperf3
    } else {
        gen
    };
    match gen {
        UdpGen::Trafgen => {
            let cfg = bed.lab.dir().join("udp64.trafgen");
            let text = if over_v6 {
                v6::trafgen_udp(spec)
            } else {
                format!(
                    "{{ eth(da={}, sa={}, type=0x0800), ipv4(saddr={}, daddr={b_ip}, ttl=64), \
                     udp(sp=40000, dp=9), fill(0x41, 64) }}\n",
                    spec.endpoint_mac(1),
                    spec.endpoint_mac(0),
                    spec.endpoint_ip(0),
                )
            };
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
    let over_v6 = v6::twin(&m).is_some();
    let (m, ips) = match v6::twin(&m) {
        Some(v4) => (v4, v6::addrs(spec)),
        None => (m, bed.addrs_v4()),
    };
    let (b, o, up) = (
        ips.b.to_string(),
        ips.outside.to_string(),
        ips.uplink.to_string(),
    );
    match m {
        metrics::TCP1
        | metrics::TCP1_2_ENDPOINTS
        | metrics::TCP1_64_ENDPOINTS
        | metrics::TCP1_10K_MACS => m_iperf_tcp(bed, "a", &b, IPERF_PORT, dur),
        metrics::TCP4 => m_iperf_tcp4(bed, &b, dur),
        metrics::UDP64 => m_udp64(bed, gen, dur, over_v6),
        metrics::TCP_RR => m_sockperf(bed, "a", ips.b, SP_TCP_PORT, true, dur),
        metrics::UDP_RR => m_sockperf(bed, "a", ips.b, SP_UDP_PORT, false, dur),
        metrics::NAT_OUT_TCP1
        | metrics::NAT_OUT_FLOWS_1
        | metrics::NAT_OUT_FLOWS_1K
        | metrics::NAT_OUT_FLOWS_100K => m_iperf_tcp(bed, "a", &o, IPERF_PORT, dur),
        metrics::NAT_IN_TCP1 => m_iperf_tcp(bed, OUTSIDE, &up, PUB_IPERF, dur),
        metrics::NAT_OUT_RR => m_sockperf(bed, "a", ips.outside, SP_TCP_PORT, true, dur),
        metrics::NAT_IN_RR => m_sockperf(bed, OUTSIDE, ips.uplink, PUB_SP, true, dur),
        other => Err(format!("no measurement for {}", other.name)),
    }
}

/// What a metric needs in place before its timed run (the flows of the flows rows, the MACs
/// of the MACs row); Ok with
/// a note saying what was done, if anything.
pub(super) fn prepare(bed: &Bed, m: &Metric) -> Result<Option<String>, String> {
    match scale::flows_before(m) {
        0 => scale::fill_macs(&bed.lab, m),
        n => scale::fill_flows(&bed.lab, &bed.spec, n).map(Some),
    }
}

/// Busy % of all CPUs over `window`, in % of one CPU.
fn busy_over(window: Duration, hz: f64) -> Option<f64> {
    let a = read_proc("/proc/stat").and_then(|s| parse::proc_stat(&s).ok())?;
    sleep(window);
    let b = read_proc("/proc/stat").and_then(|s| parse::proc_stat(&s).ok())?;
    CpuUse::between(&a, &b, ForwarderTicks::default(), hz, window.as_secs_f64()).busy_pct
}

/// Lets the previous measurement's traffic drain, then waits (at most ~5 s) for the machine to
/// be quiet; returns the last background busy figure.
pub(super) fn settle(hz: f64) -> Option<f64> {
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

pub(super) fn measure_with_cpu(bed: &Bed, m: Metric, gen: UdpGen, dur: u32, hz: f64) -> Sample {
    let s0 = read_proc("/proc/stat").and_then(|s| parse::proc_stat(&s).ok());
    let (p0, w0) = (proc_ticks(bed.pid()), worker_ticks(bed.pid()));
    let t0 = Instant::now();
    let r = measure(bed, m, gen, dur);
    let elapsed = t0.elapsed().as_secs_f64();
    let (p1, w1) = (proc_ticks(bed.pid()), worker_ticks(bed.pid()));
    let s1 = read_proc("/proc/stat").and_then(|s| parse::proc_stat(&s).ok());
    let ticks = ForwarderTicks {
        process: p0.zip(p1),
        workers: w0.zip(w1),
        kernel_offload: bed.kernel_offload(),
    };
    let cpu = match (s0, s1) {
        (Some(a), Some(b)) => CpuUse::between(&a, &b, ticks, hz, elapsed),
        _ => CpuUse::default(),
    };
    Sample::new(r, cpu, m.unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_follow_installed_tools() {
        let mut skipped = Vec::new();
        let (m, g) = select_metrics(&TestKind::ALL, |_| true, &mut skipped);
        assert_eq!(m.len(), 24);
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

        // The flows rows open their flows with trafgen.
        skipped.clear();
        let (m, _) = select_metrics(&[TestKind::Flows], |t| t == "iperf3", &mut skipped);
        assert_eq!(m, vec![metrics::NAT_OUT_FLOWS_1]);
        assert_eq!(skipped.len(), 2);
        assert!(skipped[1].starts_with("nat_out tcp1, +100k flows: skipped, trafgen"));
        // So does the MACs row its MACs.
        skipped.clear();
        let (m, _) = select_metrics(&[TestKind::Endpoints], |t| t == "iperf3", &mut skipped);
        assert_eq!(
            m,
            vec![metrics::TCP1_2_ENDPOINTS, metrics::TCP1_64_ENDPOINTS]
        );
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].starts_with("tcp1 a->b, +10k MACs: skipped, trafgen"));

        // The v6 RR rows need no sockperf (which has no IPv6 here); udp6 uses trafgen too.
        skipped.clear();
        let (m, _) = select_metrics(
            &[TestKind::Rr6, TestKind::Udp6, TestKind::Tcp6],
            |t| t == "trafgen",
            &mut skipped,
        );
        assert_eq!(m, vec![v6::UDP64, v6::TCP_RR, v6::UDP_RR]);
        assert_eq!(
            skipped,
            vec!["tcp1 v6 a->b: skipped, iperf3 is not installed".to_string()]
        );
    }
}
