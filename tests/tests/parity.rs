//! docker parity of `sluiced` and the `sluice` CLI, end to end in namespaces. Host ports the
//! daemon picks (`-p 80`, `-P --expose`): reachable from the outside at the uplink address,
//! shown by `sluice port`, the same after a restart, a clear refusal when the range is used up,
//! and a range overlapping NAPT refused at start. docker's CLI habits against the real daemon:
//! `network ls --filter/--format/-q`, `network inspect --format`, `sluice inspect -f`,
//! `network rm` of several, `network prune --filter`, `network disconnect --force` of an
//! endpoint whose namespace is gone, `IPAM.Config` without a gateway the user did not give
//! and an endpoint's `IPAMConfig` for `--ip`. Needs root and the release binaries (`cargo build
//! --release --bins`; `SLUICE_BIN` names the `sluice` binary, `sluiced` is expected beside it).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sluice_lab::daemonlab::{DaemonLab, UPLINK_IP};

fn bin_dir() -> Option<PathBuf> {
    sluice_tests::bins::release_bin_dir(&["sluice", "sluiced"])
}

fn ok(d: &DaemonLab, args: &[&str]) -> String {
    d.sluice_ok(args)
        .unwrap_or_else(|e| panic!("{e}; daemon log: {}", d.log()))
}

/// What the outside namespace gets back from `proto` port `port` of the uplink address, asked
/// until it is `want` (the first packets may wait on ARP and a busy machine) or 5 s pass.
fn ask(d: &DaemonLab, proto: &str, port: u16, want: &str) -> String {
    let cmd = format!("echo ping | socat -T 2 - {proto}:{UPLINK_IP}:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let o = d.lab().exec_output("out", &["sh", "-c", &cmd]).unwrap();
        let got = String::from_utf8_lossy(&o.stdout).into_owned();
        if got == want || std::time::Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A socat in namespace `ns` answering `tcp-pong` or `udp-pong` on `proto` port `port`.
fn serve(d: &mut DaemonLab, ns: &str, proto: &str, port: u16) {
    let listen = format!("{proto}-LISTEN:{port},reuseaddr,fork");
    let reply = format!("SYSTEM:echo {}-pong", proto.to_lowercase());
    let log = format!("{proto}{port}");
    d.lab_mut()
        .spawn(ns, &["socat", &listen, &reply], &log)
        .unwrap();
    d.lab()
        .wait_listen(ns, port, Duration::from_secs(5))
        .unwrap();
}

#[test]
fn picked_host_ports_are_reachable_and_survive_a_restart() {
    let Some(bin) = bin_dir() else { return };
    let mut d = DaemonLab::start(
        "hpr",
        &bin,
        &["--workers", "1", "--host-port-range", "62000-62009"],
    )
    .unwrap();
    ok(
        &d,
        &["network", "create", "--subnet", "10.68.0.0/24", "pub"],
    );
    let w1 = d.add_container("w1").unwrap();
    ok(
        &d,
        &[
            "network", "connect", "--name", "w1", "-p", "80", "-P", "--expose", "5000/udp",
            "--expose", "80", "pub", &w1,
        ],
    );
    let shown = "80/tcp -> 0.0.0.0:62000\n5000/udp -> 0.0.0.0:62000\n";
    assert_eq!(ok(&d, &["port", "w1"]), shown);
    for (proto, port) in [("TCP", 80), ("UDP", 5000)] {
        serve(&mut d, "w1", proto, port);
    }
    assert_eq!(ask(&d, "TCP", 62000, "tcp-pong\n"), "tcp-pong\n");
    assert_eq!(ask(&d, "UDP", 62000, "udp-pong\n"), "udp-pong\n");

    d.restart().unwrap();
    assert_eq!(ok(&d, &["port", "w1"]), shown, "the picked ports are kept");
    assert_eq!(ask(&d, "TCP", 62000, "tcp-pong\n"), "tcp-pong\n");
    assert_eq!(ask(&d, "UDP", 62000, "udp-pong\n"), "udp-pong\n");

    let w2 = d.add_container("w2").unwrap();
    ok(
        &d,
        &["network", "connect", "--name", "w2", "-p", "80", "pub", &w2],
    );
    assert_eq!(ok(&d, &["port", "w2"]), "80/tcp -> 0.0.0.0:62001\n");
    let ps = ok(&d, &["ps"]);
    assert!(ps.contains("0.0.0.0:62001->80/tcp"), "{ps}");

    // 62002-62009 are free: eight ports, not the nine a range asks for.
    let w3 = d.add_container("w3").unwrap();
    let o = d.sluice(&[
        "network",
        "connect",
        "--name",
        "w3",
        "-p",
        "7000-7008",
        "pub",
        &w3,
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no free host port for 7000-7008/tcp: the daemon's host-port range 62000-62009 is used up"),
        "{err}"
    );
    ok(
        &d,
        &[
            "network",
            "connect",
            "--name",
            "w3",
            "-p",
            "7000-7007",
            "pub",
            &w3,
        ],
    );
    assert_eq!(
        ok(&d, &["port", "w3"]),
        "7000-7007/tcp -> 0.0.0.0:62002-62009\n"
    );
    d.stop();
}

#[test]
fn a_range_overlapping_napt_is_refused_at_start() {
    let Some(bin) = bin_dir() else { return };
    let Err(e) = DaemonLab::start("hpn", &bin, &["--host-port-range", "49153-60999"]) else {
        panic!("sluiced started with a host-port range inside NAPT's ports");
    };
    assert!(
        e.to_string()
            .contains("--host-port-range 49153-60999 overlaps the NAPT source ports 32768-60999"),
        "{e}"
    );
}

#[test]
fn dockers_cli_habits_against_the_daemon() {
    let Some(bin) = bin_dir() else { return };
    let mut d = DaemonLab::start("hcl", &bin, &["--workers", "1"]).unwrap();
    ok(
        &d,
        &[
            "network",
            "create",
            "--subnet",
            "10.69.0.0/24",
            "--label",
            "env=prod",
            "web",
        ],
    );
    ok(
        &d,
        &["network", "create", "--subnet", "10.70.0.0/24", "old"],
    );
    assert_eq!(
        ok(
            &d,
            &[
                "network",
                "ls",
                "--filter",
                "type=builtin",
                "--format",
                "{{.Name}}"
            ]
        ),
        "bridge\nhost\nnone\n"
    );
    assert_eq!(
        ok(
            &d,
            &[
                "network",
                "ls",
                "-f",
                "label=env=prod",
                "-f",
                "driver=bridge",
                "--format",
                "{{.Name}} {{.Driver}} {{.Scope}} {{.Labels}}"
            ]
        ),
        "web bridge local env=prod\n"
    );
    // As docker 20.10 does: `name=` is a regular expression, `label=` terms must all match,
    // and the default table is aligned by Go's tabwriter (minimum width 10, padding 3).
    assert_eq!(
        ok(
            &d,
            &[
                "network",
                "ls",
                "-f",
                "name=^(w|o)",
                "--format",
                "{{.Name}}"
            ]
        ),
        "old\nweb\n"
    );
    assert_eq!(
        ok(
            &d,
            &[
                "network",
                "ls",
                "-f",
                "label=env=prod",
                "-f",
                "label=nope",
                "-q"
            ]
        ),
        ""
    );
    let table = ok(&d, &["network", "ls", "-f", "name=^web$"]);
    assert!(
        table.starts_with("NETWORK ID     NAME      DRIVER    SCOPE     SUBNET\n"),
        "{table}"
    );
    let ids = ok(&d, &["network", "ls", "-q", "--no-trunc", "-f", "name=web"]);
    assert_eq!(ids.trim().len(), 64, "{ids}");
    assert_eq!(
        ok(
            &d,
            &[
                "network",
                "inspect",
                "--format",
                "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
                "web"
            ]
        ),
        "10.69.0.0/24\n"
    );
    assert_eq!(
        ok(
            &d,
            &[
                "network",
                "inspect",
                "-f",
                "{{.Attachable}} {{.Ingress}} {{.ConfigOnly}} {{json .ConfigFrom}} {{.Labels.env}}",
                "web"
            ]
        ),
        "true false false {\"Network\":\"\"} prod\n"
    );

    // The tutorials' container address, on the default bridge and on a user network.
    let c1 = d.add_container("c1").unwrap();
    ok(&d, &["network", "connect", "--name", "c1", "bridge", &c1]);
    ok(
        &d,
        &[
            "network", "connect", "--name", "c1", "-p", "8080:80", "web", &c1,
        ],
    );
    assert_eq!(
        ok(
            &d,
            &["inspect", "-f", "{{ .NetworkSettings.IPAddress }}", "c1"]
        ),
        "172.17.0.2\n"
    );
    assert_eq!(
        ok(
            &d,
            &[
                "inspect",
                "-f",
                "{{.NetworkSettings.Networks.web.IPAddress}} {{json .NetworkSettings.Ports}}",
                "c1"
            ]
        ),
        "10.69.0.2 {\"80/tcp\":[{\"HostIp\":\"0.0.0.0\",\"HostPort\":\"8080\"}]}\n"
    );

    // docker 20.10's IPAM.Config shows no gateway the user did not give; the endpoint still
    // has it, and an address fixed with --ip shows in its IPAMConfig.
    assert_eq!(
        ok(
            &d,
            &["network", "inspect", "-f", "{{json .IPAM.Config}}", "web"]
        ),
        "[{\"Subnet\":\"10.69.0.0/24\"}]\n"
    );
    let c2 = d.add_container("c2").unwrap();
    ok(
        &d,
        &[
            "network",
            "connect",
            "--name",
            "c2",
            "--ip",
            "10.69.0.50",
            "web",
            &c2,
        ],
    );
    assert_eq!(
        ok(
            &d,
            &[
                "inspect",
                "-f",
                "{{json .NetworkSettings.Networks.web.IPAMConfig}} {{.NetworkSettings.Networks.web.Gateway}}",
                "c2"
            ]
        ),
        "{\"IPv4Address\":\"10.69.0.50\"} 10.69.0.1\n"
    );
    assert_eq!(
        ok(
            &d,
            &[
                "inspect",
                "-f",
                "{{json .NetworkSettings.Networks.web.IPAMConfig}}",
                "c1"
            ]
        ),
        "null\n",
        "an address IPAM picked"
    );
    ok(&d, &["network", "disconnect", "web", "c2"]);

    // rm of several: each removed name printed, each failure one line, exit 1.
    let o = d.sluice(&["network", "rm", "old", "nope", "web"]);
    assert!(!o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "old\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err.contains("nope") && err.contains("web"), "{err}");

    // A namespace that went away: disconnect --force releases its endpoints.
    let st = Command::new("ip")
        .args(["netns", "del", c1.trim_start_matches("/run/netns/")])
        .status()
        .unwrap();
    assert!(st.success());
    ok(&d, &["network", "disconnect", "--force", "web", "c1"]);
    ok(&d, &["network", "disconnect", "-f", "bridge", "c1"]);
    assert_eq!(ok(&d, &["ps", "-o", "json"]).trim(), "[]");

    // Filtered prune: by label, then by age.
    ok(&d, &["network", "create", "--label", "tmp=1", "scratch"]);
    assert_eq!(
        ok(&d, &["network", "prune", "-f", "--filter", "label=tmp"]),
        "Deleted Networks:\nscratch\n"
    );
    assert_eq!(
        ok(&d, &["network", "prune", "--force", "--filter", "until=1h"]),
        ""
    );
    assert_eq!(
        ok(&d, &["network", "prune", "--force", "--filter", "until=0s"]),
        "Deleted Networks:\nweb\n"
    );
    d.stop();
}
