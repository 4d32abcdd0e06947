//! `sluice bench`: the end-to-end benchmark as a user command. It translates its flags and
//! runs `sluice-e2e-bench` (installed next to `sluice`), which owns the harness: the harness
//! builds its topologies with the namespace lab (test support, not linked into `sluice`), so
//! the measuring code lives there and this command stays a thin front end.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use sluice_api::clock;

use crate::sibling;

/// Every peer `--peers` knows, in the default order.
const ALL_PEERS: &str = "kernel,sluice,sluice-userspace,iptables-nat,slirp4netns,pasta,ovs";
/// Every test group.
const ALL_TESTS: &str = "tcp,tcp4,udp64,rr,nat";

/// Flags of `sluice bench`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BenchArgs {
    /// A short run (under 2 minutes): kernel, sluice and sluice-userspace, tcp and rr, 1 run
    /// of 2 s; explicit flags still win.
    #[arg(long)]
    pub quick: bool,
    /// Peers, in order: kernel, sluice (as sluiced runs it by default: the flow offload on,
    /// established flows forwarded by the kernel), sluice-userspace (`--offload off`: every
    /// frame through its userspace workers), iptables-nat, slirp4netns, pasta, ovs (default:
    /// all; a peer whose tool is missing is skipped with a line saying how to install it).
    #[arg(long)]
    pub peers: Option<String>,
    /// Test groups: tcp, tcp4, udp64, rr, nat (default: these), flows, endpoints (how the cost
    /// grows with tracked flows and with endpoints on the bridge), tcp6, tcp4x6, udp6, rr6,
    /// nat6 (the same over IPv6 on a dual-stack network, NAT66).
    #[arg(long)]
    pub tests: Option<String>,
    /// Seconds per measurement (default 5).
    #[arg(long)]
    pub duration: Option<u32>,
    /// Runs per peer; peers alternate within each run (default 3).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Directory for results.json, results.md and the SVG charts (default:
    /// `sluice-bench-YYYYMMDD-HHMMSS` in the current directory).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Worker threads of the measured sluice dataplane (default: one per CPU, as sluiced).
    #[arg(long)]
    pub sluice_workers: Option<usize>,
    /// The harness binary (default: `sluice-e2e-bench` next to this binary).
    #[arg(long)]
    pub bench_bin: Option<PathBuf>,
    /// Runs the rootless shape instead, as this unprivileged user: sluice-slirp (next to this
    /// binary), slirp4netns and pasta serving an `unshare -r -n` namespace (`--peers` may
    /// pick them, sluice-slirp-smoltcp too); prints a table per run.
    #[arg(long, value_name = "USER")]
    pub rootless: Option<String>,
    /// The overlay shape instead: two hosts over VXLAN, sluice and sluice-userspace against
    /// the kernel's vxlan device and bridge (TCP 1 and 4 streams, TCP_RR); prints its tables.
    #[arg(long)]
    pub overlay: bool,
    /// Profiles every measurement into DIR: a flame graph SVG per row and run (`perf record
    /// -a -g`, inferno) and sluice's syscalls, context switches and CPU per frame (`perf stat`).
    #[arg(long, value_name = "DIR")]
    pub perf: Option<PathBuf>,
}

/// The `sluice-e2e-bench` arguments for `args`; `me` is the sluice binary to measure and
/// `now` the Unix time that names the default output directory.
pub fn e2e_args(args: &BenchArgs, me: &Path, now: u64) -> Vec<OsString> {
    let (peers, tests, duration, runs) = if args.quick {
        ("kernel,sluice,sluice-userspace", "tcp,rr", 2, 1)
    } else {
        (ALL_PEERS, ALL_TESTS, 5, 3)
    };
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("sluice-bench-{}", clock::utc_stamp(now))));
    let mut v: Vec<OsString> = Vec::new();
    let mut flag = |name: &str, value: OsString| {
        v.push(name.into());
        v.push(value);
    };
    if let Some(user) = &args.rootless {
        flag("--rootless", user.into());
        if let Some(p) = &args.peers {
            flag("--peers", p.into());
        }
        flag(
            "--duration",
            args.duration.unwrap_or(duration).to_string().into(),
        );
        flag("--runs", args.runs.unwrap_or(runs).to_string().into());
        flag("--sluice-bin", me.into());
        return v;
    }
    flag("--peers", args.peers.as_deref().unwrap_or(peers).into());
    flag("--tests", args.tests.as_deref().unwrap_or(tests).into());
    flag(
        "--duration",
        args.duration.unwrap_or(duration).to_string().into(),
    );
    flag("--runs", args.runs.unwrap_or(runs).to_string().into());
    flag("--sluice-bin", me.into());
    if let Some(w) = args.sluice_workers {
        flag("--sluice-workers", w.to_string().into());
    }
    flag("--output", output.into());
    if let Some(d) = &args.perf {
        flag("--perf", d.into());
    }
    if args.overlay {
        v.push("--overlay".into());
    }
    v
}

/// Runs `sluice bench`: replaces this process by the harness.
pub fn run(args: BenchArgs) -> Result<()> {
    let me = std::env::current_exe().context("locating the sluice binary")?;
    let bin = sibling::path("sluice-e2e-bench", "sluice-bench", args.bench_bin.clone())?;
    let mut c = Command::new(bin);
    c.args(e2e_args(&args, &me, clock::now_unix()));
    sibling::exec(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: Vec<OsString>) -> Vec<String> {
        v.into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn quick_and_full_defaults() {
        let me = Path::new("bin/sluice");
        let quick = BenchArgs {
            quick: true,
            sluice_workers: Some(1),
            ..BenchArgs::default()
        };
        assert_eq!(
            strings(e2e_args(&quick, me, 0)).join(" "),
            "--peers kernel,sluice,sluice-userspace --tests tcp,rr --duration 2 --runs 1 --sluice-bin bin/sluice \
             --sluice-workers 1 --output sluice-bench-19700101-000000"
        );
        let full = strings(e2e_args(&BenchArgs::default(), me, 1_700_000_000)).join(" ");
        assert!(full.starts_with(
            "--peers kernel,sluice,sluice-userspace,iptables-nat,slirp4netns,pasta,ovs --tests tcp,tcp4,udp64,rr,nat \
             --duration 5 --runs 3"
        ));
        assert!(full.ends_with("--output sluice-bench-20231114-221320"));
        assert!(
            !full.contains("--sluice-workers"),
            "sluiced's default: one per CPU"
        );
    }

    #[test]
    fn explicit_flags_win_over_quick() {
        let a = BenchArgs {
            quick: true,
            tests: Some("tcp".into()),
            runs: Some(2),
            output: Some("out".into()),
            sluice_workers: Some(2),
            ..BenchArgs::default()
        };
        let v = strings(e2e_args(&a, Path::new("s"), 0));
        let get = |f: &str| {
            let i = v.iter().position(|x| x == f).unwrap();
            v[i + 1].clone()
        };
        assert_eq!(get("--tests"), "tcp");
        assert_eq!(get("--runs"), "2");
        assert_eq!(get("--duration"), "2");
        assert_eq!(get("--output"), "out");
        assert_eq!(get("--sluice-workers"), "2");
        assert!(!v.contains(&"--overlay".to_string()));
        assert!(!v.contains(&"--perf".to_string()));
        let profiled = BenchArgs {
            perf: Some("prof".into()),
            ..a.clone()
        };
        let v = strings(e2e_args(&profiled, Path::new("s"), 0));
        let i = v.iter().position(|x| x == "--perf").unwrap();
        assert_eq!(v[i + 1], "prof");
        let overlay = BenchArgs { overlay: true, ..a };
        let v = strings(e2e_args(&overlay, Path::new("s"), 0));
        assert_eq!(v.last().map(String::as_str), Some("--overlay"));
    }

    #[test]
    fn rootless_shape_passes_through() {
        let a = BenchArgs {
            rootless: Some("alice".into()),
            quick: true,
            ..BenchArgs::default()
        };
        assert_eq!(
            strings(e2e_args(&a, Path::new("bin/sluice"), 0)).join(" "),
            "--rootless alice --duration 2 --runs 1 --sluice-bin bin/sluice"
        );
        let b = BenchArgs {
            rootless: Some("bob".into()),
            peers: Some("sluice-slirp,sluice-slirp-smoltcp".into()),
            ..BenchArgs::default()
        };
        assert_eq!(
            strings(e2e_args(&b, Path::new("s"), 0)).join(" "),
            "--rootless bob --peers sluice-slirp,sluice-slirp-smoltcp --duration 5 --runs 3 \
             --sluice-bin s"
        );
    }
}
