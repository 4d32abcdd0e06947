//! Driving a daemon of a namespace test through the `sluice` CLI, and waiting for what it
//! does to show.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_lab::lab::Lab;

/// Runs `sluice --socket SOCK ARGS...` from the release binaries in `bin`.
pub fn sluice(bin: &Path, sock: &Path, args: &[&str]) -> Output {
    Command::new(bin.join("sluice"))
        .arg("--socket")
        .arg(sock)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// [`sluice`] that must succeed; its standard output.
pub fn sluice_ok(bin: &Path, sock: &Path, args: &[&str]) -> String {
    let o = sluice(bin, sock, args);
    assert!(
        o.status.success(),
        "sluice {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits up to `within` for `what` to hold (checked every 100 ms).
pub fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The directory of the release binaries `sluice` and `sluiced` and a new lab named `prefix`,
/// for a test that drives daemons through the CLI; `None` when the test cannot run here (see
/// [`crate::bins::release_bin_dir`]).
pub fn daemon_lab(prefix: &str) -> Option<(PathBuf, Lab)> {
    let bin = crate::bins::release_bin_dir(&["sluice", "sluiced"])?;
    Some((bin, Lab::new(prefix).unwrap()))
}

/// The command line of host `host`'s sluiced in a cluster lab: its API socket
/// ([`host_socket`]) and state directory in the lab's directory, uplink `up0` with `vtep`/24,
/// the cluster store `store` (`etcd://...`) with a lease TTL of `ttl_s` seconds, one worker;
/// `extra` flags after those.
pub fn cluster_sluiced(
    bin: &Path,
    lab: &Lab,
    host: &str,
    (vtep, store, ttl_s): (&str, &str, u64),
    extra: &[String],
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![
        bin.join("sluiced").into(),
        "--socket".into(),
        host_socket(lab, host).into(),
        "--state-dir".into(),
        lab.dir().join(format!("{host}-state")).into(),
        "--uplink".into(),
        "up0".into(),
        "--uplink-ip".into(),
        format!("{vtep}/24").into(),
        "--cluster-store".into(),
        store.into(),
        "--cluster-ttl".into(),
        ttl_s.to_string().into(),
        "--workers".into(),
        "1".into(),
        "--spare-ports".into(),
        "1".into(),
    ];
    args.extend(extra.iter().map(Into::into));
    args
}

/// The command line of a one-member etcd cluster (`e1`, its data in the lab's directory)
/// serving clients at `url`, with a progress notification every second (idle watches hear
/// from it well within a host's stall timeout); `extra` flags after those.
pub fn one_member_etcd(
    lab: &Lab,
    url: &str,
    extra: &[std::ffi::OsString],
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "etcd".into(),
        "--name".into(),
        "e1".into(),
        "--data-dir".into(),
        lab.dir().join("etcd").into(),
        "--listen-client-urls".into(),
        url.into(),
        "--advertise-client-urls".into(),
        url.into(),
        "--listen-peer-urls".into(),
        "http://127.0.0.1:2380".into(),
        "--initial-advertise-peer-urls".into(),
        "http://127.0.0.1:2380".into(),
        "--initial-cluster".into(),
        "e1=http://127.0.0.1:2380".into(),
        "--experimental-watch-progress-notify-interval".into(),
        "1s".into(),
    ];
    args.extend(extra.iter().cloned());
    args
}

/// The underlay of a cluster lab with one etcd member: bridge `br0` in namespace `ul`, with
/// the member's address 10.99.0.100/24 on it.
pub fn cluster_underlay(lab: &mut Lab) {
    lab.add_ns("ul").unwrap();
    lab.ip("ul", &["link", "add", "br0", "type", "bridge"])
        .unwrap();
    lab.up("ul", "br0").unwrap();
    lab.addr("ul", "br0", "10.99.0.100/24").unwrap();
}

/// Host `i` of a cluster lab: namespace `h{i+1}` with its uplink `up0` and management
/// interface `mg0` (10.99.0.{i+1}/24) on bridge `br0` of the underlay namespace `ul`; the
/// host's name.
pub fn cluster_host(lab: &mut Lab, i: usize) -> String {
    let h = format!("h{}", i + 1);
    lab.add_ns(&h).unwrap();
    cluster_host_links(lab, &h, i);
    h
}

/// Wires the lab's existing namespace `ns` as host `i` of a cluster lab (see
/// [`cluster_host`]): its `up0` and `mg0` (10.99.0.{i+1}/24) on the underlay's `br0`.
pub fn cluster_host_links(lab: &Lab, ns: &str, i: usize) {
    cluster_host_links_to(lab, ns, lab, i);
}

/// [`cluster_host_links`] to the underlay (namespace `ul`) of lab `underlay`, which may be
/// another lab than `ns`'s (another dockerd's, each dockerd having a lab of its own).
pub fn cluster_host_links_to(lab: &Lab, ns: &str, underlay: &Lab, i: usize) {
    let ul = underlay.ns_name("ul").unwrap();
    for (dev, port) in [("up0", format!("up{i}")), ("mg0", format!("mg{i}"))] {
        let veth = [
            "link", "add", dev, "type", "veth", "peer", "name", &port, "netns", &ul,
        ];
        lab.ip(ns, &veth).unwrap();
        underlay
            .ip("ul", &["link", "set", &port, "master", "br0"])
            .unwrap();
        underlay.up("ul", &port).unwrap();
        lab.up(ns, dev).unwrap();
    }
    lab.addr(ns, "mg0", &format!("10.99.0.{}/24", i + 1))
        .unwrap();
}

/// The underlay of [`cluster_underlay`] with a one-member etcd ([`one_member_etcd`]) serving
/// clients at `endpoint` (`HOST:PORT` on the underlay bridge), once it answers.
pub fn cluster_etcd(lab: &mut Lab, endpoint: &str) {
    cluster_underlay(lab);
    let url = format!("http://{endpoint}");
    let args = one_member_etcd(lab, &url, &[]);
    lab.spawn_os("ul", &args, "etcd").unwrap();
    eventually("etcd answers", Duration::from_secs(20), || {
        etcd_hosts(lab, endpoint).is_some()
    });
}

/// How many hosts the etcd at `endpoint` lists (`/sluice/v1/hosts/`), once it answers.
pub fn etcd_hosts(lab: &Lab, endpoint: &str) -> Option<usize> {
    etcd_keys(lab, endpoint, "/sluice/v1/hosts/")
}

/// How many keys under `prefix` the etcd at `endpoint` holds, once it answers.
pub fn etcd_keys(lab: &Lab, endpoint: &str, prefix: &str) -> Option<usize> {
    let cmd = [
        "env",
        "ETCDCTL_API=3",
        "etcdctl",
        "--endpoints",
        endpoint,
        "get",
        "--prefix",
        "--keys-only",
        prefix,
    ];
    let o = lab.exec_output("ul", &cmd).ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).matches(prefix).count())
}

/// The API socket of host `host`'s sluiced in a lab.
pub fn host_socket(lab: &Lab, host: &str) -> PathBuf {
    lab.dir().join(format!("{host}.sock"))
}
