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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sluice_dataplane::wire::MacAddr;

mod docker_like;
mod docker_like_v6;
pub mod overlay;

pub use docker_like::{
    DockerLike, DockerLikeSpec, Forwarder, Publish, SluiceLaunch, BRIDGE_IF, OUTSIDE, SW, UPLINK_IF,
};

/// How much of each background process's log a failed test prints.
const LOG_TAIL_LINES: usize = 40;

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

    /// Enables IPv6 on `dev` and gives it the v6 address `cidr` without duplicate address
    /// detection, so that it is usable at once (an outside namespace's address).
    pub fn addr6(&self, ns: &str, dev: &str, cidr: &str) -> Result<()> {
        self.sysctl(ns, &format!("net.ipv6.conf.{dev}.disable_ipv6"), "0")?;
        self.ip(ns, &["-6", "addr", "add", cidr, "dev", dev, "nodad"])
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

    /// Prints the end of every background process's log, so that a failed test run (in CI,
    /// where the lab's directory is gone afterwards) shows what the daemons said.
    fn print_log_tails(&self) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut logs: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for path in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!("---- {} (last {} lines)", path.display(), tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
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

    /// Starts a TCP server in `ns` on `port` (`TCP6-LISTEN` when `v6`) that answers every
    /// connection with the output of the shell command `reply` (`echo $SOCAT_PEERADDR` tells
    /// the client which address it came from), logging to `log`; its pid, once it listens.
    pub fn serve(
        &mut self,
        ns: &str,
        (port, v6): (u16, bool),
        reply: &str,
        log: &str,
    ) -> Result<u32> {
        let family = if v6 { "TCP6" } else { "TCP" };
        let listen = format!("{family}-LISTEN:{port},reuseaddr,fork");
        let pid = self.spawn(ns, &["socat", &listen, &format!("SYSTEM:{reply}")], log)?;
        self.wait_listen(ns, port, Duration::from_secs(5))?;
        Ok(pid)
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
        self.wait_reply(ns, ip.into(), timeout)
    }

    /// [`Lab::wait_ping`] over IPv6.
    pub fn wait_ping6(&self, ns: &str, ip: Ipv6Addr, timeout: Duration) -> Result<()> {
        self.wait_reply(ns, ip.into(), timeout)
    }

    fn wait_reply(&self, ns: &str, ip: IpAddr, timeout: Duration) -> Result<()> {
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
        if std::thread::panicking() {
            self.print_log_tails();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
