//! Spare AF_PACKET sockets, prepared ahead of need so that attaching a port does not wait for
//! the kernel's ring set-up (two RCU grace periods per socket).

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::{self, Sender};
use parking_lot::Mutex;

use crate::port::afpacket::{self, AfPacketConfig};

/// Prepared AF_PACKET sockets waiting to be bound, and the thread that keeps them topped up.
#[derive(Debug)]
pub(super) struct Spares {
    pool: Arc<Mutex<Vec<afpacket::Prepared>>>,
    /// Wakes the refill thread; dropping it ends the thread.
    refill: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Spares {
    /// Keeps `wanted` sockets prepared with `config` (none when `wanted` is 0). The refill
    /// thread inherits the caller's network namespace, where the sockets are created.
    pub(super) fn start(wanted: usize, config: &AfPacketConfig) -> Spares {
        let pool = Arc::new(Mutex::new(Vec::new()));
        if wanted == 0 {
            return Spares {
                pool,
                refill: None,
                thread: None,
            };
        }
        let (refill, wake) = channel::unbounded::<()>();
        let (p, config) = (Arc::clone(&pool), config.clone());
        let thread = std::thread::Builder::new()
            .name("sluice-spares".into())
            .spawn(move || {
                // One round at start, then one per wake-up, until the runtime drops the sender.
                // The missing sockets are prepared in parallel: their grace periods overlap.
                let mut wakes = std::iter::once(()).chain(wake.iter());
                while wakes.next().is_some() {
                    let missing = wanted.saturating_sub(p.lock().len());
                    std::thread::scope(|sc| {
                        for _ in 0..missing {
                            sc.spawn(|| {
                                if let Ok(s) = afpacket::prepare("a spare port", &config) {
                                    p.lock().push(s);
                                }
                            });
                        }
                    });
                }
            })
            .ok();
        Spares {
            pool,
            refill: thread.as_ref().map(|_| refill),
            thread,
        }
    }

    /// A prepared socket, if one is spare; asks for a replacement.
    pub(super) fn take(&self) -> Option<afpacket::Prepared> {
        let s = self.pool.lock().pop();
        if let Some(r) = &self.refill {
            let _ = r.send(());
        }
        s
    }

    pub(super) fn stop(&mut self) {
        self.refill = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.pool.lock().clear();
    }
}
