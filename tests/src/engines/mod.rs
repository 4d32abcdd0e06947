//! Real container engines for sluice's plugin tests: a private dockerd ([`Dockerd`]), a private
//! podman with the CNI backend ([`Podman`]), a CNI runner ([`cni::CniRunner`]) and a busybox image
//! built from the machine's static busybox ([`busybox_tar`]).
//!
//! Isolation: every engine lives in a network namespace of its own (a [`Lab`] with a per-run
//! unique prefix) AND in a private mount namespace ([`MountNs`]) that has fresh tmpfs over
//! `/run` and `/var/lib` (and, for dockerd, `/etc/docker`). So whatever the engine mounts (overlay
//! roots, netns bind mounts), its plugin discovery directories, its containerd and its lock files
//! stay invisible to the root namespace and to parallel tests, and all of it disappears when the
//! last process of that mount namespace ends. Dropping an engine stops it, kills what is left in
//! its mount namespace, then the lab deletes the network namespace and the temp directory.
//! [`Residue`] checks afterwards that nothing is left.

pub mod cni;
mod docker;
mod podman;

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sluice_lab::lab::{one_line, Lab, LabError};

pub use cni::{CniCommand, CniError, CniRunner, CniRuntime};

/// A container engine's CLI pointed at one test's daemon: what `Dockerd` and `Podman` share.
pub trait EngineCli {
    /// The CLI with the flags and environment that point it at this test's daemon.
    fn cli(&self) -> Command;
    /// The flag `import` takes a Dockerfile instruction with (`-c` or `--change`).
    const IMPORT_CHANGE: &'static str;
    /// The `version --format` template of the version worth logging.
    const VERSION_FORMAT: &'static str;

    /// Runs the CLI with `args`; an error if it exits non-zero.
    fn run_cli(&self, args: &[&str]) -> Result<Output> {
        run(self.cli().args(args), COMMAND_TIMEOUT)
    }

    /// Runs the CLI with `args` and returns its output whatever its exit status.
    fn run_cli_unchecked(&self, args: &[&str]) -> Result<Output> {
        run_unchecked(self.cli().args(args), None, COMMAND_TIMEOUT)
    }

    /// The CLI's standard output, trimmed; an error if it exits non-zero.
    fn cli_stdout(&self, args: &[&str]) -> Result<String> {
        let out = self.run_cli(args)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Imports the busybox rootfs ([`busybox_tar`]) as [`BUSYBOX_IMAGE`]; returns the name.
    fn import_busybox_image(&self) -> Result<&'static str> {
        let tar = busybox_tar()?;
        let tar = tar.to_string_lossy();
        self.run_cli(&[
            "import",
            Self::IMPORT_CHANGE,
            r#"CMD ["sh"]"#,
            &tar,
            BUSYBOX_IMAGE,
        ])?;
        Ok(BUSYBOX_IMAGE)
    }
}
pub use docker::Dockerd;
pub use podman::Podman;

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A lab (namespace) operation failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// A command exited with a failure.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// Its standard error on one line.
        stderr: String,
        /// Its whole output, for callers that look at stdout of a failed command.
        output: Box<Output>,
    },
    /// A command did not finish in time (it was killed).
    #[error("`{cmd}` did not finish within {secs} s")]
    Timeout {
        /// The command line.
        cmd: String,
        /// The limit.
        secs: u64,
    },
    /// A file of the engine could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A daemon did not become ready.
    #[error("{what} did not become ready: {why}")]
    NotReady {
        /// The daemon.
        what: String,
        /// The last error or the end of its log.
        why: String,
    },
    /// A CNI plugin answered with a CNI error.
    #[error("CNI {command} of plugin {plugin}: {error}")]
    Cni {
        /// The plugin type.
        plugin: String,
        /// ADD, CHECK or DEL.
        command: CniCommand,
        /// The plugin's error object.
        error: CniError,
    },
    /// A network configuration or a plugin's answer is not what the CNI spec allows.
    #[error("bad CNI data: {0}")]
    CniData(String),
}

/// Result type of engine operations.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// How long one engine command (`docker ...`, `podman ...`) may take before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// True when the tests run as root (engines need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The first of `tools` that is not installed (`command -v` fails), if any: engine tests skip
/// with a message instead of failing on a machine that has not run `scripts/setup-engines.sh`.
pub fn missing_tool<'a>(tools: &[&'a str]) -> Option<&'a str> {
    tools.iter().copied().find(|t| {
        !Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn render(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::File {
        path: path.to_owned(),
        source,
    }
}

/// Runs a command with its output captured, killing it after `timeout`; the output whatever
/// the exit status (an error only if it could not run or timed out).
pub fn run_unchecked(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let line = render(cmd);
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            cmd: line.clone(),
            source,
        })?;
    let writer = match (input, child.stdin.take()) {
        (Some(data), Some(mut stdin)) => {
            let data = data.to_vec();
            Some(std::thread::spawn(move || {
                use std::io::Write;
                // A plugin that exits without reading its config gives EPIPE: its exit status
                // and output tell what happened.
                let _ = stdin.write_all(&data);
            }))
        }
        _ => None,
    };
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() < timeout => sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(EngineError::Timeout {
                    cmd: line,
                    secs: timeout.as_secs(),
                });
            }
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// [`run_unchecked`] that turns a non-zero exit into [`EngineError::Failed`].
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let line = render(cmd);
    let out = run_unchecked(cmd, None, timeout)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(EngineError::Failed {
            cmd: line,
            status: out.status.to_string(),
            stderr: one_line(&String::from_utf8_lossy(&out.stderr)),
            output: Box::new(out),
        })
    }
}

/// The identity of a namespace (`mnt:[4026532...]`) of a process, if it still exists.
fn ns_id(pid: u32, kind: &str) -> Option<OsString> {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(PathBuf::into_os_string)
}

/// Pids of every process whose mount namespace is `id`.
fn pids_in_mount_ns(id: &OsStr) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| ns_id(pid, "mnt").as_deref() == Some(id))
        .collect()
}

fn kill(pid: u32, sig: libc::c_int) {
    if let Ok(p) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) on a process of an engine this harness started (its own child or a
        // process inside the engine's private mount namespace).
        unsafe { libc::kill(p, sig) };
    }
}

/// A private mount namespace (inside a lab's network namespace) held open by a `sleep`
/// process. Engines and every command that talks to their files run inside it (`nsenter -t
/// HOLDER -m -n`), so their mounts and their view of `/run`, `/var/lib` and (optionally)
/// `/etc/docker` are theirs alone. Propagation is `slave`: mounts made in the root namespace
/// still show up inside, none made inside leak out.
pub struct MountNs {
    holder: Child,
    id: PinnedNs,
}

/// A mount namespace's identity (`mnt:[...]`) together with an open handle on it. The handle keeps
/// the namespace, and so its inode number, alive: the kernel reuses the number of a namespace
/// that has ended, and a parallel test's new namespace could otherwise pass for this one.
#[derive(Clone, Debug)]
pub struct PinnedNs {
    id: OsString,
    _handle: Arc<std::fs::File>,
}

impl PinnedNs {
    /// Pins the mount namespace `pid` is in; `None` if the process is gone or moved while it was
    /// being pinned.
    fn of(pid: u32) -> Option<PinnedNs> {
        let path = format!("/proc/{pid}/ns/mnt");
        let handle = std::fs::File::open(&path).ok()?;
        // The handle was opened first: the identity read after it is the pinned namespace's
        // unless the process moved in between, which the second read detects.
        let id = ns_id(pid, "mnt")?;
        let check = std::fs::read_link(format!("/proc/self/fd/{}", handle.as_raw_fd()))
            .ok()
            .map(PathBuf::into_os_string)?;
        (check == id).then(|| PinnedNs {
            id,
            _handle: Arc::new(handle),
        })
    }

    /// Pids of every process in the namespace.
    fn pids(&self) -> Vec<u32> {
        pids_in_mount_ns(&self.id)
    }
}

impl MountNs {
    /// Creates the namespace inside network namespace `netns` (its full name) and runs `setup`
    /// (a shell script, `$1`.. = `args`) inside it to mount what the engine needs.
    pub fn new(netns: &str, setup: &str, args: &[&OsStr]) -> Result<MountNs> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{netns}"))
            .args(["unshare", "--mount", "--propagation", "slave"])
            .args(["sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut holder = cmd.spawn().map_err(|source| LabError::Spawn {
            cmd: render(&cmd),
            source,
        })?;
        let ours = ns_id(std::process::id(), "mnt");
        let start = Instant::now();
        // nsenter and unshare exec (no fork): the holder's pid enters the new namespace once
        // unshare has run.
        let id = loop {
            if let Some(pinned) = PinnedNs::of(holder.id()) {
                if Some(&pinned.id) != ours.as_ref() {
                    break pinned;
                }
            }
            if start.elapsed() > Duration::from_secs(5) || !matches!(holder.try_wait(), Ok(None)) {
                let _ = holder.kill();
                let _ = holder.wait();
                return Err(EngineError::NotReady {
                    what: "private mount namespace".into(),
                    why: "unshare did not run".into(),
                });
            }
            sleep(Duration::from_millis(2));
        };
        let ns = MountNs { holder, id };
        let mut cmd = ns.command("sh");
        cmd.args(["-euc", setup, "setup"]).args(args);
        run(&mut cmd, Duration::from_secs(10))?;
        Ok(ns)
    }

    /// A command that runs `program` inside this mount namespace and its network namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.holder.id().to_string(), "-m", "-n", "--"])
            .arg(program);
        cmd
    }

    /// Runs `args` (a program and its arguments) inside this mount namespace and its network
    /// namespace; an error if it exits non-zero.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let (program, rest) = args.split_first().ok_or_else(|| EngineError::NotReady {
            what: "exec".into(),
            why: "no command given".into(),
        })?;
        let mut cmd = self.command(program);
        cmd.args(rest);
        run(&mut cmd, COMMAND_TIMEOUT)
    }

    /// The namespace, pinned, to check after the engine is gone that no process is left in it.
    pub fn pinned(&self) -> PinnedNs {
        self.id.clone()
    }

    /// Pids inside the namespace other than the holder.
    pub fn pids(&self) -> Vec<u32> {
        let holder = self.holder.id();
        self.id
            .pids()
            .into_iter()
            .filter(|&p| p != holder)
            .collect()
    }

    /// Kills every process left in the namespace (SIGKILL), then the holder: the namespace and
    /// every mount in it go away with the last of them.
    pub fn shut(&mut self) {
        let start = Instant::now();
        loop {
            let left = self.pids();
            if left.is_empty() || start.elapsed() > Duration::from_secs(5) {
                break;
            }
            for pid in left {
                kill(pid, libc::SIGKILL);
            }
            sleep(Duration::from_millis(20));
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        self.shut();
    }
}

/// What an engine leaves behind if its cleanup fails: taken while it runs, checked after it was
/// dropped ([`Residue::leftovers`]).
#[derive(Clone, Debug)]
pub struct Residue {
    dir: PathBuf,
    mount_ns: PinnedNs,
    netns: String,
    pids: Vec<u32>,
}

impl Residue {
    /// Everything still there: mounts under the temp dir, the temp dir, processes in the mount
    /// namespace, the network namespace, the engine's processes. Empty when cleanup worked.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let dir = self.dir.to_string_lossy().into_owned();
        if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
            left.extend(
                mi.lines()
                    .filter_map(|l| l.split_whitespace().nth(4))
                    .filter(|m| m.starts_with(&dir))
                    .map(|m| format!("mount {m}")),
            );
        }
        if self.dir.exists() {
            left.push(format!("directory {dir}"));
        }
        left.extend(
            self.mount_ns
                .pids()
                .into_iter()
                .map(|p| format!("process {p} in the engine's mount namespace")),
        );
        if Path::new("/run/netns").join(&self.netns).exists() {
            left.push(format!("netns {}", self.netns));
        }
        left.extend(
            self.pids
                .iter()
                .filter(|&&p| Path::new(&format!("/proc/{p}")).exists())
                .map(|p| format!("process {p}")),
        );
        left
    }
}

/// The name under which both engines know the busybox image.
pub const BUSYBOX_IMAGE: &str = "sluice-busybox:test";

/// A rootfs tar of the machine's static busybox (`/bin/busybox` + one symlink per applet, at the
/// paths `busybox --list-full` gives), built once and cached in the temp directory under a name
/// that changes with the busybox binary; concurrent builders each write their own file and
/// rename it into place.
pub fn busybox_tar() -> Result<PathBuf> {
    let bb = Path::new("/bin/busybox");
    let meta = std::fs::metadata(bb).map_err(file_err(bb))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let tmp = std::env::temp_dir();
    let tar = tmp.join(format!("sluice-busybox-{}-{mtime}.tar", meta.len()));
    // Tests of one process build it once (threads wait here); other processes build their own
    // copy under their pid and the last rename wins, with identical content.
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if tar.exists() {
        return Ok(tar);
    }
    let stage = tmp.join(format!("sluice-busybox-stage-{}", std::process::id()));
    let result = build_busybox_tar(bb, &stage, &tar);
    let _ = std::fs::remove_dir_all(&stage);
    result.map(|()| tar)
}

fn build_busybox_tar(bb: &Path, stage: &Path, tar: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(stage);
    let list = run(Command::new(bb).arg("--list-full"), Duration::from_secs(10))?;
    let mkdir = |d: &Path| std::fs::create_dir_all(d).map_err(file_err(d));
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root"] {
        mkdir(&stage.join(d))?;
    }
    let target = stage.join("bin/busybox");
    std::fs::copy(bb, &target).map_err(file_err(&target))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" || applet.contains("..") {
            continue;
        }
        let link = stage.join(applet);
        if let Some(parent) = link.parent() {
            mkdir(parent)?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link).map_err(file_err(&link))?;
    }
    let etc = stage.join("etc/passwd");
    std::fs::write(&etc, "root:x:0:0:root:/root:/bin/sh\n").map_err(file_err(&etc))?;
    let etc = stage.join("etc/group");
    std::fs::write(&etc, "root:x:0:\n").map_err(file_err(&etc))?;
    let part = tar.with_extension(format!("tar.{}", std::process::id()));
    run(
        Command::new("tar")
            .arg("-C")
            .arg(stage)
            .args(["--numeric-owner", "-cf"])
            .arg(&part)
            .arg("."),
        Duration::from_secs(30),
    )?;
    std::fs::rename(&part, tar).map_err(file_err(tar))
}

/// Makes a directory (and its parents) for an engine.
fn mkdirs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(file_err(dir))
}

/// A new lab with one namespace `short` for an engine; the engine's files go into `sub` of the
/// lab's private directory.
fn engine_lab(tag: &str, short: &str, sub: &str) -> Result<(Lab, String, PathBuf)> {
    let mut lab = Lab::new(tag)?;
    lab.add_ns(short)?;
    let netns = lab.ns_name(short)?;
    let dir = lab.dir().join(sub);
    mkdirs(&dir)?;
    Ok((lab, netns, dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_captures_output_and_status() {
        let out = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            COMMAND_TIMEOUT,
        )
        .unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        let e = run(
            Command::new("sh").args(["-c", "echo bad >&2; exit 3"]),
            COMMAND_TIMEOUT,
        )
        .unwrap_err();
        assert!(matches!(&e, EngineError::Failed { stderr, .. } if stderr == "bad"));
    }

    #[test]
    fn run_feeds_stdin_and_kills_on_timeout() {
        let out = run_unchecked(&mut Command::new("cat"), Some(b"abc"), COMMAND_TIMEOUT).unwrap();
        assert_eq!(out.stdout, b"abc");
        let start = Instant::now();
        let e = run(Command::new("sleep").arg("5"), Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, EngineError::Timeout { .. }));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn missing_tools_are_named() {
        assert_eq!(
            missing_tool(&["sh", "no-such-tool-sluice"]),
            Some("no-such-tool-sluice")
        );
        assert_eq!(missing_tool(&["sh"]), None);
    }
}
