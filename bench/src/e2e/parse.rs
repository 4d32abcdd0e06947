//! Pure parsers for the outputs of the measuring tools: iperf3 JSON, sockperf text, trafgen's
//! summary, `ip -s -j link` counters, `/proc/stat`, `/proc/PID/stat` and its threads'.

use serde_json::Value;

/// Why a tool's output could not be read as a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// The tool itself reported an error (connection refused, timeout, ...).
    #[error("{tool}: {message}")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// Its error message.
        message: String,
    },
    /// The output lacks a field or is not in the expected format.
    #[error("{tool}: unexpected output ({what})")]
    Format {
        /// The tool.
        tool: &'static str,
        /// What was missing.
        what: &'static str,
    },
}

fn format_err(tool: &'static str, what: &'static str) -> ParseError {
    ParseError::Format { tool, what }
}

/// A TCP throughput result of `iperf3 -J`.
#[derive(Debug, Clone, PartialEq)]
pub struct IperfTcp {
    /// Receiver-side throughput in Gbit/s.
    pub gbps: f64,
    /// Retransmitted segments (sender side).
    pub retransmits: u64,
    /// iperf3's own CPU use on the client, percent.
    pub client_cpu: f64,
    /// iperf3's own CPU use on the server, percent.
    pub server_cpu: f64,
}

/// A UDP result of `iperf3 -u -J`.
#[derive(Debug, Clone, PartialEq)]
pub struct IperfUdp {
    /// Datagrams per second that reached the server.
    pub received_pps: f64,
    /// Datagrams per second the client sent.
    pub sent_pps: f64,
}

fn iperf_json(out: &str) -> Result<Value, ParseError> {
    let v: Value = serde_json::from_str(out).map_err(|_| format_err("iperf3", "not JSON"))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(ParseError::Tool {
            tool: "iperf3",
            message: e.to_string(),
        });
    }
    Ok(v)
}

fn f64_at(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

/// Reads a TCP result from `iperf3 -c ... -J` output.
pub fn iperf3_tcp(out: &str) -> Result<IperfTcp, ParseError> {
    let v = iperf_json(out)?;
    let bps = f64_at(&v, &["end", "sum_received", "bits_per_second"])
        .ok_or_else(|| format_err("iperf3", "end.sum_received.bits_per_second"))?;
    Ok(IperfTcp {
        gbps: bps / 1e9,
        retransmits: f64_at(&v, &["end", "sum_sent", "retransmits"]).unwrap_or(0.0) as u64,
        client_cpu: f64_at(&v, &["end", "cpu_utilization_percent", "host_total"])
            .unwrap_or(f64::NAN),
        server_cpu: f64_at(&v, &["end", "cpu_utilization_percent", "remote_total"])
            .unwrap_or(f64::NAN),
    })
}

/// Reads a UDP result from `iperf3 -c ... -u -J` output (received = packets - lost, as the
/// server reported them back).
pub fn iperf3_udp(out: &str) -> Result<IperfUdp, ParseError> {
    let v = iperf_json(out)?;
    let recv = v
        .pointer("/end/sum_received")
        .or_else(|| v.pointer("/end/sum"))
        .ok_or_else(|| format_err("iperf3", "end.sum_received"))?;
    let packets = f64_at(recv, &["packets"]).ok_or_else(|| format_err("iperf3", "packets"))?;
    let lost = f64_at(recv, &["lost_packets"]).unwrap_or(0.0);
    let secs = f64_at(recv, &["seconds"])
        .filter(|s| *s > 0.0)
        .ok_or_else(|| format_err("iperf3", "seconds"))?;
    let sent_pps = v
        .pointer("/end/sum_sent")
        .and_then(|s| {
            Some(f64_at(s, &["packets"])? / f64_at(s, &["seconds"]).filter(|x| *x > 0.0)?)
        })
        .unwrap_or(f64::NAN);
    Ok(IperfUdp {
        received_pps: (packets - lost).max(0.0) / secs,
        sent_pps,
    })
}

/// A ping-pong result of `sockperf pp --full-rtt`, in microseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Sockperf {
    /// Average round-trip time.
    pub avg_us: f64,
    /// Median.
    pub p50_us: Option<f64>,
    /// 99th percentile.
    pub p99_us: Option<f64>,
}

/// Removes ANSI colour sequences (sockperf colours its summary lines).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn leading_number(s: &str) -> Option<f64> {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s[..end].parse().ok()
}

/// Reads `sockperf pp` output: `avg-rtt=`, and the 50th and 99th percentile lines.
pub fn sockperf(out: &str) -> Result<Sockperf, ParseError> {
    let text = strip_ansi(out);
    if let Some(l) = text.lines().find(|l| l.contains("ERROR")) {
        return Err(ParseError::Tool {
            tool: "sockperf",
            message: l
                .split_once("ERROR:")
                .map_or(l, |(_, m)| m)
                .trim()
                .to_string(),
        });
    }
    let avg_us = text
        .split("avg-rtt=")
        .nth(1)
        .and_then(leading_number)
        .ok_or_else(|| format_err("sockperf", "avg-rtt"))?;
    let pct = |p: &str| {
        text.lines()
            .find(|l| l.contains(&format!("percentile {p} =")))
            .and_then(|l| l.rsplit('=').next())
            .and_then(leading_number)
    };
    Ok(Sockperf {
        avg_us,
        p50_us: pct("50.000"),
        p99_us: pct("99.000"),
    })
}

/// Packets trafgen reports as sent (`N packets outgoing`, printed when it stops).
pub fn trafgen_sent(out: &str) -> Result<u64, ParseError> {
    out.lines()
        .find(|l| l.contains("packets outgoing"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format_err("trafgen", "packets outgoing"))
}

/// Interface packet counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkCounters {
    /// Received packets.
    pub rx_packets: u64,
    /// Transmitted packets.
    pub tx_packets: u64,
    /// Received packets dropped by the interface.
    pub rx_dropped: u64,
}

/// Reads the counters of the first interface in `ip -s -j link show dev IF` output.
pub fn ip_link_counters(out: &str) -> Result<LinkCounters, ParseError> {
    let v: Value = serde_json::from_str(out).map_err(|_| format_err("ip", "not JSON"))?;
    let s = v
        .get(0)
        .and_then(|l| l.get("stats64"))
        .ok_or_else(|| format_err("ip", "stats64"))?;
    let n = |path: &str| s.pointer(path).and_then(Value::as_u64);
    Ok(LinkCounters {
        rx_packets: n("/rx/packets").ok_or_else(|| format_err("ip", "rx.packets"))?,
        tx_packets: n("/tx/packets").ok_or_else(|| format_err("ip", "tx.packets"))?,
        rx_dropped: n("/rx/dropped").unwrap_or(0),
    })
}

/// Aggregate CPU time of all CPUs, in clock ticks, from the `cpu ` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// Ticks spent doing anything but idle and iowait.
    pub busy: u64,
    /// Ticks spent in softirq (where the kernel bridge, routing and NAT mostly run).
    pub softirq: u64,
    /// All ticks.
    pub total: u64,
}

/// Reads the aggregate `cpu` line of `/proc/stat`.
pub fn proc_stat(out: &str) -> Result<CpuTimes, ParseError> {
    let line = out
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| format_err("/proc/stat", "cpu line"))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    if f.len() < 8 {
        return Err(format_err("/proc/stat", "8 cpu fields"));
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    let total: u64 = f[..8].iter().sum();
    Ok(CpuTimes {
        busy: total - f[3] - f[4],
        softirq: f[6],
        total,
    })
}

/// User + system clock ticks of a process (all its threads) from `/proc/PID/stat`.
pub fn pid_stat_ticks(out: &str) -> Result<u64, ParseError> {
    // The command name (field 2) may contain spaces and ')': fields restart after the last ')'.
    let rest = out
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format_err("/proc/PID/stat", "comm"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let get = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok());
    match (get(11), get(12)) {
        (Some(u), Some(s)) => Ok(u + s),
        _ => Err(format_err("/proc/PID/stat", "utime/stime")),
    }
}

/// The name (comm) and user + system clock ticks of one thread, from
/// `/proc/PID/task/TID/stat`.
pub fn task_stat(out: &str) -> Result<(&str, u64), ParseError> {
    let comm = out
        .split_once('(')
        .and_then(|(_, r)| r.rsplit_once(')'))
        .map(|(c, _)| c)
        .ok_or_else(|| format_err("/proc/PID/stat", "comm"))?;
    Ok((comm, pid_stat_ticks(out)?))
}

/// User + system ticks summed over the threads (their `stat` texts) whose name starts with
/// `prefix`; None when no thread has such a name (or none could be read).
pub fn threads_ticks<'a>(stats: impl IntoIterator<Item = &'a str>, prefix: &str) -> Option<u64> {
    stats
        .into_iter()
        .filter_map(|s| task_stat(s).ok())
        .filter(|(comm, _)| comm.starts_with(prefix))
        .map(|(_, t)| t)
        .reduce(|a, b| a + b)
}

/// The CPU model from `/proc/cpuinfo` (`model name`, or `Hardware`/`cpu model` elsewhere).
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| matches!(k.trim(), "model name" | "Hardware" | "cpu model"))
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP1: &str = include_str!("testdata/iperf3_tcp1.json");
    const TCP4: &str = include_str!("testdata/iperf3_tcp4.json");
    const UDP64: &str = include_str!("testdata/iperf3_udp64.json");
    const REFUSED: &str = include_str!("testdata/iperf3_refused.json");
    const SP_TCP: &str = include_str!("testdata/sockperf_tcp.txt");
    const SP_UDP: &str = include_str!("testdata/sockperf_udp.txt");
    const SP_FAIL: &str = include_str!("testdata/sockperf_fail.txt");
    const TRAFGEN: &str = include_str!("testdata/trafgen.txt");
    const IP_S: &str = include_str!("testdata/ip_s_link.json");

    #[test]
    fn iperf3_tcp_samples() {
        let r = iperf3_tcp(TCP1).unwrap();
        assert!((r.gbps - 18.101_590_528).abs() < 1e-6, "{r:?}");
        assert_eq!(r.retransmits, 8545);
        assert!((r.client_cpu - 93.745).abs() < 0.01);
        assert!((r.server_cpu - 41.517).abs() < 0.01);
        let r4 = iperf3_tcp(TCP4).unwrap();
        assert!(r4.gbps > 1.0 && r4.gbps < 100.0, "{r4:?}");
    }

    #[test]
    fn iperf3_errors_are_reported() {
        assert_eq!(
            iperf3_tcp(REFUSED),
            Err(ParseError::Tool {
                tool: "iperf3",
                message: "unable to connect to server: Connection refused".into()
            })
        );
        assert!(matches!(
            iperf3_tcp("iperf3: error - unable to start"),
            Err(ParseError::Format { .. })
        ));
        assert!(matches!(iperf3_tcp("{}"), Err(ParseError::Format { .. })));
        assert!(matches!(iperf3_udp(REFUSED), Err(ParseError::Tool { .. })));
    }

    #[test]
    fn iperf3_udp_sample() {
        let r = iperf3_udp(UDP64).unwrap();
        let want = (233_300.0 - 25_925.0) / 1.000_093;
        assert!((r.received_pps - want).abs() < 1e-6, "{r:?}");
        assert!((r.sent_pps - 233_300.0 / 1.000_042).abs() < 1e-6);
    }

    #[test]
    fn sockperf_samples() {
        let t = sockperf(SP_TCP).unwrap();
        assert_eq!(t.avg_us, 14.378);
        assert_eq!(t.p50_us, Some(13.790));
        assert_eq!(t.p99_us, Some(18.246));
        let u = sockperf(SP_UDP).unwrap();
        assert!(u.avg_us > 0.0 && u.p99_us.is_some());
        assert_eq!(
            sockperf(SP_FAIL),
            Err(ParseError::Tool {
                tool: "sockperf",
                message: "Can`t connect socket (errno=111 Connection refused)".into()
            })
        );
        assert!(matches!(sockperf(""), Err(ParseError::Format { .. })));
    }

    #[test]
    fn ansi_sequences_are_removed() {
        assert_eq!(strip_ansi("a\u{1b}[2;35mb\u{1b}[0mc"), "abc");
        assert_eq!(strip_ansi("\u{1b}"), "");
    }

    #[test]
    fn trafgen_sample() {
        assert_eq!(trafgen_sent(TRAFGEN), Ok(284_928));
        assert!(trafgen_sent("Running! Hang up with ^C!").is_err());
    }

    #[test]
    fn ip_link_sample() {
        let c = ip_link_counters(IP_S).unwrap();
        assert_eq!(
            c,
            LinkCounters {
                rx_packets: 800_398,
                tx_packets: 235_626,
                rx_dropped: 0
            }
        );
        assert!(ip_link_counters("[]").is_err());
        assert!(ip_link_counters("Device \"x\" does not exist.").is_err());
    }

    #[test]
    fn proc_stat_sample() {
        let s =
            "cpu  13591 0 5129 137548 658 0 281 18 0 0\ncpu0 6202 0 2237 69924 108 0 171 7 0 0\n";
        let t = proc_stat(s).unwrap();
        assert_eq!(t.total, 13591 + 5129 + 137_548 + 658 + 281 + 18);
        assert_eq!(t.busy, 13591 + 5129 + 281 + 18);
        assert_eq!(t.softirq, 281);
        assert!(proc_stat("cpu0 1 2 3").is_err());
        assert!(proc_stat("cpu  1 2 3").is_err());
    }

    #[test]
    fn cpu_model_sample() {
        let s = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t: fpu\n";
        assert_eq!(cpu_model(s), Some("AMD EPYC".into()));
        assert_eq!(cpu_model("processor\t: 0\n"), None);
    }

    #[test]
    fn pid_stat_sample() {
        let s = "4242 (sluice (x) y) S 1 4242 4242 0 -1 4194560 1054 0 0 0 150 25 0 0 20 0 3 0 \
                 1234 5000000 500 18446744073709551615";
        assert_eq!(pid_stat_ticks(s), Ok(175));
        assert!(pid_stat_ticks("4242 (x) S 1").is_err());
        assert!(pid_stat_ticks("garbage").is_err());
    }

    #[test]
    fn worker_threads_ticks() {
        let t = |tid: u32, comm: &str, u: u64, s: u64| {
            format!("{tid} ({comm}) R 1 1 1 0 -1 4194560 10 0 0 0 {u} {s} 0 0 20 0 3 0 1 2 3")
        };
        let stats = [
            t(10, "sluice", 7, 3),
            t(11, "sluice-w0", 100, 50),
            t(12, "sluice-w1", 20, 30),
            t(13, "sluice-spares", 5, 5),
        ];
        assert_eq!(task_stat(&stats[1]), Ok(("sluice-w0", 150)));
        let texts = stats.iter().map(String::as_str);
        assert_eq!(threads_ticks(texts.clone(), "sluice-w"), Some(200));
        assert_eq!(threads_ticks(texts, "ovs"), None);
        assert_eq!(threads_ticks(["garbage"], "g"), None);
    }
}
