//! A `sluiced` running in namespaces of its own, for the demo, the tests and the benchmarks:
//! namespace `host` (where sluiced runs; its uplink `up0` is 192.0.2.2/24) wired to namespace
//! `out` (the outside network: 192.0.2.1/24), plus container namespaces added on demand.
//! Everything goes when it drops (the daemon is stopped, the namespaces deleted with every
//! veth in them).

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::lab::{Lab, LabError, Result};

/// sluice's address on the uplink.
pub const UPLINK_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The outside namespace's address (the uplink's next hop).
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// A daemon, its namespaces and its files.
pub struct DaemonLab {
    lab: Lab,
    /// `/etc/netns/NS` directories this lab made (`ip netns exec` bind-mounts their files).
    etc_dirs: Vec<PathBuf>,
    bin_dir: PathBuf,
    extra: Vec<String>,
    pid: Option<u32>,
}

impl DaemonLab {
    /// Builds `host` and `out` and starts `BIN_DIR/sluiced` in `host` with `extra` flags.
    pub fn start(tag: &str, bin_dir: &Path, extra: &[&str]) -> Result<DaemonLab> {
        let mut lab = Lab::new(tag)?;
        lab.add_ns("host")?;
        lab.add_ns("out")?;
        lab.veth(("host", "up0"), ("out", "eth0"))?;
        lab.up("host", "up0")?;
        lab.addr("out", "eth0", &format!("{OUTSIDE_IP}/24"))?;
        lab.up("out", "eth0")?;
        let mut d = DaemonLab {
            lab,
            etc_dirs: Vec::new(),
            bin_dir: bin_dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            pid: None,
        };
        d.launch()?;
        Ok(d)
    }

    /// [`DaemonLab::start`] with one worker and an uplink that also has the v6 address
    /// `uplink6` (a /64) whose next hop is `outside6`, given to the `out` namespace's eth0.
    pub fn start_dual_stack(
        tag: &str,
        bin_dir: &Path,
        uplink6: &str,
        outside6: &str,
    ) -> Result<DaemonLab> {
        let uplink6 = format!("{uplink6}/64");
        let args = [
            "--workers",
            "1",
            "--uplink-ip6",
            &uplink6,
            "--uplink-gateway6",
            outside6,
        ];
        let d = DaemonLab::start(tag, bin_dir, &args)?;
        d.lab.addr6("out", "eth0", &format!("{outside6}/64"))?;
        Ok(d)
    }

    /// The namespaces and processes.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The namespaces and processes, to add more.
    pub fn lab_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.lab.dir().join("sluice.sock")
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.lab.dir().join("state")
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.lab.log_path("sluiced")).unwrap_or_default()
    }

    fn launch(&mut self) -> Result<()> {
        let mut args: Vec<OsString> = vec![
            self.bin_dir.join("sluiced").into(),
            "--socket".into(),
            self.socket().into(),
            "--state-dir".into(),
            self.state_dir().into(),
            "--uplink".into(),
            "up0".into(),
            "--uplink-ip".into(),
            format!("{UPLINK_IP}/24").into(),
            "--uplink-gateway".into(),
            OUTSIDE_IP.to_string().into(),
        ];
        args.extend(self.extra.iter().map(OsString::from));
        let pid = self.lab.spawn_os("host", &args, "sluiced")?;
        self.pid = Some(pid);
        let start = Instant::now();
        loop {
            if self.socket().exists() && self.sluice(&["network", "ls", "-q"]).status.success() {
                return Ok(());
            }
            if !self.lab.alive(pid) || start.elapsed() > Duration::from_secs(20) {
                return Err(LabError::Timeout(format!(
                    "sluiced to answer on {}; its log: {}",
                    self.socket().display(),
                    crate::lab::one_line(&self.log())
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the daemon cleanly (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            self.lab.stop(pid);
        }
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(pid) = self.pid.take() {
            self.lab.kill(pid);
        }
    }

    /// Starts the daemon again on the same state (after `stop` or `kill9`).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    /// Runs the `sluice` CLI against this daemon (from the root namespace: the CLI only
    /// needs the socket).
    pub fn sluice(&self, args: &[&str]) -> Output {
        let mut c = Command::new(self.bin_dir.join("sluice"));
        c.arg("--socket")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null());
        c.output().unwrap_or_else(|e| Output {
            status: std::os::unix::process::ExitStatusExt::from_raw(127 << 8),
            stdout: Vec::new(),
            stderr: format!("cannot run sluice: {e}").into_bytes(),
        })
    }

    /// `sluice ARGS` that must succeed; its standard output.
    pub fn sluice_ok(&self, args: &[&str]) -> Result<String> {
        let o = self.sluice(args);
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(LabError::Failed {
                cmd: format!("sluice {}", args.join(" ")),
                status: o.status.to_string(),
                stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
            })
        }
    }

    /// A new empty container namespace `short`; returns its path (`/run/netns/...`).
    pub fn add_container(&mut self, short: &str) -> Result<String> {
        self.lab.add_ns(short)?;
        Ok(format!("/run/netns/{}", self.lab.ns_name(short)?))
    }
}

impl DaemonLab {
    /// Makes `ip netns exec` in container `short` use `resolv_conf` (a file sluiced wrote for
    /// an endpoint), the way a container runtime bind-mounts it: iproute2 bind-mounts
    /// `/etc/netns/NS/resolv.conf` over `/etc/resolv.conf`. Removed when the lab drops.
    pub fn use_resolv_conf(&mut self, short: &str, resolv_conf: &Path) -> Result<()> {
        let dir = Path::new("/etc/netns").join(self.lab.ns_name(short)?);
        let file = |source| LabError::File {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(file)?;
        self.etc_dirs.push(dir.clone());
        std::fs::copy(resolv_conf, dir.join("resolv.conf")).map_err(file)?;
        Ok(())
    }
}

impl Drop for DaemonLab {
    fn drop(&mut self) {
        self.stop();
        for d in &self.etc_dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
