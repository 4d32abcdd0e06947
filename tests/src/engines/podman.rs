//! A private podman (root, CNI backend) inside a test's own network and mount namespaces.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sluice_lab::lab::Lab;

use super::{engine_lab, file_err, mkdirs, MountNs, Residue, Result};
use crate::engines::{EngineCli, EngineError};

/// Mounts of podman's private mount namespace: fresh `/run` (netns files, libpod's and the
/// runtime's state), `/var/lib` (the CNI cache and anything else written to default places)
/// and `/dev/shm` (libpod's SHM lock segment).
const SETUP: &str = r#"
mount -t tmpfs -o mode=0755 sluice-run /run
mount -t tmpfs -o mode=0755 sluice-varlib /var/lib
mount -t tmpfs -o mode=1777 sluice-shm /dev/shm
"#;

/// Short name of podman's namespace in its lab.
const NS: &str = "pod";

/// Where Debian's containernetworking-plugins are.
pub const SYSTEM_CNI_DIR: &str = "/usr/lib/cni";

/// A root podman of the test's own: the CNI backend with plugins from
/// [`Podman::cni_plugin_dir`] (searched first) and [`SYSTEM_CNI_DIR`], networks from
/// [`Podman::cni_config_dir`], storage, run root and tmp dir under the lab's temp directory,
/// its own containers.conf and storage.conf, run inside its own network namespace (CNI bridges
/// and iptables rules land there) and mount namespace. Removed on drop.
pub struct Podman {
    ns: MountNs,
    dir: PathBuf,
    lab: Lab,
}

impl Podman {
    /// Prepares podman in a new lab tagged `tag` (0-4 lowercase letters). Nothing runs until a
    /// command does.
    pub fn start(tag: &str) -> Result<Podman> {
        let (lab, netns, dir) = engine_lab(tag, NS, "podman")?;
        for d in ["cni-bin", "cni", "storage", "run", "tmp"] {
            mkdirs(&dir.join(d))?;
        }
        let p = |d: &str| dir.join(d).to_string_lossy().into_owned();
        let conf = format!(
            r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[network]
network_backend = "cni"
cni_plugin_dirs = [{bin:?}, {SYSTEM_CNI_DIR:?}]
network_config_dir = {cni:?}

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = {events:?}
tmp_dir = {tmp:?}
static_dir = {static_dir:?}
volume_path = {volumes:?}
"#,
            bin = p("cni-bin"),
            cni = p("cni"),
            events = p("events.log"),
            tmp = p("tmp"),
            static_dir = p("storage/libpod"),
            volumes = p("storage/volumes"),
        );
        let storage = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = {:?}\nrunroot = {:?}\n",
            p("storage"),
            p("run")
        );
        for (name, text) in [("containers.conf", conf), ("storage.conf", storage)] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(file_err(&path))?;
        }
        let ns = MountNs::new(&netns, SETUP, &[])?;
        Ok(Podman { ns, dir, lab })
    }

    /// Runs `podman ARGS...`; an error if it exits non-zero.
    pub fn podman(&self, args: &[&str]) -> Result<Output> {
        self.run_cli(args)
    }

    /// Runs `podman ARGS...` and returns its output whatever its exit status.
    pub fn podman_unchecked(&self, args: &[&str]) -> Result<Output> {
        self.run_cli_unchecked(args)
    }

    /// `podman ARGS...`'s standard output, trimmed; an error if it exits non-zero.
    pub fn podman_stdout(&self, args: &[&str]) -> Result<String> {
        self.cli_stdout(args)
    }

    /// podman's version (e.g. `4.3.1`).
    pub fn version(&self) -> Result<String> {
        self.cli_stdout(&["version", "--format", Self::VERSION_FORMAT])
    }

    /// Imports the busybox rootfs as [`super::BUSYBOX_IMAGE`]; returns the name.
    pub fn import_busybox(&self) -> Result<&'static str> {
        self.import_busybox_image()
    }

    /// Writes a CNI network configuration list (`NAME.conflist`, NAME from its `name` field)
    /// where this podman looks for networks; returns the network's name.
    pub fn add_cni_network(&self, conflist: &serde_json::Value) -> Result<String> {
        let name = conflist["name"]
            .as_str()
            .ok_or_else(|| EngineError::CniData("a conflist needs a name".into()))?
            .to_string();
        let path = self.cni_config_dir().join(format!("{name}.conflist"));
        let text =
            serde_json::to_vec_pretty(conflist).map_err(|e| EngineError::CniData(e.to_string()))?;
        std::fs::write(&path, text).map_err(file_err(&path))?;
        Ok(name)
    }

    /// Where this podman reads CNI network configurations.
    pub fn cni_config_dir(&self) -> PathBuf {
        self.dir.join("cni")
    }

    /// Where this podman looks for CNI plugins first (put or link the plugin under test here).
    pub fn cni_plugin_dir(&self) -> PathBuf {
        self.dir.join("cni-bin")
    }

    /// A command that runs `program` inside podman's network and mount namespaces: how a test
    /// starts a long-running helper (e.g. the plugin) that must see what podman mounts, such as
    /// the sandbox paths (`SandboxKey`) dockerd names in libnetwork calls. Whatever is still
    /// running there when podman is dropped is killed with its mount namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.ns.command(program)
    }

    /// Runs a command inside podman's network and mount namespaces (e.g. `ip link`,
    /// `iptables -S`); an error if it exits non-zero.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        self.ns.exec(args)
    }

    /// The lab holding podman's network namespace.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The lab, mutably (to spawn a helper process next to podman).
    pub fn lab_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }

    /// The lab's short name of podman's network namespace.
    pub fn ns(&self) -> &'static str {
        NS
    }

    /// The full name of podman's network namespace (`/run/netns/NAME`).
    pub fn netns(&self) -> String {
        format!("{}-{NS}", self.lab.prefix())
    }

    /// The directory holding podman's storage and configuration.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What to check after drop ([`Residue::leftovers`]).
    pub fn residue(&self) -> Residue {
        Residue {
            dir: self.lab.dir().to_owned(),
            mount_ns: self.ns.pinned(),
            netns: self.netns(),
            pids: Vec::new(),
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Stops containers through podman (CNI DEL runs for each), then ends whatever is left
        // (conmon) with the mount namespace.
        let _ = self.podman(&["rm", "-af", "-t", "0"]);
        self.ns.shut();
    }
}

impl EngineCli for Podman {
    const IMPORT_CHANGE: &'static str = "--change";
    const VERSION_FORMAT: &'static str = "{{.Client.Version}}";

    fn cli(&self) -> Command {
        let mut cmd = self.ns.command("podman");
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .arg("--network-config-dir")
            .arg(self.dir.join("cni"));
        cmd
    }
}
