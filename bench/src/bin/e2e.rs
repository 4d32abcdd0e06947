//! `sluice-e2e-bench`: docker's default network built in namespaces once per peer (kernel
//! bridge + iptables, sluice; OVS, slirp4netns and pasta on their own shapes) and measured
//! alternately; prints a table, and appends it to RESULTS.md or writes `results.json`,
//! `results.md` and SVG charts into `--output DIR`. `sluice bench` runs this binary.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::Parser;
use sluice_bench::e2e::harness::{self, Plan, Progress};
use sluice_bench::e2e::output::{self, Results};
use sluice_bench::e2e::peers;
use sluice_bench::e2e::report::{results_section, table, utc_date};
use sluice_bench::e2e::TestKind;
use sluice_bench::run;
use sluice_lab::lab::SluiceLaunch;

/// End-to-end benchmark: kernel bridge + iptables vs sluice, in network namespaces.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Test groups: tcp, tcp4, udp64, rr, nat; and how the cost grows: flows (NAT with 1k and
    /// 100k flows established before the run), endpoints (a bridge with 64 endpoints, one with
    /// 10,000 learned MACs); the same over IPv6 on a dual-stack network (NAT66): tcp6, tcp4x6,
    /// udp6, rr6, nat6.
    #[arg(long, value_delimiter = ',', default_value = "tcp,tcp4,udp64,rr,nat")]
    tests: Vec<TestKind>,
    /// Runs per forwarder (forwarders alternate within each run).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    duration: u32,
    /// The sluice binary (default: `sluice` next to this binary).
    #[arg(long)]
    sluice_bin: Option<PathBuf>,
    /// Peers to measure, in order: kernel, sluice (as users run it: no `--offload` flag, so
    /// the flow offload is on, sluiced's default: established flows forwarded in the kernel),
    /// sluice-userspace (`--offload=off`: every frame through its userspace workers),
    /// iptables-nat (the kernel's NAT path: takes the nat rows), slirp4netns and pasta
    /// (namespace <-> host), ovs (userspace datapath, bridge tests); a peer whose tool is
    /// missing is listed as skipped.
    #[arg(
        long,
        alias = "forwarders",
        value_delimiter = ',',
        default_value = "kernel,sluice,sluice-userspace"
    )]
    peers: Vec<String>,
    /// Worker threads of the sluice dataplane (default: one per CPU, as sluiced runs it).
    #[arg(long)]
    sluice_workers: Option<usize>,
    /// More arguments for `sluice dataplane`, space-separated (e.g. "--rx-ring=v3"); they
    /// replace the sluiced defaults the harness passes for the same flags.
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    sluice_args: String,
    /// Markdown file the results section is appended to (default without `--output`: the
    /// crate's RESULTS.md).
    #[arg(long)]
    results: Option<PathBuf>,
    /// Directory for results.json, results.md and one SVG chart per test (created if needed).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Profiles every measurement into DIR: `perf record -a -g` (a flame graph SVG per row and
    /// run when inferno is installed) and `perf stat` of sluice's process (syscalls, context
    /// switches and CPU per frame, in the row's note).
    #[arg(long, value_name = "DIR")]
    perf: Option<PathBuf>,
    /// Runs the rootless shape instead, as this unprivileged user: sluice-slirp (next to
    /// `--sluice-bin`, or to this binary), slirp4netns and pasta each serving an `unshare -r -n` namespace; prints a table.
    /// `--peers` may pick and order them (sluice-slirp, sluice-slirp-smoltcp, slirp4netns,
    /// pasta); the runs alternate them.
    #[arg(long, value_name = "USER")]
    rootless: Option<String>,
    /// Runs the overlay shape instead: two hosts over VXLAN, sluice (as users run it, the flow
    /// offload on) and sluice-userspace (`--offload=off`) against the kernel's vxlan device and
    /// bridge (TCP 1 and 4 streams, TCP_RR); prints a table per sluice peer.
    #[arg(long)]
    overlay: bool,
    /// Internal (the v6 RR rows' server, run inside a namespace): echoes on ADDR.
    #[arg(long, hide = true, value_name = "ADDR")]
    rr_server: Option<std::net::SocketAddr>,
    /// Internal (the v6 RR rows' client): ping-pongs with ADDR for `--duration` seconds.
    #[arg(long, hide = true, value_name = "ADDR")]
    rr_client: Option<std::net::SocketAddr>,
    /// Internal: the RR server or client uses UDP (else TCP).
    #[arg(long, hide = true)]
    rr_udp: bool,
}

/// The v6 RR rows' own tool (`--rr-server`, `--rr-client`); false when not asked for.
fn run_rr_tool(args: &Args) -> anyhow::Result<bool> {
    use sluice_bench::e2e::rr;
    if let Some(addr) = args.rr_server {
        rr::serve(addr, args.rr_udp).with_context(|| format!("RR server on {addr}"))?;
        return Ok(true);
    }
    let Some(addr) = args.rr_client else {
        return Ok(false);
    };
    let dur = std::time::Duration::from_secs(args.duration.into());
    let mut rtts =
        rr::ping_pong(addr, args.rr_udp, dur).with_context(|| format!("RR to {addr}"))?;
    print!("{}", rr::summary(&mut rtts));
    Ok(true)
}

/// Shows progress on stderr: on a terminal the status line is rewritten in place.
fn show_progress(tty: bool, p: Progress) {
    match (p, tty) {
        (Progress::Status(s), true) => eprint!("\r\x1b[K{s}"),
        (Progress::Status(_), false) => {}
        (Progress::Line(l), true) => eprint!("\r\x1b[K{l}\n"),
        (Progress::Line(l), false) => eprintln!("{l}"),
    }
}

/// The overlay shape (`--overlay`): prints its table.
fn run_overlay(args: &Args) -> anyhow::Result<()> {
    use sluice_bench::e2e::overlay;
    let bin = match &args.sluice_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("sluice"),
    };
    let plan = overlay::OverlayPlan {
        launch: SluiceLaunch {
            bin,
            args: peers::launch_args(args.sluice_workers.or(Some(1)), &args.sluice_args),
        },
        runs: args.runs,
        duration: args.duration,
    };
    let runs = overlay::run(&plan, |l| eprintln!("{l}"));
    print!("{}", overlay::table(&runs));
    Ok(())
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let command = run::command_line();
    if args.runs == 0 || args.duration == 0 {
        bail!("--runs and --duration must be at least 1");
    }
    if run_rr_tool(&args)? {
        return Ok(());
    }
    run::require_root()?;
    if let Some(user) = args.rootless {
        use sluice_bench::e2e::rootless::Stack;
        let here = match &args.sluice_bin {
            Some(p) => p.clone(),
            None => std::env::current_exe().context("locating this binary")?,
        };
        let plan = sluice_bench::e2e::rootless::RootlessPlan {
            stacks: Stack::chosen(&args.peers)
                .into_iter()
                .map(|s| (s, s.binary(&here)))
                .collect(),
            user,
            duration: args.duration,
        };
        for _ in 0..args.runs {
            print!(
                "{}",
                sluice_bench::e2e::rootless::table(&sluice_bench::e2e::rootless::run(&plan))
            );
        }
        return Ok(());
    }
    if args.overlay {
        return run_overlay(&args);
    }
    let sluice_bin = match args.sluice_bin {
        Some(p) => p,
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("sluice"),
    };
    let launch = SluiceLaunch {
        bin: sluice_bin,
        args: peers::launch_args(args.sluice_workers, &args.sluice_args),
    };
    let (peers, peer_skips) =
        peers::resolve_peers(&args.peers, &args.tests, &launch, peers::have_tool)
            .map_err(anyhow::Error::msg)?;
    for s in &peer_skips {
        eprintln!("{s}");
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGTERM, h);
        libc::signal(libc::SIGHUP, h);
    }
    let date = utc_date(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    let plan = Plan {
        tests: args.tests,
        runs: args.runs,
        duration: args.duration,
        peers,
        perf: args.perf,
    };
    // SAFETY: isatty has no preconditions.
    let tty = unsafe { libc::isatty(2) } == 1;
    let outcome = harness::run(&plan, &STOP, |p| show_progress(tty, p));
    let mut skipped = peer_skips;
    skipped.extend(outcome.skipped.iter().cloned());
    for s in &skipped {
        println!("skipped: {s}");
    }
    if outcome.forwarders.is_empty() {
        bail!("no forwarder could be measured");
    }
    println!();
    print!("{}", table(&outcome.forwarders, &outcome.rows));
    let info = harness::run_info(command, date);
    if let Some(dir) = &args.output {
        let written = output::write_dir(
            dir,
            &Results {
                info: &info,
                peers: &outcome.forwarders,
                rows: &outcome.rows,
                skipped: &skipped,
                interrupted: outcome.interrupted,
            },
        )
        .with_context(|| format!("writing into {}", dir.display()))?;
        println!();
        for p in written {
            println!("wrote {}", p.display());
        }
    }
    let results = match (args.results, &args.output) {
        (Some(r), _) => r,
        (None, Some(_)) => return Ok(()),
        (None, None) => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md")),
    };
    if outcome.interrupted {
        skipped.push("interrupted before all runs completed".into());
    }
    let section = results_section(&info, &outcome.forwarders, &outcome.rows, &skipped);
    let fresh = !results.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&results)
        .with_context(|| format!("opening {}", results.display()))?;
    if fresh {
        writeln!(
            f,
            "# End-to-end benchmark results\n\nAppended by `sluice-e2e-bench`; compare only \
             figures from one section (measured side by side in one run)."
        )?;
    }
    f.write_all(section.as_bytes())?;
    println!("\nappended to {}", results.display());
    Ok(())
}
