//! Where a measurement's cycles go (`--perf DIR`): while a row is measured, `perf record -a -g`
//! samples the whole machine (turned into a flame graph SVG with inferno when
//! `inferno-collapse-perf` and `inferno-flamegraph` are installed), and `perf stat` counts the
//! forwarder process's syscalls by kind, its context switches (each one a sleep and a
//! wake-up) and its CPU time; sluice's counters give the frames it forwarded meanwhile, so the
//! note says what each frame cost in syscalls and wake-ups. Hardware events (cache misses)
//! are counted too where the machine has them (a VM often does not: then they read "n/a").

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sluice_lab::lab::SluiceLaunch;

/// The events `perf stat` counts on the forwarder process, with the short names of the note.
pub const STAT_EVENTS: [(&str, &str); 11] = [
    ("task-clock", "cpu_ms"),
    ("context-switches", "cs"),
    ("raw_syscalls:sys_enter", "sys"),
    ("syscalls:sys_enter_recvfrom", "recv"),
    ("syscalls:sys_enter_sendto", "kick"),
    ("syscalls:sys_enter_sendmsg", "sendmsg"),
    ("syscalls:sys_enter_epoll_wait", "epoll"),
    ("syscalls:sys_enter_epoll_pwait", "epoll_p"),
    ("syscalls:sys_enter_sched_yield", "yield"),
    ("cache-misses", "llc_miss"),
    ("instructions", "insns"),
];

/// Sampling frequency of `perf record` (a prime, so it does not beat with periodic work).
const FREQ: &str = "997";

/// The threads a flame graph keeps (the first frame of a folded stack is its thread's name):
/// the forwarder, the traffic tools, idle and the softirq and worker kernel threads. On a
/// loaded machine the rest is other people's work; the `.data` file keeps everything.
pub const BED_THREADS: &str =
    "^(sluice|sluice-w[0-9]+|iperf3|sockperf|trafgen|swapper|ksoftirqd/[0-9]+|kworker/[^;]*);";

/// The name prefix of sluice's forwarding threads in folded stacks.
const WORKER: &str = "sluice-w";

/// What a sample of a worker thread was doing, by its stack: the first class that matches.
const CLASSES: [(&str, &[&str]); 5] = [
    (
        "copy",
        &[
            ";_copy_to_iter",
            ";_copy_from_iter",
            ";copy_user_generic",
            ";rep_movs_alternative",
            ";__pi_memcpy",
            ";skb_copy_bits",
            ";skb_copy_ubufs",
        ],
    ),
    ("softirq", &[";handle_softirqs", ";net_rx_action"]),
    (
        "sched",
        &[
            ";schedule",
            ";__schedule",
            ";do_sched_yield",
            ";finish_task_switch",
        ],
    ),
    ("syscall", &[";entry_SYSCALL_64", ";do_syscall_64"]),
    ("irq", &[";asm_", ";sysvec_"]),
];

/// Where the worker threads' samples went, from folded stacks (`inferno-collapse-perf`
/// output: `thread;frame;...;leaf count`): the share of each of [`CLASSES`] (a copy anywhere
/// in the stack counts as copy, before softirq and the rest) and "user" for stacks without
/// kernel entry, in % of the workers' samples; None without worker samples.
pub fn worker_breakdown(folded: &str) -> Option<Vec<(&'static str, f64)>> {
    let mut per = [0u64; CLASSES.len() + 1];
    for line in folded.lines().filter(|l| l.starts_with(WORKER)) {
        let Some((stack, n)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        let class = CLASSES
            .iter()
            .position(|(_, frames)| frames.iter().any(|f| stack.contains(f)))
            .unwrap_or(CLASSES.len());
        per[class] += n;
    }
    let total: u64 = per.iter().sum();
    (total > 0).then(|| {
        CLASSES
            .iter()
            .map(|(name, _)| *name)
            .chain(["user"])
            .zip(per)
            .map(|(name, n)| (name, 100.0 * n as f64 / total as f64))
            .collect()
    })
}

/// A file name stem for one measurement: the peer, the metric and the run, with everything
/// but letters, digits, `-` and `_` turned into `-`.
pub fn stem(peer: &str, metric: &str, run: usize) -> String {
    let clean: String = format!("{peer}-{metric}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut out = String::with_capacity(clean.len());
    for c in clean.chars() {
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    format!("{}-run{run}", out.trim_end_matches('-'))
}

/// `perf record`'s arguments: every CPU, call graphs, `dur` seconds into `data`.
pub fn record_args(data: &Path, dur: u32) -> Vec<String> {
    [
        "record",
        "-a",
        "-g",
        "-F",
        FREQ,
        "-q",
        "-o",
        &data.to_string_lossy(),
        "--",
        "sleep",
        &dur.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// `perf stat`'s arguments: [`STAT_EVENTS`] of process `pid` for `dur` seconds, CSV into `out`.
pub fn stat_args(out: &Path, pid: u32, dur: u32) -> Vec<String> {
    let events: Vec<&str> = STAT_EVENTS.iter().map(|(e, _)| *e).collect();
    [
        "stat",
        "-x",
        ",",
        "-e",
        &events.join(","),
        "-p",
        &pid.to_string(),
        "-o",
        &out.to_string_lossy(),
        "--",
        "sleep",
        &dur.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// The counts of `perf stat -x,` output, by event; events the machine does not support are
/// left out.
pub fn parse_stat(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut f = l.split(',');
            let value = f.next()?.trim().parse::<f64>().ok()?;
            let _unit = f.next()?;
            Some((f.next()?.trim().to_string(), value))
        })
        .collect()
}

/// The note of one profiled measurement: each counted event per frame (CPU time in us per
/// frame), or the raw counts when the frames are unknown.
pub fn note(counts: &[(String, f64)], frames: Option<u64>) -> String {
    let short = |e: &str| {
        STAT_EVENTS
            .iter()
            .find(|(name, _)| *name == e)
            .map_or(e.to_string(), |(_, s)| s.to_string())
    };
    let per = frames.filter(|&f| f > 0);
    let parts: Vec<String> = counts
        .iter()
        .map(|(e, v)| match (per, e.as_str()) {
            (Some(f), "task-clock") => format!("cpu_us/frame {:.2}", v * 1000.0 / f as f64),
            (Some(f), _) => format!("{}/frame {:.3}", short(e), v / f as f64),
            (None, _) => format!("{} {v:.0}", short(e)),
        })
        .collect();
    match per {
        Some(f) => format!("perf: {f} frames; {}", parts.join(" ")),
        None => format!("perf: {}", parts.join(" ")),
    }
}

/// Frames sluice received on all its ports, from its stats file (None for other forwarders).
pub fn frames_received(stats: &Path) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(stats).ok()?).ok()?;
    v["ports"]
        .as_array()?
        .iter()
        .map(|p| p["rx_packets"].as_u64())
        .sum()
}

/// One profiled measurement under way.
pub struct Profile {
    record: Option<Child>,
    stat: Option<Child>,
    data: PathBuf,
    stat_out: PathBuf,
    stats_file: PathBuf,
    frames0: Option<u64>,
    title: String,
}

fn spawn_perf(args: &[String]) -> Option<Child> {
    Command::new("perf")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

impl Profile {
    /// Starts recording for `dur` seconds into `dir/<stem>.data` and, when the forwarder is a
    /// process (`pid`), counting its events into `dir/<stem>.stat`; `lab_dir` is where
    /// sluice writes its stats file.
    pub fn start(dir: &Path, stem: &str, pid: Option<u32>, lab_dir: &Path, dur: u32) -> Profile {
        let _ = std::fs::create_dir_all(dir);
        let data = dir.join(format!("{stem}.data"));
        let stat_out = dir.join(format!("{stem}.stat"));
        let stats_file = SluiceLaunch::stats_path(&lab_dir.join("sluice.json"));
        Profile {
            record: spawn_perf(&record_args(&data, dur)),
            stat: pid.and_then(|p| spawn_perf(&stat_args(&stat_out, p, dur))),
            frames0: frames_received(&stats_file),
            data,
            stat_out,
            stats_file,
            title: stem.to_string(),
        }
    }

    /// Waits for perf, writes the flame graph next to the data (when inferno is installed)
    /// and returns the note of the counts.
    pub fn finish(mut self) -> String {
        for child in [self.record.take(), self.stat.take()].into_iter().flatten() {
            let mut child = child;
            let _ = child.wait();
        }
        // sluice writes its counters every 200 ms.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let frames = frames_received(&self.stats_file)
            .zip(self.frames0)
            .map(|(b, a)| b.saturating_sub(a));
        let svg = self.data.with_extension("svg");
        let folded = self.data.with_extension("folded");
        let graph = Command::new("sh")
            .args([
                "-c",
                "perf script -i \"$1\" 2>/dev/null | inferno-collapse-perf > \"$4\" && \
                 grep -E \"$5\" \"$4\" | inferno-flamegraph --minwidth 0.1 --title \"$3\" > \"$2\"",
                "sh",
            ])
            .arg(&self.data)
            .arg(&svg)
            .arg(&self.title)
            .arg(&folded)
            .arg(BED_THREADS)
            .status();
        let workers = std::fs::read_to_string(&folded)
            .ok()
            .and_then(|f| worker_breakdown(&f))
            .map_or_else(String::new, |b| {
                let parts: Vec<String> = b.iter().map(|(c, p)| format!("{c} {p:.0}%")).collect();
                format!("; workers' samples: {}", parts.join(" "))
            });
        let counts = std::fs::read_to_string(&self.stat_out)
            .map(|t| parse_stat(&t))
            .unwrap_or_default();
        let graph = match graph {
            Ok(s) if s.success() => format!("; flame graph {}", svg.display()),
            _ => "; no flame graph (inferno not installed?)".into(),
        };
        format!("{}{workers}{graph}", note(&counts, frames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_are_file_names() {
        assert_eq!(stem("sluice", "tcp1 a->b", 1), "sluice-tcp1-a-b-run1");
        assert_eq!(
            stem("iptables-nat", "nat_out tcp1 a->outside", 2),
            "iptables-nat-nat_out-tcp1-a-outside-run2"
        );
    }

    #[test]
    fn perf_command_lines() {
        let r = record_args(Path::new("d/x.data"), 5);
        assert_eq!(r[..3], ["record", "-a", "-g"]);
        assert_eq!(r[r.len() - 3..], ["--", "sleep", "5"]);
        assert!(r.windows(2).any(|w| w == ["-o", "d/x.data"]));
        let s = stat_args(Path::new("d/x.stat"), 42, 3);
        assert!(s.windows(2).any(|w| w == ["-p", "42"]));
        assert!(s
            .windows(2)
            .any(|w| w[0] == "-e" && w[1].contains("sys_enter_sendmsg")));
        assert_eq!(s[s.len() - 1], "3");
    }

    #[test]
    fn worker_samples_by_class() {
        let folded = "sluice-w0;runtime::run;__libc_sendmsg;entry_SYSCALL_64;__sys_sendmsg;_copy_from_iter 40\n\
                      sluice-w0;runtime::run;__libc_sendmsg;entry_SYSCALL_64;__sys_sendmsg;handle_softirqs;tcp_v4_rcv 10\n\
                      sluice-w1;runtime::run;sched_yield;entry_SYSCALL_64;do_sched_yield 20\n\
                      sluice-w1;runtime::run;__recv;entry_SYSCALL_64;__sys_recvfrom 10\n\
                      sluice-w1;runtime::run;Worker::process 20\n\
                      iperf3;write;entry_SYSCALL_64;_copy_from_iter 500\n";
        let b = worker_breakdown(folded).unwrap();
        let share = |c: &str| b.iter().find(|(n, _)| *n == c).unwrap().1;
        assert_eq!(share("copy"), 40.0);
        assert_eq!(share("softirq"), 10.0);
        assert_eq!(share("sched"), 20.0);
        assert_eq!(share("syscall"), 10.0);
        assert_eq!(share("irq"), 0.0);
        assert_eq!(share("user"), 20.0);
        assert!(worker_breakdown("iperf3;x 5\n").is_none());
    }

    #[test]
    fn stat_csv_counts_and_notes() {
        let text = "# started on Sun Dec  6\n\n\
                    4.00,msec,task-clock,2000,100.00,1.0,CPUs utilized\n\
                    1000,,context-switches,2000,100.00,0.5,K/sec\n\
                    <not supported>,,cache-misses,0,100.00,,\n\
                    4000,,syscalls:sys_enter_sendmsg,2000,100.00,,\n";
        let c = parse_stat(text);
        assert_eq!(c.len(), 3);
        assert_eq!(c[1], ("context-switches".to_string(), 1000.0));
        assert_eq!(
            note(&c, Some(2000)),
            "perf: 2000 frames; cpu_us/frame 2.00 cs/frame 0.500 sendmsg/frame 2.000"
        );
        assert_eq!(note(&c, None), "perf: cpu_ms 4 cs 1000 sendmsg 4000");
    }
}
