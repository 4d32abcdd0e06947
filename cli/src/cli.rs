//! The `docker network`-like verbs of the `sluice` CLI: each parses its flags into the API's
//! types (so a bad flag fails here, before anything is sent), calls the daemon and prints a
//! table, or JSON with `--output json`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sluice_api::api::{
    ConntrackView, DisconnectRequest, EndpointView, FdbView, StatsView, DEFAULT_SOCKET,
};
use sluice_api::client::Client;
use sluice_api::files::{parse_add_host, NameOptions};
use sluice_api::model::{
    Driver, EndpointSpec, NetworkInspect, NetworkOptions, NetworkSpec, Sandbox, UplinkSpec,
};
use sluice_api::validate;
use sluice_dataplane::config::Ipv4Cidr;
use sluice_dataplane::wire::MacAddr;

use crate::addressing::{addressing, ip6};

/// Where to find the daemon.
#[derive(clap::Args, Debug, Clone)]
pub struct Conn {
    /// The daemon's API socket.
    #[arg(long, global = true, env = "SLUICE_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

impl Conn {
    /// A client of the daemon.
    pub(crate) fn client(&self) -> Client {
        Client::new(&self.socket)
    }
}

/// Output format of listings.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns.
    #[default]
    Table,
    /// The API's JSON.
    Json,
}

/// `sluice network ...`.
#[derive(clap::Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network.
    Create(Box<CreateArgs>),
    /// List networks.
    #[command(alias = "list")]
    Ls(crate::netcmd::LsArgs),
    /// Show networks in docker network inspect's JSON (or a --format template).
    Inspect(crate::netcmd::InspectArgs),
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        /// Network names or ids.
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove every user network without endpoints (or those --filter picks).
    Prune(crate::netcmd::PruneArgs),
    /// Connect a network namespace to a network.
    Connect(Box<ConnectArgs>),
    /// Disconnect an endpoint from a network.
    Disconnect {
        /// The network.
        network: String,
        /// The endpoint's name or id.
        endpoint: String,
        /// docker's flag for an endpoint whose sandbox is gone: sluice releases such an
        /// endpoint with or without it (a missing interface is not an error).
        #[arg(long, short)]
        force: bool,
    },
}

/// `sluice network create`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// bridge, macvlan, overlay, none or host.
    #[arg(long, short, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR form, one IPv4 and one IPv6 (default: the next free 172.18.0.0/16, ...).
    #[arg(long)]
    subnet: Vec<String>,
    /// Gateway address, one per family (default: the subnet's first address).
    #[arg(long)]
    gateway: Vec<String>,
    /// Allocate dynamic addresses from this part of the subnet, one per family.
    #[arg(long)]
    ip_range: Vec<String>,
    /// Dual stack: endpoints get an IPv6 address too (default v6 subnet: a ULA /64).
    #[arg(long)]
    ipv6: bool,
    /// IPv4 on the network; `--ipv4=false` with `--ipv6`: an IPv6-only network.
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    ipv4: bool,
    /// Reserve an address: NAME=IP (repeatable).
    #[arg(long)]
    aux_address: Vec<String>,
    /// Do not route the network to the outside.
    #[arg(long)]
    internal: bool,
    /// Driver option KEY=VALUE: mtu, icc, vlan, parent (repeatable).
    #[arg(long, short)]
    opt: Vec<String>,
    /// Label KEY=VALUE (repeatable).
    #[arg(long)]
    label: Vec<String>,
    /// The network's own uplink interface (default: the daemon's --uplink).
    #[arg(long)]
    uplink: Option<String>,
    /// sluice's address on the network's own uplink, CIDR.
    #[arg(long)]
    uplink_ip: Option<String>,
    /// The next hop on the network's own uplink.
    #[arg(long)]
    uplink_gateway: Option<String>,
    /// sluice's v6 address on the network's own uplink, CIDR (NAT66, v6 published ports).
    #[arg(long)]
    uplink_ip6: Option<String>,
    /// The v6 next hop on the network's own uplink.
    #[arg(long)]
    uplink_gateway6: Option<String>,
    /// The network's name.
    name: String,
}

/// `sluice network connect`.
#[derive(clap::Args, Debug)]
pub struct ConnectArgs {
    /// Static address.
    #[arg(long)]
    ip: Option<String>,
    /// Static IPv6 address on a dual-stack network.
    #[arg(long)]
    ip6: Option<String>,
    /// Static MAC.
    #[arg(long)]
    mac: Option<String>,
    /// Extra name on the network (repeatable).
    #[arg(long)]
    alias: Vec<String>,
    /// Legacy link NAME[:ALIAS] (repeatable).
    #[arg(long)]
    link: Vec<String>,
    /// Publish [[HOSTIP:]HPORT[-HPORT]:]CPORT[-CPORT][/tcp|udp] (repeatable); without a host
    /// port the daemon picks one from its --host-port-range (see `sluice port`).
    #[arg(long, short)]
    publish: Vec<String>,
    /// Publish every --expose port on a host port the daemon picks.
    #[arg(long, short = 'P')]
    publish_all: bool,
    /// A port the endpoint serves, CPORT[-CPORT][/tcp|udp] (repeatable): -P publishes it.
    #[arg(long)]
    expose: Vec<String>,
    /// The endpoint's name (default: the namespace's file name, or pid-N).
    #[arg(long)]
    name: Option<String>,
    /// The interface name inside the namespace (default: eth0, eth1, ... in order).
    #[arg(long)]
    ifname: Option<String>,
    /// Host name in the endpoint's hosts file (default: its name).
    #[arg(long)]
    hostname: Option<String>,
    /// Resolver for the endpoint (repeatable; the embedded resolver forwards to it).
    #[arg(long)]
    dns: Vec<String>,
    /// DNS search domain (repeatable).
    #[arg(long)]
    dns_search: Vec<String>,
    /// resolv.conf option, e.g. ndots:2 (repeatable).
    #[arg(long)]
    dns_option: Vec<String>,
    /// Extra hosts entry NAME:IP (repeatable).
    #[arg(long)]
    add_host: Vec<String>,
    /// The network.
    network: String,
    /// A network namespace file (/run/netns/NAME, /proc/PID/ns/net), a name under
    /// /run/netns, or a process id.
    sandbox: String,
}

pub(crate) fn block<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the CLI's I/O runtime")?
        .block_on(f)
}

fn key_value(flag: &str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("{flag} {s:?} is not KEY=VALUE"),
    }
}

fn ip(flag: &str, s: &str) -> Result<Ipv4Addr> {
    s.parse()
        .map_err(|_| anyhow::anyhow!("{flag} {s:?} is not an IPv4 address"))
}

fn cidr(flag: &str, s: &str) -> Result<Ipv4Cidr> {
    s.parse()
        .map_err(|_| anyhow::anyhow!("{flag} {s:?} is not an IPv4 CIDR (like 10.1.0.0/16)"))
}

/// The spec `network create` sends, or the flag that is wrong.
pub fn network_spec(a: &CreateArgs) -> Result<NetworkSpec> {
    let driver: Driver = a.driver.parse()?;
    let mut options = NetworkOptions::default();
    for o in &a.opt {
        options.set(o)?;
    }
    let (mut aux_addresses, mut aux_addresses6) = (BTreeMap::new(), BTreeMap::new());
    for x in &a.aux_address {
        let (k, v) = key_value("--aux-address", x)?;
        match v.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => {
                aux_addresses6.insert(k, v6);
            }
            Err(_) => {
                aux_addresses.insert(k, ip("--aux-address", &v)?);
            }
        }
    }
    let mut labels = BTreeMap::new();
    for l in &a.label {
        let (k, v) = key_value("--label", l)?;
        labels.insert(k, v);
    }
    let ad = addressing(&a.subnet, &a.gateway, &a.ip_range)?;
    let spec = NetworkSpec {
        name: a.name.clone(),
        driver,
        subnet: ad.subnet,
        gateway: ad.gateway,
        ip_range: ad.ip_range,
        enable_ipv6: a.ipv6,
        enable_ipv4: a.ipv4,
        subnet6: ad.subnet6,
        gateway6: ad.gateway6,
        ip_range6: ad.ip_range6,
        aux_addresses,
        aux_addresses6,
        internal: a.internal,
        options,
        labels,
        uplink: uplink_arg(a)?,
    };
    validate::network_spec(&spec)?;
    Ok(spec)
}

/// `--uplink IF --uplink-ip CIDR [--uplink-gateway IP] [--uplink-ip6 CIDR
/// [--uplink-gateway6 IP]]`, all or nothing.
fn uplink_arg(a: &CreateArgs) -> Result<Option<UplinkSpec>> {
    let Some(name) = &a.uplink else {
        if a.uplink_ip.is_some()
            || a.uplink_gateway.is_some()
            || a.uplink_ip6.is_some()
            || a.uplink_gateway6.is_some()
        {
            bail!(
                "--uplink-ip, --uplink-gateway, --uplink-ip6 and --uplink-gateway6 need --uplink"
            );
        }
        return Ok(None);
    };
    let ip = a
        .uplink_ip
        .as_deref()
        .context("--uplink needs --uplink-ip (sluice's address on it, like 203.0.113.2/24)")?;
    Ok(Some(UplinkSpec {
        name: name.clone(),
        ip: cidr("--uplink-ip", ip)?,
        gateway: a
            .uplink_gateway
            .as_deref()
            .map(|g| self::ip("--uplink-gateway", g))
            .transpose()?,
        mac: None,
        ip6: a
            .uplink_ip6
            .as_deref()
            .map(|c| {
                c.parse()
                    .map_err(|e| anyhow::anyhow!("--uplink-ip6 {c:?}: {e}"))
            })
            .transpose()?,
        gateway6: a
            .uplink_gateway6
            .as_deref()
            .map(|g| {
                g.parse()
                    .map_err(|_| anyhow::anyhow!("--uplink-gateway6 {g:?} is not an IPv6 address"))
            })
            .transpose()?,
    }))
}

/// The sandbox a `connect` argument names, and the endpoint name it suggests.
pub fn sandbox_arg(s: &str) -> Result<(Sandbox, String)> {
    if let Ok(pid) = s.parse::<u32>() {
        return Ok((Sandbox::Pid(pid), format!("pid-{pid}")));
    }
    let path = if s.contains('/') {
        PathBuf::from(s)
    } else {
        PathBuf::from("/run/netns").join(s)
    };
    if !path.exists() {
        bail!(
            "network namespace {} does not exist (give a path, a name under /run/netns, or a pid)",
            path.display()
        );
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n != "net")
        .unwrap_or_else(|| "endpoint".to_string());
    Ok((Sandbox::Netns(path), name))
}

/// The spec `network connect` sends, or the flag that is wrong.
pub fn endpoint_spec(a: &ConnectArgs) -> Result<EndpointSpec> {
    let (sandbox, default_name) = sandbox_arg(&a.sandbox)?;
    let publish = crate::expose::publish(&a.publish, &a.expose, a.publish_all)?;
    let spec = EndpointSpec {
        network: a.network.clone(),
        sandbox,
        name: a.name.clone().unwrap_or(default_name),
        ip: a.ip.as_deref().map(|s| ip("--ip", s)).transpose()?,
        ip6: a.ip6.as_deref().map(|s| ip6("--ip6", s)).transpose()?,
        mac: a
            .mac
            .as_deref()
            .map(|s| {
                s.parse::<MacAddr>()
                    .map_err(|_| anyhow::anyhow!("--mac {s:?} is not a MAC address"))
            })
            .transpose()?,
        aliases: a.alias.clone(),
        links: a.link.clone(),
        publish,
        names: NameOptions {
            hostname: a.hostname.clone(),
            dns: a
                .dns
                .iter()
                .map(|d| ip("--dns", d))
                .collect::<Result<_>>()?,
            dns_search: a.dns_search.clone(),
            dns_options: a.dns_option.clone(),
            add_hosts: a
                .add_host
                .iter()
                .map(|h| parse_add_host(h))
                .collect::<Result<_, _>>()?,
        },
        ifname: a.ifname.clone(),
        placement: Default::default(),
    };
    validate::endpoint_spec(&spec)?;
    Ok(spec)
}

pub(crate) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints rows as aligned columns under a header.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", table(header, rows));
}

/// Rows as aligned columns under a header.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (wi, c) in w.iter_mut().zip(r) {
            *wi = (*wi).max(c.len());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let cells: Vec<&str> = cells.into_iter().take(w.len()).collect();
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}   ", width = w[i]));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// Runs `sluice network ...`.
pub fn network(conn: &Conn, cmd: NetworkCmd) -> Result<()> {
    let c = Client::new(&conn.socket);
    match cmd {
        NetworkCmd::Create(a) => {
            let spec = network_spec(&a)?;
            block(async {
                let v = c.post("/networks", &spec).await?;
                let n: NetworkInspect = serde_json::from_value(v)?;
                println!("{}", n.id);
                Ok(())
            })
        }
        NetworkCmd::Ls(a) => crate::netcmd::ls(&c, a),
        NetworkCmd::Inspect(a) => crate::netcmd::inspect(&c, a),
        NetworkCmd::Rm { networks } => crate::netcmd::rm(&c, networks),
        NetworkCmd::Prune(a) => crate::netcmd::prune(&c, a),
        NetworkCmd::Connect(a) => {
            let spec = endpoint_spec(&a)?;
            block(async {
                let v = c
                    .post(&format!("/networks/{}/connect", spec.network), &spec)
                    .await?;
                let e: EndpointView = serde_json::from_value(v)?;
                let v6 = e.ipv6.map(|a| format!(" {a}")).unwrap_or_default();
                println!("{} {} {} {}{v6}", e.name, e.ifname, e.ipv4, e.mac);
                Ok(())
            })
        }
        NetworkCmd::Disconnect {
            network, endpoint, ..
        } => block(async {
            c.post(
                &format!("/networks/{network}/disconnect"),
                &DisconnectRequest { endpoint },
            )
            .await?;
            Ok(())
        }),
    }
}

/// `sluice ps`.
pub fn ps(conn: &Conn, output: Output) -> Result<()> {
    listing(
        conn,
        "/endpoints",
        output,
        &[
            "ENDPOINT ID",
            "NAME",
            "NETWORK",
            "IPV4",
            "MAC",
            "IFACE",
            "PORTS",
            "IPV6",
        ],
        |e: &EndpointView| {
            vec![
                e.id[..12.min(e.id.len())].to_string(),
                e.name.clone(),
                e.network.clone(),
                e.ipv4.clone(),
                e.mac.clone(),
                e.ifname.clone(),
                e.ports.join(", "),
                e.ipv6.clone().unwrap_or_default(),
            ]
        },
    )
}

/// `sluice port [NAME]`: published ports, all or one endpoint's.
pub fn port(conn: &Conn, name: Option<String>, output: Output) -> Result<()> {
    let c = Client::new(&conn.socket);
    block(async {
        let eps: Vec<EndpointView> = c.get("/endpoints").await?;
        if let Some(n) = &name {
            if !eps
                .iter()
                .any(|e| &e.name == n || e.id.starts_with(n.as_str()))
            {
                bail!("no endpoint named {n}");
            }
        }
        let mine: Vec<&EndpointView> = eps
            .iter()
            .filter(|e| {
                name.as_ref()
                    .is_none_or(|n| &e.name == n || e.id.starts_with(n.as_str()))
            })
            .collect();
        if output == Output::Json {
            let m: BTreeMap<String, &Vec<String>> =
                mine.iter().map(|e| (e.name.clone(), &e.ports)).collect();
            return print_json(&m);
        }
        for e in mine {
            for p in &e.ports {
                match &name {
                    Some(_) => println!("{}", docker_port_line(p)),
                    None => println!("{}\t{}", e.name, p),
                }
            }
        }
        Ok(())
    })
}

/// docker port's form of a mapping: `80/tcp -> 0.0.0.0:8080`.
fn docker_port_line(ps_column: &str) -> String {
    match ps_column.split_once("->") {
        Some((host, container)) => format!("{container} -> {host}"),
        None => ps_column.to_string(),
    }
}

/// `sluice stats`.
pub fn stats(conn: &Conn, output: Output) -> Result<()> {
    let c = Client::new(&conn.socket);
    block(async {
        let s: StatsView = c.get("/stats").await?;
        if output == Output::Json {
            return print_json(&s);
        }
        print!("{}", crate::stats::render(&s));
        Ok(())
    })
}

/// A listing: `GET path`, printed as JSON or as a table with `header` and a row per item.
fn listing<T: serde::de::DeserializeOwned + serde::Serialize>(
    conn: &Conn,
    path: &str,
    output: Output,
    header: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> Result<()> {
    let c = Client::new(&conn.socket);
    block(async {
        let items: Vec<T> = c.get(path).await?;
        if output == Output::Json {
            return print_json(&items);
        }
        print_table(header, &items.iter().map(row).collect::<Vec<_>>());
        Ok(())
    })
}

/// `sluice conntrack ls`.
pub fn conntrack(conn: &Conn, output: Output) -> Result<()> {
    listing(
        conn,
        "/conntrack",
        output,
        &[
            "PROTO", "SRC", "DST", "REPLY", "STATE", "EXPIRES", "NETWORK",
        ],
        |r: &ConntrackView| {
            vec![
                r.protocol.clone(),
                r.src.clone(),
                r.dst.clone(),
                format!("{} -> {}", r.reply_src, r.reply_dst),
                r.state.clone(),
                r.expires_in_secs.to_string(),
                r.network.clone(),
            ]
        },
    )
}

/// `sluice fdb ls`.
pub fn fdb(conn: &Conn, output: Output) -> Result<()> {
    listing(
        conn,
        "/fdb",
        output,
        &["NETWORK", "VLAN", "MAC", "PORT", "ENDPOINT", "TYPE", "IDLE"],
        |r: &FdbView| {
            vec![
                r.network.clone(),
                r.vlan.to_string(),
                r.mac.clone(),
                r.port.clone(),
                r.endpoint.clone(),
                if r.is_static { "static" } else { "learned" }.to_string(),
                r.idle_secs.to_string(),
            ]
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[command(subcommand)]
        cmd: NetworkCmd,
    }

    fn create(args: &[&str]) -> Result<NetworkSpec> {
        let mut v = vec!["t", "create"];
        v.extend_from_slice(args);
        match T::try_parse_from(v)?.cmd {
            NetworkCmd::Create(a) => network_spec(&a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn create_flags_become_a_spec() {
        let s = create(&[
            "--subnet",
            "10.1.0.0/16",
            "--gateway",
            "10.1.0.254",
            "--ip-range",
            "10.1.1.0/24",
            "--aux-address",
            "r=10.1.0.9",
            "--aux-address",
            "r6=fd00:1::9",
            "--internal",
            "-o",
            "mtu=1400",
            "--opt",
            "icc=false",
            "--label",
            "a=b",
            "n1",
        ])
        .unwrap();
        assert_eq!(s.name, "n1");
        assert_eq!(s.subnet.unwrap().to_string(), "10.1.0.0/16");
        assert_eq!(s.gateway, Some(Ipv4Addr::new(10, 1, 0, 254)));
        assert_eq!(s.ip_range.unwrap().to_string(), "10.1.1.0/24");
        assert_eq!(s.aux_addresses["r"], Ipv4Addr::new(10, 1, 0, 9));
        assert_eq!(s.aux_addresses6["r6"].to_string(), "fd00:1::9");
        assert!(s.internal);
        assert_eq!((s.options.mtu, s.options.icc), (Some(1400), Some(false)));
        assert_eq!(s.labels["a"], "b");
    }

    #[test]
    fn bad_create_flags_name_the_flag() {
        let e = |a: &[&str]| create(a).unwrap_err().to_string();
        assert!(e(&["--subnet", "10.1.0.0", "n"]).contains("--subnet"));
        assert!(e(&["--gateway", "x", "n"]).contains("--gateway"));
        assert!(e(&["--aux-address", "r", "n"]).contains("--aux-address"));
        assert!(e(&["--opt", "vlan=5000", "n"]).contains("vlan"));
        assert!(e(&["--driver", "vxlan9", "n"]).contains("unknown driver"));
    }

    #[test]
    fn ipv6_flags_make_a_dual_stack_spec() {
        let flags = "--ipv6 --subnet 10.9.0.0/24 --subnet fd00:9::/64 n";
        let s = create(&flags.split(' ').collect::<Vec<_>>()).unwrap();
        assert!(s.enable_ipv6);
        assert_eq!(s.subnet.unwrap().to_string(), "10.9.0.0/24");
        assert_eq!(s.subnet6.unwrap().to_string(), "fd00:9::/64");
        assert!(!create(&["n"]).unwrap().enable_ipv6);
        assert!(create(&["n"]).unwrap().enable_ipv4);
        assert!(create(&["--ipv4", "n"]).unwrap().enable_ipv4);
        let s = create(&["--ipv4=false", "--ipv6", "--subnet", "fd00:9::/64", "n"]).unwrap();
        assert!(!s.enable_ipv4 && s.enable_ipv6);
        assert_eq!(s.subnet, None);
    }

    #[test]
    fn own_uplink_flags_take_a_v6_side() {
        let flags = "--uplink up1 --uplink-ip 203.0.113.2/24 --uplink-ip6 2001:db8:7::2/64 --uplink-gateway6 2001:db8:7::1 n";
        let u = create(&flags.split(' ').collect::<Vec<_>>())
            .unwrap()
            .uplink
            .unwrap();
        assert_eq!(u.ip6, Some("2001:db8:7::2/64".parse().unwrap()));
        assert_eq!(u.gateway6.unwrap().to_string(), "2001:db8:7::1");
        let e = |a: &str| {
            create(&a.split(' ').collect::<Vec<_>>())
                .unwrap_err()
                .to_string()
        };
        assert!(e("--uplink-ip6 2001:db8:7::2/64 n").contains("need --uplink"));
        assert!(
            e("--uplink up1 --uplink-ip 203.0.113.2/24 --uplink-ip6 10.0.0.1/24 n")
                .contains("--uplink-ip6")
        );
        assert!(
            e("--uplink up1 --uplink-ip 203.0.113.2/24 --uplink-gateway6 x n")
                .contains("--uplink-gateway6")
        );
    }

    #[test]
    fn connect_flags_become_a_spec() {
        let a = match T::try_parse_from([
            "t",
            "connect",
            "--ip",
            "10.1.0.5",
            "--ip6",
            "fd00:1::5",
            "--mac",
            "02:00:00:00:00:05",
            "--alias",
            "db",
            "-p",
            "8080:80",
            "--publish",
            "53:53/udp",
            "--name",
            "web",
            "--hostname",
            "h",
            "--dns",
            "10.0.0.53",
            "--add-host",
            "db:10.1.0.9",
            "n1",
            "4242",
        ])
        .unwrap()
        .cmd
        {
            NetworkCmd::Connect(a) => a,
            _ => unreachable!(),
        };
        let s = endpoint_spec(&a).unwrap();
        assert_eq!(s.sandbox, Sandbox::Pid(4242));
        assert_eq!(s.name, "web");
        assert_eq!(s.ip, Some(Ipv4Addr::new(10, 1, 0, 5)));
        assert_eq!(s.ip6, Some("fd00:1::5".parse().unwrap()));
        assert_eq!(s.publish.len(), 2);
        assert_eq!(s.aliases, vec!["db".to_string()]);
        assert_eq!(s.names.hostname.as_deref(), Some("h"));
        assert_eq!(s.names.dns, vec![Ipv4Addr::new(10, 0, 0, 53)]);
        assert_eq!(
            s.names.add_hosts,
            vec![("db".to_string(), Ipv4Addr::new(10, 1, 0, 9))]
        );
    }

    #[test]
    fn names_that_would_inject_are_refused_before_sending() {
        let connect = |extra: &[&str]| {
            let mut args = vec!["t", "connect"];
            args.extend_from_slice(extra);
            args.extend(["n1", "4242"]);
            match T::try_parse_from(args).unwrap().cmd {
                NetworkCmd::Connect(a) => endpoint_spec(&a).map(drop),
                _ => unreachable!(),
            }
        };
        assert!(connect(&["--hostname", "h"]).is_ok());
        for bad in [
            ["--hostname", "a\nnameserver 6.6.6.6"],
            ["--dns-search", "x.com\nnameserver 6.6.6.6"],
            ["--dns-option", "ndots:1\nnameserver 7.7.7.7"],
            ["--alias", "a\nb"],
            ["--link", "a:b c"],
            ["--add-host", "a\nb:1.2.3.4"],
        ] {
            let e = connect(&bad).unwrap_err().to_string();
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
        let e = create(&["--label", &format!("k={}", "v".repeat(5000)), "n"]).unwrap_err();
        assert!(e.to_string().contains("label value"), "{e}");
        assert!(create(&["--subnet", "127.0.0.0/8", "n"]).is_err());
    }

    #[test]
    fn missing_namespaces_are_refused_before_sending() {
        let e = sandbox_arg("/nonexistent/netns").unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert_eq!(sandbox_arg("7").unwrap().1, "pid-7");
    }

    #[test]
    fn docker_port_form() {
        assert_eq!(
            docker_port_line("0.0.0.0:8080->80/tcp"),
            "80/tcp -> 0.0.0.0:8080"
        );
    }
}
