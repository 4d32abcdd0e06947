//! The rootless shape: sluice-slirp, slirp4netns and pasta each give an `unshare -r -n`
//! namespace of an unprivileged user its network, one after the other, and the same rows are
//! measured through each: TCP namespace -> host (iperf3 to the host's loopback through the
//! gateway 10.0.2.2), TCP host -> namespace through a port forward (the API's `add_hostfwd`
//! for sluice-slirp and slirp4netns, `-t` for pasta), and UDP request/response latency
//! (sockperf). Beside them: the forwarding process's CPU per Gbit/s of the TCP rows, and its
//! resident memory when idle and at its peak.
//!
//! The clients inside the namespace are entered with `nsenter` as root; the target namespace
//! and the stacks run as the user. Only loopback and the user's namespace carry traffic.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::parse;

/// The gateway address inside the namespace: every stack maps it to the host's loopback.
const GATEWAY: &str = "10.0.2.2";
/// The host port forwarded to the namespace.
const FWD_HOST_PORT: u16 = 15202;
/// The namespace port behind the forward.
const FWD_GUEST_PORT: u16 = 5201;
/// The host-side iperf3 server's port.
const IPERF_PORT: u16 = 15201;
/// The host-side sockperf server's port.
const SOCKPERF_PORT: u16 = 15203;

/// A user-mode network stack under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// sluice's rootless backend.
    SluiceSlirp,
    /// slirp4netns (libslirp).
    Slirp4netns,
    /// pasta (passt).
    Pasta,
}

impl Stack {
    /// Every stack, in report order.
    pub const ALL: [Stack; 3] = [Stack::SluiceSlirp, Stack::Slirp4netns, Stack::Pasta];

    /// Column name.
    pub fn name(self) -> &'static str {
        match self {
            Stack::SluiceSlirp => "sluice-slirp",
            Stack::Slirp4netns => "slirp4netns",
            Stack::Pasta => "pasta",
        }
    }

    /// The command line serving the namespace of `pid` on `tap0`, MTU 65520, with the
    /// forward (pasta's `-t`; the others get theirs from the API socket `api`).
    pub fn command(self, bin: &Path, pid: u32, api: &Path) -> Vec<String> {
        let pid = pid.to_string();
        let mut c: Vec<String> = vec![bin.display().to_string()];
        let args: Vec<String> = match self {
            Stack::SluiceSlirp | Stack::Slirp4netns => vec![
                "--configure".into(),
                "--mtu=65520".into(),
                format!("--api-socket={}", api.display()),
                pid,
                "tap0".into(),
            ],
            Stack::Pasta => [
                "--config-net",
                "-f",
                "-q",
                "-4",
                "-I",
                "tap0",
                "-a",
                "10.0.2.100",
                "-n",
                "24",
                "-g",
                GATEWAY,
                "-m",
                "65520",
                "-u",
                "none",
                "-T",
                "none",
                "-U",
                "none",
                "-t",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([format!("{FWD_HOST_PORT}:{FWD_GUEST_PORT}"), pid])
            .collect(),
        };
        c.extend(args);
        c
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RootlessPlan {
    /// The stacks, in order.
    pub stacks: Vec<(Stack, PathBuf)>,
    /// The unprivileged user that owns the namespace and runs the stacks.
    pub user: String,
    /// Seconds per measurement.
    pub duration: u32,
}

/// The figures of one stack.
#[derive(Clone, Debug, PartialEq)]
pub struct RootlessRow {
    /// The stack.
    pub stack: Stack,
    /// TCP, namespace -> host, Gbit/s.
    pub out_gbps: Result<f64, String>,
    /// TCP, host -> namespace through the forward, Gbit/s.
    pub in_gbps: Result<f64, String>,
    /// UDP request/response (sockperf ping-pong, 64 bytes), average round trip in microseconds.
    pub udp_rr_us: Result<f64, String>,
    /// The stack's CPU (% of one CPU) per Gbit/s, over both TCP rows.
    pub cpu_pct_per_gbps: Option<f64>,
    /// Resident memory right after start-up, KiB.
    pub idle_rss_kib: Option<u64>,
    /// Peak resident memory (VmHWM) at the end, KiB.
    pub peak_rss_kib: Option<u64>,
}

/// A `kB` field (`VmRSS`, `VmHWM`) of `/proc/PID/status`.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU % of one CPU per Gbit/s, from the clock ticks spent over `seconds` moving `gbps`.
pub fn cpu_per_gbps(ticks: u64, hz: f64, seconds: f64, gbps: f64) -> Option<f64> {
    (hz > 0.0 && seconds > 0.0 && gbps > 0.0).then(|| ticks as f64 / hz / seconds * 100.0 / gbps)
}

/// A child process killed when dropped, and the process it announced (which may be a
/// grandchild, behind `runuser` or `unshare`).
struct Running(Child, Option<u32>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(pid) = self.1.and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: kill has no memory-safety preconditions; the pid is one we started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sh -c SCRIPT` as `user`, its own stdout piped: the script prints the pid to watch first.
fn as_user(user: &str, script: &str) -> std::io::Result<(Running, u32)> {
    let mut child = Command::new("runuser")
        .args(["-u", user, "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or(std::io::ErrorKind::BrokenPipe)?)
        .read_line(&mut line)?;
    let pid = line
        .trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("no pid from {script:?}")))?;
    Ok((Running(child, Some(pid)), pid))
}

fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_proc(pid: u32, what: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{what}")).unwrap_or_default()
}

fn ticks(pid: u32) -> Option<u64> {
    parse::pid_stat_ticks(&read_proc(pid, "stat")).ok()
}

/// A command inside the namespace of `pid` (entered as root).
fn in_ns(pid: u32, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.args(["-t", &pid.to_string(), "-n"]).args(args);
    c
}

fn output_text(c: &mut Command) -> Result<String, String> {
    let o = c.output().map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr))
}

/// Waits until the namespace's tap0 has 10.0.2.100.
fn wait_configured(target: u32, stack: u32) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let out = output_text(&mut in_ns(
            target,
            &["ip", "-4", "-o", "addr", "show", "dev", "tap0"],
        ))?;
        if out.contains("10.0.2.100") {
            return Ok(());
        }
        if read_proc(stack, "stat").is_empty() {
            return Err("the stack exited".into());
        }
        sleep(Duration::from_millis(50));
    }
    Err("tap0 was not configured within 10 s".into())
}

fn add_forward(api: &Path) -> Result<(), String> {
    let req = format!(
        r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp","host_addr":"127.0.0.1","host_port":{FWD_HOST_PORT},"guest_port":{FWD_GUEST_PORT}}}}}"#
    );
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match UnixStream::connect(api) {
            Ok(mut s) => {
                s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
                let _ = s.shutdown(std::net::Shutdown::Write);
                let mut reply = String::new();
                s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
                return if reply.contains("\"id\"") {
                    Ok(())
                } else {
                    Err(format!("add_hostfwd: {reply}"))
                };
            }
            Err(_) if Instant::now() < end => sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("API socket: {e}")),
        }
    }
}

/// iperf3 from `client` to `server` (a `-s -1` started first); Gbit/s.
fn iperf(server: &mut Command, client: &mut Command) -> Result<f64, String> {
    let srv = Running(
        server
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?,
        None,
    );
    sleep(Duration::from_millis(300));
    let out = output_text(client)?;
    drop(srv);
    parse::iperf3_tcp(&out)
        .map(|r| r.gbps)
        .map_err(|e| e.to_string())
}

/// Measures one stack, already serving the namespace of `target`.
fn measure(target: u32, stack: u32, dur: u32, hz: f64) -> RootlessRow {
    let d = dur.to_string();
    let iperf_port = IPERF_PORT.to_string();
    let (guest_port, host_port) = (FWD_GUEST_PORT.to_string(), FWD_HOST_PORT.to_string());
    let before = ticks(stack);
    let t0 = Instant::now();
    let out_gbps = iperf(
        Command::new("iperf3").args(["-s", "-1", "-B", "127.0.0.1", "-p", &iperf_port]),
        &mut in_ns(
            target,
            &["iperf3", "-c", GATEWAY, "-p", &iperf_port, "-t", &d, "-J"],
        ),
    );
    let in_gbps = iperf(
        &mut in_ns(target, &["iperf3", "-s", "-1", "-p", &guest_port]),
        Command::new("iperf3").args(["-c", "127.0.0.1", "-p", &host_port, "-t", &d, "-J"]),
    );
    let secs = t0.elapsed().as_secs_f64();
    let spent = before.zip(ticks(stack)).map(|(a, b)| b.saturating_sub(a));
    let gbps_avg = match (&out_gbps, &in_gbps) {
        (Ok(a), Ok(b)) => Some((a + b) / 2.0),
        _ => None,
    };
    let cpu_pct_per_gbps = spent
        .zip(gbps_avg)
        .and_then(|(t, g)| cpu_per_gbps(t, hz, secs, g));
    let sp = SOCKPERF_PORT.to_string();
    let server = Command::new("sockperf")
        .args(["sr", "-i", "127.0.0.1", "-p", &sp])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(|c| Running(c, None));
    sleep(Duration::from_millis(300));
    let rr = [
        "sockperf",
        "pp",
        "-i",
        GATEWAY,
        "-p",
        &sp,
        "-m",
        "64",
        "-t",
        &d,
        "--full-rtt",
    ];
    let udp_rr_us = output_text(&mut in_ns(target, &rr))
        .and_then(|o| parse::sockperf(&o).map_err(|e| e.to_string()))
        .map(|r| r.avg_us);
    drop(server);
    RootlessRow {
        stack: Stack::SluiceSlirp,
        out_gbps,
        in_gbps,
        udp_rr_us,
        cpu_pct_per_gbps,
        idle_rss_kib: None,
        peak_rss_kib: status_kib(&read_proc(stack, "status"), "VmHWM"),
    }
}

/// Runs one stack for a fresh namespace of the user and measures it.
fn run_stack(
    plan: &RootlessPlan,
    stack: Stack,
    bin: &Path,
    hz: f64,
) -> Result<RootlessRow, String> {
    let dir = std::env::temp_dir().join(format!("sluice-rootless-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let _ = Command::new("chmod").arg("0777").arg(&dir).status();
    let api = dir.join(format!("{}.sock", stack.name()));
    let (_target, target) = as_user(
        &plan.user,
        "exec unshare -r -n sh -c 'echo $$; exec sleep 3600 >&-'",
    )
    .map_err(|e| e.to_string())?;
    let cmd = shell_words(&stack.command(bin, target, &api));
    let log = dir.join(format!("{}.log", stack.name()));
    let script = format!("echo $$; exec {cmd} >{} 2>&1", log.display());
    let (_stack, pid) = as_user(&plan.user, &script).map_err(|e| e.to_string())?;
    wait_configured(target, pid).map_err(|e| {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        format!("{e}: {}", log.lines().last().unwrap_or(""))
    })?;
    let idle_rss_kib = status_kib(&read_proc(pid, "status"), "VmRSS");
    if stack != Stack::Pasta {
        add_forward(&api)?;
    }
    let row = measure(target, pid, plan.duration, hz);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(RootlessRow {
        stack,
        idle_rss_kib,
        ..row
    })
}

/// Measures every stack of the plan in turn; a stack that cannot run gets its error in
/// every figure.
pub fn run(plan: &RootlessPlan) -> Vec<RootlessRow> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    plan.stacks
        .iter()
        .map(|(stack, bin)| {
            run_stack(plan, *stack, bin, hz).unwrap_or_else(|e| RootlessRow {
                stack: *stack,
                out_gbps: Err(e.clone()),
                in_gbps: Err(e.clone()),
                udp_rr_us: Err(e),
                cpu_pct_per_gbps: None,
                idle_rss_kib: None,
                peak_rss_kib: None,
            })
        })
        .collect()
}

/// The rows as a markdown table, one line per stack.
pub fn table(rows: &[RootlessRow]) -> String {
    let f = |v: &Result<f64, String>, prec: usize| match v {
        Ok(x) => format!("{x:.prec$}"),
        Err(e) => format!("n/a ({e})"),
    };
    let o = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.0}"));
    let mib = |v: Option<u64>| v.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0));
    let mut s = String::from(
        "| stack | tcp ns->host Gbit/s | tcp host->ns (forward) Gbit/s | udp_rr us | CPU % per Gbit/s | idle RSS MiB | peak RSS MiB |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.stack.name(),
            f(&r.out_gbps, 2),
            f(&r.in_gbps, 2),
            f(&r.udp_rr_us, 1),
            o(r.cpu_pct_per_gbps),
            mib(r.idle_rss_kib),
            mib(r.peak_rss_kib),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let api = Path::new("/tmp/x.sock");
        let s = Stack::SluiceSlirp.command(Path::new("sluice-slirp"), 42, api);
        assert_eq!(
            s,
            [
                "sluice-slirp",
                "--configure",
                "--mtu=65520",
                "--api-socket=/tmp/x.sock",
                "42",
                "tap0"
            ]
        );
        let p = Stack::Pasta.command(Path::new("pasta"), 42, api);
        assert_eq!(p.last().map(String::as_str), Some("42"));
        assert!(p.windows(2).any(|w| w == ["-t", "15202:5201"]));
        assert_eq!(
            shell_words(&["a b".into(), "it's".into()]),
            r"'a b' 'it'\''s'"
        );
    }

    #[test]
    fn figures() {
        let status = "Name:\tx\nVmHWM:\t   12345 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(12345));
        assert_eq!(status_kib(status, "VmRSS"), Some(2048));
        assert_eq!(status_kib(status, "VmSwap"), None);
        assert_eq!(cpu_per_gbps(100, 100.0, 2.0, 10.0), Some(5.0));
        assert_eq!(cpu_per_gbps(100, 100.0, 2.0, 0.0), None);
        let row = RootlessRow {
            stack: Stack::Pasta,
            out_gbps: Ok(12.345),
            in_gbps: Err("boom".into()),
            udp_rr_us: Ok(30.0),
            cpu_pct_per_gbps: Some(7.6),
            idle_rss_kib: Some(2048),
            peak_rss_kib: None,
        };
        let t = table(&[row]);
        assert!(
            t.contains("| pasta | 12.35 | n/a (boom) | 30.0 | 8 | 2.0 | - |"),
            "{t}"
        );
    }
}
