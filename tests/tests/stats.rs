//! What `sluice stats` and the metrics show of losses sluice's own counters cannot see: a
//! frozen sluiced's AF_PACKET ring overruns, and the kernel's drops appear per port, per
//! network and in total (table, JSON and Prometheus), beside the flows charged to each
//! endpoint against its quota. Needs root and the release binaries.

use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_lab::daemonlab::{DaemonLab, OUTSIDE_IP};

const METRICS: &str = "127.0.0.1:9329";

fn stats(d: &DaemonLab) -> Value {
    let out = d
        .sluice_ok(&["stats", "--output", "json"])
        .unwrap_or_else(|e| panic!("{e}; daemon log: {}", d.log()));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The row of the port whose endpoint is `name`.
fn port_of<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["endpoint"] == name)
        .unwrap_or_else(|| panic!("no port of {name}: {st:#}"))
}

#[test]
fn ring_overruns_and_flows_show_in_stats_and_metrics() {
    let Some(bin) = sluice_tests::bins::release_bin_dir(&["sluice", "sluiced"]) else {
        return;
    };
    // One worker with 30 RX slots per port (2 KiB each, laid out as 32): the ring of an
    // endpoint's port holds 32 frames.
    let args = ["--workers", "1", "--rx-slots", "30", "--metrics", METRICS];
    let mut d = DaemonLab::start("kst", &bin, &args).unwrap();
    d.sluice_ok(&[
        "network",
        "create",
        "--subnet",
        "10.66.0.0/24",
        "-o",
        "max_flows_per_endpoint=100",
        "flood",
    ])
    .unwrap();
    let c1 = d.add_container("c1").unwrap();
    d.sluice_ok(&["network", "connect", "--name", "src", "flood", &c1])
        .unwrap();
    // A flow out (charged to src) that also resolves the gateway's MAC in c1.
    d.lab()
        .wait_ping("c1", OUTSIDE_IP, Duration::from_secs(5))
        .unwrap();
    let before = port_of(&stats(&d), "src").clone();
    assert_eq!(before["kernel_drops"], 0, "{before}");

    // Freeze sluiced and send 600 pings into its 30-slot ring: at least 500 are the kernel's
    // drops, which none of sluice's own counters sees.
    const SENT: u64 = 600;
    let pid = d.pid().unwrap();
    d.lab().pause(pid);
    let pinged = d.lab().exec_output(
        "c1",
        &[
            "ping",
            "-q",
            "-c",
            "600",
            "-i",
            "0.001",
            "-W",
            "1",
            "10.66.0.1",
        ],
    );
    d.lab().resume(pid);
    pinged.unwrap();

    // The worker reads the ring's counters once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = stats(&d);
        if port_of(&st, "src")["kernel_drops"].as_u64().unwrap() > 0 || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let src = port_of(&st, "src");
    let field = |p: &Value, k: &str| p[k].as_u64().unwrap_or_else(|| panic!("{k}: {p}"));
    let drops = field(src, "kernel_drops");
    let queued = field(src, "kernel_packets") - field(&before, "kernel_packets");
    assert!((SENT - 100..=SENT).contains(&drops), "{src}");
    assert!((SENT..=SENT + 50).contains(&queued), "{src}");
    let read = field(src, "rx_packets") - field(&before, "rx_packets");
    assert!(read + drops <= queued && read >= 10, "read {read}: {src}");
    assert_eq!(field(src, "kernel_freezes"), 0, "a V2 ring does not freeze");
    // The flow out is charged to src, against the network's quota.
    assert!(field(src, "flows") >= 1, "{src}");
    assert_eq!(src["max_flows"], 100, "{src}");
    let uplink = port_of(&st, "uplink");
    assert!(uplink.get("max_flows").is_none(), "{uplink}");
    let flood = st["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["network"] == "flood")
        .unwrap();
    assert_eq!(flood["kernel_drops"], drops, "{flood}");
    assert!(field(flood, "conntrack_entries") >= 1, "{flood}");
    assert!(field(&st, "kernel_drops") >= drops, "{st}");

    let table = d.sluice_ok(&["stats"]).unwrap();
    let host_if = src["port"].as_str().unwrap();
    assert!(
        table.contains("KERNEL DROPS") && table.contains("FLOWS"),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "  {host_if} (src): {}",
            field(src, "kernel_drops")
        )),
        "{table}"
    );

    let metrics = d
        .lab()
        .exec(
            "host",
            &["curl", "-sf", &format!("http://{METRICS}/metrics")],
        )
        .unwrap();
    let sample = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&format!("port=\"{host_if}\"")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} for {host_if}: {metrics}"))
    };
    assert!(sample("sluice_port_kernel_drops_total") >= drops);
    assert!(sample("sluice_port_kernel_packets_total") >= queued);
    assert!(sample("sluice_port_flows") >= 1);
    assert_eq!(sample("sluice_port_max_flows"), 100);
    d.stop();
}
