//! `network create`'s repeated `--subnet`, `--gateway` and `--ip-range`, as docker takes them
//! for dual-stack networks: the family of each value decides whether it is the v4 or the v6
//! one, and each family takes at most one of each.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Result};
use sluice_dataplane::config::{Ipv4Cidr, Ipv6Cidr};

/// A network's addressing flags split by family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addressing {
    /// The v4 subnet.
    pub subnet: Option<Ipv4Cidr>,
    /// The v4 gateway.
    pub gateway: Option<Ipv4Addr>,
    /// The v4 dynamic range.
    pub ip_range: Option<Ipv4Cidr>,
    /// The v6 subnet.
    pub subnet6: Option<Ipv6Cidr>,
    /// The v6 gateway.
    pub gateway6: Option<Ipv6Addr>,
    /// The v6 dynamic range.
    pub ip_range6: Option<Ipv6Cidr>,
}

/// A prefix of either family.
enum Prefix {
    V4(Ipv4Cidr),
    V6(Ipv6Cidr),
}

fn prefix(flag: &str, s: &str) -> Result<Prefix> {
    if let Ok(c) = s.parse() {
        return Ok(Prefix::V4(c));
    }
    match s.parse() {
        Ok(c) => Ok(Prefix::V6(c)),
        Err(_) => bail!("{flag} {s:?} is not an IPv4 CIDR (like 10.1.0.0/16) or an IPv6 one"),
    }
}

/// Sets `slot` once; a second value of the same family is refused.
fn once<T>(slot: &mut Option<T>, flag: &str, family: &str, v: T) -> Result<()> {
    if slot.replace(v).is_some() {
        bail!("{flag} given twice for {family}: give at most one IPv4 and one IPv6 value");
    }
    Ok(())
}

/// Splits the values of `--subnet`, `--gateway` and `--ip-range` by family.
pub fn addressing(
    subnets: &[String],
    gateways: &[String],
    ranges: &[String],
) -> Result<Addressing> {
    let mut a = Addressing::default();
    for s in subnets {
        match prefix("--subnet", s)? {
            Prefix::V4(c) => once(&mut a.subnet, "--subnet", "IPv4", c)?,
            Prefix::V6(c) => once(&mut a.subnet6, "--subnet", "IPv6", c)?,
        }
    }
    for s in ranges {
        match prefix("--ip-range", s)? {
            Prefix::V4(c) => once(&mut a.ip_range, "--ip-range", "IPv4", c)?,
            Prefix::V6(c) => once(&mut a.ip_range6, "--ip-range", "IPv6", c)?,
        }
    }
    for g in gateways {
        match g.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => once(&mut a.gateway, "--gateway", "IPv4", ip)?,
            Ok(IpAddr::V6(ip)) => once(&mut a.gateway6, "--gateway", "IPv6", ip)?,
            Err(_) => bail!("--gateway {g:?} is not an IPv4 or IPv6 address"),
        }
    }
    Ok(a)
}

/// `--ip6`'s value.
pub fn ip6(flag: &str, s: &str) -> Result<Ipv6Addr> {
    s.parse()
        .map_err(|_| anyhow::anyhow!("{flag} {s:?} is not an IPv6 address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn each_value_goes_to_its_family() {
        let a = addressing(
            &v(&["fd00:9::/64", "10.9.0.0/24"]),
            &v(&["10.9.0.254", "fd00:9::1"]),
            &v(&["fd00:9::100/120"]),
        )
        .unwrap();
        assert_eq!(a.subnet.unwrap().to_string(), "10.9.0.0/24");
        assert_eq!(a.subnet6.unwrap().to_string(), "fd00:9::/64");
        assert_eq!(a.gateway, Some(Ipv4Addr::new(10, 9, 0, 254)));
        assert_eq!(a.gateway6, Some("fd00:9::1".parse().unwrap()));
        assert_eq!((a.ip_range, a.ip_range6.unwrap().prefix), (None, 120));
        assert_eq!(addressing(&[], &[], &[]).unwrap(), Addressing::default());
    }

    #[test]
    fn two_of_a_family_or_garbage_name_the_flag() {
        let e = |s: &[&str], g: &[&str]| addressing(&v(s), &v(g), &[]).unwrap_err().to_string();
        assert!(e(&["fd00::/64", "fd01::/64"], &[]).contains("twice for IPv6"));
        assert!(e(&["10.0.0.0/8", "11.0.0.0/8"], &[]).contains("twice for IPv4"));
        assert!(e(&["fd00::"], &[]).contains("--subnet"));
        assert!(e(&[], &["x"]).contains("--gateway"));
        assert!(ip6("--ip6", "10.0.0.1")
            .unwrap_err()
            .to_string()
            .contains("--ip6"));
    }
}
