//! Following the store: a full read, then a watch from the next revision. When the watch
//! breaks (a member stopped, etcd unreachable or restarted, a stalled connection), the host
//! keeps what it knows and watches again from the revision after the last one it saw, so no
//! change is lost and none is read twice; only when that revision was compacted away does it
//! read everything again.

use std::collections::BTreeSet;
use std::time::Duration;

use super::etcd::EtcdError;
use super::gateway::{Event, WatchBatch};
use super::records::{self, Mirror};
use super::Cluster;
use crate::daemon::handle::LocalEngine;

/// Where a follower stands in the store's history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// The revision every change up to which is in the mirror; 0: none (a full read is due).
    seen: i64,
}

impl Position {
    /// The revision to watch from, or `None` when only a full read brings the mirror up to
    /// date.
    pub fn resume_at(&self) -> Option<i64> {
        (self.seen > 0).then_some(self.seen + 1)
    }

    /// A full read answered at `revision`.
    pub fn read(&mut self, revision: i64) {
        self.seen = revision;
    }

    /// A watch answer arrived (its changes applied to the mirror); false when the watch was
    /// cancelled, and then, if the changes it should have brought were compacted away, the
    /// next step is a full read.
    pub fn advance(&mut self, batch: &WatchBatch) -> bool {
        if batch.canceled {
            if batch.compact_revision > 0 {
                self.seen = 0;
            }
            return false;
        }
        self.seen = self.seen.max(batch.revision);
        true
    }
}

impl Cluster {
    /// How long a watch may bring nothing (no event, no progress notification) before it is
    /// taken for dead: twice the lease TTL, as a stalled store must be noticed about as soon
    /// as a dead host.
    fn stall(&self) -> Duration {
        Duration::from_secs(2 * self.ttl.max(2) as u64)
    }

    /// Follows the store for ever (see the module's comment).
    pub(super) async fn follow(self: std::sync::Arc<Self>, local: LocalEngine) {
        let mut state = Followed::default();
        loop {
            if let Err(e) = self.follow_once(&local, &mut state).await {
                match state.at.resume_at() {
                    Some(rev) => tracing::warn!(
                        "following the cluster store: {e}; watching again from revision {rev}"
                    ),
                    None => tracing::warn!("following the cluster store: {e}; reading it again"),
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn follow_once(
        &self,
        local: &LocalEngine,
        state: &mut Followed,
    ) -> Result<(), EtcdError> {
        let start = match state.at.resume_at() {
            Some(rev) => rev,
            None => {
                let (kvs, revision) = self.etcd.range(records::ROOT).await?;
                let removed = state
                    .mirror
                    .reset(kvs.into_iter().map(|kv| (kv.key, kv.value)));
                state.at.read(revision);
                self.settle(local, state, removed).await;
                revision + 1
            }
        };
        let mut watch = self.etcd.watch(records::ROOT, start, self.stall()).await?;
        loop {
            let batch = watch.next().await?;
            let mut removed = Vec::new();
            for ev in &batch.events {
                match ev {
                    Event::Put(kv) => state.mirror.put(kv.key.clone(), kv.value.clone()),
                    Event::Delete(key) => {
                        if let Some(name) = key.strip_prefix(&records::network_key("")) {
                            removed.push(name.to_string());
                        }
                        state.mirror.delete(key);
                    }
                }
            }
            if !state.at.advance(&batch) {
                let message = match batch.compact_revision {
                    0 => format!("watch cancelled: {}", batch.reason),
                    rev => {
                        format!("watch cancelled: the history before revision {rev} was compacted")
                    }
                };
                return Err(EtcdError::Refused {
                    path: "/v3/watch",
                    status: 200,
                    message,
                });
            }
            // Progress notifications too retry what the last pass left undone.
            if !batch.events.is_empty() || !state.undone.is_settled() {
                self.settle(local, state, removed).await;
            }
        }
    }

    /// Reconciles with the removals `removed` plus those a previous pass left undone, and
    /// keeps what this pass leaves undone for the next.
    async fn settle(&self, local: &LocalEngine, state: &mut Followed, mut removed: Vec<String>) {
        removed.extend(std::mem::take(&mut state.undone.removals));
        removed.sort();
        removed.dedup();
        let undone = self.reconcile(local, &state.mirror, &removed).await;
        for why in undone.failures.difference(&state.undone.failures) {
            tracing::warn!("{why} (tried again on the store's next answer)");
        }
        state.undone = undone;
    }

    /// Brings this host's engine in line with the store: overlay networks in `removed` are
    /// removed first (a network created in their place may take their VNI or subnet), those
    /// it lacks then created, and every overlay's remote endpoints replaced. What could not
    /// be applied is returned, to be tried again.
    async fn reconcile(&self, local: &LocalEngine, mirror: &Mirror, removed: &[String]) -> Undone {
        let mut undone = Undone::default();
        let have: BTreeSet<String> = match local.overlays().await {
            Ok(o) => o.into_iter().map(|(n, _)| n.spec.name).collect(),
            Err(e) => {
                undone.failures.insert(format!("cluster: {e}"));
                undone.removals = removed.to_vec();
                return undone;
            }
        };
        let networks = mirror.networks();
        for name in removed {
            if have.contains(name) && !networks.contains_key(name) {
                match local.remove_network(name.clone()).await {
                    Ok(_) => tracing::info!("overlay network {name} removed by the cluster"),
                    Err(e) => {
                        undone
                            .failures
                            .insert(format!("cannot remove overlay network {name} here: {e}"));
                        undone.removals.push(name.clone());
                    }
                }
            }
        }
        for (name, spec) in &networks {
            if !have.contains(name) {
                match local.create_network(spec.clone()).await {
                    Ok(_) => tracing::info!("overlay network {name} joined from the cluster"),
                    Err(e) => {
                        undone
                            .failures
                            .insert(format!("cannot create overlay network {name} here: {e}"));
                    }
                }
            }
        }
        let remotes = mirror.remotes(self.me);
        if let Err(e) = local.set_remotes(remotes.clone()).await {
            undone
                .failures
                .insert(format!("cannot apply the cluster's remote endpoints: {e}"));
        }
        *self.known.lock().unwrap_or_else(|p| p.into_inner()) = remotes;
        undone
    }
}

/// What the follower keeps from one watch to the next.
#[derive(Default)]
struct Followed {
    at: Position,
    mirror: Mirror,
    undone: Undone,
}

/// What a reconcile could not apply (a create refused while a network it clashes with was
/// still here, a removal refused): tried again on the next answer of the watch.
#[derive(Debug, Default, PartialEq, Eq)]
struct Undone {
    /// Removals still to do.
    removals: Vec<String>,
    /// Why, one line each (logged once while they last).
    failures: BTreeSet<String>,
}

impl Undone {
    fn is_settled(&self) -> bool {
        self.failures.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(revision: i64) -> WatchBatch {
        WatchBatch {
            revision,
            ..WatchBatch::default()
        }
    }

    #[test]
    fn a_broken_watch_resumes_after_the_last_revision_seen() {
        let mut at = Position::default();
        assert_eq!(at.resume_at(), None, "a full read first");
        at.read(10);
        assert_eq!(at.resume_at(), Some(11));
        // The confirmation (revision 0) does not move it; events and progress do.
        for (rev, resume) in [(0, 11), (14, 15), (12, 15), (20, 21)] {
            assert!(at.advance(&batch(rev)));
            assert_eq!(at.resume_at(), Some(resume), "after {rev}");
        }
    }

    #[test]
    fn a_compacted_watch_needs_a_full_read() {
        let mut at = Position::default();
        at.read(10);
        let refused = WatchBatch {
            canceled: true,
            ..batch(0)
        };
        assert!(!at.advance(&refused));
        assert_eq!(at.resume_at(), Some(11), "cancelled, but not compacted");
        let compacted = WatchBatch {
            compact_revision: 30,
            ..refused
        };
        assert!(!at.advance(&compacted));
        assert_eq!(at.resume_at(), None);
    }
}
