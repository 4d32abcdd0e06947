//! The rootless shape: sluice-slirp, slirp4netns and pasta (and, when named, sluice-slirp
//! with its smoltcp TCP engine) each give an `unshare -r -n` namespace of an unprivileged user
//! its network, one after the other, and the same rows are measured through each: TCP
//! namespace -> host (iperf3 to the host's loopback through the gateway 10.0.2.2) and host ->
//! namespace through a port forward (the API's `add_hostfwd` for sluice-slirp and
//! slirp4netns, `-t` for pasta), one and four streams; 64-byte UDP datagrams per second
//! namespace -> host; TCP and UDP request/response latency (sockperf). Beside each figure: the
//! forwarding process's CPU while it ran; below, its resident memory idle and at its peak.
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
    /// sluice's rootless backend (its default, passt-style TCP translation).
    SluiceSlirp,
    /// sluice's rootless backend with its smoltcp TCP translation (`--tcp-engine=smoltcp`).
    SluiceSlirpSmoltcp,
    /// slirp4netns (libslirp).
    Slirp4netns,
    /// pasta (passt).
    Pasta,
}

impl Stack {
    /// The stacks run by default, in report order.
    pub const ALL: [Stack; 3] = [Stack::SluiceSlirp, Stack::Slirp4netns, Stack::Pasta];
    /// Every stack `--peers` may name.
    pub const KNOWN: [Stack; 4] = [
        Stack::SluiceSlirp,
        Stack::SluiceSlirpSmoltcp,
        Stack::Slirp4netns,
        Stack::Pasta,
    ];

    /// Column name.
    pub fn name(self) -> &'static str {
        match self {
            Stack::SluiceSlirp => "sluice-slirp",
            Stack::SluiceSlirpSmoltcp => "sluice-slirp-smoltcp",
            Stack::Slirp4netns => "slirp4netns",
            Stack::Pasta => "pasta",
        }
    }

    /// The stacks among `peers` (names as [`Stack::name`]), in their order; all by default
    /// when none of them names a stack.
    pub fn chosen(peers: &[String]) -> Vec<Stack> {
        let named: Vec<Stack> = peers
            .iter()
            .filter_map(|p| Stack::KNOWN.into_iter().find(|s| s.name() == p))
            .collect();
        if named.is_empty() {
            Stack::ALL.to_vec()
        } else {
            named
        }
    }

    /// The binary: sluice-slirp next to `here` (the sluice binary or the harness), the others
    /// from the PATH.
    pub fn binary(self, here: &Path) -> PathBuf {
        match self {
            Stack::SluiceSlirp | Stack::SluiceSlirpSmoltcp => here.with_file_name("sluice-slirp"),
            _ => PathBuf::from(self.name()),
        }
    }

    /// The command line serving the namespace of `pid` on `tap0`, MTU 65520, with the
    /// forward (pasta's `-t`; the others get theirs from the API socket `api`).
    pub fn command(self, bin: &Path, pid: u32, api: &Path) -> Vec<String> {
        let pid = pid.to_string();
        let mut c: Vec<String> = vec![bin.display().to_string()];
        if self == Stack::SluiceSlirpSmoltcp {
            c.push("--tcp-engine=smoltcp".into());
        }
        let args: Vec<String> = match self {
            Stack::SluiceSlirp | Stack::SluiceSlirpSmoltcp | Stack::Slirp4netns => vec![
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

/// A row of the shape: one measurement through each stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Test {
    /// TCP namespace -> host, one stream (iperf3 to the host's loopback via the gateway).
    TcpOut,
    /// TCP host -> namespace through the forward, one stream.
    TcpIn,
    /// TCP namespace -> host, four streams (`-P 4`).
    Tcp4Out,
    /// TCP host -> namespace through the forward, four streams.
    Tcp4In,
    /// 64-byte UDP datagrams namespace -> host (iperf3 -u -l 64 -b 0, received by the server).
    Udp64Out,
    /// TCP request/response (sockperf ping-pong --tcp, 64 bytes), namespace -> host.
    TcpRr,
    /// UDP request/response (sockperf ping-pong, 64 bytes), namespace -> host.
    UdpRr,
}

impl Test {
    /// Every row, in report order.
    pub const ALL: [Test; 7] = [
        Test::TcpOut,
        Test::TcpIn,
        Test::Tcp4Out,
        Test::Tcp4In,
        Test::Udp64Out,
        Test::TcpRr,
        Test::UdpRr,
    ];

    /// The row's label, with its unit.
    pub fn label(self) -> &'static str {
        match self {
            Test::TcpOut => "tcp ns->host, 1 stream, Gbit/s",
            Test::TcpIn => "tcp host->ns (forward), 1 stream, Gbit/s",
            Test::Tcp4Out => "tcp ns->host, 4 streams, Gbit/s",
            Test::Tcp4In => "tcp host->ns (forward), 4 streams, Gbit/s",
            Test::Udp64Out => "udp 64 B ns->host, kpps received",
            Test::TcpRr => "tcp_rr 64 B, us round trip",
            Test::UdpRr => "udp_rr 64 B, us round trip",
        }
    }

    /// True for the rows that go through the host forward.
    pub fn needs_forward(self) -> bool {
        matches!(self, Test::TcpIn | Test::Tcp4In)
    }

    fn precision(self) -> usize {
        match self {
            Test::TcpRr | Test::UdpRr | Test::Udp64Out => 1,
            _ => 2,
        }
    }
}

/// One measurement and the stack's CPU while it ran.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// The value in the row's unit, or why there is none.
    pub value: Result<f64, String>,
    /// The stack's CPU over the measurement, % of one CPU.
    pub cpu_pct: Option<f64>,
}

/// The figures of one stack.
#[derive(Clone, Debug, PartialEq)]
pub struct RootlessRow {
    /// The stack.
    pub stack: Stack,
    /// One figure per [`Test::ALL`], in that order.
    pub figures: Vec<Figure>,
    /// Resident memory right after start-up, KiB.
    pub idle_rss_kib: Option<u64>,
    /// Peak resident memory (VmHWM) at the end, KiB.
    pub peak_rss_kib: Option<u64>,
}

impl RootlessRow {
    /// A stack that could not run: its error in every figure.
    pub fn failed(stack: Stack, e: &str) -> RootlessRow {
        let figure = Figure {
            value: Err(e.to_string()),
            cpu_pct: None,
        };
        RootlessRow {
            stack,
            figures: vec![figure; Test::ALL.len()],
            idle_rss_kib: None,
            peak_rss_kib: None,
        }
    }
}

/// A `kB` field (`VmRSS`, `VmHWM`) of `/proc/PID/status`.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU % of one CPU, from the clock ticks spent over `seconds`.
pub fn cpu_pct(ticks: u64, hz: f64, seconds: f64) -> Option<f64> {
    (hz > 0.0 && seconds > 0.0).then(|| ticks as f64 / hz / seconds * 100.0)
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
        // The announced process is not our child: once its parent is gone it is reaped
        // elsewhere, and it holds its sockets (a forward's listener) until it has exited.
        if let Some(pid) = self.1 {
            wait_exited(pid, Duration::from_secs(5));
        }
    }
}

/// True while `pid` runs (a zombie has already closed its descriptors).
fn alive(pid: u32) -> bool {
    let stat = read_proc(pid, "stat");
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// Waits up to `limit` for `pid` to exit.
fn wait_exited(pid: u32, limit: Duration) {
    let end = Instant::now() + limit;
    while alive(pid) && Instant::now() < end {
        sleep(Duration::from_millis(10));
    }
}

/// Waits up to `limit` until a listener can bind 127.0.0.1:`port` (the stack before may still
/// hold it); the error says what still holds it up.
fn wait_port_free(port: u16, limit: Duration) -> Result<(), String> {
    let end = Instant::now() + limit;
    loop {
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= end => {
                return Err(format!(
                    "port {port} still taken after {} s ({e}): the previous stack's forward?",
                    limit.as_secs()
                ))
            }
            Err(_) => sleep(Duration::from_millis(50)),
        }
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

/// A server started first (given 300 ms to listen), then `client`; the client's output.
fn served(server: &mut Command, client: &mut Command) -> Result<String, String> {
    let srv = Running(
        server
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?,
        None,
    );
    sleep(Duration::from_millis(300));
    let out = output_text(client);
    drop(srv);
    out
}

/// The host-side iperf3 server (one test).
fn host_iperf() -> Command {
    let mut c = Command::new("iperf3");
    c.args(["-s", "-1", "-B", "127.0.0.1", "-p", &IPERF_PORT.to_string()]);
    c
}

/// The host-side sockperf server, TCP or UDP.
fn host_sockperf(tcp: bool) -> Command {
    let mut c = Command::new("sockperf");
    c.args(["sr", "-i", "127.0.0.1", "-p", &SOCKPERF_PORT.to_string()]);
    if tcp {
        c.arg("--tcp");
    }
    c
}

/// One row through the namespace of `target`, `dur` seconds.
fn measure_one(test: Test, target: u32, dur: u32) -> Result<f64, String> {
    let d = dur.to_string();
    let (iperf_port, sp) = (IPERF_PORT.to_string(), SOCKPERF_PORT.to_string());
    let (guest_port, host_port) = (FWD_GUEST_PORT.to_string(), FWD_HOST_PORT.to_string());
    let tcp = |out: String| {
        parse::iperf3_tcp(&out)
            .map(|r| r.gbps)
            .map_err(|e| e.to_string())
    };
    let rr = |out: String| {
        parse::sockperf(&out)
            .map(|r| r.avg_us)
            .map_err(|e| e.to_string())
    };
    let mut out_args = vec!["iperf3", "-c", GATEWAY, "-p", &iperf_port, "-t", &d, "-J"];
    let mut in_args = vec!["-c", "127.0.0.1", "-p", &host_port, "-t", &d, "-J"];
    let mut rr_args = vec!["sockperf", "pp", "-i", GATEWAY, "-p", &sp, "-m", "64"];
    rr_args.extend(["-t", &d, "--full-rtt"]);
    let guest_iperf = ["iperf3", "-s", "-1", "-p", &guest_port];
    match test {
        Test::TcpOut | Test::Tcp4Out => {
            if test == Test::Tcp4Out {
                out_args.extend(["-P", "4"]);
            }
            tcp(served(&mut host_iperf(), &mut in_ns(target, &out_args))?)
        }
        Test::TcpIn | Test::Tcp4In => {
            if test == Test::Tcp4In {
                in_args.extend(["-P", "4"]);
            }
            let client = &mut Command::new("iperf3");
            tcp(served(
                &mut in_ns(target, &guest_iperf),
                client.args(in_args),
            )?)
        }
        Test::Udp64Out => {
            out_args.extend(["-u", "-l", "64", "-b", "0"]);
            let out = served(&mut host_iperf(), &mut in_ns(target, &out_args))?;
            parse::iperf3_udp(&out)
                .map(|r| r.received_pps / 1e3)
                .map_err(|e| e.to_string())
        }
        Test::TcpRr => {
            rr_args.push("--tcp");
            rr(served(
                &mut host_sockperf(true),
                &mut in_ns(target, &rr_args),
            )?)
        }
        Test::UdpRr => rr(served(
            &mut host_sockperf(false),
            &mut in_ns(target, &rr_args),
        )?),
    }
}

/// Measures every row through one stack (process `stack`), already serving the namespace of
/// `target`; the rows through the forward get `forward`'s error when it could not be set up.
fn measure(
    target: u32,
    stack: u32,
    dur: u32,
    hz: f64,
    forward: &Result<(), String>,
) -> Vec<Figure> {
    Test::ALL
        .iter()
        .map(|&test| {
            let (before, t0) = (ticks(stack), Instant::now());
            let value = match forward {
                Err(e) if test.needs_forward() => Err(e.clone()),
                _ => measure_one(test, target, dur),
            };
            if let Err(e) = &value {
                eprintln!("rootless: {}: {e}", test.label());
            }
            let secs = t0.elapsed().as_secs_f64();
            let spent = before.zip(ticks(stack)).map(|(a, b)| b.saturating_sub(a));
            Figure {
                value,
                cpu_pct: spent.and_then(|t| cpu_pct(t, hz, secs)),
            }
        })
        .collect()
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
    let port_free = wait_port_free(FWD_HOST_PORT, Duration::from_secs(10));
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
    let forward = match stack {
        Stack::Pasta => port_free,
        _ => port_free.and_then(|()| add_forward(&api)),
    };
    let figures = measure(target, pid, plan.duration, hz, &forward);
    let peak_rss_kib = status_kib(&read_proc(pid, "status"), "VmHWM");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(RootlessRow {
        stack,
        figures,
        idle_rss_kib,
        peak_rss_kib,
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
            run_stack(plan, *stack, bin, hz).unwrap_or_else(|e| {
                eprintln!("rootless: {} could not run: {e}", stack.name());
                RootlessRow::failed(*stack, &e)
            })
        })
        .collect()
}

/// `text` on one line and without the table's column separator (errors may quote replies).
fn cell_text(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "/")
}

/// The figures as a markdown table: a line per test, a column per stack, each cell the value
/// and the stack's CPU while it ran; then the stacks' idle and peak RSS.
pub fn table(rows: &[RootlessRow]) -> String {
    let mib = |v: Option<u64>| v.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0));
    let mut s = String::from("| test |");
    for r in rows {
        s += &format!(" {} |", r.stack.name());
    }
    s += "\n|---|";
    s += &"---|".repeat(rows.len());
    s += "\n";
    for (i, test) in Test::ALL.iter().enumerate() {
        s += &format!("| {} |", test.label());
        for r in rows {
            let cell = match r.figures.get(i) {
                Some(Figure {
                    value: Ok(x),
                    cpu_pct,
                }) => {
                    let cpu = cpu_pct.map_or("-".into(), |c| format!("{c:.0}"));
                    format!("{x:.p$} (CPU {cpu}%)", p = test.precision())
                }
                Some(Figure { value: Err(e), .. }) => format!("n/a ({})", cell_text(e)),
                None => "-".into(),
            };
            s += &format!(" {cell} |");
        }
        s += "\n";
    }
    for (label, f) in [
        (
            "idle RSS, MiB",
            (|r: &RootlessRow| r.idle_rss_kib) as fn(&RootlessRow) -> Option<u64>,
        ),
        ("peak RSS, MiB", |r: &RootlessRow| r.peak_rss_kib),
    ] {
        s += &format!("| {label} |");
        for r in rows {
            s += &format!(" {} |", mib(f(r)));
        }
        s += "\n";
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
    fn stacks_chosen_by_peers() {
        let peers = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(Stack::chosen(&peers(&["kernel", "sluice"])), Stack::ALL);
        assert_eq!(
            Stack::chosen(&peers(&["sluice-slirp-smoltcp", "sluice-slirp"])),
            [Stack::SluiceSlirpSmoltcp, Stack::SluiceSlirp]
        );
        let here = Path::new("/opt/sluice/bin/sluice");
        assert_eq!(
            Stack::SluiceSlirpSmoltcp.binary(here),
            Path::new("/opt/sluice/bin/sluice-slirp")
        );
        assert_eq!(Stack::Pasta.binary(here), Path::new("pasta"));
        let smol = Stack::SluiceSlirpSmoltcp.command(Path::new("s"), 1, Path::new("a"));
        assert_eq!(smol[..2], ["s", "--tcp-engine=smoltcp"]);
    }

    #[test]
    fn a_taken_forward_port_is_waited_for_and_then_reported() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let e = wait_port_free(port, Duration::from_millis(200)).unwrap_err();
        assert!(e.contains(&format!("port {port} still taken")), "{e}");
        drop(l);
        assert_eq!(wait_port_free(port, Duration::from_millis(200)), Ok(()));
        assert!(Test::TcpIn.needs_forward() && Test::Tcp4In.needs_forward());
        assert!(!Test::TcpOut.needs_forward() && !Test::Udp64Out.needs_forward());
    }

    /// The announced process is a grandchild (as behind runuser): dropping kills it and
    /// returns only once it no longer runs.
    #[test]
    fn a_killed_stack_is_waited_for() {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid: u32 = line.trim().parse().unwrap();
        assert!(alive(pid));
        drop(Running(child, Some(pid)));
        assert!(!alive(pid));
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn figures() {
        let status = "Name:\tx\nVmHWM:\t   12345 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(12345));
        assert_eq!(status_kib(status, "VmRSS"), Some(2048));
        assert_eq!(status_kib(status, "VmSwap"), None);
        assert_eq!(cpu_pct(100, 100.0, 2.0), Some(50.0));
        assert_eq!(cpu_pct(100, 100.0, 0.0), None);
        let mut row = RootlessRow::failed(Stack::Pasta, "boom");
        row.figures[0] = Figure {
            value: Ok(12.345),
            cpu_pct: Some(76.4),
        };
        row.figures[6] = Figure {
            value: Ok(30.0),
            cpu_pct: None,
        };
        row.idle_rss_kib = Some(2048);
        let t = table(&[row]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2 + Test::ALL.len() + 2, "{t}");
        assert_eq!(lines[0], "| test | pasta |");
        assert_eq!(
            lines[2],
            "| tcp ns->host, 1 stream, Gbit/s | 12.35 (CPU 76%) |"
        );
        assert_eq!(
            lines[3],
            "| tcp host->ns (forward), 1 stream, Gbit/s | n/a (boom) |"
        );
        assert_eq!(lines[8], "| udp_rr 64 B, us round trip | 30.0 (CPU -%) |");
        assert_eq!(lines[9], "| idle RSS, MiB | 2.0 |");
        let mut row = RootlessRow::failed(Stack::SluiceSlirp, "add_hostfwd: {\"error\":\n|x|}\n");
        row.figures[0].value = Ok(1.0);
        let t = table(&[row]);
        assert_eq!(t.lines().count(), 2 + Test::ALL.len() + 2, "{t}");
        assert!(
            t.contains(r#"| n/a (add_hostfwd: {"error": /x/}) |"#),
            "{t}"
        );
        assert_eq!(lines[10], "| peak RSS, MiB | - |");
    }
}
