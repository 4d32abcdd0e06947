//! End-to-end tests of sluice in real network namespaces: sluice is the only forwarder in the
//! switch namespace `sw` (no kernel bridge, no iptables rule on the path), the endpoints are
//! namespaces behind veth pairs (one behind a TAP device), and the checks are made with the
//! tools a user would use (ping, socat, tcpdump, `ip neigh`) plus sluice's counters.
//!
//! Every test builds its own lab (unique namespace prefix, removed on drop, also on panic). The
//! sluice binary comes from `SLUICE_BIN` or `<workspace>/target/release/sluice`
//! (`cargo build --release --bins`). The tests need root; without it they are
//! skipped with a message.

use std::ffi::CString;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use sluice_dataplane::config::{
    Config, Ipv4Cidr, L4Proto, NetworkConfig, PortConfig, PortIo, PortRole,
};
use sluice_dataplane::frame::{NetworkId, PortId};
use sluice_dataplane::wire::MacAddr;
use sluice_lab::lab::{
    DockerLike, DockerLikeSpec, Forwarder, Lab, Publish, SluiceLaunch, OUTSIDE, SW,
};
use sluice_tests::udp;

const TOOLS: [&str; 7] = [
    "ip",
    "ping",
    "socat",
    "tcpdump",
    "ss",
    "sha256sum",
    "timeout",
];

/// The gateway MAC docker (and sluice's lab) gives 172.17.0.1.
const GW_MAC: &str = "02:42:ac:11:00:01";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The sluice binary: `SLUICE_BIN`, else the workspace's release build.
fn sluice_bin() -> PathBuf {
    let bin = std::env::var_os("SLUICE_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/sluice"),
        PathBuf::from,
    );
    assert!(
        bin.is_file(),
        "the sluice binary {} is missing: run `cargo build --release --bins` or set \
         SLUICE_BIN",
        bin.display()
    );
    bin
}

/// False (and a message) when the tests cannot run here: not root. Missing tools or a missing
/// binary are failures, not skips.
fn ready() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to create network namespaces");
        return false;
    }
    for t in TOOLS {
        assert!(
            have(t),
            "{t} is not installed; the end-to-end tests need it"
        );
    }
    sluice_bin();
    true
}

fn launch(workers: usize) -> SluiceLaunch {
    let mut l = SluiceLaunch::new(sluice_bin());
    l.args.push(format!("--workers={workers}"));
    l
}

/// A docker-like topology (endpoints a, b, outside) with sluice in `sw`.
fn docker(tag: &str, spec: DockerLikeSpec, workers: usize) -> DockerLike {
    DockerLike::build(tag, spec, Forwarder::Sluice(launch(workers)))
        .unwrap_or_else(|e| panic!("building the topology: {e}"))
}

fn publish(proto: L4Proto, host_port: u16, endpoint: &str, target_port: u16) -> Publish {
    Publish {
        proto,
        host_port,
        endpoint: endpoint.into(),
        target_port,
    }
}

/// True when `count` pings from `ns` to `ip` all come back (`extra`: more ping flags).
fn ping(lab: &Lab, ns: &str, ip: Ipv4Addr, count: u32, extra: &[&str]) -> bool {
    let (ip, count) = (ip.to_string(), count.to_string());
    let mut args = vec!["ping", "-q", "-c", &count, "-i", "0.2", "-W", "1"];
    args.extend_from_slice(extra);
    args.push(&ip);
    let o = lab.exec_output(ns, &args).expect("running ping");
    o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&format!(" {count} received"))
}

/// True when not one of `count` pings from `ns` to `ip` comes back.
fn ping_fails(lab: &Lab, ns: &str, ip: Ipv4Addr, count: u32) -> bool {
    let (ip, count) = (ip.to_string(), count.to_string());
    let o = lab
        .exec_output(
            ns,
            &["ping", "-q", "-c", &count, "-i", "0.2", "-W", "1", &ip],
        )
        .expect("running ping");
    String::from_utf8_lossy(&o.stdout).contains(" 0 received")
}

/// Waits until the lab's background process `pid` exits.
fn wait_exit(lab: &mut Lab, pid: u32, timeout: Duration) -> bool {
    let start = Instant::now();
    while lab.alive(pid) {
        if start.elapsed() > timeout {
            return false;
        }
        sleep(Duration::from_millis(50));
    }
    true
}

fn read_log(lab: &Lab, log: &str) -> String {
    std::fs::read_to_string(lab.log_path(log)).unwrap_or_default()
}

/// The first 64-hex-digit word of `text` (a sha256sum line).
fn sha_of(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// Sends `bytes` random bytes over TCP from `from` to a listener in `to` at `to_ip:port` and
/// asserts that the receiver's sha256 equals the sender's.
fn tcp_transfer(lab: &mut Lab, from: &str, to: &str, to_ip: Ipv4Addr, port: u16, bytes: usize) {
    let src = lab.dir().join(format!("{from}-{to}-{port}.bin"));
    let src_s = src.to_str().expect("the lab directory is UTF-8").to_owned();
    let made = Command::new("sh")
        .args([
            "-c",
            &format!("head -c {bytes} /dev/urandom > '{src_s}' && sha256sum '{src_s}'"),
        ])
        .output()
        .expect("making the random file");
    assert!(made.status.success(), "cannot make {src_s}");
    let want = sha_of(&String::from_utf8_lossy(&made.stdout)).expect("sha256 of the source");
    let log = format!("rx-{to}-{port}");
    let listen = format!("socat -u TCP-LISTEN:{port},reuseaddr STDOUT | sha256sum");
    let rx = lab.spawn(to, &["sh", "-c", &listen], &log).unwrap();
    lab.wait_listen(to, port, Duration::from_secs(5)).unwrap();
    let start = Instant::now();
    let sent = lab
        .exec_output(
            from,
            &[
                "timeout",
                "25",
                "socat",
                "-u",
                &format!("OPEN:{src_s}"),
                &format!("TCP:{to_ip}:{port},connect-timeout=3"),
            ],
        )
        .unwrap();
    assert!(
        sent.status.success(),
        "sending {bytes} bytes {from} -> {to} failed: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(
        wait_exit(lab, rx, Duration::from_secs(10)),
        "the receiver in {to} did not see the end of the stream"
    );
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{bytes} bytes {from} -> {to} in {secs:.2} s ({:.2} Gbit/s)",
        bytes as f64 * 8.0 / secs / 1e9
    );
    let _ = std::fs::remove_file(&src);
    let got = sha_of(&read_log(lab, &log));
    assert_eq!(
        got.as_deref(),
        Some(want.as_str()),
        "the bytes {to} received differ from what {from} sent (log: {})",
        read_log(lab, &log)
    );
}

/// A server in `ns` answering every TCP connection (or UDP datagram) with the peer address it
/// saw.
fn peer_echo_server(lab: &mut Lab, ns: &str, proto: L4Proto, port: u16) {
    let listen = match proto {
        L4Proto::Tcp => format!("TCP-LISTEN:{port},reuseaddr,fork"),
        L4Proto::Udp => format!("UDP-RECVFROM:{port},reuseaddr,fork"),
        L4Proto::Icmp => panic!("no ICMP server"),
    };
    lab.spawn(
        ns,
        &["socat", &listen, "SYSTEM:echo $SOCAT_PEERADDR"],
        &format!("srv-{ns}-{port}"),
    )
    .unwrap();
    lab.wait_listen(ns, port, Duration::from_secs(5)).unwrap();
}

/// What a peer-echo server at `ip:port` answers a client in `ns` (empty when nothing came).
/// UDP retries the way a real client does (`sluice_tests::udp::ask`: a datagram may meet an
/// ARP exchange).
fn ask_peer(lab: &Lab, ns: &str, proto: L4Proto, ip: Ipv4Addr, port: u16) -> String {
    let cmd = match proto {
        L4Proto::Tcp => format!("socat -T 3 -u TCP:{ip}:{port},connect-timeout=3 -"),
        L4Proto::Udp => {
            let path = format!("/run/netns/{}", lab.ns_name(ns).unwrap());
            let got = udp::ask(path, SocketAddr::from((ip, port)), b"hello\n");
            return String::from_utf8_lossy(&got.unwrap_or_default())
                .trim()
                .to_string();
        }
        L4Proto::Icmp => panic!("no ICMP server"),
    };
    let o = lab
        .exec_output(ns, &["timeout", "5", "sh", "-c", &cmd])
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A tcpdump running in a namespace, printing one line per packet to its log.
struct Capture {
    pid: u32,
    log: String,
}

impl Capture {
    fn start(lab: &mut Lab, ns: &str, dev: &str, flags: &[&str], filter: &str) -> Capture {
        let log = format!("tcpdump-{ns}-{dev}");
        let mut args = vec!["tcpdump", "-n", "-l", "-i", dev];
        args.extend_from_slice(flags);
        args.extend(filter.split_whitespace());
        let pid = lab.spawn(ns, &args, &log).unwrap();
        let start = Instant::now();
        while !read_log(lab, &log).contains("listening on") {
            assert!(
                lab.alive(pid) && start.elapsed() < Duration::from_secs(5),
                "tcpdump in {ns} did not start: {}",
                read_log(lab, &log)
            );
            sleep(Duration::from_millis(50));
        }
        Capture { pid, log }
    }

    /// Stops tcpdump and returns the packet lines it printed.
    fn finish(self, lab: &mut Lab) -> String {
        sleep(Duration::from_millis(300));
        lab.stop(self.pid);
        read_log(lab, &self.log)
    }
}

/// sluice's counters (the stats file), waiting until `pred` holds on them or `timeout` passes;
/// returns the last counters read.
fn stats_until(
    stats: impl Fn() -> Option<serde_json::Value>,
    pred: impl Fn(&serde_json::Value) -> bool,
    timeout: Duration,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let s = stats().unwrap_or(serde_json::Value::Null);
        if pred(&s) || start.elapsed() > timeout {
            return s;
        }
        sleep(Duration::from_millis(100));
    }
}

fn drops(s: &serde_json::Value, reason: &str) -> u64 {
    s["drops"][reason].as_u64().unwrap_or(0)
}

/// Waits (up to 2 s) until sluice has counted at least `min` drops for `reason`, and fails with
/// `what` and the drop counters otherwise.
fn assert_drops(stats: impl Fn() -> Option<serde_json::Value>, reason: &str, min: u64, what: &str) {
    let s = stats_until(stats, |s| drops(s, reason) >= min, Duration::from_secs(2));
    assert!(drops(&s, reason) >= min, "{what}: {}", s["drops"]);
}

/// A topology built by hand: `sw` runs sluice on a configuration assembled here, endpoints are
/// namespaces with `eth0` behind a veth whose other end `veth-NAME` is a port of sluice.
struct Custom {
    lab: Lab,
    cfg: Config,
    sluice: Option<u32>,
}

impl Custom {
    fn new(tag: &str) -> Custom {
        let mut lab = Lab::new(tag).unwrap();
        lab.add_ns(SW).unwrap();
        Custom {
            lab,
            cfg: Config::default(),
            sluice: None,
        }
    }

    /// Adds network `id` = 172.`third`.0.0/16 with gateway .1 (MAC 02:42:ac:`third`:00:01).
    fn network(&mut self, id: u16, third: u8) {
        let gateway = Ipv4Addr::new(172, third, 0, 1);
        self.cfg.networks.push(NetworkConfig::new(
            NetworkId(id),
            format!("net{id}"),
            Ipv4Cidr::new(Ipv4Addr::new(172, third, 0, 0), 16).unwrap(),
            gateway,
        ));
    }

    fn net(&self, id: u16) -> &NetworkConfig {
        self.cfg
            .networks
            .iter()
            .find(|n| n.id == NetworkId(id))
            .expect("network added first")
    }

    fn add_port(&mut self, name: &str, io: PortIo, role: PortRole) {
        let id = PortId(u16::try_from(self.cfg.ports.len()).unwrap());
        self.cfg.ports.push(PortConfig {
            id,
            name: name.into(),
            io,
            role,
        });
    }

    /// Endpoint namespace `ns` with address 172.x.0.`host` on network `net`, in `vlan`.
    fn endpoint(&mut self, ns: &str, net: u16, host: u8, vlan: u16) -> Ipv4Addr {
        let n = self.net(net).clone();
        let ip = Ipv4Addr::from(u32::from(n.subnet.network()) + u32::from(host));
        let mac = MacAddr::from_ipv4(ip);
        let port = format!("veth-{ns}");
        let lab = &mut self.lab;
        lab.add_ns(ns).unwrap();
        lab.veth((SW, &port), (ns, "eth0")).unwrap();
        lab.mac(ns, "eth0", mac).unwrap();
        lab.addr(ns, "eth0", &format!("{ip}/{}", n.subnet.prefix))
            .unwrap();
        lab.up(ns, "eth0").unwrap();
        lab.up(SW, &port).unwrap();
        lab.route(ns, "default", n.gateway).unwrap();
        self.add_port(
            &port,
            PortIo::AfPacket,
            PortRole::Endpoint {
                network: NetworkId(net),
                vlan,
                mac,
                ipv4: Some(ip),
                ipv6: None,
            },
        );
        ip
    }

    fn config_path(&self) -> PathBuf {
        self.lab.dir().join("sluice.json")
    }

    /// Writes the configuration and starts sluice in `sw`.
    fn start(&mut self, workers: usize) {
        let path = self.config_path();
        std::fs::write(&path, serde_json::to_vec_pretty(&self.cfg).unwrap()).unwrap();
        let pid = self
            .lab
            .spawn_os(SW, &launch(workers).command(&path), "sluice")
            .unwrap();
        let start = Instant::now();
        while !read_log(&self.lab, "sluice").contains("forwarding on") {
            assert!(
                self.lab.alive(pid) && start.elapsed() < Duration::from_secs(10),
                "sluice did not start: {}",
                read_log(&self.lab, "sluice")
            );
            sleep(Duration::from_millis(50));
        }
        self.sluice = Some(pid);
    }

    fn stats(&self) -> Option<serde_json::Value> {
        let path = SluiceLaunch::stats_path(&self.config_path());
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    fn assert_sluice_alive(&mut self) {
        let pid = self.sluice.expect("sluice started");
        assert!(
            self.lab.alive(pid),
            "sluice exited: {}",
            read_log(&self.lab, "sluice")
        );
    }
}

/// Sends one raw Ethernet frame out of `dev` in the lab namespace `ns` (an AF_PACKET socket
/// opened by a thread that entered the namespace through iproute2's `/var/run/netns` file;
/// the frame's bytes go out as they are, tag included).
fn send_raw(lab: &Lab, ns: &str, dev: &str, frame: &[u8]) {
    let path = Path::new("/var/run/netns").join(lab.ns_name(ns).unwrap());
    let (dev, frame) = (CString::new(dev).unwrap(), frame.to_vec());
    let sent = std::thread::spawn(move || -> std::io::Result<()> {
        let nsf = File::open(&path)?;
        // SAFETY: setns on a namespace file we opened; it changes only this thread.
        if unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: plain socket creation; protocol 0 = send only.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: `dev` is a valid C string.
        let index = unsafe { libc::if_nametoindex(dev.as_ptr()) };
        if index == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = index as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: the buffer and address are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    });
    sent.join()
        .expect("the raw-socket thread panicked")
        .expect("sending a raw frame");
}

/// An 802.1Q-tagged broadcast ARP request (VLAN `vid`) asking for `target` from `sender`.
fn tagged_arp_request(vid: u16, smac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&smac);
    f.extend_from_slice(&0x8100u16.to_be_bytes());
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&smac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f.resize(64, 0);
    f
}

#[test]
fn endpoints_ping_and_move_100_mb_over_tcp() {
    if !ready() {
        return;
    }
    // Two workers: each veth is read by an AF_PACKET fanout group.
    let mut topo = docker("eb", DockerLikeSpec::default(), 2);
    let (a, b) = (topo.ip("a").unwrap(), topo.ip("b").unwrap());
    assert!(ping(&topo.lab, "a", b, 3, &[]), "a cannot ping b");
    assert!(ping(&topo.lab, "b", a, 3, &[]), "b cannot ping a");
    tcp_transfer(&mut topo.lab, "a", "b", b, 5001, 100_000_000);
    // Through sluice: its userspace path (what port veth-a received) or the kernel flow
    // offload it installed for the flow (on by default; its counters follow once a second).
    let through = |s: &serde_json::Value| {
        let rx_a = s["ports"][0]["rx_bytes"].as_u64().unwrap_or(0);
        (rx_a, s["offload"]["kernel_bytes"].as_u64().unwrap_or(0))
    };
    let s = stats_until(
        || topo.sluice_stats(),
        |s| {
            let (rx_a, kernel) = through(s);
            rx_a + kernel > 100_000_000
        },
        Duration::from_secs(5),
    );
    let (rx_a, kernel) = through(&s);
    assert!(
        rx_a + kernel > 100_000_000,
        "sluice forwarded the stream (port veth-a received {rx_a} bytes, the offload {kernel})"
    );
}

#[test]
fn other_network_is_isolated_but_reaches_its_gateway() {
    if !ready() {
        return;
    }
    let mut t = Custom::new("ei");
    t.network(0, 17);
    t.network(1, 18);
    let a = t.endpoint("a", 0, 2, 0);
    let b = t.endpoint("b", 0, 3, 0);
    let c = t.endpoint("c", 1, 2, 0);
    t.start(1);
    let gw_c = t.net(1).gateway;
    t.lab
        .wait_ping("c", gw_c, Duration::from_secs(5))
        .expect("c reaches its own gateway 172.18.0.1");
    t.lab
        .wait_ping("a", b, Duration::from_secs(5))
        .expect("a reaches b on its own network");
    assert!(
        ping_fails(&t.lab, "c", a, 2),
        "c (172.18) reached a (172.17)"
    );
    assert!(
        ping_fails(&t.lab, "a", c, 2),
        "a (172.17) reached c (172.18)"
    );
    assert!(
        ping_fails(&t.lab, "c", b, 2),
        "c (172.18) reached b (172.17)"
    );
    assert!(
        ping_fails(&t.lab, "c", t.net(0).gateway, 2),
        "c reached the other network's gateway"
    );
    assert_drops(
        || t.stats(),
        "isolated",
        4,
        "sluice counted the isolated pings",
    );
    t.assert_sluice_alive();
}

#[test]
fn gateway_answers_arp_and_ping() {
    if !ready() {
        return;
    }
    let topo = docker("eg", DockerLikeSpec::default(), 1);
    let gw = topo.spec.gateway();
    topo.lab
        .ip("a", &["neigh", "flush", "dev", "eth0"])
        .unwrap();
    assert!(
        !topo
            .lab
            .ip("a", &["neigh", "show", &gw.to_string(), "dev", "eth0"])
            .unwrap()
            .contains(GW_MAC),
        "the flush left the gateway's entry"
    );
    assert!(
        ping(&topo.lab, "a", gw, 3, &[]),
        "a cannot ping its gateway"
    );
    let neigh = topo
        .lab
        .ip("a", &["neigh", "show", &gw.to_string(), "dev", "eth0"])
        .unwrap();
    assert!(
        neigh.contains(&format!("lladdr {GW_MAC}")),
        "a's neighbour entry of the gateway: {neigh:?}"
    );
    assert!(
        ["REACHABLE", "STALE", "DELAY", "PROBE"]
            .iter()
            .any(|s| neigh.contains(s)),
        "the gateway's entry is resolved: {neigh:?}"
    );
    assert_eq!(topo.spec.gateway_mac().to_string(), GW_MAC);
}

#[test]
fn outbound_napt_for_tcp_udp_and_ping() {
    if !ready() {
        return;
    }
    let mut topo = docker("en", DockerLikeSpec::default(), 2);
    let outside = topo.spec.outside_ip();
    let uplink = topo.spec.uplink_ip().addr.to_string();
    peer_echo_server(&mut topo.lab, OUTSIDE, L4Proto::Tcp, 9000);
    peer_echo_server(&mut topo.lab, OUTSIDE, L4Proto::Udp, 9001);
    for ep in ["a", "b"] {
        assert_eq!(
            ask_peer(&topo.lab, ep, L4Proto::Tcp, outside, 9000),
            uplink,
            "TCP from {ep}: the outside sees the uplink address"
        );
        assert_eq!(
            ask_peer(&topo.lab, ep, L4Proto::Udp, outside, 9001),
            uplink,
            "UDP from {ep}: the outside sees the uplink address"
        );
    }
    let cap = Capture::start(&mut topo.lab, OUTSIDE, "eth0", &[], "icmp");
    assert!(
        ping(&topo.lab, "a", outside, 3, &[]),
        "a cannot ping the outside"
    );
    let seen = cap.finish(&mut topo.lab);
    let want = format!("IP {uplink} > {outside}: ICMP echo request");
    assert_eq!(
        seen.matches(&want).count(),
        3,
        "the outside sees 3 echo requests from the uplink address:\n{seen}"
    );
    assert!(
        !seen.contains("172.17."),
        "a container address leaked:\n{seen}"
    );
    let s = topo.sluice_stats().expect("sluice's counters");
    assert!(
        s["conntrack_flows"].as_u64().unwrap_or(0) >= 1,
        "flows are tracked: {s}"
    );
}

#[test]
fn published_ports_reach_the_endpoint_from_outside() {
    if !ready() {
        return;
    }
    let spec = DockerLikeSpec {
        publish: vec![
            publish(L4Proto::Tcp, 8080, "a", 80),
            publish(L4Proto::Udp, 8053, "a", 7053),
        ],
        ..DockerLikeSpec::default()
    };
    let mut topo = docker("ep", spec, 1);
    let outside = topo.spec.outside_ip().to_string();
    let uplink = topo.spec.uplink_ip().addr;
    peer_echo_server(&mut topo.lab, "a", L4Proto::Tcp, 80);
    peer_echo_server(&mut topo.lab, "a", L4Proto::Udp, 7053);
    for _ in 0..3 {
        assert_eq!(
            ask_peer(&topo.lab, OUTSIDE, L4Proto::Tcp, uplink, 8080),
            outside,
            "TCP 198.18.0.1:8080 reaches a:80, which sees the real client"
        );
    }
    assert_eq!(
        ask_peer(&topo.lab, OUTSIDE, L4Proto::Udp, uplink, 8053),
        outside,
        "UDP 198.18.0.1:8053 reaches a:7053, which sees the real client"
    );
    assert_eq!(
        ask_peer(&topo.lab, OUTSIDE, L4Proto::Tcp, uplink, 8081),
        "",
        "an unpublished port answers nothing"
    );
}

#[test]
fn hairpin_reaches_the_published_port_from_inside() {
    if !ready() {
        return;
    }
    let spec = DockerLikeSpec {
        publish: vec![publish(L4Proto::Tcp, 8080, "a", 80)],
        ..DockerLikeSpec::default()
    };
    let mut topo = docker("eh", spec, 1);
    let uplink = topo.spec.uplink_ip().addr;
    let gw = topo.spec.gateway().to_string();
    peer_echo_server(&mut topo.lab, "a", L4Proto::Tcp, 80);
    for _ in 0..3 {
        assert_eq!(
            ask_peer(&topo.lab, "b", L4Proto::Tcp, uplink, 8080),
            gw,
            "b reaches a:80 through 198.18.0.1:8080; a sees the gateway as the peer"
        );
    }
}

#[test]
fn icc_off_isolates_endpoints_but_not_gateway_or_outside() {
    if !ready() {
        return;
    }
    let spec = DockerLikeSpec {
        icc: false,
        ..DockerLikeSpec::default()
    };
    let mut topo = docker("ec", spec, 1);
    let (a, b) = (topo.ip("a").unwrap(), topo.ip("b").unwrap());
    let outside = topo.spec.outside_ip();
    // ARP broadcasts from an endpoint do not reach the other endpoints.
    assert!(ping_fails(&topo.lab, "a", b, 2), "a reached b with icc off");
    assert!(ping_fails(&topo.lab, "b", a, 2), "b reached a with icc off");
    // With b's MAC known, a's pings are unicast frames to b: sluice refuses them.
    let b_mac = topo.spec.endpoint_mac(1).to_string();
    topo.lab
        .ip(
            "a",
            &[
                "neigh",
                "replace",
                &b.to_string(),
                "lladdr",
                &b_mac,
                "dev",
                "eth0",
            ],
        )
        .unwrap();
    assert!(ping_fails(&topo.lab, "a", b, 3), "a reached b with icc off");
    assert!(
        ping(&topo.lab, "a", topo.spec.gateway(), 2, &[]),
        "a still pings the gateway"
    );
    assert!(
        ping(&topo.lab, "a", outside, 2, &[]),
        "a still pings the outside"
    );
    peer_echo_server(&mut topo.lab, OUTSIDE, L4Proto::Tcp, 9000);
    assert_eq!(
        ask_peer(&topo.lab, "a", L4Proto::Tcp, outside, 9000),
        topo.spec.uplink_ip().addr.to_string(),
        "a still connects to the outside"
    );
    assert_drops(
        || topo.sluice_stats(),
        "icc_denied",
        3,
        "sluice counted the denied frames",
    );
}

#[test]
fn spoofed_source_is_dropped() {
    if !ready() {
        return;
    }
    let mut topo = docker("es", DockerLikeSpec::default(), 1);
    let b = topo.ip("b").unwrap();
    let b_mac = topo.spec.endpoint_mac(1).to_string();
    let forged = "172.17.0.99";
    topo.lab.addr("a", "eth0", &format!("{forged}/16")).unwrap();
    // A static neighbour entry: the forged pings themselves go out (no ARP from the forged
    // address in front of them).
    topo.lab
        .ip(
            "a",
            &[
                "neigh",
                "replace",
                &b.to_string(),
                "lladdr",
                &b_mac,
                "dev",
                "eth0",
            ],
        )
        .unwrap();
    let cap = Capture::start(&mut topo.lab, "b", "eth0", &[], "icmp");
    let o = topo
        .lab
        .exec_output(
            "a",
            &[
                "ping",
                "-q",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "1",
                "-I",
                forged,
                &b.to_string(),
            ],
        )
        .unwrap();
    let forged_out = String::from_utf8_lossy(&o.stdout);
    assert!(
        forged_out.contains(" 0 received"),
        "a forged ping got an answer: {forged_out}"
    );
    // Control: a genuine ping from a's own address arrives (the capture works).
    assert!(ping(&topo.lab, "a", b, 1, &["-I", "172.17.0.2"]));
    let seen = cap.finish(&mut topo.lab);
    assert!(
        seen.contains("172.17.0.2 > 172.17.0.3: ICMP echo request"),
        "b's capture misses the genuine ping:\n{seen}"
    );
    assert!(
        !seen.contains(forged),
        "b received frames from the forged source:\n{seen}"
    );
    assert_drops(
        || topo.sluice_stats(),
        "spoofed_ip",
        3,
        "sluice counted the forged pings as spoofed_ip",
    );
}

#[test]
fn mtu_1500_and_9000() {
    if !ready() {
        return;
    }
    for mtu in [1500u16, 9000] {
        let spec = DockerLikeSpec {
            mtu: Some(mtu),
            ..DockerLikeSpec::default()
        };
        let mut topo = docker("em", spec, 1);
        let b = topo.ip("b").unwrap();
        // The largest ICMP payload that fits the MTU unfragmented: 20 (IP) + 8 (ICMP).
        let size = (mtu - 28).to_string();
        assert!(
            ping(&topo.lab, "a", b, 3, &["-s", &size, "-M", "do"]),
            "a cannot ping b with {size}-byte payloads, DF, at MTU {mtu}"
        );
        if mtu == 9000 {
            assert!(
                ping(&topo.lab, "a", b, 3, &["-s", "8000", "-M", "do"]),
                "ping -s 8000 -M do at MTU 9000"
            );
        }
        tcp_transfer(&mut topo.lab, "a", "b", b, 5002, 20_000_000);
    }
}

#[test]
fn tap_endpoint_and_veth_endpoint_share_a_network() {
    if !ready() {
        return;
    }
    let mut t = Custom::new("et");
    t.network(0, 17);
    let a = t.endpoint("a", 0, 2, 0);
    let c = Ipv4Addr::new(172, 17, 0, 4);
    let c_mac = MacAddr::from_ipv4(c);
    t.add_port(
        "tapc",
        PortIo::Tap,
        PortRole::Endpoint {
            network: NetworkId(0),
            vlan: 0,
            mac: c_mac,
            ipv4: Some(c),
            ipv6: None,
        },
    );
    t.start(1);
    assert!(
        t.lab.ip(SW, &["link", "show", "tapc"]).is_ok(),
        "sluice created the TAP device in sw"
    );
    t.lab.add_ns("c").unwrap();
    let c_ns = t.lab.ns_name("c").unwrap();
    t.lab
        .ip(SW, &["link", "set", "tapc", "netns", &c_ns])
        .unwrap();
    t.lab.mac("c", "tapc", c_mac).unwrap();
    t.lab.addr("c", "tapc", &format!("{c}/16")).unwrap();
    t.lab.up("c", "tapc").unwrap();
    t.lab.route("c", "default", t.net(0).gateway).unwrap();
    let link = t.lab.ip("c", &["link", "show", "tapc"]).unwrap();
    assert!(
        !link.contains("NO-CARRIER"),
        "the TAP lost its queue (sluice's fd) in the move: {link}"
    );
    t.lab
        .wait_ping("c", a, Duration::from_secs(5))
        .expect("c (TAP) reaches a (veth)");
    assert!(ping(&t.lab, "c", a, 3, &[]), "c cannot ping a");
    assert!(ping(&t.lab, "a", c, 3, &[]), "a cannot ping c");
    assert!(
        ping(&t.lab, "c", t.net(0).gateway, 2, &[]),
        "c cannot ping the gateway"
    );
    let s = t.stats().expect("sluice's counters");
    let tap = s["ports"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "tapc"))
        .cloned()
        .unwrap_or_default();
    assert!(
        tap["rx_packets"].as_u64().unwrap_or(0) >= 3
            && tap["tx_packets"].as_u64().unwrap_or(0) >= 3,
        "traffic went through the TAP port: {tap}"
    );
    t.assert_sluice_alive();
}

#[test]
fn trunk_carries_vlans_tagged() {
    if !ready() {
        return;
    }
    let mut t = Custom::new("eq");
    t.network(0, 17);
    let a = t.endpoint("a", 0, 2, 10);
    let b = t.endpoint("b", 0, 3, 20);
    t.lab.add_ns("t").unwrap();
    t.lab.veth((SW, "veth-t"), ("t", "eth0")).unwrap();
    t.lab.up("t", "eth0").unwrap();
    t.lab.up(SW, "veth-t").unwrap();
    t.add_port(
        "veth-t",
        PortIo::AfPacket,
        PortRole::Trunk {
            network: NetworkId(0),
            allowed: vec![10, 20],
            native: None,
        },
    );
    t.start(1);
    let cap_t = Capture::start(&mut t.lab, "t", "eth0", &["-e"], "arp or vlan");
    let cap_b = Capture::start(&mut t.lab, "b", "eth0", &[], "arp");
    // Broadcast ARP requests for absent addresses from a (VLAN 10) and b (VLAN 20).
    assert!(ping_fails(&t.lab, "a", Ipv4Addr::new(172, 17, 0, 50), 1));
    assert!(ping_fails(&t.lab, "b", Ipv4Addr::new(172, 17, 0, 51), 1));
    // From t: a VLAN 20 ARP request for b from a made-up station.
    let station = [0x02, 0, 0, 0, 0, 0x99];
    let from = Ipv4Addr::new(172, 17, 0, 99);
    send_raw(
        &t.lab,
        "t",
        "eth0",
        &tagged_arp_request(20, station, from, b),
    );
    sleep(Duration::from_millis(300));
    let seen_b = cap_b.finish(&mut t.lab);
    let seen = cap_t.finish(&mut t.lab);
    let line = |needle: &str| {
        seen.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
            .to_string()
    };
    let from_a = line(&format!("who-has 172.17.0.50 tell {a}"));
    assert!(
        from_a.contains("vlan 10,"),
        "a's broadcast reaches the trunk tagged 10:\n{seen}"
    );
    let from_b = line(&format!("who-has 172.17.0.51 tell {b}"));
    assert!(
        from_b.contains("vlan 20,"),
        "b's broadcast reaches the trunk tagged 20:\n{seen}"
    );
    let reply = line(&format!("Reply {b} is-at"));
    assert!(
        reply.contains("vlan 20,") && reply.contains("02:00:00:00:00:99"),
        "b answers the tagged request; the reply leaves on the trunk tagged 20:\n{seen}"
    );
    assert!(
        seen_b.contains(&format!("Request who-has {b} tell {from}")),
        "b received the injected request untagged:\n{seen_b}"
    );
    assert!(
        !seen_b.contains("172.17.0.50"),
        "a's VLAN 10 broadcast leaked into VLAN 20:\n{seen_b}"
    );
    t.assert_sluice_alive();
}
