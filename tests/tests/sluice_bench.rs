//! `sluice bench` end to end: one short run of the real harness (kernel bridge vs sluice, tcp
//! only, one run of one second) into a fresh output directory. It checks that the files exist,
//! that both peers have their row (with its cost) in results.json and results.md, and that the
//! SVG chart is well formed with one bar per measured peer; never the figures themselves.
//!
//! The binaries come from `SLUICE_BIN` (or `<workspace>/target/release/sluice`) and
//! `sluice-e2e-bench` next to it (`cargo build --release --bins`).
//! Needs root; without it the test is skipped with a message.

use std::path::{Path, PathBuf};
use std::process::Command;

fn sluice_bin() -> PathBuf {
    let bin = std::env::var_os("SLUICE_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/sluice"),
        PathBuf::from,
    );
    assert!(
        bin.is_file() && bin.with_file_name("sluice-e2e-bench").is_file(),
        "{} or sluice-e2e-bench next to it is missing: run `cargo build --release \
         --bins` or set SLUICE_BIN",
        bin.display()
    );
    bin
}

/// Removes the output directory, also when the test fails.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Tags balance and every tag is closed; returns the element names in order.
fn xml_elements(doc: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = doc;
    while let Some(open) = rest.find('<') {
        assert!(
            !rest[..open].contains('<') && !rest[..open].contains("& "),
            "stray markup in text"
        );
        let close = open + rest[open..].find('>').expect("unclosed tag");
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('?') {
            continue;
        }
        assert!(
            tag.matches('"').count().is_multiple_of(2),
            "quotes in <{tag}>"
        );
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "</{name}> misplaced");
            continue;
        }
        let name = tag
            .trim_end_matches('/')
            .split_whitespace()
            .next()
            .expect("empty tag")
            .to_string();
        names.push(name.clone());
        if !tag.ends_with('/') {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed elements {stack:?}");
    assert!(rest.trim().is_empty(), "text after the root element");
    names
}

#[test]
fn quick_bench_writes_rows_and_charts() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to create network namespaces");
        return;
    }
    let sluice = sluice_bin();
    let out =
        TempDir(std::env::temp_dir().join(format!("sluice-bench-test-{}", std::process::id())));
    let o = Command::new(&sluice)
        .args([
            "bench",
            "--peers",
            "kernel,sluice,iptables-nat",
            "--tests",
            "tcp,tcp4",
            "--runs",
            "1",
            "--duration",
            "1",
            "--output",
        ])
        .arg(&out.0)
        .output()
        .expect("running sluice bench");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "sluice bench failed:\n{stdout}\n{stderr}"
    );
    // iptables-nat measures only the nat rows: with tcp alone it is a skip line on every
    // machine (the optional peers' tools may or may not be installed).
    assert!(
        stdout.contains("skipped: iptables-nat: skipped, none of the selected tests applies"),
        "a peer with nothing to measure is a skip line:\n{stdout}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.0.join("results.json")).unwrap())
            .expect("results.json is JSON");
    assert_eq!(json["peers"], serde_json::json!(["kernel", "sluice"]));
    let tcp = &json["tests"][0];
    assert_eq!(tcp["test"], "tcp");
    let peers = tcp["metrics"][0]["peers"].as_array().expect("peers");
    let names: Vec<&str> = peers.iter().filter_map(|p| p["peer"].as_str()).collect();
    assert_eq!(names, ["kernel", "sluice"]);
    for p in peers {
        assert_eq!(p["runs"], 1);
        assert_eq!(p["samples"].as_array().map(Vec::len), Some(1));
        if p["ok"] == 1 {
            // The cost column: sluice's worker threads (with the softirq time of the flows its
            // offload, on by default, hands to the kernel) or the kernel's softirq time.
            assert!(p["cost_median"].is_f64(), "no cost: {p}");
            assert!(p["cpu_median"]["forwarding_pct"].is_f64(), "{p}");
        }
    }
    assert_eq!(tcp["metrics"][0]["cost_unit"], "%CPU/Gbit/s");
    // The four-stream row runs four iperf3 clients against four servers: every one must
    // have answered for the row to have a figure.
    let tcp4 = &json["tests"][1];
    assert_eq!(tcp4["test"], "tcp4");
    for p in tcp4["metrics"][0]["peers"].as_array().expect("tcp4 peers") {
        assert_eq!(p["ok"], 1, "four streams measured: {p}");
        assert!(p["median"].as_f64().is_some_and(|g| g > 0.0), "{p}");
    }

    let md = std::fs::read_to_string(out.0.join("results.md")).unwrap();
    let row = md
        .lines()
        .find(|l| l.starts_with("| tcp1 a->b"))
        .expect("tcp row in results.md");
    assert_eq!(
        row.matches('|').count(),
        10,
        "kernel and sluice columns (value, CPU, cost each) and the ratio: {row}"
    );
    assert!(stdout.contains("| tcp1 a->b"), "terminal table:\n{stdout}");

    let svg = std::fs::read_to_string(out.0.join("tcp.svg")).unwrap();
    let elements = xml_elements(&svg);
    assert_eq!(elements[0], "svg");
    assert!(svg.contains("viewBox=\"0 0 "));
    let measured = peers.iter().filter(|p| p["ok"] == 1).count();
    assert_eq!(svg.matches("class=\"bar\"").count(), measured);
    assert!(!out.0.join("rr.svg").exists());
}
