//! The end-to-end benchmark: docker's default network built in namespaces once per peer (kernel
//! bridge + iptables, sluice), OVS's userspace datapath on the same bridge shape, slirp4netns
//! and pasta on their own namespace <-> host shape; measured alternately with iperf3, trafgen
//! and sockperf.
//!
//! `parse` and `report` are pure (unit-tested on recorded tool outputs); `harness` drives the
//! tools inside the lab's namespaces, `shapes` builds the topologies of the optional peers.

pub mod harness;
pub mod output;
pub mod parse;
pub mod report;
pub mod rootless;
pub mod shapes;

/// A group of measurements selected with `--tests`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TestKind {
    /// TCP, one stream, a -> b.
    Tcp,
    /// TCP, four streams, a -> b.
    Tcp4,
    /// 64-byte UDP packets per second received, a -> b.
    Udp64,
    /// TCP and UDP request/response latency, a -> b.
    Rr,
    /// The NAT paths: a -> outside (MASQUERADE / NAPT), outside -> published port of a.
    Nat,
}

impl TestKind {
    /// Every kind, in report order.
    pub const ALL: [TestKind; 5] = [
        TestKind::Tcp,
        TestKind::Tcp4,
        TestKind::Udp64,
        TestKind::Rr,
        TestKind::Nat,
    ];

    /// The name used by `--tests`.
    pub fn name(self) -> &'static str {
        match self {
            TestKind::Tcp => "tcp",
            TestKind::Tcp4 => "tcp4",
            TestKind::Udp64 => "udp64",
            TestKind::Rr => "rr",
            TestKind::Nat => "nat",
        }
    }

    /// The kind a metric belongs to.
    pub fn of(metric: &Metric) -> Option<TestKind> {
        TestKind::ALL
            .into_iter()
            .find(|k| k.metrics().contains(metric))
    }

    /// The metrics this kind measures.
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            TestKind::Tcp => &[metrics::TCP1],
            TestKind::Tcp4 => &[metrics::TCP4],
            TestKind::Udp64 => &[metrics::UDP64],
            TestKind::Rr => &[metrics::TCP_RR, metrics::UDP_RR],
            TestKind::Nat => &[
                metrics::NAT_OUT_TCP1,
                metrics::NAT_IN_TCP1,
                metrics::NAT_OUT_RR,
                metrics::NAT_IN_RR,
            ],
        }
    }
}

impl std::str::FromStr for TestKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TestKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown test {s:?} (expected tcp, tcp4, udp64, rr, nat)"))
    }
}

/// The topology a peer is measured on: its rows are comparable with the other peers of the
/// same shape only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Two endpoints behind a forwarder (kernel bridge, sluice, OVS): "a->b" is endpoint to
    /// endpoint, the NAT rows go through the forwarder's uplink.
    Bridge,
    /// One namespace connected to its host by a user-mode network stack (slirp4netns, pasta):
    /// "a->b" is the namespace to a server on the host's loopback, reached through the
    /// stack's gateway address.
    NsHost,
}

impl Shape {
    /// The shape of a peer, by its `--peers` name.
    pub fn of_peer(name: &str) -> Shape {
        match name {
            "slirp4netns" | "pasta" => Shape::NsHost,
            _ => Shape::Bridge,
        }
    }

    /// How reports name the shape.
    pub fn text(self) -> &'static str {
        match self {
            Shape::Bridge => "bridge",
            Shape::NsHost => "namespace <-> host",
        }
    }
}

/// Unit of a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Gigabits per second.
    Gbps,
    /// Thousands of packets per second.
    Kpps,
    /// Round-trip time in microseconds.
    Us,
}

/// Which direction is an improvement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Throughput-like.
    Higher,
    /// Latency-like.
    Lower,
}

/// One figure measured per forwarder and run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    /// Row name in the report.
    pub name: &'static str,
    /// Unit.
    pub unit: Unit,
    /// Which direction is better.
    pub better: Better,
}

impl Unit {
    /// "Gbit/s", "kpps", "us RTT": axis labels and the unit text of the table.
    pub fn label(self) -> &'static str {
        match self {
            Unit::Gbps => "Gbit/s",
            Unit::Kpps => "kpps",
            Unit::Us => "us RTT",
        }
    }
}

impl Better {
    /// "higher" or "lower".
    pub fn word(self) -> &'static str {
        match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
        }
    }
}

impl Metric {
    /// "Gbit/s (higher is better)" and the like.
    pub fn unit_text(&self) -> String {
        format!("{} ({} is better)", self.unit.label(), self.better.word())
    }
}

/// The metrics of the benchmark.
pub mod metrics {
    use super::{Better, Metric, Unit};

    const fn m(name: &'static str, unit: Unit, better: Better) -> Metric {
        Metric { name, unit, better }
    }
    /// TCP, 1 stream, a -> b.
    pub const TCP1: Metric = m("tcp1 a->b", Unit::Gbps, Better::Higher);
    /// TCP, 4 streams, a -> b.
    pub const TCP4: Metric = m("tcp4 a->b", Unit::Gbps, Better::Higher);
    /// 64-byte UDP, a -> b, received rate.
    pub const UDP64: Metric = m("udp64 a->b rx", Unit::Kpps, Better::Higher);
    /// TCP ping-pong a -> b.
    pub const TCP_RR: Metric = m("tcp_rr a->b", Unit::Us, Better::Lower);
    /// UDP ping-pong a -> b.
    pub const UDP_RR: Metric = m("udp_rr a->b", Unit::Us, Better::Lower);
    /// TCP, 1 stream, a -> outside through MASQUERADE / NAPT.
    pub const NAT_OUT_TCP1: Metric = m("nat_out tcp1 a->outside", Unit::Gbps, Better::Higher);
    /// TCP, 1 stream, outside -> published port of a (DNAT / port forward).
    pub const NAT_IN_TCP1: Metric = m("nat_in tcp1 outside->a", Unit::Gbps, Better::Higher);
    /// TCP ping-pong a -> outside through NAT.
    pub const NAT_OUT_RR: Metric = m("nat_out tcp_rr a->outside", Unit::Us, Better::Lower);
    /// TCP ping-pong outside -> published port of a.
    pub const NAT_IN_RR: Metric = m("nat_in tcp_rr outside->a", Unit::Us, Better::Lower);
}

/// CPU use during one measurement, each in % of one CPU (so up to nproc x 100).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuUse {
    /// The forwarder process (user + system), when it is a process.
    pub forwarder_pct: Option<f64>,
    /// Softirq time of all CPUs (the kernel forwarding path and the veth receive path).
    pub softirq_pct: Option<f64>,
    /// Busy time of all CPUs.
    pub busy_pct: Option<f64>,
    /// Busy time of all CPUs just before the measurement, while nothing of the benchmark ran
    /// (other load on the machine makes the figure less trustworthy).
    pub background_pct: Option<f64>,
}

impl CpuUse {
    /// CPU use between two snapshots `elapsed_s` seconds apart, with `hz` ticks per second.
    pub fn between(
        before: &parse::CpuTimes,
        after: &parse::CpuTimes,
        proc_ticks: Option<(u64, u64)>,
        hz: f64,
        elapsed_s: f64,
    ) -> CpuUse {
        let pct = |ticks: u64| {
            (elapsed_s > 0.0 && hz > 0.0).then(|| ticks as f64 / hz / elapsed_s * 100.0)
        };
        CpuUse {
            forwarder_pct: proc_ticks.and_then(|(a, b)| pct(b.saturating_sub(a))),
            softirq_pct: pct(after.softirq.saturating_sub(before.softirq)),
            busy_pct: pct(after.busy.saturating_sub(before.busy)),
            background_pct: None,
        }
    }
}

/// The outcome of one measurement of one metric on one forwarder.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The figure, or why it could not be measured.
    pub value: Result<f64, String>,
    /// Details from the tool (retransmits, percentiles, sent rate).
    pub note: String,
    /// CPU use while it ran.
    pub cpu: CpuUse,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_round_trip() {
        for k in TestKind::ALL {
            assert_eq!(k.name().parse::<TestKind>(), Ok(k));
            assert!(!k.metrics().is_empty());
            assert!(k.metrics().iter().all(|m| TestKind::of(m) == Some(k)));
        }
        assert!("udp".parse::<TestKind>().is_err());
    }

    #[test]
    fn shapes_of_peers() {
        assert_eq!(Shape::of_peer("slirp4netns"), Shape::NsHost);
        assert_eq!(Shape::of_peer("pasta"), Shape::NsHost);
        for p in ["kernel", "sluice", "iptables-nat", "ovs"] {
            assert_eq!(Shape::of_peer(p), Shape::Bridge);
        }
    }

    #[test]
    fn cpu_use_in_percent_of_one_cpu() {
        let a = parse::CpuTimes {
            busy: 100,
            softirq: 10,
            total: 1000,
        };
        let b = parse::CpuTimes {
            busy: 400,
            softirq: 60,
            total: 1400,
        };
        let c = CpuUse::between(&a, &b, Some((5, 155)), 100.0, 2.0);
        assert_eq!(c.busy_pct, Some(150.0));
        assert_eq!(c.softirq_pct, Some(25.0));
        assert_eq!(c.forwarder_pct, Some(75.0));
        let none = CpuUse::between(&a, &b, None, 100.0, 0.0);
        assert_eq!(none, CpuUse::default());
    }
}
