//! The peers a benchmark measures: `--peers` names resolved into forwarders and the test
//! groups each runs, whether their tools are installed, and the flags sluice runs with.

use std::path::Path;

use sluice_lab::lab::{Forwarder, SluiceLaunch};

use super::{Shape, TestKind};

/// The `sluice dataplane` flags that give it sluiced's defaults (control/src/bin/sluiced.rs:
/// 512 RX slots of 2 KiB and 15 long-frame buffers, `--tx-blocks 2` of 2 KiB slots,
/// `--busy-poll-us 50`, one worker per CPU), so that the benchmark measures sluice as a user
/// runs it.
pub const SLUICED_DEFAULTS: [&str; 6] = [
    "--rx-slot-size=2048",
    "--rx-slots=512",
    "--rx-long-buffers=15",
    "--tx-slot-size=2048",
    "--tx-blocks=2",
    "--busy-poll-us=50",
];

/// The arguments the harness gives `sluice dataplane`: `--workers` when asked for (else one
/// per CPU, as sluiced), sluiced's defaults for the flags `extra` (space-separated) does not
/// set, then `extra`.
pub fn launch_args(workers: Option<usize>, extra: &str) -> Vec<String> {
    let extra: Vec<String> = extra.split_whitespace().map(String::from).collect();
    let flag = |a: &str| a.split('=').next().unwrap_or(a).to_string();
    let given: Vec<String> = extra.iter().map(|a| flag(a)).collect();
    workers
        .map(|w| format!("--workers={w}"))
        .into_iter()
        .chain(
            SLUICED_DEFAULTS
                .iter()
                .filter(|d| !given.contains(&flag(d)))
                .map(|d| d.to_string()),
        )
        .chain(extra)
        .collect()
}

/// What a peer is and which topology it gets.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerKind {
    /// A forwarder of the docker-like topology (kernel bridge + iptables, or sluice).
    Docker(Forwarder),
    /// slirp4netns between a namespace and its host.
    Slirp4netns,
    /// pasta between a namespace and its host.
    Pasta,
    /// Open vSwitch's userspace datapath bridging two endpoints.
    Ovs,
}

impl PeerKind {
    /// The topology the peer is measured on.
    pub fn shape(&self) -> Shape {
        match self {
            PeerKind::Slirp4netns | PeerKind::Pasta => Shape::NsHost,
            PeerKind::Docker(_) | PeerKind::Ovs => Shape::Bridge,
        }
    }
}

/// One column of the report: a peer and the test groups it is measured on.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    /// Column name ("kernel", "sluice", "sluice-userspace", "iptables-nat", "slirp4netns",
    /// "pasta", "ovs").
    pub name: String,
    /// What forwards, on which topology.
    pub kind: PeerKind,
    /// The test groups this peer runs (a subset of the plan's).
    pub tests: Vec<TestKind>,
}

/// The flag that keeps every frame in userspace (`sluice dataplane --offload=off`, as
/// `sluiced --offload off`); without it the flow offload is on, their default.
pub const USERSPACE_FLAG: &str = "--offload=off";

/// The `sluice` peer: sluice exactly as `launch` runs it but without any `--offload` flag, so
/// it follows `sluice dataplane`'s default (the flow offload on, as sluiced): the figure users get.
pub fn as_users_run_it(launch: &SluiceLaunch) -> SluiceLaunch {
    let mut l = launch.clone();
    let mut args = launch.args.iter();
    l.args.clear();
    while let Some(a) = args.next() {
        if a == "--offload" {
            args.next();
        } else if !a.starts_with("--offload=") {
            l.args.push(a.clone());
        }
    }
    l
}

/// The `sluice-userspace` peer: sluice as `launch` runs it with every frame through its
/// userspace workers (`--offload=off`), the path the offload leaves small and new flows on.
pub fn userspace(launch: &SluiceLaunch) -> SluiceLaunch {
    let mut l = as_users_run_it(launch);
    l.args.push(USERSPACE_FLAG.into());
    l
}

/// True when `sluice dataplane` started with `args` hands established flows to the kernel:
/// unless its last `--offload` says `off` (the offload is its default), so the cost of such a
/// peer counts the softirq time the kernel forwards its flows in.
pub fn offloads(args: &[String]) -> bool {
    let mode = args.iter().enumerate().rev().find_map(|(i, a)| {
        if a == "--offload" {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix("--offload=")
        }
    });
    mode != Some("off")
}

/// The old name of the `sluice` peer with the offload on (before the offload became the
/// default): refused with a line naming today's peers, so no run measures something else than
/// its command says.
const RENAMED_OFFLOAD_PEER: &str = "sluice-offload";

/// Every peer name `--peers` accepts, in the default order.
pub const PEER_NAMES: [&str; 7] = [
    "kernel",
    "sluice",
    "sluice-userspace",
    "iptables-nat",
    "slirp4netns",
    "pasta",
    "ovs",
];

/// The optional peers outside the docker-like topology: name, kind, the tools they need and
/// the Debian package that has them.
const TOOL_PEERS: [(&str, PeerKind, &[&str], &str); 3] = [
    (
        "slirp4netns",
        PeerKind::Slirp4netns,
        &["slirp4netns"],
        "slirp4netns",
    ),
    ("pasta", PeerKind::Pasta, &["pasta"], "passt"),
    (
        "ovs",
        PeerKind::Ovs,
        &["ovs-vswitchd", "ovsdb-server", "ovsdb-tool", "ovs-vsctl"],
        "openvswitch-switch",
    ),
];

/// The test groups of the peers that have no NAT path of their own: OVS only bridges here,
/// slirp4netns and pasta have no second endpoint and no uplink.
const NO_NAT_TESTS: [TestKind; 4] = [TestKind::Tcp, TestKind::Tcp4, TestKind::Udp64, TestKind::Rr];

/// Resolves `--peers` names into peers, with one line per skipped peer or test. `kernel` and
/// `iptables-nat` are the same kernel topology: when both are asked for, the NAT rows (nat,
/// flows) go to `iptables-nat` (the kernel's NAT path) and `kernel` keeps the bridge rows. slirp4netns,
/// pasta and ovs run the tests that make sense on their shape; the others are listed as
/// "n/a for this peer's shape".
pub fn resolve_peers(
    names: &[String],
    tests: &[TestKind],
    sluice: &SluiceLaunch,
    has: impl Fn(&str) -> bool,
) -> Result<(Vec<Peer>, Vec<String>), String> {
    let mut peers = Vec::new();
    let mut skipped = Vec::new();
    let with_nat_peer = names.iter().any(|n| n == "iptables-nat");
    for name in names {
        let (kind, peer_tests): (PeerKind, Vec<TestKind>) = match name.as_str() {
            "kernel" => (
                PeerKind::Docker(Forwarder::Kernel),
                tests
                    .iter()
                    .copied()
                    .filter(|t| !(with_nat_peer && t.through_nat()))
                    .collect(),
            ),
            "iptables-nat" => (
                PeerKind::Docker(Forwarder::Kernel),
                tests.iter().copied().filter(|t| t.through_nat()).collect(),
            ),
            "sluice" => (
                PeerKind::Docker(Forwarder::Sluice(as_users_run_it(sluice))),
                tests.to_vec(),
            ),
            "sluice-userspace" => (
                PeerKind::Docker(Forwarder::Sluice(userspace(sluice))),
                tests.to_vec(),
            ),
            RENAMED_OFFLOAD_PEER => return Err(renamed_offload_peer()),
            other => match TOOL_PEERS.iter().find(|(n, ..)| *n == other) {
                Some((n, kind, tools, pkg)) => {
                    if let Some(tool) = tools.iter().find(|t| !has(t)) {
                        skipped.push(format!(
                            "{n}: skipped, {tool} is not installed (apt-get install {pkg})"
                        ));
                        continue;
                    }
                    let na: Vec<&str> = tests
                        .iter()
                        .filter(|t| !NO_NAT_TESTS.contains(t))
                        .map(|t| t.name())
                        .collect();
                    let own: Vec<TestKind> = tests
                        .iter()
                        .copied()
                        .filter(|t| NO_NAT_TESTS.contains(t))
                        .collect();
                    if !na.is_empty() && !own.is_empty() {
                        skipped.push(format!(
                            "{n}: {} n/a for this peer's shape ({})",
                            na.join(", "),
                            kind.shape().text()
                        ));
                    }
                    (kind.clone(), own)
                }
                None => {
                    return Err(format!(
                        "unknown peer {other:?} (expected {})",
                        PEER_NAMES.join(", ")
                    ))
                }
            },
        };
        if peer_tests.is_empty() {
            skipped.push(format!(
                "{name}: skipped, none of the selected tests applies ({name} measures {})",
                match name.as_str() {
                    "iptables-nat" => "nat, flows",
                    "kernel" => "the bridge tests",
                    _ => "tcp, tcp4, udp64, rr",
                }
            ));
            continue;
        }
        if peers.iter().any(|p: &Peer| &p.name == name) {
            return Err(format!("peer {name:?} is listed twice"));
        }
        peers.push(Peer {
            name: name.clone(),
            kind,
            tests: peer_tests,
        });
    }
    Ok((peers, skipped))
}

/// Why `sluice-offload` is no longer a peer, and what to ask for instead.
fn renamed_offload_peer() -> String {
    format!(
        "peer {RENAMED_OFFLOAD_PEER:?} is now called \"sluice\" (sluice as users run it: the flow \
         offload on, its default); \"sluice-userspace\" is the userspace path ({USERSPACE_FLAG})"
    )
}

/// True when `tool` is an executable file in `PATH` (or a path to one).
pub fn have_tool(tool: &str) -> bool {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if tool.contains('/') {
        return is_exec(Path::new(tool));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| is_exec(&d.join(tool))))
}

/// Why the peer `name` of `kind` cannot be measured here, if it cannot (the tools of
/// slirp4netns, pasta and ovs are checked when the peers are resolved).
pub fn peer_unavailable(name: &str, kind: &PeerKind) -> Option<String> {
    match kind {
        PeerKind::Docker(Forwarder::Kernel) => {
            (!have_tool("iptables")).then(|| format!("{name}: skipped, iptables is not installed"))
        }
        PeerKind::Docker(Forwarder::Sluice(l)) => {
            (!have_tool(&l.bin.to_string_lossy())).then(|| {
                format!(
                    "{name}: skipped, {} is not an executable (build it or pass --sluice-bin)",
                    l.bin.display()
                )
            })
        }
        PeerKind::Slirp4netns | PeerKind::Pasta | PeerKind::Ovs => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<String> {
        s.split(',').map(String::from).collect()
    }

    #[test]
    fn sluice_is_the_default_and_sluice_userspace_turns_the_offload_off() {
        let mut sl = SluiceLaunch::new("sluice");
        sl.args = vec![
            "--workers=1".into(),
            "--offload".into(),
            "tc".into(),
            "--offload=off".into(),
            "--rx-ring=v3".into(),
        ];
        let (p, _) = resolve_peers(
            &names("sluice,sluice-userspace"),
            &TestKind::ALL,
            &sl,
            |_| true,
        )
        .unwrap();
        let launch = |p: &Peer| match &p.kind {
            PeerKind::Docker(Forwarder::Sluice(l)) => l.args.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(launch(&p[0]), ["--workers=1", "--rx-ring=v3"]);
        assert_eq!(
            launch(&p[1]),
            ["--workers=1", "--rx-ring=v3", USERSPACE_FLAG]
        );
        assert!(offloads(&launch(&p[0])));
        assert!(!offloads(&launch(&p[1])));
        assert_eq!(p[0].tests, TestKind::ALL.to_vec());
        assert_eq!(p[1].tests, TestKind::ALL.to_vec());
    }

    #[test]
    fn the_offload_follows_the_last_flag() {
        let args = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
        assert!(offloads(&args("")));
        assert!(offloads(&args("--workers=1 --offload=tc")));
        assert!(!offloads(&args("--offload off")));
        assert!(!offloads(&args("--offload=tc --offload=off")));
        assert!(offloads(&args("--offload=off --offload tc")));
    }

    #[test]
    fn the_old_offload_peer_name_says_what_it_became() {
        let sl = SluiceLaunch::new("sluice");
        let e = resolve_peers(
            &names("kernel,sluice-offload"),
            &[TestKind::Tcp],
            &sl,
            |_| true,
        )
        .unwrap_err();
        assert!(
            e.contains("\"sluice\"") && e.contains("\"sluice-userspace\""),
            "{e}"
        );
        assert!(!PEER_NAMES.contains(&RENAMED_OFFLOAD_PEER));
    }

    #[test]
    fn peers_map_onto_forwarders_and_tests() {
        let sl = SluiceLaunch::new("sluice");
        let (p, skipped) =
            resolve_peers(&names("kernel,sluice"), &TestKind::ALL, &sl, |_| true).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].tests, TestKind::ALL.to_vec());
        assert!(skipped.is_empty());

        let all = names("kernel,sluice,iptables-nat,slirp4netns,pasta,ovs");
        let (p, skipped) =
            resolve_peers(&all, &[TestKind::Tcp, TestKind::Nat], &sl, |t| t == "pasta").unwrap();
        let got: Vec<(&str, &[TestKind])> = p
            .iter()
            .map(|p| (p.name.as_str(), p.tests.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("kernel", &[TestKind::Tcp][..]),
                ("sluice", &[TestKind::Tcp, TestKind::Nat][..]),
                ("iptables-nat", &[TestKind::Nat][..]),
                ("pasta", &[TestKind::Tcp][..]),
            ]
        );
        assert_eq!(p[2].kind, PeerKind::Docker(Forwarder::Kernel));
        assert_eq!(p[3].kind, PeerKind::Pasta);
        assert_eq!(
            skipped,
            vec![
                "slirp4netns: skipped, slirp4netns is not installed (apt-get install slirp4netns)",
                "pasta: nat n/a for this peer's shape (namespace <-> host)",
                "ovs: skipped, ovs-vswitchd is not installed (apt-get install openvswitch-switch)",
            ]
        );

        // Every tool present: the three peers run their shape's tests, NAT is n/a for them.
        let (p, skipped) = resolve_peers(&all, &TestKind::ALL, &sl, |_| true).unwrap();
        let shaped: Vec<(&str, Shape, &[TestKind])> = p[3..]
            .iter()
            .map(|p| (p.name.as_str(), p.kind.shape(), p.tests.as_slice()))
            .collect();
        assert_eq!(
            shaped,
            vec![
                ("slirp4netns", Shape::NsHost, &NO_NAT_TESTS[..]),
                ("pasta", Shape::NsHost, &NO_NAT_TESTS[..]),
                ("ovs", Shape::Bridge, &NO_NAT_TESTS[..]),
            ]
        );
        assert_eq!(skipped.len(), 3);
        assert_eq!(
            skipped[2],
            "ovs: nat, flows, endpoints, tcp6, tcp4x6, udp6, rr6, nat6 n/a for this peer's shape \
             (bridge)"
        );
        // The flows rows go through the kernel's NAT path, the endpoints rows across its bridge.
        let (k, _) = resolve_peers(
            &names("kernel,iptables-nat"),
            &[TestKind::Flows, TestKind::Endpoints],
            &sl,
            |_| true,
        )
        .unwrap();
        assert_eq!(k[0].tests, [TestKind::Endpoints]);
        assert_eq!(k[1].tests, [TestKind::Flows]);
        // The report finds the shape from the name alone: both must agree.
        assert!(p.iter().all(|p| p.kind.shape() == Shape::of_peer(&p.name)));
        // ovs needs all of its tools.
        let (_, skipped) =
            resolve_peers(&names("ovs"), &[TestKind::Tcp], &sl, |t| t != "ovsdb-tool").unwrap();
        assert_eq!(
            skipped,
            vec!["ovs: skipped, ovsdb-tool is not installed (apt-get install openvswitch-switch)"]
        );
        // Only NAT asked: nothing left for a peer without a NAT path.
        let (p, skipped) =
            resolve_peers(&names("slirp4netns"), &[TestKind::Nat], &sl, |_| true).unwrap();
        assert!(p.is_empty());
        assert_eq!(
            skipped,
            vec![
                "slirp4netns: skipped, none of the selected tests applies (slirp4netns measures \
                 tcp, tcp4, udp64, rr)"
            ]
        );

        let (p, skipped) =
            resolve_peers(&names("iptables-nat"), &[TestKind::Tcp], &sl, |_| true).unwrap();
        assert!(p.is_empty());
        assert!(skipped[0].starts_with("iptables-nat: skipped, none of the selected tests"));
        assert!(resolve_peers(&names("docker"), &[TestKind::Tcp], &sl, |_| true).is_err());
        assert!(resolve_peers(&names("kernel,kernel"), &[TestKind::Tcp], &sl, |_| true).is_err());
    }

    #[test]
    fn sluice_runs_with_sluiceds_defaults() {
        assert_eq!(launch_args(None, ""), SLUICED_DEFAULTS);
        assert_eq!(
            launch_args(Some(1), "--busy-poll-us 0 --rx-ring=v3 --rx-slots=30"),
            [
                "--workers=1",
                "--rx-slot-size=2048",
                "--rx-long-buffers=15",
                "--tx-slot-size=2048",
                "--tx-blocks=2",
                "--busy-poll-us",
                "0",
                "--rx-ring=v3",
                "--rx-slots=30"
            ]
        );
    }

    #[test]
    fn missing_sluice_binary_is_a_reason_not_a_panic() {
        let f = PeerKind::Docker(Forwarder::Sluice(SluiceLaunch::new(
            "does-not-exist/sluice",
        )));
        assert!(peer_unavailable("sluice", &f)
            .unwrap()
            .starts_with("sluice: skipped"));
        assert_eq!(peer_unavailable("ovs", &PeerKind::Ovs), None);
        assert!(have_tool("sh"));
        assert!(!have_tool("no-such-tool-here"));
    }
}
