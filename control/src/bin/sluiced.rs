//! `sluiced`: the sluice daemon. Owns the dataplane, restores the stored networks and
//! endpoints, and serves the API on a Unix socket until SIGINT/SIGTERM.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use sluice_control::api::{DEFAULT_SOCKET, DEFAULT_STATE_DIR};
use sluice_control::cluster::etcd::Etcd;
use sluice_control::cluster::security::StoreOptions;
use sluice_control::cluster::Cluster;
use sluice_control::compile::UplinkSettings;
use sluice_control::daemon::engine::{Engine, Restored};
use sluice_control::daemon::kernel::Kernel;
use sluice_control::daemon::names::Names;
use sluice_control::daemon::{handle, server};
use sluice_control::dns::files::ResolvConf;
use sluice_control::plugins::docker::driver::DockerPlugin;
use sluice_control::plugins::docker::ipam::DockerIpam;
use sluice_control::plugins::docker::{server as plugin_server, DEFAULT_PLUGIN_SOCKET};
use sluice_control::publish::parse_port_range;
use sluice_control::state::{check_range, DEFAULT_HOST_PORTS};
use sluice_control::store::Store;
use sluice_dataplane::config::{Ipv4Cidr, Ipv6Cidr, NatConfig, PortIo, PortRange};
use sluice_dataplane::offload::OffloadMode;
use sluice_dataplane::port::afpacket::{mixed_rx, RxRing, SMALL_SLOT};
use sluice_dataplane::runtime::RuntimeConfig;
use sluice_dataplane::wire::MacAddr;

/// RX memory per port and worker that sluiced's default ring and long buffers share
/// ([`mixed_rx`]): what its 30 slots of 68 KiB took before.
const RX_BUDGET: usize = 2 << 20;

/// sluice's daemon: networks, endpoints and published ports on a userspace dataplane.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The API socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Database and per-endpoint files (resolv.conf, hosts).
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// The interface outbound NAPT leaves by and published ports are reached on (none: networks
    /// are bridged only).
    #[arg(long)]
    uplink: Option<String>,
    /// sluice's own address on the uplink, CIDR (required with --uplink).
    #[arg(long)]
    uplink_ip: Option<String>,
    /// The next hop for everything off the uplink's subnet.
    #[arg(long)]
    uplink_gateway: Option<Ipv4Addr>,
    /// sluice's MAC on the uplink (default: derived from --uplink-ip, 02:42:...).
    #[arg(long)]
    uplink_mac: Option<String>,
    /// The uplink's MTU.
    #[arg(long, default_value_t = 1500)]
    uplink_mtu: u16,
    /// sluice's own v6 address on the uplink, CIDR (NAT66 source, published ports over v6).
    #[arg(long)]
    uplink_ip6: Option<String>,
    /// The v6 next hop for everything off the uplink's v6 prefix.
    #[arg(long)]
    uplink_gateway6: Option<Ipv6Addr>,
    /// Open the uplink as a TAP device sluice creates, instead of an existing interface.
    #[arg(long)]
    uplink_tap: bool,
    /// Dataplane worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Microseconds a worker keeps polling after its last frame before sleeping.
    #[arg(long, default_value_t = 50)]
    busy_poll_us: u64,
    /// RX ring slots per port and worker (default 512 of 2 KiB: many small frames fit, and a
    /// frame longer than a slot goes to one of the --rx-long-buffers). The memory an endpoint
    /// costs is about rx-slots x rx-slot-size + rx-long-buffers x 68 KiB + tx-blocks x 1 MiB
    /// per worker (2 + 2 MiB by default; the long buffers' pages only once used).
    #[arg(long)]
    rx_slots: Option<usize>,
    /// Size of an RX slot in bytes (default 2048; 69632 holds a 64 KiB GSO super-frame, the
    /// layout before the long buffers: `--rx-slot-size 69632 --rx-slots 30 --rx-long-buffers 0`).
    #[arg(long)]
    rx_slot_size: Option<usize>,
    /// Buffers of 68 KiB per port and worker for frames longer than an RX slot (GSO
    /// super-frames; default 15); with 0 such frames are dropped.
    #[arg(long)]
    rx_long_buffers: Option<usize>,
    /// Endpoint ports kept prepared per worker (each costs the rings' memory), so that a
    /// connect binds ready sockets instead of waiting for the kernel's ring set-up.
    #[arg(long, default_value_t = 4)]
    spare_ports: usize,
    /// Flow offload: `tc` hands established flows (TCP after the handshake, UDP answered;
    /// offered by their first frame of 1024 bytes or more, so small-packet flows keep sluice's
    /// lower latency) that sluice forwards between its packet-socket ports, bridged or through NAT, to a TC
    /// eBPF program on each port, which then forwards their frames inside the kernel without
    /// the two copies through userspace; sluice keeps every policy decision (new flows, FIN
    /// and RST, ARP, ICMP, overlay and TAP ports stay in userspace) and flushes the kernel's
    /// flows whenever its tables change. The default; `off`: every frame through userspace.
    /// Where the kernel cannot run it (no BPF, no CAP_BPF), sluiced logs why and runs without.
    #[arg(long, default_value = "tc", value_name = "tc|off")]
    offload: OffloadMode,
    /// TX ring blocks of 1 MiB per port and worker.
    #[arg(long, default_value_t = 2)]
    tx_blocks: usize,
    /// Size of a TX slot in bytes (2 KiB: 512 per block; a longer frame, a GSO super-frame, is
    /// sent with `sendmsg` on its own; 69632 puts those in the ring too, 15 per block).
    #[arg(long, default_value_t = SMALL_SLOT)]
    tx_slot_size: usize,
    /// Serve Prometheus metrics on this TCP address (off by default), e.g. 127.0.0.1:9323.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// The resolv.conf whose nameservers the embedded DNS forwards to.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// No embedded DNS and no resolv.conf/hosts files.
    #[arg(long)]
    no_dns: bool,
    /// Also serve docker's libnetwork remote network and IPAM driver on this socket (off by
    /// default; without a value: /run/docker/plugins/sluice.sock, which makes `-d sluice`
    /// and `--ipam-driver sluice` work). The socket's file name is the driver's name.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = DEFAULT_PLUGIN_SOCKET)]
    docker_plugin: Option<PathBuf>,
    /// Host ports picked for `-p CPORT`, `-p HOSTIP::CPORT` and `-P`: FIRST-LAST, outside the
    /// NAPT source ports (32768-60999; docker's own 49153-60999 would overlap them).
    #[arg(long, default_value_t = DEFAULT_HOST_PORTS.to_string())]
    host_port_range: String,
    /// The cluster store that makes overlay networks span hosts (off by default):
    /// etcd://HOST:PORT[,HOST:PORT...], etcd v3's client addresses.
    #[arg(long, value_name = "URL")]
    cluster_store: Option<String>,
    /// How to reach the cluster store (repeatable, comma-separated): kv.cacertfile=PEM turns
    /// TLS on; kv.certfile=PEM and kv.keyfile=PEM give a client certificate; kv.username=NAME
    /// with kv.passwordfile=FILE (or kv.password=SECRET) logs in to etcd's authentication.
    #[arg(long, value_name = "KEY=VALUE")]
    cluster_store_opt: Vec<String>,
    /// This host's address in the cluster, its VTEP (default and only choice: the uplink
    /// address, which VXLAN leaves from).
    #[arg(long, value_name = "IP")]
    cluster_advertise: Option<Ipv4Addr>,
    /// Seconds this host's records in the cluster store outlive it once it stops renewing
    /// its lease (a dead host's endpoints leave the others' tables after this).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    cluster_ttl: u32,
}

/// This host's membership of `--cluster-store`, if given.
fn cluster(a: &Args, uplink: Option<&UplinkSettings>) -> Result<Option<Arc<Cluster>>> {
    let Some(url) = &a.cluster_store else {
        if a.cluster_advertise.is_some() || !a.cluster_store_opt.is_empty() {
            bail!("--cluster-advertise and --cluster-store-opt need --cluster-store");
        }
        return Ok(None);
    };
    let options = StoreOptions::parse(&a.cluster_store_opt)?;
    let etcd = Etcd::from_url(url)?.with_options(&options)?;
    let vtep = uplink
        .context("--cluster-store needs --uplink: overlay traffic leaves from the uplink address")?
        .ip
        .addr;
    if let Some(ip) = a.cluster_advertise.filter(|ip| *ip != vtep) {
        bail!("--cluster-advertise {ip} is not the uplink address {vtep}, which VXLAN leaves from");
    }
    Ok(Some(Arc::new(Cluster::new(etcd, vtep, a.cluster_ttl))))
}

/// The `--host-port-range`, refused when it overlaps NAPT's source ports.
fn host_port_range(a: &Args, nat: &NatConfig) -> Result<PortRange> {
    let range = parse_port_range(&a.host_port_range)
        .map_err(|e| anyhow::anyhow!("--host-port-range {:?}: {e}", a.host_port_range))?;
    check_range(range, nat.ports)?;
    Ok(range)
}

fn uplink(a: &Args) -> Result<Option<UplinkSettings>> {
    let Some(name) = &a.uplink else {
        if a.uplink_ip.is_some()
            || a.uplink_gateway.is_some()
            || a.uplink_mac.is_some()
            || a.uplink_ip6.is_some()
            || a.uplink_gateway6.is_some()
        {
            bail!("--uplink-ip, --uplink-gateway, --uplink-mac, --uplink-ip6 and --uplink-gateway6 need --uplink");
        }
        return Ok(None);
    };
    let ip: Ipv4Cidr = a
        .uplink_ip
        .as_deref()
        .context("--uplink needs --uplink-ip (sluice's address on it, like 192.0.2.2/24)")?
        .parse()
        .map_err(|_| anyhow::anyhow!("--uplink-ip is not an IPv4 CIDR (like 192.0.2.2/24)"))?;
    let ip6: Option<Ipv6Cidr> = match &a.uplink_ip6 {
        Some(s) => Some(s.parse().map_err(|_| {
            anyhow::anyhow!("--uplink-ip6 is not an IPv6 CIDR (like 2001:db8::2/64)")
        })?),
        None if a.uplink_gateway6.is_some() => bail!("--uplink-gateway6 needs --uplink-ip6"),
        None => None,
    };
    let mac = match &a.uplink_mac {
        Some(m) => m
            .parse::<MacAddr>()
            .map_err(|_| anyhow::anyhow!("--uplink-mac {m:?} is not a MAC address"))?,
        None => MacAddr::from_ipv4(ip.addr),
    };
    Ok(Some(UplinkSettings {
        name: name.clone(),
        io: if a.uplink_tap {
            PortIo::Tap
        } else {
            PortIo::AfPacket
        },
        ip,
        mac,
        next_hop: a.uplink_gateway,
        mtu: a.uplink_mtu,
        ip6,
        next_hop6: a.uplink_gateway6,
    }))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluiced: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    init_logging();
    let args = Args::parse();
    let uplink = uplink(&args)?;
    let cluster = cluster(&args, uplink.as_ref())?;
    let nat = NatConfig::default();
    let host_ports = host_port_range(&args, &nat)?;
    let rc = runtime_config(&args)?;
    sluice_control::store::prepare_state_dir(&args.state_dir)
        .with_context(|| format!("cannot create {}", args.state_dir.display()))?;
    let db = args.state_dir.join("sluice.redb");
    let mut store = Store::open(&db).with_context(|| format!("cannot open {}", db.display()))?;
    store.set_host_ports(host_ports);
    let names = (!args.no_dns)
        .then(|| Names::new(args.state_dir.clone(), ResolvConf::read(&args.resolv_conf)));
    let docker_ipam = match &args.docker_plugin {
        Some(_) => Some(DockerIpam::open(&args.state_dir.join("docker-ipam.json"))?),
        None => None,
    };
    let (engine, restored, thread) =
        handle::spawn(move || Engine::open(store, Kernel::new(rc), uplink, nat, names))
            .context("cannot start")?;
    log_restore(&restored);
    let engine = match &cluster {
        Some(c) => engine.with_cluster(Arc::clone(c)),
        None => engine,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the API runtime")?;
    let served = rt.block_on(async {
        let api = server::bind_api(&args.socket).await?;
        let metrics = match args.metrics {
            Some(addr) => Some(server::bind_metrics(addr).await?),
            None => None,
        };
        if let Some(c) = &cluster {
            c.start(engine.local());
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let plugin = match (&args.docker_plugin, docker_ipam) {
            (Some(path), Some(ipam)) => {
                let listener = server::bind_api(path).await?;
                let plugin = Arc::new(DockerPlugin::new(engine.clone(), ipam));
                tracing::info!("docker plugin listening on {}", path.display());
                let (path, stop) = (path.clone(), stopped());
                Some(tokio::spawn(async move {
                    plugin_server::serve(listener, &path, plugin, stop).await
                }))
            }
            _ => None,
        };
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        tracing::info!(
            "sluiced listening on {} ({} endpoints restored)",
            args.socket.display(),
            restored.endpoints
        );
        let served = server::serve(api, &args.socket, metrics, engine, stopped())
            .await
            .context("API server failed");
        if let Some(p) = plugin {
            match p.await {
                Ok(r) => r.context("docker plugin server failed")?,
                Err(e) => return Err(anyhow::anyhow!("docker plugin server: {e}")),
            }
        }
        served
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    let _ = thread.join();
    tracing::info!("sluiced stopped; networks and endpoints stay for the next start");
    served
}

/// Logs to stderr, at `info` unless `RUST_LOG` says otherwise.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,netlink_packet_route=error")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The dataplane runtime's settings from the command line.
fn runtime_config(args: &Args) -> Result<RuntimeConfig> {
    let mut rc = RuntimeConfig {
        busy_poll: Duration::from_micros(args.busy_poll_us),
        ..RuntimeConfig::default()
    };
    let (default_ring, default_long) = mixed_rx(RX_BUDGET, 4096);
    let RxRing::V2 {
        frame_size,
        frame_count,
    } = default_ring
    else {
        bail!("the default RX ring is not a V2 ring");
    };
    let (frame_size, frame_count) = (
        args.rx_slot_size.unwrap_or(frame_size),
        args.rx_slots.unwrap_or(frame_count),
    );
    if frame_count == 0 || args.tx_blocks == 0 {
        bail!("--rx-slots and --tx-blocks must be at least 1");
    }
    rc.afpacket.rx_ring = RxRing::V2 {
        frame_size,
        frame_count,
    };
    rc.afpacket.rx_long_buffers = args.rx_long_buffers.unwrap_or(default_long);
    rc.afpacket.tx_block_count = args.tx_blocks;
    rc.afpacket.tx_frame_size = args.tx_slot_size;
    rc.spare_ports = args.spare_ports;
    rc.offload = args.offload;
    if let Some(w) = args.workers {
        if w == 0 {
            bail!("--workers must be at least 1");
        }
        rc.workers = w;
    }
    Ok(rc)
}

/// Says what the restore of the database found and did.
fn log_restore(restored: &Restored) {
    for r in &restored.released {
        tracing::info!("released endpoint {r}: its interface is gone");
    }
    for d in &restored.deleted {
        tracing::info!("deleted leftover interface {d}");
    }
    for n in &restored.removed_networks {
        tracing::info!("removed network {n}: sluice-cni made it and its last endpoint is gone");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<RuntimeConfig> {
        runtime_config(&Args::try_parse_from(
            std::iter::once("sluiced").chain(args.iter().copied()),
        )?)
    }

    #[test]
    fn the_default_rx_ring_is_mixed_and_the_old_one_can_be_asked_for() {
        let rc = config(&[]).unwrap();
        assert_eq!(
            rc.afpacket.rx_ring,
            RxRing::V2 {
                frame_size: 2048,
                frame_count: 512
            }
        );
        assert_eq!(rc.afpacket.rx_long_buffers, 15);
        assert_eq!(rc.afpacket.tx_frame_size, 2048);
        let old = [
            "--rx-slot-size=69632",
            "--rx-slots=30",
            "--rx-long-buffers=0",
            "--tx-slot-size=69632",
        ];
        let rc = config(&old).unwrap();
        assert_eq!(
            rc.afpacket.rx_ring,
            RxRing::V2 {
                frame_size: 68 << 10,
                frame_count: 30
            }
        );
        assert_eq!(rc.afpacket.rx_long_buffers, 0);
        assert_eq!(rc.afpacket.tx_frame_size, 68 << 10);
        assert!(config(&["--rx-slots", "0"]).is_err());
    }

    #[test]
    fn the_flow_offload_is_on_unless_turned_off() {
        assert_eq!(config(&[]).unwrap().offload, OffloadMode::Tc);
        assert_eq!(
            config(&["--offload=off"]).unwrap().offload,
            OffloadMode::Off
        );
        assert!(config(&["--offload=xdp"]).is_err());
    }
}
