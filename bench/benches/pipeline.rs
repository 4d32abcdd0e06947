//! Per-packet cost of the pipeline on batches of 64 frames (issue targets in bench/RESULTS.md):
//! (a) L2 forward with 1k and 100k learned MACs, (b) NAPT first packet of a new flow,
//! (c) NAPT established flow with 1M tracked flows, (d) port-forward DNAT of established flows
//! (established: each flow's three-way handshake completes in the setup).
//! Run: `cargo bench -p sluice-bench --bench pipeline`.
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_bench::BatchBufs;
use sluice_dataplane::frame::PortId;
use sluice_dataplane::nat::Tuple;
use sluice_dataplane::pipeline::{Dataplane, Worker};
use sluice_dataplane::testkit::{self, Scenario as S, ACK, PORT_A, PORT_B, SYN, TRUNK, UPLINK};
use sluice_dataplane::time::Millis;
use sluice_dataplane::wire::MacAddr;

const BATCH: usize = 64;
const NOW: Millis = Millis(1_000_000);

fn worker(max_flows: usize) -> Worker {
    let mut s = S::new();
    s.config.nat.max_flows = max_flows;
    // One endpoint fills the table here: lift its share (a quarter by default).
    s.config.networks[0].max_flows_per_endpoint = Some(max_flows);
    let mut w = Dataplane::new(&s.config)
        .expect("scenario is valid")
        .worker();
    let arp = testkit::arp_reply(S::HOP_MAC, S::HOP, S::UP_MAC, S::UP);
    testkit::run_one(&mut w, UPLINK, &arp, NOW);
    w
}

/// A remote address and source port for flow `i` (16 flows per remote address).
fn remote(i: usize) -> (Ipv4Addr, u16) {
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    (
        Ipv4Addr::from(base + (i >> 4) as u32),
        20000 + (i & 15) as u16,
    )
}

fn outbound(i: usize, flags: u8) -> Vec<u8> {
    let (r, sport) = remote(i);
    S::from_endpoint(S::A, &testkit::tcp(S::A, sport, r, 80, flags, &[0u8; 6]))
}

fn inbound_published(i: usize, flags: u8) -> Vec<u8> {
    let (r, sport) = remote(i);
    S::from_outside(&testkit::tcp(r, sport, S::UP, 8080, flags, &[0u8; 6]))
}

/// The SYN-ACK answering a flow, sent with its reply tuple `t`.
fn synack(t: &Tuple) -> Vec<u8> {
    testkit::tcp(t.src, t.src_port, t.dst, t.dst_port, SYN | ACK, &[])
}

/// Runs every frame through `w` in batches of 256 (setup, not measured).
fn feed(w: &mut Worker, port: PortId, frames: impl Iterator<Item = Vec<u8>>) {
    let mut bufs = BatchBufs::new(256, 128);
    let mut chunk: Vec<Vec<u8>> = Vec::with_capacity(256);
    for f in frames {
        chunk.push(f);
        if chunk.len() == 256 {
            bufs.fill(chunk.iter().map(Vec::as_slice));
            bufs.run(w, port, NOW);
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        let mut last = BatchBufs::new(chunk.len(), 128);
        last.fill(chunk.iter().map(Vec::as_slice));
        last.run(w, port, NOW);
    }
}

/// Completes the three-way handshake of every flow `w` tracks (their SYNs already sent): a
/// SYN-ACK for each comes back on `reply_port` (built by `reply` from the flow's reply tuple),
/// then `ack(i)` for flow `i` goes out again on `port`; every flow is then ESTABLISHED.
fn establish(
    w: &mut Worker,
    (port, ack): (PortId, impl Fn(usize) -> Vec<u8>),
    (reply_port, reply): (PortId, impl Fn(&Tuple) -> Vec<u8>),
    flows: usize,
) {
    let replies: Vec<Tuple> = w.dataplane().conntrack().flows().map(|f| f.reply).collect();
    feed(w, reply_port, replies.iter().map(reply));
    feed(w, port, (0..flows).map(ack));
    let ct = w.dataplane().conntrack();
    assert!(
        ct.flows().all(|f| f.state == "ESTABLISHED"),
        "setup established every flow"
    );
}

/// Times only `Worker::process` over batches refilled and built (untimed) from `pool`.
fn timed_batches(
    w: &mut Worker,
    port: PortId,
    pool: &[Vec<u8>],
    cursor: &mut usize,
    iters: u64,
) -> Duration {
    let mut bufs = BatchBufs::new(BATCH, 128);
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        if *cursor + BATCH > pool.len() {
            *cursor = 0;
        }
        bufs.fill(pool[*cursor..*cursor + BATCH].iter().map(Vec::as_slice));
        *cursor += BATCH;
        total += bufs.time_process(w, port, NOW);
    }
    total
}

fn l2_forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("l2_forward");
    g.throughput(Throughput::Elements(BATCH as u64));
    for n in [1_000usize, 100_000] {
        let mut w = worker(1 << 16);
        let macs: Vec<MacAddr> = (0..n as u32)
            .map(|i| {
                let b = i.to_be_bytes();
                MacAddr([0x02, 0xaa, b[0], b[1], b[2], b[3]])
            })
            .collect();
        let payload = testkit::udp(S::A, 1000, S::B, 2000, &[0u8; 18]);
        feed(
            &mut w,
            TRUNK,
            macs.iter()
                .map(|m| testkit::eth(S::mac(S::A), *m, 0x0800, &payload)),
        );
        // Batches of frames from A to learned MACs, spread over the table; L2 forwarding does
        // not modify frames, so the batches are reused as they are.
        let mut pool: Vec<BatchBufs> = (0..(n / BATCH).clamp(1, 256))
            .map(|k| {
                let mut b = BatchBufs::new(BATCH, 128);
                let frames: Vec<Vec<u8>> = (0..BATCH)
                    .map(|j| {
                        let m = macs[(k * BATCH + j).wrapping_mul(7919) % n];
                        testkit::eth(m, S::mac(S::A), 0x0800, &payload)
                    })
                    .collect();
                b.fill(frames.iter().map(Vec::as_slice));
                b
            })
            .collect();
        let mut k = 0;
        g.bench_with_input(BenchmarkId::new("learned_macs", n), &n, |b, _| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        k = (k + 1) % pool.len();
                        pool[k].time_process(&mut w, PORT_A, NOW)
                    })
                    .sum()
            })
        });
    }
    g.finish();
}

fn napt_first_packet(c: &mut Criterion) {
    let mut g = c.benchmark_group("napt");
    g.throughput(Throughput::Elements(BATCH as u64));
    const POOL: usize = 262_144;
    let pool: Vec<Vec<u8>> = (0..POOL).map(|i| outbound(i, SYN)).collect();
    let mut w = worker(1 << 21);
    let mut cursor = 0;
    g.bench_function("first_packet", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let room = ((POOL - cursor) / BATCH) as u64;
                if room == 0 {
                    w = worker(1 << 21);
                    cursor = 0;
                    continue;
                }
                let n = left.min(room);
                total += timed_batches(&mut w, PORT_A, &pool, &mut cursor, n);
                left -= n;
            }
            total
        })
    });
    g.finish();
}

fn napt_established(c: &mut Criterion) {
    let mut g = c.benchmark_group("napt");
    g.throughput(Throughput::Elements(BATCH as u64));
    const FLOWS: usize = 1_000_000;
    let mut w = worker(1 << 21);
    feed(&mut w, PORT_A, (0..FLOWS).map(|i| outbound(i, SYN)));
    assert_eq!(
        w.dataplane().conntrack().len(),
        FLOWS,
        "setup created every flow"
    );
    establish(
        &mut w,
        (PORT_A, |i| outbound(i, ACK)),
        (UPLINK, |t: &Tuple| S::from_outside(&synack(t))),
        FLOWS,
    );
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let pool: Vec<Vec<u8>> = (0..65_536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            outbound((x % FLOWS as u64) as usize, ACK)
        })
        .collect();
    let mut cursor = 0;
    g.bench_function("established_1M_flows", |b| {
        b.iter_custom(|iters| timed_batches(&mut w, PORT_A, &pool, &mut cursor, iters))
    });
    g.finish();
}

fn port_forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("port_forward");
    g.throughput(Throughput::Elements(BATCH as u64));
    const FLOWS: usize = 65_536;
    let mut w = worker(1 << 20);
    feed(
        &mut w,
        UPLINK,
        (0..FLOWS).map(|i| inbound_published(i, SYN)),
    );
    assert_eq!(
        w.dataplane().conntrack().len(),
        FLOWS,
        "setup created every flow"
    );
    establish(
        &mut w,
        (UPLINK, |i| inbound_published(i, ACK)),
        (PORT_B, |t: &Tuple| S::from_endpoint(t.src, &synack(t))),
        FLOWS,
    );
    let pool: Vec<Vec<u8>> = (0..FLOWS)
        .map(|i| inbound_published((i * 7919) % FLOWS, ACK))
        .collect();
    let mut cursor = 0;
    g.bench_function("dnat_established", |b| {
        b.iter_custom(|iters| timed_batches(&mut w, UPLINK, &pool, &mut cursor, iters))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = benches;
    config = config();
    targets = l2_forward, napt_first_packet, napt_established, port_forward
}
criterion_main!(benches);
