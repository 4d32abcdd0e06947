//! sluice as docker's network and IPAM driver, against a real dockerd: sluiced runs inside
//! dockerd's network and mount namespaces (the veth pairs it hands over must be in dockerd's
//! namespace, and the plugin socket in dockerd's `/run/docker/plugins`), with its uplink `up0`
//! wired to an `out` namespace (192.0.2.1) that plays the outside network. Needs root, docker.io
//! and the release binaries (`cargo build --release --bins`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use std::ffi::OsString;

use sluice_lab::daemonlab::{OUTSIDE_IP, UPLINK_IP};
use sluice_lab::lab::Lab;
use sluice_tests::cli::{
    cluster_etcd, cluster_host, cluster_host_links, cluster_host_links_to, cluster_sluiced,
    etcd_hosts, etcd_keys, eventually, host_socket, sluice_ok,
};
use sluice_tests::engines::{missing_tool, Dockerd};

fn bin_dir() -> Option<PathBuf> {
    if let Some(t) = missing_tool(&["dockerd", "nsenter", "unshare", "busybox", "curl"]) {
        eprintln!("skipped: {t} is not installed (scripts/setup-engines.sh)");
        return None;
    }
    sluice_tests::bins::release_bin_dir(&["sluice", "sluiced"])
}

/// [`bin_dir`] for the cluster tests, which need etcd too.
fn cluster_bin_dir() -> Option<PathBuf> {
    if let Some(t) = missing_tool(&["etcd", "etcdctl"]) {
        eprintln!("skipped: {t} is not installed (scripts/setup-engines.sh)");
        return None;
    }
    bin_dir()
}

/// dockerd plus sluiced in its namespaces. On drop: containers and networks are removed
/// while sluiced still answers (so dockerd's calls to the plugin succeed), then sluiced is
/// stopped, then dockerd and its lab go.
struct Stack {
    sluiced: Option<Child>,
    bin: PathBuf,
    d: Dockerd,
    /// sluiced's command line, the program first.
    sluiced_args: Vec<OsString>,
}

/// sluice's v6 address on the uplink in the dual-stack test, and the outside namespace's.
const UPLINK6: &str = "2001:db8:77::2";
const OUTSIDE6: &str = "2001:db8:77::1";

/// `docker network create` of a sluice network with sluice's IPAM.
const CREATE_NETWORK: [&str; 6] = [
    "network",
    "create",
    "-d",
    "sluice",
    "--ipam-driver",
    "sluice",
];

/// Where the etcd member of the overlay test listens (on the underlay bridge, namespace `ul`).
const ETCD: &str = "10.99.0.100:2379";

impl Stack {
    fn start(bin: &Path) -> Stack {
        Stack::start_with(bin, false)
    }

    /// The stack with v6 on the uplink and the outside namespace when `dual`.
    fn start_with(bin: &Path, dual: bool) -> Stack {
        let mut d = Dockerd::start("dsl").unwrap();
        let ns = d.ns();
        let lab = d.lab_mut();
        lab.add_ns("out").unwrap();
        lab.veth((ns, "up0"), ("out", "eth0")).unwrap();
        lab.up(ns, "up0").unwrap();
        lab.addr("out", "eth0", &format!("{OUTSIDE_IP}/24"))
            .unwrap();
        lab.up("out", "eth0").unwrap();
        if dual {
            lab.addr6("out", "eth0", &format!("{OUTSIDE6}/64")).unwrap();
        }
        let dir = lab.dir();
        let mut args: Vec<OsString> = vec![
            bin.join("sluiced").into(),
            "--socket".into(),
            dir.join("sluice.sock").into(),
            "--state-dir".into(),
            dir.join("sluice-state").into(),
        ];
        let uplink = [
            "--uplink=up0".to_string(),
            format!("--uplink-ip={UPLINK_IP}/24"),
            format!("--uplink-gateway={OUTSIDE_IP}"),
            "--workers=1".into(),
            "--docker-plugin".into(),
        ];
        args.extend(uplink.into_iter().map(Into::into));
        if dual {
            args.push(format!("--uplink-ip6={UPLINK6}/64").into());
            args.push(format!("--uplink-gateway6={OUTSIDE6}").into());
        }
        Stack::launched(bin, d, args)
    }

    /// The stack as host 1 of a cluster (see [`Stack::cluster_member`]); host 2 (`h2`) runs
    /// a plain sluiced on the same store. The stack and host 2's API socket.
    fn clustered(bin: &Path) -> (Stack, PathBuf) {
        let mut s = Stack::cluster_member(bin, "dov", 0, None);
        let lab = s.d.lab_mut();
        let h2 = cluster_host(lab, 1);
        let b = cluster_sluiced_of(bin, lab, &h2, 1, &[]);
        lab.spawn_os(&h2, &b, &h2).unwrap();
        let sock2 = host_socket(lab, &h2);
        (s, sock2)
    }

    /// The stack as host `i` of a cluster: dockerd's namespace is a host on the underlay of
    /// `underlay` (another stack's lab), or, without one, of a new underlay in its own lab with
    /// a one-member etcd (`ul`); its sluiced has the cluster store and the docker plugin.
    fn cluster_member(bin: &Path, tag: &str, i: usize, underlay: Option<&Lab>) -> Stack {
        let mut d = Dockerd::start(tag).unwrap();
        let ns = d.ns();
        let lab = d.lab_mut();
        match underlay {
            Some(ul) => cluster_host_links_to(lab, ns, ul, i),
            None => {
                cluster_etcd(lab, ETCD);
                cluster_host_links(lab, ns, i);
            }
        }
        let args = cluster_sluiced_of(bin, lab, "sluice", i, &["--docker-plugin"]);
        Stack::launched(bin, d, args)
    }

    /// The stack with sluiced started from `sluiced_args`.
    fn launched(bin: &Path, d: Dockerd, sluiced_args: Vec<OsString>) -> Stack {
        let mut s = Stack {
            sluiced: None,
            bin: bin.to_path_buf(),
            d,
            sluiced_args,
        };
        s.launch();
        s
    }

    fn socket(&self) -> PathBuf {
        self.d.lab().dir().join("sluice.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.d.lab().dir().join("sluiced.log")).unwrap_or_default()
    }

    /// Starts sluiced inside dockerd's namespaces with the plugin at its default path (which
    /// is this dockerd's private plugin directory there); its API socket is [`Stack::socket`].
    fn launch(&mut self) {
        let dir = self.d.lab().dir().to_path_buf();
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("sluiced.log"))
            .unwrap();
        let child = self
            .d
            .command(&self.sluiced_args[0])
            .args(&self.sluiced_args[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.sluiced = Some(child);
        let start = Instant::now();
        while !(self.d.plugin_socket("sluice").exists() && self.sluice(&["ps"]).status.success()) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sluiced did not come up: {}",
                self.log()
            );
            sleep(Duration::from_millis(50));
        }
    }

    fn stop_sluiced(&mut self) {
        if let Some(mut c) = self.sluiced.take() {
            // SAFETY: kill has no memory preconditions; the pid is our child's.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while matches!(c.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(10) {
                sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn sluice(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("sluice"))
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn sluice_json(&self, args: &[&str]) -> serde_json::Value {
        let o = self.sluice(args);
        assert!(o.status.success(), "sluice {args:?}: {o:?}");
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// `docker network create -d sluice --ipam-driver sluice` of `name` on `subnet` (none: the
    /// IPAM picks one), plus `extra` flags: docker's network id and sluice's inspect of the
    /// network it made.
    fn sluice_network(
        &self,
        name: &str,
        subnet: Option<&str>,
        extra: &[&str],
    ) -> (String, serde_json::Value) {
        let mut args = CREATE_NETWORK.to_vec();
        args.extend_from_slice(extra);
        if let Some(subnet) = subnet {
            args.extend(["--subnet", subnet]);
        }
        args.push(name);
        self.docker(&args);
        let id = self.docker(&["network", "inspect", "-f", "{{.Id}}", name]);
        let net = self.sluice_json(&["network", "inspect", &format!("docker-{}", &id[..12])]);
        let net = if net.is_array() { net[0].clone() } else { net };
        (id, net)
    }

    fn docker(&self, args: &[&str]) -> String {
        self.d
            .docker_stdout(args)
            .unwrap_or_else(|e| panic!("docker {args:?}: {e}\nsluiced: {}", self.log()))
    }

    /// `docker run -d` of a container `name` on `network` that only sleeps.
    fn run_sleeper(&self, name: &str, network: &str, img: &str) {
        self.docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            img,
            "sleep",
            "600",
        ]);
    }

    /// Container `name`'s IPv4 address on `network`, as docker shows it.
    fn ip_on(&self, name: &str, network: &str) -> String {
        let format = format!("{{{{.NetworkSettings.Networks.{network}.IPAddress}}}}");
        self.docker(&["inspect", "-f", &format, name])
    }

    /// `docker run` of `web`: an httpd on `network` published as `-p 18080:80`.
    fn run_published_web(&self, img: &str, network: &str) {
        self.docker(&[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            network,
            "-p",
            "18080:80",
            img,
            "sh",
            "-c",
            "echo published-hello > /tmp/index.html && exec httpd -f -p 80 -h /tmp",
        ]);
    }

    /// `docker rm -f` of every container, then `docker network rm` of `networks`.
    fn remove_all(&self, networks: &[&str]) {
        let ids = self.docker(&["ps", "-aq"]);
        let mut args = vec!["rm", "-f"];
        args.extend(ids.split_whitespace());
        self.docker(&args);
        let mut args = vec!["network", "rm"];
        args.extend_from_slice(networks);
        self.docker(&args);
    }

    /// The plugin's IPAM file (pools, and the docker networks' shared overlays).
    fn ipam_file(&self) -> String {
        std::fs::read_to_string(self.d.lab().dir().join("sluice-state/docker-ipam.json")).unwrap()
    }

    /// The end of a test, once every container and network is removed: the IPAM file holds no
    /// pool with `pool_text`, and nothing of the stack is left once it is dropped.
    fn finish(self, pool_text: &str) {
        let ipam = self.ipam_file();
        assert!(!ipam.contains(pool_text), "pools left: {ipam}");
        let residue = self.d.residue();
        let lab = self.d.lab();
        let namespaces: Vec<String> = lab
            .namespaces()
            .iter()
            .map(|n| lab.ns_name(n).unwrap())
            .collect();
        drop(self);
        let mut left = residue.leftovers();
        left.extend(
            namespaces
                .into_iter()
                .filter(|n| Path::new("/run/netns").join(n).exists())
                .map(|n| format!("netns {n}")),
        );
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    /// What `curl` in the outside namespace reads from `url`, retried for up to 15 s.
    fn curl_from_outside(&self, url: &str) -> String {
        let start = Instant::now();
        loop {
            let o = self
                .d
                .lab()
                .exec_output("out", &["curl", "-gsS", "--max-time", "2", url])
                .unwrap();
            if o.status.success() {
                return String::from_utf8_lossy(&o.stdout).into_owned();
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{url}: {}\nsluice stats: {}",
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&self.sluice(&["stats"]).stdout)
            );
            sleep(Duration::from_millis(200));
        }
    }

    /// Retries `docker exec` of a check for up to `secs`; its output once it succeeds.
    fn exec_until(&self, args: &[&str], secs: u64) -> String {
        let start = Instant::now();
        loop {
            let o = self.d.docker_unchecked(args).unwrap();
            if o.status.success() {
                return String::from_utf8_lossy(&o.stdout).into_owned();
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "docker {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            sleep(Duration::from_millis(200));
        }
    }

    fn links(&self) -> Vec<String> {
        let out = self.d.exec(&["ip", "-o", "link", "show"]).unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.sluiced.is_some() {
            if let Ok(ids) = self.d.docker_stdout(&["ps", "-aq"]) {
                for id in ids.split_whitespace() {
                    let _ = self.d.docker(&["rm", "-f", id]);
                }
            }
            for n in ["net1", "inet", "net6", "net6b", "ovnet"] {
                let _ = self.d.docker_unchecked(&["network", "rm", n]);
            }
        }
        self.stop_sluiced();
    }
}

/// The command line of sluiced as host `i` (VTEP 192.0.2.{i+1}) of the cluster on [`ETCD`], its
/// socket and state named after `host` (see [`cluster_sluiced`]), plus `extra` flags.
fn cluster_sluiced_of(
    bin: &Path,
    lab: &Lab,
    host: &str,
    i: usize,
    extra: &[&str],
) -> Vec<OsString> {
    let vtep = format!("192.0.2.{}", i + 1);
    let mut flags = vec!["--cluster-advertise".to_string(), vtep.clone()];
    flags.extend(extra.iter().map(|f| f.to_string()));
    cluster_sluiced(
        bin,
        lab,
        host,
        (&vtep, &format!("etcd://{ETCD}"), 3),
        &flags,
    )
}

/// sluice's endpoint veth names: host end `sl` + 10 hex, hand-off peer `sp` + 10 hex.
fn is_sluice_link(name: &str) -> bool {
    ["sl", "sp"].iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|h| h.len() == 10 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

#[test]
fn docker_containers_on_a_sluice_network() {
    let Some(bin) = bin_dir() else { return };
    let t = Instant::now();
    let mut s = Stack::start(&bin);
    eprintln!(
        "docker version: {} (dockerd + sluiced up in {:?})",
        s.d.version().unwrap(),
        t.elapsed()
    );
    let img = s.d.import_busybox().unwrap();

    let step = Instant::now();
    let (nid, snet) = s.sluice_network("net1", Some("10.77.0.0/24"), &[]);
    assert_eq!(snet["Labels"]["com.docker.network.id"], nid.as_str());
    assert_eq!(snet["IPAM"]["Config"][0]["Subnet"], "10.77.0.0/24");
    // `-o driver=overlay` needs a cluster store, which this sluiced has not: refused, naming it.
    let args = ["network", "create", "-d", "sluice", "-o", "driver=overlay"];
    let o =
        s.d.docker_unchecked(&[&args[..], &["--subnet", "10.78.0.0/24", "ovx"]].concat());
    let o = o.unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--cluster-store"),
        "{o:?}"
    );
    for name in ["alpha", "beta"] {
        s.run_sleeper(name, "net1", img);
    }
    eprintln!("network create + 2 containers: {:?}", step.elapsed());
    let ip_a = s.ip_on("alpha", "net1");
    assert_eq!(ip_a, "10.77.0.2", "sluice's IPAM: gateway .1, then .2");
    let step = Instant::now();
    let out = s.exec_until(&["exec", "alpha", "ping", "-c", "1", "-W", "2", "beta"], 10);
    assert!(out.contains("1 packets received"), "{out}");
    let out = s.exec_until(&["exec", "beta", "ping", "-c", "1", "-W", "2", "alpha"], 10);
    assert!(out.contains("1 packets received"), "{out}");
    eprintln!("ping by name both ways: {:?}", step.elapsed());

    // Out through sluice's NAPT: ping and TCP to a server in the outside namespace.
    let www = s.d.lab().dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "outside-says-hi\n").unwrap();
    let www_s = www.to_string_lossy().into_owned();
    s.d.lab_mut()
        .spawn(
            "out",
            &["busybox", "httpd", "-f", "-p", "8080", "-h", &www_s],
            "outside-httpd",
        )
        .unwrap();
    let step = Instant::now();
    let out = s.exec_until(
        &[
            "exec",
            "alpha",
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &OUTSIDE_IP.to_string(),
        ],
        10,
    );
    assert!(out.contains("1 packets received"), "{out}");
    let url = format!("http://{OUTSIDE_IP}:8080/index.html");
    let out = s.exec_until(&["exec", "alpha", "wget", "-q", "-O", "-", &url], 10);
    assert_eq!(out.trim(), "outside-says-hi");
    eprintln!("outbound ping + wget through NAPT: {:?}", step.elapsed());

    // -p: sluice's DNAT on the uplink address (dockerd sets up nothing for plugin networks).
    let step = Instant::now();
    s.run_published_web(img, "net1");
    let ps = s.sluice_json(&["ps", "-o", "json"]);
    assert!(
        ps.as_array()
            .unwrap()
            .iter()
            .any(|e| e["ports"][0] == "0.0.0.0:18080->80/tcp"),
        "{ps}"
    );
    let body = s.curl_from_outside(&format!("http://{UPLINK_IP}:18080/index.html"));
    assert_eq!(body.trim(), "published-hello");
    eprintln!("-p 18080:80 answers from outside: {:?}", step.elapsed());

    // --ip, --mac-address, --network-alias.
    s.docker(&[
        "run",
        "-d",
        "--name",
        "gamma",
        "--network",
        "net1",
        "--ip",
        "10.77.0.50",
        "--mac-address",
        "02:42:0a:4d:00:99",
        "--network-alias",
        "calias",
        img,
        "sleep",
        "600",
    ]);
    let addr = s.docker(&["exec", "gamma", "ip", "addr", "show", "eth0"]);
    assert!(addr.contains("inet 10.77.0.50/24"), "{addr}");
    assert!(addr.contains("02:42:0a:4d:00:99"), "{addr}");
    let out = s.exec_until(
        &["exec", "alpha", "ping", "-c", "1", "-W", "2", "calias"],
        10,
    );
    assert!(out.contains("10.77.0.50"), "{out}");
    let route = s.docker(&["exec", "gamma", "ip", "route"]);
    assert!(route.contains("default via 10.77.0.1"), "{route}");

    // --internal: no default route, no way out; docker network connect / disconnect.
    let (_, inet) = s.sluice_network("inet", Some("10.78.0.0/24"), &["--internal"]);
    assert_eq!(inet["Internal"], true, "{inet}");
    s.docker(&[
        "run",
        "-d",
        "--name",
        "i1",
        "--network",
        "inet",
        img,
        "sleep",
        "600",
    ]);
    let route = s.docker(&["exec", "i1", "ip", "route"]);
    assert!(!route.contains("default"), "{route}");
    let o =
        s.d.docker_unchecked(&[
            "exec",
            "i1",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            &OUTSIDE_IP.to_string(),
        ])
        .unwrap();
    assert!(
        !o.status.success(),
        "an internal network must not reach out"
    );
    s.docker(&["network", "connect", "inet", "alpha"]);
    let addr = s.docker(&["exec", "alpha", "ip", "addr", "show", "eth1"]);
    assert!(addr.contains("inet 10.78.0."), "{addr}");
    let out = s.exec_until(&["exec", "i1", "ping", "-c", "1", "-W", "2", "alpha"], 10);
    assert!(out.contains("1 packets received"), "{out}");
    s.docker(&["network", "disconnect", "inet", "alpha"]);
    let o =
        s.d.docker_unchecked(&["exec", "alpha", "ip", "link", "show", "eth1"])
            .unwrap();
    assert!(!o.status.success(), "eth1 left with disconnect");
    let out = s.exec_until(&["exec", "alpha", "ping", "-c", "1", "-W", "2", "beta"], 5);
    assert!(
        out.contains("1 packets received"),
        "net1 still works: {out}"
    );

    // A restart of sluiced keeps everything (endpoints, IPAM pools and addresses).
    let step = Instant::now();
    s.stop_sluiced();
    s.launch();
    let out = s.exec_until(&["exec", "alpha", "ping", "-c", "1", "-W", "2", "beta"], 10);
    assert!(out.contains("1 packets received"), "{out}");
    s.docker(&[
        "run",
        "-d",
        "--name",
        "late",
        "--network",
        "net1",
        img,
        "sleep",
        "600",
    ]);
    let ip = s.ip_on("late", "net1");
    assert!(
        ![
            "10.77.0.1",
            "10.77.0.2",
            "10.77.0.3",
            "10.77.0.4",
            "10.77.0.50"
        ]
        .contains(&ip.as_str()),
        "the restarted IPAM still knows what it gave out: {ip}"
    );
    eprintln!(
        "sluiced restart, traffic and IPAM kept: {:?}",
        step.elapsed()
    );

    // Everything goes with docker rm -f and docker network rm.
    let step = Instant::now();
    s.remove_all(&["net1", "inet"]);
    eprintln!("rm -f 6 containers + network rm: {:?}", step.elapsed());
    assert_eq!(s.sluice_json(&["ps", "-o", "json"]), serde_json::json!([]));
    let left: Vec<String> = s
        .links()
        .into_iter()
        .filter(|l| is_sluice_link(l))
        .collect();
    assert!(
        left.is_empty(),
        "interfaces left in dockerd's namespace: {left:?}"
    );
    let nets = s.sluice_json(&["network", "ls", "-o", "json"]);
    assert!(
        !nets.to_string().contains("docker-"),
        "sluice networks left: {nets}"
    );
    s.finish("10.77.");
    eprintln!("test total: {:?}", t.elapsed());
}

/// `docker network create -d sluice --ipam-driver sluice --ipv6 --subnet V4 --subnet V6`: the
/// containers get v6 addresses from sluice's IPAM and a v6 default route, ping6 each other by
/// name (docker's DNS answers AAAA from what the plugin reported), reach the outside over v6
/// through sluice's NAT66, and a `-p` port answers on the uplink's v6 address too.
#[test]
fn docker_containers_on_a_dual_stack_sluice_network() {
    let Some(bin) = bin_dir() else { return };
    let t = Instant::now();
    let s = Stack::start_with(&bin, true);
    let img = s.d.import_busybox().unwrap();
    let (_, snet) = s.sluice_network(
        "net1",
        Some("10.79.0.0/24"),
        &["--ipv6", "--subnet", "fd00:79::/64"],
    );
    assert_eq!(snet["EnableIPv6"], true, "{snet}");
    assert_eq!(snet["IPAM"]["Config"][1]["Subnet"], "fd00:79::/64");
    assert_eq!(snet["IPAM"]["Config"][1]["Gateway"], "fd00:79::1");
    for name in ["alpha", "beta"] {
        s.run_sleeper(name, "net1", img);
    }
    let v6 = |name: &str| {
        s.docker(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.net1.GlobalIPv6Address}}",
            name,
        ])
    };
    assert_eq!(
        v6("alpha"),
        "fd00:79::2",
        "sluice's v6 IPAM: gateway ::1, then ::2"
    );
    assert_eq!(v6("beta"), "fd00:79::3");
    let addr = s.docker(&["exec", "alpha", "ip", "-6", "addr", "show", "eth0"]);
    assert!(addr.contains("inet6 fd00:79::2/64"), "{addr}");
    let route = s.docker(&["exec", "alpha", "ip", "-6", "route"]);
    assert!(route.contains("default via fd00:79::1"), "{route}");
    let ping6 =
        |from: &str, to: &str| s.exec_until(&["exec", from, "ping6", "-c", "1", "-W", "2", to], 15);
    let out = ping6("alpha", "beta");
    assert!(
        out.contains("fd00:79::3") && out.contains("1 packets received"),
        "{out}"
    );
    let out = ping6("beta", "alpha");
    assert!(out.contains("1 packets received"), "{out}");
    let out = ping6("alpha", "fd00:79::1");
    assert!(out.contains("1 packets received"), "the v6 gateway: {out}");
    let out = ping6("alpha", OUTSIDE6);
    assert!(
        out.contains("1 packets received"),
        "out through NAT66: {out}"
    );
    eprintln!(
        "dual stack: ping6 by name, gateway, outside: {:?}",
        t.elapsed()
    );

    s.run_published_web(img, "net1");
    let body = s.curl_from_outside(&format!("http://[{UPLINK6}]:18080/index.html"));
    assert_eq!(
        body.trim(),
        "published-hello",
        "-p on the uplink's v6 address"
    );
    let body = s.curl_from_outside(&format!("http://{UPLINK_IP}:18080/index.html"));
    assert_eq!(body.trim(), "published-hello", "and on its v4 address");
    // `-p [V6]:...` on the uplink's v6 address: published there, not on the v4 address.
    let on_v6 = format!("[{UPLINK6}]:18081:80");
    s.docker(&[
        "run",
        "-d",
        "--name",
        "web6",
        "--network",
        "net1",
        "-p",
        &on_v6,
        img,
        "sh",
        "-c",
        "echo only-v6 > /tmp/index.html && exec httpd -f -p 80 -h /tmp",
    ]);
    let body = s.curl_from_outside(&format!("http://[{UPLINK6}]:18081/index.html"));
    assert_eq!(body.trim(), "only-v6");
    let v4 = format!("http://{UPLINK_IP}:18081/index.html");
    let o =
        s.d.lab()
            .exec_output("out", &["curl", "-sS", "--max-time", "2", &v4])
            .unwrap();
    assert!(
        !o.status.success(),
        "a v6 host address is not published on v4"
    );

    // `--ipv6` with only a v6 `--subnet`: sluice's IPAM picks the v4 pool (as docker's does);
    // `--ipv6` with no subnet at all: a ULA /64 of sluice's default v6 pool as well.
    let (_, n6) = s.sluice_network("net6", Some("fd00:7a::/64"), &["--ipv6"]);
    let (_, n6b) = s.sluice_network("net6b", None, &["--ipv6"]);
    assert_eq!(n6["IPAM"]["Config"][1]["Subnet"], "fd00:7a::/64", "{n6}");
    assert!(
        n6["IPAM"]["Config"][0]["Subnet"]
            .as_str()
            .unwrap()
            .starts_with("172."),
        "{n6}"
    );
    assert_eq!(n6b["EnableIPv6"], true, "{n6b}");
    assert_eq!(
        n6b["IPAM"]["Config"][1]["Subnet"], "fd00:5c1c:e::/64",
        "{n6b}"
    );
    s.run_sleeper("solo", "net6", img);
    s.docker(&["network", "connect", "net6b", "solo"]);
    let addr = s.docker(&["exec", "solo", "ip", "-6", "addr"]);
    assert!(
        addr.contains("inet6 fd00:7a::2/64") && addr.contains("inet6 fd00:5c1c:e::2/64"),
        "{addr}"
    );
    for gw in ["fd00:7a::1", "fd00:5c1c:e::1", OUTSIDE6] {
        let out = ping6("solo", gw);
        assert!(out.contains("1 packets received"), "{gw}: {out}");
    }

    s.remove_all(&["net1", "net6", "net6b"]);
    s.finish("fd00");
    eprintln!("test total: {:?}", t.elapsed());
}

/// `docker network create -d sluice --ipam-driver sluice -o driver=overlay` on a dockerd whose
/// sluiced has a cluster store (one etcd member): the network is global (host 2's sluiced,
/// which no dockerd knows, lists it as an overlay), a container on it and an endpoint that
/// host 2's CLI connects get distinct addresses from the cluster-wide reservation and ping each
/// other across the VXLAN underlay; once both leave and `docker network rm` ran, the network is
/// gone from both hosts and nothing of the test is left.
#[test]
fn docker_overlay_network_spans_cluster_hosts() {
    let Some(bin) = cluster_bin_dir() else { return };
    let t = Instant::now();
    let (mut s, sock2) = Stack::clustered(&bin);
    eventually("both hosts registered", Duration::from_secs(30), || {
        etcd_hosts(s.d.lab(), ETCD) == Some(2)
    });
    eprintln!("dockerd, etcd and two sluiced up: {:?}", t.elapsed());
    let img = s.d.import_busybox().unwrap();
    let (id, net) = s.sluice_network("ovnet", Some("10.79.0.0/24"), &["-o", "driver=overlay"]);
    assert_eq!(net["Driver"], "overlay", "{net}");
    let name = net["Name"].as_str().unwrap().to_string();
    // Host 2 follows the store: the network, an overlay with docker's subnet and label.
    let on_2 = |args: &[&str]| sluice_ok(&bin, &sock2, args);
    eventually("the network on host 2", Duration::from_secs(10), || {
        on_2(&["network", "ls", "--format", "{{.Name}}"])
            .lines()
            .any(|l| l == name)
    });
    let net2: serde_json::Value =
        serde_json::from_str(&on_2(&["network", "inspect", &name])).unwrap();
    let net2 = &net2[0];
    assert_eq!(net2["Driver"], "overlay", "{net2}");
    assert_eq!(net2["IPAM"]["Config"][0]["Subnet"], "10.79.0.0/24");
    assert_eq!(net2["Labels"]["com.docker.network.id"], id.as_str());

    s.run_sleeper("c1", "ovnet", img);
    let ip1 = s.ip_on("c1", "ovnet");
    s.d.lab_mut().add_ns("b1").unwrap();
    let path = format!("/run/netns/{}", s.d.lab().ns_name("b1").unwrap());
    on_2(&["network", "connect", "--name", "bep", &name, &path]);
    let ep2 =
        s.d.lab()
            .exec("b1", &["ip", "-4", "-o", "addr", "show", "eth0"]);
    let ep2 = ep2.unwrap();
    let cidr = ep2.split_whitespace().nth(3).expect("an address");
    let ip2 = cidr.split('/').next().unwrap().to_string();
    assert!(
        ip1.starts_with("10.79.0.") && ip2.starts_with("10.79.0."),
        "{ip1} {ip2}"
    );
    assert_ne!(ip1, ip2, "one address per endpoint across the cluster");
    let step = Instant::now();
    let out = s.exec_until(&["exec", "c1", "ping", "-c", "1", "-W", "2", &ip2], 15);
    assert!(out.contains("1 packets received"), "{out}");
    let ip1v: std::net::Ipv4Addr = ip1.parse().unwrap();
    s.d.lab()
        .wait_ping("b1", ip1v, Duration::from_secs(10))
        .unwrap();
    eprintln!("ping across hosts both ways: {:?}", step.elapsed());
    // A second container after host 2's endpoint: docker's IPAM (sluice's) skips what the
    // cluster holds.
    s.run_sleeper("c2", "ovnet", img);
    let ip3 = s.ip_on("c2", "ovnet");
    assert!(ip3 != ip1 && ip3 != ip2, "{ip1} {ip2} {ip3}");

    let out = s.exec_until(&["exec", "c2", "ping", "-c", "1", "-W", "2", &ip2], 10);
    assert!(out.contains("1 packets received"), "{out}");

    // `docker network rm` while host 2 has an endpoint: sluice refuses (the overlay stays on
    // both hosts) but dockerd drops its network anyway (it ignores a remote driver's
    // DeleteNetwork error); `sluice network rm` removes the overlay once its endpoints left.
    s.remove_all(&["ovnet"]);
    let listed = |sock: &Path| {
        sluice_ok(&bin, sock, &["network", "ls", "--format", "{{.Name}}"])
            .lines()
            .any(|l| l == name)
    };
    assert!(listed(&s.socket()) && listed(&sock2), "the overlay stays");
    assert!(s.log().contains("has active endpoints on hosts 192.0.2.2"));
    on_2(&["network", "disconnect", &name, "bep"]);
    sluice_ok(&bin, &s.socket(), &["network", "rm", &name]);
    eventually(
        "the network gone from host 2",
        Duration::from_secs(10),
        || !listed(&sock2),
    );
    assert_eq!(s.sluice_json(&["ps", "-o", "json"]), serde_json::json!([]));
    s.finish("10.79.");
    eprintln!("test total: {:?}", t.elapsed());
}

/// Two hosts of a cluster (one etcd member), each with a dockerd of its own and its sluiced
/// with `--docker-plugin`: `docker network create -d sluice --ipam-driver sluice -o
/// overlay=shared --subnet S ovnet` on both makes ONE overlay `shared` (the second host joins
/// it; another subnet is refused, naming both), which the second host still finds after a
/// restart of its sluiced; a container on each host, distinct addresses, pings across the
/// underlay both ways; `docker network rm` on the first host leaves the overlay to the second
/// host's docker network, the one on the second host removes it from the cluster; nothing of
/// the test is left.
#[test]
fn docker_hosts_share_one_overlay_network() {
    let Some(bin) = cluster_bin_dir() else { return };
    let t = Instant::now();
    let a = Stack::cluster_member(&bin, "dsa", 0, None);
    let mut b = Stack::cluster_member(&bin, "dsb", 1, Some(a.d.lab()));
    eventually("both hosts registered", Duration::from_secs(30), || {
        etcd_hosts(a.d.lab(), ETCD) == Some(2)
    });
    eprintln!("two dockerds, etcd and two sluiced up: {:?}", t.elapsed());
    let create = |s: &Stack, subnet: &str, name: &str| {
        let shared = ["-o", "overlay=shared", "--subnet", subnet, name];
        s.d.docker_unchecked(&[&CREATE_NETWORK[..], &shared[..]].concat())
            .unwrap()
    };
    assert!(create(&a, "10.78.0.0/24", "ovnet").status.success());
    eventually("the overlay on host 2", Duration::from_secs(10), || {
        b.sluice(&["network", "inspect", "shared"]).status.success()
    });
    let refused = create(&b, "10.77.0.0/24", "ovbad");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && why.contains("10.78.0.0/24") && why.contains("10.77.0.0/24"),
        "{why}"
    );
    let made = create(&b, "10.78.0.0/24", "ovnet");
    assert!(made.status.success(), "{made:?}\nsluiced: {}", b.log());
    // One overlay, `shared`, on both hosts: no `docker-ID` network of either docker.
    let overlays = |s: &Stack| {
        let net = &s.sluice_json(&["network", "inspect", "shared"])[0];
        assert_eq!(net["IPAM"]["Config"][0]["Subnet"], "10.78.0.0/24", "{net}");
        let ls = s.sluice(&["network", "ls", "--format", "{{.Name}}"]);
        let names = String::from_utf8_lossy(&ls.stdout).into_owned();
        assert!(!names.contains("docker-"), "{names}");
        (net["Driver"].clone(), net["Options"]["vni"].clone())
    };
    assert_eq!(overlays(&a), overlays(&b));
    assert_eq!(overlays(&a).0, "overlay");
    // docker's id -> overlay map is the plugin's own (libnetwork's calls carry only the id).
    b.stop_sluiced();
    b.launch();

    let (img_a, img_b) = (a.d.import_busybox().unwrap(), b.d.import_busybox().unwrap());
    a.run_sleeper("c1", "ovnet", img_a);
    b.run_sleeper("c2", "ovnet", img_b);
    let (ip1, ip2) = (a.ip_on("c1", "ovnet"), b.ip_on("c2", "ovnet"));
    assert!(
        ip1.starts_with("10.78.0.") && ip2.starts_with("10.78.0.") && ip1 != ip2,
        "{ip1} {ip2}"
    );
    let step = Instant::now();
    for (s, c, ip) in [(&a, "c1", &ip2), (&b, "c2", &ip1)] {
        let out = s.exec_until(&["exec", c, "ping", "-c", "1", "-W", "2", ip], 15);
        assert!(out.contains("1 packets received"), "{out}");
    }
    eprintln!("ping across hosts both ways: {:?}", step.elapsed());

    a.docker(&["rm", "-f", "c1"]);
    b.docker(&["rm", "-f", "c2"]);
    a.docker(&["network", "rm", "ovnet"]);
    let listed = |s: &Stack| s.sluice(&["network", "inspect", "shared"]).status.success();
    // Not idle while a docker network uses it: neither for docker nor for `network prune`.
    assert!(a.sluice(&["network", "prune", "-f"]).status.success());
    assert!(
        listed(&a) && listed(&b),
        "host 2's docker network still uses it"
    );
    assert!(!a.ipam_file().contains("shared"), "{}", a.ipam_file());
    b.run_sleeper("c3", "ovnet", img_b);
    assert!(b.ip_on("c3", "ovnet").starts_with("10.78.0."));
    b.docker(&["rm", "-f", "c3"]);
    b.docker(&["network", "rm", "ovnet"]);
    eventually(
        "the overlay gone from both hosts",
        Duration::from_secs(10),
        || !listed(&a) && !listed(&b),
    );
    for prefix in ["/sluice/v1/networks/", "/sluice/v1/users/"] {
        assert_eq!(etcd_keys(a.d.lab(), ETCD, prefix), Some(0), "{prefix}");
    }
    assert!(!b.ipam_file().contains("shared"), "{}", b.ipam_file());
    b.finish("10.7");
    a.finish("10.7");
    eprintln!("test total: {:?}", t.elapsed());
}
