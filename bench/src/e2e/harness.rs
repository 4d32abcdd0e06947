//! Runs the benchmark: builds one topology per peer (docker-like, OVS bridge, namespace <->
//! host), starts the servers, then measures every metric on every peer alternately, run after
//! run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::bed::Bed;
use super::measure::{
    clock_ticks, measure_with_cpu, prepare, read_proc, select_metrics, settle, UdpGen,
};
use super::peers::{have_tool, peer_unavailable, Peer};
use super::profile::{stem, Profile};
use super::report::{cell, Cell, Row, RunInfo};
use super::{metrics, parse, CpuUse, Metric, Sample, TestKind};

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
    /// Profile every measurement into this directory (`--perf`: [`super::profile`]).
    pub perf: Option<PathBuf>,
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
                let bed = bed.for_metric(m);
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
                let perf = plan
                    .perf
                    .as_deref()
                    .map(|d| (d, stem(name, m.name, run + 1)));
                let s = measure_alone(&beds, bed, m, gen, (plan.duration, hz), perf);
                done += 1;
                progress(Progress::Line(&format!(
                    "[{done}/{total}] run {}/{} {name:<16} {:<26} {} {} {}",
                    run + 1,
                    plan.runs,
                    m.name,
                    match &s.value {
                        Ok(v) => format!("{v:.2}"),
                        Err(e) => format!("FAIL ({e})"),
                    },
                    m.unit_text(),
                    [
                        s.note.clone(),
                        super::report::cpu_text(&s.cpu),
                        s.cost.map_or_else(String::new, |c| format!(
                            "cost {} {}",
                            super::report::num(c),
                            m.unit.cost_label()
                        ))
                    ]
                    .join("; ")
                )));
                samples[mi][bi].push(s);
            }
        }
    }
    for (_, bed) in &beds {
        for pid in bed.pids() {
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

/// Measures `m` on `bed` (one of `beds`, or a peer's wide bed) with every other forwarder
/// frozen (idle forwarders that poll would steal CPU from the one measured), after what
/// the metric needs is in place and the machine has settled; profiled into `perf`'s directory
/// under its file stem when asked.
fn measure_alone(
    beds: &[(&Peer, Bed)],
    bed: &Bed,
    m: &Metric,
    gen: UdpGen,
    (dur, hz): (u32, f64),
    perf: Option<(&Path, String)>,
) -> Sample {
    for (_, other) in beds {
        for pid in other.pids() {
            other.lab.pause(pid);
        }
    }
    if let Some(pid) = bed.pid() {
        bed.lab.resume(pid);
    }
    let prepared = match prepare(bed, m) {
        Ok(p) => p,
        Err(e) => {
            return Sample {
                value: Err(e),
                note: String::new(),
                cpu: CpuUse::default(),
                cost: None,
            }
        }
    };
    let background = settle(hz);
    let profile = perf.map(|(dir, stem)| Profile::start(dir, &stem, bed.pid(), bed.lab.dir(), dur));
    let mut s = measure_with_cpu(bed, *m, gen, dur, hz);
    s.cpu.background_pct = background;
    if let Some(p) = profile {
        s.note = format!("{}; {}", s.note, p.finish());
    }
    if let Some(p) = prepared {
        s.note = format!("{p}; {}", s.note);
    }
    s
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
    fn time_left_estimates() {
        assert_eq!(time_left(0, 4, 0.0, 2), 16.0);
        assert_eq!(time_left(2, 4, 10.0, 2), 10.0);
        assert_eq!(time_left(4, 4, 20.0, 2), 0.0);
        assert_eq!(fmt_secs(42.4), "42s");
        assert_eq!(fmt_secs(65.0), "1m05s");
    }
}
