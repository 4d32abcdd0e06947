//! `sluice demo`: the main job. Builds a docker-like topology in namespaces with sluice as the
//! forwarder, shows bridging, the gateway, outbound NAPT, a published port and the counters,
//! then a short side-by-side benchmark against the kernel bridge; removes everything, also on
//! Ctrl-C.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use sluice_control::lab::{DockerLike, DockerLikeSpec, Forwarder, Publish, SluiceLaunch, OUTSIDE};
use sluice_dataplane::config::L4Proto;

use crate::bench::{self, BenchArgs};

/// Flags of `sluice demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// The end-to-end benchmark binary (default: `sluice-e2e-bench` next to this binary).
    #[arg(long)]
    bench_bin: Option<PathBuf>,
    /// Skip the short benchmark.
    #[arg(long)]
    no_bench: bool,
    /// Where the benchmark writes results.json, results.md and its SVG charts (default: a new
    /// directory under the system's temporary directory).
    #[arg(long)]
    bench_output: Option<PathBuf>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted: removing everything the demo created");
    }
    Ok(())
}

fn step(title: &str) -> Result<()> {
    check_interrupt()?;
    println!("\n== {title}");
    Ok(())
}

fn show(label: &str, out: &str) {
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        println!("   {label} | {line}");
    }
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces: run it as root (sudo)");
    }
    let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGHUP, handler);
    }
    let me = std::env::current_exe().context("locating the sluice binary")?;
    let spec = DockerLikeSpec {
        publish: vec![Publish {
            proto: L4Proto::Tcp,
            host_port: 8080,
            endpoint: "a".into(),
            target_port: 80,
        }],
        ..DockerLikeSpec::default()
    };
    println!("sluice demo: two containers (a, b) on a docker-like network 172.17.0.0/16, an");
    println!("'outside' host at 198.18.0.2; sluice runs in the switch namespace as gateway");
    println!("172.17.0.1 with NAPT to the uplink address 198.18.0.1 and port 8080 -> a:80.");
    let mut launch = SluiceLaunch::new(&me);
    launch.args.push("--workers=1".into());
    let mut topo = DockerLike::build("demo", spec, Forwarder::Sluice(launch))
        .context("building the topology")?;
    let b = topo.ip("b")?;

    step("bridging: a pings b through sluice's learning bridge")?;
    show(
        "a",
        &topo
            .lab
            .exec("a", &["ping", "-c", "3", "-i", "0.2", &b.to_string()])?,
    );

    step("gateway: a pings its gateway, answered by sluice itself")?;
    let gw = topo.spec.gateway().to_string();
    show(
        "a",
        &topo.lab.exec("a", &["ping", "-c", "2", "-i", "0.2", &gw])?,
    );

    step("NAPT: a connects to the outside host; the outside sees sluice's uplink address")?;
    let outside = topo.spec.outside_ip().to_string();
    let mut lab_procs = Vec::new();
    lab_procs.push(topo.lab.spawn(
        OUTSIDE,
        &[
            "socat",
            "TCP-LISTEN:9000,reuseaddr,fork",
            "SYSTEM:echo you are $SOCAT_PEERADDR",
        ],
        "demo-outside",
    )?);
    topo.lab
        .wait_listen(OUTSIDE, 9000, std::time::Duration::from_secs(5))?;
    show(
        "a",
        &topo.lab.exec(
            "a",
            &["socat", "-T", "3", "-", &format!("TCP:{outside}:9000")],
        )?,
    );
    show(
        "a",
        &topo
            .lab
            .exec("a", &["ping", "-c", "2", "-i", "0.2", &outside])?,
    );

    step("published port: the outside reaches 198.18.0.1:8080, forwarded to a:80")?;
    lab_procs.push(topo.lab.spawn(
        "a",
        &[
            "socat",
            "TCP-LISTEN:80,reuseaddr,fork",
            "SYSTEM:echo hello from container a at $SOCAT_SOCKADDR port $SOCAT_SOCKPORT",
        ],
        "demo-a80",
    )?);
    topo.lab
        .wait_listen("a", 80, std::time::Duration::from_secs(5))?;
    let up = topo.spec.uplink_ip().addr.to_string();
    show(
        "outside",
        &topo.lab.exec(
            OUTSIDE,
            &["socat", "-T", "3", "-", &format!("TCP:{up}:8080")],
        )?,
    );

    step("counters (sluice stats)")?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    match topo.sluice_stats() {
        Some(stats) => print_stats(&stats),
        None => println!("   (no counters yet)"),
    }
    for pid in lab_procs {
        topo.lab.stop(pid);
    }
    drop(topo);

    if args.no_bench {
        println!("\nDone; everything the demo created is removed.");
        return Ok(());
    }
    step("short benchmark (sluice bench --quick): the same topology on the kernel bridge and on sluice, alternately")?;
    let output = args.bench_output.unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "sluice-demo-bench-{}",
            sluice_control::clock::utc_stamp(sluice_control::clock::now_unix())
        ))
    });
    let bench = BenchArgs {
        quick: true,
        output: Some(output.clone()),
        sluice_workers: 1,
        bench_bin: args.bench_bin,
        ..BenchArgs::default()
    };
    let status = bench::command(&bench)?
        .status()
        .context("running the benchmark")?;
    if !status.success() {
        bail!("the benchmark failed ({status})");
    }
    println!(
        "\nDone; the namespaces are removed. Charts and figures: {}",
        output.display()
    );
    Ok(())
}

fn print_stats(stats: &serde_json::Value) {
    println!(
        "   {:<14} {:>10} {:>12} {:>10} {:>12}",
        "port", "rx pkts", "rx bytes", "tx pkts", "tx bytes"
    );
    for p in stats["ports"].as_array().into_iter().flatten() {
        println!(
            "   {:<14} {:>10} {:>12} {:>10} {:>12}",
            p["name"].as_str().unwrap_or("?"),
            p["rx_packets"].as_u64().unwrap_or(0),
            p["rx_bytes"].as_u64().unwrap_or(0),
            p["tx_packets"].as_u64().unwrap_or(0),
            p["tx_bytes"].as_u64().unwrap_or(0)
        );
    }
    println!("   conntrack flows: {}", stats["conntrack_flows"]);
    println!("   fdb entries: {}", stats["fdb_entries"]);
    println!("   drops by reason: {}", stats["drops"]);
}
