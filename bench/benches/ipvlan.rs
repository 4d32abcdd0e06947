//! Per-packet cost of sluice's ipvlan beside its macvlan on batches of 64 frames: an endpoint's
//! frame to a neighbour on the parent's segment, and the neighbour's answer to the endpoint.
//! macvlan bridges both by FDB lookup, unchanged; ipvlan rewrites the source MAC to the
//! parent's on the way out and delivers by destination address (rewriting the destination MAC)
//! on the way in. Run: `cargo bench -p sluice-bench --bench ipvlan`; instruction counts with
//! `valgrind --tool=callgrind --toggle-collect='*Worker*process*'` over `--bench --test`
//! (one batch per case, see bench/RESULTS.md).
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_bench::BatchBufs;
use sluice_dataplane::config::{IpvlanConfig, IpvlanMode};
use sluice_dataplane::frame::PortId;
use sluice_dataplane::pipeline::{Dataplane, Worker};
use sluice_dataplane::testkit::{self, Scenario as S, PORT_A, TRUNK};
use sluice_dataplane::time::Millis;
use sluice_dataplane::wire::MacAddr;

const BATCH: usize = 64;
const NOW: Millis = Millis(1_000_000);
/// The parent's MAC (ipvlan's endpoints all show it).
const PARENT: MacAddr = MacAddr([2, 0x50, 0, 0, 0, 1]);
/// The neighbour on the parent's segment.
const OUT_MAC: MacAddr = MacAddr([2, 0x60, 0, 0, 0, 1]);
const OUT: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 200);

/// The scenario's network 0 on its trunk as parent, as macvlan (`ipvlan` false) or ipvlan L2,
/// with the neighbour's MAC learned.
fn worker(ipvlan: bool) -> Worker {
    let mut s = S::new();
    let n = &mut s.config.networks[0];
    n.external_gateway = true;
    n.ipvlan = ipvlan.then_some(IpvlanConfig {
        mode: IpvlanMode::L2,
        parent: Some(TRUNK),
        parent_mac: Some(PARENT),
    });
    let mut w = Dataplane::new(&s.config).expect("valid").worker();
    let learn = testkit::eth(
        MacAddr::BROADCAST,
        OUT_MAC,
        0x0800,
        &testkit::udp(OUT, 9, Ipv4Addr::BROADCAST, 9, b""),
    );
    testkit::run_one(&mut w, TRUNK, &learn, NOW);
    w
}

/// (ingress, frame) of one case's batch: out to the neighbour or in from it.
fn frame(ipvlan: bool, outbound: bool) -> (PortId, Vec<u8>) {
    let payload = |src, dst| testkit::udp(src, 1000, dst, 2000, &[0u8; 18]);
    if outbound {
        let f = testkit::eth(OUT_MAC, S::mac(S::A), 0x0800, &payload(S::A, OUT));
        (PORT_A, f)
    } else {
        let dst = if ipvlan { PARENT } else { S::mac(S::A) };
        (
            TRUNK,
            testkit::eth(dst, OUT_MAC, 0x0800, &payload(OUT, S::A)),
        )
    }
}

fn ipvlan_vs_macvlan(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipvlan_vs_macvlan");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (shape, ipvlan) in [("macvlan", false), ("ipvlan", true)] {
        for (dir, outbound) in [("to_parent", true), ("from_parent", false)] {
            let mut w = worker(ipvlan);
            let (port, f) = frame(ipvlan, outbound);
            let mut bufs = BatchBufs::new(BATCH, 128);
            bufs.fill(std::iter::repeat_n(f.as_slice(), BATCH));
            assert_eq!(bufs.run(&mut w, port, NOW), BATCH, "{shape} {dir} forwards");
            // ipvlan rewrites MACs in place: every batch is refilled (untimed).
            g.bench_with_input(BenchmarkId::new(shape, dir), &dir, |b, _| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            bufs.fill(std::iter::repeat_n(f.as_slice(), BATCH));
                            bufs.time_process(&mut w, port, NOW)
                        })
                        .sum()
                })
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = ipvlan_vs_macvlan
}
criterion_main!(benches);
