//! Test topologies in network namespaces, built with `ip` commands.
//!
//! A [`Lab`] owns every namespace it creates (all named with a per-run unique prefix) and every
//! background process it spawns; dropping it (also while a test panics) kills and reaps the
//! processes and deletes the namespaces, which removes every link inside them. All commands run
//! inside the lab's own namespaces (`ip -n NS`, `ip netns exec NS`): a lab never changes the root
//! namespace's interfaces, routes, firewall or sysctls. Links are created directly inside the
//! namespaces, never in the root namespace.
//!
//! [`DockerLike`] builds docker's default network on top of it: a switch namespace `sw` holding
//! the forwarder, endpoint namespaces with `eth0`, and an `outside` namespace behind the uplink.
//! The forwarder is either the kernel (bridge + iptables, docker0's design) or a sluice process.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sluice_dataplane::config::{
    Config, Ipv4Cidr, L4Proto, NatConfig, NetworkConfig, PortConfig, PortForward, PortRange,
    PortRole, UplinkConfig,
};
use sluice_dataplane::frame::{NetworkId, PortId};
use sluice_dataplane::wire::MacAddr;

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// Why a lab operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The command could not be started at all (missing binary, no permission).
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The command ran and exited with a failure.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// A namespace name that this lab did not create (labs only act on their own namespaces).
    #[error("namespace {0:?} does not belong to this lab")]
    UnknownNs(String),
    /// An interface or namespace name that Linux would reject or that could collide.
    #[error("bad name {0:?}: {1}")]
    BadName(String, &'static str),
    /// A file of the lab (config, log) could not be written.
    #[error("lab file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Something did not become ready in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

/// Result type of lab operations.
pub type Result<T, E = LabError> = std::result::Result<T, E>;

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// The unique prefix of a lab: `sl` + tag + pid + sequence number, so that two runs (or two labs
/// of one run) never collide and a leftover namespace names the process that made it.
pub fn lab_prefix(tag: &str, pid: u32, seq: u32) -> Result<String> {
    if tag.len() > 4 || !tag.chars().all(|c| c.is_ascii_lowercase()) {
        return Err(LabError::BadName(
            tag.into(),
            "a lab tag is 0-4 lowercase letters",
        ));
    }
    Ok(format!("sl{tag}{pid}x{seq}"))
}

/// Checks an interface name: 1..=15 bytes of letters, digits, '-', '_' or '.'.
pub fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        return Err(LabError::BadName(
            name.into(),
            "interface names are 1-15 bytes",
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(LabError::BadName(
            name.into(),
            "interface names use letters, digits, '-', '_', '.'",
        ));
    }
    Ok(())
}

fn render(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// A background process started by a lab.
struct BgProc {
    child: Child,
    cmd: String,
}

/// A set of network namespaces and background processes that is removed on drop.
pub struct Lab {
    prefix: String,
    /// Short names (as callers use them), in creation order.
    namespaces: Vec<String>,
    procs: Vec<BgProc>,
    dir: PathBuf,
}

impl Lab {
    /// An empty lab with a per-run unique prefix derived from `tag` (0-4 lowercase letters) and
    /// a private directory for config and log files.
    pub fn new(tag: &str) -> Result<Lab> {
        let prefix = lab_prefix(
            tag,
            std::process::id(),
            LAB_SEQ.fetch_add(1, Ordering::Relaxed),
        )?;
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).map_err(|source| LabError::File {
            path: dir.clone(),
            source,
        })?;
        Ok(Lab {
            prefix,
            namespaces: Vec::new(),
            procs: Vec::new(),
            dir,
        })
    }

    /// The unique prefix of every namespace of this lab.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lab's private directory (config files, process logs); removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The system-wide name of the lab's namespace `short`.
    pub fn ns_name(&self, short: &str) -> Result<String> {
        if self.namespaces.iter().any(|n| n == short) {
            Ok(format!("{}-{short}", self.prefix))
        } else {
            Err(LabError::UnknownNs(short.into()))
        }
    }

    /// Short names of the lab's namespaces, in creation order.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Creates namespace `short` with its loopback up and IPv6 off (no router solicitations or
    /// DAD noise on the forwarder's ports).
    pub fn add_ns(&mut self, short: &str) -> Result<()> {
        if short.is_empty() || short.len() > 12 || !short.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(LabError::BadName(
                short.into(),
                "namespace names are 1-12 letters or digits",
            ));
        }
        if self.namespaces.iter().any(|n| n == short) {
            return Err(LabError::BadName(short.into(), "namespace exists already"));
        }
        let full = format!("{}-{short}", self.prefix);
        run_host(&os(&["ip", "netns", "add", &full]))?;
        self.namespaces.push(short.into());
        self.ip(short, &["link", "set", "lo", "up"])?;
        self.sysctl(short, "net.ipv6.conf.all.disable_ipv6", "1")?;
        self.sysctl(short, "net.ipv6.conf.default.disable_ipv6", "1")?;
        Ok(())
    }

    /// Runs `ip -n NS ARGS...`.
    pub fn ip(&self, ns: &str, args: &[&str]) -> Result<String> {
        let mut full = os(&["ip", "-n", &self.ns_name(ns)?]);
        full.extend(args.iter().map(OsString::from));
        run_host(&full).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// A veth pair with end `a.1` in namespace `a.0` and end `b.1` in namespace `b.0`; both
    /// ends are created inside the namespaces (never in the root namespace) and left down.
    pub fn veth(&self, a: (&str, &str), b: (&str, &str)) -> Result<()> {
        check_ifname(a.1)?;
        check_ifname(b.1)?;
        let peer_ns = self.ns_name(b.0)?;
        self.ip(
            a.0,
            &[
                "link", "add", a.1, "type", "veth", "peer", "name", b.1, "netns", &peer_ns,
            ],
        )?;
        Ok(())
    }

    /// Adds an address (`ADDR/PREFIX`) to an interface.
    pub fn addr(&self, ns: &str, dev: &str, cidr: &str) -> Result<()> {
        self.ip(ns, &["addr", "add", cidr, "dev", dev]).map(drop)
    }

    /// Sets an interface up.
    pub fn up(&self, ns: &str, dev: &str) -> Result<()> {
        self.ip(ns, &["link", "set", dev, "up"]).map(drop)
    }

    /// Sets an interface's MTU.
    pub fn mtu(&self, ns: &str, dev: &str, mtu: u16) -> Result<()> {
        self.ip(ns, &["link", "set", dev, "mtu", &mtu.to_string()])
            .map(drop)
    }

    /// Sets an interface's MAC address.
    pub fn mac(&self, ns: &str, dev: &str, mac: MacAddr) -> Result<()> {
        self.ip(ns, &["link", "set", dev, "address", &mac.to_string()])
            .map(drop)
    }

    /// Adds a route: `dest` is `default` or `ADDR/PREFIX`, through gateway `via`.
    pub fn route(&self, ns: &str, dest: &str, via: Ipv4Addr) -> Result<()> {
        self.ip(ns, &["route", "add", dest, "via", &via.to_string()])
            .map(drop)
    }

    /// Changes offloads with `ethtool -K DEV feature on|off ...` inside the namespace.
    pub fn ethtool_k(&self, ns: &str, dev: &str, features: &[(&str, bool)]) -> Result<()> {
        let mut args = vec!["ethtool", "-K", dev];
        for (f, on) in features {
            args.push(f);
            args.push(if *on { "on" } else { "off" });
        }
        self.exec(ns, &args).map(drop)
    }

    /// Sets a sysctl inside the namespace (only per-namespace `net.*` keys are accepted, so the
    /// root namespace's settings are never changed through a global key).
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) -> Result<()> {
        if !key.starts_with("net.") || key.starts_with("net.core.") {
            return Err(LabError::BadName(
                key.into(),
                "only per-namespace net.* sysctls may be set",
            ));
        }
        self.exec(ns, &["sysctl", "-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// Runs `iptables ARGS...` inside the namespace.
    pub fn iptables(&self, ns: &str, args: &[&str]) -> Result<()> {
        let mut full = vec!["iptables", "-w"];
        full.extend_from_slice(args);
        self.exec(ns, &full).map(drop)
    }

    fn exec_args(&self, ns: &str, args: &[&str]) -> Result<Vec<OsString>> {
        let mut full = os(&["ip", "netns", "exec", &self.ns_name(ns)?]);
        full.extend(args.iter().map(OsString::from));
        Ok(full)
    }

    /// Runs a command inside the namespace; its standard output on success.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<String> {
        run_host(&self.exec_args(ns, args)?)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Runs a command inside the namespace and returns its output whatever its exit status.
    pub fn exec_output(&self, ns: &str, args: &[&str]) -> Result<Output> {
        let full = self.exec_args(ns, args)?;
        tracing::debug!(cmd = %render(&full), "lab exec");
        Command::new(&full[0])
            .args(&full[1..])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| LabError::Spawn {
                cmd: render(&full),
                source,
            })
    }

    /// Starts a background process inside the namespace, its output going to
    /// `DIR/LOG.log`; returns its pid (the program's own: `ip netns exec` execs it). It is
    /// killed and reaped when the lab drops, or earlier with [`Lab::stop`].
    pub fn spawn(&mut self, ns: &str, args: &[&str], log: &str) -> Result<u32> {
        self.spawn_os(ns, &os(args), log)
    }

    /// [`Lab::spawn`] with arguments that may not be UTF-8 (paths).
    pub fn spawn_os(&mut self, ns: &str, args: &[OsString], log: &str) -> Result<u32> {
        let mut full = os(&["ip", "netns", "exec", &self.ns_name(ns)?]);
        full.extend(args.iter().cloned());
        let path = self.dir.join(format!("{log}.log"));
        let out = File::create(&path).map_err(|source| LabError::File {
            path: path.clone(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| LabError::File {
            path: path.clone(),
            source,
        })?;
        let cmd = render(&full);
        tracing::debug!(%cmd, "lab spawn");
        let child = Command::new(&full[0])
            .args(&full[1..])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| LabError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        let pid = child.id();
        self.procs.push(BgProc { child, cmd });
        Ok(pid)
    }

    /// The log file of a background process started with `log` as its name.
    pub fn log_path(&self, log: &str) -> PathBuf {
        self.dir.join(format!("{log}.log"))
    }

    /// True while the background process `pid` (started by this lab) runs.
    pub fn alive(&mut self, pid: u32) -> bool {
        self.procs
            .iter_mut()
            .find(|p| p.child.id() == pid)
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    /// Stops (SIGTERM, then SIGKILL after 2 s) and reaps one background process of this lab.
    pub fn stop(&mut self, pid: u32) {
        if let Some(i) = self.procs.iter().position(|p| p.child.id() == pid) {
            let p = self.procs.remove(i);
            stop_child(p);
        }
    }

    /// Kills (SIGKILL, no chance to clean up: a crash) and reaps one background process.
    pub fn kill(&mut self, pid: u32) {
        if let Some(i) = self.procs.iter().position(|p| p.child.id() == pid) {
            let mut p = self.procs.remove(i);
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// Freezes (SIGSTOP) a background process of this lab, e.g. an idle forwarder that polls
    /// while another one is measured.
    pub fn pause(&self, pid: u32) {
        self.signal(pid, libc::SIGSTOP);
    }

    /// Resumes (SIGCONT) a process frozen with [`Lab::pause`].
    pub fn resume(&self, pid: u32) {
        self.signal(pid, libc::SIGCONT);
    }

    fn signal(&self, pid: u32, sig: libc::c_int) {
        if self.procs.iter().any(|p| p.child.id() == pid) {
            if let Ok(p) = libc::pid_t::try_from(pid) {
                // A child this lab spawned and has not reaped.
                sluice_sys::signal(p, sig);
            }
        }
    }

    /// Waits until something listens on `port` (TCP or UDP) inside the namespace.
    pub fn wait_listen(&self, ns: &str, port: u16, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let out = self.exec(ns, &["ss", "-Hltun"])?;
            if listening_ports(&out).contains(&port) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(LabError::Timeout(format!("a listener on {ns}:{port}")));
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Pings `ip` from the namespace until one reply comes back or `timeout` passes.
    pub fn wait_ping(&self, ns: &str, ip: Ipv4Addr, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let ip = ip.to_string();
        loop {
            let o = self.exec_output(ns, &["ping", "-c", "1", "-W", "1", "-q", &ip])?;
            if o.status.success() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(LabError::Timeout(format!("a ping reply from {ip} in {ns}")));
            }
            sleep(Duration::from_millis(100));
        }
    }
}

/// Ports of listening sockets in `ss -Hltun` output (local address in column 5).
pub fn listening_ports(ss: &str) -> BTreeSet<u16> {
    ss.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter_map(|a| a.rsplit_once(':'))
        .filter_map(|(_, p)| p.parse().ok())
        .collect()
}

/// Joins the non-empty lines of a tool's message with " / " (at most 400 characters), so that
/// errors fit on one line of a report.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
        .chars()
        .take(400)
        .collect()
}

fn stop_child(mut p: BgProc) {
    if matches!(p.child.try_wait(), Ok(None)) {
        if let Ok(pid) = libc::pid_t::try_from(p.child.id()) {
            // Our own unreaped child; SIGCONT first in case it was paused.
            sluice_sys::signal(pid, libc::SIGCONT);
            sluice_sys::signal(pid, libc::SIGTERM);
        }
        let start = Instant::now();
        while matches!(p.child.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(2) {
            sleep(Duration::from_millis(20));
        }
        if matches!(p.child.try_wait(), Ok(None)) {
            tracing::warn!(cmd = %p.cmd, "background process ignored SIGTERM; killing it");
            let _ = p.child.kill();
        }
    }
    let _ = p.child.wait();
}

fn run_host(args: &[OsString]) -> Result<Output> {
    let cmd = render(args);
    tracing::debug!(%cmd, "lab run");
    let out = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(out)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr.trim().chars().rev().take(400).collect();
        Err(LabError::Failed {
            cmd,
            status: out.status.to_string(),
            stderr: one_line(&tail.chars().rev().collect::<String>()),
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in std::mem::take(&mut self.procs) {
            stop_child(p);
        }
        for short in self.namespaces.iter().rev() {
            let full = format!("{}-{short}", self.prefix);
            // Processes left in our namespaces were started from inside them by us (through
            // `exec`); end them by pid so the namespace really goes away.
            if let Ok(o) = Command::new("ip").args(["netns", "pids", &full]).output() {
                for pid in String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse::<libc::pid_t>().ok())
                {
                    // A process inside a namespace this lab created.
                    sluice_sys::signal(pid, libc::SIGKILL);
                }
            }
            if let Err(e) = run_host(&os(&["ip", "netns", "del", &full])) {
                tracing::warn!("lab cleanup: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Who forwards inside the switch namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forwarder {
    /// docker0's design: a Linux bridge holding the gateway address, ip_forward, iptables
    /// MASQUERADE and DNAT, all inside `sw`.
    Kernel,
    /// A sluice process inside `sw` over the unaddressed veth ends.
    Sluice(SluiceLaunch),
}

impl Forwarder {
    /// Short name for reports ("kernel", "sluice").
    pub fn name(&self) -> &'static str {
        match self {
            Forwarder::Kernel => "kernel",
            Forwarder::Sluice(_) => "sluice",
        }
    }
}

/// How a sluice dataplane process is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SluiceLaunch {
    /// The `sluice` binary.
    pub bin: PathBuf,
    /// Extra arguments for `sluice dataplane` (e.g. `--workers 1`).
    pub args: Vec<String>,
}

impl SluiceLaunch {
    /// Runs `bin` with default settings.
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        SluiceLaunch {
            bin: bin.into(),
            args: Vec::new(),
        }
    }

    /// Where the dataplane started on `config` writes its counters (JSON, every 200 ms).
    pub fn stats_path(config: &Path) -> PathBuf {
        config.with_file_name("sluice-stats.json")
    }

    /// The command line that runs the dataplane on a config file.
    pub fn command(&self, config: &Path) -> Vec<OsString> {
        let mut cmd = vec![
            self.bin.clone().into_os_string(),
            "dataplane".into(),
            "--config".into(),
            config.as_os_str().to_owned(),
            "--stats-file".into(),
            Self::stats_path(config).into_os_string(),
        ];
        cmd.extend(self.args.iter().map(OsString::from));
        cmd
    }
}

/// A published port: `uplink_ip:host_port` on the uplink reaches `endpoint:target_port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// TCP or UDP.
    pub proto: L4Proto,
    /// Port on the uplink address.
    pub host_port: u16,
    /// Endpoint namespace name.
    pub endpoint: String,
    /// Port inside the endpoint.
    pub target_port: u16,
}

/// Shape of a docker-like topology: endpoints, published ports, MTU and offloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerLikeSpec {
    /// Endpoint namespace names (1-10 letters/digits each), e.g. `a`, `b`, `c`.
    pub endpoints: Vec<String>,
    /// Published ports.
    pub publish: Vec<Publish>,
    /// MTU of every link (None: the veth default, 1500).
    pub mtu: Option<u16>,
    /// Offload changes applied to every endpoint's and the outside's `eth0` (`ethtool -K`).
    pub endpoint_offloads: Vec<(String, bool)>,
    /// Inter-container communication (docker's `com.docker.network.bridge.enable_icc`);
    /// false: endpoints reach the gateway and the outside but not each other. The kernel
    /// forwarder's DROP rule sees bridged frames only with `br_netfilter` loaded, as in docker.
    pub icc: bool,
}

impl Default for DockerLikeSpec {
    fn default() -> Self {
        DockerLikeSpec {
            endpoints: vec!["a".into(), "b".into()],
            publish: Vec::new(),
            mtu: None,
            endpoint_offloads: Vec::new(),
            icc: true,
        }
    }
}

/// The switch namespace.
pub const SW: &str = "sw";
/// The outside namespace (the "internet" behind the uplink).
pub const OUTSIDE: &str = "outside";
/// Name of the uplink veth end inside `sw`.
pub const UPLINK_IF: &str = "uplink0";
/// Name of the kernel bridge inside `sw`.
pub const BRIDGE_IF: &str = "br0";

impl DockerLikeSpec {
    /// docker's default subnet.
    pub fn subnet(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: Ipv4Addr::new(172, 17, 0, 0),
            prefix: 16,
        }
    }

    /// The gateway address (docker0's).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(172, 17, 0, 1)
    }

    /// The gateway MAC (docker style: 02:42 + address).
    pub fn gateway_mac(&self) -> MacAddr {
        MacAddr::from_ipv4(self.gateway())
    }

    /// The address of endpoint number `i` (.2, .3, ...).
    pub fn endpoint_ip(&self, i: usize) -> Ipv4Addr {
        let host = u32::try_from(i).unwrap_or(u32::MAX - 2).saturating_add(2);
        Ipv4Addr::from(u32::from(self.subnet().network()).saturating_add(host))
    }

    /// The address of the named endpoint.
    pub fn ip_of(&self, endpoint: &str) -> Option<Ipv4Addr> {
        self.endpoints
            .iter()
            .position(|e| e == endpoint)
            .map(|i| self.endpoint_ip(i))
    }

    /// The MAC of endpoint number `i` (docker style).
    pub fn endpoint_mac(&self, i: usize) -> MacAddr {
        MacAddr::from_ipv4(self.endpoint_ip(i))
    }

    /// The veth end inside `sw` that leads to endpoint `name`.
    pub fn sw_port(name: &str) -> String {
        format!("veth-{name}")
    }

    /// The forwarder's uplink address and prefix.
    pub fn uplink_ip(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: Ipv4Addr::new(198, 18, 0, 1),
            prefix: 24,
        }
    }

    /// The forwarder's uplink MAC.
    pub fn uplink_mac(&self) -> MacAddr {
        MacAddr::from_ipv4(self.uplink_ip().addr)
    }

    /// The outside namespace's address (also the uplink's next hop).
    pub fn outside_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 2)
    }

    fn mtu_or_default(&self) -> u16 {
        self.mtu.unwrap_or(1500)
    }

    /// The sluice configuration for this topology: one network, one endpoint port per
    /// endpoint (ids 0..n, in `endpoints` order), the uplink as port n, and the published ports.
    pub fn sluice_config(&self) -> Result<Config> {
        let net = NetworkId(0);
        let mut ports = Vec::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            ports.push(PortConfig {
                id: PortId(port_index(i)?),
                name: Self::sw_port(e),
                io: Default::default(),
                role: PortRole::Endpoint {
                    network: net,
                    vlan: 0,
                    mac: self.endpoint_mac(i),
                    ipv4: Some(self.endpoint_ip(i)),
                    ipv6: None,
                },
            });
        }
        let uplink_port = PortId(port_index(self.endpoints.len())?);
        ports.push(PortConfig {
            id: uplink_port,
            name: UPLINK_IF.into(),
            io: Default::default(),
            role: PortRole::Uplink,
        });
        let mut forwards = Vec::new();
        for p in &self.publish {
            let target_ip = self
                .ip_of(&p.endpoint)
                .ok_or_else(|| LabError::UnknownNs(p.endpoint.clone()))?;
            forwards.push(PortForward {
                proto: p.proto,
                host_ip: None,
                host_ports: PortRange::single(p.host_port),
                network: net,
                target_ip,
                target_ports: PortRange::single(p.target_port),
            });
        }
        Ok(Config {
            networks: vec![NetworkConfig {
                gateway_mac: self.gateway_mac(),
                icc: self.icc,
                mtu: self.mtu_or_default(),
                ..NetworkConfig::new(net, "bridge", self.subnet(), self.gateway())
            }],
            ports,
            uplink: Some(UplinkConfig {
                port: uplink_port,
                ip: self.uplink_ip(),
                mac: self.uplink_mac(),
                next_hop: Some(self.outside_ip()),
                mtu: self.mtu_or_default(),
            }),
            network_uplinks: Vec::new(),
            forwards,
            nat: NatConfig::default(),
            overlays: Vec::new(),
            uplinks6: Vec::new(),
        })
    }

    /// The iptables rules docker 20.10 installs for this network, as argument lists (run
    /// inside `sw` only): MASQUERADE of the subnet, DNAT of each published port, and the
    /// FORWARD accepts with a DROP policy (bridge-internal traffic dropped without ICC).
    pub fn kernel_iptables(&self) -> Result<Vec<Vec<String>>> {
        let subnet = self.subnet().to_string();
        let br = BRIDGE_IF;
        let uplink = format!("{}/32", self.uplink_ip().addr);
        let mut rules: Vec<Vec<String>> = vec![
            s(&[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                &subnet,
                "!",
                "-o",
                br,
                "-j",
                "MASQUERADE",
            ]),
            s(&["-P", "FORWARD", "DROP"]),
            s(&[
                "-A",
                "FORWARD",
                "-o",
                br,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ]),
            s(&["-A", "FORWARD", "-i", br, "!", "-o", br, "-j", "ACCEPT"]),
            s(&[
                "-A",
                "FORWARD",
                "-i",
                br,
                "-o",
                br,
                "-j",
                if self.icc { "ACCEPT" } else { "DROP" },
            ]),
        ];
        for p in &self.publish {
            let ip = self
                .ip_of(&p.endpoint)
                .ok_or_else(|| LabError::UnknownNs(p.endpoint.clone()))?;
            let proto = match p.proto {
                L4Proto::Tcp => "tcp",
                L4Proto::Udp => "udp",
                L4Proto::Icmp => {
                    return Err(LabError::BadName(
                        "icmp".into(),
                        "published ports are TCP or UDP",
                    ))
                }
            };
            let hp = p.host_port.to_string();
            let tp = p.target_port.to_string();
            rules.push(s(&[
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-d",
                &uplink,
                "-p",
                proto,
                "--dport",
                &hp,
                "-j",
                "DNAT",
                "--to-destination",
                &format!("{ip}:{tp}"),
            ]));
            rules.push(s(&[
                "-A",
                "FORWARD",
                "-d",
                &format!("{ip}/32"),
                "!",
                "-i",
                br,
                "-o",
                br,
                "-p",
                proto,
                "--dport",
                &tp,
                "-j",
                "ACCEPT",
            ]));
        }
        Ok(rules)
    }
}

fn s(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn port_index(i: usize) -> Result<u16> {
    u16::try_from(i).map_err(|_| LabError::BadName(i.to_string(), "too many ports"))
}

/// A built docker-like topology: the lab, its shape, and the forwarder running in `sw`.
pub struct DockerLike {
    /// The namespaces and processes (dropped last: removes everything).
    pub lab: Lab,
    /// The shape it was built from.
    pub spec: DockerLikeSpec,
    /// The forwarder filling `sw`.
    pub forwarder: Forwarder,
    /// pid of the forwarder process (sluice), None for the kernel.
    pub forwarder_pid: Option<u32>,
}

impl DockerLike {
    /// Builds the topology in a new lab tagged `tag` and starts the forwarder; returns once
    /// every endpoint reaches the gateway and the outside reaches the uplink address.
    pub fn build(tag: &str, spec: DockerLikeSpec, forwarder: Forwarder) -> Result<DockerLike> {
        for e in &spec.endpoints {
            if e.len() > IFNAME_MAX - "veth-".len() || e == SW || e == OUTSIDE {
                return Err(LabError::BadName(
                    e.clone(),
                    "endpoint names are 1-10 characters, not sw/outside",
                ));
            }
        }
        let mut lab = Lab::new(tag)?;
        lab.add_ns(SW)?;
        lab.add_ns(OUTSIDE)?;
        let mtu = spec.mtu;
        let link = |lab: &Lab, ns: &str, dev: &str| -> Result<()> {
            if let Some(m) = mtu {
                lab.mtu(ns, dev, m)?;
            }
            lab.up(ns, dev)
        };
        let offloads: Vec<(&str, bool)> = spec
            .endpoint_offloads
            .iter()
            .map(|(f, on)| (f.as_str(), *on))
            .collect();
        for (i, e) in spec.endpoints.iter().enumerate() {
            lab.add_ns(e)?;
            let port = DockerLikeSpec::sw_port(e);
            lab.veth((SW, &port), (e, "eth0"))?;
            lab.mac(e, "eth0", spec.endpoint_mac(i))?;
            lab.addr(
                e,
                "eth0",
                &format!("{}/{}", spec.endpoint_ip(i), spec.subnet().prefix),
            )?;
            link(&lab, e, "eth0")?;
            link(&lab, SW, &port)?;
            lab.route(e, "default", spec.gateway())?;
            if !offloads.is_empty() {
                lab.ethtool_k(e, "eth0", &offloads)?;
            }
        }
        lab.veth((SW, UPLINK_IF), (OUTSIDE, "eth0"))?;
        lab.addr(
            OUTSIDE,
            "eth0",
            &format!("{}/{}", spec.outside_ip(), spec.uplink_ip().prefix),
        )?;
        link(&lab, OUTSIDE, "eth0")?;
        link(&lab, SW, UPLINK_IF)?;
        if !offloads.is_empty() {
            lab.ethtool_k(OUTSIDE, "eth0", &offloads)?;
        }
        let forwarder_pid = match &forwarder {
            Forwarder::Kernel => {
                fill_kernel(&lab, &spec)?;
                None
            }
            Forwarder::Sluice(launch) => Some(fill_sluice(&mut lab, &spec, launch)?),
        };
        let topo = DockerLike {
            lab,
            spec,
            forwarder,
            forwarder_pid,
        };
        topo.wait_ready(Duration::from_secs(10))?;
        Ok(topo)
    }

    /// Waits until each endpoint pings the gateway and the outside pings the uplink address.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        for e in &self.spec.endpoints {
            self.lab.wait_ping(e, self.spec.gateway(), timeout)?;
        }
        self.lab
            .wait_ping(OUTSIDE, self.spec.uplink_ip().addr, timeout)
    }

    /// The sluice process's latest counters (`Dataplane::stats` as JSON), if it runs one.
    pub fn sluice_stats(&self) -> Option<serde_json::Value> {
        self.forwarder_pid?;
        let path = SluiceLaunch::stats_path(&self.lab.dir().join("sluice.json"));
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// The address of the named endpoint; an error for an unknown name.
    pub fn ip(&self, endpoint: &str) -> Result<Ipv4Addr> {
        self.spec
            .ip_of(endpoint)
            .ok_or_else(|| LabError::UnknownNs(endpoint.into()))
    }
}

fn fill_kernel(lab: &Lab, spec: &DockerLikeSpec) -> Result<()> {
    lab.ip(SW, &["link", "add", BRIDGE_IF, "type", "bridge"])?;
    lab.mac(SW, BRIDGE_IF, spec.gateway_mac())?;
    if let Some(m) = spec.mtu {
        lab.mtu(SW, BRIDGE_IF, m)?;
    }
    lab.addr(
        SW,
        BRIDGE_IF,
        &format!("{}/{}", spec.gateway(), spec.subnet().prefix),
    )?;
    for e in &spec.endpoints {
        lab.ip(
            SW,
            &[
                "link",
                "set",
                &DockerLikeSpec::sw_port(e),
                "master",
                BRIDGE_IF,
            ],
        )?;
    }
    lab.up(SW, BRIDGE_IF)?;
    lab.addr(SW, UPLINK_IF, &spec.uplink_ip().to_cidr_string())?;
    lab.route(SW, "default", spec.outside_ip())?;
    lab.sysctl(SW, "net.ipv4.ip_forward", "1")?;
    for rule in spec.kernel_iptables()? {
        let args: Vec<&str> = rule.iter().map(String::as_str).collect();
        lab.iptables(SW, &args)?;
    }
    Ok(())
}

fn fill_sluice(lab: &mut Lab, spec: &DockerLikeSpec, launch: &SluiceLaunch) -> Result<u32> {
    let cfg = spec.sluice_config()?;
    let path = lab.dir().join("sluice.json");
    let json = serde_json::to_vec_pretty(&cfg).map_err(|e| LabError::File {
        path: path.clone(),
        source: e.into(),
    })?;
    std::fs::write(&path, json).map_err(|source| LabError::File {
        path: path.clone(),
        source,
    })?;
    let pid = lab.spawn_os(SW, &launch.command(&path), "sluice")?;
    sleep(Duration::from_millis(200));
    if !lab.alive(pid) {
        let log = std::fs::read_to_string(lab.log_path("sluice")).unwrap_or_default();
        return Err(LabError::Failed {
            cmd: render(&launch.command(&path)),
            status: "exited at start-up".into(),
            stderr: one_line(&log),
        });
    }
    Ok(pid)
}

/// `ADDR/PREFIX` with the address kept (Ipv4Cidr's Display prints the network).
trait CidrString {
    fn to_cidr_string(&self) -> String;
}

impl CidrString for Ipv4Cidr {
    fn to_cidr_string(&self) -> String {
        format!("{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DockerLikeSpec {
        DockerLikeSpec {
            endpoints: vec!["a".into(), "b".into(), "c".into()],
            publish: vec![Publish {
                proto: L4Proto::Tcp,
                host_port: 8080,
                endpoint: "b".into(),
                target_port: 80,
            }],
            ..DockerLikeSpec::default()
        }
    }

    #[test]
    fn prefixes_are_short_and_unique() {
        let p = lab_prefix("kb", 4_194_304, 12).unwrap();
        assert_eq!(p, "slkb4194304x12");
        assert_ne!(p, lab_prefix("kb", 4_194_304, 13).unwrap());
        assert!(lab_prefix("Bad", 1, 0).is_err());
        assert!(lab_prefix("toolong", 1, 0).is_err());
    }

    #[test]
    fn messages_fit_one_line() {
        assert_eq!(
            one_line("error: bad\n\nUsage: sluice\n  more\n"),
            "error: bad / Usage: sluice / more"
        );
        assert_eq!(one_line(&"x".repeat(500)).len(), 400);
    }

    #[test]
    fn ifnames_are_checked() {
        assert!(check_ifname("veth-abcdefghij").is_ok());
        assert!(check_ifname("veth-abcdefghijk").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("a b").is_err());
        assert!(check_ifname("a/b").is_err());
    }

    #[test]
    fn ss_output_gives_ports() {
        let ss = "tcp   LISTEN 0      5            0.0.0.0:5201      0.0.0.0:*\n\
                  udp   UNCONN 0      0       172.17.0.3:11112      0.0.0.0:*\n\
                  tcp   LISTEN 0      4096            [::]:80           [::]:*\n";
        let ports = listening_ports(ss);
        assert_eq!(ports.into_iter().collect::<Vec<_>>(), vec![80, 5201, 11112]);
    }

    #[test]
    fn addressing_follows_docker() {
        let s = spec();
        assert_eq!(s.endpoint_ip(0), Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(s.ip_of("c"), Some(Ipv4Addr::new(172, 17, 0, 4)));
        assert_eq!(s.ip_of("zz"), None);
        assert_eq!(s.endpoint_mac(1).to_string(), "02:42:ac:11:00:03");
        assert_eq!(s.gateway_mac().to_string(), "02:42:ac:11:00:01");
        assert!(s.subnet().contains(s.gateway()));
        assert!(s.uplink_ip().contains(s.outside_ip()));
        assert!(!s.subnet().overlaps(&s.uplink_ip()));
    }

    #[test]
    fn sluice_config_matches_topology() {
        let s = spec();
        let cfg = s.sluice_config().unwrap();
        assert_eq!(cfg.ports.len(), 4);
        assert_eq!(cfg.ports[1].name, "veth-b");
        assert_eq!(
            cfg.ports[1].role,
            PortRole::Endpoint {
                network: NetworkId(0),
                vlan: 0,
                mac: s.endpoint_mac(1),
                ipv4: Some(Ipv4Addr::new(172, 17, 0, 3)),
                ipv6: None,
            }
        );
        let up = cfg.uplink.as_ref().unwrap();
        assert_eq!(up.port, PortId(3));
        assert_eq!(cfg.ports[3].role, PortRole::Uplink);
        assert_eq!(cfg.ports[3].name, UPLINK_IF);
        assert_eq!(up.next_hop, Some(s.outside_ip()));
        assert_eq!(cfg.forwards.len(), 1);
        assert_eq!(cfg.forwards[0].target_ip, Ipv4Addr::new(172, 17, 0, 3));
        assert_eq!(cfg.forwards[0].host_ports, PortRange::single(8080));
        for p in &cfg.ports {
            check_ifname(&p.name).unwrap();
        }
        let json = serde_json::to_string(&cfg).unwrap();
        let back: Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn unknown_publish_target_is_an_error() {
        let mut s = spec();
        s.publish[0].endpoint = "nope".into();
        assert!(matches!(s.sluice_config(), Err(LabError::UnknownNs(_))));
        assert!(matches!(s.kernel_iptables(), Err(LabError::UnknownNs(_))));
    }

    #[test]
    fn kernel_rules_are_dockers() {
        let rules: Vec<String> = spec()
            .kernel_iptables()
            .unwrap()
            .iter()
            .map(|r| r.join(" "))
            .collect();
        assert!(rules.contains(
            &"-t nat -A POSTROUTING -s 172.17.0.0/16 ! -o br0 -j MASQUERADE".to_string()
        ));
        assert!(rules.contains(
            &"-t nat -A PREROUTING -d 198.18.0.1/32 -p tcp --dport 8080 -j DNAT --to-destination 172.17.0.3:80"
                .to_string()
        ));
        assert!(rules.contains(
            &"-A FORWARD -d 172.17.0.3/32 ! -i br0 -o br0 -p tcp --dport 80 -j ACCEPT".to_string()
        ));
        assert!(rules.contains(&"-A FORWARD -i br0 -o br0 -j ACCEPT".to_string()));
    }

    #[test]
    fn icc_off_reaches_both_forwarders() {
        let s = DockerLikeSpec {
            icc: false,
            ..spec()
        };
        assert!(spec().sluice_config().unwrap().networks[0].icc);
        assert!(!s.sluice_config().unwrap().networks[0].icc);
        let rules: Vec<String> = s
            .kernel_iptables()
            .unwrap()
            .iter()
            .map(|r| r.join(" "))
            .collect();
        assert!(rules.contains(&"-A FORWARD -i br0 -o br0 -j DROP".to_string()));
        assert!(!rules.contains(&"-A FORWARD -i br0 -o br0 -j ACCEPT".to_string()));
    }

    #[test]
    fn sluice_command_line() {
        let mut l = SluiceLaunch::new("sluice");
        l.args.push("--workers=1".into());
        let c = l.command(Path::new("d/cfg.json"));
        assert_eq!(
            render(&c),
            "sluice dataplane --config d/cfg.json --stats-file d/sluice-stats.json --workers=1"
        );
    }

    #[test]
    fn labs_refuse_foreign_namespaces() {
        let lab = Lab::new("ut").unwrap();
        assert!(matches!(lab.ns_name("sw"), Err(LabError::UnknownNs(_))));
        assert!(matches!(
            lab.ip("sw", &["link"]),
            Err(LabError::UnknownNs(_))
        ));
        assert!(matches!(
            lab.sysctl("sw", "net.ipv4.ip_forward", "1"),
            Err(LabError::UnknownNs(_))
        ));
        let dir = lab.dir().to_owned();
        assert!(dir.exists());
        drop(lab);
        assert!(!dir.exists());
    }
}
