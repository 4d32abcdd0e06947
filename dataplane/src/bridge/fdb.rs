//! The forwarding database of one bridge domain: (VLAN, MAC) -> port, learned from source MACs,
//! aged out when idle, plus static entries for endpoints.
//!
//! Shared by the network's workers behind one `parking_lot::RwLock`, taken once per batch:
//! - [`Fdb::read`] gives a [`FdbReader`] for the whole batch: lookups, and source checks that
//!   refresh a known MAC's last-seen second through an atomic inside the entry (only when the
//!   second changed, so steady traffic does not bounce the cache line between workers);
//! - new and moved MACs are collected by the worker as [`Learn`]s and applied by
//!   [`Fdb::learn`] at the end of the batch under one write lock, after the reader is dropped
//!   (taking the write lock while the same thread holds a reader deadlocks).
//!
//! Timestamps are whole seconds of the `Millis` passed in, so aging is accurate to one second.
//! A lookup may still return a dynamic entry that is past its aging time until the control
//! thread's next [`Fdb::age`] runs.

use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::{RwLock, RwLockReadGuard};
use serde::Serialize;

use super::mactable::MacTable;
use crate::config::NetworkConfig;
use crate::frame::PortId;
use crate::hash::KeyHasherBuilder;
use crate::time::Millis;
use crate::wire::MacAddr;

/// Most entries the table reserves room for up front; beyond it the table grows when learning.
const MAX_PREALLOC: usize = 1 << 16;

/// The knobs of one FDB, from the network's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbParams {
    /// Seconds a dynamic entry may stay idle before aging removes it.
    pub aging_secs: u32,
    /// Most dynamic entries (MAC-flood defence); static entries do not count.
    pub max_entries: usize,
}

impl Default for FdbParams {
    /// The defaults of `NetworkConfig`: 300 s aging, 8192 MACs.
    fn default() -> Self {
        FdbParams {
            aging_secs: 300,
            max_entries: 8192,
        }
    }
}

impl From<&NetworkConfig> for FdbParams {
    fn from(n: &NetworkConfig) -> Self {
        FdbParams {
            aging_secs: n.fdb_aging_secs,
            max_entries: n.fdb_max,
        }
    }
}

/// A source MAC to learn at the end of a batch: unknown, or seen on another port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Learn {
    /// VLAN the frame belongs to.
    pub vlan: u16,
    /// The frame's source MAC.
    pub mac: MacAddr,
    /// The port it arrived on.
    pub port: PortId,
}

/// What [`Fdb::learn`] did with a batch of [`Learn`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LearnSummary {
    /// New dynamic entries.
    pub inserted: usize,
    /// Dynamic entries that moved to another port.
    pub moved: usize,
    /// Learns refused: the dynamic cap was reached, the MAC is static on another port, or it is
    /// a group address.
    pub refused: usize,
}

/// The verdict of [`FdbReader::check_source`] on a frame's source MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceCheck {
    /// Known on this port; a dynamic entry's last-seen time was refreshed.
    Known,
    /// Unknown, or known on another port (a move): the caller pushes a [`Learn`] and forwards.
    Learn,
    /// Unknown and the dynamic cap is reached: the caller drops the frame as
    /// `DropReason::FdbFull`.
    Full,
    /// A static entry (an endpoint's MAC) on another port: the caller drops the frame, so a
    /// container's MAC cannot be stolen (`DropReason::SpoofedMac`).
    StaticElsewhere,
    /// A group (multicast or broadcast) address as source, which no valid frame carries and
    /// which is never learned: the caller drops the frame as `DropReason::Malformed`.
    Group,
}

/// One entry as `sluice fdb ls` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FdbEntry {
    /// VLAN.
    pub vlan: u16,
    /// MAC address.
    pub mac: MacAddr,
    /// Port the MAC is reached through.
    pub port: PortId,
    /// Static entries (endpoints) are never aged and never moved by learning.
    pub is_static: bool,
    /// Whole seconds since the MAC was last seen (0 for static entries).
    pub idle_secs: u32,
}

/// A table slot: 8 bytes beside the 8-byte key.
#[derive(Debug, Default)]
struct Slot {
    /// Second (of `Millis`) the MAC was last seen; refreshed under the read lock.
    last_seen: AtomicU32,
    /// Changed only under the write lock.
    port: PortId,
    is_static: bool,
}

/// The packed key: VLAN in bits 48..64, the MAC in bits 0..48.
#[inline]
fn key(vlan: u16, mac: MacAddr) -> u64 {
    let [v0, v1] = vlan.to_be_bytes();
    let m = mac.0;
    u64::from_be_bytes([v0, v1, m[0], m[1], m[2], m[3], m[4], m[5]])
}

/// Splits a packed key back into VLAN and MAC.
fn unkey(k: u64) -> (u16, MacAddr) {
    let b = k.to_be_bytes();
    (
        u16::from_be_bytes([b[0], b[1]]),
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]]),
    )
}

/// The coarse timestamp stored in entries (u32 seconds last 136 years of uptime).
#[inline]
fn secs(now: Millis) -> u32 {
    u32::try_from(now.as_secs()).unwrap_or(u32::MAX)
}

#[derive(Debug)]
struct Inner {
    map: MacTable<Slot>,
    /// Number of non-static entries in `map`.
    dynamic: usize,
    params: FdbParams,
}

impl Inner {
    fn is_expired(&self, slot: &Slot, now: u32) -> bool {
        !slot.is_static
            && now.saturating_sub(slot.last_seen.load(Ordering::Relaxed)) > self.params.aging_secs
    }
}

/// The forwarding database of one network, shared by its workers.
#[derive(Debug)]
pub struct Fdb {
    inner: RwLock<Inner>,
}

impl Fdb {
    /// An empty table. Room for `max_entries` (at most 65536) entries is reserved up front, so
    /// that learning does not rehash under the write lock in the common case.
    pub fn new(params: FdbParams) -> Self {
        Fdb {
            inner: RwLock::new(Inner {
                map: MacTable::with_capacity(
                    params.max_entries.min(MAX_PREALLOC),
                    KeyHasherBuilder::random(),
                ),
                dynamic: 0,
                params,
            }),
        }
    }

    /// Applies new aging and cap settings, keeping every entry. A cap below the current number
    /// of dynamic entries refuses new MACs until aging brings it below the cap.
    pub fn set_params(&self, params: FdbParams) {
        self.inner.write().params = params;
    }

    /// The current settings.
    pub fn params(&self) -> FdbParams {
        self.inner.read().params
    }

    /// A read view for one batch. Drop it before calling [`Fdb::learn`] from the same thread.
    ///
    /// A recursive read: it does not queue behind a waiting writer. A worker may hold the
    /// conntrack lock while it asks for this guard, and another may hold this guard while it
    /// waits for the conntrack; with a fair read, a writer queued in between (learning,
    /// aging, a reconfiguration) would close that circle into a deadlock.
    pub fn read(&self) -> FdbReader<'_> {
        FdbReader {
            inner: self.inner.read_recursive(),
        }
    }

    /// Applies the learns a batch collected, under one write lock: inserts unknown MACs (up to
    /// the cap), moves dynamic entries to their new port and refreshes their last-seen time.
    /// Static entries and group addresses are never changed; duplicate learns are harmless.
    pub fn learn(&self, pending: &[Learn], now: Millis) -> LearnSummary {
        let mut sum = LearnSummary::default();
        if pending.is_empty() {
            return sum;
        }
        let now = secs(now);
        let mut guard = self.inner.write();
        let Inner {
            map,
            dynamic,
            params,
        } = &mut *guard;
        for l in pending {
            if l.mac.is_multicast() {
                sum.refused += 1;
                continue;
            }
            let k = key(l.vlan, l.mac);
            match map.get_mut(k) {
                Some(slot) => {
                    if slot.is_static {
                        if slot.port != l.port {
                            sum.refused += 1;
                        }
                        continue;
                    }
                    if slot.port != l.port {
                        slot.port = l.port;
                        sum.moved += 1;
                    }
                    let seen = slot.last_seen.get_mut();
                    *seen = (*seen).max(now);
                }
                None => {
                    if *dynamic >= params.max_entries {
                        sum.refused += 1;
                    } else {
                        map.insert(
                            k,
                            Slot {
                                last_seen: AtomicU32::new(now),
                                port: l.port,
                                is_static: false,
                            },
                        );
                        *dynamic += 1;
                        sum.inserted += 1;
                    }
                }
            }
        }
        sum
    }

    /// Pins `mac` on `vlan` to `port` (an endpoint's own MAC): never aged, never moved by
    /// learning, not counted against the cap. Replaces any entry for the MAC.
    pub fn add_static(&self, vlan: u16, mac: MacAddr, port: PortId) {
        let mut guard = self.inner.write();
        let old = guard.map.insert(
            key(vlan, mac),
            Slot {
                last_seen: AtomicU32::new(0),
                port,
                is_static: true,
            },
        );
        if old.is_some_and(|s| !s.is_static) {
            guard.dynamic -= 1;
        }
    }

    /// Removes a static entry (the endpoint left). A dynamic entry for the MAC is left alone.
    /// Returns whether a static entry was removed.
    pub fn remove_static(&self, vlan: u16, mac: MacAddr) -> bool {
        let mut guard = self.inner.write();
        let k = key(vlan, mac);
        if guard.map.get(k).is_some_and(|s| s.is_static) {
            guard.map.remove(k);
            true
        } else {
            false
        }
    }

    /// Removes every entry, static or dynamic, on a port that is going away; returns how many.
    /// Call it after the port is gone from the configuration workers see, or a batch in flight
    /// may learn a MAC on it again (aging then removes that entry).
    pub fn flush_port(&self, port: PortId) -> usize {
        let mut guard = self.inner.write();
        let Inner { map, dynamic, .. } = &mut *guard;
        let before = map.len();
        map.retain(|_, s| {
            if s.port != port {
                return true;
            }
            if !s.is_static {
                *dynamic -= 1;
            }
            false
        });
        before - map.len()
    }

    /// Removes dynamic entries idle longer than the aging time; returns how many. Runs on the
    /// control thread, periodically. It scans under the read lock first and takes the write
    /// lock only when something expired, so a pass that removes nothing does not stall workers.
    pub fn age(&self, now: Millis) -> usize {
        let now = secs(now);
        {
            let guard = self.inner.read();
            if !guard.map.iter().any(|(_, s)| guard.is_expired(s, now)) {
                return 0;
            }
        }
        let mut guard = self.inner.write();
        let Inner {
            map,
            dynamic,
            params,
        } = &mut *guard;
        let aging = params.aging_secs;
        let before = map.len();
        map.retain(|_, s| s.is_static || now.saturating_sub(*s.last_seen.get_mut()) <= aging);
        let removed = before - map.len();
        *dynamic -= removed;
        removed
    }

    /// Number of entries, static and dynamic.
    pub fn len(&self) -> usize {
        self.inner.read().map.len()
    }

    /// True when the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.inner.read().map.is_empty()
    }

    /// Number of dynamic (learned) entries, the ones the cap counts.
    pub fn dynamic_len(&self) -> usize {
        self.inner.read().dynamic
    }

    /// Every entry, sorted by VLAN then MAC, with idle times as of `now`.
    pub fn entries(&self, now: Millis) -> Vec<FdbEntry> {
        let now = secs(now);
        let guard = self.inner.read();
        let mut out: Vec<FdbEntry> = guard
            .map
            .iter()
            .map(|(k, s)| {
                let (vlan, mac) = unkey(k);
                FdbEntry {
                    vlan,
                    mac,
                    port: s.port,
                    is_static: s.is_static,
                    idle_secs: if s.is_static {
                        0
                    } else {
                        now.saturating_sub(s.last_seen.load(Ordering::Relaxed))
                    },
                }
            })
            .collect();
        out.sort_unstable_by_key(|e| (e.vlan, e.mac));
        out
    }
}

/// A worker's view of the FDB for one batch: holds the read lock until dropped.
#[derive(Debug)]
pub struct FdbReader<'a> {
    inner: RwLockReadGuard<'a, Inner>,
}

impl FdbReader<'_> {
    /// Starts loading the table line where `mac` on `vlan` is looked up, for a frame a few
    /// places ahead in the batch: its lookup then finds the line in the cache.
    #[inline]
    pub fn prefetch(&self, vlan: u16, mac: MacAddr) {
        self.inner.map.prefetch(key(vlan, mac));
    }

    /// Number of entries, static and dynamic: whether the table outgrows the caches.
    #[inline]
    pub fn len(&self) -> usize {
        self.inner.map.len()
    }

    /// True when the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.inner.map.is_empty()
    }

    /// The port `mac` on `vlan` is reached through; `None`: unknown, flood.
    #[inline(always)]
    pub fn lookup(&self, vlan: u16, mac: MacAddr) -> Option<PortId> {
        self.inner.map.get(key(vlan, mac)).map(|s| s.port)
    }

    /// Checks a frame's source MAC against the table (see [`SourceCheck`]), refreshing the
    /// last-seen time of a dynamic entry on the same port in place.
    ///
    /// `Full` is decided on the count at the start of the batch; [`Fdb::learn`] enforces the
    /// cap exactly.
    #[inline]
    pub fn check_source(&self, vlan: u16, mac: MacAddr, port: PortId, now: Millis) -> SourceCheck {
        if mac.is_multicast() {
            return SourceCheck::Group;
        }
        match self.inner.map.get(key(vlan, mac)) {
            Some(s) if s.port == port => {
                if !s.is_static {
                    let now = secs(now);
                    // Written only when the second ticks: no shared-line write per packet.
                    if s.last_seen.load(Ordering::Relaxed) < now {
                        s.last_seen.fetch_max(now, Ordering::Relaxed);
                    }
                }
                SourceCheck::Known
            }
            Some(s) if s.is_static => SourceCheck::StaticElsewhere,
            Some(_) => SourceCheck::Learn,
            None if self.inner.dynamic >= self.inner.params.max_entries => SourceCheck::Full,
            None => SourceCheck::Learn,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x02, 0x42, 0xac, 0x11, 0, n])
    }

    fn secs_ms(s: u64) -> Millis {
        Millis(s * 1000)
    }

    /// One batch from one port: check every source, then learn.
    fn batch(
        fdb: &Fdb,
        vlan: u16,
        port: PortId,
        macs: &[MacAddr],
        now: Millis,
    ) -> Vec<SourceCheck> {
        let mut pending = Vec::new();
        let checks = {
            let r = fdb.read();
            macs.iter()
                .map(|m| {
                    let c = r.check_source(vlan, *m, port, now);
                    if c == SourceCheck::Learn {
                        pending.push(Learn {
                            vlan,
                            mac: *m,
                            port,
                        });
                    }
                    c
                })
                .collect()
        };
        fdb.learn(&pending, now);
        checks
    }

    #[test]
    fn fdb_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Fdb>();
    }

    #[test]
    fn key_round_trips() {
        let m = MacAddr([0xde, 0xad, 0xbe, 0xef, 0x01, 0x02]);
        assert_eq!(key(4095, m), 0x0fff_dead_beef_0102);
        assert_eq!(unkey(key(4095, m)), (4095, m));
    }

    #[test]
    fn learns_and_looks_up() {
        let fdb = Fdb::new(FdbParams::default());
        assert_eq!(fdb.read().lookup(0, mac(1)), None);
        assert_eq!(
            batch(&fdb, 0, PortId(3), &[mac(1), mac(1)], Millis(0)),
            [SourceCheck::Learn, SourceCheck::Learn]
        );
        assert_eq!(fdb.read().lookup(0, mac(1)), Some(PortId(3)));
        assert_eq!((fdb.len(), fdb.dynamic_len()), (1, 1));
        assert_eq!(
            batch(&fdb, 0, PortId(3), &[mac(1)], Millis(0)),
            [SourceCheck::Known]
        );
    }

    #[test]
    fn learn_summary_counts() {
        let fdb = Fdb::new(FdbParams {
            aging_secs: 300,
            max_entries: 2,
        });
        fdb.add_static(0, mac(9), PortId(9));
        let l = |m, p| Learn {
            vlan: 0,
            mac: mac(m),
            port: PortId(p),
        };
        let s = fdb.learn(
            &[
                l(1, 1),
                l(1, 1),
                l(2, 1),
                l(2, 2),
                l(3, 1),
                l(9, 1),
                l(9, 9),
                Learn {
                    vlan: 0,
                    mac: MacAddr::BROADCAST,
                    port: PortId(1),
                },
            ],
            Millis(0),
        );
        assert_eq!(
            s,
            LearnSummary {
                inserted: 2,
                moved: 1,
                refused: 3
            }
        );
        assert_eq!(fdb.read().lookup(0, mac(2)), Some(PortId(2)));
        assert_eq!(fdb.read().lookup(0, mac(9)), Some(PortId(9)));
        assert_eq!(fdb.read().lookup(0, mac(3)), None);
    }

    #[test]
    fn moves_to_the_new_port() {
        let fdb = Fdb::new(FdbParams::default());
        batch(&fdb, 0, PortId(1), &[mac(1)], Millis(0));
        assert_eq!(
            batch(&fdb, 0, PortId(2), &[mac(1)], Millis(10)),
            [SourceCheck::Learn]
        );
        assert_eq!(fdb.read().lookup(0, mac(1)), Some(PortId(2)));
        assert_eq!(fdb.dynamic_len(), 1);
    }

    #[test]
    fn group_sources_are_never_learned() {
        let fdb = Fdb::new(FdbParams::default());
        let group = MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]);
        assert_eq!(
            batch(&fdb, 0, PortId(1), &[group, MacAddr::BROADCAST], Millis(0)),
            [SourceCheck::Group, SourceCheck::Group]
        );
        assert!(fdb.is_empty());
    }

    #[test]
    fn refreshed_entries_survive_aging_and_idle_ones_go() {
        let fdb = Fdb::new(FdbParams {
            aging_secs: 10,
            max_entries: 100,
        });
        batch(&fdb, 0, PortId(1), &[mac(1), mac(2)], secs_ms(0));
        assert_eq!(
            batch(&fdb, 0, PortId(1), &[mac(1)], secs_ms(8)),
            [SourceCheck::Known]
        );
        assert_eq!(fdb.age(secs_ms(10)), 0, "idle exactly the aging time stays");
        let e = fdb.entries(secs_ms(10));
        assert_eq!(
            e.iter().map(|e| (e.mac, e.idle_secs)).collect::<Vec<_>>(),
            [(mac(1), 2), (mac(2), 10)]
        );
        assert_eq!(fdb.age(secs_ms(11)), 1);
        assert_eq!(fdb.read().lookup(0, mac(2)), None);
        assert_eq!(fdb.read().lookup(0, mac(1)), Some(PortId(1)));
        assert_eq!(fdb.age(secs_ms(18)), 0);
        assert_eq!(fdb.age(secs_ms(19)), 1);
        assert!(fdb.is_empty());
        assert_eq!(fdb.dynamic_len(), 0);
    }

    #[test]
    fn a_stale_refresh_does_not_move_time_back() {
        let fdb = Fdb::new(FdbParams {
            aging_secs: 10,
            max_entries: 100,
        });
        batch(&fdb, 0, PortId(1), &[mac(1)], secs_ms(20));
        // A worker whose batch started earlier refreshes with an older time.
        batch(&fdb, 0, PortId(1), &[mac(1)], secs_ms(5));
        assert_eq!(fdb.age(secs_ms(30)), 0);
    }

    #[test]
    fn cap_refuses_new_macs_but_not_moves_or_statics() {
        let fdb = Fdb::new(FdbParams {
            aging_secs: 300,
            max_entries: 2,
        });
        batch(&fdb, 0, PortId(1), &[mac(1), mac(2)], Millis(0));
        assert_eq!(
            batch(&fdb, 0, PortId(1), &[mac(3)], Millis(0)),
            [SourceCheck::Full]
        );
        assert_eq!(
            batch(&fdb, 0, PortId(2), &[mac(1)], Millis(0)),
            [SourceCheck::Learn]
        );
        assert_eq!(fdb.read().lookup(0, mac(1)), Some(PortId(2)));
        fdb.add_static(0, mac(7), PortId(7));
        assert_eq!(fdb.read().lookup(0, mac(7)), Some(PortId(7)));
        assert_eq!(
            batch(&fdb, 0, PortId(7), &[mac(7)], Millis(0)),
            [SourceCheck::Known]
        );
        assert_eq!((fdb.len(), fdb.dynamic_len()), (3, 2));
        // A static entry replacing a dynamic one frees a dynamic slot.
        fdb.add_static(0, mac(2), PortId(5));
        assert_eq!(fdb.dynamic_len(), 1);
        assert_eq!(
            batch(&fdb, 0, PortId(1), &[mac(3)], Millis(0)),
            [SourceCheck::Learn]
        );
        assert_eq!(fdb.read().lookup(0, mac(3)), Some(PortId(1)));
    }

    #[test]
    fn set_params_keeps_entries() {
        let fdb = Fdb::new(FdbParams {
            aging_secs: 300,
            max_entries: 10,
        });
        batch(&fdb, 0, PortId(1), &[mac(1), mac(2), mac(3)], secs_ms(0));
        let p = FdbParams {
            aging_secs: 5,
            max_entries: 2,
        };
        fdb.set_params(p);
        assert_eq!(fdb.params(), p);
        assert_eq!(fdb.len(), 3);
        assert_eq!(
            batch(&fdb, 0, PortId(1), &[mac(4)], secs_ms(1)),
            [SourceCheck::Full]
        );
        batch(&fdb, 0, PortId(1), &[mac(1)], secs_ms(3));
        assert_eq!(fdb.age(secs_ms(6)), 2);
        assert_eq!(
            batch(&fdb, 0, PortId(1), &[mac(4)], secs_ms(6)),
            [SourceCheck::Learn]
        );
        assert_eq!(fdb.len(), 2);
    }

    #[test]
    fn statics_are_not_moved_or_aged() {
        let fdb = Fdb::new(FdbParams {
            aging_secs: 1,
            max_entries: 10,
        });
        fdb.add_static(0, mac(1), PortId(1));
        assert_eq!(
            batch(&fdb, 0, PortId(2), &[mac(1)], secs_ms(0)),
            [SourceCheck::StaticElsewhere]
        );
        assert_eq!(fdb.age(secs_ms(1000)), 0);
        assert_eq!(fdb.read().lookup(0, mac(1)), Some(PortId(1)));
        let e = fdb.entries(secs_ms(1000));
        assert_eq!(e.len(), 1);
        assert!(e[0].is_static && e[0].idle_secs == 0);
        assert!(!fdb.remove_static(0, mac(2)));
        assert!(fdb.remove_static(0, mac(1)));
        assert!(fdb.is_empty());
        batch(&fdb, 0, PortId(2), &[mac(1)], secs_ms(0));
        assert!(
            !fdb.remove_static(0, mac(1)),
            "dynamic entries are not static"
        );
        assert_eq!(fdb.read().lookup(0, mac(1)), Some(PortId(2)));
    }

    #[test]
    fn flush_port_removes_its_entries() {
        let fdb = Fdb::new(FdbParams::default());
        batch(&fdb, 0, PortId(1), &[mac(1), mac(2)], Millis(0));
        batch(&fdb, 0, PortId(2), &[mac(3)], Millis(0));
        fdb.add_static(0, mac(4), PortId(1));
        assert_eq!(fdb.flush_port(PortId(1)), 3);
        assert_eq!(fdb.flush_port(PortId(1)), 0);
        assert_eq!((fdb.len(), fdb.dynamic_len()), (1, 1));
        assert_eq!(fdb.read().lookup(0, mac(3)), Some(PortId(2)));
    }

    #[test]
    fn vlans_are_separate() {
        let fdb = Fdb::new(FdbParams::default());
        batch(&fdb, 10, PortId(1), &[mac(1)], Millis(0));
        batch(&fdb, 20, PortId(2), &[mac(1)], Millis(0));
        assert_eq!(fdb.len(), 2);
        let r = fdb.read();
        assert_eq!(r.lookup(10, mac(1)), Some(PortId(1)));
        assert_eq!(r.lookup(20, mac(1)), Some(PortId(2)));
        assert_eq!(r.lookup(0, mac(1)), None);
        drop(r);
        let e = fdb.entries(Millis(0));
        assert_eq!(
            e.iter().map(|e| (e.vlan, e.port)).collect::<Vec<_>>(),
            [(10, PortId(1)), (20, PortId(2))]
        );
    }

    #[test]
    fn params_from_network_config() {
        let n: NetworkConfig = serde_json::from_str(
            r#"{"id":0,"name":"b","subnet":{"addr":"10.0.0.0","prefix":24},
                "gateway":"10.0.0.1","gateway_mac":"02:00:00:00:00:01","fdb_aging_secs":60}"#,
        )
        .unwrap();
        assert_eq!(
            FdbParams::from(&n),
            FdbParams {
                aging_secs: 60,
                max_entries: 8192
            }
        );
    }

    #[test]
    fn concurrent_workers_learn_while_control_ages() {
        let fdb = Arc::new(Fdb::new(FdbParams {
            aging_secs: 1,
            max_entries: 200,
        }));
        for i in 0..8u8 {
            fdb.add_static(
                0,
                MacAddr([2, 0xee, 0, 0, 0, i]),
                PortId(100 + u16::from(i)),
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..3u16)
            .map(|w| {
                let fdb = Arc::clone(&fdb);
                std::thread::spawn(move || {
                    let mut pending = Vec::with_capacity(64);
                    let mut lookups = 0usize;
                    for round in 0..400u64 {
                        let now = Millis(round * 50);
                        {
                            let r = fdb.read();
                            for i in 0..64u64 {
                                let n = (round * 7 + i * 13 + u64::from(w)) % 300;
                                let m = MacAddr([2, 0, 0, 0, (n >> 8) as u8, n as u8]);
                                let port = PortId((n % 5) as u16 + w);
                                if r.check_source(0, m, port, now) == SourceCheck::Learn {
                                    pending.push(Learn {
                                        vlan: 0,
                                        mac: m,
                                        port,
                                    });
                                }
                                lookups += usize::from(r.lookup(0, m).is_some());
                                let st = MacAddr([2, 0xee, 0, 0, 0, (i % 8) as u8]);
                                assert_eq!(r.lookup(0, st), Some(PortId(100 + i as u16 % 8)));
                            }
                        }
                        fdb.learn(&pending, now);
                        pending.clear();
                    }
                    lookups
                })
            })
            .collect();
        let control = {
            let fdb = Arc::clone(&fdb);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut t = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    t += 1;
                    fdb.age(Millis(t * 100));
                    if t % 7 == 3 {
                        fdb.flush_port(PortId((t % 5) as u16));
                    }
                    if t % 11 == 5 {
                        fdb.set_params(FdbParams {
                            aging_secs: (t % 3) as u32,
                            max_entries: 150 + (t % 100) as usize,
                        });
                    }
                    let _ = fdb.entries(Millis(t * 100));
                    std::thread::yield_now();
                }
            })
        };
        let total: usize = workers.into_iter().map(|h| h.join().unwrap()).sum();
        stop.store(true, Ordering::Relaxed);
        control.join().unwrap();
        assert!(total > 0);
        let dynamic = fdb
            .entries(Millis(0))
            .iter()
            .filter(|e| !e.is_static)
            .count();
        assert_eq!(dynamic, fdb.dynamic_len());
        assert!(dynamic <= 250);
        assert_eq!(fdb.len(), dynamic + 8);
    }

    /// What the model keeps per entry: port, last-seen second, static.
    type ModelEntry = (PortId, u32, bool);

    #[derive(Clone, Debug)]
    enum Op {
        /// One batch of frames (vlan, mac index, port), checked then learned.
        Batch(Vec<(u16, u8, u16)>),
        Advance(u64),
        Age,
        Lookup(u16, u8),
        AddStatic(u16, u8, u16),
        RemoveStatic(u16, u8),
        FlushPort(u16),
    }

    /// Small domains so that hits, moves and the cap all happen. Index 7 is a group address.
    fn model_mac(i: u8) -> MacAddr {
        if i == 7 {
            MacAddr([0x01, 0, 0x5e, 0, 0, 1])
        } else {
            mac(i)
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        let frame = (0u16..2, 0u8..8, 0u16..3);
        prop_oneof![
            4 => prop::collection::vec(frame, 0..6).prop_map(Op::Batch),
            2 => (0u64..4000).prop_map(Op::Advance),
            1 => Just(Op::Age),
            2 => (0u16..2, 0u8..8).prop_map(|(v, m)| Op::Lookup(v, m)),
            1 => (0u16..2, 0u8..8, 0u16..3).prop_map(|(v, m, p)| Op::AddStatic(v, m, p)),
            1 => (0u16..2, 0u8..8).prop_map(|(v, m)| Op::RemoveStatic(v, m)),
            1 => (0u16..3).prop_map(Op::FlushPort),
        ]
    }

    proptest! {
        #[test]
        fn matches_a_btreemap_model(
            ops in prop::collection::vec(op(), 1..60),
            aging_secs in 0u32..4,
            max_entries in 0usize..5,
        ) {
            let fdb = Fdb::new(FdbParams { aging_secs, max_entries });
            let mut model: BTreeMap<(u16, MacAddr), ModelEntry> = BTreeMap::new();
            let dynamic = |m: &BTreeMap<(u16, MacAddr), ModelEntry>| {
                m.values().filter(|e| !e.2).count()
            };
            let mut now = Millis(0);
            for op in ops {
                let s = secs(now);
                match op {
                    Op::Batch(frames) => {
                        let start_dynamic = dynamic(&model);
                        let mut pending = Vec::new();
                        {
                            let r = fdb.read();
                            for (vlan, m, p) in frames {
                                let (mac, port) = (model_mac(m), PortId(p));
                                let want = if mac.is_multicast() {
                                    SourceCheck::Group
                                } else {
                                    match model.get_mut(&(vlan, mac)) {
                                        Some(e) if e.0 == port => {
                                            if !e.2 { e.1 = e.1.max(s); }
                                            SourceCheck::Known
                                        }
                                        Some(e) if e.2 => SourceCheck::StaticElsewhere,
                                        Some(_) => SourceCheck::Learn,
                                        None if start_dynamic >= max_entries => SourceCheck::Full,
                                        None => SourceCheck::Learn,
                                    }
                                };
                                prop_assert_eq!(r.check_source(vlan, mac, port, now), want);
                                if want == SourceCheck::Learn {
                                    pending.push(Learn { vlan, mac, port });
                                }
                            }
                        }
                        fdb.learn(&pending, now);
                        for l in pending {
                            let n = dynamic(&model);
                            match model.get_mut(&(l.vlan, l.mac)) {
                                Some(e) if e.2 => {}
                                Some(e) => { e.0 = l.port; e.1 = e.1.max(s); }
                                None if n >= max_entries => {}
                                None => { model.insert((l.vlan, l.mac), (l.port, s, false)); }
                            }
                        }
                    }
                    Op::Advance(ms) => now = Millis(now.0 + ms),
                    Op::Age => {
                        let before = model.len();
                        model.retain(|_, e| e.2 || s.saturating_sub(e.1) <= aging_secs);
                        prop_assert_eq!(fdb.age(now), before - model.len());
                    }
                    Op::Lookup(v, m) => {
                        let mac = model_mac(m);
                        prop_assert_eq!(fdb.read().lookup(v, mac), model.get(&(v, mac)).map(|e| e.0));
                    }
                    Op::AddStatic(v, m, p) => {
                        // Group MACs are skipped: no endpoint has one.
                        let mac = mac(m);
                        fdb.add_static(v, mac, PortId(p));
                        model.insert((v, mac), (PortId(p), 0, true));
                    }
                    Op::RemoveStatic(v, m) => {
                        let mac = mac(m);
                        let is_static = model.get(&(v, mac)).is_some_and(|e| e.2);
                        if is_static {
                            model.remove(&(v, mac));
                        }
                        prop_assert_eq!(fdb.remove_static(v, mac), is_static);
                    }
                    Op::FlushPort(p) => {
                        let before = model.len();
                        model.retain(|_, e| e.0 != PortId(p));
                        prop_assert_eq!(fdb.flush_port(PortId(p)), before - model.len());
                    }
                }
                prop_assert_eq!(fdb.dynamic_len(), dynamic(&model));
                let s = secs(now);
                let got: Vec<_> = fdb
                    .entries(now)
                    .into_iter()
                    .map(|e| ((e.vlan, e.mac), e.port, e.is_static, e.idle_secs))
                    .collect();
                let want: Vec<_> = model
                    .iter()
                    .map(|(k, e)| (*k, e.0, e.2, if e.2 { 0 } else { s.saturating_sub(e.1) }))
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
