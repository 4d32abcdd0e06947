//! `sluice`: the command-line entry point.
#![forbid(unsafe_code)]

mod addressing;
mod bench;
mod cli;
mod expose;
mod filter;
mod format;
mod netcmd;
mod settings;
mod sibling;
mod stats;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sluice_dataplane::config::Config;
use sluice_dataplane::offload::OffloadMode;
use sluice_dataplane::pipeline::Dataplane;
use sluice_dataplane::port::afpacket::{self, RxRing};
use sluice_dataplane::runtime::{Runtime, RuntimeConfig};

/// sluice: a userspace dataplane for container networks.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    conn: cli::Conn,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the dataplane on the interfaces a JSON configuration names, until SIGINT/SIGTERM/SIGHUP.
    Dataplane(DataplaneArgs),
    /// Build namespaces, attach them to sluice, show bridging, NAT, a published port, the
    /// counters and a short benchmark against the kernel bridge; then remove everything.
    /// Runs `sluice-demo`, installed next to `sluice`.
    #[command(disable_help_flag = true)]
    Demo {
        /// `sluice-demo`'s flags (`sluice demo --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// End-to-end benchmark in namespaces: sluice against the kernel bridge, iptables NAT and
    /// the other userspace forwarders; writes results.json, results.md and SVG charts.
    Bench(bench::BenchArgs),
    /// Manage networks (docker network's verbs), through the daemon.
    #[command(subcommand)]
    Network(Box<cli::NetworkCmd>),
    /// Show endpoints' sandboxes as docker's container inspect (`NetworkSettings`), or a
    /// --format template per endpoint.
    Inspect(settings::InspectArgs),
    /// List endpoints.
    Ps {
        /// Table or JSON.
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: cli::Output,
    },
    /// List published ports (all, or one endpoint's).
    Port {
        /// An endpoint's name or id.
        endpoint: Option<String>,
        /// Table or JSON.
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: cli::Output,
    },
    /// Tracked NAPT flows.
    #[command(subcommand)]
    Conntrack(ListCmd),
    /// The bridges' forwarding tables.
    #[command(subcommand)]
    Fdb(ListCmd),
    /// Dataplane counters per port and network, drops by reason, table sizes.
    Stats {
        /// Table or JSON.
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: cli::Output,
    },
}

/// `ls`, the one verb of `conntrack` and `fdb`.
#[derive(Subcommand, Debug)]
enum ListCmd {
    /// List the entries.
    Ls {
        /// Table or JSON.
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: cli::Output,
    },
}

#[derive(clap::Args, Debug)]
struct DataplaneArgs {
    /// The configuration (networks, ports, uplink, published ports), as JSON.
    #[arg(long)]
    config: PathBuf,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Pin each worker to a CPU.
    #[arg(long)]
    pin: bool,
    /// Microseconds a worker keeps polling after its last frame before sleeping.
    #[arg(long, default_value_t = 50)]
    busy_poll_us: u64,
    /// Write the counters as JSON to this file every 200 ms (and at exit).
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// AF_PACKET RX ring: v2 (per-frame hand-over: lowest latency) or v3 (block hand-over:
    /// more frames per byte of ring, but up to 1 ms of latency at low rates).
    #[arg(long, value_enum, default_value_t = RingKind::V2)]
    rx_ring: RingKind,
    /// V2: frame slots per port and worker (68 KiB each: GSO super-frames fit). V3: 256 KiB
    /// blocks per port and worker.
    #[arg(long)]
    rx_slots: Option<usize>,
    /// V2: size of a slot in bytes (default 69632); sluiced uses 2048 with long buffers.
    #[arg(long)]
    rx_slot_size: Option<usize>,
    /// V2: buffers of 68 KiB per port and worker for frames longer than a slot (default 0:
    /// such frames are dropped).
    #[arg(long, default_value_t = 0)]
    rx_long_buffers: usize,
    /// TX ring blocks of 1 MiB (15 slots each) per port and worker (default 18).
    #[arg(long)]
    tx_blocks: Option<usize>,
    /// Size of a TX slot in bytes (default 69632); a frame longer than a slot is sent with
    /// `sendmsg` on its own (sluiced uses 2048).
    #[arg(long)]
    tx_slot_size: Option<usize>,
    /// Flow offload, as sluiced's `--offload`: `tc` forwards established flows in the kernel.
    #[arg(long, default_value = "tc", value_name = "tc|off")]
    offload: OffloadMode,
}

/// The AF_PACKET RX ring version.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum RingKind {
    V2,
    V3,
}

fn load_config(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("config {} is not valid", path.display()))
}

fn write_stats(dp: &Dataplane, path: &Path) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&dp.stats())?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn run_dataplane(args: DataplaneArgs) -> Result<()> {
    let config = load_config(&args.config)?;
    let dp = Dataplane::new(&config).map_err(|e| anyhow::anyhow!("config refused: {e}"))?;
    let mut rc = RuntimeConfig {
        pin: args.pin,
        busy_poll: Duration::from_micros(args.busy_poll_us),
        ..RuntimeConfig::default()
    };
    rc.afpacket.rx_ring = match (args.rx_ring, args.rx_slots) {
        (_, Some(0)) => bail!("--rx-slots must be at least 1"),
        (RingKind::V3, None) => afpacket::DEFAULT_RX_V3,
        (RingKind::V2, slots) => match afpacket::DEFAULT_RX_V2 {
            RxRing::V2 {
                frame_size,
                frame_count,
            } => RxRing::V2 {
                frame_size: args.rx_slot_size.unwrap_or(frame_size),
                frame_count: slots.unwrap_or(frame_count),
            },
            other => other,
        },
        (RingKind::V3, Some(n)) => match afpacket::DEFAULT_RX_V3 {
            RxRing::V3 {
                block_size,
                retire_ms,
                ..
            } => RxRing::V3 {
                block_size,
                block_count: n,
                retire_ms,
            },
            other => other,
        },
    };
    rc.afpacket.rx_long_buffers = args.rx_long_buffers;
    if let Some(n) = args.tx_slot_size {
        rc.afpacket.tx_frame_size = n;
    }
    match args.tx_blocks {
        Some(0) => bail!("--tx-blocks must be at least 1"),
        Some(n) => rc.afpacket.tx_block_count = n,
        None => {}
    }
    if let Some(w) = args.workers {
        if w == 0 {
            bail!("--workers must be at least 1");
        }
        rc.workers = w;
    }
    let stop = sluice_sys::catch_termination();
    rc.offload = args.offload;
    let runtime = Runtime::start(&dp, &rc).context("cannot start the dataplane")?;
    if let Some(e) = dp.offloads().take_error() {
        eprintln!("sluice: flow offload off: {e}");
    }
    eprintln!(
        "sluice: forwarding on {} ports with {} workers",
        config.ports.len(),
        rc.workers
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if let Some(p) = &args.stats_file {
            write_stats(&dp, p)?;
        }
    }
    runtime.shutdown();
    if let Some(p) = &args.stats_file {
        write_stats(&dp, p)?;
    }
    println!("{}", serde_json::to_string_pretty(&dp.stats())?);
    Ok(())
}

/// Every failure ends as one line on stderr and exit code 1 (clap's own errors exit with 2).
fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Network(c) => cli::network(&cli.conn, *c),
        Command::Inspect(a) => settings::inspect(&cli.conn.client(), a),
        Command::Ps { output } => cli::ps(&cli.conn, output),
        Command::Port { endpoint, output } => cli::port(&cli.conn, endpoint, output),
        Command::Stats { output } => cli::stats(&cli.conn, output),
        Command::Conntrack(ListCmd::Ls { output }) => cli::conntrack(&cli.conn, output),
        Command::Fdb(ListCmd::Ls { output }) => cli::fdb(&cli.conn, output),
        Command::Dataplane(a) => run_dataplane(a),
        Command::Demo { args } => {
            let mut c = Process::new(sibling::path("sluice-demo", "sluice-lab", None)?);
            c.args(args);
            sibling::exec(c)
        }
        Command::Bench(a) => bench::run(a),
    }
}
