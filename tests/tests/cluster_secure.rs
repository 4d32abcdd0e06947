//! The cluster store as operators deploy it, and what overlay endpoints get across hosts
//! beyond their names: one etcd member serving only TLS (a CA, server and client certificates
//! made by the test with openssl, `--client-cert-auth`) with user authentication on and short
//! tokens, in namespace `ul` on the underlay bridge; two hosts (`h1`, `h2`, each its own
//! sluiced with `--cluster-store-opt kv.cacertfile=...,kv.certfile=...,kv.keyfile=...` and
//! `kv.username=sluice,kv.passwordfile=...`, a user whose role may use `/sluice/` only). On a dual-stack overlay (`--ipv6`, a v4 and a v6
//! `--subnet`) an endpoint on each host: their v6 addresses are reserved in etcd, they ping6
//! each other (neighbour solicitation for the other host's endpoint answered locally), and
//! each resolves the other's name and `--alias`es, A and AAAA, through its embedded DNS. The
//! client alone, in the underlay: refused without the CA, with another CA, without a user or
//! with a wrong password; a token that expired is renewed. Needs root, etcd, openssl and the
//! release binaries (see tests/tests/daemon.rs).

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sluice_control::cluster::etcd::Etcd;
use sluice_control::cluster::security::StoreOptions;
use sluice_lab::lab::Lab;
use sluice_tests::cli::{
    cluster_host, cluster_sluiced, cluster_underlay, daemon_lab, eventually, host_socket,
    one_member_etcd, sluice, sluice_ok,
};

/// Where the etcd member listens (on the underlay bridge, in namespace `ul`).
const ETCD: &str = "10.99.0.100:2379";
const PASSWORD: &str = "s3cret-test";

/// The CA, the member's certificate (for its address; also a client one, as etcd's gateway
/// dials the member with it) and a client certificate without a CN (etcd's gateway refuses
/// certificates with one while authentication is on), as PEM files in `dir`; also a client
/// certificate with a CN and a second CA that signed none of them.
fn certificates(dir: &Path) {
    let ip = ETCD.split(':').next().unwrap();
    let script = format!(
        r#"set -e
cd {dir}
key() {{ openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }}
for ca in ca other-ca; do
  key $ca.key
  openssl req -x509 -new -key $ca.key -out $ca.pem -days 1 -subj "/CN=sluice test $ca" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
done
sign() {{
  key $1.key
  openssl req -new -key $1.key -out $1.csr -subj "$2"
  printf '%s\n' "$3" > $1.ext
  openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
    -out $1.pem -extfile $1.ext 2>/dev/null
}}
sign server /CN=etcd "subjectAltName=IP:{ip}
extendedKeyUsage=serverAuth,clientAuth"
sign client /O=sluice/OU=host "extendedKeyUsage=clientAuth"
sign named /CN=sluice-host "extendedKeyUsage=clientAuth"
printf '%s\n' '{PASSWORD}' > password
"#,
        dir = dir.display()
    );
    let o = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(o.status.success(), "openssl: {o:?}");
}

fn pem(lab: &Lab, name: &str) -> PathBuf {
    lab.dir().join(name)
}

/// The `--cluster-store-opt`s of a host: TLS with the client certificate, and the user.
fn store_opts(lab: &Lab) -> [String; 2] {
    [
        format!(
            "kv.cacertfile={},kv.certfile={},kv.keyfile={}",
            pem(lab, "ca.pem").display(),
            pem(lab, "client.pem").display(),
            pem(lab, "client.key").display()
        ),
        format!(
            "kv.username=sluice,kv.passwordfile={}",
            pem(lab, "password").display()
        ),
    ]
}

/// etcdctl in `ul` over TLS with the client certificate (and `--user` when given).
fn etcdctl(lab: &Lab, user: bool, args: &[&str]) -> Output {
    let (ca, cert, key) = (
        pem(lab, "ca.pem"),
        pem(lab, "client.pem"),
        pem(lab, "client.key"),
    );
    let endpoints = format!("https://{ETCD}");
    let user_arg = format!("--user=root:{PASSWORD}");
    let mut full = vec![
        "env",
        "ETCDCTL_API=3",
        "etcdctl",
        "--dial-timeout=2s",
        "--endpoints",
        &endpoints,
        "--cacert",
        ca.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    if user {
        full.push(&user_arg);
    }
    full.extend(args);
    lab.exec_output("ul", &full).unwrap()
}

/// The underlay with the etcd member: TLS only, client certificates required, root with a
/// password, tokens that expire after 2 s of disuse.
fn secure_etcd(lab: &mut Lab) {
    cluster_underlay(lab);
    certificates(lab.dir());
    let url = format!("https://{ETCD}");
    let tls: Vec<std::ffi::OsString> = vec![
        "--cert-file".into(),
        pem(lab, "server.pem").into(),
        "--key-file".into(),
        pem(lab, "server.key").into(),
        "--trusted-ca-file".into(),
        pem(lab, "ca.pem").into(),
        "--client-cert-auth".into(),
        "--auth-token".into(),
        "simple".into(),
        "--auth-token-ttl".into(),
        "2".into(),
    ];
    let args = one_member_etcd(lab, &url, &tls);
    lab.spawn_os("ul", &args, "etcd").unwrap();
    eventually("etcd answers over TLS", Duration::from_secs(20), || {
        etcdctl(lab, false, &["endpoint", "health"])
            .status
            .success()
    });
    // sluice's user may read and write `/sluice/` only (the setup docs/overlay.md shows).
    let (root, user) = (format!("root:{PASSWORD}"), format!("sluice:{PASSWORD}"));
    let grant = [
        "role",
        "grant-permission",
        "sluice",
        "--prefix=true",
        "readwrite",
        "/sluice/",
    ];
    for args in [
        &["user", "add", &root][..],
        &["user", "add", &user],
        &["role", "add", "sluice"],
        &grant,
        &["user", "grant-role", "sluice", "sluice"],
        &["auth", "enable"],
    ] {
        let o = etcdctl(lab, false, args);
        assert!(o.status.success(), "etcdctl {args:?}: {o:?}");
    }
    let o = etcdctl(lab, false, &["get", "/x"]);
    assert!(!o.status.success(), "auth is on: {o:?}");
}

fn vtep(i: usize) -> String {
    format!("192.0.2.{}", i + 1)
}

/// Host `i` (`h1`, `h2`) on the underlay, running sluiced against the secure store; its socket.
fn host(lab: &mut Lab, bin: &Path, i: usize) -> PathBuf {
    let h = cluster_host(lab, i);
    let sock = host_socket(lab, &h);
    let [tls, user] = store_opts(lab);
    let extra = [
        "--cluster-store-opt".to_string(),
        tls,
        "--cluster-store-opt".to_string(),
        user,
    ];
    let store = format!("etcd://{ETCD}");
    let args = cluster_sluiced(bin, lab, &h, (&vtep(i), &store, 3), &extra);
    lab.spawn_os(&h, &args, &h).unwrap();
    sock
}

/// Endpoint `name`'s entry in `ov6`'s inspect on `sock`'s host.
fn entry(bin: &Path, sock: &Path, name: &str) -> serde_json::Value {
    let out = sluice_ok(bin, sock, &["network", "inspect", "ov6"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["Containers"]
        .as_object()
        .unwrap()
        .values()
        .find(|c| c["Name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in {out}"))
        .clone()
}

/// Runs `cmd` in `ns` with `resolv` bind-mounted over /etc/resolv.conf (as a runtime does).
fn with_resolv(lab: &Lab, ns: &str, resolv: &str, cmd: &str) -> Output {
    let script = format!("mount --bind {resolv} /etc/resolv.conf && {cmd}");
    lab.exec_output(ns, &["unshare", "-m", "sh", "-c", &script])
        .unwrap()
}

#[test]
fn dual_stack_overlay_with_aliases_over_a_tls_etcd_with_users() {
    let Some((bin, mut lab)) = daemon_lab("cls") else {
        return;
    };
    let began = Instant::now();
    secure_etcd(&mut lab);
    client_refusals_and_token_renewal(&lab);
    let socks: Vec<PathBuf> = (0..2).map(|i| host(&mut lab, &bin, i)).collect();
    eventually("both hosts registered", Duration::from_secs(30), || {
        let o = etcdctl(
            &lab,
            true,
            &["get", "--prefix", "--keys-only", "/sluice/v1/hosts/"],
        );
        String::from_utf8_lossy(&o.stdout)
            .matches("/sluice/v1/hosts/")
            .count()
            == 2
    });
    sluice_ok(
        &bin,
        &socks[0],
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--ipv6",
            "--subnet",
            "10.40.0.0/24",
            "--subnet",
            "fd00:40::/64",
            "ov6",
        ],
    );
    let eps = [("a1", "web", "www"), ("a2", "db", "store")];
    for (i, (ns, name, alias)) in eps.iter().enumerate() {
        lab.add_ns(ns).unwrap();
        let path = format!("/run/netns/{}", lab.ns_name(ns).unwrap());
        let sock = &socks[i];
        eventually("ov6 on the host", Duration::from_secs(10), || {
            sluice(&bin, sock, &["network", "inspect", "ov6"])
                .status
                .success()
        });
        sluice_ok(
            &bin,
            sock,
            &[
                "network", "connect", "--name", name, "--alias", alias, "ov6", &path,
            ],
        );
    }
    let v6_of = |i: usize| -> Ipv6Addr {
        let e = entry(&bin, &socks[i], eps[i].1);
        let cidr = e["IPv6Address"].as_str().unwrap().to_string();
        cidr.split('/').next().unwrap().parse().unwrap()
    };
    let (v6a, v6b) = (v6_of(0), v6_of(1));
    assert_ne!(v6a, v6b, "v6 addresses are reserved cluster-wide");
    let keys = etcdctl(
        &lab,
        true,
        &["get", "--prefix", "--keys-only", "/sluice/v1/ipam/ov6/"],
    );
    let keys = String::from_utf8_lossy(&keys.stdout).into_owned();
    for ip in [v6a, v6b] {
        assert!(
            keys.contains(&format!("/sluice/v1/ipam/ov6/{ip}")),
            "{keys}"
        );
    }
    eventually(
        "h1 lists h2's endpoint with its v6 address",
        Duration::from_secs(10),
        || {
            let out = sluice_ok(&bin, &socks[0], &["network", "inspect", "ov6"]);
            out.contains(&format!("{v6b}/64"))
        },
    );
    lab.wait_ping6("a1", v6b, Duration::from_secs(10)).unwrap();
    lab.wait_ping6("a2", v6a, Duration::from_secs(10)).unwrap();
    let ip_b = entry(&bin, &socks[1], "db")["IPv4Address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    bulk_tcp(&mut lab, &ip_b);
    let neigh = lab
        .ip("a1", &["-6", "neigh", "show", &v6b.to_string()])
        .unwrap();
    let mac_b = entry(&bin, &socks[1], "db")["MacAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        neigh.contains(&mac_b),
        "a1 learned db's MAC: {neigh} (want {mac_b})"
    );
    for (i, (ns, _, _)) in eps.iter().enumerate() {
        let resolv = entry(&bin, &socks[i], eps[i].1)["ResolvConfPath"]
            .as_str()
            .unwrap()
            .to_string();
        let (other, alias) = (eps[1 - i].1, eps[1 - i].2);
        for name in [other, alias, &format!("{other}.ov6")[..]] {
            for family in ["-4", "-6"] {
                let cmd = format!("ping {family} -c 1 -W 2 -q {name}");
                eventually(
                    &format!("{ns} pings {name} ({family}) across hosts"),
                    Duration::from_secs(10),
                    || with_resolv(&lab, ns, &resolv, &cmd).status.success(),
                );
            }
        }
    }
    for (i, (_, name, _)) in eps.iter().enumerate() {
        sluice_ok(&bin, &socks[i], &["network", "disconnect", "ov6", name]);
    }
    sluice_ok(&bin, &socks[1], &["network", "rm", "ov6"]);
    let left = etcdctl(
        &lab,
        true,
        &["get", "--prefix", "--keys-only", "/sluice/v1/ipam/"],
    );
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "{left:?}"
    );
    eprintln!("secure cluster test took {:?}", began.elapsed());
}

/// 3 MB of TCP from `a1` to `a2` (at `ip_b`) across the hosts: full-size frames from an
/// endpoint whose interface has the overlay's MTU (1450) fit the underlay once wrapped.
fn bulk_tcp(lab: &mut Lab, ip_b: &str) {
    const BYTES: usize = 3_000_000;
    let got = lab.dir().join("received");
    let listen = format!(
        "socat -u TCP4-LISTEN:5301,reuseaddr - | wc -c > {}",
        got.display()
    );
    let pid = lab.spawn("a2", &["sh", "-c", &listen], "socat").unwrap();
    lab.wait_listen("a2", 5301, Duration::from_secs(5)).unwrap();
    let send = format!("head -c {BYTES} /dev/zero | timeout 20 socat -u - TCP4:{ip_b}:5301");
    let o = lab.exec_output("a1", &["sh", "-c", &send]).unwrap();
    assert!(o.status.success(), "bulk TCP across hosts: {o:?}");
    eventually("the receiver has it all", Duration::from_secs(5), || {
        !lab.alive(pid)
    });
    let n = std::fs::read_to_string(&got).unwrap_or_default();
    assert_eq!(n.trim(), BYTES.to_string(), "bytes received");
}

/// The client alone, in the underlay: what the member refuses, and a user's token renewed
/// once it expired.
fn client_refusals_and_token_renewal(lab: &Lab) {
    let ns = format!("/run/netns/{}", lab.ns_name("ul").unwrap());
    let [tls, user] = store_opts(lab);
    let other_ca = format!("kv.cacertfile={}", pem(lab, "other-ca.pem").display());
    let wrong_pw = pem(lab, "wrong-password");
    std::fs::write(&wrong_pw, "nope\n").unwrap();
    let wrong_user = format!("kv.username=sluice,kv.passwordfile={}", wrong_pw.display());
    let named = format!(
        "kv.cacertfile={},kv.certfile={},kv.keyfile={}",
        pem(lab, "ca.pem").display(),
        pem(lab, "named.pem").display(),
        pem(lab, "named.key").display()
    );
    let cases: Vec<(&str, Vec<String>, Option<&str>)> = vec![
        (
            "a client certificate with a CN",
            vec![named, user.clone()],
            Some("without a CN"),
        ),
        ("plain TCP to a TLS member", vec![], None),
        (
            "a CA that did not sign the member",
            vec![other_ca],
            Some("TLS"),
        ),
        ("no user", vec![tls.clone()], Some("refused")),
        (
            "a wrong password",
            vec![tls.clone(), wrong_user],
            Some("authentication failed"),
        ),
    ];
    let good = vec![tls, user];
    sluice_tests::netns::in_ns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = |opts: &[String]| {
                let o = StoreOptions::parse(opts).unwrap();
                Etcd::from_url(&format!("etcd://{ETCD}"))
                    .unwrap()
                    .with_options(&o)
                    .unwrap()
            };
            for (what, opts, says) in &cases {
                let err = client(opts)
                    .put("/sluice/v1/probe", b"x", 0)
                    .await
                    .expect_err(what)
                    .to_string();
                if let Some(says) = says {
                    assert!(err.contains(says), "{what}: {err}");
                }
            }
            let etcd = client(&good);
            let outside = etcd.put("/elsewhere", b"1", 0).await.unwrap_err();
            assert!(
                outside.to_string().contains("permission denied"),
                "{outside}"
            );
            etcd.put("/sluice/v1/probe", b"1", 0).await.unwrap();
            // Simple tokens expire after 2 s of disuse: the next call takes a new one.
            tokio::time::sleep(Duration::from_secs(4)).await;
            etcd.put("/sluice/v1/probe", b"2", 0).await.unwrap();
            let (kvs, _) = etcd.range("/sluice/v1/probe").await.unwrap();
            assert_eq!(kvs[0].value, b"2");
            etcd.delete_all(&["/sluice/v1/probe".to_string()])
                .await
                .unwrap();
        });
    });
}
