//! `sluice-slirp [OPTION]... PID|PATH [TAPNAME]`: slirp4netns's command line, sluice's engine.

use anyhow::{Context, Result};
use clap::Parser;
use sluice_slirp::cli::Options;
use sluice_slirp::config::NetConfig;
use sluice_slirp::engine::{Engine, EngineSetup};
use sluice_slirp::netns::{self, TapSetup};
use sluice_slirp::{dns, sys};

fn main() {
    let opts = Options::parse();
    if let Err(e) = run(opts) {
        eprintln!("sluice-slirp: {e:#}");
        std::process::exit(1);
    }
}

fn run(opts: Options) -> Result<()> {
    let target = opts.target()?;
    let mut net = NetConfig::from_cidr(&opts.cidr, opts.mtu)?;
    net.host_loopback = !opts.disable_host_loopback;
    net.dns_enabled = !opts.disable_dns;
    net.outbound_addr = opts.outbound_addr;
    net.ipv6 = opts.enable_ipv6;
    net.outbound_addr6 = opts.outbound_addr6;
    let exit_fd = opts
        .exit_fd
        .map(sys::inherited_fd)
        .transpose()
        .context("--exit-fd")?;
    let ready_fd = opts
        .ready_fd
        .map(sys::inherited_fd)
        .transpose()
        .context("--ready-fd")?;
    let resolver = dns::host_resolver();
    let setup = opts.configure.then(|| TapSetup {
        addr: net.guest,
        netmask: net.netmask(),
        gateway: net.gateway,
        mtu: opts.mtu,
        mac: opts.macaddress,
    });
    let tap = netns::open_tap_in(&target, &opts.tapname, setup.as_ref())
        .with_context(|| format!("opening {} in {}", opts.tapname, target.netns.display()))?;
    let pidfd = target
        .pid
        .map(sys::pidfd_open)
        .transpose()
        .context("pidfd_open")?;
    let mut engine = Engine::new(EngineSetup {
        net,
        resolver,
        tap,
        exit_fd,
        pidfd,
        api_socket: opts.api_socket.clone(),
        vnet_hdr: true,
        tcp_engine: opts.tcp_engine,
    })?;
    if opts.enable_sandbox {
        sluice_slirp::sandbox::enter().context("--enable-sandbox")?;
    }
    if opts.enable_seccomp {
        sluice_slirp::seccomp::enter().context("--enable-seccomp")?;
    }
    if let Some(fd) = ready_fd {
        netns::signal_ready(fd).context("--ready-fd")?;
    }
    eprintln!("sluice-slirp: started, MTU={}", opts.mtu);
    let r = engine.run();
    engine.close_api();
    eprintln!("sluice-slirp: {}", engine.counters());
    Ok(r?)
}
