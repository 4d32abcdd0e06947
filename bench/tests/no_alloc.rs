//! The fast path allocates nothing: once flows and MACs are known, running batches through the
//! pipeline makes no heap allocation (checked with a counting global allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sluice_bench::BatchBufs;
use sluice_dataplane::pipeline::{Dataplane, Worker};
use sluice_dataplane::testkit::{self, Scenario as S, ACK, PORT_A, PORT_B, SYN, UPLINK};
use sluice_dataplane::time::Millis;

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls while enabled.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System` (every allocation is forwarded), with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `p` came from `System` with layout `l`; the caller's contract holds.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const NOW: Millis = Millis(1_000_000);

/// Allocations made while running `frames` (arriving on `port`) through `w` 10 times.
fn allocations(w: &mut Worker, port: sluice_dataplane::frame::PortId, frames: &[Vec<u8>]) -> usize {
    let mut bufs = BatchBufs::new(frames.len(), 256);
    let mut total = 0;
    for _ in 0..10 {
        bufs.fill(frames.iter().map(Vec::as_slice));
        ALLOCS.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        let forwarded = bufs.run(w, port, NOW);
        COUNTING.store(false, Ordering::Relaxed);
        assert_eq!(forwarded, frames.len(), "every frame is forwarded");
        total += ALLOCS.load(Ordering::Relaxed);
    }
    total
}

#[test]
fn established_traffic_allocates_nothing() {
    let dp = Dataplane::new(&S::new().config).expect("scenario is valid");
    let mut w = dp.worker();
    testkit::run_one(
        &mut w,
        UPLINK,
        &testkit::arp_reply(S::HOP_MAC, S::HOP, S::UP_MAC, S::UP),
        NOW,
    );
    let payload = testkit::udp(S::A, 1, S::B, 2, b"x");
    let l2: Vec<Vec<u8>> = (0..64)
        .map(|_| testkit::eth(S::mac(S::B), S::mac(S::A), 0x0800, &payload))
        .collect();
    assert_eq!(allocations(&mut w, PORT_A, &l2), 0, "L2 forwarding");

    let out = |flags| -> Vec<Vec<u8>> {
        (0..64u16)
            .map(|i| {
                S::from_endpoint(
                    S::A,
                    &testkit::tcp(S::A, 20000 + i, S::REMOTE, 80, flags, b""),
                )
            })
            .collect()
    };
    let mut setup = BatchBufs::new(64, 256);
    setup.fill(out(SYN).iter().map(Vec::as_slice));
    setup.run(&mut w, PORT_A, NOW);
    assert_eq!(
        allocations(&mut w, PORT_A, &out(ACK)),
        0,
        "NAPT established"
    );

    let inbound = |flags| -> Vec<Vec<u8>> {
        (0..64u16)
            .map(|i| S::from_outside(&testkit::tcp(S::REMOTE, 30000 + i, S::UP, 8080, flags, b"")))
            .collect()
    };
    setup.fill(inbound(SYN).iter().map(Vec::as_slice));
    setup.run(&mut w, UPLINK, NOW);
    assert_eq!(
        allocations(&mut w, UPLINK, &inbound(ACK)),
        0,
        "port forward"
    );

    let replies: Vec<Vec<u8>> = (0..64u16)
        .map(|i| {
            S::from_endpoint(
                S::B,
                &testkit::tcp(S::B, 80, S::REMOTE, 30000 + i, ACK, b""),
            )
        })
        .collect();
    assert_eq!(
        allocations(&mut w, PORT_B, &replies),
        0,
        "port forward replies"
    );
}
