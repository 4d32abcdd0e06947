//! The rules for every name and value a client hands sluice that ends up in a file, a table or
//! a message: DNS names (RFC 1123) for host names, aliases and search domains, resolv.conf
//! tokens for DNS options, length limits on every name and label, usable subnets and the
//! addresses sluice owns. One place, called by the CLI (so a mistake is caught before the
//! request is sent) and by the state's rules (so the API, the docker plugin and CNI get the
//! same answer). Values that are too long are never echoed whole (see [`shown`]).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use sluice_dataplane::config::Ipv4Cidr;

use crate::model::{EndpointSpec, NetworkSpec, OptionError, Sandbox};

/// The longest network, endpoint, aux address or label key name.
pub const NAME_MAX: usize = 255;
/// The longest DNS name (RFC 1123 with the trailing dot left out).
pub const DNS_NAME_MAX: usize = 253;
/// The longest label of a DNS name.
pub const DNS_LABEL_MAX: usize = 63;
/// The longest label value.
pub const LABEL_VALUE_MAX: usize = 4096;
/// The longest namespace path (Linux's PATH_MAX).
pub const PATH_MAX: usize = 4096;
/// How much of a refused value an error message repeats.
const SHOWN_MAX: usize = 64;

/// Why a request's value is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A name or label over its length limit.
    #[error("{what} is {len} bytes long (at most {max}): {start:?}...")]
    TooLong {
        /// What the value is.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
        /// Its first 64 characters, for the message.
        start: String,
    },
    /// Not an RFC 1123 name.
    #[error("{what} {value:?} is not a valid DNS name: {why}")]
    DnsName {
        /// What the value is.
        what: &'static str,
        /// The value (shortened).
        value: String,
        /// The rule it breaks.
        why: &'static str,
    },
    /// A character that would break a resolv.conf or hosts line.
    #[error("{what} {value:?} is invalid: use {allowed}")]
    Token {
        /// What the value is.
        what: &'static str,
        /// The value (shortened).
        value: String,
        /// The characters accepted.
        allowed: &'static str,
    },
    /// A label or aux address name with a control character.
    #[error("{what} {value:?} contains a control character")]
    Control {
        /// What the value is.
        what: &'static str,
        /// The value (shortened).
        value: String,
    },
    /// A subnet no network can use.
    #[error("subnet {subnet} is not usable: {why}")]
    UnusableSubnet {
        /// The subnet.
        subnet: Ipv4Cidr,
        /// Which reserved range it touches.
        why: &'static str,
    },
    /// A subnet that overlaps an address sluice owns.
    #[error("subnet {subnet} overlaps {owner} ({}/{}), an address sluice owns", owned.addr, owned.prefix)]
    OwnAddress {
        /// The subnet.
        subnet: Ipv4Cidr,
        /// Whose address (`uplink eth1`).
        owner: String,
        /// The owned address and its prefix.
        owned: Ipv4Cidr,
    },
    /// A driver option out of range.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// A sandbox that does not exist.
    #[error("{0} does not exist")]
    NoSandbox(String),
}

impl Invalid {
    /// The HTTP status the error is answered with: 409 for a clash with sluice's own
    /// addresses, 404 for a missing sandbox, 400 for the rest.
    pub fn status(&self) -> u16 {
        match self {
            Invalid::OwnAddress { .. } => 409,
            Invalid::NoSandbox(_) => 404,
            _ => 400,
        }
    }
}

/// A value as an error message repeats it: at most 64 characters, with the total length when
/// cut.
pub fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_MAX) {
        Some((cut, _)) => format!("{}... ({} bytes)", &s[..cut], s.len()),
        None => s.to_string(),
    }
}

fn length(what: &'static str, s: &str, max: usize) -> Result<(), Invalid> {
    if s.len() > max {
        return Err(Invalid::TooLong {
            what,
            len: s.len(),
            max,
            start: s.chars().take(SHOWN_MAX).collect(),
        });
    }
    Ok(())
}

fn no_control(what: &'static str, s: &str, max: usize) -> Result<(), Invalid> {
    length(what, s, max)?;
    if s.chars().any(char::is_control) {
        return Err(Invalid::Control {
            what,
            value: shown(s),
        });
    }
    Ok(())
}

/// An RFC 1123 name: dot-separated labels of 1-63 letters, digits and `-` (and `_` where
/// `underscore`), none starting or ending with `-`, 253 bytes at most.
fn rfc1123(what: &'static str, s: &str, underscore: bool) -> Result<(), Invalid> {
    let bad = |why| Invalid::DnsName {
        what,
        value: shown(s),
        why,
    };
    if s.is_empty() {
        return Err(bad("it is empty"));
    }
    if s.len() > DNS_NAME_MAX {
        return Err(bad("longer than 253 bytes"));
    }
    for label in s.split('.') {
        if label.is_empty() || label.len() > DNS_LABEL_MAX {
            return Err(bad("every dot-separated label has 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || (underscore && c == b'_'))
        {
            return Err(bad(if underscore {
                "use letters, digits, '-' and '_' between dots"
            } else {
                "use letters, digits and '-' between dots"
            }));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label cannot start or end with '-'"));
        }
    }
    Ok(())
}

/// A host name (`--hostname`, an `--add-host` name): RFC 1123.
pub fn host_name(what: &'static str, s: &str) -> Result<(), Invalid> {
    rfc1123(what, s, false)
}

/// A network-scoped alias or a link alias: RFC 1123, with `_` also allowed inside labels
/// (compose service names like `my_db`; it cannot break a file or a DNS answer).
pub fn alias(s: &str) -> Result<(), Invalid> {
    rfc1123("alias", s, true)
}

/// A DNS search domain: RFC 1123, one trailing dot allowed (docker's rule).
pub fn search_domain(s: &str) -> Result<(), Invalid> {
    rfc1123("DNS search domain", s.strip_suffix('.').unwrap_or(s), false)
}

/// One token of a resolv.conf line: 1-255 characters, each a letter, a digit or in `extra`.
fn token(what: &'static str, s: &str, extra: &[u8], allowed: &'static str) -> Result<(), Invalid> {
    length(what, s, NAME_MAX)?;
    if s.is_empty()
        || !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
    {
        return Err(Invalid::Token {
            what,
            value: shown(s),
            allowed,
        });
    }
    Ok(())
}

/// A resolv.conf option (`ndots:2`, `timeout:1`, `attempts:3`, `rotate`, `edns0`,
/// `single-request-reopen`, ...): one token of letters, digits and `- _ . :`.
pub fn dns_option(s: &str) -> Result<(), Invalid> {
    token(
        "DNS option",
        s,
        b"-_.:",
        "letters, digits and - _ . : (like ndots:2)",
    )
}

/// A legacy link, `NAME[:ALIAS]`: NAME an endpoint name (docker's characters), ALIAS an
/// alias.
pub fn link(s: &str) -> Result<(), Invalid> {
    let (name, alias_) = match s.split_once(':') {
        Some((n, a)) if !a.is_empty() => (n, Some(a)),
        Some((n, _)) => (n, None),
        None => (s, None),
    };
    token(
        "link target",
        name,
        b"-_.",
        "an endpoint name (letters, digits, _ . -) then :ALIAS",
    )?;
    alias_.map_or(Ok(()), alias)
}

/// A prefix in a constant.
const fn cidr(a: u8, prefix: u8) -> Ipv4Cidr {
    Ipv4Cidr {
        addr: Ipv4Addr::new(a, 0, 0, 0),
        prefix,
    }
}

/// The special-purpose IPv4 ranges a network cannot use, with what each is.
const RESERVED: [(Ipv4Cidr, &str); 4] = [
    (cidr(0, 8), "0.0.0.0/8 is \"this network\" (RFC 1122)"),
    (
        cidr(127, 8),
        "127.0.0.0/8 is loopback, every sandbox has its own",
    ),
    (cidr(224, 4), "224.0.0.0/4 is multicast"),
    (
        cidr(240, 4),
        "240.0.0.0/4 is reserved (and holds the broadcast address)",
    ),
];

/// Refuses a subnet that touches loopback, "this network", multicast or the reserved range
/// (which holds 255.255.255.255).
pub fn usable_subnet(subnet: Ipv4Cidr) -> Result<(), Invalid> {
    match RESERVED.iter().find(|(r, _)| r.overlaps(&subnet)) {
        Some((_, why)) => Err(Invalid::UnusableSubnet { subnet, why }),
        None => Ok(()),
    }
}

/// Refuses a subnet overlapping one of `own`: sluice's addresses with their prefixes (its
/// uplinks), named by owner.
pub fn own_clash<'a>(
    subnet: Ipv4Cidr,
    own: impl IntoIterator<Item = &'a (String, Ipv4Cidr)>,
) -> Result<(), Invalid> {
    match own.into_iter().find(|(_, o)| o.overlaps(&subnet)) {
        Some((owner, owned)) => Err(Invalid::OwnAddress {
            subnet,
            owner: owner.clone(),
            owned: *owned,
        }),
        None => Ok(()),
    }
}

/// sluice's addresses: `own` (the daemon's uplink) and the uplink address of every network of
/// `specs` that has its own, named by network.
pub fn own_addresses<'a>(
    own: &[(String, Ipv4Cidr)],
    specs: impl IntoIterator<Item = &'a NetworkSpec>,
) -> Vec<(String, Ipv4Cidr)> {
    let named = |s: &NetworkSpec| {
        let u = s.uplink.as_ref()?;
        Some((format!("network {}'s uplink {}", s.name, u.name), u.ip))
    };
    own.iter()
        .cloned()
        .chain(specs.into_iter().filter_map(named))
        .collect()
}

/// Everything about a network spec that needs no state: lengths, labels, options, subnets.
pub fn network_spec(spec: &NetworkSpec) -> Result<(), Invalid> {
    length("network name", &spec.name, NAME_MAX)?;
    for (k, v) in &spec.labels {
        no_control("label key", k, NAME_MAX)?;
        no_control("label value", v, LABEL_VALUE_MAX)?;
    }
    for name in spec.aux_addresses.keys() {
        no_control("aux address name", name, NAME_MAX)?;
    }
    spec.options.check()?;
    if let Some(s) = spec.subnet {
        usable_subnet(s)?;
    }
    if let Some(u) = &spec.uplink {
        length("uplink interface name", &u.name, NAME_MAX)?;
        usable_subnet(u.ip)?;
    }
    Ok(())
}

/// Everything about an endpoint spec that needs no state: lengths, and the names that go into
/// its resolv.conf, hosts file and resolver.
pub fn endpoint_spec(spec: &EndpointSpec) -> Result<(), Invalid> {
    length("network", &spec.network, NAME_MAX)?;
    length("endpoint name", &spec.name, NAME_MAX)?;
    if let Sandbox::Netns(p) = &spec.sandbox {
        no_control("namespace path", &p.as_os_str().to_string_lossy(), PATH_MAX)?;
    }
    if let Some(i) = &spec.ifname {
        length("interface name", i, NAME_MAX)?;
    }
    for a in &spec.aliases {
        alias(a)?;
    }
    for l in &spec.links {
        link(l)?;
    }
    let n = &spec.names;
    if let Some(h) = &n.hostname {
        host_name("hostname", h)?;
    }
    for d in &n.dns_search {
        search_domain(d)?;
    }
    for o in &n.dns_options {
        dns_option(o)?;
    }
    for (name, _) in &n.add_hosts {
        host_name("--add-host name", name)?;
    }
    Ok(())
}

/// Refuses a sandbox that is not there (a namespace path or a process that does not exist),
/// so that the client hears 404 instead of a failed plumbing step.
pub fn sandbox_exists(s: &Sandbox) -> Result<(), Invalid> {
    let path = match s {
        Sandbox::Netns(p) => p.clone(),
        Sandbox::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
    };
    if std::fs::metadata(&path).is_err() {
        return Err(Invalid::NoSandbox(match s {
            Sandbox::Netns(_) => format!(
                "network namespace {}",
                shown(&path.as_os_str().to_string_lossy())
            ),
            Sandbox::Pid(pid) => format!("process {pid} (or its network namespace)"),
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> EndpointSpec {
        EndpointSpec {
            network: "n".into(),
            sandbox: Sandbox::Pid(1),
            name: "web".into(),
            ip: None,
            ip6: None,
            mac: None,
            aliases: vec![],
            links: vec![],
            publish: vec![],
            names: Default::default(),
            ifname: None,
            placement: Default::default(),
        }
    }

    #[test]
    fn host_names_follow_rfc_1123() {
        for ok in ["a", "web-1", "a.b.example", "0abc", &"x".repeat(63)] {
            assert_eq!(host_name("hostname", ok), Ok(()), "{ok}");
        }
        let long = vec!["a".repeat(63); 4].join(".");
        for bad in [
            "",
            "a\nnameserver 6.6.6.6",
            "a b",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a_b",
            "a#b",
            &"x".repeat(64),
            &long,
        ] {
            assert!(host_name("hostname", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn aliases_links_and_search_domains() {
        assert_eq!(alias("my_db"), Ok(()));
        assert!(alias("db\n1.2.3.4 evil").is_err());
        assert_eq!(link("redis"), Ok(()));
        assert_eq!(link("redis:cache"), Ok(()));
        assert_eq!(link("my_redis:"), Ok(()));
        assert!(link("redis:cache\n6.6.6.6 x").is_err());
        assert!(link("red is:cache").is_err());
        assert!(link("a:b:c").is_err());
        assert_eq!(search_domain("corp.example."), Ok(()));
        assert!(search_domain("x.com\nnameserver 6.6.6.6").is_err());
        assert!(search_domain("a b").is_err());
        assert!(search_domain(".").is_err());
    }

    #[test]
    fn dns_options_are_single_tokens() {
        for ok in [
            "ndots:2",
            "timeout:1",
            "attempts:3",
            "rotate",
            "edns0",
            "single-request-reopen",
        ] {
            assert_eq!(dns_option(ok), Ok(()), "{ok}");
        }
        for bad in ["ndots:1\nnameserver 7.7.7.7", "", "a b", "x#", "a\tb", "é"] {
            assert!(dns_option(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn endpoint_specs_with_injections_are_refused() {
        assert_eq!(endpoint_spec(&ep()), Ok(()));
        let mut e = ep();
        e.names.hostname = Some("a\nnameserver 6.6.6.6".into());
        assert!(endpoint_spec(&e).is_err());
        let mut e = ep();
        e.names.dns_search = vec!["x.com\nnameserver 6.6.6.6".into()];
        assert!(endpoint_spec(&e).is_err());
        let mut e = ep();
        e.names.dns_options = vec!["ndots:1\nnameserver 7.7.7.7".into()];
        assert!(endpoint_spec(&e).is_err());
        let mut e = ep();
        e.names.add_hosts = vec![("h\n6.6.6.6 evil".into(), "1.2.3.4".parse().unwrap())];
        assert!(endpoint_spec(&e).is_err());
        let mut e = ep();
        e.aliases = vec!["a\nb".into()];
        assert!(endpoint_spec(&e).is_err());
        let mut e = ep();
        e.links = vec!["a:b\nc".into()];
        assert!(endpoint_spec(&e).is_err());
    }

    #[test]
    fn long_values_are_refused_and_not_echoed_whole() {
        let mut e = ep();
        e.name = "a".repeat(100_000);
        let err = endpoint_spec(&e).unwrap_err();
        assert_eq!(err.status(), 400);
        let msg = err.to_string();
        assert!(msg.len() < 200, "{msg}");
        assert!(
            msg.starts_with("endpoint name is 100000 bytes long (at most 255): \"aaa"),
            "{msg}"
        );
        let mut n = NetworkSpec {
            name: "n".into(),
            ..NetworkSpec::default()
        };
        assert_eq!(network_spec(&n), Ok(()));
        n.labels.insert("k".into(), "v".repeat(LABEL_VALUE_MAX + 1));
        assert!(matches!(
            network_spec(&n),
            Err(Invalid::TooLong {
                what: "label value",
                ..
            })
        ));
        n.labels = [("k".repeat(NAME_MAX + 1), "v".into())].into();
        assert!(network_spec(&n).is_err());
        n.labels.clear();
        n.name = "n".repeat(NAME_MAX + 1);
        assert!(network_spec(&n).is_err());
        assert_eq!(shown("abc"), "abc");
        assert!(shown(&"é".repeat(100)).ends_with("... (200 bytes)"));
    }

    #[test]
    fn special_subnets_are_unusable() {
        for bad in [
            "0.0.0.0/8",
            "127.0.0.0/8",
            "127.0.0.0/24",
            "224.0.0.0/4",
            "239.1.0.0/16",
            "240.0.0.0/4",
            "255.255.255.0/24",
            "0.0.0.0/0",
        ] {
            let s: Ipv4Cidr = bad.parse().unwrap();
            assert!(
                matches!(usable_subnet(s), Err(Invalid::UnusableSubnet { .. })),
                "{bad}"
            );
        }
        for ok in ["10.0.0.0/8", "172.18.0.0/16", "192.168.1.0/24", "1.0.0.0/8"] {
            assert_eq!(usable_subnet(ok.parse().unwrap()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn own_addresses_clash_with_409() {
        let own = [("uplink eth1".to_string(), "192.0.2.2/24".parse().unwrap())];
        let err = own_clash("192.0.2.0/24".parse().unwrap(), &own).unwrap_err();
        assert_eq!(err.status(), 409);
        assert_eq!(
            err.to_string(),
            "subnet 192.0.2.0/24 overlaps uplink eth1 (192.0.2.2/24), an address sluice owns"
        );
        assert!(own_clash("192.0.0.0/16".parse().unwrap(), &own).is_err());
        assert!(own_clash("192.0.2.128/25".parse().unwrap(), &own).is_err());
        assert_eq!(own_clash("10.0.0.0/24".parse().unwrap(), &own), Ok(()));
    }

    #[test]
    fn options_from_json_are_checked() {
        let mut n = NetworkSpec {
            name: "n".into(),
            ..NetworkSpec::default()
        };
        n.options.mtu = Some(0);
        assert!(matches!(network_spec(&n), Err(Invalid::Option(_))));
        n.options.mtu = None;
        n.options.vlan = Some(5000);
        assert!(matches!(network_spec(&n), Err(Invalid::Option(_))));
        n.options.vlan = None;
        n.options.parent = Some("eth0\nx".into());
        assert!(matches!(network_spec(&n), Err(Invalid::Option(_))));
    }

    #[test]
    fn missing_sandboxes_are_404() {
        assert_eq!(sandbox_exists(&Sandbox::Pid(std::process::id())), Ok(()));
        let err =
            sandbox_exists(&Sandbox::Netns("/run/netns/no-such-sluice-ns".into())).unwrap_err();
        assert_eq!(err.status(), 404);
        assert_eq!(
            sandbox_exists(&Sandbox::Pid(u32::MAX))
                .unwrap_err()
                .status(),
            404
        );
    }
}
