//! The end-to-end benchmark: docker's default network built in namespaces once per peer (kernel
//! bridge + iptables, sluice), OVS's userspace datapath on the same bridge shape, slirp4netns
//! and pasta on their own namespace <-> host shape; measured alternately with iperf3, trafgen
//! and sockperf.
//!
//! `parse` and `report` are pure (unit-tested on recorded tool outputs); `peers` resolves what
//! to measure, `bed` builds a peer's topology and servers, `measure` runs one measurement and
//! `harness` runs them all, alternating; `shapes` builds the topologies of the optional peers;
//! `profile` records where each measurement's cycles went (`--perf`).

mod bed;
pub mod harness;
mod measure;
pub mod output;
pub mod overlay;
pub mod parse;
pub mod peers;
pub mod profile;
pub mod report;
pub mod rootless;
pub mod rr;
pub mod scale;
pub mod shapes;
mod streams;
pub mod v6;

/// A group of measurements selected with `--tests`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TestKind {
    /// TCP, one stream, a -> b.
    Tcp,
    /// TCP, four streams, a -> b: four iperf3 clients at once, one stream each (`streams`).
    Tcp4,
    /// 64-byte UDP packets per second received, a -> b.
    Udp64,
    /// TCP and UDP request/response latency, a -> b.
    Rr,
    /// The NAT paths: a -> outside (MASQUERADE / NAPT), outside -> published port of a.
    Nat,
    /// How NAT's cost grows with the flows it tracks: a -> outside with 1, 1,000 and 100,000
    /// flows established through the NAT before the run.
    Flows,
    /// How bridging's cost grows with the endpoints: a -> b with 2 and 64 endpoints on the
    /// bridge, and with 10,000 MACs learned from an access port.
    Endpoints,
    /// [`TestKind::Tcp`] over IPv6 (the dual-stack network).
    Tcp6,
    /// [`TestKind::Tcp4`] over IPv6.
    Tcp4x6,
    /// [`TestKind::Udp64`] over IPv6.
    Udp6,
    /// [`TestKind::Rr`] over IPv6.
    Rr6,
    /// [`TestKind::Nat`] over IPv6: NAT66 masquerade out, DNAT of the published ports in.
    Nat6,
}

impl TestKind {
    /// Every kind, in report order.
    pub const ALL: [TestKind; 12] = [
        TestKind::Tcp,
        TestKind::Tcp4,
        TestKind::Udp64,
        TestKind::Rr,
        TestKind::Nat,
        TestKind::Flows,
        TestKind::Endpoints,
        TestKind::Tcp6,
        TestKind::Tcp4x6,
        TestKind::Udp6,
        TestKind::Rr6,
        TestKind::Nat6,
    ];

    /// True for the groups that go through the forwarder's NAT (the kernel's: `iptables-nat`).
    pub fn through_nat(self) -> bool {
        matches!(self, TestKind::Nat | TestKind::Flows | TestKind::Nat6)
    }

    /// The name used by `--tests`.
    pub fn name(self) -> &'static str {
        match self {
            TestKind::Tcp => "tcp",
            TestKind::Tcp4 => "tcp4",
            TestKind::Udp64 => "udp64",
            TestKind::Rr => "rr",
            TestKind::Nat => "nat",
            TestKind::Flows => "flows",
            TestKind::Endpoints => "endpoints",
            TestKind::Tcp6 => "tcp6",
            TestKind::Tcp4x6 => "tcp4x6",
            TestKind::Udp6 => "udp6",
            TestKind::Rr6 => "rr6",
            TestKind::Nat6 => "nat6",
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
            TestKind::Flows => &[
                metrics::NAT_OUT_FLOWS_1,
                metrics::NAT_OUT_FLOWS_1K,
                metrics::NAT_OUT_FLOWS_100K,
            ],
            TestKind::Endpoints => &[
                metrics::TCP1_2_ENDPOINTS,
                metrics::TCP1_64_ENDPOINTS,
                metrics::TCP1_10K_MACS,
            ],
            TestKind::Tcp6 => &[v6::TCP1],
            TestKind::Tcp4x6 => &[v6::TCP4],
            TestKind::Udp6 => &[v6::UDP64],
            TestKind::Rr6 => &[v6::TCP_RR, v6::UDP_RR],
            TestKind::Nat6 => &[
                v6::NAT_OUT_TCP1,
                v6::NAT_IN_TCP1,
                v6::NAT_OUT_RR,
                v6::NAT_IN_RR,
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
            .ok_or_else(|| {
                let names: Vec<&str> = TestKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown test {s:?} (expected {})", names.join(", "))
            })
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

impl Unit {
    /// The unit of the cost column of a row measured in this unit: forwarding CPU per
    /// Gbit/s for throughput, per packet for packet rates, per round trip for latency.
    pub fn cost_label(self) -> &'static str {
        match self {
            Unit::Gbps => "%CPU/Gbit/s",
            Unit::Kpps => "ns CPU/pkt",
            Unit::Us => "us CPU/RTT",
        }
    }

    /// The forwarding cost of a measurement of `value` (in this unit) that took `fwd_pct` %
    /// of one CPU: % of one CPU per Gbit/s; CPU nanoseconds per packet (`fwd_pct` % of a
    /// second spread over `value` thousand packets); CPU microseconds per round trip (one
    /// round trip every `value` microseconds). None without a positive figure.
    pub fn cost(self, value: f64, fwd_pct: f64) -> Option<f64> {
        if !(value > 0.0 && value.is_finite() && fwd_pct.is_finite()) {
            return None;
        }
        Some(match self {
            Unit::Gbps => fwd_pct / value,
            Unit::Kpps => fwd_pct / 100.0 * 1e9 / (value * 1e3),
            Unit::Us => fwd_pct / 100.0 * value,
        })
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

    /// A metric (also for the v6 rows of [`super::v6`]).
    pub(super) const fn m(name: &'static str, unit: Unit, better: Better) -> Metric {
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
    /// TCP, 1 stream, a -> outside through NAT, no other flow.
    pub const NAT_OUT_FLOWS_1: Metric = m("nat_out tcp1, 1 flow", Unit::Gbps, Better::Higher);
    /// TCP, 1 stream, a -> outside through NAT, 1,000 UDP flows established before.
    pub const NAT_OUT_FLOWS_1K: Metric = m("nat_out tcp1, +1k flows", Unit::Gbps, Better::Higher);
    /// TCP, 1 stream, a -> outside through NAT, 100,000 UDP flows established before.
    pub const NAT_OUT_FLOWS_100K: Metric =
        m("nat_out tcp1, +100k flows", Unit::Gbps, Better::Higher);
    /// TCP, 1 stream, a -> b on a bridge with 2 endpoints.
    pub const TCP1_2_ENDPOINTS: Metric = m("tcp1 a->b, 2 endpoints", Unit::Gbps, Better::Higher);
    /// TCP, 1 stream, a -> b on a bridge with 64 endpoints.
    pub const TCP1_64_ENDPOINTS: Metric = m("tcp1 a->b, 64 endpoints", Unit::Gbps, Better::Higher);
    /// TCP, 1 stream, a -> b on a bridge that learned 10,000 MACs before the run.
    pub const TCP1_10K_MACS: Metric = m("tcp1 a->b, +10k MACs", Unit::Gbps, Better::Higher);
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
    /// The forwarding work, the figure the cost column divides: sluice's worker threads
    /// (`sluice-w*`), the process of a peer that is one (OVS, slirp4netns, pasta), or for the
    /// kernel peers the softirq time of all CPUs (where bridging, routing and NAT run); for
    /// sluice with the flow offload, its threads plus the softirq time.
    pub forwarding_pct: Option<f64>,
    /// Busy time of all CPUs just before the measurement, while nothing of the benchmark ran
    /// (other load on the machine makes the figure less trustworthy).
    pub background_pct: Option<f64>,
}

impl CpuUse {
    /// CPU use between two snapshots `elapsed_s` seconds apart, with `hz` ticks per second:
    /// the machine's (`/proc/stat`), the forwarder process's and its worker threads' ticks
    /// (before, after).
    pub fn between(
        before: &parse::CpuTimes,
        after: &parse::CpuTimes,
        ticks: ForwarderTicks,
        hz: f64,
        elapsed_s: f64,
    ) -> CpuUse {
        let pct = |ticks: u64| {
            (elapsed_s > 0.0 && hz > 0.0).then(|| ticks as f64 / hz / elapsed_s * 100.0)
        };
        let span = |t: Option<(u64, u64)>| t.and_then(|(a, b)| pct(b.saturating_sub(a)));
        let forwarder_pct = span(ticks.process);
        let softirq_pct = pct(after.softirq.saturating_sub(before.softirq));
        CpuUse {
            forwarder_pct,
            softirq_pct,
            busy_pct: pct(after.busy.saturating_sub(before.busy)),
            forwarding_pct: match span(ticks.workers).or(forwarder_pct) {
                Some(own) if ticks.kernel_offload => softirq_pct.map(|si| own + si),
                own => own.or(softirq_pct),
            },
            background_pct: None,
        }
    }
}

/// Clock ticks of a forwarder over one measurement, each (before, after); None when it is
/// not a process (the kernel) or has no worker threads of sluice's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwarderTicks {
    /// The whole process (user + system, all threads).
    pub process: Option<(u64, u64)>,
    /// sluice's forwarding threads only.
    pub workers: Option<(u64, u64)>,
    /// The forwarder hands established flows to the kernel (sluice with the flow offload on,
    /// its default: the `sluice` peer): the softirq time of all CPUs forwards too, and counts
    /// with its threads.
    pub kernel_offload: bool,
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
    /// Forwarding CPU per unit of work ([`Unit::cost`]), when both figures are there.
    pub cost: Option<f64>,
}

impl Sample {
    /// The sample of a measurement's outcome (its figure and a note, or why it failed) that
    /// took `cpu`, with the cost of the work it did in `unit`.
    pub fn new(r: Result<(f64, String), String>, cpu: CpuUse, unit: Unit) -> Sample {
        let (value, note) = match r {
            Ok((v, n)) => (Ok(v), n),
            Err(e) => (Err(e), String::new()),
        };
        let cost = value
            .as_ref()
            .ok()
            .zip(cpu.forwarding_pct)
            .and_then(|(v, f)| unit.cost(*v, f));
        Sample {
            value,
            note,
            cpu,
            cost,
        }
    }
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
        let e = "tcp5".parse::<TestKind>().unwrap_err();
        assert!(
            e.ends_with("flows, endpoints, tcp6, tcp4x6, udp6, rr6, nat6)"),
            "{e}"
        );
    }

    #[test]
    fn shapes_of_peers() {
        assert_eq!(Shape::of_peer("slirp4netns"), Shape::NsHost);
        assert_eq!(Shape::of_peer("pasta"), Shape::NsHost);
        for p in ["kernel", "sluice", "iptables-nat", "ovs"] {
            assert_eq!(Shape::of_peer(p), Shape::Bridge);
        }
    }

    fn times(busy: u64, softirq: u64, total: u64) -> parse::CpuTimes {
        parse::CpuTimes {
            busy,
            softirq,
            total,
        }
    }

    #[test]
    fn cpu_use_in_percent_of_one_cpu() {
        let (a, b) = (times(100, 10, 1000), times(400, 60, 1400));
        let process = ForwarderTicks {
            process: Some((5, 155)),
            workers: None,
            kernel_offload: false,
        };
        let c = CpuUse::between(&a, &b, process, 100.0, 2.0);
        assert_eq!(c.busy_pct, Some(150.0));
        assert_eq!(c.softirq_pct, Some(25.0));
        assert_eq!(c.forwarder_pct, Some(75.0));
        // A process without sluice's workers: all of it forwards.
        assert_eq!(c.forwarding_pct, Some(75.0));
        let none = CpuUse::between(&a, &b, ForwarderTicks::default(), 100.0, 0.0);
        assert_eq!(none, CpuUse::default());
    }

    #[test]
    fn forwarding_cpu_is_the_workers_the_process_or_softirq() {
        let (a, b) = (parse::CpuTimes::default(), times(300, 40, 400));
        let sluice = ForwarderTicks {
            process: Some((0, 120)),
            workers: Some((10, 110)),
            kernel_offload: false,
        };
        let c = CpuUse::between(&a, &b, sluice, 100.0, 1.0);
        assert_eq!(c.forwarder_pct, Some(120.0));
        assert_eq!(c.forwarding_pct, Some(100.0));
        let kernel = CpuUse::between(&a, &b, ForwarderTicks::default(), 100.0, 1.0);
        assert_eq!(kernel.forwarder_pct, None);
        assert_eq!(kernel.forwarding_pct, Some(40.0));
        let offloading = ForwarderTicks {
            kernel_offload: true,
            ..sluice
        };
        let c = CpuUse::between(&a, &b, offloading, 100.0, 1.0);
        assert_eq!(c.forwarding_pct, Some(140.0));
    }

    #[test]
    fn cost_per_unit_of_work() {
        // 90 % of a CPU for 12 Gbit/s.
        assert_eq!(Unit::Gbps.cost(12.0, 90.0), Some(7.5));
        // A whole CPU for 500 kpps: 2 us = 2000 ns per packet.
        assert_eq!(Unit::Kpps.cost(500.0, 100.0), Some(2000.0));
        // Half a CPU, one round trip every 20 us: 10 us per round trip.
        assert_eq!(Unit::Us.cost(20.0, 50.0), Some(10.0));
        assert_eq!(Unit::Gbps.cost(0.0, 90.0), None);
        assert_eq!(Unit::Gbps.cost(f64::NAN, 90.0), None);
        assert_eq!(Unit::Gbps.cost(1.0, f64::INFINITY), None);
        assert_eq!(Unit::Gbps.cost_label(), "%CPU/Gbit/s");
    }
}
