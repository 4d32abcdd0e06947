//! A private dockerd inside a test's own network and mount namespaces.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sluice_lab::lab::{one_line, Lab, LabError};

use super::{engine_lab, file_err, kill, mkdirs, MountNs, Residue, Result};
use crate::engines::{EngineCli, EngineError};

/// Debian's docker CLI, the one of the same release as its dockerd (a newer `docker` earlier in
/// PATH would still talk to it, but tests should see the pair a user of docker.io sees).
const DOCKER_CLI: &str = "/usr/bin/docker";

/// Mounts of dockerd's private mount namespace (`$1` = the test's plugin directory):
/// fresh `/run` (its containerd, shim sockets, plugin sockets), `/var/lib` and `/etc/docker`
/// (dockerd writes `key.json` there whatever its flags say), and the test's plugin directory
/// at both places where dockerd discovers plugins (`.sock` and `.spec`/`.json` files).
const SETUP: &str = r#"
mount -t tmpfs -o mode=0755 sluice-run /run
mount -t tmpfs -o mode=0755 sluice-varlib /var/lib
mount -t tmpfs -o mode=0755 sluice-etcdocker /etc/docker
mkdir -p /run/docker/plugins /etc/docker/plugins
mount --bind "$1" /run/docker/plugins
mount --bind "$1" /etc/docker/plugins
"#;

/// Short name of dockerd's namespace in its lab.
const NS: &str = "dock";

/// A dockerd of the test's own: its network namespace (docker0, its iptables rules and
/// ip_forward live there, as on a real host), a private mount namespace, and data-root,
/// exec-root, pidfile, config file and API socket under the lab's temp directory. Stopped and
/// removed on drop.
///
/// Plugins: the directory [`Dockerd::plugins_dir`] is what this dockerd sees as
/// `/run/docker/plugins` and `/etc/docker/plugins`, so a test puts `NAME.sock` (a socket) or
/// `NAME.spec` (a `unix://` URL) there and uses `-d NAME`; two tests never see each other's
/// plugins, even under the same name, and the root namespace's directories stay untouched.
pub struct Dockerd {
    ns: MountNs,
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    plugins: PathBuf,
    cgroup_parent: String,
    started_in: Duration,
    lab: Lab,
}

impl Dockerd {
    /// Starts dockerd with default settings in a new lab tagged `tag` (0-4 lowercase letters).
    pub fn start(tag: &str) -> Result<Dockerd> {
        Self::start_with(tag, &[])
    }

    /// Starts dockerd with extra daemon flags (e.g. `--bridge=none`, `--iptables=false`) and
    /// waits until its API answers.
    pub fn start_with(tag: &str, extra: &[&str]) -> Result<Dockerd> {
        // The mount point of the private tmpfs; stays empty in the root namespace.
        mkdirs(Path::new("/etc/docker"))?;
        let (lab, netns, dir) = engine_lab(tag, NS, "docker")?;
        let plugins = dir.join("plugins");
        for d in ["plugins", "data", "exec", "cli"] {
            mkdirs(&dir.join(d))?;
        }
        let config = dir.join("daemon.json");
        std::fs::write(&config, "{}\n").map_err(file_err(&config))?;
        let ns = MountNs::new(&netns, SETUP, &[plugins.as_os_str()])?;
        let socket = dir.join("docker.sock");
        let cgroup_parent = format!("/{}", lab.prefix());
        let log_path = dir.join("dockerd.log");
        let log = File::create(&log_path).map_err(file_err(&log_path))?;
        let log2 = log.try_clone().map_err(file_err(&log_path))?;
        let mut cmd = ns.command("dockerd");
        cmd.arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--cgroup-parent")
            .arg(&cgroup_parent)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let start = Instant::now();
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            cmd: "dockerd".into(),
            source,
        })?;
        let mut d = Dockerd {
            ns,
            child,
            dir,
            socket,
            plugins,
            cgroup_parent,
            started_in: Duration::ZERO,
            lab,
        };
        d.wait_ready(Duration::from_secs(30))?;
        d.started_in = start.elapsed();
        Ok(d)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let why = match self.docker(&["version", "--format", "{{.Server.Version}}"]) {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            };
            let exited = !matches!(self.child.try_wait(), Ok(None));
            if exited || start.elapsed() > timeout {
                let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(EngineError::NotReady {
                    what: "dockerd".into(),
                    why: format!("{why}; log: {}", one_line(&tail.join("\n"))),
                });
            }
            sleep(Duration::from_millis(25));
        }
    }

    /// Runs `docker ARGS...`; an error if it exits non-zero.
    pub fn docker(&self, args: &[&str]) -> Result<Output> {
        self.run_cli(args)
    }

    /// Runs `docker ARGS...` and returns its output whatever its exit status.
    pub fn docker_unchecked(&self, args: &[&str]) -> Result<Output> {
        self.run_cli_unchecked(args)
    }

    /// `docker ARGS...`'s standard output, trimmed; an error if it exits non-zero.
    pub fn docker_stdout(&self, args: &[&str]) -> Result<String> {
        self.cli_stdout(args)
    }

    /// The server's version (e.g. `20.10.24+dfsg1`).
    pub fn version(&self) -> Result<String> {
        self.cli_stdout(&["version", "--format", Self::VERSION_FORMAT])
    }

    /// Imports the busybox rootfs as [`super::BUSYBOX_IMAGE`]; returns the name.
    pub fn import_busybox(&self) -> Result<&'static str> {
        self.import_busybox_image()
    }

    /// A command that runs `program` inside dockerd's network and mount namespaces: how a test
    /// starts a long-running helper (e.g. the plugin) that must see what dockerd mounts, such as
    /// the sandbox paths (`SandboxKey`) dockerd names in libnetwork calls. Whatever is still
    /// running there when dockerd is dropped is killed with its mount namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.ns.command(program)
    }

    /// Runs a command inside dockerd's network and mount namespaces (e.g. `iptables -S`,
    /// `ip link`, or `nsenter --net=SANDBOX_KEY ...` for a container's sandbox); an error if it
    /// exits non-zero.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        self.ns.exec(args)
    }

    /// The directory dockerd sees as `/run/docker/plugins` and `/etc/docker/plugins`.
    pub fn plugins_dir(&self) -> &Path {
        &self.plugins
    }

    /// Where a plugin named `name` listens so that this dockerd finds it by socket.
    pub fn plugin_socket(&self, name: &str) -> PathBuf {
        self.plugins.join(format!("{name}.sock"))
    }

    /// Writes `NAME.spec` containing `url` (e.g. `unix:///path/to.sock`), the other way dockerd
    /// discovers a plugin; returns the file's path.
    pub fn write_plugin_spec(&self, name: &str, url: &str) -> Result<PathBuf> {
        let path = self.plugins.join(format!("{name}.spec"));
        std::fs::write(&path, format!("{url}\n")).map_err(file_err(&path))?;
        Ok(path)
    }

    /// The lab holding dockerd's network namespace (to spawn a plugin next to it).
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The lab, mutably (`Lab::spawn` of a plugin process; it is stopped after dockerd).
    pub fn lab_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }

    /// The lab's short name of dockerd's network namespace (for `Lab::exec`, `Lab::spawn`).
    pub fn ns(&self) -> &'static str {
        NS
    }

    /// The full name of dockerd's network namespace (`/run/netns/NAME`).
    pub fn netns(&self) -> String {
        format!("{}-{NS}", self.lab.prefix())
    }

    /// The API socket (`unix://` + this path).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// dockerd's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How long dockerd took from spawn until its API answered.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// dockerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// The pid of a running container's init process (`nsenter -t PID -n` enters its network).
    pub fn container_pid(&self, name: &str) -> Result<u32> {
        let pid = self.docker_stdout(&["inspect", "-f", "{{.State.Pid}}", name])?;
        pid.parse().map_err(|_| EngineError::NotReady {
            what: format!("container {name}"),
            why: format!("pid {pid:?}"),
        })
    }

    /// What to check after drop ([`Residue::leftovers`]).
    pub fn residue(&self) -> Residue {
        Residue {
            dir: self.lab.dir().to_owned(),
            mount_ns: self.ns.pinned(),
            netns: self.netns(),
            pids: vec![self.child.id()],
        }
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Ok(ids) = self.docker_stdout(&["ps", "-aq"]) {
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let mut args = vec!["rm", "-f"];
                    args.extend(ids);
                    let _ = self.docker(&args);
                }
            }
            kill(self.child.id(), libc::SIGTERM);
            let start = Instant::now();
            while matches!(self.child.try_wait(), Ok(None))
                && start.elapsed() < Duration::from_secs(10)
            {
                sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.ns.shut();
        remove_cgroups(&self.cgroup_parent);
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes the (empty, now that every container is gone) cgroup parent directories this dockerd
/// made in every cgroup hierarchy, deepest first.
fn remove_cgroups(parent: &str) {
    let name = parent.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(name)];
    if let Ok(entries) = std::fs::read_dir(root) {
        dirs.extend(entries.filter_map(|e| e.ok()).map(|e| e.path().join(name)));
    }
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        remove_tree(dir);
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl EngineCli for Dockerd {
    const IMPORT_CHANGE: &'static str = "-c";
    const VERSION_FORMAT: &'static str = "{{.Server.Version}}";

    fn cli(&self) -> Command {
        let mut cmd = Command::new(if Path::new(DOCKER_CLI).exists() {
            DOCKER_CLI
        } else {
            "docker"
        });
        cmd.env("DOCKER_CONFIG", self.dir.join("cli"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()));
        cmd
    }
}
