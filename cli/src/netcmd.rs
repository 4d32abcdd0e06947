//! `sluice network ls`, `inspect`, `rm` and `prune` with docker's flags: `--filter`, `-q`,
//! `--no-trunc`, `--format` templates, per-name errors of `rm`, and filtered prunes.

use anyhow::{bail, Result};
use serde_json::{json, Value as Json};
use sluice_api::api::PruneReport;
use sluice_api::client::Client;
use sluice_api::model::NetworkInspect;

use crate::cli::{block, Output};
use crate::filter::Filters;
use crate::format::{align, Format};

/// The keys `network ls --filter` takes.
const LS_FILTERS: &[&str] = &["driver", "name", "id", "label", "scope", "type", "dangling"];
/// The keys `network prune --filter` takes.
const PRUNE_FILTERS: &[&str] = &["until", "label", "label!"];

/// `sluice network ls`.
#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Table or JSON.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    output: Output,
    /// Only ids.
    #[arg(long, short)]
    quiet: bool,
    /// KEY=VALUE: driver, name, id, label, scope, type (custom|builtin), dangling
    /// (repeatable: values of one key are alternatives, different keys must all match).
    #[arg(long, short)]
    filter: Vec<String>,
    /// A Go template per network, as docker's: `{{.Name}}`, `{{json .}}`, `table {{.ID}}\t{{.Name}}`.
    #[arg(long)]
    format: Option<String>,
    /// Full ids.
    #[arg(long)]
    no_trunc: bool,
}

/// `sluice network inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Network names or ids.
    #[arg(required = true)]
    networks: Vec<String>,
    /// A Go template per network, e.g. `{{range .IPAM.Config}}{{.Subnet}}{{end}}`.
    #[arg(long, short)]
    format: Option<String>,
}

/// `sluice network prune`.
#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Accepted for docker compatibility (sluice never asks).
    #[arg(long, short)]
    force: bool,
    /// until=DURATION|TIME, label=KEY[=VALUE], label!=KEY[=VALUE] (repeatable).
    #[arg(long)]
    filter: Vec<String>,
}

fn short_id(id: &str, no_trunc: bool) -> &str {
    if no_trunc {
        id
    } else {
        &id[..12.min(id.len())]
    }
}

/// Go's `time.Time.String()` of an RFC 3339 UTC time, as docker's `{{.CreatedAt}}` shows it:
/// `2023-11-14 22:13:20.5 +0000 UTC`.
fn go_time(rfc3339: &str) -> String {
    let body = rfc3339.trim_end_matches('Z').replacen('T', " ", 1);
    let body = match body.split_once('.') {
        Some((secs, frac)) => match frac.trim_end_matches('0') {
            "" => secs.to_string(),
            f => format!("{secs}.{f}"),
        },
        None => body,
    };
    format!("{body} +0000 UTC")
}

/// One network as docker's `network ls --format` sees it: every field a string.
fn ls_row(n: &NetworkInspect, no_trunc: bool) -> Json {
    let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    json!({
        "ID": short_id(&n.id, no_trunc),
        "Name": n.name,
        "Driver": n.driver,
        "Scope": n.scope,
        "IPv6": n.enable_ipv6.to_string(),
        "Internal": n.internal.to_string(),
        "Labels": labels.join(","),
        "CreatedAt": go_time(&n.created),
    })
}

/// docker's column names for `table` templates.
fn ls_headers() -> Json {
    json!({"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
           "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT"})
}

/// What `network ls` prints for `nets` (already fetched).
pub fn ls_text(a: &LsArgs, nets: Vec<NetworkInspect>) -> Result<String> {
    let filters = Filters::parse(&a.filter, LS_FILTERS)?;
    let nets: Vec<NetworkInspect> = nets.into_iter().filter(|n| filters.matches(n)).collect();
    if a.quiet {
        return Ok(nets
            .iter()
            .map(|n| format!("{}\n", short_id(&n.id, a.no_trunc)))
            .collect());
    }
    if let Some(f) = &a.format {
        let rows: Vec<Json> = nets.iter().map(|n| ls_row(n, a.no_trunc)).collect();
        return Format::parse(f)?.lines(&rows, &ls_headers());
    }
    if a.output == Output::Json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&nets)?));
    }
    let mut rows = vec!["NETWORK ID\tNAME\tDRIVER\tSCOPE\tSUBNET".to_string()];
    rows.extend(nets.iter().map(|n| {
        let subnet = n.ipam.config.first().map_or("", |c| c.subnet.as_str());
        let id = short_id(&n.id, a.no_trunc);
        format!("{id}\t{}\t{}\t{}\t{subnet}", n.name, n.driver, n.scope)
    }));
    Ok(align(&rows))
}

/// `sluice network ls`.
pub fn ls(c: &Client, a: LsArgs) -> Result<()> {
    block(async {
        let nets: Vec<NetworkInspect> = c.get("/networks").await?;
        print!("{}", ls_text(&a, nets)?);
        Ok(())
    })
}

/// `sluice network inspect`: docker's JSON array (docker's field order and indentation), or
/// the template per network; as docker, what was found is printed, and each network not found
/// is an error line.
pub fn inspect(c: &Client, a: InspectArgs) -> Result<()> {
    let format = a.format.as_deref().map(Format::parse).transpose()?;
    block(async {
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for n in &a.networks {
            match c.get::<NetworkInspect>(&format!("/networks/{n}")).await {
                Ok(v) => out.push(v),
                Err(e) => missing.push(e.to_string()),
            }
        }
        match format {
            Some(f) => {
                for n in &out {
                    println!("{}", f.render(&serde_json::to_value(n)?)?);
                }
            }
            // docker prints `[]` when nothing was found; sluice prints nothing, so that a
            // refused input is only its error line.
            None if out.is_empty() => {}
            None => println!("{}", docker_json(&out)?),
        }
        if missing.is_empty() {
            Ok(())
        } else {
            bail!("{}", missing.join("\n"))
        }
    })
}

/// JSON indented as docker's CLI prints it (four spaces).
fn docker_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    let mut buf = Vec::new();
    let indent = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    v.serialize(&mut serde_json::Serializer::with_formatter(
        &mut buf, indent,
    ))?;
    Ok(String::from_utf8(buf)?)
}

/// `sluice network rm`: removes each network in turn, printing its name; every failure is one
/// line on stderr, and the command fails if any did (docker's behaviour).
pub fn rm(c: &Client, networks: Vec<String>) -> Result<()> {
    block(async {
        let mut failed = Vec::new();
        for n in &networks {
            match c.delete(&format!("/networks/{n}")).await {
                Ok(()) => println!("{n}"),
                Err(e) => failed.push(e.to_string()),
            }
        }
        let last = failed.pop();
        for e in failed {
            eprintln!("Error: {e}");
        }
        match last {
            None => Ok(()),
            Some(e) => bail!("{e}"),
        }
    })
}

/// The networks a filtered prune removes: custom, without endpoints, created no later than `until`
/// and passing the label terms.
pub fn prune_set(nets: &[NetworkInspect], filters: &Filters, now_unix: u64) -> Result<Vec<String>> {
    let until = filters.until(now_unix)?;
    let dangling = Filters::parse(&["dangling=true".to_string()], &["dangling"])?;
    Ok(nets
        .iter()
        .filter(|n| dangling.matches(n) && filters.matches(n))
        .filter(|n| {
            until.is_none_or(|t| {
                sluice_api::clock::parse_rfc3339(&n.created).is_some_and(|c| c <= t)
            })
        })
        .map(|n| n.name.clone())
        .collect())
}

/// `sluice network prune`: the daemon's prune, or, with filters, the matching unused networks
/// one by one.
pub fn prune(c: &Client, a: PruneArgs) -> Result<()> {
    let filters = Filters::parse(&a.filter, PRUNE_FILTERS)?;
    block(async {
        let deleted = if a.filter.is_empty() {
            let r: PruneReport = serde_json::from_value(c.post("/networks/prune", &()).await?)?;
            r.networks_deleted
        } else {
            let nets: Vec<NetworkInspect> = c.get("/networks").await?;
            let mut deleted = Vec::new();
            for n in prune_set(&nets, &filters, sluice_api::clock::now_unix())? {
                if c.delete(&format!("/networks/{n}")).await.is_ok() {
                    deleted.push(n);
                }
            }
            deleted
        };
        if !deleted.is_empty() {
            println!("Deleted Networks:");
            deleted.iter().for_each(|n| println!("{n}"));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Parses `sluice network ls ARGS` flags alone.
    #[derive(clap::Parser)]
    struct Ls {
        #[command(flatten)]
        a: LsArgs,
    }

    fn nets() -> Vec<NetworkInspect> {
        let v = json!([
            {"Name": "bridge", "Id": "f3a5b2c1d0e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3",
             "Created": "2023-11-14T22:13:20.500000000Z", "Scope": "local", "Driver": "bridge",
             "EnableIPv6": false, "IPAM": {"Driver": "default", "Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]},
             "Internal": false, "Containers": {}, "Options": {}, "Labels": {}},
            {"Name": "web", "Id": "0123456789ab0123456789ab0123456789ab0123456789ab0123456789abcdef",
             "Created": "2023-11-14T22:13:20.000000000Z", "Scope": "local", "Driver": "bridge",
             "EnableIPv6": false, "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.1.0.0/24", "Gateway": "10.1.0.1"}]},
             "Internal": true, "Containers": {}, "Options": {}, "Labels": {"env": "prod", "team": "a"}}
        ]);
        serde_json::from_value(v).unwrap()
    }

    fn ls(args: &[&str]) -> String {
        let mut argv = vec!["ls"];
        argv.extend_from_slice(args);
        ls_text(&Ls::parse_from(argv).a, nets()).unwrap()
    }

    #[test]
    fn quiet_filters_and_no_trunc() {
        assert_eq!(ls(&["-q"]), "f3a5b2c1d0e9\n0123456789ab\n");
        assert_eq!(ls(&["-q", "--filter", "type=custom"]), "0123456789ab\n");
        assert_eq!(
            ls(&["-q", "--no-trunc", "-f", "name=bri"]),
            "f3a5b2c1d0e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3\n"
        );
        assert_eq!(
            ls(&["-q", "-f", "label=env=prod", "-f", "driver=bridge"]),
            "0123456789ab\n"
        );
        assert_eq!(ls(&["-q", "-f", "driver=macvlan"]), "");
    }

    #[test]
    fn inspect_json_is_indented_in_dockers_field_order() {
        let text = docker_json(&nets()[..1]).unwrap();
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("        \"") && l.contains("\": "))
            .map(|l| l.trim().split('"').nth(1).unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "Name",
                "Id",
                "Created",
                "Scope",
                "Driver",
                "EnableIPv4",
                "EnableIPv6",
                "IPAM",
                "Internal",
                "Attachable",
                "Ingress",
                "ConfigFrom",
                "ConfigOnly",
                "Containers",
                "Options",
                "Labels"
            ]
        );
        assert!(
            text.contains("            \"Options\": {},\n            \"Config\": ["),
            "{text}"
        );
        assert_eq!(docker_json(&Vec::<NetworkInspect>::new()).unwrap(), "[]");
    }

    #[test]
    fn the_default_table_is_aligned_as_dockers() {
        assert_eq!(
            ls(&[]),
            "NETWORK ID     NAME      DRIVER    SCOPE     SUBNET\n\
             f3a5b2c1d0e9   bridge    bridge    local     172.17.0.0/16\n\
             0123456789ab   web       bridge    local     10.1.0.0/24\n"
        );
        assert_eq!(
            ls(&["-f", "name=none"]),
            "NETWORK ID   NAME      DRIVER    SCOPE     SUBNET\n"
        );
    }

    #[test]
    fn format_fields_are_dockers_strings() {
        assert_eq!(
            ls(&["--format", "{{.Name}} {{.ID}} {{.Driver}}"]),
            "bridge f3a5b2c1d0e9 bridge\nweb 0123456789ab bridge\n"
        );
        assert_eq!(
            ls(&["-f", "name=web", "--format", "{{json .}}"]),
            concat!(
                r#"{"CreatedAt":"2023-11-14 22:13:20 +0000 UTC","Driver":"bridge","ID":"0123456789ab","#,
                r#""IPv6":"false","Internal":"true","Labels":"env=prod,team=a","Name":"web","Scope":"local"}"#,
                "\n"
            )
        );
        assert_eq!(
            ls(&["--format", r"table {{.ID}}\t{{.Name}}\t{{.CreatedAt}}"]),
            "NETWORK ID     NAME      CREATED AT\n\
             f3a5b2c1d0e9   bridge    2023-11-14 22:13:20.5 +0000 UTC\n\
             0123456789ab   web       2023-11-14 22:13:20 +0000 UTC\n"
        );
    }

    #[test]
    fn prune_picks_unused_custom_networks_by_age_and_label() {
        let now = sluice_api::clock::parse_rfc3339("2023-11-15T22:13:20Z").unwrap();
        let set = |terms: &[&str]| {
            let t: Vec<String> = terms.iter().map(ToString::to_string).collect();
            prune_set(&nets(), &Filters::parse(&t, PRUNE_FILTERS).unwrap(), now).unwrap()
        };
        assert_eq!(set(&[]), ["web"], "never a predefined network");
        assert_eq!(set(&["until=1h"]), ["web"]);
        assert!(set(&["until=48h"]).is_empty(), "created a day ago");
        assert_eq!(set(&["label=team"]), ["web"]);
        assert!(set(&["label!=env=prod"]).is_empty());
        assert!(Filters::parse(&["driver=x".to_string()], PRUNE_FILTERS).is_err());
    }
}
