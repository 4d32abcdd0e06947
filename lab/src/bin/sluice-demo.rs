//! `sluice-demo`, run by `sluice demo`: the main job. Starts sluiced in namespaces, creates a network and connects
//! two container namespaces with the CLI, shows ping by name (embedded DNS), the gateway,
//! outbound NAPT, a published port and the counters, then a short side-by-side benchmark
//! against the kernel bridge (`sluice bench --quick`); removes everything, also on Ctrl-C.
//! It lives in the test-support crate because it builds its namespaces with the lab, which no
//! production binary links; `sluice demo` execs it from the directory `sluice` is in.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use sluice_api::api::EndpointView;
use sluice_lab::daemonlab::{DaemonLab, OUTSIDE_IP, UPLINK_IP};

/// Build namespaces, attach them to sluice, show bridging, NAT, a published port, the counters
/// and a short benchmark against the kernel bridge; then remove everything.
#[derive(Parser, Debug)]
#[command(name = "sluice demo", bin_name = "sluice demo")]
struct DemoArgs {
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

/// Set by SIGINT, SIGTERM or SIGHUP once the demo runs.
static INTERRUPTED: OnceLock<&'static AtomicBool> = OnceLock::new();

fn check_interrupt() -> Result<()> {
    if INTERRUPTED.get().is_some_and(|i| i.load(Ordering::Relaxed)) {
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

/// Every failure ends as one line on stderr and exit code 1 (clap's own errors exit with 2).
fn main() -> std::process::ExitCode {
    match run(DemoArgs::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: DemoArgs) -> Result<()> {
    if !sluice_sys::is_root() {
        bail!("the demo creates network namespaces: run it as root (sudo)");
    }
    INTERRUPTED.get_or_init(sluice_sys::catch_termination);
    let me = std::env::current_exe().context("locating the sluice-demo binary")?;
    let bin_dir = me
        .parent()
        .context("locating the directory of the sluice binaries")?
        .to_path_buf();
    println!("sluice demo: sluiced runs in namespace 'host' (uplink 192.0.2.2/24 towards an");
    println!(
        "'outside' namespace at {OUTSIDE_IP}); the sluice CLI creates a network, connects two"
    );
    println!("container namespaces (web, db) and publishes web's port 80 as 8080.");
    let mut d = DaemonLab::start("demo", &bin_dir, &["--workers", "1"])
        .context("starting sluiced in namespaces")?;
    let run = |d: &DaemonLab, args: &[&str]| -> Result<String> {
        println!("   $ sluice {}", args.join(" "));
        let out = d.sluice_ok(args)?;
        show("sluice", &out);
        Ok(out)
    };

    step("network and endpoints (docker network create / connect)")?;
    run(
        &d,
        &["network", "create", "--subnet", "172.18.0.0/16", "demo"],
    )?;
    let web_ns = d.add_container("web")?;
    let db_ns = d.add_container("db")?;
    run(
        &d,
        &[
            "network", "connect", "--name", "web", "-p", "8080:80", "demo", &web_ns,
        ],
    )?;
    run(
        &d,
        &[
            "network", "connect", "--name", "db", "--alias", "database", "demo", &db_ns,
        ],
    )?;
    run(&d, &["ps"])?;
    let eps: Vec<EndpointView> = serde_json::from_str(&d.sluice_ok(&["ps", "-o", "json"])?)
        .context("reading sluice ps -o json")?;
    for e in &eps {
        if let Some(f) = &e.files {
            d.use_resolv_conf(&e.name, &f.resolv_conf)?;
        }
    }

    step("names: web pings db and its alias through sluice's embedded DNS (127.0.0.11)")?;
    show(
        "web",
        &d.lab()
            .exec("web", &["ping", "-c", "2", "-i", "0.2", "db"])?,
    );
    show(
        "web",
        &d.lab()
            .exec("web", &["ping", "-c", "1", "-W", "1", "database"])?,
    );

    step("gateway: web pings its gateway 172.18.0.1, answered by sluice itself")?;
    show(
        "web",
        &d.lab()
            .exec("web", &["ping", "-c", "2", "-i", "0.2", "172.18.0.1"])?,
    );

    step("NAPT: web connects to the outside host; the outside sees sluice's uplink address")?;
    let outside = OUTSIDE_IP.to_string();
    let echo = d.lab_mut().spawn(
        "out",
        &[
            "socat",
            "TCP-LISTEN:9000,reuseaddr,fork",
            "SYSTEM:echo you are $SOCAT_PEERADDR",
        ],
        "demo-outside",
    )?;
    d.lab().wait_listen("out", 9000, Duration::from_secs(5))?;
    show(
        "web",
        &d.lab().exec(
            "web",
            &["socat", "-T", "3", "-", &format!("TCP:{outside}:9000")],
        )?,
    );

    step("published port: the outside reaches 192.0.2.2:8080, forwarded to web:80")?;
    let server = d.lab_mut().spawn(
        "web",
        &[
            "socat",
            "TCP-LISTEN:80,reuseaddr,fork",
            "SYSTEM:echo hello from web at $SOCAT_SOCKADDR port $SOCAT_SOCKPORT",
        ],
        "demo-web80",
    )?;
    d.lab().wait_listen("web", 80, Duration::from_secs(5))?;
    show(
        "outside",
        &d.lab().exec(
            "out",
            &["socat", "-T", "3", "-", &format!("TCP:{UPLINK_IP}:8080")],
        )?,
    );
    run(&d, &["port", "web"])?;

    step("observability: sluice stats, conntrack ls, fdb ls")?;
    std::thread::sleep(Duration::from_millis(300));
    run(&d, &["stats"])?;
    run(&d, &["conntrack", "ls"])?;
    run(&d, &["fdb", "ls"])?;

    step("clean up: disconnect and remove the network")?;
    d.lab_mut().stop(echo);
    d.lab_mut().stop(server);
    run(&d, &["network", "disconnect", "demo", "web"])?;
    run(&d, &["network", "disconnect", "demo", "db"])?;
    run(&d, &["network", "rm", "demo"])?;
    drop(d);

    if args.no_bench {
        println!("\nDone; everything the demo created is removed.");
        return Ok(());
    }
    step("short benchmark (sluice bench --quick): the same topology on the kernel bridge and on sluice, alternately")?;
    let output = args.bench_output.unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "sluice-demo-bench-{}",
            sluice_api::clock::utc_stamp(sluice_api::clock::now_unix())
        ))
    });
    let status = bench_command(&bin_dir, &output, args.bench_bin.as_deref())
        .status()
        .context("running sluice bench")?;
    if !status.success() {
        bail!("the benchmark failed ({status})");
    }
    println!(
        "\nDone; the namespaces are removed. Charts and figures: {}",
        output.display()
    );
    Ok(())
}

/// `sluice bench --quick` of the `sluice` beside this binary, writing to `output`.
fn bench_command(bin_dir: &Path, output: &Path, bench_bin: Option<&Path>) -> Command {
    let mut c = Command::new(bin_dir.join("sluice"));
    c.args(["bench", "--quick", "--sluice-workers", "1", "--output"])
        .arg(output);
    if let Some(b) = bench_bin {
        c.arg("--bench-bin").arg(b);
    }
    c
}
