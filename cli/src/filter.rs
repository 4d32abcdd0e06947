//! docker's `network ls --filter` and `network prune --filter`: `KEY=VALUE` terms, where terms
//! of one key are alternatives (any may match) and terms of different keys must all match.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use sluice_api::model::NetworkInspect;

/// The predefined networks, docker's `type=builtin`.
const BUILTIN: [&str; 3] = ["bridge", "host", "none"];

/// Parsed `--filter` terms by key.
#[derive(Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses `KEY=VALUE` terms, refusing keys not in `allowed` as docker does.
    pub fn parse(terms: &[String], allowed: &[&str]) -> Result<Filters> {
        let mut f = Filters::default();
        for t in terms {
            let Some((k, v)) = t.split_once('=') else {
                bail!("bad format of filter (expected name=value)");
            };
            let k = k.trim().to_lowercase();
            if !allowed.contains(&k.as_str()) {
                bail!("Invalid filter '{k}'");
            }
            if k == "type" && v != "custom" && v != "builtin" {
                bail!("invalid filter: 'type'='{v}'");
            }
            if k == "dangling" && !matches!(v, "true" | "false" | "1" | "0") {
                bail!(
                    "invalid value for filter 'dangling', must be \"true\" (or \"1\"), or \"false\" (or \"0\")"
                );
            }
            if k == "dangling" && f.0.contains_key(&k) {
                bail!("got more than one value for filter key \"dangling\"");
            }
            f.0.entry(k).or_default().push(v.to_string());
        }
        Ok(f)
    }

    /// The values given for `key`.
    pub fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    /// `until=` as the Unix time a network must be created before: a Go duration back from
    /// `now_unix` (`24h`), a Unix timestamp (`1700000000`) or an RFC 3339 UTC time.
    pub fn until(&self, now_unix: u64) -> Result<Option<u64>> {
        let Some(v) = self.values("until").last() else {
            return Ok(None);
        };
        if let Ok(d) = duration(v) {
            return Ok(Some(now_unix.saturating_sub(d.as_secs())));
        }
        match (v.parse::<u64>(), sluice_api::clock::parse_rfc3339(v)) {
            (Ok(t), _) | (_, Some(t)) => Ok(Some(t)),
            _ => bail!(
                "invalid until {v:?}: a duration (24h, 1h30m) or a time (Unix seconds or RFC 3339)"
            ),
        }
    }

    /// True when `n` passes every key (docker's ls filters). As docker's, `label` terms must
    /// all match and `label!` terms exclude only together; other keys' terms are alternatives.
    pub fn matches(&self, n: &NetworkInspect) -> bool {
        self.0.iter().all(|(k, vs)| match k.as_str() {
            "label" => vs.iter().all(|v| label_matches(&n.labels, v)),
            "label!" => !vs.iter().all(|v| label_matches(&n.labels, v)),
            _ => vs.iter().any(|v| match k.as_str() {
                "driver" => &n.driver == v,
                "name" => regex_matches(v, &n.name),
                "id" => regex_matches(v, &n.id),
                "scope" => &n.scope == v,
                "type" => (v == "builtin") == BUILTIN.contains(&n.name.as_str()),
                "dangling" => {
                    let dangling = n.containers.is_empty() && !BUILTIN.contains(&n.name.as_str());
                    dangling == matches!(v.as_str(), "true" | "1")
                }
                _ => true,
            }),
        })
    }
}

/// docker's `name=` and `id=` terms: a regular expression found anywhere in the value (so a
/// plain substring matches too); a term that is no valid expression matches nothing.
fn regex_matches(term: &str, value: &str) -> bool {
    regex::Regex::new(term).is_ok_and(|re| re.is_match(value))
}

/// `label=KEY` (present) or `label=KEY=VALUE` (equal).
pub fn label_matches(labels: &BTreeMap<String, String>, term: &str) -> bool {
    match term.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(term),
    }
}

/// docker's `until` durations, Go's: `1h30m`, `10m`, `45s`, `1.5h`.
pub fn duration(s: &str) -> Result<Duration> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut rest = s;
    if rest.is_empty() {
        bail!("invalid duration {s:?}");
    }
    while !rest.is_empty() {
        let c = rest.chars().next().unwrap_or_default();
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            rest = &rest[1..];
            continue;
        }
        let (unit, secs) = [("ms", 0.001), ("h", 3600.0), ("m", 60.0), ("s", 1.0)]
            .into_iter()
            .find(|(u, _)| rest.starts_with(u))
            .ok_or_else(|| anyhow::anyhow!("invalid duration {s:?} (like 24h, 1h30m, 10m)"))?;
        let n: f64 = num
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid duration {s:?} (like 24h, 1h30m, 10m)"))?;
        total += n * secs;
        num.clear();
        rest = &rest[unit.len()..];
    }
    if !num.is_empty() {
        bail!("invalid duration {s:?}: missing unit (like 24h, 1h30m, 10m)");
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::model::{IpamView, SwarmFields};

    const LS: &[&str] = &["driver", "name", "id", "label", "scope", "type", "dangling"];

    fn net(name: &str, id: &str, driver: &str, labels: &[(&str, &str)]) -> NetworkInspect {
        NetworkInspect {
            name: name.into(),
            id: id.into(),
            created: String::new(),
            scope: "local".into(),
            driver: driver.into(),
            enable_ipv4: true,
            enable_ipv6: false,
            ipam: IpamView {
                driver: "default".into(),
                options: Default::default(),
                config: vec![],
            },
            internal: false,
            swarm: SwarmFields::default(),
            containers: Default::default(),
            options: Default::default(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn names(terms: &[&str], nets: &[NetworkInspect]) -> Vec<String> {
        let t: Vec<String> = terms.iter().map(ToString::to_string).collect();
        let f = Filters::parse(&t, LS).unwrap();
        nets.iter()
            .filter(|n| f.matches(n))
            .map(|n| n.name.clone())
            .collect()
    }

    #[test]
    fn terms_combine_as_dockers() {
        let nets = [
            net("bridge", "aaa111", "bridge", &[]),
            net("none", "bbb222", "null", &[]),
            net("web", "ccc333", "bridge", &[("env", "prod"), ("team", "a")]),
            net("web2", "ddd444", "macvlan", &[("env", "dev")]),
        ];
        assert_eq!(names(&["driver=bridge"], &nets), ["bridge", "web"]);
        assert_eq!(
            names(&["driver=bridge", "driver=macvlan"], &nets),
            ["bridge", "web", "web2"]
        );
        assert_eq!(names(&["driver=bridge", "name=we"], &nets), ["web"]);
        assert_eq!(names(&["id=ccc"], &nets), ["web"]);
        assert_eq!(names(&["label=env"], &nets), ["web", "web2"]);
        assert_eq!(names(&["label=env=prod"], &nets), ["web"]);
        assert_eq!(names(&["label=env=prod", "label=team=a"], &nets), ["web"]);
        assert!(names(&["label=env", "label=nope"], &nets).is_empty(), "all");
        assert_eq!(names(&["name=^w", "name=2$"], &nets), ["web", "web2"]);
        assert_eq!(names(&["name=^n.n"], &nets), ["none"]);
        assert!(names(&["name=("], &nets).is_empty(), "a bad expression");
        assert_eq!(names(&["type=builtin"], &nets), ["bridge", "none"]);
        assert_eq!(names(&["type=custom"], &nets), ["web", "web2"]);
        assert_eq!(names(&["scope=swarm"], &nets), Vec::<String>::new());
        assert_eq!(names(&["dangling=true"], &nets), ["web", "web2"]);
        let t = vec!["label!=env=prod".to_string()];
        let f = Filters::parse(&t, &["label!"]).unwrap();
        let kept: Vec<&str> = nets
            .iter()
            .filter(|n| f.matches(n))
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(kept, ["bridge", "none", "web2"]);
    }

    #[test]
    fn bad_terms_are_refused_as_docker_words_them() {
        let e = |t: &str| {
            Filters::parse(&[t.to_string()], LS)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(e("colour=red"), "Invalid filter 'colour'");
        assert_eq!(
            e("dangling=maybe"),
            r#"invalid value for filter 'dangling', must be "true" (or "1"), or "false" (or "0")"#
        );
        assert_eq!(e("type=other"), "invalid filter: 'type'='other'");
        let two = ["dangling=true".to_string(), "dangling=false".to_string()];
        assert_eq!(
            Filters::parse(&two, LS).unwrap_err().to_string(),
            r#"got more than one value for filter key "dangling""#
        );
        assert_eq!(e("driver"), "bad format of filter (expected name=value)");
    }

    #[test]
    fn go_durations() {
        assert_eq!(duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(duration("10").is_err(), "a bare number is a timestamp");
        assert!(duration("10x").is_err());
        assert!(duration("h").is_err());
        assert!(duration("").is_err());
        let t = vec!["until=1h".to_string()];
        let f = Filters::parse(&t, &["until"]).unwrap();
        assert_eq!(f.until(10_000).unwrap(), Some(6_400));
        let at = |v: &str| {
            let t = vec![format!("until={v}")];
            Filters::parse(&t, &["until"]).unwrap().until(10_000)
        };
        assert_eq!(at("1700000000").unwrap(), Some(1_700_000_000));
        assert_eq!(at("2023-11-14T22:13:20Z").unwrap(), Some(1_700_000_000));
        assert!(at("yesterday").is_err());
    }
}
