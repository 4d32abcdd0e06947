//! The overlay shape: two hosts (namespaces joined by an underlay veth pair) with one endpoint
//! each on an overlay network (VNI 4096, MTU 1450, the endpoints' offloads on), forwarded by
//! sluice (`sluice dataplane` on each host, static remote tables, see
//! `sluice_lab::lab::overlay`) or by the kernel (a vxlan device and a bridge on each host), on
//! the same underlay. Measured from endpoint `ea` to `eb`: TCP with one and four streams
//! (iperf3) and TCP request/response (sockperf), then TCP with one stream over IPv6, with the
//! forwarding CPU per unit of work (the cost column: both dataplanes' worker threads for sluice,
//! softirq time for the kernel, both for sluice with the flow offload). `sluice` is sluice as
//! users run it, the flow offload on (its default): established overlay flows wrapped and
//! unwrapped by its TC program; `sluice-userspace` keeps every frame in userspace
//! (`--offload=off`). The peers alternate within each run, each on a topology built afresh.

use std::time::{Duration, Instant};

use sluice_lab::lab::overlay::{self, EP_B, EP_B6};
use sluice_lab::lab::{Lab, SluiceLaunch};

use super::measure::{clock_ticks, read_proc, settle, worker_ticks};
use super::{parse, streams, Better, CpuUse, ForwarderTicks, Metric, Sample, Unit};

/// The forwarders of the overlay shape, in report order.
pub const PEERS: [&str; 3] = ["kernel", "sluice", "sluice-userspace"];

/// The rows of the overlay shape.
pub const METRICS: [Metric; 4] = [
    Metric {
        name: "overlay tcp1 ea->eb",
        unit: Unit::Gbps,
        better: Better::Higher,
    },
    Metric {
        name: "overlay tcp4 ea->eb",
        unit: Unit::Gbps,
        better: Better::Higher,
    },
    Metric {
        name: "overlay tcp_rr ea->eb",
        unit: Unit::Us,
        better: Better::Lower,
    },
    Metric {
        name: "overlay tcp1 v6 ea->eb",
        unit: Unit::Gbps,
        better: Better::Higher,
    },
];

/// The port of the first iperf3 server on `eb`'s IPv4 address (the four-stream row uses it and
/// the three after it).
const IPERF_PORT: u16 = 5201;

/// The port of the iperf3 server on `eb`'s IPv6 address.
const IPERF6_PORT: u16 = 5211;

/// The sockperf server's port on `eb`.
const SOCKPERF_PORT: u16 = 11111;

/// What to run.
#[derive(Clone, Debug)]
pub struct OverlayPlan {
    /// How each host's sluice dataplane starts.
    pub launch: SluiceLaunch,
    /// Runs; the peers alternate within each.
    pub runs: usize,
    /// Seconds per measurement.
    pub duration: u32,
}

/// One peer's samples of one run, in [`METRICS`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct OverlayRun {
    /// Index into [`PEERS`].
    pub peer: usize,
    /// One sample per metric.
    pub samples: Vec<Sample>,
}

fn lab_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Worker ticks of all `pids` together; None when one has none (the kernel peer has no pid).
fn workers_of(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| worker_ticks(Some(*p))).sum()
}

/// One timed measurement of `m` from `ea`, with the CPU it took (with the softirq time of all
/// CPUs when the peer hands flows to the kernel: `offload`).
fn sample(lab: &Lab, pids: &[u32], offload: bool, m: &Metric, dur: u32, hz: f64) -> Sample {
    let stat = || read_proc("/proc/stat").and_then(|s| parse::proc_stat(&s).ok());
    let (s0, w0, t0) = (stat(), workers_of(pids), Instant::now());
    let value = run_tool(lab, m, dur);
    let (elapsed, w1, s1) = (t0.elapsed().as_secs_f64(), workers_of(pids), stat());
    let ticks = ForwarderTicks {
        process: None,
        workers: w0.zip(w1),
        kernel_offload: offload,
    };
    let cpu = match (s0, s1) {
        (Some(a), Some(b)) => CpuUse::between(&a, &b, ticks, hz, elapsed),
        _ => CpuUse::default(),
    };
    Sample::new(value, cpu, m.unit)
}

/// The client command of `m` (iperf3 or sockperf, from `ea` to the servers on `eb`; the first
/// of the four-stream row's four clients).
pub fn client_args(m: &Metric, dur: u32) -> Vec<String> {
    let v6 = m.name.contains("v6");
    let ip = if v6 {
        EP_B6.to_string()
    } else {
        EP_B.to_string()
    };
    if m.unit != Unit::Us {
        return streams::client(&ip, if v6 { IPERF6_PORT } else { IPERF_PORT }, dur);
    }
    let (t, d, p) = (
        (dur + 15).to_string(),
        dur.to_string(),
        SOCKPERF_PORT.to_string(),
    );
    [
        "timeout",
        &t,
        "sockperf",
        "pp",
        "--tcp",
        "-i",
        &ip,
        "-p",
        &p,
        "-m",
        "64",
        "-t",
        &d,
        "--full-rtt",
    ]
    .map(String::from)
    .to_vec()
}

/// Runs the client of `m` (the four clients of the four-stream row); the figure and a note.
fn run_tool(lab: &Lab, m: &Metric, dur: u32) -> Result<(f64, String), String> {
    if m.name.contains("tcp4") {
        let r = streams::run(lab, "ea", &EP_B.to_string(), IPERF_PORT, dur)?;
        return Ok((r.gbps, format!("retr {}", r.retransmits)));
    }
    let args = client_args(m, dur);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = lab.exec_output("ea", &args).map_err(lab_err)?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    if m.unit == Unit::Us {
        let err = String::from_utf8_lossy(&o.stderr);
        let r = parse::sockperf(&format!("{out}\n{err}")).map_err(lab_err)?;
        return Ok((r.avg_us, format!("p99 {:.1}us", r.p99_us.unwrap_or(0.0))));
    }
    let r = parse::iperf3_tcp(&out).map_err(lab_err)?;
    Ok((r.gbps, format!("retr {}", r.retransmits)))
}

/// Builds the overlay for peer `peer` (an index into [`PEERS`]), starts the servers on `eb`
/// and measures every metric.
fn measure_peer(plan: &OverlayPlan, peer: usize, hz: f64) -> Result<Vec<Sample>, String> {
    let mut lab = Lab::new("ovb").map_err(lab_err)?;
    overlay::wire(&mut lab).map_err(lab_err)?;
    let launch = match PEERS[peer] {
        "sluice" => Some(super::peers::as_users_run_it(&plan.launch)),
        "sluice-userspace" => Some(super::peers::userspace(&plan.launch)),
        _ => None,
    };
    let offloads = launch
        .as_ref()
        .is_some_and(|l| super::peers::offloads(&l.args));
    let pids: Vec<u32> = if let Some(launch) = launch {
        let hosts = overlay::start_sluice(&mut lab, &launch).map_err(lab_err)?;
        hosts.into_iter().map(|(pid, _)| pid).collect()
    } else {
        overlay::start_kernel(&mut lab).map_err(lab_err)?;
        Vec::new()
    };
    lab.wait_ping("ea", EP_B, Duration::from_secs(10))
        .map_err(lab_err)?;
    lab.wait_ping6("ea", EP_B6, Duration::from_secs(10))
        .map_err(lab_err)?;
    let (ip, ip6) = (EP_B.to_string(), EP_B6.to_string());
    let (sp, p6) = (SOCKPERF_PORT.to_string(), IPERF6_PORT.to_string());
    lab.spawn("eb", &["iperf3", "-s", "-B", &ip], "iperf3")
        .map_err(lab_err)?;
    for (cmd, port) in streams::extra_servers(IPERF_PORT, Some(&ip)) {
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        lab.spawn("eb", &cmd, &format!("iperf3-{port}"))
            .map_err(lab_err)?;
    }
    lab.spawn("eb", &["iperf3", "-s", "-B", &ip6, "-p", &p6], "iperf3-v6")
        .map_err(lab_err)?;
    lab.spawn(
        "eb",
        &["sockperf", "sr", "--tcp", "-i", &ip, "-p", &sp],
        "sockperf",
    )
    .map_err(lab_err)?;
    for port in streams::ports(IPERF_PORT).chain([IPERF6_PORT, SOCKPERF_PORT]) {
        lab.wait_listen("eb", port, Duration::from_secs(5))
            .map_err(lab_err)?;
    }
    Ok(METRICS
        .iter()
        .map(|m| {
            settle(hz);
            sample(&lab, &pids, offloads, m, plan.duration, hz)
        })
        .collect())
}

/// Runs the plan: in each run, each peer on a fresh topology; `progress` hears one line per
/// peer and run.
pub fn run(plan: &OverlayPlan, mut progress: impl FnMut(String)) -> Vec<OverlayRun> {
    let hz = clock_ticks();
    let mut out = Vec::new();
    for r in 0..plan.runs {
        for (peer, name) in PEERS.iter().enumerate() {
            progress(format!("overlay run {}/{}: {name}", r + 1, plan.runs));
            let samples = measure_peer(plan, peer, hz).unwrap_or_else(|e| {
                METRICS
                    .iter()
                    .map(|_| Sample {
                        value: Err(e.clone()),
                        note: String::new(),
                        cpu: CpuUse::default(),
                        cost: None,
                    })
                    .collect()
            });
            out.push(OverlayRun { peer, samples });
        }
    }
    out
}

/// The median of `v` (None when empty).
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (n > 0).then(|| (v[(n - 1) / 2] + v[n / 2]) / 2.0)
}

/// The runs as markdown tables, one per sluice peer that ran: per metric, the kernel's and
/// that peer's median value and cost, the peer's value over the kernel's, and every run's value.
pub fn table(runs: &[OverlayRun]) -> String {
    (1..PEERS.len())
        .filter(|p| runs.iter().any(|r| r.peer == *p))
        .map(|p| table_against_kernel(runs, p))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One peer's table (see [`table`]).
fn table_against_kernel(runs: &[OverlayRun], peer: usize) -> String {
    let name = PEERS[peer];
    let mut s = format!(
        "| metric | kernel | {name} | {name}/kernel | kernel cost | {name} cost | cost unit | runs (kernel; {name}) |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let f = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.2}"));
    for (i, m) in METRICS.iter().enumerate() {
        let of = |peer: usize| {
            runs.iter()
                .filter(move |r| r.peer == peer)
                .filter_map(move |r| r.samples.get(i))
        };
        let values = |peer| median(of(peer).filter_map(|s| s.value.clone().ok()).collect());
        let costs = |peer| median(of(peer).filter_map(|s| s.cost).collect());
        let all = |peer| {
            of(peer)
                .map(|s| match &s.value {
                    Ok(v) => format!("{v:.2}"),
                    Err(e) => format!("n/a ({e})"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (k, sl) = (values(0), values(peer));
        s += &format!(
            "| {} ({}) | {} | {} | {} | {} | {} | {} | {}; {} |\n",
            m.name,
            m.unit_text(),
            f(k),
            f(sl),
            f(k.zip(sl).map(|(k, s)| s / k)),
            f(costs(0)),
            f(costs(peer)),
            m.unit.cost_label(),
            all(0),
            all(peer),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_and_table() {
        let c = client_args(&METRICS[1], 5);
        assert_eq!(&c[2..7], ["iperf3", "-c", "10.20.0.3", "-p", "5201"]);
        let rr = client_args(&METRICS[2], 5);
        assert!(rr.contains(&"--tcp".to_string()) && rr.contains(&"sockperf".to_string()));
        let v6 = client_args(&METRICS[3], 5);
        assert_eq!(&v6[2..7], ["iperf3", "-c", "fd00:20::3", "-p", "5211"]);
        let ok = |v: f64, cost| Sample {
            value: Ok(v),
            note: String::new(),
            cpu: CpuUse::default(),
            cost,
        };
        let runs = vec![
            OverlayRun {
                peer: 0,
                samples: vec![
                    ok(2.0, Some(50.0)),
                    ok(3.0, None),
                    ok(40.0, None),
                    ok(1.0, None),
                ],
            },
            OverlayRun {
                peer: 1,
                samples: vec![
                    ok(3.0, Some(40.0)),
                    ok(4.0, None),
                    ok(30.0, None),
                    ok(1.0, None),
                ],
            },
            OverlayRun {
                peer: 1,
                samples: vec![
                    ok(5.0, Some(20.0)),
                    ok(4.0, None),
                    ok(20.0, None),
                    ok(3.0, None),
                ],
            },
        ];
        let t = table(&runs);
        assert!(
            t.contains("| overlay tcp1 ea->eb (Gbit/s (higher is better)) | 2.00 | 4.00 | 2.00 | 50.00 | 30.00 | %CPU/Gbit/s | 2.00; 3.00, 5.00 |"),
            "{t}"
        );
        assert!(
            t.contains(
                "| overlay tcp1 v6 ea->eb (Gbit/s (higher is better)) | 1.00 | 2.00 | 2.00 |"
            ),
            "{t}"
        );
        assert!(!t.contains("sluice-userspace"), "{t}");
        let mut with_userspace = runs.clone();
        with_userspace.push(OverlayRun {
            peer: 2,
            samples: vec![
                ok(6.0, Some(10.0)),
                ok(8.0, None),
                ok(25.0, None),
                ok(2.0, None),
            ],
        });
        let t = table(&with_userspace);
        assert!(
            t.contains("| overlay tcp1 ea->eb (Gbit/s (higher is better)) | 2.00 | 6.00 | 3.00 | 50.00 | 10.00 | %CPU/Gbit/s | 2.00; 6.00 |"),
            "{t}"
        );
        assert!(t.contains("| runs (kernel; sluice-userspace) |"), "{t}");
        assert!(t.contains("| sluice/kernel |"), "{t}");
        assert!(t.contains("| sluice-userspace/kernel |"), "{t}");
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
    }
}
