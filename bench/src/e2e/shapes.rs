//! The topologies of the peers that do not fill docker's switch namespace, ported from the
//! peers baseline script: slirp4netns and pasta connect one namespace (`a`) to its host, and
//! Open vSwitch's userspace datapath bridges two endpoints.
//!
//! The "host" of slirp4netns and pasta is a namespace the lab creates (`host`): the tool runs
//! there, its servers listen on that namespace's loopback and the namespace's traffic reaches
//! them through the tool's gateway address. Nothing touches the root namespace; the lab removes
//! the namespaces and stops the tools (and OVS's daemons) when it drops.

use std::net::Ipv4Addr;
use std::thread::sleep;
use std::time::{Duration, Instant};

use sluice_lab::lab::{DockerLikeSpec, Lab, SW};

/// The namespace that plays the host of slirp4netns and pasta.
pub const HOST: &str = "host";
/// The namespace slirp4netns or pasta serves.
pub const NS: &str = "a";
/// The tap device the tool creates inside [`NS`].
pub const TAP_IF: &str = "tap0";
/// The gateway address inside [`NS`]: both tools map it to the host's loopback.
pub const HOST_GW: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The namespace's address (slirp4netns's default, given to pasta explicitly).
const NS_ADDR: &str = "10.0.2.100";
/// MTU of the tap device (as in the baseline script: the tools' largest).
const TAP_MTU: &str = "65520";
/// Name of the OVS bridge inside `sw`.
pub const OVS_BRIDGE: &str = "br0";

/// `/run/netns/NAME` of a lab namespace, which both tools take as the namespace to serve.
fn netns_path(lab: &Lab, short: &str) -> Result<String, String> {
    Ok(format!(
        "/run/netns/{}",
        lab.ns_name(short).map_err(|e| e.to_string())?
    ))
}

/// The slirp4netns command line: configures the tap with 10.0.2.100/24 and a default route
/// through 10.0.2.2 (which it maps to the host's loopback).
pub fn slirp4netns_args(netns: &str) -> Vec<String> {
    [
        "slirp4netns",
        "--configure",
        &format!("--mtu={TAP_MTU}"),
        "--netns-type=path",
        netns,
        TAP_IF,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The pasta command line (as root this build needs `--runas 0:0`); no port is forwarded
/// (`none`: some `-U` specs crash this build), traffic to the gateway goes to the host's
/// loopback.
pub fn pasta_args(netns: &str) -> Vec<String> {
    let gw = HOST_GW.to_string();
    [
        "pasta",
        "--config-net",
        "--netns",
        netns,
        "--runas",
        "0:0",
        "-4",
        "-I",
        TAP_IF,
        "-a",
        NS_ADDR,
        "-n",
        "24",
        "-g",
        &gw,
        "-m",
        TAP_MTU,
        "-t",
        "none",
        "-u",
        "none",
        "-T",
        "none",
        "-U",
        "none",
        "-f",
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn log_tail(lab: &Lab, log: &str) -> String {
    let text = std::fs::read_to_string(lab.log_path(log)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// Waits until the tool has given the tap device an IPv4 address; fails early when the tool
/// exits.
fn wait_tap(lab: &mut Lab, pid: u32, log: &str) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if !lab.alive(pid) {
            return Err(format!("{log} exited: {}", log_tail(lab, log)));
        }
        let out = lab
            .ip(NS, &["-4", "-o", "addr", "show", "dev", TAP_IF])
            .unwrap_or_default();
        if out.contains(" inet ") {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!("{log}: no address on {TAP_IF} after 10 s"));
        }
        sleep(Duration::from_millis(100));
    }
}

fn ns_host_namespaces(lab: &mut Lab) -> Result<(), String> {
    lab.add_ns(HOST).map_err(|e| e.to_string())?;
    lab.add_ns(NS).map_err(|e| e.to_string())
}

/// slirp4netns serving [`NS`] from [`HOST`]; returns its pid.
pub fn slirp4netns(lab: &mut Lab) -> Result<u32, String> {
    ns_host_namespaces(lab)?;
    let args = slirp4netns_args(&netns_path(lab, NS)?);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pid = lab
        .spawn(HOST, &args, "slirp4netns")
        .map_err(|e| e.to_string())?;
    wait_tap(lab, pid, "slirp4netns")?;
    Ok(pid)
}

/// pasta serving [`NS`] from [`HOST`]; returns its pid. pasta refuses to start without a
/// routable interface on the host side, so [`HOST`] gets a veth pair of its own (both ends
/// inside it) holding an address and the default route; this build also crashes at start-up
/// now and then, hence up to three attempts.
pub fn pasta(lab: &mut Lab) -> Result<u32, String> {
    ns_host_namespaces(lab)?;
    let e = |r: sluice_lab::lab::Result<()>| r.map_err(|e| e.to_string());
    e(lab.veth((HOST, "ext0"), (HOST, "ext1")))?;
    e(lab.addr(HOST, "ext0", "10.99.0.1/24"))?;
    e(lab.up(HOST, "ext0"))?;
    e(lab.up(HOST, "ext1"))?;
    e(lab.route(HOST, "default", Ipv4Addr::new(10, 99, 0, 254)))?;
    let args = pasta_args(&netns_path(lab, NS)?);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut last = String::new();
    for attempt in 1..=3 {
        let log = format!("pasta{attempt}");
        let pid = lab.spawn(HOST, &args, &log).map_err(|e| e.to_string())?;
        match wait_tap(lab, pid, &log) {
            Ok(()) => return Ok(pid),
            Err(e) => {
                lab.stop(pid);
                last = e;
            }
        }
    }
    Err(format!("pasta did not start in 3 attempts: {last}"))
}

/// The `env` prefix that keeps every OVS file (database, sockets, logs) in `dir`.
pub fn ovs_env(dir: &str) -> Vec<String> {
    let mut v = vec!["env".to_string()];
    for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
        v.push(format!("{var}={dir}"));
    }
    v
}

/// Open vSwitch with the userspace (netdev) datapath in `sw`, bridging the endpoints of
/// `spec` (same addresses as the docker-like topology, no gateway): a private ovsdb-server
/// and ovs-vswitchd run in the foreground as lab processes, their files in the lab's
/// directory. Userspace TSO is on: with the veths' stock offloads and without it, TCP stalls.
/// Returns ovs-vswitchd's pid.
pub fn ovs_bridge(lab: &mut Lab, spec: &DockerLikeSpec) -> Result<u32, String> {
    let e = |r: sluice_lab::lab::Result<()>| r.map_err(|e| e.to_string());
    e(lab.add_ns(SW))?;
    for (i, name) in spec.endpoints.iter().enumerate() {
        let port = DockerLikeSpec::sw_port(name);
        e(lab.add_ns(name))?;
        e(lab.veth((SW, &port), (name, "eth0")))?;
        e(lab.mac(name, "eth0", spec.endpoint_mac(i)))?;
        e(lab.addr(
            name,
            "eth0",
            &format!("{}/{}", spec.endpoint_ip(i), spec.subnet().prefix),
        ))?;
        e(lab.up(name, "eth0"))?;
        e(lab.up(SW, &port))?;
    }
    let dir = lab.dir().join("ovs");
    std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let d = dir.to_string_lossy().into_owned();
    let env = ovs_env(&d);
    let db = format!("{d}/conf.db");
    let sock = format!("{d}/db.sock");
    let with_env = |args: &[&str]| -> Vec<String> {
        env.iter()
            .cloned()
            .chain(args.iter().map(|s| s.to_string()))
            .collect()
    };
    let run = |lab: &Lab, args: &[&str]| -> Result<(), String> {
        let full = with_env(args);
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        lab.exec(SW, &full).map(drop).map_err(|e| e.to_string())
    };
    let db_remote = format!("unix:{sock}");
    let vsctl = |lab: &Lab, args: &[&str]| -> Result<(), String> {
        let mut full = vec!["ovs-vsctl", "--db", &db_remote];
        full.extend_from_slice(args);
        run(lab, &full)
    };
    run(lab, &["ovsdb-tool", "create", &db])?;
    let spawn = |lab: &mut Lab, args: &[&str], log: &str| -> Result<u32, String> {
        let full = with_env(args);
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        lab.spawn(SW, &full, log).map_err(|e| e.to_string())
    };
    let remote = format!("--remote=punix:{sock}");
    let db_ctl = format!("--unixctl={d}/ovsdb-server.ctl");
    let db_log = format!("--log-file={d}/ovsdb-server.log");
    spawn(
        lab,
        &[
            "ovsdb-server",
            &db,
            &remote,
            &db_ctl,
            &db_log,
            "-vconsole:off",
        ],
        "ovsdb-server",
    )?;
    let start = Instant::now();
    while !dir.join("db.sock").exists() {
        if start.elapsed() > Duration::from_secs(10) {
            return Err("ovsdb-server: no socket after 10 s".into());
        }
        sleep(Duration::from_millis(50));
    }
    vsctl(lab, &["--no-wait", "init"])?;
    vsctl(
        lab,
        &[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:userspace-tso-enable=true",
        ],
    )?;
    let vs_ctl = format!("--unixctl={d}/ovs-vswitchd.ctl");
    let vs_log = format!("--log-file={d}/ovs-vswitchd.log");
    let pid = spawn(
        lab,
        &[
            "ovs-vswitchd",
            &db_remote,
            &vs_ctl,
            &vs_log,
            "-vconsole:off",
        ],
        "ovs-vswitchd",
    )?;
    let mut add = vec![
        "--timeout=30",
        "add-br",
        OVS_BRIDGE,
        "--",
        "set",
        "bridge",
        OVS_BRIDGE,
        "datapath_type=netdev",
    ];
    let ports: Vec<String> = spec
        .endpoints
        .iter()
        .map(|n| DockerLikeSpec::sw_port(n))
        .collect();
    for p in &ports {
        add.extend_from_slice(&["--", "add-port", OVS_BRIDGE, p]);
    }
    vsctl(lab, &add)?;
    if let (Some(a), Some(b)) = (spec.endpoints.first(), spec.endpoints.get(1)) {
        lab.wait_ping(a, spec.endpoint_ip(1), Duration::from_secs(10))
            .map_err(|err| format!("{err} (ping {a} -> {b} through OVS)"))?;
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_command_lines() {
        let s = slirp4netns_args("/run/netns/x-a");
        assert_eq!(s[0], "slirp4netns");
        assert_eq!(&s[s.len() - 2..], ["/run/netns/x-a", TAP_IF]);
        let p = pasta_args("/run/netns/x-a");
        let pos = |flag: &str| p.iter().position(|a| a == flag).unwrap();
        assert_eq!(p[pos("--netns") + 1], "/run/netns/x-a");
        assert_eq!(p[pos("--runas") + 1], "0:0");
        assert_eq!(p[pos("-g") + 1], HOST_GW.to_string());
        assert_eq!(p[pos("-U") + 1], "none");
        assert!(p.contains(&"-f".to_string()), "stays in the foreground");
        let e = ovs_env("ovs-dir");
        assert_eq!(e[0], "env");
        assert!(e[1..].iter().all(|v| v.ends_with("=ovs-dir")));
        assert_eq!(e.len(), 5);
    }
}
