//! `sluice-soak`: a long run of a `sluiced` in namespaces (`DaemonLab`) under mixed traffic
//! with an endpoint connected and one disconnected every second, sampling the daemon's
//! resident memory and open file descriptors once a second. Traffic: a TCP iperf3 stream
//! between two endpoints of one network (bridged), and a UDP iperf3 stream from an endpoint to
//! the lab's outside namespace (routed, NAPT on the uplink), both rate-limited so the machine
//! stays usable. Writes `soak.svg` and `soak.json` and prints whether memory after the soak is
//! within the tolerance of memory after warm-up (exit code 1 when not). Not a test: run it by
//! hand, as root (see bench/RESULTS.md).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use serde_json::json;
use sluice_api::client::Client;
use sluice_bench::e2e::report::utc_date;
use sluice_bench::run;
use sluice_bench::soak::{Sample, Soak};
use sluice_lab::daemonlab::{DaemonLab, OUTSIDE_IP};

/// Memory and fds of sluiced under traffic and endpoint churn.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// How long the soak runs, warm-up included.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Warm-up, seconds (default: a fifth of the run, at most 120 s).
    #[arg(long)]
    warmup_secs: Option<f64>,
    /// Largest growth of memory after the soak over memory after warm-up, percent.
    #[arg(long, default_value_t = 10.0)]
    tolerance: f64,
    /// Namespaces the churn cycles through (an endpoint lives about this many seconds).
    #[arg(long, default_value_t = 4)]
    churn: usize,
    /// Rate of each iperf3 stream.
    #[arg(long, default_value = "50M")]
    rate: String,
    /// Directory with `sluiced` and `sluice` (default: this binary's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where soak.svg and soak.json go.
    #[arg(long, default_value = "bench/latest")]
    out: PathBuf,
}

fn proc_status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key}"))
}

fn fd_count(pid: u32) -> Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// An endpoint's address without its prefix.
fn address(view: &serde_json::Value) -> Result<String> {
    let ip = view["ipv4"].as_str().context("no ipv4 in the answer")?;
    Ok(ip.split('/').next().unwrap_or(ip).to_string())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let command = run::command_line();
    run::require_root()?;
    if args.churn < 2 || args.minutes <= 0.0 {
        bail!("--churn must be at least 2 and --minutes positive");
    }
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let warmup = args
        .warmup_secs
        .unwrap_or((total.as_secs_f64() / 5.0).min(120.0));
    let bin_dir = run::bin_dir(args.bin_dir)?;
    let mut d = DaemonLab::start("sk", &bin_dir, &[])?;
    d.sluice_ok(&["network", "create", "--subnet", "10.210.0.0/24", "soak"])?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = Client::new(d.socket());
    let connect = |name: &str, path: &str| {
        let spec = json!({"sandbox": {"netns": path}, "name": name});
        rt.block_on(client.post("/networks/soak/connect", &spec))
            .with_context(|| format!("connect {name}"))
    };
    let disconnect = |name: &str| {
        rt.block_on(client.post("/networks/soak/disconnect", &json!({"endpoint": name})))
            .with_context(|| format!("disconnect {name}"))
    };

    let secs = total.as_secs().to_string();
    let srv = d.add_container("srv")?;
    let cli = d.add_container("cli")?;
    let srv_ip = address(&connect("srv", &srv)?)?;
    connect("cli", &cli)?;
    let lab = d.lab_mut();
    lab.spawn("srv", &["iperf3", "-s", "-p", "5201"], "iperf3-srv")?;
    lab.spawn("out", &["iperf3", "-s", "-p", "5202"], "iperf3-out")?;
    std::thread::sleep(Duration::from_millis(500));
    let rate = args.rate.as_str();
    lab.spawn(
        "cli",
        &[
            "iperf3", "-c", &srv_ip, "-p", "5201", "-t", &secs, "-b", rate,
        ],
        "iperf3-tcp",
    )?;
    let out_ip = OUTSIDE_IP.to_string();
    lab.spawn(
        "cli",
        &[
            "iperf3", "-c", &out_ip, "-p", "5202", "-u", "-t", &secs, "-b", rate,
        ],
        "iperf3-udp",
    )?;
    let churn: Vec<String> = (0..args.churn)
        .map(|i| d.add_container(&format!("k{i}")))
        .collect::<Result<_, _>>()?;

    let pid = d.pid().context("the daemon is not running")?;
    eprintln!(
        "soak: {:.1} min, warm-up {warmup:.0} s, sluiced pid {pid}",
        args.minutes
    );
    let mut soak = Soak {
        samples: Vec::new(),
        warmup_secs: warmup,
        connects: 0,
        disconnects: 0,
    };
    let mut live = std::collections::VecDeque::new();
    let started = Instant::now();
    let mut tick = 0u64;
    while started.elapsed() < total {
        if live.len() + 1 >= args.churn {
            let (name, _): (String, usize) = live.pop_front().context("nothing connected")?;
            disconnect(&name)?;
            soak.disconnects += 1;
        }
        let slot = (0..args.churn)
            .find(|s| !live.iter().any(|(_, l)| l == s))
            .context("no free namespace")?;
        let name = format!("churn{tick}");
        connect(&name, &churn[slot])?;
        soak.connects += 1;
        live.push_back((name, slot));
        soak.samples.push(Sample {
            secs: started.elapsed().as_secs_f64(),
            rss_kib: proc_status_kib(pid, "VmRSS:")?,
            fds: fd_count(pid)?,
            endpoints: live.len() + 2,
        });
        tick += 1;
        let next = Duration::from_secs(tick);
        if let Some(wait) = next.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let udp_log = std::fs::read_to_string(d.lab().log_path("iperf3-udp")).unwrap_or_default();
    let tcp_log = std::fs::read_to_string(d.lab().log_path("iperf3-tcp")).unwrap_or_default();
    d.stop();

    std::fs::create_dir_all(&args.out)?;
    let date = utc_date(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    let title = format!("sluiced soak, {date}, {:.1} min", args.minutes);
    let svg = args.out.join("soak.svg");
    std::fs::write(&svg, soak.svg(&title))?;
    let mut j = soak.json();
    j["command"] = json!(command);
    j["date"] = json!(date);
    std::fs::write(
        args.out.join("soak.json"),
        serde_json::to_string_pretty(&j)?,
    )?;

    let mib = |k: Option<f64>| k.map_or("-".into(), |k| format!("{:.1} MiB", k / 1024.0));
    let fds: Vec<u64> = soak.samples.iter().map(|s| s.fds).collect();
    let holds = soak.holds(args.tolerance / 100.0);
    println!("date: {date}");
    println!("command: `{command}`");
    println!();
    println!("| samples | connects | disconnects | RSS after warm-up | RSS at the end | growth | fds min-max |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {:+.1} % | {}-{} |",
        soak.samples.len(),
        soak.connects,
        soak.disconnects,
        mib(soak.rss_after_warmup()),
        mib(soak.rss_at_end()),
        soak.growth().unwrap_or(f64::NAN) * 100.0,
        fds.iter().min().unwrap_or(&0),
        fds.iter().max().unwrap_or(&0),
    );
    println!();
    for (what, log) in [("TCP east-west", &tcp_log), ("UDP via NAPT", &udp_log)] {
        let last = log
            .lines()
            .rfind(|l| l.contains("sender") || l.contains("receiver"))
            .unwrap_or("(no iperf3 summary)");
        println!("iperf3 {what}: {}", last.trim());
    }
    println!();
    println!(
        "memory after the soak {} within {} % of memory after warm-up; chart: {}",
        if holds { "is" } else { "is NOT" },
        args.tolerance,
        svg.display()
    );
    if !holds {
        std::process::exit(1);
    }
    Ok(())
}
