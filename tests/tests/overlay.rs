//! Overlay networks over real interfaces: two hosts (namespaces `ha` and `hb`, their uplinks
//! the two ends of one veth pair, the underlay), each running the standalone dataplane
//! (`sluice dataplane`) with one endpoint of network `ov` (VNI 4096) and the other host's
//! endpoint in its remote table, as the cluster store will keep it (static here). Endpoints
//! reach each other through VXLAN: ARP answered locally, the underlay next hop resolved by ARP,
//! full-size frames of the 1450-byte overlay MTU. Needs root and the release binaries (see
//! tests/tests/daemon.rs).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_dataplane::config::{
    Config, Ipv4Cidr, NetworkConfig, PortConfig, PortRole, UplinkConfig,
};
use sluice_dataplane::frame::{NetworkId, PortId};
use sluice_dataplane::overlay::{OverlayConfig, RemoteEndpoint};
use sluice_dataplane::wire::MacAddr;
use sluice_lab::lab::{Lab, SluiceLaunch};

const EP_A: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 2);
const EP_B: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 3);
const VTEP_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const VTEP_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// One host's dataplane: uplink `up0` at `vtep`, endpoint `ep0` with address `ep`, and
/// `peer` (endpoint address, VTEP) in the remote table.
fn config(vtep: Ipv4Addr, ep: Ipv4Addr, peer: (Ipv4Addr, Ipv4Addr)) -> Config {
    let net = NetworkConfig {
        mtu: 1450,
        ..NetworkConfig::new(
            NetworkId(0),
            "ov",
            "10.20.0.0/24".parse().unwrap(),
            Ipv4Addr::new(10, 20, 0, 1),
        )
    };
    Config {
        networks: vec![net],
        ports: vec![
            PortConfig {
                id: PortId(0),
                name: "up0".into(),
                io: Default::default(),
                role: PortRole::Uplink,
            },
            PortConfig {
                id: PortId(1),
                name: "ep0".into(),
                io: Default::default(),
                role: PortRole::Endpoint {
                    network: NetworkId(0),
                    vlan: 0,
                    mac: MacAddr::from_ipv4(ep),
                    ipv4: Some(ep),
                    ipv6: None,
                },
            },
        ],
        uplink: Some(UplinkConfig {
            port: PortId(0),
            ip: Ipv4Cidr::new(vtep, 24).unwrap(),
            mac: MacAddr::from_ipv4(vtep),
            next_hop: None,
            mtu: 1500,
        }),
        overlays: vec![OverlayConfig {
            network: NetworkId(0),
            vni: 4096,
            remotes: vec![RemoteEndpoint {
                mac: MacAddr::from_ipv4(peer.0),
                ipv4: peer.0,
                vtep: peer.1,
            }],
        }],
        ..Config::default()
    }
}

/// Writes `cfg` to `DIR/HOST/config.json` and starts the dataplane on it inside `host`.
fn start_host(lab: &mut Lab, bin: &Path, host: &str, cfg: &Config) -> PathBuf {
    let dir = lab.dir().join(host);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec(cfg).unwrap()).unwrap();
    let launch = SluiceLaunch {
        bin: bin.join("sluice"),
        args: vec!["--workers".into(), "1".into()],
    };
    lab.spawn_os(host, &launch.command(&path), host).unwrap();
    SluiceLaunch::stats_path(&path)
}

/// The host with endpoint namespace `ep_ns` behind its port `ep0`.
fn wire_host(lab: &mut Lab, host: &str, ep_ns: &str, ep: Ipv4Addr) {
    lab.add_ns(host).unwrap();
    lab.add_ns(ep_ns).unwrap();
    lab.veth((host, "ep0"), (ep_ns, "eth0")).unwrap();
    lab.up(host, "ep0").unwrap();
    lab.mac(ep_ns, "eth0", MacAddr::from_ipv4(ep)).unwrap();
    lab.mtu(ep_ns, "eth0", 1450).unwrap();
    lab.addr(ep_ns, "eth0", &format!("{ep}/24")).unwrap();
    lab.up(ep_ns, "eth0").unwrap();
}

/// A drop counter of the stats file at `path`, once the file is there.
fn drops(path: &Path, reason: &str) -> u64 {
    let start = Instant::now();
    loop {
        if let Some(v) = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            // Reasons without drops are left out.
            assert!(v["drops"].is_object(), "no drops in {v}");
            return v["drops"][reason].as_u64().unwrap_or(0);
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no stats in {path:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn endpoints_on_two_hosts_reach_each_other_over_vxlan() {
    let Some(bin) = sluice_tests::bins::release_bin_dir(&["sluice"]) else {
        return;
    };
    let mut lab = Lab::new("ovl").unwrap();
    wire_host(&mut lab, "ha", "ea", EP_A);
    wire_host(&mut lab, "hb", "eb", EP_B);
    lab.veth(("ha", "up0"), ("hb", "up0")).unwrap();
    lab.up("ha", "up0").unwrap();
    lab.up("hb", "up0").unwrap();
    let stats_a = start_host(&mut lab, &bin, "ha", &config(VTEP_A, EP_A, (EP_B, VTEP_B)));
    let stats_b = start_host(&mut lab, &bin, "hb", &config(VTEP_B, EP_B, (EP_A, VTEP_A)));

    let wait = Duration::from_secs(10);
    lab.wait_ping("ea", EP_B, wait)
        .unwrap_or_else(|e| panic!("{e}; a: {}", lab.log_path("ha").display()));
    lab.wait_ping("eb", EP_A, wait).unwrap();
    // A full overlay MTU (1422 + 28 = 1450 bytes) crosses without fragmenting.
    let big = lab
        .exec_output(
            "ea",
            &[
                "ping",
                "-c",
                "2",
                "-W",
                "2",
                "-M",
                "do",
                "-s",
                "1422",
                "-q",
                &EP_B.to_string(),
            ],
        )
        .unwrap();
    assert!(
        big.status.success(),
        "{}",
        String::from_utf8_lossy(&big.stdout)
    );
    // The neighbour entry came from the local ARP answer for the remote endpoint.
    let neigh = lab.ip("ea", &["neigh", "show", &EP_B.to_string()]).unwrap();
    assert!(
        neigh.contains(&MacAddr::from_ipv4(EP_B).to_string()),
        "{neigh}"
    );
    for stats in [&stats_a, &stats_b] {
        for reason in [
            "vxlan_malformed",
            "vxlan_unknown_vni",
            "vxlan_spoofed",
            "vxlan_unknown_dst",
        ] {
            assert_eq!(drops(stats, reason), 0, "{reason} in {stats:?}");
        }
    }
}
