//! Published ports in docker's `-p` syntax, `[[HOSTIP:]HPORT[-HPORT]:]CPORT[-CPORT][/tcp|udp]`:
//! the CLI parses what the operator typed, the daemon picks a host port where none was given
//! (`-p 80`, `-p 127.0.0.1::80`) and stores the mapping with it, and the dataplane gets a
//! `PortForward` from it. Errors say which part is wrong. A v6 host address is written in
//! brackets (`[2001:db8::2]:8080:80`): the mapping is then published on that v6 address only.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sluice_dataplane::config::{hosts_clash, L4Proto, PortRange};

/// Why a `-p` value cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Nothing was given.
    #[error("empty port mapping (expected [[HOSTIP:]HOSTPORT:]CONTAINERPORT[/tcp|udp])")]
    Empty,
    /// More colon-separated parts than `HOSTIP:HPORT:CPORT`.
    #[error("{0:?} has too many ':' parts (expected [HOSTIP:]HOSTPORT:CONTAINERPORT; write an IPv6 host address in brackets)")]
    TooManyParts(String),
    /// The host address is neither an IPv4 address nor a bracketed IPv6 one.
    #[error("host address {0:?} is not an IPv4 address or an IPv6 address in brackets ([2001:db8::2]:HOSTPORT:CONTAINERPORT)")]
    BadHostIp(String),
    /// A port is not a number from 1 to 65535.
    #[error("{what} port {text:?} is not a port number (1-65535)")]
    BadPort {
        /// "host" or "container".
        what: &'static str,
        /// The offending text.
        text: String,
    },
    /// A range whose last port is below its first.
    #[error("{what} port range {first}-{last} is reversed (write {last}-{first})")]
    ReversedRange {
        /// "host" or "container".
        what: &'static str,
        /// First port.
        first: u16,
        /// Last port.
        last: u16,
    },
    /// The container range is neither as long as the host range nor a single port.
    #[error("{container_len} container ports for {host_len} host ports (give {host_len} container ports or one)")]
    RangeMismatch {
        /// Number of host ports.
        host_len: u32,
        /// Number of container ports.
        container_len: u32,
    },
    /// A protocol other than tcp or udp.
    #[error("unknown protocol {0:?} (use tcp or udp)")]
    BadProto(String),
}

/// One `-p` mapping: inbound `proto` traffic to `host_ip:host_ports` goes to the endpoint's
/// `container_ports`. Stored and sent as its canonical string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublishSpec {
    /// Host address; `None` is every address (`0.0.0.0` is normalised to `None`).
    pub host_ip: Option<Ipv4Addr>,
    /// A v6 host address instead (`[ADDR]:...`): published on that address only (`[::]` is
    /// every address, normalised to no address at all).
    pub host_ip6: Option<Ipv6Addr>,
    /// Host ports; `None` until the daemon picks them from its host-port range (`-p 80`).
    pub host_ports: Option<PortRange>,
    /// Container ports: as many as the host ports, or one that all map to.
    pub container_ports: PortRange,
    /// TCP or UDP.
    pub proto: L4Proto,
}

impl PublishSpec {
    /// `tcp` or `udp`, as `-p` and docker ps write it.
    pub fn proto_name(&self) -> &'static str {
        if self.proto == L4Proto::Udp {
            "udp"
        } else {
            "tcp"
        }
    }

    /// True when the two mappings cannot both be published: same protocol, overlapping host
    /// ports, and the same address or either on every address (the dataplane's rule). A mapping
    /// whose host ports are not picked yet clashes with nothing.
    pub fn clashes_with(&self, other: &PublishSpec) -> bool {
        let overlap = match (self.host_ports, other.host_ports) {
            (Some(a), Some(b)) => a.overlaps(&b),
            _ => false,
        };
        self.proto == other.proto
            && overlap
            && hosts_clash(
                (self.host_ip, self.host_ip6),
                (other.host_ip, other.host_ip6),
            )
    }

    /// The same mapping on `host_ports`: what the daemon stores once it picked them.
    pub fn with_host_ports(self, host_ports: PortRange) -> PublishSpec {
        PublishSpec {
            host_ports: Some(host_ports),
            ..self
        }
    }
}

fn parse_range(what: &'static str, s: &str) -> Result<PortRange, PublishError> {
    let port = |t: &str| {
        t.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| PublishError::BadPort {
                what,
                text: t.to_string(),
            })
    };
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(s)?;
            (p, p)
        }
    };
    if last < first {
        return Err(PublishError::ReversedRange { what, first, last });
    }
    Ok(PortRange { first, last })
}

/// A host-port range as `FIRST-LAST` (or one port), like the daemon's `--host-port-range`.
pub fn parse_port_range(s: &str) -> Result<PortRange, PublishError> {
    parse_range("host", s)
}

impl FromStr for PublishSpec {
    type Err = PublishError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(PublishError::Empty);
        }
        let (addr_ports, proto) = match s.rsplit_once('/') {
            Some((a, "tcp")) => (a, L4Proto::Tcp),
            Some((a, "udp")) => (a, L4Proto::Udp),
            Some((_, p)) => return Err(PublishError::BadProto(p.to_string())),
            None => (s, L4Proto::Tcp),
        };
        // `[V6]:HPORT:CPORT`. `[::]:...`, docker's every-address-over-v6 form, is every
        // address, as a mapping without a host address is here (it is reached on the uplink's
        // v4 and v6 addresses).
        let (host_ip6, addr_ports) = match addr_ports.strip_prefix('[') {
            Some(rest) => {
                let bad = || PublishError::BadHostIp(addr_ports.to_string());
                let (ip, ports) = rest.split_once("]:").ok_or_else(bad)?;
                let ip: Ipv6Addr = ip.parse().map_err(|_| bad())?;
                if !ports.contains(':') {
                    return Err(bad());
                }
                ((!ip.is_unspecified()).then_some(ip), ports)
            }
            None => (None, addr_ports),
        };
        let parts: Vec<&str> = addr_ports.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [c] => (None, "", *c),
            [h, c] => (None, *h, *c),
            [ip, h, c] if host_ip6.is_none() => (Some(*ip), *h, *c),
            _ => return Err(PublishError::TooManyParts(s.to_string())),
        };
        let host_ip = match ip {
            None => None,
            Some(t) => {
                let a: Ipv4Addr = t
                    .parse()
                    .map_err(|_| PublishError::BadHostIp(t.to_string()))?;
                (!a.is_unspecified()).then_some(a)
            }
        };
        let host_ports = (!host.is_empty())
            .then(|| parse_range("host", host))
            .transpose()?;
        let container_ports = parse_range("container", container)?;
        if let Some(h) = host_ports {
            let (host_len, container_len) = (h.len(), container_ports.len());
            if container_len != host_len && container_len != 1 {
                return Err(PublishError::RangeMismatch {
                    host_len,
                    container_len,
                });
            }
        }
        Ok(PublishSpec {
            host_ip,
            host_ip6,
            host_ports,
            container_ports,
            proto,
        })
    }
}

impl fmt::Display for PublishSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = match (self.host_ip, self.host_ip6) {
            (_, Some(ip6)) => Some(format!("[{ip6}]")),
            (ip, None) => ip.map(|ip| ip.to_string()),
        };
        match (ip, self.host_ports) {
            (Some(ip), Some(h)) => write!(f, "{ip}:{h}:")?,
            (Some(ip), None) => write!(f, "{ip}::")?,
            (None, Some(h)) => write!(f, "{h}:")?,
            (None, None) => {}
        }
        write!(f, "{}/{}", self.container_ports, self.proto_name())
    }
}

impl TryFrom<String> for PublishSpec {
    type Error = PublishError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PublishSpec> for String {
    fn from(p: PublishSpec) -> String {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> PublishSpec {
        s.parse().unwrap()
    }

    #[test]
    fn parses_docker_forms() {
        let a = p("8080:80");
        assert_eq!(a.host_ip, None);
        assert_eq!(a.host_ports, Some(PortRange::single(8080)));
        assert_eq!(a.container_ports, PortRange::single(80));
        assert_eq!(a.proto, L4Proto::Tcp);
        let b = p("127.0.0.1:5300-5301:53-54/udp");
        assert_eq!(b.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(
            b.host_ports,
            Some(PortRange {
                first: 5300,
                last: 5301
            })
        );
        assert_eq!(
            b.container_ports,
            PortRange {
                first: 53,
                last: 54
            }
        );
        assert_eq!(b.proto, L4Proto::Udp);
        assert_eq!(
            p("0.0.0.0:1:2/tcp").host_ip,
            None,
            "0.0.0.0 is every address"
        );
        assert_eq!(p("8000-8009:80").container_ports, PortRange::single(80));
    }

    #[test]
    fn container_port_alone_leaves_the_host_port_to_the_daemon() {
        let a = p("80");
        assert_eq!((a.host_ip, a.host_ports), (None, None));
        assert_eq!(a.container_ports, PortRange::single(80));
        assert_eq!(a.to_string(), "80/tcp");
        let b = p("127.0.0.1::53/udp");
        assert_eq!(b.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(b.host_ports, None);
        assert_eq!(b.to_string(), "127.0.0.1::53/udp");
        assert_eq!(p(":80"), a, "an empty host port is docker's random one too");
        assert_eq!(p("[::]:8080:80"), p("8080:80"), "[::] is every address");
        assert_eq!(p("[::]::80/udp"), p("80/udp"));
        assert_eq!(p("8000-8002").container_ports.len(), 3);
        assert!(
            !a.clashes_with(&a),
            "an unpicked port clashes with nothing yet"
        );
        let picked = a.with_host_ports(PortRange::single(61000));
        assert_eq!(picked.to_string(), "61000:80/tcp");
        assert!(picked.clashes_with(&p("61000:81")));
    }

    #[test]
    fn a_v6_host_address_is_published_there_only() {
        let v6 = p("[2001:db8::2]:8080:80/udp");
        let ip6: Ipv6Addr = "2001:db8::2".parse().unwrap();
        assert_eq!((v6.host_ip, v6.host_ip6), (None, Some(ip6)));
        assert_eq!(v6.host_ports, Some(PortRange::single(8080)));
        assert_eq!(v6.to_string(), "[2001:db8::2]:8080:80/udp");
        assert_eq!(p("[2001:db8::2]::80").to_string(), "[2001:db8::2]::80/tcp");
        assert_eq!(crate::api::port_column(&v6), "[2001:db8::2]:8080->80/udp");
        // The same port on another v6 address or on a v4 address is free; every address is not.
        assert!(!v6.clashes_with(&p("[2001:db8::3]:8080:80/udp")));
        assert!(!v6.clashes_with(&p("192.0.2.2:8080:80/udp")));
        assert!(v6.clashes_with(&p("[2001:db8::2]:8080:81/udp")));
        assert!(v6.clashes_with(&p("8080:80/udp")));
        assert!(p("[::]:8080:80/udp").clashes_with(&v6));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = |s: &str| s.parse::<PublishSpec>().unwrap_err();
        assert_eq!(e(""), PublishError::Empty);
        assert!(matches!(e("1:2:3:4"), PublishError::TooManyParts(_)));
        assert_eq!(e("foo:1:2"), PublishError::BadHostIp("foo".into()));
        assert_eq!(e("[::1]:80"), PublishError::BadHostIp("[::1]:80".into()));
        assert_eq!(
            e("[fd00::x]:1:2"),
            PublishError::BadHostIp("[fd00::x]:1:2".into())
        );
        assert!(matches!(e("[::1]:9:1:2"), PublishError::TooManyParts(_)));
        assert_eq!(e("[::]1:2"), PublishError::BadHostIp("[::]1:2".into()));
        assert_eq!(
            e("0:80"),
            PublishError::BadPort {
                what: "host",
                text: "0".into()
            }
        );
        assert_eq!(
            e("80:70000"),
            PublishError::BadPort {
                what: "container",
                text: "70000".into()
            }
        );
        assert_eq!(
            e("90-80:80"),
            PublishError::ReversedRange {
                what: "host",
                first: 90,
                last: 80
            }
        );
        assert_eq!(
            e("80-81:80-82"),
            PublishError::RangeMismatch {
                host_len: 2,
                container_len: 3
            }
        );
        assert_eq!(e("80:80/sctp"), PublishError::BadProto("sctp".into()));
        assert_eq!(
            e("90-80:80").to_string(),
            "host port range 90-80 is reversed (write 80-90)"
        );
    }

    #[test]
    fn clash_rules_follow_the_dataplane() {
        assert!(p("8080:80").clashes_with(&p("8080:81")));
        assert!(
            p("8080:80").clashes_with(&p("1.2.3.4:8080:81")),
            "any vs specific"
        );
        assert!(!p("1.2.3.4:8080:80").clashes_with(&p("1.2.3.5:8080:80")));
        assert!(p("1.2.3.4:8080:80").clashes_with(&p("1.2.3.4:8080:80")));
        assert!(
            p("0.0.0.0:8080:80").clashes_with(&p("1.2.3.4:8080:81")),
            "0.0.0.0 is every address, as the dataplane's table holds it"
        );
        assert!(
            !p("8080:80/tcp").clashes_with(&p("8080:80/udp")),
            "tcp/udp separate"
        );
        assert!(p("8000-8010:80").clashes_with(&p("8010:80")));
        assert!(!p("8000-8010:80").clashes_with(&p("8011:80")));
    }

    #[test]
    fn serde_uses_the_string() {
        let a = p("1.2.3.4:80-81:90-91/udp");
        let j = serde_json::to_string(&a).unwrap();
        assert_eq!(j, "\"1.2.3.4:80-81:90-91/udp\"");
        assert_eq!(serde_json::from_str::<PublishSpec>(&j).unwrap(), a);
        assert!(serde_json::from_str::<PublishSpec>("\"0:80\"").is_err());
        assert_eq!(
            serde_json::from_str::<PublishSpec>("\"80\"").unwrap(),
            p("80")
        );
    }

    fn range() -> impl Strategy<Value = PortRange> {
        (1u16..=65535, 0u16..4).prop_map(|(f, n)| PortRange {
            first: f,
            last: f.saturating_add(n),
        })
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = s.parse::<PublishSpec>();
        }

        #[test]
        fn never_panics_on_near_misses(s in "[0-9.:/a-z-]{0,30}") {
            if let Ok(spec) = s.parse::<PublishSpec>() {
                prop_assert_eq!(spec.to_string().parse::<PublishSpec>(), Ok(spec));
            }
        }

        #[test]
        fn round_trips(ip in proptest::option::of(1u32..), h in range(), single in any::<bool>(),
                       c in 1u16..=65535, udp in any::<bool>(), picked in any::<bool>(),
                       v6 in any::<bool>()) {
            let container_ports = if single {
                PortRange::single(c)
            } else {
                let first = c.min(65535 - (h.last - h.first));
                PortRange { first, last: first + (h.last - h.first) }
            };
            let spec = PublishSpec {
                host_ip: ip.filter(|_| !v6).map(Ipv4Addr::from),
                host_ip6: ip.filter(|_| v6).map(|n| Ipv6Addr::from(u128::from(n) << 64 | 1)),
                host_ports: picked.then_some(h),
                container_ports,
                proto: if udp { L4Proto::Udp } else { L4Proto::Tcp },
            };
            let text = spec.to_string();
            prop_assert_eq!(text.parse::<PublishSpec>(), Ok(spec));
        }
    }
}
