//! `sluice-attach-bench`: how long attaching a container takes and what an endpoint costs.
//! Starts a `sluiced` in namespaces (`DaemonLab`), connects fresh namespaces one at a time
//! through the API client (wall time of each request: veth pair, address, routes, dataplane
//! port, database commit) and disconnects them; does the same through the `sluice` CLI (a
//! process per connect, as a runtime hook would run it); runs the reference CNI bridge plugin
//! (`bridge` + `host-local`, inside a namespace of the lab, never the root one) ADD and DEL on
//! the same namespaces; then connects many endpoints and reads the daemon's resident memory and
//! the machine's available memory before and after. Prints markdown tables.

use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use serde_json::json;
use sluice_api::client::Client;
use sluice_bench::e2e::report::utc_date;
use sluice_bench::run;
use sluice_lab::daemonlab::DaemonLab;

/// Attach latency of sluiced against the CNI bridge plugin, and memory per endpoint.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Connects (and disconnects) measured, each to a fresh namespace.
    #[arg(long, default_value_t = 200)]
    connects: usize,
    /// Endpoints connected for the memory measurement.
    #[arg(long, default_value_t = 1000)]
    endpoints: usize,
    /// Directory with `sluiced` and `sluice` (default: this binary's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Dataplane workers of the daemon.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// More `sluiced` flags, space-separated (e.g. "--rx-slots 256 --tx-blocks 18").
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    daemon_args: String,
    /// The CNI bridge plugin (host-local must be beside it); skipped when missing.
    #[arg(long, default_value = "/usr/lib/cni/bridge")]
    cni_bridge: PathBuf,
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One row of the latency table: (name, n, p50, p99, max).
struct Row {
    name: String,
    samples: Vec<Duration>,
}

impl Row {
    fn new(name: &str, mut samples: Vec<Duration>) -> Row {
        samples.sort();
        Row {
            name: name.to_string(),
            samples,
        }
    }

    fn p50(&self) -> Duration {
        percentile(&self.samples, 50)
    }

    fn line(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} |",
            self.name,
            self.samples.len(),
            ms(self.p50()),
            ms(percentile(&self.samples, 99)),
            ms(self.samples.last().copied().unwrap_or_default())
        )
    }
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

fn mem_available_kib() -> Result<u64> {
    let info = std::fs::read_to_string("/proc/meminfo")?;
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no MemAvailable")
}

/// Runs the CNI plugin once inside the namespace `host_ns` (entered by the child before it
/// execs, so the plugin's bridge and host-side veths are made there); its wall time.
fn cni(
    plugin: &Path,
    host_ns: &std::fs::File,
    command: &str,
    container: &str,
    netns: &str,
    config: &[u8],
) -> Result<Duration> {
    let fd = host_ns.as_raw_fd();
    let cni_path = plugin.parent().unwrap_or(Path::new("/"));
    let started = Instant::now();
    let mut cmd = Command::new(plugin);
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_path)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setns(2) is async-signal-safe; it moves only the child, before it execs.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().context("starting the CNI plugin")?;
    child.stdin.take().context("no stdin")?.write_all(config)?;
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "CNI {command} {container}: {} {}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let command = run::command_line();
    run::require_root()?;
    if args.connects == 0 {
        bail!("--connects must be at least 1");
    }
    let bin_dir = run::bin_dir(args.bin_dir)?;
    let workers = args.workers.to_string();
    let mut flags = vec!["--workers", workers.as_str()];
    flags.extend(args.daemon_args.split_whitespace());
    let mut d = DaemonLab::start("ab", &bin_dir, &flags)?;
    d.sluice_ok(&["network", "create", "--subnet", "10.200.0.0/16", "bench"])?;
    let namespaces = args.connects.max(args.endpoints);
    eprintln!("creating {namespaces} namespaces");
    let paths: Vec<String> = (0..namespaces)
        .map(|i| d.add_container(&format!("c{i}")))
        .collect::<Result<_, _>>()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = Client::new(d.socket());
    let connect = |i: usize, path: &str| {
        let spec = json!({"network": "bench", "sandbox": {"netns": path}, "name": format!("e{i}")});
        let started = Instant::now();
        rt.block_on(client.post("/networks/bench/connect", &spec))
            .with_context(|| format!("connect e{i}"))?;
        Ok::<_, anyhow::Error>(started.elapsed())
    };
    let disconnect = |i: usize| {
        let started = Instant::now();
        rt.block_on(client.post(
            "/networks/bench/disconnect",
            &json!({"endpoint": format!("e{i}")}),
        ))
        .with_context(|| format!("disconnect e{i}"))?;
        Ok::<_, anyhow::Error>(started.elapsed())
    };

    eprintln!("{} connects and disconnects through the API", args.connects);
    let mut rows = Vec::new();
    let mut up = Vec::new();
    for (i, p) in paths.iter().enumerate().take(args.connects) {
        up.push(connect(i, p)?);
    }
    let mut down = Vec::new();
    for i in 0..args.connects {
        down.push(disconnect(i)?);
    }
    rows.push(Row::new("sluiced connect (API request)", up));
    rows.push(Row::new("sluiced disconnect (API request)", down));

    eprintln!("{} connects through the CLI", args.connects);
    let mut cli = Vec::new();
    for (i, p) in paths.iter().enumerate().take(args.connects) {
        let name = format!("e{i}");
        let started = Instant::now();
        d.sluice_ok(&["network", "connect", "--name", &name, "bench", p])?;
        cli.push(started.elapsed());
        disconnect(i)?;
    }
    rows.push(Row::new("`sluice network connect` (CLI process)", cli));

    let mut cni_p50 = None;
    if args.cni_bridge.is_file() {
        eprintln!("{} CNI bridge ADDs and DELs", args.connects);
        d.lab_mut().add_ns("cni")?;
        let host_ns = std::fs::File::open(format!("/run/netns/{}", d.lab().ns_name("cni")?))?;
        let config = serde_json::to_vec(&json!({
            "cniVersion": "1.0.0",
            "name": "benchnet",
            "type": "bridge",
            "bridge": "cnibr0",
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "subnet": "10.201.0.0/16",
                "dataDir": d.lab().dir().join("cni-ipam"),
            },
        }))?;
        let (mut add, mut del) = (Vec::new(), Vec::new());
        for (i, p) in paths.iter().enumerate().take(args.connects) {
            add.push(cni(
                &args.cni_bridge,
                &host_ns,
                "ADD",
                &format!("k{i}"),
                p,
                &config,
            )?);
        }
        for (i, p) in paths.iter().enumerate().take(args.connects) {
            del.push(cni(
                &args.cni_bridge,
                &host_ns,
                "DEL",
                &format!("k{i}"),
                p,
                &config,
            )?);
        }
        let add = Row::new("CNI bridge + host-local ADD (plugin exec)", add);
        cni_p50 = Some(add.p50());
        rows.push(add);
        rows.push(Row::new("CNI bridge + host-local DEL (plugin exec)", del));
    } else {
        eprintln!(
            "skipped: no CNI bridge plugin at {}",
            args.cni_bridge.display()
        );
    }

    eprintln!("{} endpoints for the memory measurement", args.endpoints);
    let pid = d.pid().context("the daemon is not running")?;
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, avail0) = (rss_kib(pid)?, mem_available_kib()?);
    let started = Instant::now();
    for (i, p) in paths.iter().enumerate().take(args.endpoints) {
        connect(i, p)?;
    }
    let fill = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let (rss1, avail1) = (rss_kib(pid)?, mem_available_kib()?);
    let last = rt.block_on(client.get::<serde_json::Value>("/endpoints"))?;
    let count = last.as_array().map_or(0, Vec::len);
    if count != args.endpoints {
        bail!("{count} endpoints listed, {} connected", args.endpoints);
    }

    let date = utc_date(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    println!("date: {date}");
    println!("command: `{command}`");
    println!("daemon flags: `{}`", flags.join(" "));
    println!();
    println!("| operation | n | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!("{}", r.line());
    }
    let p50 = rows[0].p50();
    println!();
    match cni_p50 {
        Some(c) => println!(
            "sluiced connect p50 {} vs CNI bridge ADD p50 {}: CNI/sluiced = {:.2} (above 1: sluiced is faster; target p50 <= 20 ms)",
            ms(p50),
            ms(c),
            c.as_secs_f64() / p50.as_secs_f64()
        ),
        None => println!(
            "sluiced connect p50 {} (target <= 20 ms); CNI not measured",
            ms(p50)
        ),
    }
    println!();
    let per = |a: u64, b: u64| (b as f64 - a as f64) / args.endpoints.max(1) as f64;
    println!(
        "| memory with {} endpoints | before | after | per endpoint |",
        args.endpoints
    );
    println!("|---|---|---|---|");
    println!(
        "| sluiced VmRSS | {:.1} MiB | {:.1} MiB | {:.1} KiB |",
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        per(rss0, rss1)
    );
    println!(
        "| machine MemAvailable drop (kernel rings, veths, namespaces' interfaces) | | {:.1} MiB | {:.1} KiB |",
        (avail0 as f64 - avail1 as f64) / 1024.0,
        per(avail1, avail0)
    );
    println!();
    println!(
        "{} endpoints connected in {:.1} s ({:.1} ms each on average, the last ones included)",
        args.endpoints,
        fill.as_secs_f64(),
        fill.as_secs_f64() * 1000.0 / args.endpoints.max(1) as f64
    );
    d.stop();
    Ok(())
}
