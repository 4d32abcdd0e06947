//! The offload thread: drains the workers' requests and installs or removes flows in the
//! kernel (`sluice_offload::Offload`), ages them once a second from their kernel counters
//! (a tracked flow in use keeps its conntrack entry alive; one whose entry expired, or a
//! bridged flow idle past its timeout, is removed), and flushes every flow when the dataplane's
//! epoch advances (a table swap or a moved neighbour), so nothing decided under old tables
//! keeps forwarding. All bpf(2) calls of the offload happen here, never on a worker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_offload::{FlowKey, FlowUsage, Offload, OffloadError};

use super::{Direction, Offloads, Request, Tracked};
use crate::config::L4Proto;
use crate::nat::Tuple;
use crate::pipeline::Dataplane;
use crate::time::Millis;

/// How long the thread sleeps between rounds (requests wait at most this long).
const ROUND: Duration = Duration::from_millis(1);

/// How often installed flows are aged.
const AGE_EVERY: Duration = Duration::from_secs(1);

/// The running offload thread; dropping it stops it and flushes the kernel's flows.
pub(crate) struct OffloadThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for OffloadThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadThread").finish_non_exhaustive()
    }
}

impl OffloadThread {
    /// Starts the thread over `kernel` for `dp`'s requests.
    pub(crate) fn start(dp: Arc<Dataplane>, kernel: Arc<Offload>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sluice-offload".into())
            .spawn(move || {
                let mut s = State::new(&dp, &kernel);
                s.run(&flag);
            })?;
        Ok(OffloadThread {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for OffloadThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An installed flow as the thread ages it.
struct Installed {
    dirs: [Direction; 2],
    tracked: Tracked,
    /// Each direction's counters at the last read.
    usage: [FlowUsage; 2],
    /// When a direction last forwarded (CLOCK_MONOTONIC ns), or when it was installed.
    last_used_ns: u64,
}

/// The thread's state: the flows it installed, by their first direction's key.
struct State<'a> {
    dp: &'a Dataplane,
    kernel: &'a Offload,
    flows: HashMap<FlowKey, Installed>,
    epoch: u32,
}

impl<'a> State<'a> {
    fn new(dp: &'a Dataplane, kernel: &'a Offload) -> Self {
        State {
            dp,
            kernel,
            flows: HashMap::new(),
            epoch: dp.epoch32(),
        }
    }

    fn offloads(&self) -> &'a Offloads {
        self.dp.offloads()
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut next_age = Instant::now() + AGE_EVERY;
        while !stop.load(Ordering::Acquire) {
            let epoch = self.dp.epoch32();
            if epoch != self.epoch {
                self.flush();
                self.epoch = epoch;
            }
            while let Some(r) = self.offloads().next_request() {
                self.handle(r);
            }
            if Instant::now() >= next_age {
                self.age();
                next_age = Instant::now() + AGE_EVERY;
            }
            std::thread::sleep(ROUND);
        }
        self.flush();
    }

    fn handle(&mut self, r: Request) {
        match r {
            Request::Install {
                dirs,
                tracked,
                epoch,
            } if epoch == self.epoch => self.install(dirs, tracked),
            // Decided under tables that have changed since: the flow offers itself again.
            Request::Install { .. } => {}
            Request::Remove { keys } => {
                let first = if self.flows.contains_key(&keys[0]) {
                    keys[0]
                } else {
                    keys[1]
                };
                if let Some(f) = self.flows.remove(&first) {
                    self.remove(f);
                }
            }
        }
    }

    fn install(&mut self, dirs: [Direction; 2], tracked: Tracked) {
        let o = self.offloads();
        if self.flows.contains_key(&dirs[0].key) || self.flows.contains_key(&dirs[1].key) {
            return;
        }
        let k = self.kernel;
        let done = dirs[0].install(k).and_then(|()| {
            dirs[1].install(k).inspect_err(|_| {
                let _ = dirs[0].uninstall(k);
            })
        });
        match done {
            Ok(()) => {
                bump(&o.installed, 1);
                self.flows.insert(
                    dirs[0].key,
                    Installed {
                        dirs,
                        tracked,
                        usage: [FlowUsage::default(); 2],
                        last_used_ns: sluice_offload::now_ns(),
                    },
                );
                o.active.store(self.flows.len() as u64, Ordering::Relaxed);
            }
            Err(OffloadError::Full(_)) => bump(&o.map_full, 1),
            Err(_) => bump(&o.failed, 1),
        }
    }

    /// Reads what `f` forwarded since the last read into the counters; true if it forwarded
    /// anything.
    fn account(&self, f: &mut Installed) -> bool {
        let o = self.offloads();
        let mut used = false;
        for (d, last) in f.dirs.iter().zip(f.usage.iter_mut()) {
            if let Ok(Some(u)) = d.usage(self.kernel) {
                bump(&o.kernel_packets, u.packets.saturating_sub(last.packets));
                bump(&o.kernel_bytes, u.bytes.saturating_sub(last.bytes));
                used |= u.packets > last.packets;
                f.last_used_ns = f.last_used_ns.max(u.last_used_ns);
                *last = u;
            }
        }
        used
    }

    /// Removes both directions of `f` (already out of `flows`), counting what they forwarded.
    fn remove(&mut self, mut f: Installed) {
        self.account(&mut f);
        let o = self.offloads();
        let ok = f.dirs.iter().all(|d| d.uninstall(self.kernel).is_ok());
        if !ok {
            bump(&o.failed, 1);
        }
        if let Tracked::Bridged { .. } = f.tracked {
            o.seen().forget(&tuple_of(&f.dirs[0].key));
        }
        bump(&o.removed, 1);
        o.active.store(self.flows.len() as u64, Ordering::Relaxed);
    }

    /// Once a second: counts what every flow forwarded, keeps the conntrack entries of flows in
    /// use alive, and removes flows whose conntrack entry is gone or that idled too long.
    fn age(&mut self) {
        let mut flows = std::mem::take(&mut self.flows);
        let used: Vec<(FlowKey, bool)> = flows
            .iter_mut()
            .map(|(k, f)| (*k, self.account(f)))
            .collect();
        let (now, now_ns) = (Millis::now(), sluice_offload::now_ns());
        let gone: Vec<FlowKey> = self.dp.with_conntrack(|ct| {
            used.iter()
                .filter(|(k, used)| match flows[k].tracked {
                    Tracked::Conntrack(id) if *used => !ct.refresh(id, now),
                    Tracked::Conntrack(id) => !ct.is_tracked(id),
                    Tracked::Bridged { idle_secs } => {
                        now_ns.saturating_sub(flows[k].last_used_ns)
                            > u64::from(idle_secs) * 1_000_000_000
                    }
                })
                .map(|(k, _)| *k)
                .collect()
        });
        self.flows = flows;
        for k in gone {
            if let Some(f) = self.flows.remove(&k) {
                self.remove(f);
            }
        }
    }

    /// Removes every flow (the epoch moved, or the thread stops).
    fn flush(&mut self) {
        if self.flows.is_empty() {
            return;
        }
        let mut flows = std::mem::take(&mut self.flows);
        for f in flows.values_mut() {
            self.account(f);
        }
        let o = self.offloads();
        if self.kernel.clear().is_err() {
            bump(&o.failed, 1);
        }
        bump(&o.removed, flows.len() as u64);
        o.active.store(0, Ordering::Relaxed);
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The tuple a bridged direction's key matches (both addresses IPv4: bridged offers are).
fn tuple_of(k: &FlowKey) -> Tuple {
    let v4 = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
    };
    Tuple {
        proto: if k.proto == 6 {
            L4Proto::Tcp
        } else {
            L4Proto::Udp
        },
        src: v4(k.src),
        src_port: k.sport,
        dst: v4(k.dst),
        dst_port: k.dport,
    }
}
