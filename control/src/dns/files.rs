//! The `resolv.conf` and `hosts` files a runtime bind-mounts into a container, written the way
//! docker writes them: `nameserver 127.0.0.11` for containers on user-defined networks (the
//! embedded resolver), the host's or `--dns` servers on the default network; `hosts` with
//! localhost, `--add-host` entries, `--link` targets (default network) and the container's own
//! `IP hostname` line.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::Endpoint;
use crate::state::State;

use super::names::parse_link;
use super::RESOLVER_IP;

/// Why a name option is refused or a file cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// `--add-host` without `:` (or `=`) between name and address.
    #[error("--add-host {0:?} is not NAME:IP")]
    NotNameIp(String),
    /// `--add-host` with a host name that is not an RFC 1123 name.
    #[error("--add-host: {0}")]
    BadHostName(crate::validate::Invalid),
    /// `--add-host` with something other than an IPv4 address.
    #[error("--add-host {0:?}: {1:?} is not an IPv4 address")]
    BadIp(String, String),
    /// A `--link` target that is not on the endpoint's network.
    #[error("--link {link:?}: no endpoint {target:?} on the network")]
    NoLinkTarget {
        /// The link as given.
        link: String,
        /// The endpoint it names.
        target: String,
    },
    /// A value that would add or split a line of the file (validation should have refused it
    /// earlier; the writer refuses it too).
    #[error("refusing to write {what} {value:?}: it contains whitespace or a control character")]
    Unsafe {
        /// What the value is.
        what: &'static str,
        /// The value (shortened).
        value: String,
    },
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The per-container name options of `docker run` (`--hostname`, `--dns`, `--dns-search`,
/// `--dns-option`, `--add-host`), kept with the endpoint so its files can be rewritten.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameOptions {
    /// The container's host name (default: the endpoint's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Resolvers replacing the host's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    /// Search domains replacing the host's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// resolv.conf options replacing the host's (`ndots:2`, `timeout:1`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
    /// Extra hosts entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_hosts: Vec<(String, Ipv4Addr)>,
}

/// Parses `--add-host NAME:IP` (or docker's newer `NAME=IP`).
pub fn parse_add_host(s: &str) -> Result<(String, Ipv4Addr), FilesError> {
    let (name, ip) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(|| FilesError::NotNameIp(s.to_string()))?;
    crate::validate::host_name("host name", name).map_err(FilesError::BadHostName)?;
    let ip = ip
        .parse()
        .map_err(|_| FilesError::BadIp(s.to_string(), ip.to_string()))?;
    Ok((name.to_string(), ip))
}

/// The parts of a resolv.conf the container files derive from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines.
    pub nameservers: Vec<IpAddr>,
    /// The last `search` (or `domain`) line's domains.
    pub search: Vec<String>,
    /// `options` lines' options.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Reads the text of a resolv.conf; lines it does not know and bad addresses are skipped
    /// (the C library does the same).
    pub fn parse(text: &str) -> ResolvConf {
        let mut r = ResolvConf::default();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            match w.next() {
                Some("nameserver") => {
                    if let Some(ip) = w.next().and_then(|a| a.parse().ok()) {
                        r.nameservers.push(ip);
                    }
                }
                Some("search" | "domain") => r.search = w.map(str::to_string).collect(),
                Some("options") => r.options.extend(w.map(str::to_string)),
                _ => {}
            }
        }
        r
    }

    /// The host's resolver configuration from `path` (normally `/etc/resolv.conf`); an empty
    /// one if it cannot be read.
    pub fn read(path: &Path) -> ResolvConf {
        std::fs::read_to_string(path)
            .map(|t| ResolvConf::parse(&t))
            .unwrap_or_default()
    }
}

/// docker's fallback when the host has no resolver a container can reach.
const FALLBACK_DNS: [Ipv4Addr; 2] = [Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(8, 8, 4, 4)];

const HEADER: &str = "# Generated by sluice.\n";

/// A container's resolv.conf. With `embedded` (the container is on a user-defined network) the
/// only nameserver is the embedded resolver at 127.0.0.11 with `ndots:0` first, and the
/// `--dns` servers become that resolver's upstreams (see `NameTable::set_upstreams`);
/// otherwise the nameservers are the `--dns` servers, or the host's IPv4 ones minus loopback
/// ones (not reachable from the container), or docker's public fallback. `--dns-search` and
/// `--dns-option` replace the host's search domains and options (a host `ndots` is dropped
/// for the embedded resolver, a `--dns-option ndots:N` replaces its `ndots:0`).
pub fn resolv_conf(
    opts: &NameOptions,
    host: &ResolvConf,
    embedded: bool,
) -> Result<String, FilesError> {
    let mut out = String::from(HEADER);
    let servers: Vec<IpAddr> = if embedded {
        vec![IpAddr::V4(RESOLVER_IP)]
    } else if !opts.dns.is_empty() {
        opts.dns.iter().map(|ip| IpAddr::V4(*ip)).collect()
    } else {
        let reachable: Vec<IpAddr> = host
            .nameservers
            .iter()
            .filter(|ip| ip.is_ipv4() && !ip.is_loopback())
            .copied()
            .collect();
        if reachable.is_empty() {
            FALLBACK_DNS.iter().map(|ip| IpAddr::V4(*ip)).collect()
        } else {
            reachable
        }
    };
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    let search = if opts.dns_search.is_empty() {
        &host.search
    } else {
        &opts.dns_search
    };
    if !search.is_empty() {
        for d in search {
            one_token("search domain", d)?;
        }
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    let ndots = |o: &&str| o.starts_with("ndots:");
    let mut options: Vec<&str> = Vec::new();
    if opts.dns_options.is_empty() {
        if embedded {
            options.push("ndots:0");
        }
        options.extend(
            host.options
                .iter()
                .map(String::as_str)
                .filter(|o| !(embedded && ndots(o))),
        );
    } else {
        if embedded
            && !opts
                .dns_options
                .iter()
                .map(String::as_str)
                .any(|o| ndots(&o))
        {
            options.push("ndots:0");
        }
        options.extend(opts.dns_options.iter().map(String::as_str));
    }
    if !options.is_empty() {
        for o in &options {
            one_token("DNS option", o)?;
        }
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    Ok(out)
}

/// The writer's own guard: a value must be one non-empty token of a line, or it could start
/// a new line (`nameserver ...`) or split into several words.
fn one_token<'a>(what: &'static str, v: &'a str) -> Result<&'a str, FilesError> {
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(FilesError::Unsafe {
            what,
            value: crate::validate::shown(v),
        });
    }
    Ok(v)
}

/// A `--link` target as it appears in the linking container's hosts file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkHost {
    /// The target's address.
    pub ip: Ipv4Addr,
    /// The name the link gives it.
    pub alias: String,
    /// The target's own name.
    pub name: String,
}

/// The targets of `endpoint`'s `--link`s, looked up on its network.
pub fn link_hosts(state: &State, endpoint: &Endpoint) -> Result<Vec<LinkHost>, FilesError> {
    endpoint
        .spec
        .links
        .iter()
        .map(|link| {
            let (target, alias) = parse_link(link);
            let t = state
                .endpoints_of(&endpoint.network_id)
                .find(|p| p.spec.name == target)
                .ok_or_else(|| FilesError::NoLinkTarget {
                    link: link.clone(),
                    target: target.to_string(),
                })?;
            Ok(LinkHost {
                ip: t.ip,
                alias: alias.to_string(),
                name: target.to_string(),
            })
        })
        .collect()
}

const LOCALHOST: &str = "127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
";

/// A container's hosts file: docker's localhost block, the `--add-host` entries, the `links`
/// (`IP alias name`; only given on the default network, where there is no embedded resolver),
/// and the container's own `IP hostname` line (`--hostname`, or `default_hostname`).
pub fn hosts(
    opts: &NameOptions,
    own_ip: Ipv4Addr,
    default_hostname: &str,
    links: &[LinkHost],
) -> Result<String, FilesError> {
    let mut out = String::from(LOCALHOST);
    for (name, ip) in &opts.add_hosts {
        out.push_str(&format!("{ip}\t{}\n", one_token("host name", name)?));
    }
    for l in links {
        let name = one_token("link target", &l.name)?;
        if l.alias == l.name {
            out.push_str(&format!("{}\t{name}\n", l.ip));
        } else {
            let alias = one_token("link alias", &l.alias)?;
            out.push_str(&format!("{}\t{alias} {name}\n", l.ip));
        }
    }
    let hostname = opts.hostname.as_deref().unwrap_or(default_hostname);
    out.push_str(&format!("{own_ip}\t{}\n", one_token("hostname", hostname)?));
    Ok(out)
}

/// Where an endpoint's files are (shown by inspect, bind-mounted by the runtime).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointFiles {
    /// The resolv.conf.
    pub resolv_conf: PathBuf,
    /// The hosts file.
    pub hosts: PathBuf,
}

impl EndpointFiles {
    /// The files of endpoint `endpoint_id` under the daemon's state directory:
    /// `STATE/containers/ID/{resolv.conf,hosts}`.
    pub fn under(state_dir: &Path, endpoint_id: &str) -> EndpointFiles {
        let dir = state_dir.join("containers").join(endpoint_id);
        EndpointFiles {
            resolv_conf: dir.join("resolv.conf"),
            hosts: dir.join("hosts"),
        }
    }

    /// Writes both files (creating their directory). Existing files are rewritten in place, so
    /// that a bind mount of them sees the new text. The files are 0644 (any user in the
    /// container reads them) in a 0711 directory: nobody else can list the endpoints, and a
    /// runtime that bind-mounts from inside a user namespace can still reach them.
    pub fn write(&self, resolv_conf: &str, hosts: &str) -> Result<(), FilesError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FilesError::Io { path, source }
        };
        if let Some(dir) = self.hosts.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(dir)
                .and_then(|()| {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
                })
                .map_err(io(dir))?;
        }
        for (path, text) in [(&self.resolv_conf, resolv_conf), (&self.hosts, hosts)] {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(path)
                .and_then(|mut f| {
                    f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
                    f.write_all(text.as_bytes())
                })
                .map_err(io(path))?;
        }
        Ok(())
    }

    /// Removes both files and their directory (when the endpoint goes); missing files are fine.
    pub fn remove(&self) -> Result<(), FilesError> {
        for path in [&self.resolv_conf, &self.hosts] {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(FilesError::Io {
                        path: path.clone(),
                        source: e,
                    })
                }
                _ => {}
            }
        }
        if let Some(dir) = self.hosts.parent() {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{ep, net, stamps};

    fn host() -> ResolvConf {
        ResolvConf::parse(
            "# comment\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver bogus\n\
             nameserver fd00::53\n\
             search corp.example lab.example\noptions edns0 ndots:3\n",
        )
    }

    #[test]
    fn host_resolv_conf_parses() {
        let h = host();
        assert_eq!(
            h.nameservers,
            [
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53)),
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                "fd00::53".parse::<IpAddr>().unwrap(),
            ]
        );
        assert_eq!(h.search, ["corp.example", "lab.example"]);
        assert_eq!(h.options, ["edns0", "ndots:3"]);
    }

    #[test]
    fn embedded_resolv_conf_is_dockers() {
        let o = NameOptions {
            dns: vec![Ipv4Addr::new(9, 9, 9, 9)],
            ..NameOptions::default()
        };
        assert_eq!(
            resolv_conf(&o, &host(), true).unwrap(),
            "# Generated by sluice.\nnameserver 127.0.0.11\nsearch corp.example lab.example\n\
             options ndots:0 edns0\n"
        );
        let o = NameOptions {
            dns_options: vec!["ndots:2".into(), "timeout:1".into()],
            ..NameOptions::default()
        };
        assert_eq!(
            resolv_conf(&o, &ResolvConf::default(), true).unwrap(),
            "# Generated by sluice.\nnameserver 127.0.0.11\noptions ndots:2 timeout:1\n"
        );
        let o = NameOptions {
            dns_options: vec!["timeout:1".into()],
            ..NameOptions::default()
        };
        assert_eq!(
            resolv_conf(&o, &host(), true).unwrap(),
            "# Generated by sluice.\nnameserver 127.0.0.11\nsearch corp.example lab.example\n\
             options ndots:0 timeout:1\n"
        );
    }

    #[test]
    fn default_network_resolv_conf_uses_host_or_dns() {
        assert_eq!(
            resolv_conf(&NameOptions::default(), &host(), false).unwrap(),
            "# Generated by sluice.\nnameserver 10.0.0.2\nsearch corp.example lab.example\n\
             options edns0 ndots:3\n"
        );
        let o = NameOptions {
            dns: vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(9, 9, 9, 9)],
            dns_search: vec!["a.example".into()],
            dns_options: vec!["timeout:1".into()],
            ..NameOptions::default()
        };
        assert_eq!(
            resolv_conf(&o, &host(), false).unwrap(),
            "# Generated by sluice.\nnameserver 1.1.1.1\nnameserver 9.9.9.9\nsearch a.example\n\
             options timeout:1\n"
        );
        let local_only = ResolvConf::parse("nameserver 127.0.0.53\n");
        assert_eq!(
            resolv_conf(&NameOptions::default(), &local_only, false).unwrap(),
            "# Generated by sluice.\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
    }

    #[test]
    fn hosts_file_is_dockers() {
        let o = NameOptions {
            hostname: Some("box".into()),
            add_hosts: vec![parse_add_host("db.local:10.9.0.1").unwrap()],
            ..NameOptions::default()
        };
        let links = [
            LinkHost {
                ip: Ipv4Addr::new(172, 17, 0, 3),
                alias: "cache".into(),
                name: "redis".into(),
            },
            LinkHost {
                ip: Ipv4Addr::new(172, 17, 0, 4),
                alias: "pg".into(),
                name: "pg".into(),
            },
        ];
        assert_eq!(
            hosts(&o, Ipv4Addr::new(172, 17, 0, 2), "web", &links).unwrap(),
            format!(
                "{LOCALHOST}10.9.0.1\tdb.local\n172.17.0.3\tcache redis\n172.17.0.4\tpg\n\
                 172.17.0.2\tbox\n"
            )
        );
        assert_eq!(
            hosts(
                &NameOptions::default(),
                Ipv4Addr::new(10, 1, 0, 2),
                "web",
                &[]
            )
            .unwrap(),
            format!("{LOCALHOST}10.1.0.2\tweb\n")
        );
    }

    #[test]
    fn add_host_parses() {
        assert_eq!(
            parse_add_host("h=1.2.3.4").unwrap(),
            ("h".to_string(), Ipv4Addr::new(1, 2, 3, 4))
        );
        assert!(matches!(parse_add_host("h"), Err(FilesError::NotNameIp(_))));
        assert!(matches!(
            parse_add_host(":1.2.3.4"),
            Err(FilesError::BadHostName(_))
        ));
        assert!(matches!(
            parse_add_host("a b:1.2.3.4"),
            Err(FilesError::BadHostName(_))
        ));
        assert!(matches!(
            parse_add_host("h:host-gateway"),
            Err(FilesError::BadIp(..))
        ));
        assert!(matches!(
            parse_add_host("h:::1"),
            Err(FilesError::BadIp(..))
        ));
        let o = NameOptions {
            add_hosts: vec![("h".into(), Ipv4Addr::new(1, 2, 3, 4))],
            ..NameOptions::default()
        };
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(json, r#"{"add_hosts":[["h","1.2.3.4"]]}"#);
        assert_eq!(serde_json::from_str::<NameOptions>(&json).unwrap(), o);
        assert_eq!(
            serde_json::from_str::<NameOptions>("{}").unwrap(),
            NameOptions::default()
        );
    }

    #[test]
    fn the_writer_refuses_values_that_add_lines() {
        let evil = "a\nnameserver 6.6.6.6";
        let o = NameOptions {
            dns_search: vec![evil.into()],
            ..NameOptions::default()
        };
        assert!(matches!(
            resolv_conf(&o, &host(), true),
            Err(FilesError::Unsafe { .. })
        ));
        let o = NameOptions {
            dns_options: vec!["ndots:1\nnameserver 7.7.7.7".into()],
            ..NameOptions::default()
        };
        assert!(resolv_conf(&o, &host(), false).is_err());
        let o = NameOptions {
            hostname: Some(evil.into()),
            ..NameOptions::default()
        };
        let ip = Ipv4Addr::new(10, 1, 0, 2);
        assert!(hosts(&o, ip, "web", &[]).is_err());
        let o = NameOptions {
            add_hosts: vec![(evil.into(), ip)],
            ..NameOptions::default()
        };
        assert!(hosts(&o, ip, "web", &[]).is_err());
        let link = LinkHost {
            ip,
            alias: "x\ty".into(),
            name: "pg".into(),
        };
        assert!(hosts(&NameOptions::default(), ip, "web", &[link]).is_err());
        assert!(hosts(&NameOptions::default(), ip, "we\u{7}b", &[]).is_err());
    }

    #[test]
    fn links_resolve_on_the_network() {
        let mut st = stamps();
        let mut s = State::with_defaults(&mut st);
        s.create_network(net("other", Some("10.5.0.0/24")), st())
            .unwrap();
        s.connect(ep("bridge", "redis", 1), st()).unwrap();
        s.connect(ep("other", "pg", 3), st()).unwrap();
        let mut web = ep("bridge", "web", 2);
        web.links = vec!["redis:cache".into()];
        let web = s.connect(web, st()).unwrap().clone();
        assert_eq!(
            link_hosts(&s, &web).unwrap(),
            [LinkHost {
                ip: Ipv4Addr::new(172, 17, 0, 2),
                alias: "cache".into(),
                name: "redis".into()
            }]
        );
        let mut bad = web.clone();
        bad.spec.links = vec!["pg".into()];
        assert!(matches!(
            link_hosts(&s, &bad),
            Err(FilesError::NoLinkTarget { .. })
        ));
    }

    #[test]
    fn files_are_written_and_removed() {
        let dir = std::env::temp_dir().join(format!("sluice-dns-files-{}", std::process::id()));
        let f = EndpointFiles::under(&dir, "abc");
        assert_eq!(f.hosts, dir.join("containers/abc/hosts"));
        f.write("nameserver 127.0.0.11\n", "127.0.0.1\tlocalhost\n")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&f.resolv_conf).unwrap(),
            "nameserver 127.0.0.11\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&f.resolv_conf), 0o644, "containers read it");
        assert_eq!(mode(&f.hosts), 0o644);
        assert_eq!(mode(f.hosts.parent().unwrap()), 0o711, "nobody lists it");
        std::fs::set_permissions(&f.hosts, std::fs::Permissions::from_mode(0o600)).unwrap();
        f.write("nameserver 10.0.0.1\n", "x\n").unwrap();
        assert_eq!(mode(&f.hosts), 0o644, "a rewrite restores the mode");
        assert_eq!(std::fs::read_to_string(&f.hosts).unwrap(), "x\n");
        f.remove().unwrap();
        assert!(!f.hosts.exists() && !f.resolv_conf.exists());
        f.remove().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
