//! Flow offload in the kernel (sluice-offload): namespaces a and b each reach a middle
//! namespace m over a veth; the Offload lives in m, attached to both m-side veths. m forwards
//! what is not offloaded with the kernel (a bridge, or routing plus iptables DNAT), so the
//! handshake (SYN always goes to userspace, here the kernel) completes; static entries then
//! carry the flow inside TC. Checksums the offload rewrote are proven by data arriving intact:
//! with transmit checksum offload off in a and b the receivers verify them; with it on (GSO
//! super-frames, CHECKSUM_PARTIAL) m's veths have it off, so redirected frames are segmented
//! and checksummed in software from the pseudo-header sum the offload fixed, then verified.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_dataplane::wire::MacAddr;
use sluice_lab::lab::Lab;
use sluice_offload::{
    DecapAction, DecapKey, EncapAction, FlowAction, FlowKey, FlowUsage, Offload, OffloadError,
    Vxlan,
};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const MAC_MA: [u8; 6] = [2, 0, 0, 0, 1, 0xa];
const MAC_MB: [u8; 6] = [2, 0, 0, 0, 1, 0xb];
const TCP: u8 = 6;
const UDP: u8 = 17;

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The offload, or None (with the reason printed) where the test cannot run.
fn offload() -> Option<Offload> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for namespaces and BPF");
        return None;
    }
    if let Some(t) = ["ip", "iptables", "socat", "ethtool", "ss"]
        .into_iter()
        .find(|t| !have(t))
    {
        eprintln!("skipped: {t} is not installed");
        return None;
    }
    match Offload::new(64) {
        Err(OffloadError::Unsupported(why)) => {
            eprintln!("skipped: {why}");
            None
        }
        res => Some(res.expect("offload programs load")),
    }
}

/// Runs `f` on a thread that joined the lab's namespace `ns` (attach, detach and packet
/// sockets act in the caller's namespace).
fn in_ns<T: Send>(lab: &Lab, ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{}", lab.ns_name(ns).unwrap());
    std::thread::scope(|s| {
        s.spawn(|| {
            sluice_sys::enter_netns(&File::open(&path).unwrap()).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

fn ifindex(lab: &Lab, ns: &str, dev: &str) -> u32 {
    let out = lab.ip(ns, &["-o", "link", "show", "dev", dev]).unwrap();
    out.split(':').next().unwrap().trim().parse().unwrap()
}

/// The frames `dev` in `ns` transmitted so far.
fn tx_packets(lab: &Lab, ns: &str, dev: &str) -> u64 {
    let path = format!("/sys/class/net/{dev}/statistics/tx_packets");
    lab.exec(ns, &["cat", &path])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// a -- veth-a|m-a -- m -- m-b|veth-b -- b, MACs fixed.
fn topology(lab: &mut Lab) {
    for ns in ["a", "m", "b"] {
        lab.add_ns(ns).unwrap();
    }
    lab.veth(("a", "veth-a"), ("m", "m-a")).unwrap();
    lab.veth(("b", "veth-b"), ("m", "m-b")).unwrap();
    for (ns, dev, mac) in [
        ("a", "veth-a", MAC_A),
        ("m", "m-a", MAC_MA),
        ("m", "m-b", MAC_MB),
        ("b", "veth-b", MAC_B),
    ] {
        lab.mac(ns, dev, MacAddr(mac)).unwrap();
        lab.up(ns, dev).unwrap();
    }
}

/// Turns transmit checksum offload (and so TSO) on or off on `devs`.
fn tx_csum(lab: &Lab, devs: &[(&str, &str)], on: bool) {
    for (ns, dev) in devs {
        lab.ethtool_k(ns, dev, &[("tx", on)]).unwrap();
    }
}

/// `len` bytes that are not all alike, written to the lab's directory as `name`.
fn payload(lab: &Lab, name: &str, len: usize, seed: u8) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8 ^ seed).collect();
    std::fs::write(lab.dir().join(name), &data).unwrap();
    data
}

/// Sends `name` from a to `target` over TCP from source port `sport`, into a one-shot
/// receiver in b on `port` writing `out`; returns what b received.
fn tcp_transfer(
    lab: &mut Lab,
    name: &str,
    (target, sport): (&str, u16),
    port: u16,
    v6: bool,
) -> Vec<u8> {
    let out = lab.dir().join(format!("{name}.recv"));
    let family = if v6 { "TCP6" } else { "TCP" };
    let listen = format!("{family}-LISTEN:{port},reuseaddr");
    let create = format!("CREATE:{}", out.display());
    let server = lab
        .spawn("b", &["socat", "-u", &listen, &create], name)
        .unwrap();
    lab.wait_listen("b", port, Duration::from_secs(5)).unwrap();
    let file = format!("FILE:{}", lab.dir().join(name).display());
    let connect = format!("{family}:{target},sourceport={sport},connect-timeout=3");
    lab.exec("a", &["timeout", "20", "socat", "-u", &file, &connect])
        .unwrap();
    let start = Instant::now();
    while lab.alive(server) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !lab.alive(server),
        "the receiver never saw the end of {name}"
    );
    std::fs::read(out).unwrap()
}

/// Sends 2 MiB from a over TCP (see [`tcp_transfer`], to port 5201 in b), checks that it
/// arrived intact and that the offload's entry `there` carried most of it; that entry's usage.
fn offloaded_transfer(
    lab: &mut Lab,
    off: &Offload,
    name: &str,
    to: (&str, u16),
    v6: bool,
    there: &FlowKey,
) -> FlowUsage {
    let data = payload(lab, name, 2 << 20, name.len() as u8);
    let got = tcp_transfer(lab, name, to, 5201, v6);
    assert!(
        got == data,
        "{name}: {} bytes arrived of {}",
        got.len(),
        data.len()
    );
    let sent = off.usage(there).unwrap().unwrap();
    // Not all: the last segment carries the FIN, which goes to userspace.
    assert!(sent.bytes >= 9 * data.len() as u64 / 10, "{name}: {sent:?}");
    sent
}

/// A UDP receiver in b (`listen`: socat's address) appending every datagram to a file; the
/// file's path.
fn udp_sink(lab: &mut Lab, listen: &str) -> PathBuf {
    let out = lab.dir().join(format!("{listen}.recv").replace(':', "-"));
    let sink = format!("OPEN:{},creat,append", out.display());
    lab.spawn("b", &["socat", "-u", listen, &sink], "udp")
        .unwrap();
    let port = listen.rsplit(':').next().unwrap().parse().unwrap();
    lab.wait_listen("b", port, Duration::from_secs(5)).unwrap();
    out
}

/// Sends file `name` from a as 1000-byte datagrams to socat's address `to`.
fn udp_send(lab: &Lab, name: &str, to: &str) {
    let file = format!("FILE:{}", lab.dir().join(name).display());
    lab.exec("a", &["socat", "-u", "-b", "1000", &file, to])
        .unwrap();
}

/// The file at `path` once it has `len` bytes (or after 5 s).
fn wait_file(path: &Path, len: usize) -> Vec<u8> {
    let start = Instant::now();
    while std::fs::metadata(path).map_or(0, |m| m.len() as usize) < len
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read(path).unwrap_or_default()
}

/// An AF_PACKET socket (all protocols) on one interface, not reading what it sends out.
struct PacketSocket(OwnedFd);

impl PacketSocket {
    fn open(ifindex: u32) -> PacketSocket {
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket creation; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                all.into(),
            )
        };
        assert!(raw >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // SAFETY: the option value is a live c_int of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = all;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a live sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        PacketSocket(fd)
    }

    /// Reads every frame queued and counts IPv4 frames of `proto` from source port `sport`.
    fn count(&self, proto: u8, sport: u16) -> usize {
        self.ttls(proto, sport).len()
    }

    /// Reads every frame queued; the TTLs of the IPv4 frames of `proto` from `sport`.
    fn ttls(&self, proto: u8, sport: u16) -> Vec<u8> {
        let mut buf = [0u8; 2048];
        let mut ttls = Vec::new();
        loop {
            // SAFETY: `buf` is a live buffer of the length passed.
            let len = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if len < 0 {
                return ttls;
            }
            let f = &buf[..len as usize];
            let ipv4 = f.len() >= 38 && f[12..14] == [8, 0] && f[14] == 0x45;
            if ipv4 && f[23] == proto && f[34..36] == sport.to_be_bytes() {
                ttls.push(f[22]);
            }
        }
    }
}

fn key(ifindex: u32, src: IpAddr, dst: IpAddr, proto: u8, (sport, dport): (u16, u16)) -> FlowKey {
    FlowKey {
        ifindex,
        src,
        dst,
        proto,
        sport,
        dport,
    }
}

fn forward(egress_ifindex: u32, eth_src: [u8; 6], eth_dst: [u8; 6]) -> FlowAction {
    FlowAction {
        egress_ifindex,
        eth_src,
        eth_dst,
        decrement_ttl: false,
        snat: None,
        dnat: None,
    }
}

/// The topology with a Linux bridge in m: a is 10.0.0.1, b 10.0.0.2.
fn bridged(lab: &mut Lab) {
    topology(lab);
    lab.ip("m", &["link", "add", "br0", "type", "bridge"])
        .unwrap();
    for dev in ["m-a", "m-b"] {
        lab.ip("m", &["link", "set", dev, "master", "br0"]).unwrap();
    }
    lab.up("m", "br0").unwrap();
    lab.addr("a", "veth-a", "10.0.0.1/24").unwrap();
    lab.addr("b", "veth-b", "10.0.0.2/24").unwrap();
}

#[test]
fn bridged_flows_are_forwarded_inside_the_kernel_for_both_families() {
    let Some(off) = offload() else { return };
    let mut lab = Lab::new("ofb").unwrap();
    bridged(&mut lab);
    tx_csum(&lab, &[("a", "veth-a"), ("b", "veth-b")], false);
    lab.addr6("a", "veth-a", "fd00::1/64").unwrap();
    lab.addr6("b", "veth-b", "fd00::2/64").unwrap();
    let (ma, mb) = (ifindex(&lab, "m", "m-a"), ifindex(&lab, "m", "m-b"));
    in_ns(&lab, "m", || {
        (off.attach(ma).unwrap(), off.attach(mb).unwrap())
    });
    let shown = lab
        .exec("m", &["tc", "filter", "show", "dev", "m-a", "ingress"])
        .unwrap();
    assert!(
        shown.contains("sluice_offload") && shown.contains("direct-action"),
        "{shown}"
    );

    let pairs: [(IpAddr, IpAddr, bool); 2] = [
        (
            Ipv4Addr::new(10, 0, 0, 1).into(),
            Ipv4Addr::new(10, 0, 0, 2).into(),
            false,
        ),
        (
            "fd00::1".parse::<Ipv6Addr>().unwrap().into(),
            "fd00::2".parse::<Ipv6Addr>().unwrap().into(),
            true,
        ),
    ];
    // Both m-side veths have their peers in other namespaces: entries out of them hand frames
    // straight to the peer, so m-b transmits only what the bridge forwards (handshake, FIN).
    assert!(off.redirects_to_peer(ma) && off.redirects_to_peer(mb));
    for (i, (a, b, v6)) in pairs.into_iter().enumerate() {
        let tx_before = tx_packets(&lab, "m", "m-b");
        let ports = (40010 + i as u16, 5201);
        let there = key(ma, a, b, TCP, ports);
        let back = key(mb, b, a, TCP, (ports.1, ports.0));
        off.insert(&there, &forward(mb, MAC_A, MAC_B)).unwrap();
        off.insert(&back, &forward(ma, MAC_B, MAC_A)).unwrap();
        let name = format!("bridged{i}");
        let target = if v6 {
            format!("[{b}]:5201")
        } else {
            format!("{b}:5201")
        };
        let sent = offloaded_transfer(&mut lab, &off, &name, (&target, ports.0), v6, &there);
        assert!(sent.packets >= 100, "{name}: {sent:?}");
        let transmitted = tx_packets(&lab, "m", "m-b") - tx_before;
        assert!(
            transmitted < sent.packets / 4,
            "{name}: m-b sent {transmitted}, {sent:?}"
        );
        let acked = off.usage(&back).unwrap().unwrap();
        assert!(
            acked.packets > 0 && acked.last_used_ns <= sluice_offload::now_ns(),
            "{name}: {acked:?}"
        );
    }
    // IPv6 UDP with both sides rewritten, offload only: a sends to a virtual [fd00::99]:8080
    // (its neighbour entry: b's MAC); b's UDP verifies the checksum the offload fixed.
    let v6 = |s: &str| IpAddr::from(s.parse::<Ipv6Addr>().unwrap());
    lab.ip(
        "a",
        &[
            "-6",
            "neigh",
            "add",
            "fd00::99",
            "lladdr",
            "02:00:00:00:00:0b",
            "dev",
            "veth-a",
        ],
    )
    .unwrap();
    let udp = key(ma, v6("fd00::1"), v6("fd00::99"), UDP, (40020, 8080));
    let nat = FlowAction {
        snat: Some((v6("fd00::5:0:0:7"), 7000)),
        dnat: Some((v6("fd00::2"), 5300)),
        ..forward(mb, MAC_A, MAC_B)
    };
    off.insert(&udp, &nat).unwrap();
    let out = udp_sink(&mut lab, "UDP6-RECV:5300");
    let data = payload(&lab, "udp6", 20_000, 3);
    udp_send(&lab, "udp6", "UDP6-SENDTO:[fd00::99]:8080,sourceport=40020");
    assert!(
        wait_file(&out, data.len()) == data,
        "IPv6 NAT UDP did not arrive intact"
    );
    assert_eq!(off.usage(&udp).unwrap().unwrap().packets, 20);

    in_ns(&lab, "m", || {
        (off.detach(ma).unwrap(), off.detach(mb).unwrap())
    });
    let shown = lab
        .exec("m", &["tc", "qdisc", "show", "dev", "m-a"])
        .unwrap();
    assert!(!shown.contains("clsact"), "{shown}");
}

/// Routed m: a (10.1.0.2) reaches b (10.2.0.2) as 10.9.9.9:8080, DNAT in m's iptables for the
/// kernel path; the offload entries do the same NAT (DNAT there, SNAT back) and the TTL.
fn routed_nat(lab: &mut Lab) {
    topology(lab);
    lab.addr("a", "veth-a", "10.1.0.2/24").unwrap();
    lab.addr("m", "m-a", "10.1.0.1/24").unwrap();
    lab.addr("m", "m-b", "10.2.0.1/24").unwrap();
    lab.addr("b", "veth-b", "10.2.0.2/24").unwrap();
    lab.route("a", "default", Ipv4Addr::new(10, 1, 0, 1))
        .unwrap();
    lab.route("b", "default", Ipv4Addr::new(10, 2, 0, 1))
        .unwrap();
    lab.sysctl("m", "net.ipv4.ip_forward", "1").unwrap();
    tx_csum(lab, &[("m", "m-a"), ("m", "m-b")], false);
    for (proto, to) in [("tcp", "10.2.0.2:5201"), ("udp", "10.2.0.2:5300")] {
        let rule = [
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            "10.9.9.9",
            "-p",
            proto,
            "--dport",
            "8080",
        ];
        let mut args = rule.to_vec();
        args.extend(["-j", "DNAT", "--to-destination", to]);
        lab.iptables("m", &args).unwrap();
    }
    // The offloaded middle of a connection never reaches conntrack: its FIN must still pass.
    lab.sysctl("m", "net.netfilter.nf_conntrack_tcp_be_liberal", "1")
        .unwrap();
}

#[test]
fn nat_flows_are_rewritten_hidden_from_packet_sockets_and_removable() {
    let Some(off) = offload() else { return };
    let mut lab = Lab::new("ofn").unwrap();
    routed_nat(&mut lab);
    let (ma, mb) = (ifindex(&lab, "m", "m-a"), ifindex(&lab, "m", "m-b"));
    let sock = in_ns(&lab, "m", || {
        off.attach(ma).unwrap();
        off.attach(mb).unwrap();
        let sock = PacketSocket::open(ma);
        off.attach_socket_filter(sock.0.as_fd()).unwrap();
        sock
    });
    let a: IpAddr = Ipv4Addr::new(10, 1, 0, 2).into();
    let b: IpAddr = Ipv4Addr::new(10, 2, 0, 2).into();
    let public: IpAddr = Ipv4Addr::new(10, 9, 9, 9).into();
    let routed = |egress, src, dst| FlowAction {
        decrement_ttl: true,
        ..forward(egress, src, dst)
    };

    let dnat = FlowAction {
        dnat: Some((b, 5201)),
        ..routed(mb, MAC_MB, MAC_B)
    };
    let snat = FlowAction {
        snat: Some((public, 8080)),
        ..routed(ma, MAC_MA, MAC_A)
    };
    // TCP, DNAT a -> b and SNAT back: checksums complete (tx off), then partial (tx on, GSO).
    for (sport, partial) in [(40001, false), (40003, true)] {
        tx_csum(&lab, &[("a", "veth-a"), ("b", "veth-b")], partial);
        let there = key(ma, a, public, TCP, (sport, 8080));
        let back = key(mb, b, a, TCP, (5201, sport));
        off.insert(&there, &dnat).unwrap();
        off.insert(&back, &snat).unwrap();
        let name = format!("nat{sport}");
        let to = ("10.9.9.9:8080", sport);
        let sent = offloaded_transfer(&mut lab, &off, &name, to, false, &there);
        assert!(sent.packets >= 10, "{name}: {sent:?}");
        assert!(off.usage(&back).unwrap().unwrap().packets > 0);
        // The packet socket on m-a saw the handshake and the close (userspace's), not the data.
        let seen = sock.count(TCP, sport);
        assert!(
            (1..10).contains(&seen),
            "{name}: {seen} frames reached the packet socket"
        );
    }

    // UDP: offloaded, then removed: the next datagrams take the kernel's path (and reach
    // the packet socket again).
    let udp = key(ma, a, public, UDP, (40002, 8080));
    off.insert(
        &udp,
        &FlowAction {
            dnat: Some((b, 5300)),
            ..dnat
        },
    )
    .unwrap();
    let out = udp_sink(&mut lab, "UDP-RECV:5300");
    let send = |name: &str| udp_send(&lab, name, "UDP-SENDTO:10.9.9.9:8080,sourceport=40002");
    let wait_for = |len: usize| wait_file(&out, len);
    let vb = ifindex(&lab, "b", "veth-b");
    let at_b = in_ns(&lab, "b", || PacketSocket::open(vb));
    let first = payload(&lab, "udp1", 40_000, 1);
    send("udp1");
    assert!(
        wait_for(first.len()) == first,
        "offloaded UDP did not arrive intact"
    );
    assert_eq!(off.usage(&udp).unwrap().unwrap().packets, 40);
    assert_eq!(
        sock.count(UDP, 40002),
        0,
        "offloaded datagrams reached the packet socket"
    );
    // a sends with TTL 64 and m is one hop (the socket may drop some when its buffer fills).
    let ttls = at_b.ttls(UDP, 40002);
    assert!(
        !ttls.is_empty() && ttls.iter().all(|&t| t == 63),
        "{ttls:?}"
    );
    // TTL 1 cannot be forwarded: it goes to userspace (here the kernel, which drops it).
    let ttl1 = "UDP-SENDTO:10.9.9.9:8080,sourceport=40002,ttl=1";
    lab.exec(
        "a",
        &["sh", "-c", &format!("echo ttl1 | socat -u - {ttl1}")],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sock.ttls(UDP, 40002), [1]);
    assert_eq!(off.usage(&udp).unwrap().unwrap().packets, 40);
    off.remove(&udp).unwrap();
    assert_eq!(off.usage(&udp).unwrap(), None);
    let second = payload(&lab, "udp2", 40_000, 2);
    send("udp2");
    let got = wait_for(first.len() + second.len());
    assert!(
        got[first.len()..] == second[..],
        "UDP after remove() did not arrive intact"
    );
    assert_eq!(
        sock.count(UDP, 40002),
        40,
        "after remove() the datagrams go to userspace"
    );

    let tcp = key(ma, a, public, TCP, (40001, 8080));
    assert!(off.usage(&tcp).unwrap().is_some());
    off.clear().unwrap();
    assert_eq!(off.usage(&tcp).unwrap(), None);
    in_ns(&lab, "m", || {
        (off.detach(ma).unwrap(), off.detach(mb).unwrap())
    });
    // Detaching twice, or from an interface gone with its namespace, is fine.
    in_ns(&lab, "m", || off.detach(ma).unwrap());
}

/// One iperf3 stream a -> b through m for `secs`: Gbit/s received.
fn iperf3(lab: &Lab, cport: u16, secs: u32) -> f64 {
    let (cport, secs) = (cport.to_string(), secs.to_string());
    let args = [
        "iperf3", "-J", "-c", "10.0.0.2", "--cport", &cport, "-t", &secs,
    ];
    let out = lab.exec("a", &args).unwrap();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 1e9
}

/// The measurement behind bench/RESULTS.md's flow offload rows: one iperf3 stream a -> b
/// through m, (i) bridged by a Linux bridge in m, (ii) redirected by the offload's entries
/// (filters attached only then), alternated, 5 rounds of 5 s, medians printed.
/// `cargo test -p sluice-tests --test offload_kernel -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, run by hand"]
fn bench_bridge_against_offload_one_iperf3_stream() {
    let Some(off) = offload() else { return };
    if !have("iperf3") {
        eprintln!("skipped: iperf3 is not installed");
        return;
    }
    let mut lab = Lab::new("ofx").unwrap();
    bridged(&mut lab);
    lab.spawn("b", &["iperf3", "-s"], "iperf3").unwrap();
    lab.wait_listen("b", 5201, Duration::from_secs(5)).unwrap();
    let (ma, mb) = (ifindex(&lab, "m", "m-a"), ifindex(&lab, "m", "m-b"));
    let (a, b): (IpAddr, IpAddr) = (
        Ipv4Addr::new(10, 0, 0, 1).into(),
        Ipv4Addr::new(10, 0, 0, 2).into(),
    );
    let (mut bridge, mut offloaded) = (Vec::new(), Vec::new());
    for round in 0..5u16 {
        bridge.push(iperf3(&lab, 41000 + round, 5));
        let cport = 42000 + round;
        in_ns(&lab, "m", || {
            (off.attach(ma).unwrap(), off.attach(mb).unwrap())
        });
        let there = key(ma, a, b, TCP, (cport, 5201));
        off.insert(&there, &forward(mb, MAC_A, MAC_B)).unwrap();
        off.insert(
            &key(mb, b, a, TCP, (5201, cport)),
            &forward(ma, MAC_B, MAC_A),
        )
        .unwrap();
        offloaded.push(iperf3(&lab, cport, 5));
        assert!(off.usage(&there).unwrap().unwrap().packets > 0);
        off.clear().unwrap();
        in_ns(&lab, "m", || {
            (off.detach(ma).unwrap(), off.detach(mb).unwrap())
        });
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("bridge Gbit/s: {bridge:.2?}");
    println!("offload Gbit/s: {offloaded:.2?}");
    println!(
        "medians: bridge {:.2}, offload {:.2}",
        median(&mut bridge),
        median(&mut offloaded)
    );
}

const VNI: u32 = 4097;
const VTEP_A: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const VTEP_B: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const MAC_UP_A: [u8; 6] = [2, 0, 0, 0, 2, 0xa];
const MAC_UP_B: [u8; 6] = [2, 0, 0, 0, 2, 0xb];

/// Two overlay hosts: endpoint a (10.20.0.2, MTU 1450) on host ha, endpoint b (10.20.0.3) on
/// hb, the hosts' uplinks up-a (192.168.77.1) and up-b (.2) joined by a veth. Each host bridges
/// its endpoint with a kernel vxlan device (VNI 4097) to the other: the slow path for what the
/// offload leaves alone (ARP, the handshake, FIN). Endpoints keep TSO on: super-frames.
fn overlay_hosts(lab: &mut Lab) {
    for ns in ["a", "ha", "hb", "b"] {
        lab.add_ns(ns).unwrap();
    }
    lab.veth(("a", "veth-a"), ("ha", "h-a")).unwrap();
    lab.veth(("b", "veth-b"), ("hb", "h-b")).unwrap();
    lab.veth(("ha", "up-a"), ("hb", "up-b")).unwrap();
    for (ns, dev, mac) in [
        ("a", "veth-a", MAC_A),
        ("ha", "h-a", MAC_MA),
        ("hb", "h-b", MAC_MB),
        ("b", "veth-b", MAC_B),
        ("ha", "up-a", MAC_UP_A),
        ("hb", "up-b", MAC_UP_B),
    ] {
        lab.mac(ns, dev, MacAddr(mac)).unwrap();
        lab.up(ns, dev).unwrap();
    }
    for (ns, dev) in [("a", "veth-a"), ("b", "veth-b")] {
        lab.mtu(ns, dev, 1450).unwrap();
    }
    lab.addr("a", "veth-a", "10.20.0.2/24").unwrap();
    lab.addr("b", "veth-b", "10.20.0.3/24").unwrap();
    let hosts = [
        ("ha", "h-a", "up-a", VTEP_A, VTEP_B),
        ("hb", "h-b", "up-b", VTEP_B, VTEP_A),
    ];
    for (ns, endpoint, up, local, remote) in hosts {
        lab.addr(ns, up, &format!("{local}/24")).unwrap();
        let vxlan = [
            "link", "add", "vx0", "type", "vxlan", "id", "4097", "dstport", "4789",
        ];
        let (local, remote) = (local.to_string(), remote.to_string());
        let tail = ["local", &local, "remote", &remote, "dev", up];
        lab.ip(ns, &[&vxlan[..], &tail[..]].concat()).unwrap();
        lab.ip(ns, &["link", "add", "br0", "type", "bridge"])
            .unwrap();
        for dev in [endpoint, "vx0"] {
            lab.mtu(ns, dev, 1450).unwrap();
            lab.ip(ns, &["link", "set", dev, "master", "br0"]).unwrap();
            lab.up(ns, dev).unwrap();
        }
        lab.up(ns, "br0").unwrap();
    }
}

/// b serves file `name` on TCP 5201 once; a fetches it from source port `sport`.
fn tcp_fetch(lab: &mut Lab, name: &str, sport: u16) -> Vec<u8> {
    let file = format!("FILE:{}", lab.dir().join(name).display());
    let server = lab
        .spawn(
            "b",
            &["socat", "-u", &file, "TCP-LISTEN:5201,reuseaddr"],
            name,
        )
        .unwrap();
    lab.wait_listen("b", 5201, Duration::from_secs(5)).unwrap();
    let out = lab.dir().join(format!("{name}.recv"));
    let connect = format!("TCP:10.20.0.3:5201,sourceport={sport},connect-timeout=3");
    let create = format!("CREATE:{}", out.display());
    lab.exec("a", &["timeout", "20", "socat", "-u", &connect, &create])
        .unwrap();
    lab.stop(server);
    std::fs::read(out).unwrap()
}

/// One host's entries for the flow a:`sport` <-> b:5201: its endpoint's frames wrapped to the
/// other VTEP, the other endpoint's unwrapped from its uplink.
struct HostEntries {
    encap: FlowKey,
    decap: DecapKey,
}

/// Installs `host`'s entries (`host` is "ha" or "hb") in `off`.
fn overlay_entries(lab: &Lab, off: &Offload, host: &str, sport: u16) -> HostEntries {
    let (a, b): (IpAddr, IpAddr) = (
        Ipv4Addr::new(10, 20, 0, 2).into(),
        Ipv4Addr::new(10, 20, 0, 3).into(),
    );
    let on_a = host == "ha";
    let (endpoint, up) = if on_a {
        ("h-a", "up-a")
    } else {
        ("h-b", "up-b")
    };
    let (endpoint, up) = (ifindex(lab, host, endpoint), ifindex(lab, host, up));
    let (local, remote, up_mac, peer_mac) = if on_a {
        (VTEP_A, VTEP_B, MAC_UP_A, MAC_UP_B)
    } else {
        (VTEP_B, VTEP_A, MAC_UP_B, MAC_UP_A)
    };
    let tunnel = Vxlan {
        local,
        remote,
        vni: VNI,
    };
    let (out, back) = ((sport, 5201), (5201, sport));
    let (encap, decap) = if on_a {
        (key(endpoint, a, b, TCP, out), key(up, b, a, TCP, back))
    } else {
        (key(endpoint, b, a, TCP, back), key(up, a, b, TCP, out))
    };
    let (mine, theirs) = if on_a { (MAC_A, MAC_B) } else { (MAC_B, MAC_A) };
    let wrap = EncapAction {
        egress_ifindex: up,
        eth_src: up_mac,
        eth_dst: peer_mac,
        tunnel,
        udp_sport: 50_000 + sport % 1000,
    };
    let unwrap = DecapAction {
        egress_ifindex: endpoint,
        eth_src: theirs,
        eth_dst: mine,
    };
    let decap = DecapKey {
        inner: decap,
        tunnel,
    };
    off.insert_encap(&encap, &wrap).unwrap();
    off.insert_decap(&decap, &unwrap).unwrap();
    in_ns(lab, host, || {
        (off.attach(endpoint).unwrap(), off.attach(up).unwrap())
    });
    HostEntries { encap, decap }
}

/// A's frames (bytes, packets) wrapped by `from`'s encap entry and unwrapped by `to`'s decap
/// entry carried most of `len` bytes as TCP super-frames (well under one frame per 1450 bytes).
fn assert_offloaded(what: &str, wrap: FlowUsage, unwrap: FlowUsage, len: usize) {
    for (side, u) in [("encap", wrap), ("decap", unwrap)] {
        assert!(u.bytes >= 9 * len as u64 / 10, "{what} {side}: {u:?}");
        assert!(u.packets * 1450 < u.bytes / 2, "{what} {side}: {u:?}");
    }
}

#[test]
fn overlay_flows_are_wrapped_and_unwrapped_inside_the_kernel_both_ways() {
    let Some(off_a) = offload() else { return };
    let off_b = Offload::new(64).unwrap();
    let mut lab = Lab::new("ofx").unwrap();
    overlay_hosts(&mut lab);
    lab.wait_ping("a", Ipv4Addr::new(10, 20, 0, 3), Duration::from_secs(5))
        .unwrap();
    let ha = overlay_entries(&lab, &off_a, "ha", 40100);
    let hb = overlay_entries(&lab, &off_b, "hb", 40100);
    let len = 8 << 20;
    let data = payload(&lab, "vx-ab", len, 7);
    let got = tcp_transfer(&mut lab, "vx-ab", ("10.20.0.3:5201", 40100), 5201, false);
    assert!(got == data, "a to b: {} bytes of {len}", got.len());
    let (wrap, unwrap) = (off_a.usage(&ha.encap), off_b.decap_usage(&hb.decap));
    assert_offloaded(
        "a to b",
        wrap.unwrap().unwrap(),
        unwrap.unwrap().unwrap(),
        len,
    );

    let ha = overlay_entries(&lab, &off_a, "ha", 40101);
    let hb = overlay_entries(&lab, &off_b, "hb", 40101);
    let data = payload(&lab, "vx-ba", len, 9);
    let got = tcp_fetch(&mut lab, "vx-ba", 40101);
    assert!(got == data, "b to a: {} bytes of {len}", got.len());
    let (wrap, unwrap) = (off_b.usage(&hb.encap), off_a.decap_usage(&ha.decap));
    assert_offloaded(
        "b to a",
        wrap.unwrap().unwrap(),
        unwrap.unwrap().unwrap(),
        len,
    );
}
