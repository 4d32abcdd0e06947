//! Conntrack memory per flow at 1M flows, measured with a counting allocator (heap bytes held
//! after creating the flows, divided by their number).
//! Run: `cargo bench -p sluice-bench --bench conntrack_memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_dataplane::config::{L4Proto, NatConfig};
use sluice_dataplane::nat::{Conntrack, NatAction, Timeouts, Tuple};
use sluice_dataplane::time::Millis;

struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn note(delta: isize) {
    let now = if delta >= 0 {
        HELD.fetch_add(delta as usize, Ordering::Relaxed) + delta as usize
    } else {
        HELD.fetch_sub((-delta) as usize, Ordering::Relaxed) - (-delta) as usize
    };
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; we only count sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size() as isize);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note(-(l.size() as isize));
        // SAFETY: `p` came from `System` (every allocation is forwarded), with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new as isize - l.size() as isize);
        // SAFETY: `p` came from `System` with layout `l`; the caller's contract holds.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    // `cargo bench` passes --bench; anything else (e.g. a filter) is ignored.
    for flows in [100_000usize, 1_000_000] {
        let before = HELD.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let cfg = NatConfig {
            max_flows: 2 * flows,
            ..NatConfig::default()
        };
        let mut ct = Conntrack::new(&cfg, Timeouts::default());
        let up = Ipv4Addr::new(192, 0, 2, 1);
        let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
        for i in 0..flows {
            let t = Tuple {
                proto: L4Proto::Tcp,
                src: Ipv4Addr::new(172, 17, 0, 2),
                src_port: 20000 + (i & 15) as u16,
                dst: Ipv4Addr::from(base + (i >> 4) as u32),
                dst_port: 80,
            };
            let action = NatAction {
                snat: Some(up),
                dnat: None,
            };
            ct.create(&t, action, Millis(1000))
                .expect("room for every flow");
        }
        let held = HELD.load(Ordering::Relaxed) - before;
        let peak = PEAK.load(Ordering::Relaxed) - before;
        println!(
            "conntrack_memory flows={flows} heap_bytes={held} bytes_per_flow={:.1} peak_bytes_per_flow={:.1} memory_bytes()={}",
            held as f64 / flows as f64,
            peak as f64 / flows as f64,
            ct.memory_bytes()
        );
        drop(ct);
    }
}
