//! `sluice inspect NAME`: an endpoint's sandbox in the shape of docker's container inspect
//! (`Id`, `Name`, `NetworkSettings` with `Ports` and `Networks`), so that
//! `-f '{{ .NetworkSettings.IPAddress }}'` and the other tutorial templates give what docker
//! gives. Every endpoint in the sandbox is one entry of `Networks`; as in docker, the
//! top-level `IPAddress`, `Gateway`, `MacAddress` and `IPPrefixLen` are those of the default
//! `bridge` network and empty when the sandbox is not on it.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde_json::{json, Value as Json};
use sluice_api::api::EndpointView;
use sluice_api::client::Client;
use sluice_api::model::{NetworkInspect, Sandbox};
use sluice_api::publish::parse_port_range;

use crate::cli::{block, print_json};
use crate::format::Format;

/// `sluice inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Endpoint names or id prefixes.
    #[arg(required = true)]
    names: Vec<String>,
    /// A Go template per endpoint, e.g. `{{ .NetworkSettings.IPAddress }}`.
    #[arg(long, short)]
    format: Option<String>,
}

/// docker's `SandboxKey`: the namespace file.
fn sandbox_key(s: &Sandbox) -> String {
    match s {
        Sandbox::Netns(p) => p.display().to_string(),
        Sandbox::Pid(pid) => format!("/proc/{pid}/ns/net"),
    }
}

/// docker's `Ports`: `"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]`, one key per
/// container port, from `sluice ps`'s `0.0.0.0:8080->80/tcp` columns.
fn ports(columns: &[&String]) -> BTreeMap<String, Vec<Json>> {
    let mut out: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    for col in columns {
        let Some((host, container)) = col.split_once("->") else {
            continue;
        };
        let (Some((cports, proto)), Some((ip, hports))) =
            (container.split_once('/'), host.rsplit_once(':'))
        else {
            continue;
        };
        let (Ok(c), Ok(h)) = (parse_port_range(cports), parse_port_range(hports)) else {
            continue;
        };
        for (i, cport) in (c.first..=c.last).enumerate() {
            let hosts: Vec<u16> = if c.len() == h.len() {
                vec![h.first + i as u16]
            } else {
                (h.first..=h.last).collect()
            };
            let entry = out.entry(format!("{cport}/{proto}")).or_default();
            entry.extend(
                hosts
                    .into_iter()
                    .map(|p| json!({"HostIp": ip, "HostPort": p.to_string()})),
            );
        }
    }
    out
}

/// The address and prefix length of `sluice ps`'s `10.1.0.2/24`.
fn addr_prefix(ipv4: &str) -> (String, u8) {
    match ipv4.split_once('/') {
        Some((a, p)) => (a.to_string(), p.parse().unwrap_or(32)),
        None => (ipv4.to_string(), 32),
    }
}

/// The container-inspect object for the sandbox of the endpoint `key` names (its name or an
/// id prefix).
pub fn settings(eps: &[EndpointView], nets: &[NetworkInspect], key: &str) -> Result<Json> {
    let Some(me) = eps.iter().find(|e| e.name == key).or_else(|| {
        eps.iter()
            .find(|e| !key.is_empty() && e.id.starts_with(key))
    }) else {
        bail!("No such object: {key}");
    };
    let mine: Vec<&EndpointView> = eps.iter().filter(|e| e.sandbox == me.sandbox).collect();
    let mut networks = serde_json::Map::new();
    let mut top = json!({"EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                         "MacAddress": ""});
    for e in &mine {
        let net = nets.iter().find(|n| n.name == e.network);
        let gateway = match net.filter(|n| !n.routes_on_link()) {
            Some(_) => e.gateway.clone().unwrap_or_default(),
            None => String::new(),
        };
        let mut ipam = serde_json::Map::new();
        for (k, v) in [
            ("IPv4Address", &e.static_ipv4),
            ("IPv6Address", &e.static_ipv6),
        ] {
            if let Some(ip) = v {
                ipam.insert(k.into(), json!(ip));
            }
        }
        let (ip, prefix) = addr_prefix(&e.ipv4);
        let entry = json!({
            "IPAMConfig": if ipam.is_empty() { Json::Null } else { Json::Object(ipam) },
            "Links": null,
            "Aliases": if e.aliases.is_empty() { Json::Null } else { json!(e.aliases) },
            "NetworkID": net.map_or("", |n| n.id.as_str()),
            "EndpointID": e.id,
            "Gateway": gateway,
            "IPAddress": ip,
            "IPPrefixLen": prefix,
            "IPv6Gateway": "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "MacAddress": e.mac,
            "DriverOpts": null,
        });
        if e.network == "bridge" {
            for k in [
                "EndpointID",
                "Gateway",
                "IPAddress",
                "IPPrefixLen",
                "MacAddress",
            ] {
                top[k] = entry[k].clone();
            }
        }
        networks.insert(e.network.clone(), entry);
    }
    let columns: Vec<&String> = mine.iter().flat_map(|e| &e.ports).collect();
    let mut ns = json!({
        "Bridge": "",
        "SandboxID": "",
        "HairpinMode": false,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": ports(&columns),
        "SandboxKey": sandbox_key(&me.sandbox),
        "SecondaryIPAddresses": null,
        "SecondaryIPv6Addresses": null,
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPv6Gateway": "",
        "Networks": networks,
    });
    for (k, v) in top.as_object().into_iter().flatten() {
        ns[k] = v.clone();
    }
    Ok(json!({"Id": me.id, "Name": format!("/{}", me.name), "NetworkSettings": ns}))
}

/// `sluice inspect`: the objects as a JSON array, or the template per object; a name that
/// matches nothing is one error line, and the command fails (docker's behaviour).
pub fn inspect(c: &Client, a: InspectArgs) -> Result<()> {
    let format = a.format.as_deref().map(Format::parse).transpose()?;
    block(async {
        let eps: Vec<EndpointView> = c.get("/endpoints").await?;
        let nets: Vec<NetworkInspect> = c.get("/networks").await?;
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for n in &a.names {
            match settings(&eps, &nets, n) {
                Ok(v) => found.push(v),
                Err(e) => missing.push(e),
            }
        }
        match &format {
            Some(f) => {
                for v in &found {
                    println!("{}", f.render(v)?);
                }
            }
            None => print_json(&found)?,
        }
        let last = missing.pop();
        for e in missing {
            eprintln!("Error: {e}");
        }
        match last {
            None => Ok(()),
            Some(e) => Err(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(name: &str, network: &str, pid: u32, ipv4: &str, ports: &[&str]) -> EndpointView {
        EndpointView {
            name: name.into(),
            id: format!("{name}{}", "0".repeat(60)),
            network: network.into(),
            sandbox: Sandbox::Pid(pid),
            ipv4: ipv4.into(),
            mac: "02:42:ac:11:00:02".into(),
            ifname: "eth0".into(),
            host_ifname: "slc0".into(),
            ports: ports.iter().map(ToString::to_string).collect(),
            aliases: vec![],
            files: None,
            default_route: None,
            ipv6: None,
            gateway: Some(
                if network == "bridge" {
                    "172.17.0.1"
                } else {
                    "10.1.0.1"
                }
                .into(),
            ),
            static_ipv4: None,
            gateway6: None,
            static_ipv6: None,
        }
    }

    fn nets() -> Vec<NetworkInspect> {
        serde_json::from_value(json!([
            {"Name": "bridge", "Id": "b1", "Created": "", "Scope": "local", "Driver": "bridge",
             "EnableIPv6": false, "IPAM": {"Driver": "default", "Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]},
             "Internal": false, "Containers": {}, "Options": {}, "Labels": {}},
            {"Name": "web", "Id": "w1", "Created": "", "Scope": "local", "Driver": "bridge",
             "EnableIPv6": false, "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.1.0.0/24", "Gateway": "10.1.0.1"}]},
             "Internal": false, "Containers": {}, "Options": {}, "Labels": {}}
        ]))
        .unwrap()
    }

    fn run(f: &str, v: &Json) -> String {
        Format::parse(f).unwrap().render(v).unwrap()
    }

    #[test]
    fn the_tutorials_templates_give_dockers_answers() {
        let eps = [
            ep(
                "c1",
                "bridge",
                7,
                "172.17.0.2/16",
                &["0.0.0.0:8080->80/tcp"],
            ),
            ep(
                "c1w",
                "web",
                7,
                "10.1.0.5/24",
                &["127.0.0.1:9000-9001->7000-7001/udp"],
            ),
            ep("c2", "web", 8, "10.1.0.6/24", &["80/tcp"]),
        ];
        let v = settings(&eps, &nets(), "c1").unwrap();
        assert_eq!(run("{{ .NetworkSettings.IPAddress }}", &v), "172.17.0.2");
        assert_eq!(
            run(
                "{{.NetworkSettings.Gateway}}/{{.NetworkSettings.IPPrefixLen}}",
                &v
            ),
            "172.17.0.1/16"
        );
        assert_eq!(run("{{.Name}}", &v), "/c1");
        assert_eq!(
            run(
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                &v
            )
            .split(' ')
            .filter(|s| !s.is_empty())
            .collect::<std::collections::BTreeSet<_>>(),
            ["10.1.0.5", "172.17.0.2"].into_iter().collect()
        );
        assert_eq!(
            run(
                r#"{{(index .NetworkSettings.Networks "web").NetworkID}}"#,
                &v
            ),
            "w1"
        );
        assert_eq!(
            run("{{json .NetworkSettings.Ports}}", &v),
            concat!(
                r#"{"7000/udp":[{"HostIp":"127.0.0.1","HostPort":"9000"}],"#,
                r#""7001/udp":[{"HostIp":"127.0.0.1","HostPort":"9001"}],"#,
                r#""80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}]}"#
            )
        );
        assert_eq!(
            run(
                r#"{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}"#,
                &v
            ),
            "8080",
            "the tutorials' host-port lookup"
        );
        assert_eq!(run("{{.NetworkSettings.SandboxKey}}", &v), "/proc/7/ns/net");
    }

    #[test]
    fn a_fixed_address_shows_in_ipamconfig_and_the_gateway_comes_with_the_endpoint() {
        let fixed = EndpointView {
            static_ipv4: Some("10.1.0.9".into()),
            ..ep("c3", "web", 9, "10.1.0.9/24", &[])
        };
        let mut nets = nets();
        nets[1].ipam.config[0].gateway = None;
        let v = settings(
            &[fixed, ep("c4", "web", 10, "10.1.0.7/24", &[])],
            &nets,
            "c3",
        )
        .unwrap();
        assert_eq!(
            run("{{json .NetworkSettings.Networks.web.IPAMConfig}}", &v),
            r#"{"IPv4Address":"10.1.0.9"}"#
        );
        assert_eq!(
            run("{{.NetworkSettings.Networks.web.Gateway}}", &v),
            "10.1.0.1",
            "a gateway the user did not give, left out of the network's inspect"
        );
        let v = settings(&[ep("c4", "web", 10, "10.1.0.7/24", &[])], &nets, "c4").unwrap();
        assert_eq!(
            run("{{json .NetworkSettings.Networks.web.IPAMConfig}}", &v),
            "null",
            "as docker, for an address IPAM picked"
        );
    }

    #[test]
    fn off_the_default_bridge_the_top_level_address_is_empty() {
        let eps = [ep("c2", "web", 8, "10.1.0.6/24", &[])];
        let v = settings(&eps, &nets(), "c2").unwrap();
        assert_eq!(run("{{ .NetworkSettings.IPAddress }}", &v), "", "as docker");
        assert_eq!(run("{{.NetworkSettings.IPPrefixLen}}", &v), "0");
        assert_eq!(
            run("{{.NetworkSettings.Networks.web.IPAddress}}", &v),
            "10.1.0.6"
        );
        assert_eq!(
            run("{{.NetworkSettings.Networks.web.Gateway}}", &v),
            "10.1.0.1"
        );
        assert_eq!(run("{{json .NetworkSettings.Ports}}", &v), "{}");
        let by_id = settings(&eps, &nets(), "c20000").unwrap();
        assert_eq!(by_id["Name"], "/c2");
        assert_eq!(
            settings(&eps, &nets(), "nope").unwrap_err().to_string(),
            "No such object: nope"
        );
    }

    #[test]
    fn ipvlan_l3_endpoints_have_no_gateway() {
        let mut n = nets();
        n[1].driver = "ipvlan".into();
        n[1].options.insert("ipvlan_mode".into(), "l3".into());
        let eps = [ep("c2", "web", 8, "10.1.0.6/24", &[])];
        let gw = "{{.NetworkSettings.Networks.web.Gateway}}";
        assert_eq!(run(gw, &settings(&eps, &n, "c2").unwrap()), "");
        n[1].options.insert("ipvlan_mode".into(), "l2".into());
        assert_eq!(run(gw, &settings(&eps, &n, "c2").unwrap()), "10.1.0.1");
    }
}
