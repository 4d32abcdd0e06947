//! `--publish`, `--expose` and `-P` of `sluice network connect` as the mappings sent to the
//! daemon: docker's rule that `-P` publishes every exposed port not already published, each on
//! a host port the daemon picks.

use anyhow::{bail, Context, Result};
use sluice_api::publish::PublishSpec;

/// The mappings for `-p` values `publish`, plus, with `publish_all`, one without a host port
/// for every `--expose` value no `-p` already maps.
pub fn publish(
    publish: &[String],
    expose: &[String],
    publish_all: bool,
) -> Result<Vec<PublishSpec>> {
    let mut out = publish
        .iter()
        .map(|p| {
            p.parse::<PublishSpec>()
                .with_context(|| format!("--publish {p:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let exposed = expose
        .iter()
        .map(|x| exposed_port(x).with_context(|| format!("--expose {x:?}")))
        .collect::<Result<Vec<_>>>()?;
    if publish_all {
        for x in exposed {
            let published = out
                .iter()
                .any(|p| p.proto == x.proto && p.container_ports == x.container_ports);
            if !published {
                out.push(x);
            }
        }
    }
    Ok(out)
}

/// One `--expose` value, `CPORT[-CPORT][/tcp|udp]`: a mapping with no host side.
fn exposed_port(s: &str) -> Result<PublishSpec> {
    let p: PublishSpec = s.parse()?;
    if p.host_ip.is_some() || p.host_ip6.is_some() || p.host_ports.is_some() {
        bail!(
            "expose takes a container port only, CPORT[-CPORT][/tcp|udp] (use -p for a host port)"
        );
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    fn shown(v: Vec<PublishSpec>) -> Vec<String> {
        v.into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn publish_all_adds_the_exposed_ports_not_yet_published() {
        let got = publish(
            &strings(&["8080:80", "127.0.0.1::9000"]),
            &strings(&["80", "53/udp", "7000-7001", "9000/tcp"]),
            true,
        )
        .unwrap();
        assert_eq!(
            shown(got),
            [
                "8080:80/tcp",
                "127.0.0.1::9000/tcp",
                "53/udp",
                "7000-7001/tcp"
            ]
        );
    }

    #[test]
    fn expose_alone_publishes_nothing_but_is_checked() {
        assert!(publish(&[], &strings(&["80"]), false).unwrap().is_empty());
        let e = publish(&[], &strings(&["8080:80"]), false).unwrap_err();
        assert!(format!("{e:#}").contains("container port only"), "{e:#}");
        let e = publish(&[], &strings(&["[2001:db8::2]::80"]), false).unwrap_err();
        assert!(format!("{e:#}").contains("container port only"), "{e:#}");
        let e = publish(&[], &strings(&["80/sctp"]), true).unwrap_err();
        assert!(
            format!("{e:#}").starts_with("--expose \"80/sctp\": unknown protocol"),
            "{e:#}"
        );
        assert!(
            publish(&[], &[], true).unwrap().is_empty(),
            "-P without --expose"
        );
    }
}
