//! Published ports (`docker run -p`): which endpoint an inbound TCP or UDP packet to the host's
//! address and port goes to (DNAT), and which host ports NAPT must not hand out.
//!
//! The table is built once from the configuration's [`PortForward`] rules, validated, and is
//! immutable afterwards: a configuration change builds a new table and swaps the whole snapshot.
//! Port ranges are expanded at build time into one hash entry per (protocol, host port,
//! host address), so a lookup is at most two probes whatever the rules.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use hashbrown::HashMap;

use crate::config::{hosts_clash, L4Proto, PortForward};
use crate::frame::NetworkId;
use crate::hash::KeyHasherBuilder;

/// Where a published port leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ForwardTarget {
    /// The endpoint's network.
    pub network: NetworkId,
    /// The endpoint's address.
    pub ip: Ipv4Addr,
    /// The endpoint's port.
    pub port: u16,
}

/// The endpoint a published port leads to over v6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint6 {
    /// Named by its v6 address.
    V6(Ipv6Addr),
    /// Named by its v4 address (a rule without a v6 target): the endpoint's v6 address is
    /// taken.
    V4(Ipv4Addr),
}

/// Where a published port leads over v6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ForwardTarget6 {
    /// The endpoint's network.
    pub network: NetworkId,
    /// The endpoint.
    pub endpoint: Endpoint6,
    /// The endpoint's port.
    pub port: u16,
}

/// Why a set of rules cannot be published. Rules are named the way docker prints them, e.g.
/// `tcp 0.0.0.0:8080-8090 (-> 172.17.0.3:80-90)`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// Two rules publish the same protocol and host port on the same address, or one of them on
    /// every address (`a` comes later in the list than `b`).
    #[error("{a} clashes with {b}")]
    Clash {
        /// The later rule.
        a: String,
        /// The earlier rule it clashes with.
        b: String,
    },
    /// The target range is neither as long as the host range nor a single port.
    #[error(
        "{rule}: {target_len} target ports for {host_len} host ports (expected {host_len} or 1)"
    )]
    RangeMismatch {
        /// The rule.
        rule: String,
        /// Number of host ports.
        host_len: u32,
        /// Number of target ports.
        target_len: u32,
    },
    /// A range whose last port is below its first.
    #[error("{rule}: port range {first}-{last} is reversed")]
    ReversedRange {
        /// The rule.
        rule: String,
        /// First port of the bad range.
        first: u16,
        /// Last port of the bad range.
        last: u16,
    },
    /// Port 0 cannot be published or targeted (the control plane picks ephemeral host ports
    /// before the rule reaches the dataplane).
    #[error("{rule}: port 0 cannot be published or targeted")]
    PortZero {
        /// The rule.
        rule: String,
    },
    /// Only TCP and UDP ports can be published.
    #[error("{rule}: only tcp and udp ports can be published")]
    BadProto {
        /// The rule.
        rule: String,
    },
    /// The rule is published on a host address of a family its endpoint lacks, or names no
    /// endpoint address at all.
    #[error("{rule}: the endpoint has no address of the host address's family")]
    NoTarget {
        /// The rule.
        rule: String,
    },
}

/// Shows a rule the way docker does: `tcp 0.0.0.0:8080 (-> 172.17.0.2:80)`.
struct Rule<'a>(&'a PortForward);

impl fmt::Display for Rule<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        let proto = match r.proto {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
            L4Proto::Icmp => "icmp",
        };
        match r.host_ip6 {
            Some(ip6) => write!(f, "{proto} [{ip6}]")?,
            None => write!(f, "{proto} {}", r.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED))?,
        }
        write!(f, ":{} (-> ", r.host_ports)?;
        match (r.target_ip, r.target_ip6) {
            (Some(ip), _) => write!(f, "{ip}")?,
            (None, Some(ip6)) => write!(f, "[{ip6}]")?,
            (None, None) => write!(f, "?")?,
        }
        write!(f, ":{})", r.target_ports)
    }
}

/// The rule's host address as a key part: 0 for every address (`None` or `0.0.0.0`).
fn host_bits(r: &PortForward) -> u32 {
    r.host_ip.map_or(0, u32::from)
}

/// True when the two rules can receive the same packet: same protocol, overlapping host ports,
/// and host addresses that meet ([`hosts_clash`]).
fn rules_clash(a: &PortForward, b: &PortForward) -> bool {
    a.proto == b.proto
        && a.host_ports.overlaps(&b.host_ports)
        && hosts_clash((a.host_ip, a.host_ip6), (b.host_ip, b.host_ip6))
}

/// The v6 host address a rule is reached on: its own, `::` for every address, none for a rule
/// on a v4 host address.
fn host6_key(r: &PortForward) -> Option<Ipv6Addr> {
    match r.host_ip6 {
        Some(ip6) => Some(ip6),
        None => (host_bits(r) == 0).then_some(Ipv6Addr::UNSPECIFIED),
    }
}

/// The packed key: protocol number, host port, host address (0: any).
#[inline]
fn key(proto: L4Proto, port: u16, ip: u32) -> u64 {
    (u64::from(proto.number()) << 48) | (u64::from(port) << 32) | u64::from(ip)
}

fn validate(r: &PortForward) -> Result<(), ForwardError> {
    let rule = || Rule(r).to_string();
    if !matches!(r.proto, L4Proto::Tcp | L4Proto::Udp) {
        return Err(ForwardError::BadProto { rule: rule() });
    }
    let on_a_v4_address = r.host_ip6.is_none() && host_bits(r) != 0;
    if endpoint6(r).is_none() || (r.target_ip.is_none() && on_a_v4_address) {
        return Err(ForwardError::NoTarget { rule: rule() });
    }
    for p in [r.host_ports, r.target_ports] {
        if p.is_empty() {
            return Err(ForwardError::ReversedRange {
                rule: rule(),
                first: p.first,
                last: p.last,
            });
        }
        if p.first == 0 {
            return Err(ForwardError::PortZero { rule: rule() });
        }
    }
    let (host_len, target_len) = (r.host_ports.len(), r.target_ports.len());
    if target_len != host_len && target_len != 1 {
        return Err(ForwardError::RangeMismatch {
            rule: rule(),
            host_len,
            target_len,
        });
    }
    Ok(())
}

/// The endpoint a rule leads to over v6: by its v6 address, else by its v4 one.
fn endpoint6(r: &PortForward) -> Option<Endpoint6> {
    r.target_ip6
        .map(Endpoint6::V6)
        .or(r.target_ip.map(Endpoint6::V4))
}

/// The compiled published ports of one configuration snapshot.
///
/// A rule on a specific address and a rule on every address never cover the same protocol
/// and port (that is a clash), so at most one rule matches a packet and no precedence between
/// them is needed.
#[derive(Debug, Default)]
pub struct PortForwardTable {
    rules: Vec<PortForward>,
    map: HashMap<u64, ForwardTarget, KeyHasherBuilder>,
    /// The rules reached over v6, by (protocol number, host port, v6 host address or `::`
    /// for every address).
    map6: HashMap<(u8, u16, Ipv6Addr), ForwardTarget6>,
    /// Some rule names a specific address, so lookups must probe for it.
    has_specific: bool,
}

impl PortForwardTable {
    /// Validates `rules` (TCP/UDP only, well-formed ranges, no clash) and compiles them.
    pub fn build(rules: &[PortForward]) -> Result<Self, ForwardError> {
        for (i, r) in rules.iter().enumerate() {
            validate(r)?;
            let clash = rules[..i].iter().find(|o| rules_clash(o, r));
            if let Some(o) = clash {
                return Err(ForwardError::Clash {
                    a: Rule(r).to_string(),
                    b: Rule(o).to_string(),
                });
            }
        }
        let total: usize = rules.iter().map(|r| r.host_ports.len() as usize).sum();
        let mut map = HashMap::with_capacity_and_hasher(total, KeyHasherBuilder::default());
        let mut map6 = HashMap::new();
        for r in rules {
            let ip = host_bits(r);
            for (offset, host_port) in (r.host_ports.first..=r.host_ports.last).enumerate() {
                let port = if r.target_ports.len() == 1 {
                    r.target_ports.first
                } else {
                    // Validated: both ranges have the same length, so this stays in range.
                    r.target_ports.first + offset as u16
                };
                if let (Some(ip6), Some(endpoint)) = (host6_key(r), endpoint6(r)) {
                    let target = ForwardTarget6 {
                        network: r.network,
                        endpoint,
                        port,
                    };
                    map6.insert((r.proto.number(), host_port, ip6), target);
                }
                if let (None, Some(target_ip)) = (r.host_ip6, r.target_ip) {
                    let target = ForwardTarget {
                        network: r.network,
                        ip: target_ip,
                        port,
                    };
                    map.insert(key(r.proto, host_port, ip), target);
                }
            }
        }
        Ok(PortForwardTable {
            rules: rules.to_vec(),
            map,
            map6,
            has_specific: rules.iter().any(|r| host_bits(r) != 0),
        })
    }

    /// The endpoint an inbound packet to `dst:dst_port` goes to, if the port is published on
    /// `dst` or on every address. The caller asks only for addresses sluice owns.
    #[inline]
    pub fn lookup(&self, proto: L4Proto, dst: Ipv4Addr, dst_port: u16) -> Option<ForwardTarget> {
        if self.map.is_empty() {
            return None;
        }
        if self.has_specific {
            if let Some(t) = self.map.get(&key(proto, dst_port, u32::from(dst))) {
                return Some(*t);
            }
        }
        self.map.get(&key(proto, dst_port, 0)).copied()
    }

    /// The endpoint an inbound v6 packet to `[dst]:dst_port` goes to, if the port is published
    /// on `dst` or on every address.
    #[inline]
    pub fn lookup6(&self, proto: L4Proto, dst: Ipv6Addr, dst_port: u16) -> Option<ForwardTarget6> {
        let number = proto.number();
        self.map6
            .get(&(number, dst_port, dst))
            .or_else(|| self.map6.get(&(number, dst_port, Ipv6Addr::UNSPECIFIED)))
            .copied()
    }

    /// True when `dst:port` is published: NAPT must not allocate it as a source port there.
    #[inline]
    pub fn is_published(&self, proto: L4Proto, dst: Ipv4Addr, port: u16) -> bool {
        self.lookup(proto, dst, port).is_some()
    }

    /// The rules the table was built from, for display.
    pub fn rules(&self) -> &[PortForward] {
        &self.rules
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::PortRange;

    const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const HOST2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn fwd(
        proto: L4Proto,
        host_ip: Option<Ipv4Addr>,
        host: (u16, u16),
        target: (u16, u16),
        last_octet: u8,
    ) -> PortForward {
        PortForward {
            proto,
            host_ip,
            host_ip6: None,
            host_ports: PortRange {
                first: host.0,
                last: host.1,
            },
            network: NetworkId(1),
            target_ip: Some(Ipv4Addr::new(172, 17, 0, last_octet)),
            target_ip6: None,
            target_ports: PortRange {
                first: target.0,
                last: target.1,
            },
        }
    }

    fn target(last_octet: u8, port: u16) -> Option<ForwardTarget> {
        Some(ForwardTarget {
            network: NetworkId(1),
            ip: Ipv4Addr::new(172, 17, 0, last_octet),
            port,
        })
    }

    #[test]
    fn ranges_map_port_by_port() {
        let t =
            PortForwardTable::build(&[fwd(L4Proto::Tcp, None, (8080, 8090), (80, 90), 3)]).unwrap();
        assert_eq!(t.lookup(L4Proto::Tcp, HOST, 8080), target(3, 80));
        assert_eq!(t.lookup(L4Proto::Tcp, HOST2, 8085), target(3, 85));
        assert_eq!(t.lookup(L4Proto::Tcp, HOST, 8090), target(3, 90));
        assert_eq!(t.lookup(L4Proto::Tcp, HOST, 8091), None);
        assert_eq!(t.lookup(L4Proto::Tcp, HOST, 8079), None);
        assert_eq!(t.lookup(L4Proto::Udp, HOST, 8080), None);
        assert_eq!(t.lookup(L4Proto::Icmp, HOST, 8080), None);
        assert!(t.is_published(L4Proto::Tcp, HOST, 8088));
        assert!(!t.is_published(L4Proto::Udp, HOST, 8088));
        assert_eq!(t.rules().len(), 1);
    }

    #[test]
    fn single_target_port_takes_the_whole_range() {
        let t =
            PortForwardTable::build(&[fwd(L4Proto::Udp, None, (5000, 5010), (53, 53), 2)]).unwrap();
        for p in 5000..=5010 {
            assert_eq!(t.lookup(L4Proto::Udp, HOST, p), target(2, 53));
        }
    }

    #[test]
    fn whole_port_space_and_edges() {
        let t =
            PortForwardTable::build(&[fwd(L4Proto::Tcp, Some(HOST), (1, 65535), (1, 65535), 2)])
                .unwrap();
        assert_eq!(t.lookup(L4Proto::Tcp, HOST, 65535), target(2, 65535));
        assert_eq!(t.lookup(L4Proto::Tcp, HOST, 1), target(2, 1));
        assert_eq!(t.lookup(L4Proto::Tcp, HOST, 0), None);
        assert_eq!(t.lookup(L4Proto::Tcp, HOST2, 80), None);
    }

    /// `-p [2001:db8::2]:80:80`: found on that v6 address only; every-address rules on v6 too.
    #[test]
    fn v6_host_addresses_are_separate_from_v4() {
        let ip6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let v6 = |host: (u16, u16), octet| PortForward {
            host_ip6: Some(ip6("2001:db8::2")),
            ..fwd(L4Proto::Tcp, None, host, host, octet)
        };
        let t = PortForwardTable::build(&[
            v6((80, 80), 2),
            fwd(L4Proto::Tcp, Some(HOST), (80, 80), (80, 80), 3),
            fwd(L4Proto::Tcp, None, (81, 81), (81, 81), 4),
        ])
        .unwrap();
        let by_v4 = |octet, port| {
            Some(ForwardTarget6 {
                network: NetworkId(1),
                endpoint: Endpoint6::V4(Ipv4Addr::new(172, 17, 0, octet)),
                port,
            })
        };
        assert_eq!(
            t.lookup6(L4Proto::Tcp, ip6("2001:db8::2"), 80),
            by_v4(2, 80)
        );
        assert_eq!(t.lookup6(L4Proto::Tcp, ip6("2001:db8::3"), 80), None);
        assert_eq!(t.lookup(L4Proto::Tcp, HOST, 80), target(3, 80));
        assert_eq!(t.lookup(L4Proto::Tcp, HOST2, 80), None, "not on v4");
        assert_eq!(
            t.lookup6(L4Proto::Tcp, ip6("2001:db8::2"), 81),
            by_v4(4, 81)
        );
        let err = PortForwardTable::build(&[
            fwd(L4Proto::Tcp, None, (80, 80), (80, 80), 3),
            v6((80, 80), 2),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "tcp [2001:db8::2]:80 (-> 172.17.0.2:80) clashes with tcp 0.0.0.0:80 (-> 172.17.0.3:80)"
        );
        assert!(PortForwardTable::build(&[v6((80, 80), 2), v6((70, 90), 3)]).is_err());
    }

    /// An IPv6-only network's `-p 8080:80` (no v4 target): reached over v6 on every address,
    /// never over v4; and it cannot be published on a v4 host address.
    #[test]
    fn rules_without_a_v4_target_are_reached_over_v6_only() {
        let ep6: Ipv6Addr = "fd00:9::2".parse().unwrap();
        let six = |host_ip| PortForward {
            target_ip: None,
            target_ip6: Some(ep6),
            ..fwd(L4Proto::Tcp, host_ip, (8080, 8080), (80, 80), 2)
        };
        let t = PortForwardTable::build(&[six(None)]).unwrap();
        let want = Some(ForwardTarget6 {
            network: NetworkId(1),
            endpoint: Endpoint6::V6(ep6),
            port: 80,
        });
        assert_eq!(
            t.lookup6(L4Proto::Tcp, "2001:db8::2".parse().unwrap(), 8080),
            want
        );
        assert_eq!(
            t.lookup6(L4Proto::Udp, "2001:db8::2".parse().unwrap(), 8080),
            None
        );
        assert_eq!(t.lookup(L4Proto::Tcp, HOST, 8080), None, "not over v4");
        let err = PortForwardTable::build(&[six(Some(HOST))]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tcp 10.0.0.1:8080 (-> [fd00:9::2]:80): the endpoint has no address of the host \
             address's family"
        );
        let nowhere = PortForward {
            target_ip6: None,
            ..six(None)
        };
        assert!(matches!(
            PortForwardTable::build(&[nowhere]),
            Err(ForwardError::NoTarget { .. })
        ));
        // A dual-stack rule with both targets: v6 goes to the v6 address, v4 to the v4 one.
        let both = PortForward {
            target_ip6: Some(ep6),
            ..fwd(L4Proto::Tcp, None, (8080, 8080), (80, 80), 2)
        };
        let t = PortForwardTable::build(&[both]).unwrap();
        assert_eq!(
            t.lookup6(L4Proto::Tcp, "2001:db8::2".parse().unwrap(), 8080),
            want
        );
        assert_eq!(t.lookup(L4Proto::Tcp, HOST, 8080), target(2, 80));
    }

    #[test]
    fn specific_addresses_are_separate() {
        let t = PortForwardTable::build(&[
            fwd(L4Proto::Tcp, Some(HOST), (80, 80), (80, 80), 2),
            fwd(L4Proto::Tcp, Some(HOST2), (80, 80), (8000, 8000), 3),
        ])
        .unwrap();
        assert_eq!(t.lookup(L4Proto::Tcp, HOST, 80), target(2, 80));
        assert_eq!(t.lookup(L4Proto::Tcp, HOST2, 80), target(3, 8000));
        assert_eq!(t.lookup(L4Proto::Tcp, Ipv4Addr::new(10, 0, 0, 3), 80), None);
    }

    #[test]
    fn empty_table_finds_nothing() {
        let t = PortForwardTable::build(&[]).unwrap();
        assert_eq!(t.lookup(L4Proto::Tcp, HOST, 80), None);
        assert!(!t.is_published(L4Proto::Udp, HOST, 53));
    }

    #[test]
    fn clash_messages_name_both_rules() {
        let err = PortForwardTable::build(&[
            fwd(L4Proto::Tcp, None, (8080, 8090), (80, 90), 3),
            fwd(L4Proto::Tcp, None, (8080, 8080), (80, 80), 2),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "tcp 0.0.0.0:8080 (-> 172.17.0.2:80) clashes with tcp 0.0.0.0:8080-8090 (-> \
             172.17.0.3:80-90)"
        );
    }

    #[test]
    fn any_address_clashes_with_specific() {
        for (a, b) in [
            (None, Some(HOST)),
            (Some(HOST), None),
            (Some(HOST), Some(HOST)),
        ] {
            let r = PortForwardTable::build(&[
                fwd(L4Proto::Udp, a, (100, 110), (100, 110), 2),
                fwd(L4Proto::Udp, b, (110, 120), (110, 120), 3),
            ]);
            assert!(matches!(r, Err(ForwardError::Clash { .. })), "{a:?} {b:?}");
        }
        let r = PortForwardTable::build(&[
            fwd(
                L4Proto::Udp,
                Some(Ipv4Addr::UNSPECIFIED),
                (100, 100),
                (1, 1),
                2,
            ),
            fwd(L4Proto::Udp, Some(HOST), (100, 100), (1, 1), 3),
        ]);
        assert!(
            matches!(r, Err(ForwardError::Clash { .. })),
            "0.0.0.0 is any address"
        );
    }

    #[test]
    fn adjacent_ranges_and_other_protocols_do_not_clash() {
        let t = PortForwardTable::build(&[
            fwd(L4Proto::Tcp, None, (100, 110), (100, 110), 2),
            fwd(L4Proto::Tcp, None, (111, 120), (111, 120), 3),
            fwd(L4Proto::Udp, None, (100, 120), (53, 53), 4),
        ])
        .unwrap();
        assert_eq!(t.lookup(L4Proto::Tcp, HOST, 110), target(2, 110));
        assert_eq!(t.lookup(L4Proto::Tcp, HOST, 111), target(3, 111));
        assert_eq!(t.lookup(L4Proto::Udp, HOST, 110), target(4, 53));
    }

    #[test]
    fn invalid_rules_are_refused() {
        let err = PortForwardTable::build(&[fwd(L4Proto::Tcp, None, (8080, 8090), (80, 85), 3)])
            .unwrap_err();
        assert_eq!(
            err,
            ForwardError::RangeMismatch {
                rule: "tcp 0.0.0.0:8080-8090 (-> 172.17.0.3:80-85)".into(),
                host_len: 11,
                target_len: 6
            }
        );
        assert_eq!(
            err.to_string(),
            "tcp 0.0.0.0:8080-8090 (-> 172.17.0.3:80-85): 6 target ports for 11 host ports \
             (expected 11 or 1)"
        );
        // A longer target range than host range is a mismatch too.
        let r = PortForwardTable::build(&[fwd(L4Proto::Tcp, None, (80, 80), (80, 81), 3)]);
        assert!(matches!(r, Err(ForwardError::RangeMismatch { .. })));
        let r = PortForwardTable::build(&[fwd(L4Proto::Icmp, None, (1, 1), (1, 1), 3)]);
        assert!(matches!(r, Err(ForwardError::BadProto { .. })));
        let r = PortForwardTable::build(&[fwd(L4Proto::Tcp, None, (90, 80), (80, 80), 3)]);
        assert!(matches!(
            r,
            Err(ForwardError::ReversedRange {
                first: 90,
                last: 80,
                ..
            })
        ));
        let r = PortForwardTable::build(&[fwd(L4Proto::Tcp, None, (0, 10), (0, 10), 3)]);
        assert!(matches!(r, Err(ForwardError::PortZero { .. })));
        let r = PortForwardTable::build(&[fwd(L4Proto::Tcp, None, (80, 80), (0, 0), 3)]);
        assert!(matches!(r, Err(ForwardError::PortZero { .. })));
    }

    /// Every (proto, host port) pair a rule publishes, by enumeration (independent of `overlaps`).
    fn naive_clash(a: &PortForward, b: &PortForward) -> bool {
        let any = |r: &PortForward| !matches!(r.host_ip, Some(ip) if !ip.is_unspecified());
        a.proto == b.proto
            && (any(a) || any(b) || a.host_ip == b.host_ip)
            && (a.host_ports.first..=a.host_ports.last).any(|p| b.host_ports.contains(p))
    }

    /// The first rule matching a packet, by linear scan.
    fn naive_lookup(
        rules: &[PortForward],
        proto: L4Proto,
        dst: Ipv4Addr,
        port: u16,
    ) -> Option<ForwardTarget> {
        rules
            .iter()
            .find(|r| {
                r.proto == proto
                    && !matches!(r.host_ip, Some(ip) if !ip.is_unspecified() && ip != dst)
                    && r.host_ports.contains(port)
            })
            .map(|r| ForwardTarget {
                network: r.network,
                ip: r.target_ip.unwrap(),
                port: if r.target_ports.first == r.target_ports.last {
                    r.target_ports.first
                } else {
                    r.target_ports.first + (port - r.host_ports.first)
                },
            })
    }

    fn rule() -> impl Strategy<Value = PortForward> {
        let ip = prop_oneof![
            Just(None),
            Just(Some(Ipv4Addr::UNSPECIFIED)),
            Just(Some(HOST)),
            Just(Some(HOST2)),
        ];
        let proto = prop_oneof![Just(L4Proto::Tcp), Just(L4Proto::Udp)];
        (
            proto,
            ip,
            1u16..60,
            0u16..8,
            1u16..1000,
            any::<bool>(),
            1u8..250,
        )
            .prop_map(
                |(proto, host_ip, first, extra, target_first, single, last_octet)| {
                    let target_last = if single {
                        target_first
                    } else {
                        target_first + extra
                    };
                    fwd(
                        proto,
                        host_ip,
                        (first, first + extra),
                        (target_first, target_last),
                        last_octet,
                    )
                },
            )
    }

    proptest! {
        #[test]
        fn build_reports_exactly_the_clashes(rules in prop::collection::vec(rule(), 0..8)) {
            let clashes = rules
                .iter()
                .enumerate()
                .any(|(i, r)| rules[..i].iter().any(|o| naive_clash(o, r)));
            let built = PortForwardTable::build(&rules);
            prop_assert_eq!(built.is_err(), clashes);
            if let Err(e) = built {
                prop_assert!(matches!(e, ForwardError::Clash { .. }), "{}", e);
            }
        }

        #[test]
        fn lookups_match_a_linear_scan(candidates in prop::collection::vec(rule(), 0..16)) {
            let mut rules: Vec<PortForward> = Vec::new();
            for r in candidates {
                if !rules.iter().any(|o| naive_clash(o, &r)) {
                    rules.push(r);
                }
            }
            let t = PortForwardTable::build(&rules).unwrap();
            for proto in [L4Proto::Tcp, L4Proto::Udp, L4Proto::Icmp] {
                for dst in [HOST, HOST2, Ipv4Addr::new(10, 0, 0, 3)] {
                    for port in 0..70 {
                        prop_assert_eq!(
                            t.lookup(proto, dst, port),
                            naive_lookup(&rules, proto, dst, port),
                            "{:?} {} {}", proto, dst, port
                        );
                    }
                }
            }
        }
    }
}
