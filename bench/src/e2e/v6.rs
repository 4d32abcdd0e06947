//! The IPv6 rows (`--tests tcp6,tcp4x6,udp6,rr6,nat6`): each is a v4 row's measurement over
//! the v6 addresses of the dual-stack docker-like network (sluice's NAT66 against the kernel
//! bridge with ip6tables NAT66). The RR rows use [`super::rr`]: Debian's sockperf (3.7) has no
//! IPv6.

use std::net::{IpAddr, Ipv6Addr};

use sluice_lab::lab::DockerLikeSpec;

use super::metrics::{self, m};
use super::{Better, Metric, TestKind, Unit};

/// TCP, 1 stream, a -> b over v6.
pub const TCP1: Metric = m("tcp1 v6 a->b", Unit::Gbps, Better::Higher);
/// TCP, 4 streams, a -> b over v6.
pub const TCP4: Metric = m("tcp4 v6 a->b", Unit::Gbps, Better::Higher);
/// 64-byte UDP, a -> b over v6, received rate.
pub const UDP64: Metric = m("udp64 v6 a->b rx", Unit::Kpps, Better::Higher);
/// TCP ping-pong a -> b over v6.
pub const TCP_RR: Metric = m("tcp_rr v6 a->b", Unit::Us, Better::Lower);
/// UDP ping-pong a -> b over v6.
pub const UDP_RR: Metric = m("udp_rr v6 a->b", Unit::Us, Better::Lower);
/// TCP, 1 stream, a -> outside through NAT66 masquerade.
pub const NAT_OUT_TCP1: Metric = m("nat_out tcp1 v6 a->outside", Unit::Gbps, Better::Higher);
/// TCP, 1 stream, outside -> the published port of a on the uplink's v6 address.
pub const NAT_IN_TCP1: Metric = m("nat_in tcp1 v6 outside->a", Unit::Gbps, Better::Higher);
/// TCP ping-pong a -> outside through NAT66.
pub const NAT_OUT_RR: Metric = m("nat_out tcp_rr v6 a->outside", Unit::Us, Better::Lower);
/// TCP ping-pong outside -> the published port of a over v6.
pub const NAT_IN_RR: Metric = m("nat_in tcp_rr v6 outside->a", Unit::Us, Better::Lower);

/// Each v6 metric and the v4 metric it repeats over v6.
const TWINS: [(Metric, Metric); 9] = [
    (TCP1, metrics::TCP1),
    (TCP4, metrics::TCP4),
    (UDP64, metrics::UDP64),
    (TCP_RR, metrics::TCP_RR),
    (UDP_RR, metrics::UDP_RR),
    (NAT_OUT_TCP1, metrics::NAT_OUT_TCP1),
    (NAT_IN_TCP1, metrics::NAT_IN_TCP1),
    (NAT_OUT_RR, metrics::NAT_OUT_RR),
    (NAT_IN_RR, metrics::NAT_IN_RR),
];

/// The v4 metric a v6 metric repeats; None for a v4 metric.
pub fn twin(m: &Metric) -> Option<Metric> {
    TWINS.iter().find(|(v6, _)| v6 == m).map(|(_, v4)| *v4)
}

/// True when a test group runs over IPv6 (its topology must be dual stack).
pub fn is_v6(k: TestKind) -> bool {
    k.metrics().iter().any(|m| twin(m).is_some())
}

/// True when some of `metrics` run over IPv6.
pub fn any_v6(metrics: &[Metric]) -> bool {
    metrics.iter().any(|m| twin(m).is_some())
}

/// The addresses a measurement uses: endpoint b, the outside, the uplink (where a's ports are
/// published).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Addrs {
    pub(super) b: IpAddr,
    pub(super) outside: IpAddr,
    pub(super) uplink: IpAddr,
}

/// The v6 addresses of the dual-stack docker-like topology.
pub(super) fn addrs(spec: &DockerLikeSpec) -> Addrs {
    Addrs {
        b: spec.endpoint_ip6(1).into(),
        outside: spec.outside_ip6().into(),
        uplink: spec.uplink_ip6().addr.into(),
    }
}

/// The trafgen packet of the 64-byte UDP v6 row: a's MAC and v6 address to b's.
pub(super) fn trafgen_udp(spec: &DockerLikeSpec) -> String {
    let ip = |i| -> Ipv6Addr { spec.endpoint_ip6(i) };
    format!(
        "{{ eth(da={}, sa={}, type=0x86dd), ipv6(saddr={}, daddr={}, hl=64), \
         udp(sp=40000, dp=9), fill(0x41, 64) }}\n",
        spec.endpoint_mac(1),
        spec.endpoint_mac(0),
        ip(0),
        ip(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_v6_row_repeats_a_v4_row() {
        let v6: Vec<TestKind> = TestKind::ALL.into_iter().filter(|k| is_v6(*k)).collect();
        let names: Vec<&str> = v6.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["tcp6", "tcp4x6", "udp6", "rr6", "nat6"]);
        for k in v6 {
            for m in k.metrics() {
                let v4 = twin(m).unwrap();
                assert_eq!((v4.unit, v4.better), (m.unit, m.better));
                assert!(m.name.contains(" v6 "), "{}", m.name);
                assert_eq!(twin(&v4), None);
            }
        }
        assert!("nat6".parse::<TestKind>().unwrap().through_nat());
        assert!(!is_v6(TestKind::Nat));
        assert!(any_v6(&[metrics::TCP1, TCP1]));
        assert!(!any_v6(&[metrics::TCP1]));
    }

    #[test]
    fn v6_addresses_and_packet() {
        let spec = DockerLikeSpec::default();
        let a = addrs(&spec);
        assert_eq!(a.b.to_string(), "fd00:17::3");
        assert_eq!(a.uplink.to_string(), "2001:db8:18::1");
        assert_eq!(a.outside.to_string(), "2001:db8:18::2");
        let t = trafgen_udp(&spec);
        assert!(t.contains("type=0x86dd"), "{t}");
        assert!(
            t.contains("ipv6(saddr=fd00:17::2, daddr=fd00:17::3, hl=64)"),
            "{t}"
        );
        assert!(t.contains("da=02:42:ac:11:00:03"), "{t}");
    }
}
