//! sluice-slirp as an unprivileged user under `unshare -r -n`, the way rootless podman and
//! RootlessKit run slirp4netns: configure, ping the gateway, DNS, TCP and UDP to the host's
//! loopback through 10.0.2.2, the API socket with a working forward and its error replies,
//! ready-fd, exit-fd and the exit with the target process. Runs as root (to make the user and
//! open /dev/net/tun to 0666 as Debian does); everything it starts is stopped.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::bins::release_bin_dir;
use sluice_tests::netns::in_ns;

const USER: &str = "sluicetest";
/// The resolver stub the forwarder is pointed at (a loopback address of its own).
const DNS_STUB: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 77);

fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", cmd])
        .status()
        .is_ok_and(|s| s.success())
}

/// The unprivileged user (created if missing) and /dev/net/tun at Debian's 0666.
fn prepare_user() {
    if !sh(&format!("id -u {USER} >/dev/null 2>&1")) {
        assert!(
            sh(&format!("useradd -M -s /bin/sh {USER}")),
            "useradd {USER}"
        );
    }
    assert!(sh("chmod 0666 /dev/net/tun"));
}

/// A scratch directory the user can use, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "sluice-rootless-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        assert!(sh(&format!(
            "chmod 0777 {0} && mkfifo -m 0666 {0}/exit {0}/ready",
            p.display()
        )));
        Scratch(p)
    }
}

impl Scratch {
    /// The read end of the ready FIFO (sluice-slirp's fd 4), nonblocking.
    fn ready_fifo(&self) -> File {
        let path = self.0.join("ready");
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap()
    }

    /// The exit FIFO (sluice-slirp's fd 3), held open: dropping it stops sluice-slirp.
    fn exit_fifo(&self) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.0.join("exit"))
            .unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `unshare -r -n` as the user: the target namespace; killed at the end.
struct Target {
    child: Child,
    pid: u32,
}

/// A command run as the user, in the network namespace `host_ns` (made by the test) when set.
fn as_user(host_ns: Option<&str>) -> Command {
    let mut c = match host_ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "runuser"]);
            c
        }
        None => Command::new("runuser"),
    };
    c.args(["-u", USER, "--"]);
    c
}

impl Target {
    fn start(host_ns: Option<&str>) -> Target {
        let mut child = as_user(host_ns)
            .args(["unshare", "-r", "-n", "sh", "-c", "echo $$; exec sleep 300"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("runuser");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Target {
            child,
            pid: line.trim().parse().expect("target pid"),
        }
    }

    fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.pid)
    }

    fn stop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop();
    }
}

/// sluice-slirp run by the user, fds 3 and 4 on the scratch FIFOs.
struct Slirp {
    child: Child,
    pid_file: PathBuf,
}

impl Slirp {
    fn start(bin: &Path, dir: &Path, args: &str, pid: u32, host_ns: Option<&str>) -> Slirp {
        let d = dir.display();
        let cmd = format!(
            "echo $$ >{d}/slirp.pid; SLUICE_SLIRP_RESOLV_CONF={d}/resolv.conf exec {} {args} {pid} tap0 3<{d}/exit 4>{d}/ready 2>{d}/log",
            bin.display()
        );
        let child = as_user(host_ns)
            .args(["sh", "-c", &cmd])
            .spawn()
            .expect("runuser");
        Slirp {
            child,
            pid_file: dir.join("slirp.pid"),
        }
    }

    fn wait_exit(&mut self, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Slirp {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for "1" on the ready FIFO.
fn wait_ready(ready: &mut File, log: &Path) {
    let end = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while Instant::now() < end {
        let mut b = [0u8; 8];
        if let Ok(n) = ready.read(&mut b) {
            got.extend_from_slice(&b[..n]);
        }
        if got == b"1" {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "not ready: {:?}; log: {}",
        got,
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn api(sock: &Path, req: &str) -> String {
    let mut s = UnixStream::connect(sock).expect("api socket");
    s.write_all(req.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A TCP echo server on `at` (one thread per connection); its port.
fn tcp_echo_server(at: &str) -> u16 {
    let tcp = TcpListener::bind(at).unwrap();
    let port = tcp.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in tcp.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Host-side servers on loopback: a TCP echo, a UDP upper-caser and a DNS stub.
fn host_servers() -> (u16, u16) {
    let tport = tcp_echo_server("127.0.0.1:0");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uport = udp.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n].to_ascii_uppercase(), from);
        }
    });
    let dns = UdpSocket::bind((DNS_STUB, 53)).expect("DNS stub on 127.0.0.77:53");
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = dns.recv_from(&mut buf) {
            buf[2] |= 0x80;
            let _ = dns.send_to(&buf[..n], from);
        }
    });
    (tport, uport)
}

/// From inside the namespace: `len` bytes to the echo server at `to` (the host's loopback
/// through the gateway), and the same bytes back.
fn tcp_echo_check(to: SocketAddr, len: u32) {
    let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("TCP to the host's loopback through {to}: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut w = c.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&sent));
    let mut back = vec![0u8; data.len()];
    c.read_exact(&mut back).expect("TCP echo");
    writer.join().unwrap().unwrap();
    assert!(back == data, "TCP echo differs");
}

fn guest_checks(netns: &str, tport: u16, uport: u16) {
    in_ns(netns, move || {
        tcp_echo_check(SocketAddr::from(([10, 0, 2, 2], tport)), 300_000);

        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        u.connect(("10.0.2.2", uport)).unwrap();
        u.send(b"hello").unwrap();
        let mut buf = [0u8; 64];
        let n = u.recv(&mut buf).expect("UDP reply");
        assert_eq!(&buf[..n], b"HELLO");

        let q = UdpSocket::bind("0.0.0.0:0").unwrap();
        q.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let query = [
            0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'x', 0, 0, 1, 0, 1,
        ];
        q.send_to(&query, "10.0.2.3:53").unwrap();
        let (n, from) = q.recv_from(&mut buf).expect("DNS answer through 10.0.2.3");
        assert_eq!(from, SocketAddr::from(([10, 0, 2, 3], 53)));
        assert_eq!(
            (&buf[..2], buf[2] & 0x80, n),
            (&[0x12, 0x34][..], 0x80, query.len())
        );
    });
}

/// A guest server on `at` that answers with the address it saw the client come from.
fn guest_server(netns: &str, at: &str) -> std::thread::JoinHandle<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (netns, at) = (netns.to_string(), at.to_string());
    let h = std::thread::spawn(move || {
        in_ns(netns, move || {
            let l = TcpListener::bind(at).unwrap();
            tx.send(()).unwrap();
            let (mut c, peer) = l.accept().unwrap();
            let mut b = [0u8; 2];
            c.read_exact(&mut b).unwrap();
            c.write_all(&b).unwrap();
            peer.ip().to_string()
        })
    });
    rx.recv().unwrap();
    h
}

/// A UDP forward: a host datagram reaches a guest socket and its answer comes back.
fn udp_forward_check(netns: &str, sock: &Path) {
    let (tx, rx) = std::sync::mpsc::channel();
    let netns = netns.to_string();
    let guest = std::thread::spawn(move || {
        in_ns(netns, move || {
            let u = UdpSocket::bind("0.0.0.0:5300").unwrap();
            u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            tx.send(()).unwrap();
            let mut b = [0u8; 64];
            let (n, peer) = u
                .recv_from(&mut b)
                .expect("datagram through the UDP forward");
            u.send_to(&b[..n].to_ascii_uppercase(), peer).unwrap();
            peer.ip().to_string()
        })
    });
    rx.recv().unwrap();
    let host = UdpSocket::bind("127.0.0.1:0").unwrap();
    let fport = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let add = format!(
        r#"{{"execute": "add_hostfwd", "arguments": {{"proto": "udp", "host_addr": "127.0.0.1", "host_port": {fport}, "guest_port": 5300}}}}"#
    );
    let reply: serde_json::Value = serde_json::from_str(&api(sock, &add)).unwrap();
    let id = reply["return"]["id"].as_u64().expect("an id");
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.send_to(b"ping", ("127.0.0.1", fport)).unwrap();
    let mut b = [0u8; 64];
    let n = host.recv(&mut b).expect("answer through the UDP forward");
    assert_eq!(&b[..n], b"PING");
    assert_eq!(guest.join().unwrap(), "10.0.2.2");
    let rm = format!(r#"{{"execute": "remove_hostfwd", "arguments": {{"id": {id}}}}}"#);
    assert_eq!(api(sock, &rm), r#"{"return":{}}"#);
}

fn api_checks(netns: &str, sock: &Path) {
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let fport = free.local_addr().unwrap().port();
    drop(free);
    let server = guest_server(netns, "0.0.0.0:8080");
    let add = format!(
        r#"{{"execute": "add_hostfwd", "arguments": {{"proto": "tcp", "host_addr": "127.0.0.1", "host_port": {fport}, "guest_port": 8080}}}}"#
    );
    assert_eq!(api(sock, &add), r#"{"return":{"id":1}}"#);
    let mut c = TcpStream::connect(("127.0.0.1", fport)).expect("forward listens");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"hi").unwrap();
    let mut b = [0u8; 2];
    c.read_exact(&mut b).expect("through the forward");
    assert_eq!(&b, b"hi");
    assert_eq!(
        server.join().unwrap(),
        "10.0.2.2",
        "a loopback client comes from the gateway"
    );
    let list: serde_json::Value =
        serde_json::from_str(&api(sock, r#"{"execute": "list_hostfwd"}"#)).unwrap();
    assert_eq!(
        list,
        serde_json::json!({"entries": [{"id": 1, "proto": "tcp", "host_addr": "127.0.0.1",
            "host_port": fport, "guest_addr": "10.0.2.100", "guest_port": 8080}]})
    );
    assert_eq!(
        api(
            sock,
            r#"{"execute": "remove_hostfwd", "arguments": {"id": 1}}"#
        ),
        r#"{"return":{}}"#
    );
    assert!(
        TcpStream::connect(("127.0.0.1", fport)).is_err(),
        "removed forward still listens"
    );
    for (req, desc) in [
        ("not json", "bad request: cannot parse JSON"),
        (r#"{"arguments": {}}"#, "bad request: no execute found"),
        (r#"{"execute": "reboot"}"#, "bad request: unknown execute"),
        (
            r#"{"execute": "remove_hostfwd", "arguments": {"id": 1}}"#,
            "bad request: remove_hostfwd: bad arguments.id",
        ),
        (
            r#"{"execute": "add_hostfwd", "arguments": {"proto": "sctp"}}"#,
            "bad request: add_hostfwd: bad arguments.proto",
        ),
    ] {
        let want = serde_json::json!({"error": {"desc": desc}}).to_string();
        assert_eq!(api(sock, req), want, "{req}");
    }
    assert!(api(sock, &" ".repeat(5000)).contains("too large message"));
    udp_forward_check(netns, sock);
    assert_eq!(
        api(sock, r#"{"execute": "list_hostfwd"}"#),
        r#"{"entries":[]}"#
    );
}

#[test]
fn rootless_network_for_unshare_r_n() {
    let Some(dir) = release_bin_dir(&["sluice-slirp"]) else {
        return;
    };
    prepare_user();
    let scratch = Scratch::new("net");
    let d = scratch.0.clone();
    std::fs::write(d.join("resolv.conf"), format!("nameserver {DNS_STUB}\n")).unwrap();
    let (tport, uport) = host_servers();
    let target = Target::start(None);
    let mut ready = scratch.ready_fifo();
    let exit = scratch.exit_fifo();
    let sock = d.join("api.sock");
    let args = format!(
        "--mtu=65520 --enable-sandbox --enable-seccomp -c -e 3 -r 4 --api-socket {}",
        sock.display()
    );
    let mut slirp = Slirp::start(&dir.join("sluice-slirp"), &d, &args, target.pid, None);
    wait_ready(&mut ready, &d.join("log"));
    let pid = std::fs::read_to_string(d.join("slirp.pid")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    assert!(
        status.contains("Seccomp:\t2"),
        "--enable-seccomp installed no filter"
    );
    let root = std::fs::read_dir(format!("/proc/{}/root", pid.trim()))
        .unwrap()
        .count();
    assert_eq!(root, 0, "--enable-sandbox: the root is not empty");

    let ping = Command::new("nsenter")
        .args([
            "-t",
            &target.pid.to_string(),
            "-n",
            "ping",
            "-c1",
            "-W2",
            "10.0.2.2",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ping.success(), "ping the gateway");
    guest_checks(&target.netns(), tport, uport);
    api_checks(&target.netns(), &sock);

    drop(exit);
    assert!(
        slirp.wait_exit(Duration::from_secs(5)),
        "sluice-slirp ignores its exit fd"
    );
    assert!(!sock.exists(), "the API socket is left behind");
}

/// A namespace of the user served by sluice-slirp once it signalled ready, with a TCP echo
/// server for it on the host (fields drop in order: the helper first).
struct Served {
    slirp: Slirp,
    exit: File,
    target: Target,
    scratch: Scratch,
    tport: u16,
}

/// Serves a fresh namespace with `args` (`{dir}` stands for the scratch directory; fds 3 and 4
/// are the exit and ready FIFOs), the echo server on `echo_at`; `None` where the namespace
/// tests cannot run.
fn serve(tag: &str, echo_at: &str, args: &str) -> Option<Served> {
    let dir = release_bin_dir(&["sluice-slirp"])?;
    prepare_user();
    let scratch = Scratch::new(tag);
    let d = scratch.0.clone();
    std::fs::write(d.join("resolv.conf"), "").unwrap();
    let tport = tcp_echo_server(echo_at);
    let target = Target::start(None);
    let mut ready = scratch.ready_fifo();
    let exit = scratch.exit_fifo();
    let args = args.replace("{dir}", &d.display().to_string());
    let slirp = Slirp::start(&dir.join("sluice-slirp"), &d, &args, target.pid, None);
    wait_ready(&mut ready, &d.join("log"));
    Some(Served {
        slirp,
        exit,
        target,
        scratch,
        tport,
    })
}

/// The smoltcp TCP engine (`--tcp-engine=smoltcp`, kept to measure against the default)
/// carries a transfer both ways, sandboxed and under seccomp as podman runs it.
#[test]
fn smoltcp_engine_carries_tcp() {
    let args = "--tcp-engine=smoltcp --mtu=65520 --enable-sandbox --enable-seccomp -c -e 3 -r 4";
    let Some(Served {
        mut slirp,
        exit,
        target,
        tport,
        ..
    }) = serve("smol", "127.0.0.1:0", args)
    else {
        return;
    };
    in_ns(target.netns(), move || {
        let to = SocketAddr::from(([10, 0, 2, 2], tport));
        tcp_echo_check(to, 8_000_000);
        tcp_echo_check(to, 1);
    });
    drop(exit);
    assert!(
        slirp.wait_exit(Duration::from_secs(5)),
        "no exit on the exit fd"
    );
}

#[test]
fn exits_when_the_target_process_dies() {
    let Some(dir) = release_bin_dir(&["sluice-slirp"]) else {
        return;
    };
    prepare_user();
    let scratch = Scratch::new("pid");
    let d = scratch.0.clone();
    std::fs::write(d.join("resolv.conf"), "").unwrap();
    let mut target = Target::start(None);
    let mut ready = scratch.ready_fifo();
    let _exit = scratch.exit_fifo();
    let mut slirp = Slirp::start(&dir.join("sluice-slirp"), &d, "-c -r 4", target.pid, None);
    wait_ready(&mut ready, &d.join("log"));
    assert!(!slirp.wait_exit(Duration::from_millis(200)), "exited early");
    target.stop();
    assert!(
        slirp.wait_exit(Duration::from_secs(5)),
        "sluice-slirp outlives its target"
    );
}

/// Without `-c` the guest configures itself by DHCP (busybox udhcpc, when installed).
#[test]
fn dhcp_offers_the_guest_address() {
    let Some(dir) = release_bin_dir(&["sluice-slirp"]) else {
        return;
    };
    if !sh("busybox udhcpc --help >/dev/null 2>&1") {
        eprintln!("skipped: needs busybox (busybox-static, scripts/setup-engines.sh)");
        return;
    }
    prepare_user();
    let scratch = Scratch::new("dhcp");
    let d = scratch.0.clone();
    std::fs::write(d.join("resolv.conf"), "").unwrap();
    let target = Target::start(None);
    let _exit = scratch.exit_fifo();
    let _ready = scratch.ready_fifo();
    let _slirp = Slirp::start(&dir.join("sluice-slirp"), &d, "-e 3", target.pid, None);
    let pid = target.pid.to_string();
    let end = Instant::now() + Duration::from_secs(10);
    while !sh(&format!(
        "nsenter -t {pid} -n ip link set tap0 up 2>/dev/null"
    )) {
        assert!(Instant::now() < end, "tap0 never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new("nsenter")
        .args([
            "-t", &pid, "-n", "busybox", "udhcpc", "-i", "tap0", "-n", "-q", "-f", "-t", "3", "-T",
            "1",
        ])
        .args(["-s", "/bin/true"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "udhcpc got no lease: {text}");
    assert!(text.contains("10.0.2.100"), "udhcpc: {text}");
}

/// Rootless podman 4.3 as the user with `network_cmd_path` = sluice-slirp: outbound to the
/// host's loopback, and `-p` with both port handlers.
struct RootlessPodman {
    home: PathBuf,
    /// podman's tmp_dir, which holds the API socket: short, as unix socket paths must be.
    tmp: PathBuf,
}

impl RootlessPodman {
    fn new(home: &Path, bin: &Path) -> RootlessPodman {
        let h = home.display();
        let tmp = PathBuf::from(format!("/tmp/slp{}", std::process::id()));
        let t = tmp.display();
        assert!(sh(&format!(
            "runuser -u {USER} -- mkdir -p {h}/run {h}/storage {t} && chmod 0700 {h}/run"
        )));
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\n\
             [engine]\nnetwork_cmd_path = {:?}\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\ntmp_dir = \"{t}\"\n",
            bin.display()
        );
        std::fs::write(home.join("containers.conf"), conf).unwrap();
        let storage = format!("[storage]\ndriver = \"vfs\"\ngraphroot = \"{h}/storage\"\nrunroot = \"{h}/run/storage\"\n");
        std::fs::write(home.join("storage.conf"), storage).unwrap();
        RootlessPodman {
            home: home.to_path_buf(),
            tmp,
        }
    }

    fn podman(&self, args: &[&str]) -> std::process::Output {
        let h = self.home.display();
        let envs = [
            format!("HOME={h}"),
            format!("XDG_RUNTIME_DIR={h}/run"),
            format!("CONTAINERS_CONF={h}/containers.conf"),
            format!("CONTAINERS_STORAGE_CONF={h}/storage.conf"),
        ];
        Command::new("runuser")
            .args(["-u", USER, "--", "env"])
            .args(&envs)
            .arg("podman")
            .args(args)
            .current_dir(&self.home)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RootlessPodman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-af", "-t", "0"]);
        // The pause process that holds podman's user namespace.
        if let Ok(pid) = std::fs::read_to_string(self.tmp.join("pause.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// A host server that answers every connection with `hello`.
fn hello_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\n");
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads what the container's server sends on 127.0.0.1:`port`, retrying while it starts.
fn read_forward(port: u16) -> String {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut s = String::new();
            let _ = c.read_to_string(&mut s);
            if !s.is_empty() {
                return s;
            }
        }
        assert!(
            Instant::now() < end,
            "nothing through the forward on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rootless_podman_uses_sluice_slirp() {
    let Some(dir) = release_bin_dir(&["sluice-slirp"]) else {
        return;
    };
    if !sh("{ command -v podman && command -v runc && test -x /bin/busybox; } >/dev/null") {
        eprintln!("skipped: needs podman, runc and busybox-static (scripts/setup-engines.sh)");
        return;
    }
    prepare_user();
    let scratch = Scratch::new("podman");
    let podman = RootlessPodman::new(&scratch.0, &dir.join("sluice-slirp"));
    let tar = sluice_tests::engines::busybox_tar().expect("busybox image");
    podman.ok(&["import", &tar.display().to_string(), "localhost/sluice-bb"]);
    let port = hello_server();
    let url = format!("http://10.0.2.2:{port}/");
    let out = podman.ok(&[
        "run",
        "--rm",
        "--network",
        "slirp4netns:allow_host_loopback=true",
        "localhost/sluice-bb",
        "wget",
        "-q",
        "-O-",
        &url,
    ]);
    assert_eq!(out, "hello\n");
    for handler in ["rootlesskit", "slirp4netns"] {
        let hp = free_port();
        let name = format!("sluice-pf-{handler}");
        podman.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &format!("slirp4netns:port_handler={handler}"),
            "-p",
            &format!("127.0.0.1:{hp}:80"),
            "localhost/sluice-bb",
            "sh",
            "-c",
            "while true; do echo from-container | nc -l -p 80; done",
        ]);
        let ps = Command::new("pgrep")
            .args(["-u", USER, "-f", "sluice-slirp"])
            .output()
            .unwrap();
        assert!(ps.status.success(), "podman did not run sluice-slirp");
        assert_eq!(
            read_forward(hp),
            "from-container\n",
            "port handler {handler}"
        );
        podman.ok(&["rm", "-f", "-t", "0", &name]);
    }
}

/// A "host" namespace with a veth to an "outside" namespace, both made by the test, so that
/// sluice-slirp's host sockets route to a real non-loopback peer without touching the root
/// namespace.
struct Outside {
    host: String,
    out: String,
}

impl Outside {
    const HOST_IP: &'static str = "198.51.100.1";
    const OUT_IP: &'static str = "198.51.100.2";

    fn new() -> Outside {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let tag = format!("{}{}", std::process::id() % 100_000, nanos % 1000);
        let o = Outside {
            host: format!("slh{tag}"),
            out: format!("slo{tag}"),
        };
        let (h, x) = (&o.host, &o.out);
        let script = format!(
            "ip netns add {h} && ip netns add {x} && \
             ip link add vh{tag} netns {h} type veth peer name vo{tag} netns {x} && \
             ip -n {h} addr add {}/24 dev vh{tag} && ip -n {x} addr add {}/24 dev vo{tag} && \
             ip -n {h} link set lo up && ip -n {x} link set lo up && \
             ip -n {h} link set vh{tag} up && ip -n {x} link set vo{tag} up",
            Self::HOST_IP,
            Self::OUT_IP
        );
        assert!(sh(&script), "setting up the outside namespaces");
        o
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = sh(&format!(
            "ip netns del {}; ip netns del {}",
            self.host, self.out
        ));
    }
}

/// TCP (2 MB echoed, MTU 1500) and UDP to a server outside, the gateway refused with
/// `--disable-host-loopback`, and a forward whose client (outside) is seen by the guest
/// with its own address, as slirp4netns's port handler does.
#[test]
fn outbound_to_an_outside_namespace_and_forward_source_address() {
    let Some(dir) = release_bin_dir(&["sluice-slirp"]) else {
        return;
    };
    prepare_user();
    let scratch = Scratch::new("out");
    let d = scratch.0.clone();
    std::fs::write(d.join("resolv.conf"), "").unwrap();
    let outside = Outside::new();
    let out_ns = format!("/run/netns/{}", outside.out);
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = out_ns.clone();
    std::thread::spawn(move || {
        in_ns(ns, move || {
            let tcp = TcpListener::bind((Outside::OUT_IP, 7000)).unwrap();
            let udp = UdpSocket::bind((Outside::OUT_IP, 7001)).unwrap();
            tx.send(()).unwrap();
            let mut b = [0u8; 64];
            let (n, from) = udp.recv_from(&mut b).unwrap();
            udp.send_to(&b[..n].to_ascii_uppercase(), from).unwrap();
            let (mut c, _) = tcp.accept().unwrap();
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 || c.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        })
    });
    rx.recv().unwrap();
    let target = Target::start(Some(&outside.host));
    let mut ready = scratch.ready_fifo();
    let _exit = scratch.exit_fifo();
    let sock = d.join("api.sock");
    let args = format!(
        "-c -r 4 -e 3 --disable-host-loopback --api-socket {}",
        sock.display()
    );
    let _slirp = Slirp::start(
        &dir.join("sluice-slirp"),
        &d,
        &args,
        target.pid,
        Some(&outside.host),
    );
    wait_ready(&mut ready, &d.join("log"));
    in_ns(target.netns(), || {
        let gw = SocketAddr::from(([10, 0, 2, 2], 7000));
        let e = TcpStream::connect_timeout(&gw, Duration::from_secs(5)).unwrap_err();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "--disable-host-loopback"
        );
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        u.send_to(b"udp", (Outside::OUT_IP, 7001)).unwrap();
        let mut b = [0u8; 64];
        let n = u.recv(&mut b).expect("UDP answer from outside");
        assert_eq!(&b[..n], b"UDP");
        let to = SocketAddr::new(Outside::OUT_IP.parse().unwrap(), 7000);
        let mut c =
            TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("TCP to outside");
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // 2 MB each way at MTU 1500: both directions travel as TCP super-frames on the TAP.
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
        let (mut w, sent) = (c.try_clone().unwrap(), data.clone());
        let writer = std::thread::spawn(move || {
            w.write_all(&sent).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        c.read_to_end(&mut back).expect("echo from outside");
        writer.join().unwrap();
        assert!(
            back == data,
            "echo differs ({} of {} bytes)",
            back.len(),
            data.len()
        );
    });
    pseudo_ping_checks(&target, &out_ns);
    let server = guest_server(&target.netns(), "0.0.0.0:8081");
    let add = r#"{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 7100, "guest_port": 8081}}"#;
    assert_eq!(api(&sock, add), r#"{"return":{"id":1}}"#);
    in_ns(out_ns, || {
        let mut c = TcpStream::connect((Outside::HOST_IP, 7100)).expect("the forward from outside");
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"hi").unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).expect("through the forward");
    });
    assert_eq!(
        server.join().unwrap(),
        Outside::OUT_IP,
        "the guest sees the client's own address"
    );
}

/// `ping` from the guest (nsenter'd), its output.
fn guest_ping(target: &Target, args: &[&str]) -> (bool, String) {
    let out = Command::new("nsenter")
        .args(["-t", &target.pid.to_string(), "-n", "ping", "-c1", "-W3"])
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Ping to a host other than the gateway where ping sockets are not allowed (a new network
/// namespace's `ping_group_range` is "1 0"): slirp4netns's pseudo-ping, a datagram to the
/// echo port, so a closed port is "port unreachable" and an echo service is an answer.
fn pseudo_ping_checks(target: &Target, out_ns: &str) {
    let (ok, text) = guest_ping(target, &[Outside::OUT_IP]);
    assert!(
        !ok && text.contains("Port Unreachable"),
        "ping without an echo service: {text}"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let echo = std::thread::spawn({
        let ns = out_ns.to_string();
        move || {
            in_ns(ns, move || {
                let u = UdpSocket::bind((Outside::OUT_IP, 7)).unwrap();
                u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                tx.send(()).unwrap();
                let mut b = [0u8; 256];
                let (n, from) = u.recv_from(&mut b).expect("the pseudo-ping");
                u.send_to(&b[..n], from).unwrap();
            })
        }
    });
    rx.recv().unwrap();
    let (ok, text) = guest_ping(target, &[Outside::OUT_IP]);
    echo.join().unwrap();
    assert!(ok, "ping with an echo service outside: {text}");
}

/// Waits until the guest has a usable (not tentative) address in fd00::/64, by SLAAC from
/// sluice-slirp's router advertisements; returns it.
fn guest_v6_address(target: &Target) -> std::net::Ipv6Addr {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("nsenter")
            .args(["-t", &target.pid.to_string(), "-n"])
            .args([
                "ip", "-6", "-o", "addr", "show", "dev", "tap0", "scope", "global",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let addr = text
            .lines()
            .filter(|l| !l.contains("tentative"))
            .find_map(|l| l.split_whitespace().skip_while(|w| *w != "inet6").nth(1))
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok());
        if let Some(a) = addr.filter(|a| a.segments()[..4] == [0xfd00, 0, 0, 0]) {
            return a;
        }
        assert!(
            Instant::now() < end,
            "no SLAAC address in fd00::/64: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A datagram to a closed port through the gateway is refused (ICMP port unreachable).
fn udp_refused(gateway: &str) {
    let local = if gateway.contains(':') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let u = UdpSocket::bind(local).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let closed = UdpSocket::bind(if gateway.contains(':') {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    });
    let port = closed.unwrap().local_addr().unwrap().port();
    u.connect(format!("{gateway}:{port}")).unwrap();
    u.send(b"anyone?").unwrap();
    let mut b = [0u8; 16];
    let e = u.recv(&mut b).expect_err("an answer from a closed port");
    assert_eq!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "UDP to a closed port at {gateway}"
    );
}

/// `--enable-ipv6`: the guest configures fd00::/64 by SLAAC, pings fd00::2, reaches the
/// host's [::1] through it over TCP, gets port unreachable for UDP to closed ports (both
/// families) and a v6 forward reaches the guest from the gateway's address.
#[test]
fn ipv6_and_port_unreachable() {
    let args = "--enable-ipv6 --mtu=65520 --enable-sandbox --enable-seccomp -c -r 4 -e 3 \
                --api-socket {dir}/api.sock";
    let Some(served) = serve("v6", "[::1]:0", args) else {
        return;
    };
    let (target, tport) = (&served.target, served.tport);
    let sock = served.scratch.0.join("api.sock");
    let guest6 = guest_v6_address(target);
    let (ok, text) = guest_ping(target, &["-6", "fd00::2"]);
    assert!(ok, "ping fd00::2: {text}");
    in_ns(target.netns(), move || {
        tcp_echo_check(format!("[fd00::2]:{tport}").parse().unwrap(), 500_000);
        udp_refused("10.0.2.2");
        udp_refused("[fd00::2]");
    });
    let server = guest_server(&target.netns(), "[::]:8082");
    let fport = TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let add = format!(
        r#"{{"execute": "add_hostfwd", "arguments": {{"proto": "tcp", "host_addr": "::1", "host_port": {fport}, "guest_addr": "{guest6}", "guest_port": 8082}}}}"#
    );
    assert_eq!(api(&sock, &add), r#"{"return":{"id":1}}"#);
    let mut c = TcpStream::connect(("::1", fport)).expect("the v6 forward listens");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"v6").unwrap();
    let mut b = [0u8; 2];
    c.read_exact(&mut b).expect("through the v6 forward");
    assert_eq!(&b, b"v6");
    assert_eq!(
        server.join().unwrap(),
        "fd00::2",
        "a loopback client comes from fd00::2"
    );
}
