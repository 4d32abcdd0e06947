//! The container files' types the API shows and the CLI and CNI plugin parse: `docker run`'s
//! name options, the host's resolv.conf as read, and where an endpoint's resolv.conf and hosts
//! files are. The daemon writes the files' text (`sluice-control`'s `dns::files`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

    #[test]
    fn host_resolv_conf_parses() {
        let text = "# comment\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver bogus\n\
                    nameserver fd00::53\nsearch corp.example lab.example\noptions edns0 ndots:3\n";
        let h = ResolvConf::parse(text);
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
        f.write("nameserver 10.0.0.1\n", "x\n").unwrap();
        assert_eq!(std::fs::read_to_string(&f.hosts).unwrap(), "x\n");
        f.remove().unwrap();
        assert!(!f.hosts.exists() && !f.resolv_conf.exists());
        f.remove().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
