//! The worker threads that connect ports to the pipeline: each worker opens its own RX and TX
//! halves of every configured port (AF_PACKET sockets join one fanout group per interface, TAP
//! devices are opened multi-queue), and loops: read a batch per port, `Worker::process` it,
//! send every frame to its egress ports (retagged for each), release the RX memory, flush each
//! touched TX port once. After traffic it busy-polls for a bounded time, then sleeps in epoll.
//! Worker 0 also runs the periodic housekeeping (FDB aging, conntrack expiry).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::batch::{Batch, MAX_BATCH};
use crate::config::PortIo;
use crate::counters::{DropReason, WorkerCounters};
use crate::frame::{Frame, PortId, Verdict};
use crate::pipeline::{Dataplane, Worker};
use crate::port::afpacket::{self, AfPacketConfig, AfPacketError};
use crate::port::tap::{self, TapConfig, TapError};
use crate::port::{RxPort, TxError, TxPort};
use crate::tables::Tables;
use crate::time::Millis;

/// How the runtime runs.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Worker threads (each reads every port).
    pub workers: usize,
    /// Pin worker `i` to CPU `i` (modulo the CPU count).
    pub pin: bool,
    /// How long a worker keeps polling without sleeping after its last frame.
    pub busy_poll: Duration,
    /// AF_PACKET ring sizes.
    pub afpacket: AfPacketConfig,
    /// TAP receive buffers per queue.
    pub tap_buffers: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin: false,
            busy_poll: Duration::from_micros(50),
            afpacket: AfPacketConfig::default(),
            tap_buffers: 64,
        }
    }
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// An AF_PACKET port could not be opened.
    #[error(transparent)]
    AfPacket(#[from] AfPacketError),
    /// A TAP port could not be opened.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// A worker thread or its event loop could not be set up.
    #[error("worker {worker}: {source}")]
    Worker {
        /// Which worker.
        worker: usize,
        /// What failed.
        source: io::Error,
    },
}

type Rx = Box<dyn RxPort + Send>;
type Tx = Box<dyn TxPort + Send>;

/// One worker's port halves: RX halves to read, TX halves indexed by port id.
struct PortSet {
    rx: Vec<Rx>,
    tx: Vec<Option<Tx>>,
}

fn open_ports(tables: &Tables, cfg: &RuntimeConfig) -> Result<PortSet, RuntimeError> {
    let shared = cfg.workers > 1;
    let mut set = PortSet {
        rx: Vec::new(),
        tx: Vec::new(),
    };
    for p in tables.ports() {
        let (id, name) = (p.config.id, p.config.name.as_str());
        let (rx, tx): (Rx, Tx) = match p.config.io {
            PortIo::AfPacket => {
                let c = AfPacketConfig {
                    fanout: shared,
                    ..cfg.afpacket.clone()
                };
                let (r, t) = afpacket::open(name, id, &c)?;
                (Box::new(r), Box::new(t))
            }
            PortIo::Tap => {
                let c = TapConfig {
                    multi_queue: shared,
                    rx_buffers: cfg.tap_buffers,
                };
                let (r, t) = tap::open(name, id, &c)?;
                (Box::new(r), Box::new(t))
            }
        };
        let idx = usize::from(id.0);
        if set.tx.len() <= idx {
            set.tx.resize_with(idx + 1, || None);
        }
        set.tx[idx] = Some(tx);
        set.rx.push(rx);
    }
    Ok(set)
}

/// Running worker threads; dropping it stops and joins them (rings unmapped, ports closed).
#[derive(Debug)]
pub struct Runtime {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Runtime {
    /// Opens every port of the dataplane's configuration in each of `cfg.workers` threads and
    /// starts forwarding. Fails, with every thread stopped, if any port cannot be opened.
    pub fn start(dp: &Arc<Dataplane>, cfg: &RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut rt = Runtime {
            stop: Arc::clone(&stop),
            threads: Vec::new(),
        };
        for i in 0..cfg.workers.max(1) {
            let (dp, cfg, stop, ready) = (
                Arc::clone(dp),
                cfg.clone(),
                Arc::clone(&stop),
                ready_tx.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("sluice-w{i}"))
                .spawn(move || {
                    if cfg.pin {
                        pin_to_cpu(i);
                    }
                    let ports = match open_ports(&dp.tables(), &cfg) {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let poll = match register(&ports) {
                        Ok(p) => p,
                        Err(source) => {
                            let _ = ready.send(Err(RuntimeError::Worker { worker: i, source }));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    let worker = dp.worker();
                    run(worker, ports, poll, &stop, &cfg, i == 0);
                })
                .map_err(|source| RuntimeError::Worker { worker: i, source })?;
            rt.threads.push(spawned);
            if let Ok(Err(e)) = ready_rx.recv() {
                return Err(e);
            }
        }
        Ok(rt)
    }

    /// A flag that stops the workers when set (e.g. from a signal handler).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Stops the workers and waits for them.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn pin_to_cpu(i: usize) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: cpu_set_t is plain data; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(i % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn register(ports: &PortSet) -> io::Result<Poll> {
    let poll = Poll::new()?;
    for (i, rx) in ports.rx.iter().enumerate() {
        if let Some(fd) = rx.raw_fd() {
            poll.registry()
                .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)?;
        }
    }
    Ok(poll)
}

/// Batches read from one port per round before moving to the next (fairness).
const BATCHES_PER_ROUND: usize = 4;
/// How long an idle worker sleeps in epoll before looking at housekeeping and the stop flag.
const IDLE_SLEEP: Duration = Duration::from_millis(100);

fn run(
    mut worker: Worker,
    mut ports: PortSet,
    mut poll: Poll,
    stop: &AtomicBool,
    cfg: &RuntimeConfig,
    housekeeper: bool,
) {
    let mut events = Events::with_capacity(64);
    let mut touched = vec![false; ports.tx.len()];
    let mut last_frame = Instant::now();
    let mut last_housekeeping = Millis::now();
    while !stop.load(Ordering::Relaxed) {
        let mut got = 0;
        for rx in ports.rx.iter_mut() {
            for _ in 0..BATCHES_PER_ROUND {
                let n = {
                    let mut batch = Batch::new();
                    let n = rx.rx(&mut batch).unwrap_or(0);
                    if n > 0 {
                        let tables = worker.process(&mut batch, Millis::now());
                        dispatch(
                            &tables,
                            &batch,
                            &mut ports.tx,
                            worker.counters(),
                            &mut touched,
                        );
                    }
                    n
                };
                rx.release();
                got += n;
                if n < MAX_BATCH {
                    break;
                }
            }
        }
        for (i, t) in touched.iter_mut().enumerate() {
            if std::mem::take(t) {
                if let Some(tx) = ports.tx[i].as_mut() {
                    let _ = tx.flush();
                }
            }
        }
        if got > 0 {
            last_frame = Instant::now();
        } else if last_frame.elapsed() >= cfg.busy_poll {
            // Idle: push out frames a full ring held back, then sleep until a port is readable.
            for tx in ports.tx.iter_mut().flatten() {
                let _ = tx.flush();
            }
            let _ = poll.poll(&mut events, Some(IDLE_SLEEP));
        } else {
            std::hint::spin_loop();
        }
        if housekeeper {
            let now = Millis::now();
            if now.0.saturating_sub(last_housekeeping.0) >= 1000 {
                worker.dataplane().housekeeping(now);
                last_housekeeping = now;
            }
        }
    }
}

/// Sends every frame of a processed batch to its egress ports, retagged for each.
fn dispatch<T: TxPort>(
    tables: &Tables,
    batch: &Batch<'_>,
    txs: &mut [Option<T>],
    counters: &WorkerCounters,
    touched: &mut [bool],
) {
    for f in batch.frames() {
        match f.meta.verdict {
            Verdict::Forward(p) => {
                let tag = tables.port(p).and_then(|e| e.egress_tag(f.meta.vlan));
                match tag {
                    Some(tag) => send(f, p, tag, txs, counters, touched),
                    None => counters.drop_n(DropReason::VlanNotAllowed, 1),
                }
            }
            Verdict::Flood { network, vlan } => {
                for (p, tag) in tables.flood_targets(network, vlan, f.meta.ingress) {
                    send(f, p, tag, txs, counters, touched);
                }
            }
            Verdict::Drop(_) | Verdict::Consumed | Verdict::Pending => {}
        }
    }
}

fn send<T: TxPort>(
    f: &Frame<'_>,
    p: PortId,
    tag: Option<u16>,
    txs: &mut [Option<T>],
    counters: &WorkerCounters,
    touched: &mut [bool],
) {
    let idx = usize::from(p.0);
    let Some(tx) = txs.get_mut(idx).and_then(Option::as_mut) else {
        counters.drop_n(DropReason::UnknownPort, 1);
        return;
    };
    match tx.send(f, tag) {
        Ok(()) => {
            counters.tx(p, 1, f.len() as u64);
            touched[idx] = true;
        }
        Err(TxError::Full | TxError::Io(_)) => counters.drop_n(DropReason::TxFull, 1),
        Err(TxError::Egress(_) | TxError::Offload(_)) => counters.drop_n(DropReason::Malformed, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Meta, HEADROOM};
    use crate::port::memory::{memory_port, MemoryTx};
    use crate::testkit::{self, Scenario as S, PORT_A, PORT_B, TRUNK, UPLINK};

    fn worker() -> Worker {
        Dataplane::new(&S::new().config).unwrap().worker()
    }

    /// Runs frames arriving on `ingress` through process + dispatch into memory TX ports and
    /// returns what each port sent, in port order.
    fn pump(w: &mut Worker, frames: &[Vec<u8>], ingress: PortId) -> Vec<(PortId, Vec<u8>)> {
        let ids = [UPLINK, PORT_A, PORT_B, TRUNK, testkit::PORT_C];
        let mut txs: Vec<Option<MemoryTx>> = (0..ids.len()).map(|_| None).collect();
        for id in ids {
            txs[usize::from(id.0)] = Some(memory_port(id, 8, 2048).1);
        }
        let mut bufs: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| {
                let mut b = vec![0u8; HEADROOM + f.len()];
                b[HEADROOM..].copy_from_slice(f);
                b
            })
            .collect();
        let mut batch = Batch::new();
        for (b, f) in bufs.iter_mut().zip(frames) {
            let meta = Meta {
                ingress,
                ..Meta::default()
            };
            batch
                .push(Frame::new(b, HEADROOM, f.len(), meta).unwrap())
                .unwrap();
        }
        let tables = w.process(&mut batch, Millis(1000));
        let mut touched = vec![false; txs.len()];
        dispatch(&tables, &batch, &mut txs, w.counters(), &mut touched);
        let mut out = Vec::new();
        for (i, tx) in txs.iter_mut().enumerate() {
            if let Some(tx) = tx {
                for (bytes, _) in tx.take_sent() {
                    out.push((PortId(i as u16), bytes));
                }
            }
        }
        out
    }

    #[test]
    fn flood_reaches_trunk_tagged_and_access_untagged() {
        let bcast = testkit::arp_request(S::mac(S::A), S::A, S::B);
        let out = pump(&mut worker(), std::slice::from_ref(&bcast), PORT_A);
        let ports: Vec<PortId> = out.iter().map(|(p, _)| *p).collect();
        assert_eq!(ports, vec![PORT_B, TRUNK]);
        assert_eq!(out[0].1, bcast, "access port gets it untagged");
        assert_eq!(out[1].1, bcast, "trunk's native VLAN 0 is untagged");
    }

    #[test]
    fn trunk_vlan_floods_stay_in_their_vlan() {
        let m1 = crate::wire::MacAddr([2, 1, 1, 1, 1, 1]);
        let bcast = testkit::eth(crate::wire::MacAddr::BROADCAST, m1, 0x88b5, &[0u8; 46]);
        assert!(
            pump(&mut worker(), &[testkit::tagged(&bcast, 10)], TRUNK).is_empty(),
            "VLAN 10 has no other port"
        );
        let native = pump(&mut worker(), std::slice::from_ref(&bcast), TRUNK);
        let ports: Vec<PortId> = native.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            ports,
            vec![PORT_A, PORT_B],
            "native VLAN reaches the access ports"
        );
    }

    #[test]
    fn routed_frames_reach_the_uplink_and_count_tx() {
        let mut w = worker();
        let arp = testkit::arp_reply(S::HOP_MAC, S::HOP, S::UP_MAC, S::UP);
        testkit::run_one(&mut w, UPLINK, &arp, Millis(1000));
        let q = S::from_endpoint(S::A, &testkit::udp(S::A, 5353, S::REMOTE, 53, b"q"));
        let out = pump(&mut w, std::slice::from_ref(&q), PORT_A);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, UPLINK);
        assert_eq!(&out[0].1[0..6], &S::HOP_MAC.0);
        let stats = w.counters().port(UPLINK);
        assert_eq!((stats.tx_packets, stats.tx_bytes), (1, q.len() as u64));
    }
}
