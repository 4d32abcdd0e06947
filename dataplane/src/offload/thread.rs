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

use sluice_offload::{DecapKey, FlowAction, FlowKey, FlowUsage, Offload, OffloadError};

use super::{Direction, Offloads, Request, Tracked, Tunnel};
use std::net::IpAddr;

use crate::config::L4Proto;
use crate::nat::v6::Tuple6;
use crate::pipeline::Dataplane;
use crate::time::Millis;

/// How long the thread sleeps between rounds (requests wait at most this long).
const ROUND: Duration = Duration::from_millis(1);

/// How often installed flows are aged.
const AGE_EVERY: Duration = Duration::from_secs(1);

/// What the thread needs of the kernel's flow map: the real [`Offload`], or a table in tests.
pub(super) trait FlowTable {
    /// Installs (or replaces) one direction.
    fn insert(&self, key: &FlowKey, action: &FlowAction) -> Result<(), OffloadError>;
    /// Removes one direction (absent is Ok).
    fn remove(&self, key: &FlowKey) -> Result<(), OffloadError>;
    /// The direction's counters, None when absent.
    fn usage(&self, key: &FlowKey) -> Result<Option<FlowUsage>, OffloadError>;
    /// Removes every entry.
    fn clear(&self) -> Result<(), OffloadError>;
    /// Installs an overlay direction (see `overlay`); a table without tunnels (tests) keeps it
    /// as a plain one under its key.
    fn insert_tunnel(
        &self,
        key: &FlowKey,
        action: &FlowAction,
        tunnel: Tunnel,
    ) -> Result<(), OffloadError> {
        let _ = tunnel;
        self.insert(key, action)
    }
    /// Removes a decapsulating direction (absent is Ok).
    fn remove_decap(&self, key: &DecapKey) -> Result<(), OffloadError> {
        self.remove(&key.inner)
    }
    /// A decapsulating direction's counters, None when absent.
    fn decap_usage(&self, key: &DecapKey) -> Result<Option<FlowUsage>, OffloadError> {
        self.usage(&key.inner)
    }
}

impl FlowTable for Offload {
    fn insert(&self, key: &FlowKey, action: &FlowAction) -> Result<(), OffloadError> {
        Offload::insert(self, key, action)
    }

    fn remove(&self, key: &FlowKey) -> Result<(), OffloadError> {
        Offload::remove(self, key)
    }

    fn usage(&self, key: &FlowKey) -> Result<Option<FlowUsage>, OffloadError> {
        Offload::usage(self, key)
    }

    fn clear(&self) -> Result<(), OffloadError> {
        Offload::clear(self)
    }

    fn insert_tunnel(
        &self,
        key: &FlowKey,
        action: &FlowAction,
        tunnel: Tunnel,
    ) -> Result<(), OffloadError> {
        super::overlay::insert_tunnel(self, key, action, tunnel)
    }

    fn remove_decap(&self, key: &DecapKey) -> Result<(), OffloadError> {
        Offload::remove_decap(self, key)
    }

    fn decap_usage(&self, key: &DecapKey) -> Result<Option<FlowUsage>, OffloadError> {
        Offload::decap_usage(self, key)
    }
}

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
                let mut s = State::new(&dp, &*kernel);
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
struct State<'a, K: FlowTable> {
    dp: &'a Dataplane,
    kernel: &'a K,
    flows: HashMap<FlowKey, Installed>,
    epoch: u32,
}

impl<'a, K: FlowTable> State<'a, K> {
    fn new(dp: &'a Dataplane, kernel: &'a K) -> Self {
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
            self.step();
            if Instant::now() >= next_age {
                self.age();
                next_age = Instant::now() + AGE_EVERY;
            }
            std::thread::sleep(ROUND);
        }
        self.flush();
    }

    /// One round: flushes if the epoch moved, then handles the queued requests.
    fn step(&mut self) {
        let epoch = self.dp.epoch32();
        if epoch != self.epoch {
            self.flush();
            self.epoch = epoch;
        }
        while let Some(r) = self.offloads().next_request() {
            self.handle(r);
        }
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
            o.seen().forget(&f.dirs[0].key);
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
        let mut gone: Vec<FlowKey> = self.dp.with_conntrack(|ct| {
            used.iter()
                .filter(|(k, used)| match flows[k].tracked {
                    Tracked::Conntrack(id) if *used => !ct.refresh(id, now),
                    Tracked::Conntrack(id) => !ct.is_tracked(id),
                    Tracked::Conntrack6(_) => false,
                    Tracked::Bridged { idle_secs } => {
                        now_ns.saturating_sub(flows[k].last_used_ns)
                            > u64::from(idle_secs) * 1_000_000_000
                    }
                })
                .map(|(k, _)| *k)
                .collect()
        });
        gone.extend(aged6(self.dp, &flows, &used, now));
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

/// The v6 tracked flows among `used` whose conntrack entry is gone, after keeping those the
/// kernel forwarded (`used`) alive.
fn aged6(
    dp: &Dataplane,
    flows: &HashMap<FlowKey, Installed>,
    used: &[(FlowKey, bool)],
    now: Millis,
) -> Vec<FlowKey> {
    let v6: Vec<_> = used
        .iter()
        .filter_map(|(k, used)| match flows[k].tracked {
            Tracked::Conntrack6(slot) => Some((*k, slot, *used, tuple6_of(k)?)),
            _ => None,
        })
        .collect();
    if v6.is_empty() {
        return Vec::new();
    }
    dp.with_conntrack6(|ct| {
        v6.into_iter()
            .filter(|(_, slot, used, t)| {
                if *used {
                    !ct.refresh(*slot, t, now)
                } else {
                    !ct.is_tracked(*slot, t)
                }
            })
            .map(|(k, ..)| k)
            .collect()
    })
}

/// The v6 tuple a tracked direction's key matches.
fn tuple6_of(k: &FlowKey) -> Option<Tuple6> {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (k.src, k.dst) else {
        return None;
    };
    let proto = match k.proto {
        6 => L4Proto::Tcp,
        17 => L4Proto::Udp,
        _ => return None,
    };
    Some(Tuple6 {
        proto,
        src,
        src_port: k.sport,
        dst,
        dst_port: k.dport,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::nat::NatAction;
    use crate::testkit::Scenario;

    /// The kernel's flow map as a table: each installed direction with its counters.
    #[derive(Default)]
    struct Table {
        entries: RefCell<HashMap<FlowKey, FlowUsage>>,
        clears: RefCell<u32>,
    }

    impl Table {
        /// The kernel forwarded a packet of `bytes` on direction `key` just now.
        fn forward(&self, key: &FlowKey, bytes: u64) {
            let mut e = self.entries.borrow_mut();
            let u = e.get_mut(key).expect("installed");
            u.packets += 1;
            u.bytes += bytes;
            u.last_used_ns = sluice_offload::now_ns();
        }
    }

    impl FlowTable for Table {
        fn insert(&self, key: &FlowKey, _: &FlowAction) -> Result<(), OffloadError> {
            self.entries.borrow_mut().insert(*key, FlowUsage::default());
            Ok(())
        }

        fn remove(&self, key: &FlowKey) -> Result<(), OffloadError> {
            self.entries.borrow_mut().remove(key);
            Ok(())
        }

        fn usage(&self, key: &FlowKey) -> Result<Option<FlowUsage>, OffloadError> {
            Ok(self.entries.borrow().get(key).copied())
        }

        fn clear(&self) -> Result<(), OffloadError> {
            *self.clears.borrow_mut() += 1;
            self.entries.borrow_mut().clear();
            Ok(())
        }
    }

    fn dirs(sport: u16) -> [Direction; 2] {
        let dir = |ifindex, (src, sport), (dst, dport)| Direction {
            key: FlowKey {
                ifindex,
                src: IpAddr::V4(src),
                dst: IpAddr::V4(dst),
                proto: 6,
                sport,
                dport,
            },
            action: FlowAction {
                egress_ifindex: 3 - ifindex,
                eth_src: [2; 6],
                eth_dst: [4; 6],
                decrement_ttl: false,
                snat: None,
                dnat: None,
            },
            tunnel: None,
        };
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3));
        [dir(1, (a, sport), (b, 80)), dir(2, (b, 80), (a, sport))]
    }

    fn install(dirs: [Direction; 2], tracked: Tracked, epoch: u32) -> Request {
        Request::Install {
            dirs,
            tracked,
            epoch,
        }
    }

    #[test]
    fn installs_counts_what_the_kernel_forwarded_and_removes_on_request() {
        let dp = Dataplane::new(&Scenario::new().config).unwrap();
        let table = Table::default();
        let mut s = State::new(&dp, &table);
        let bridged = Tracked::Bridged { idle_secs: 60 };
        s.handle(install(dirs(1000), bridged, s.epoch + 1));
        assert!(table.entries.borrow().is_empty(), "another epoch's request");
        s.handle(install(dirs(1000), bridged, s.epoch));
        assert_eq!(table.entries.borrow().len(), 2);
        table.forward(&dirs(1000)[0].key, 1500);
        table.forward(&dirs(1000)[1].key, 66);
        s.age();
        let st = dp.offloads().stats();
        assert_eq!((st.installed, st.active), (1, 1));
        assert_eq!((st.kernel_packets, st.kernel_bytes), (2, 1566));
        // A removal names the directions in either order.
        let [d0, d1] = dirs(1000);
        table.forward(&d0.key, 1000);
        s.handle(Request::Remove {
            keys: [d1.key, d0.key],
        });
        assert!(table.entries.borrow().is_empty());
        let st = dp.offloads().stats();
        assert_eq!((st.removed, st.active, st.kernel_bytes), (1, 0, 2566));
    }

    #[test]
    fn aging_keeps_used_tracked_flows_and_drops_idle_or_expired_ones() {
        let dp = Dataplane::new(&Scenario::new().config).unwrap();
        let table = Table::default();
        let mut s = State::new(&dp, &table);
        let t = crate::nat::Tuple {
            proto: crate::config::L4Proto::Tcp,
            src: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 2000,
            dst: Ipv4Addr::new(198, 51, 100, 7),
            dst_port: 80,
        };
        // Created 100 s ago: without the kernel's use it would expire in 20 s.
        let now = Millis::now();
        let start = Millis(now.0.saturating_sub(100_000));
        let hit = dp
            .with_conntrack(|ct| ct.create(&t, NatAction::default(), start))
            .unwrap();
        s.handle(install(dirs(2000), Tracked::Conntrack(hit.flow), s.epoch));
        s.handle(install(
            dirs(3000),
            Tracked::Bridged { idle_secs: 0 },
            s.epoch,
        ));
        std::thread::sleep(Duration::from_millis(5));
        table.forward(&dirs(2000)[0].key, 100);
        s.age();
        // The used tracked flow stays, and its conntrack entry outlives its first deadline;
        // the bridged one idled past its 0 s.
        assert_eq!(s.flows.len(), 1);
        assert!(s.flows.contains_key(&dirs(2000)[0].key));
        let syn_sent = crate::nat::Timeouts::default().tcp_syn_sent;
        dp.with_conntrack(|ct| {
            ct.expire(start.plus_secs(syn_sent + 10));
            assert!(ct.is_tracked(hit.flow), "kept alive by the kernel's use");
            ct.remove(hit.flow);
        });
        s.age();
        assert!(s.flows.is_empty(), "its conntrack entry is gone");
        assert!(table.entries.borrow().is_empty());
        assert_eq!(dp.offloads().stats().removed, 2);
    }

    #[test]
    fn a_new_epoch_flushes_everything() {
        let dp = Dataplane::new(&Scenario::new().config).unwrap();
        let table = Table::default();
        let mut s = State::new(&dp, &table);
        s.handle(install(
            dirs(4000),
            Tracked::Bridged { idle_secs: 60 },
            s.epoch,
        ));
        s.handle(install(
            dirs(4001),
            Tracked::Bridged { idle_secs: 60 },
            s.epoch,
        ));
        table.forward(&dirs(4000)[1].key, 700);
        s.step();
        assert_eq!(*table.clears.borrow(), 0, "same epoch: nothing flushed");
        dp.apply(&Scenario::new().config).unwrap();
        // A request of the old epoch, queued before the swap, is not installed after it.
        dp.offloads().offer(install(
            dirs(4002),
            Tracked::Bridged { idle_secs: 60 },
            s.epoch,
        ));
        s.step();
        assert_eq!(*table.clears.borrow(), 1);
        assert!(table.entries.borrow().is_empty());
        let st = dp.offloads().stats();
        assert_eq!((st.removed, st.active, st.kernel_bytes), (2, 0, 700));
    }
}
