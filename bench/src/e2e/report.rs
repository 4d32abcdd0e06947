//! Pure statistics and rendering: per-forwarder medians with min/max, the sluice/kernel ratio,
//! the text table and the section appended to `RESULTS.md`.

use std::fmt::Write as _;

use super::{metrics, CpuUse, Metric, Sample, Shape, TestKind};

/// Median, minimum and maximum of a set of values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

/// Median/min/max of the finite values; None when there is none.
pub fn stats(values: &[f64]) -> Option<Stats> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stats {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

/// What one forwarder did on one metric over all runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Statistics of the successful runs.
    pub stats: Option<Stats>,
    /// Successful runs.
    pub ok: usize,
    /// All runs.
    pub runs: usize,
    /// Median CPU use over the successful runs.
    pub cpu: CpuUse,
    /// Median forwarding cost over the successful runs ([`super::Unit::cost`]).
    pub cost: Option<f64>,
    /// Error of the first failed run, if any failed.
    pub first_error: Option<String>,
    /// Every run's sample, in run order (for `results.json`).
    pub samples: Vec<Sample>,
    /// The peer does not run this metric (not on its shape, or not its rows): "n/a".
    pub na: bool,
}

/// Summarises the samples of one forwarder on one metric.
pub fn cell(samples: &[Sample]) -> Cell {
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.value.is_ok()).collect();
    let values: Vec<f64> = ok
        .iter()
        .filter_map(|s| s.value.as_ref().ok().copied())
        .collect();
    let med = |f: fn(&CpuUse) -> Option<f64>| {
        let v: Vec<f64> = ok.iter().filter_map(|s| f(&s.cpu)).collect();
        stats(&v).map(|s| s.median)
    };
    Cell {
        stats: stats(&values),
        ok: ok.len(),
        runs: samples.len(),
        cpu: CpuUse {
            forwarder_pct: med(|c| c.forwarder_pct),
            softirq_pct: med(|c| c.softirq_pct),
            busy_pct: med(|c| c.busy_pct),
            forwarding_pct: med(|c| c.forwarding_pct),
            background_pct: med(|c| c.background_pct),
        },
        cost: stats(&ok.iter().filter_map(|s| s.cost).collect::<Vec<_>>()).map(|s| s.median),
        first_error: samples.iter().find_map(|s| s.value.as_ref().err().cloned()),
        samples: samples.to_vec(),
        na: false,
    }
}

/// One row of the report: a metric and each forwarder's cell (in the report's forwarder order).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The metric.
    pub metric: Metric,
    /// Cells, one per forwarder.
    pub cells: Vec<Cell>,
}

fn bridge_shaped(peers: &[String]) -> impl Iterator<Item = usize> + '_ {
    peers
        .iter()
        .enumerate()
        .filter(|(_, p)| Shape::of_peer(p) == Shape::Bridge)
        .map(|(i, _)| i)
}

/// The peers of sluice, each compared with the kernel path: `sluice` as users run it (the
/// flow offload on) and `sluice-userspace` (`--offload=off`).
const SLUICE_PEERS: [&str; 2] = ["sluice", "sluice-userspace"];

/// The columns compared with the others, each in a ratio column: the sluice peers measured
/// (the first only, when no other bridge-shaped column is left to compare with), else the
/// second column of the bridge shape; none with fewer than two bridge-shaped columns.
pub fn subjects(peers: &[String]) -> Vec<usize> {
    let bridge: Vec<usize> = bridge_shaped(peers).collect();
    if bridge.len() < 2 {
        return Vec::new();
    }
    let sluice: Vec<usize> = bridge
        .iter()
        .copied()
        .filter(|i| SLUICE_PEERS.contains(&peers[*i].as_str()))
        .collect();
    match sluice.len() {
        0 => vec![bridge[1]],
        n if n == bridge.len() => vec![sluice[0]],
        _ => sluice,
    }
}

/// The column a row's ratios are taken against: the first measured bridge-shaped column that
/// is not a subject (the kernel path: `kernel`, or `iptables-nat` on NAT rows when that peer
/// runs them).
pub fn baseline(peers: &[String], row: &Row) -> Option<usize> {
    let subjects = subjects(peers);
    if subjects.is_empty() {
        return None;
    }
    bridge_shaped(peers)
        .find(|i| !subjects.contains(i) && row.cells.get(*i).is_some_and(|c| c.runs > 0))
}

/// True when a namespace <-> host peer's figure of `metric` compares with the kernel bridge's:
/// the same tool measures one forwarding hop between the client namespace and the server. Not
/// for udp64 (the bridge row counts trafgen's frames at b's interface, the namespace <-> host
/// row what the iperf3 server received) nor for the NAT rows (no such path).
pub fn cross_shape_comparable(metric: &Metric) -> bool {
    *metric != metrics::UDP64 && TestKind::of(metric) != Some(TestKind::Nat)
}

/// The column a cell of column `i` is compared with: the row's baseline for the bridge shape,
/// the measured `kernel` column for a namespace <-> host peer
/// when [`cross_shape_comparable`].
pub fn reference(peers: &[String], row: &Row, i: usize) -> Option<usize> {
    match peers.get(i).map(|p| Shape::of_peer(p)) {
        Some(Shape::Bridge) => baseline(peers, row),
        Some(Shape::NsHost) if cross_shape_comparable(&row.metric) => peers
            .iter()
            .position(|p| p == "kernel")
            .filter(|k| row.cells.get(*k).is_some_and(|c| c.runs > 0)),
        _ => None,
    }
}

/// `a / b` of the medians, when both exist and `b` is not zero.
pub fn ratio(a: &Cell, b: &Cell) -> Option<f64> {
    match (a.stats, b.stats) {
        (Some(a), Some(b)) if b.median != 0.0 => Some(a.median / b.median),
        _ => None,
    }
}

/// A figure with three significant digits at most (1234, 12.3, 1.23), as tables and charts show it.
pub(crate) fn num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// "median [min-max]" (with "n/N ok" when runs failed), the failure, or "n/a".
pub fn value_text(c: &Cell) -> String {
    if c.na {
        return "n/a".into();
    }
    match c.stats {
        Some(s) => {
            let mut t = format!("{} [{}-{}]", num(s.median), num(s.min), num(s.max));
            if c.ok < c.runs {
                let _ = write!(t, " ({}/{} ok)", c.ok, c.runs);
            }
            t
        }
        None if c.runs == 0 => "-".into(),
        None => format!(
            "FAIL: {}",
            c.first_error
                .as_deref()
                .unwrap_or("no value")
                .replace('|', "/")
        ),
    }
}

/// CPU text of a cell: forwarder process, softirq and total busy, in % of one CPU.
pub fn cpu_text(c: &CpuUse) -> String {
    let mut parts = Vec::new();
    if let Some(p) = c.forwarder_pct {
        parts.push(format!("proc {p:.0}%"));
    }
    if let Some(p) = c.softirq_pct {
        parts.push(format!("si {p:.0}%"));
    }
    if let Some(p) = c.busy_pct {
        parts.push(format!("busy {p:.0}%"));
    }
    if let Some(p) = c.background_pct {
        parts.push(format!("(bg {p:.0}%)"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// The cost cell: the median forwarding CPU per unit of work with its unit, '-' without.
pub fn cost_text(c: &Cell, unit: super::Unit) -> String {
    match c.cost {
        Some(x) if !c.na => format!("{} {}", num(x), unit.cost_label()),
        _ => "-".into(),
    }
}

/// The results table in Markdown (readable as plain text too). With two or more bridge-shaped
/// peers a column per subject (`sluice`, `sluice-userspace`) has its ratio to each row's
/// baseline (the kernel path); each namespace <-> host peer (slirp4netns, pasta) gets a column with its ratio to the
/// kernel bridge where [`cross_shape_comparable`], '-' elsewhere.
pub fn table(forwarders: &[String], rows: &[Row]) -> String {
    let subjects = subjects(forwarders);
    let host_peers: Vec<usize> = (0..forwarders.len())
        .filter(|i| Shape::of_peer(&forwarders[*i]) == Shape::NsHost)
        .collect();
    let kernel = forwarders.iter().position(|p| p == "kernel");
    let mut head = vec!["test".to_string(), "unit".to_string()];
    for f in forwarders {
        head.push(format!("{f} median [min-max]"));
        head.push(format!("{f} CPU"));
        head.push(format!("{f} cost"));
    }
    let base = bridge_shaped(forwarders)
        .find(|i| !subjects.contains(i))
        .unwrap_or(0);
    for s in &subjects {
        head.push(format!("{}/{}", forwarders[*s], forwarders[base]));
    }
    if kernel.is_some() {
        for i in &host_peers {
            head.push(format!("{}/kernel", forwarders[*i]));
        }
    }
    let ratio_text = |r: &Row, i: usize, base: Option<usize>| match (
        base.and_then(|b| r.cells.get(b)),
        r.cells.get(i),
    ) {
        (Some(k), Some(c)) => ratio(c, k).map_or("-".into(), |x| format!("{x:.2}")),
        _ => "-".into(),
    };
    let mut lines = vec![head];
    for r in rows {
        let mut l = vec![r.metric.name.to_string(), r.metric.unit_text()];
        for c in &r.cells {
            l.push(value_text(c));
            l.push(cpu_text(&c.cpu));
            l.push(cost_text(c, r.metric.unit));
        }
        for s in &subjects {
            l.push(ratio_text(r, *s, baseline(forwarders, r)));
        }
        if kernel.is_some() {
            for i in &host_peers {
                l.push(ratio_text(r, *i, reference(forwarders, r, *i)));
            }
        }
        lines.push(l);
    }
    let cols = lines[0].len();
    let width: Vec<usize> = (0..cols)
        .map(|i| {
            lines
                .iter()
                .map(|l| l.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let fmt_line = |l: &[String]| {
        let cells: Vec<String> = (0..cols)
            .map(|i| {
                let c = l.get(i).map_or("", String::as_str);
                format!("{c:<w$}", w = width[i])
            })
            .collect();
        format!("| {} |", cells.join(" | "))
    };
    let mut out = fmt_line(&lines[0]);
    out.push('\n');
    let sep: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&format!("|-{}-|\n", sep.join("-|-")));
    for l in &lines[1..] {
        out.push_str(&fmt_line(l));
        out.push('\n');
    }
    out
}

/// Where and how a run was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    /// UTC date and time of the start.
    pub date: String,
    /// `uname -r`.
    pub kernel: String,
    /// Number of online CPUs.
    pub nproc: usize,
    /// CPU model name.
    pub cpu_model: String,
    /// The exact command line.
    pub command: String,
}

/// The Markdown section appended to `RESULTS.md` for one run.
pub fn results_section(
    info: &RunInfo,
    forwarders: &[String],
    rows: &[Row],
    skipped: &[String],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n## End-to-end run {}\n", info.date);
    let _ = writeln!(
        s,
        "- machine: kernel {}, {} CPUs, {}",
        info.kernel, info.nproc, info.cpu_model
    );
    let _ = writeln!(s, "- command: `{}`", info.command);
    let _ = writeln!(
        s,
        "- forwarders measured alternately in each run; CPU columns are medians in % of one CPU: \
         proc = forwarder process (sluice, slirp4netns, pasta, ovs-vswitchd), si = softirq \
         (all CPUs: the kernel's forwarding), busy = all CPUs, bg = all CPUs just before the \
         measurement (load from outside the benchmark); cost = forwarding CPU (sluice's \
         worker threads, the process of ovs/slirp4netns/pasta, softirq of all CPUs for the \
         kernel peers, both for sluice with the flow offload) per Gbit/s, per packet or per round \
         trip, the median of the runs' costs; the ratios are each sluice peer over the kernel \
         path (kernel, or iptables-nat on the NAT rows when that peer measures them)"
    );
    let host: Vec<&str> = forwarders
        .iter()
        .filter(|p| Shape::of_peer(p) == Shape::NsHost)
        .map(String::as_str)
        .collect();
    if forwarders
        .iter()
        .any(|p| SLUICE_PEERS.contains(&p.as_str()))
    {
        let _ = writeln!(
            s,
            "- sluice: as users run it (sluiced's defaults, the flow offload on: established \
             flows forwarded by the kernel); sluice-userspace: `--offload=off`, every frame \
             through sluice's userspace workers"
        );
    }
    if forwarders.iter().any(|p| p == "ovs") {
        let _ = writeln!(
            s,
            "- ovs: Open vSwitch userspace datapath (netdev, AF_PACKET on the veths, userspace \
             TSO on) bridging a and b, no gateway or NAT: the bridge rows only"
        );
    }
    if !host.is_empty() {
        let _ = writeln!(
            s,
            "- {}: their own shape (namespace <-> host): \"a->b\" is the namespace to a server \
             on the host's loopback through the tool's gateway 10.0.2.2 (the host is a \
             namespace of the benchmark); udp64 is iperf3 -u -l 64 (received by the server) \
             there; the <peer>/kernel columns compare them with the kernel bridge's a->b on \
             tcp1, tcp4, tcp_rr and udp_rr, '-' on udp64 (another generator and counter) and \
             where there is no kernel figure; n/a = not measured on that peer's shape",
            host.join(", ")
        );
    }
    for k in skipped {
        let _ = writeln!(s, "- skipped: {k}");
    }
    s.push('\n');
    s.push_str(&table(forwarders, rows));
    s
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a Unix time.
pub fn utc_date(unix_secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = sluice_api::clock::utc_parts(unix_secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

/// Quotes a command line argument for the shell when needed.
pub fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:@%+".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Better, Unit};
    use super::*;

    fn sample(v: Result<f64, &str>) -> Sample {
        Sample {
            value: v.map_err(String::from),
            note: String::new(),
            cpu: CpuUse {
                forwarder_pct: None,
                softirq_pct: Some(10.0),
                busy_pct: Some(150.0),
                forwarding_pct: Some(10.0),
                background_pct: Some(4.0),
            },
            cost: v.ok().map(|x| 10.0 / x),
        }
    }

    const TCP: Metric = Metric {
        name: "tcp1 a->b",
        unit: Unit::Gbps,
        better: Better::Higher,
    };

    #[test]
    fn stats_odd_even_and_nan() {
        assert_eq!(
            stats(&[3.0, 1.0, 2.0]),
            Some(Stats {
                median: 2.0,
                min: 1.0,
                max: 3.0
            })
        );
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(stats(&[f64::NAN, 5.0]).unwrap().median, 5.0);
        assert_eq!(stats(&[]), None);
    }

    #[test]
    fn cells_count_failures() {
        let c = cell(&[
            sample(Ok(10.0)),
            sample(Err("iperf3: refused")),
            sample(Ok(12.0)),
        ]);
        assert_eq!(c.ok, 2);
        assert_eq!(c.runs, 3);
        assert_eq!(c.stats.unwrap().median, 11.0);
        assert_eq!(c.first_error.as_deref(), Some("iperf3: refused"));
        assert_eq!(value_text(&c), "11.0 [10.0-12.0] (2/3 ok)");
        assert_eq!(cpu_text(&c.cpu), "si 10% busy 150% (bg 4%)");
        assert_eq!(cpu_text(&CpuUse::default()), "-");
        let f = cell(&[sample(Err("a|b"))]);
        assert_eq!(value_text(&f), "FAIL: a/b");
        assert_eq!(value_text(&cell(&[])), "-");
        assert_eq!(c.samples.len(), 3);
        // The median of the two runs' costs: 10 / 10 and 10 / 12.
        assert!((c.cost.unwrap() - (1.0 + 10.0 / 12.0) / 2.0).abs() < 1e-9);
        assert_eq!(cost_text(&c, Unit::Gbps), "0.92 %CPU/Gbit/s");
        assert_eq!(cost_text(&f, Unit::Gbps), "-");
        assert_eq!(cost_text(&na(), Unit::Gbps), "-");
    }

    #[test]
    fn ratio_and_table() {
        let k = cell(&[sample(Ok(10.0)), sample(Ok(14.0))]);
        let s = cell(&[sample(Ok(6.0)), sample(Ok(6.0))]);
        assert_eq!(ratio(&s, &k), Some(0.5));
        assert_eq!(ratio(&s, &cell(&[])), None);
        let fw = vec!["kernel".to_string(), "sluice".to_string()];
        let t = table(
            &fw,
            &[Row {
                metric: TCP,
                cells: vec![k, s],
            }],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("kernel median [min-max]") && lines[0].contains("sluice/kernel"));
        assert!(lines[1].starts_with("|--"));
        assert!(lines[2].contains("12.0 [10.0-14.0]"));
        assert!(lines[2].contains("Gbit/s (higher is better)"));
        let cells: Vec<&str> = lines[2].split('|').map(str::trim).collect();
        assert_eq!(cells[cells.len() - 2], "0.50");
        assert!(lines
            .iter()
            .all(|l| l.chars().count() == lines[0].chars().count()));
    }

    /// The last `n` cells of a table line, trimmed.
    fn last_cells(line: &str, n: usize) -> Vec<String> {
        let cells: Vec<&str> = line.trim_end().trim_end_matches('|').split('|').collect();
        cells[cells.len() - n..]
            .iter()
            .map(|c| c.trim().to_string())
            .collect()
    }

    #[test]
    fn both_sluice_peers_get_a_ratio_to_the_kernel_path() {
        let peers: Vec<String> = ["kernel", "sluice", "sluice-userspace", "iptables-nat"]
            .map(String::from)
            .to_vec();
        assert_eq!(subjects(&peers), [1, 2]);
        let row = |metric, v: [Option<f64>; 4]| Row {
            metric,
            cells: v
                .iter()
                .map(|x| x.map_or_else(|| cell(&[]), |x| cell(&[sample(Ok(x))])))
                .collect(),
        };
        let tcp = row(metrics::TCP1, [Some(10.0), Some(11.0), Some(8.0), None]);
        // iptables-nat takes the NAT rows: the kernel column has no run there.
        let nat = row(
            metrics::NAT_OUT_TCP1,
            [None, Some(9.0), Some(6.0), Some(10.0)],
        );
        assert_eq!(baseline(&peers, &tcp), Some(0));
        assert_eq!(
            baseline(&peers, &nat),
            Some(3),
            "never the other sluice peer"
        );
        let t = table(&peers, &[tcp, nat]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0]
            .trim_end()
            .ends_with("| sluice/kernel | sluice-userspace/kernel |"));
        assert_eq!(last_cells(lines[2], 2), ["1.10", "0.80"]);
        assert_eq!(last_cells(lines[3], 2), ["0.90", "0.60"]);

        // The two sluice peers alone: the default path over the userspace path.
        let two = vec!["sluice".to_string(), "sluice-userspace".to_string()];
        assert_eq!(subjects(&two), [0]);
        let t = table(
            &two,
            &[Row {
                metric: metrics::TCP1,
                cells: vec![cell(&[sample(Ok(12.0))]), cell(&[sample(Ok(8.0))])],
            }],
        );
        let head = t.lines().next().unwrap().trim_end();
        assert!(head.ends_with("| sluice/sluice-userspace |"), "{t}");
        assert!(t.lines().nth(2).unwrap().contains("| 1.50 "), "{t}");
    }

    fn na() -> Cell {
        Cell {
            na: true,
            ..cell(&[])
        }
    }

    #[test]
    fn other_shapes_get_their_own_ratio_to_the_kernel_bridge() {
        let peers: Vec<String> = ["kernel", "sluice", "slirp4netns", "pasta", "ovs"]
            .map(String::from)
            .to_vec();
        let row = |metric, v: [f64; 5]| Row {
            metric,
            cells: v.iter().map(|x| cell(&[sample(Ok(*x))])).collect(),
        };
        let tcp = row(metrics::TCP1, [10.0, 8.0, 2.0, 5.0, 4.0]);
        let udp = row(metrics::UDP64, [200.0, 300.0, 80.0, 100.0, 150.0]);
        let nat = Row {
            metric: metrics::NAT_OUT_TCP1,
            cells: vec![
                cell(&[sample(Ok(10.0))]),
                cell(&[sample(Ok(9.0))]),
                na(),
                na(),
                na(),
            ],
        };
        assert_eq!(subjects(&peers), [1]);
        assert_eq!(baseline(&peers, &tcp), Some(0));
        assert_eq!(reference(&peers, &tcp, 2), Some(0));
        assert_eq!(
            reference(&peers, &tcp, 4),
            Some(0),
            "ovs: the bridge baseline"
        );
        assert_eq!(reference(&peers, &udp, 3), None, "another generator");
        assert_eq!(reference(&peers, &nat, 2), None);
        let t = table(&peers, &[tcp, udp, nat]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0]
            .trim_end()
            .ends_with("| sluice/kernel | slirp4netns/kernel | pasta/kernel |"));
        assert_eq!(last_cells(lines[2], 3), ["0.80", "0.20", "0.50"]);
        assert_eq!(last_cells(lines[3], 3), ["1.50", "-", "-"]);
        assert_eq!(lines[4].matches("| n/a ").count(), 3);
        assert_eq!(last_cells(lines[4], 3)[0], "0.90");

        // Without a second bridge-shaped peer there is no sluice/kernel column.
        let two = vec!["kernel".to_string(), "pasta".to_string()];
        assert!(subjects(&two).is_empty());
        let t = table(
            &two,
            &[Row {
                metric: metrics::TCP_RR,
                cells: vec![cell(&[sample(Ok(40.0))]), cell(&[sample(Ok(100.0))])],
            }],
        );
        assert!(t
            .lines()
            .next()
            .unwrap()
            .trim_end()
            .ends_with("| pasta/kernel |"));
        assert!(t
            .lines()
            .nth(2)
            .unwrap()
            .trim_end()
            .ends_with("| 2.50         |"));
    }

    #[test]
    fn single_forwarder_has_no_ratio() {
        let t = table(
            &["kernel".to_string()],
            &[Row {
                metric: TCP,
                cells: vec![cell(&[sample(Ok(1.0))])],
            }],
        );
        assert!(!t.contains("/kernel"));
        assert_eq!(t.lines().next().unwrap().matches('|').count(), 6);
        assert!(t.contains("| kernel cost "));
        assert!(t.contains("| 10.0 %CPU/Gbit/s "));
    }

    #[test]
    fn section_has_machine_and_command() {
        let info = RunInfo {
            date: utc_date(0),
            kernel: "6.18".into(),
            nproc: 2,
            cpu_model: "AMD EPYC".into(),
            command: "sluice-e2e-bench --runs 1".into(),
        };
        let s = results_section(
            &info,
            &["kernel".into()],
            &[],
            &["sluice: no binary".into()],
        );
        assert!(s.contains("## End-to-end run 1970-01-01 00:00:00 UTC"));
        assert!(s.contains("kernel 6.18, 2 CPUs, AMD EPYC"));
        assert!(s.contains("`sluice-e2e-bench --runs 1`"));
        assert!(s.contains("- skipped: sluice: no binary"));
        assert!(!s.contains("sluice-userspace"), "no sluice peer measured");
        let s = results_section(&info, &["kernel".into(), "sluice".into()], &[], &[]);
        assert!(
            s.contains("- sluice: as users run it")
                && s.contains("sluice-userspace: `--offload=off`"),
            "{s}"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_date(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("--tests"), "--tests");
        assert_eq!(shell_quote("tcp,rr"), "tcp,rr");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
