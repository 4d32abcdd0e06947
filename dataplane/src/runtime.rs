//! The worker threads that connect ports to the pipeline: each worker holds its own RX and TX
//! halves of every attached port (AF_PACKET sockets join one fanout group per interface, TAP
//! devices are opened multi-queue), and loops: read a batch per port, `Worker::process` it,
//! send every frame to its egress ports (retagged for each), release the RX memory, flush each
//! touched TX port once. After traffic it keeps polling for a bounded time (spinning, then
//! yielding its CPU: [`PollPolicy`]), then sleeps in epoll.
//! Worker 0 also runs the periodic housekeeping (FDB aging, conntrack expiry); every worker reads
//! its ports' kernel counters (ring drops) once a second into a table the runtime reports
//! ([`Runtime::port_kernel_stats`]).
//!
//! Hot-plug: ports are attached and detached while workers run ([`Runtime::attach`],
//! [`Runtime::detach`]). The calling thread opens the halves (so errors come back to it) and
//! hands each worker its pair through that worker's command channel; a flag (one atomic load
//! per loop round) tells the worker to look at the channel, and a mio `Waker` gets it out of
//! epoll. The caller waits until every worker has acted on the command, so a configuration
//! applied after `attach` never forwards to a TX half that is not there yet, and after
//! `detach` no worker holds the port any more.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use crate::batch::{Batch, MAX_BATCH};
use crate::config::{PortConfig, PortIo};
use crate::counters::{DropReason, WorkerCounters, MAX_PORTS};
use crate::frame::{Frame, Meta, PortId, Verdict, HEADROOM};
use crate::offload::{OffloadMode, OffloadRun};
use crate::pipeline::{udp_gso, Dataplane, Worker};
use crate::port::afpacket::{self, AfPacketConfig, AfPacketError};
use crate::port::poll::{Idle, PollPolicy};
use crate::port::tap::{self, TapConfig, TapError};
use crate::port::{KernelPortStats, RxPort, TxError, TxPort};
use crate::tables::Tables;
use crate::time::Millis;
use spares::Spares;

mod spares;

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
    /// AF_PACKET ports kept prepared (rings set up, not bound) for each worker, refilled in
    /// the background, so that attaching a port binds ready sockets instead of paying the
    /// kernel's ring set-up (two RCU grace periods per socket). 0: none (ports are prepared
    /// when attached).
    pub spare_ports: usize,
    /// Whether established flows are handed to the kernel (`crate::offload`).
    pub offload: OffloadMode,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin: false,
            busy_poll: Duration::from_micros(50),
            afpacket: AfPacketConfig::default(),
            tap_buffers: 64,
            spare_ports: 0,
            offload: OffloadMode::Off,
        }
    }
}

/// Why the runtime could not start, or a port could not be attached.
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
    /// A port with this id is attached already: detach it first.
    #[error("port {} is already attached", .0 .0)]
    AlreadyAttached(PortId),
    /// The port id is beyond what the dataplane addresses.
    #[error("port id {} is too large (at most {max})", .0 .0, max = MAX_PORTS - 1)]
    PortIdTooLarge(PortId),
    /// The workers have stopped (stop flag set, or a worker thread ended).
    #[error("the workers have stopped")]
    Stopped,
}

type Rx = Box<dyn RxPort + Send>;
type Tx = Box<dyn TxPort + Send>;

/// The token of a worker's `Waker`; ports use their id as token.
const WAKER: Token = Token(usize::MAX);

/// A worker's answer to a command: which worker, and whether it could carry it out.
type Ack = (usize, io::Result<()>);

/// What the control side asks a worker to do.
enum Command {
    /// Take these halves of port `id` (its counters restart from zero).
    Attach {
        id: PortId,
        rx: Rx,
        tx: Tx,
        done: Sender<Ack>,
    },
    /// Give back the halves of port `id` through `halves` (nothing if it has none): the
    /// caller closes them, so the kernel's close cost (an RCU grace period per AF_PACKET
    /// socket) never stalls a worker.
    Detach {
        id: PortId,
        halves: Sender<(Rx, Tx)>,
        done: Sender<Ack>,
    },
}

/// The control side's handle on one worker.
#[derive(Debug)]
struct Mailbox {
    commands: Sender<Command>,
    /// Set after a command was queued: the worker's cheap "look at the channel" signal.
    pending: Arc<AtomicBool>,
    /// Gets the worker out of epoll.
    waker: Waker,
}

/// The worker side of its mailbox.
struct Inbox {
    commands: Receiver<Command>,
    pending: Arc<AtomicBool>,
}

/// One worker's port halves: RX halves to read (with their port), TX halves indexed by port id.
struct PortSet {
    rx: Vec<(PortId, Rx)>,
    tx: Vec<Option<Tx>>,
}

impl PortSet {
    /// Registers the RX half with epoll and installs both halves, restarting the port's
    /// counters (the id may have belonged to a detached port).
    fn install(
        &mut self,
        poll: &Poll,
        counters: &WorkerCounters,
        id: PortId,
        rx: Rx,
        tx: Tx,
    ) -> io::Result<()> {
        drop(self.remove(poll, id));
        if let Some(fd) = rx.raw_fd() {
            poll.registry()
                .register(&mut SourceFd(&fd), port_token(id), Interest::READABLE)?;
        }
        counters.reset_port(id);
        let idx = usize::from(id.0);
        if self.tx.len() <= idx {
            self.tx.resize_with(idx + 1, || None);
        }
        self.tx[idx] = Some(tx);
        self.rx.push((id, rx));
        Ok(())
    }

    /// Deregisters the port's halves and returns them, after handing frames still queued on
    /// the TX half to the kernel.
    fn remove(&mut self, poll: &Poll, id: PortId) -> Option<(Rx, Tx)> {
        let rx = self
            .rx
            .iter()
            .position(|(p, _)| *p == id)
            .map(|i| self.rx.remove(i).1);
        if let Some(fd) = rx.as_ref().and_then(|rx| rx.raw_fd()) {
            let _ = poll.registry().deregister(&mut SourceFd(&fd));
        }
        let mut tx = self.tx.get_mut(usize::from(id.0)).and_then(Option::take);
        if let Some(tx) = tx.as_mut() {
            let _ = tx.flush();
        }
        rx.zip(tx)
    }
}

fn port_token(id: PortId) -> Token {
    Token(usize::from(id.0))
}

/// Opens one pair of halves of `port`, set up to share the interface with the other workers'
/// pairs when there are several workers (fanout group, queue of a multi-queue TAP). An
/// AF_PACKET port binds a spare prepared socket when `spares` has one. The `first` pair of a
/// TAP port also reports the device's counters (kept per device, not per queue).
fn open_port(
    port: &PortConfig,
    cfg: &RuntimeConfig,
    spares: &Spares,
    first: bool,
    offload: Option<&OffloadRun>,
) -> Result<(Rx, Tx), RuntimeError> {
    let shared = cfg.workers > 1;
    let (id, name) = (port.id, port.name.as_str());
    Ok(match port.io {
        PortIo::AfPacket => {
            let prepared = match spares.take() {
                Some(p) => p,
                None => afpacket::prepare(name, &cfg.afpacket)?,
            };
            let (r, t) = prepared.bind(name, id, shared, offload.map(OffloadRun::socket_filter))?;
            (Box::new(r), Box::new(t))
        }
        PortIo::Tap => {
            let c = TapConfig {
                multi_queue: shared,
                rx_buffers: cfg.tap_buffers,
                device_counters: first,
            };
            let (r, t) = tap::open(name, id, &c)?;
            (Box::new(r), Box::new(t))
        }
    })
}

/// The kernel's counters of every attached port, summed over the workers' sockets since the
/// port was attached.
type KernelStatsTable = Mutex<BTreeMap<PortId, KernelPortStats>>;

/// Adds what the kernel counted since the last call for each of a worker's RX halves to
/// `table` (ports no longer attached are skipped).
fn collect_kernel_stats(rx: &[(PortId, Rx)], table: &KernelStatsTable) {
    let mut table = table.lock();
    for (id, rx) in rx {
        if let (Ok(delta), Some(sum)) = (rx.kernel_stats(), table.get_mut(id)) {
            *sum += delta;
        }
    }
}

/// Running worker threads; dropping it stops and joins them (rings unmapped, ports closed).
#[derive(Debug)]
pub struct Runtime {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    mailboxes: Vec<Mailbox>,
    cfg: RuntimeConfig,
    /// Attached ports; the lock also serialises `attach` and `detach`.
    attached: Mutex<BTreeSet<PortId>>,
    spares: Spares,
    kernel_stats: Arc<KernelStatsTable>,
    /// The kernel flow offload, when asked for and supported (dropped after the workers).
    offload: Option<OffloadRun>,
}

impl Runtime {
    /// Starts `cfg.workers` threads and attaches every port of the dataplane's configuration
    /// (none is fine: ports can be attached later). Fails, with every thread stopped, if any
    /// port cannot be opened. Ports are opened in the network namespace of the calling thread,
    /// which the workers inherit.
    pub fn start(dp: &Arc<Dataplane>, cfg: &RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let cfg = RuntimeConfig {
            workers: cfg.workers.max(1),
            ..cfg.clone()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut rt = Runtime {
            stop: Arc::clone(&stop),
            threads: Vec::new(),
            mailboxes: Vec::new(),
            cfg: cfg.clone(),
            attached: Mutex::new(BTreeSet::new()),
            spares: Spares::start(cfg.spare_ports * cfg.workers, &cfg.afpacket),
            kernel_stats: Arc::default(),
            offload: OffloadRun::start(cfg.offload, dp),
        };
        for i in 0..cfg.workers {
            let err = |source| RuntimeError::Worker { worker: i, source };
            let poll = Poll::new().map_err(err)?;
            let waker = Waker::new(poll.registry(), WAKER).map_err(err)?;
            let (commands, inbox) = channel::unbounded();
            let pending = Arc::new(AtomicBool::new(false));
            let inbox = Inbox {
                commands: inbox,
                pending: Arc::clone(&pending),
            };
            let (dp, cfg, stop) = (Arc::clone(dp), cfg.clone(), Arc::clone(&stop));
            let kernel_stats = Arc::clone(&rt.kernel_stats);
            let spawned = std::thread::Builder::new()
                .name(format!("sluice-w{i}"))
                .spawn(move || {
                    if cfg.pin {
                        pin_to_cpu(i);
                    }
                    run(dp.worker(), i, inbox, poll, &stop, &cfg, &kernel_stats);
                })
                .map_err(err)?;
            rt.threads.push(spawned);
            rt.mailboxes.push(Mailbox {
                commands,
                pending,
                waker,
            });
        }
        for p in dp.tables().ports() {
            rt.attach(&p.config)?;
        }
        Ok(rt)
    }

    /// Opens `port` once per worker in the calling thread (its network namespace) and has
    /// every worker install its pair; returns once all did, so a configuration that uses the
    /// port can be applied next. The port's counters restart from zero. On error nothing stays
    /// attached and the workers keep running.
    pub fn attach(&self, port: &PortConfig) -> Result<(), RuntimeError> {
        let mut attached = self.attached.lock();
        if usize::from(port.id.0) >= MAX_PORTS {
            return Err(RuntimeError::PortIdTooLarge(port.id));
        }
        if attached.contains(&port.id) {
            return Err(RuntimeError::AlreadyAttached(port.id));
        }
        let mut halves = (0..self.mailboxes.len())
            .map(|i| open_port(port, &self.cfg, &self.spares, i == 0, self.offload.as_ref()))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter();
        let id = port.id;
        self.kernel_stats
            .lock()
            .insert(id, KernelPortStats::default());
        let sent = self.broadcast(|done| {
            halves
                .next()
                .map(|(rx, tx)| Command::Attach { id, rx, tx, done })
        });
        if let Err(e) = sent {
            // Some workers may hold the port: take it back from all.
            self.take_back(id);
            self.kernel_stats.lock().remove(&id);
            return Err(e);
        }
        attached.insert(id);
        self.offload.iter().for_each(|o| o.port_attached(port));
        Ok(())
    }

    /// Has every worker drop port `id` (RX half out of epoll, rings unmapped, descriptors
    /// closed) and returns once all did. Apply a configuration without the port first, so that
    /// no frame is forwarded to it meanwhile (such frames are dropped as `unknown_port`).
    /// Detaching a port that is not attached does nothing.
    pub fn detach(&self, id: PortId) {
        let mut attached = self.attached.lock();
        if attached.remove(&id) {
            self.offload.iter().for_each(|o| o.port_detached(id));
            self.take_back(id);
            self.kernel_stats.lock().remove(&id);
        }
    }

    /// What the kernel counted for each attached port since it was attached, as of the
    /// workers' last once-a-second read: frames queued to and dropped at its AF_PACKET rings
    /// (summed over the workers' sockets); for a TAP port, frames the device sent toward
    /// sluice and dropped (its queues full) plus frames lost to failed reads or skipped as
    /// malformed.
    pub fn port_kernel_stats(&self) -> Vec<(PortId, KernelPortStats)> {
        let table = self.kernel_stats.lock();
        table.iter().map(|(id, s)| (*id, *s)).collect()
    }

    /// Has every worker give back port `id`'s halves and closes them here, off the workers'
    /// threads. Stopped workers hold no port any more: nothing is left to wait for.
    fn take_back(&self, id: PortId) {
        let (halves, returned) = channel::unbounded();
        let _ = self.broadcast(|done| {
            Some(Command::Detach {
                id,
                halves: halves.clone(),
                done,
            })
        });
        drop(halves);
        drop(returned.try_iter().collect::<Vec<_>>());
    }

    /// The ids of the attached ports, in order.
    pub fn attached(&self) -> Vec<PortId> {
        self.attached.lock().iter().copied().collect()
    }

    /// Sends one command to each worker (made by `make`, `None` skips the worker), wakes them
    /// and waits for every answer. The first failure is returned; a worker that is gone is
    /// [`RuntimeError::Stopped`].
    fn broadcast(
        &self,
        mut make: impl FnMut(Sender<Ack>) -> Option<Command>,
    ) -> Result<(), RuntimeError> {
        let (done, answers) = channel::unbounded();
        let mut first_err = None;
        let mut expected = 0;
        for mb in &self.mailboxes {
            let Some(cmd) = make(done.clone()) else {
                continue;
            };
            if mb.commands.send(cmd).is_err() {
                first_err.get_or_insert(RuntimeError::Stopped);
                continue;
            }
            mb.pending.store(true, Ordering::Release);
            // Should waking fail, the worker still sees the flag after its idle sleep.
            let _ = mb.waker.wake();
            expected += 1;
        }
        drop(done);
        for _ in 0..expected {
            match answers.recv() {
                Ok((_, Ok(()))) => {}
                Ok((worker, Err(source))) => {
                    first_err.get_or_insert(RuntimeError::Worker { worker, source });
                }
                // A worker ended with the command unread: its channel dropped the command.
                Err(_) => {
                    first_err.get_or_insert(RuntimeError::Stopped);
                    break;
                }
            }
        }
        first_err.map_or(Ok(()), Err)
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
        self.spares.stop();
        self.stop.store(true, Ordering::Relaxed);
        for mb in &self.mailboxes {
            let _ = mb.waker.wake();
        }
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

#[allow(unsafe_code)]
fn pin_to_cpu(i: usize) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: cpu_set_t is plain data; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(i % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Carries out the commands queued for this worker.
fn handle_commands(
    inbox: &Inbox,
    ports: &mut PortSet,
    poll: &Poll,
    counters: &WorkerCounters,
    me: usize,
) {
    while let Ok(cmd) = inbox.commands.try_recv() {
        match cmd {
            Command::Attach { id, rx, tx, done } => {
                let res = ports.install(poll, counters, id, rx, tx);
                let _ = done.send((me, res));
            }
            Command::Detach { id, halves, done } => {
                if let Some(h) = ports.remove(poll, id) {
                    let _ = halves.send(h);
                }
                let _ = done.send((me, Ok(())));
            }
        }
    }
}

/// Batches read from one port per round before moving to the next (fairness).
const BATCHES_PER_ROUND: usize = 4;
/// How long an idle worker sleeps in epoll before looking at housekeeping and the stop flag.
const IDLE_SLEEP: Duration = Duration::from_millis(100);

fn run(
    mut worker: Worker,
    me: usize,
    inbox: Inbox,
    mut poll: Poll,
    stop: &AtomicBool,
    cfg: &RuntimeConfig,
    kernel_stats: &KernelStatsTable,
) {
    let housekeeper = me == 0;
    let mut ports = PortSet {
        rx: Vec::new(),
        tx: Vec::new(),
    };
    let mut events = Events::with_capacity(64);
    let mut touched = Vec::new();
    let mut idle = PollPolicy::new(cfg.busy_poll, IDLE_SLEEP, Instant::now());
    let mut last_second = Millis::now();
    while !stop.load(Ordering::Relaxed) {
        if inbox.pending.load(Ordering::Acquire) {
            inbox.pending.store(false, Ordering::Relaxed);
            handle_commands(&inbox, &mut ports, &poll, worker.counters(), me);
            touched.resize(ports.tx.len(), false);
            if housekeeper {
                // A newly attached uplink resolves its next hop now, not a second later.
                probe_next_hops(worker.dataplane(), &mut ports.tx);
            }
        }
        // One clock read per round, not per batch: a round takes microseconds.
        let now = Millis::now();
        let mut got = 0;
        for (_, rx) in ports.rx.iter_mut() {
            for _ in 0..BATCHES_PER_ROUND {
                let n = {
                    let mut batch = Batch::new();
                    let n = rx.rx(&mut batch).unwrap_or(0);
                    if n > 0 {
                        let tables = worker.process(&mut batch, now);
                        dispatch(
                            &tables,
                            &batch,
                            &mut ports.tx,
                            worker.counters(),
                            &mut touched,
                        );
                        udp_gso::split_unjoined(&mut worker, &batch, now, |t, b, c| {
                            dispatch(t, b, &mut ports.tx, c, &mut touched)
                        });
                        worker.release_pending(|f, counters| {
                            dispatch_one(&tables, f, &mut ports.tx, counters, &mut touched)
                        });
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
        flush_touched(&mut touched, &mut ports.tx);
        match idle.after_round(got, Instant::now()) {
            Idle::Spin => std::hint::spin_loop(),
            // Endpoints on this CPU run now; with none runnable this returns at once.
            Idle::Yield => std::thread::yield_now(),
            Idle::Block(timeout) => {
                // Push out frames a full ring held back, then sleep until a port is readable
                // or a command arrives.
                for tx in ports.tx.iter_mut().flatten() {
                    let _ = tx.flush();
                }
                let _ = poll.poll(&mut events, Some(timeout));
            }
        }
        if now.0.saturating_sub(last_second.0) >= 1000 {
            once_a_second(&worker, &mut ports, kernel_stats, housekeeper, now);
            last_second = now;
        }
    }
}

/// Flushes each TX port this round's batches wrote to: one kick per port per round.
#[inline]
fn flush_touched(touched: &mut [bool], tx: &mut [Option<Tx>]) {
    for (t, port) in touched.iter_mut().zip(tx.iter_mut()) {
        if std::mem::take(t) {
            if let Some(port) = port.as_mut() {
                let _ = port.flush();
            }
        }
    }
}

/// A worker's periodic work: its ports' kernel counters into the runtime's table and, on
/// worker 0, the dataplane's housekeeping and next-hop probes.
fn once_a_second(
    worker: &Worker,
    ports: &mut PortSet,
    kernel_stats: &KernelStatsTable,
    housekeeper: bool,
    now: Millis,
) {
    collect_kernel_stats(&ports.rx, kernel_stats);
    if housekeeper {
        worker.dataplane().housekeeping(now);
        probe_next_hops(worker.dataplane(), &mut ports.tx);
    }
}

/// Sends an ARP request for each unresolved uplink next hop (once a second, from worker 0's
/// housekeeping: a few frames, built off the fast path).
fn probe_next_hops(dp: &Dataplane, txs: &mut [Option<Tx>]) {
    for (port, bytes) in dp.next_hop_probes() {
        let Some(tx) = txs.get_mut(usize::from(port.0)).and_then(Option::as_mut) else {
            continue;
        };
        let mut buf = vec![0u8; HEADROOM + bytes.len()];
        buf[HEADROOM..].copy_from_slice(&bytes);
        if let Some(f) = Frame::new(&mut buf, HEADROOM, bytes.len(), Meta::default()) {
            if tx.send(&f, None).is_ok() {
                let _ = tx.flush();
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
        dispatch_one(tables, f, txs, counters, touched);
    }
}

/// Sends one frame to its verdict's egress ports, retagged for each.
#[inline]
fn dispatch_one<T: TxPort>(
    tables: &Tables,
    f: &Frame<'_>,
    txs: &mut [Option<T>],
    counters: &WorkerCounters,
    touched: &mut [bool],
) {
    match f.meta.verdict {
        Verdict::Forward(p) => {
            let tag = tables.port(p).and_then(|e| e.egress_tag(f.meta.vlan));
            match tag {
                Some(tag) => send(f, p, tag, txs, counters, touched),
                None => counters.drop_n(p, DropReason::VlanNotAllowed, 1),
            }
        }
        Verdict::Flood { network, vlan } => {
            for (p, tag) in tables.flood_targets(network, vlan, f.meta.ingress) {
                send(f, p, tag, txs, counters, touched);
            }
        }
        // Split: the chunks of a received datagram, run one by one (`udp_gso::split_unjoined`).
        Verdict::Drop(_) | Verdict::Consumed | Verdict::Pending | Verdict::Split => {}
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
        counters.drop_n(p, DropReason::UnknownPort, 1);
        return;
    };
    if f.meta.offload.gso.is_tunnel() {
        // No port takes a tunnel's GSO: its segments leave packed into UDP GSO frames (the
        // kernel cuts those); a port that refuses one sends its datagrams one by one.
        let cut = udp_gso::each_packed_frame(f, |s| match send_or_flush(tx, s, tag) {
            Err(TxError::Io(_) | TxError::Egress(_) | TxError::Offload(_)) => {
                udp_gso::each_datagram(s, |d| {
                    touched[idx] |= sent(send_or_flush(tx, d, tag), p, d, counters);
                })
            }
            res => touched[idx] |= sent(res, p, s, counters),
        });
        if cut.is_err() {
            counters.drop_n(p, DropReason::Malformed, 1);
        }
        return;
    }
    touched[idx] |= sent(tx.send(f, tag), p, f, counters);
}

/// Sends `f`; a full ring or socket is flushed once and tried again.
fn send_or_flush<T: TxPort>(tx: &mut T, f: &Frame<'_>, tag: Option<u16>) -> Result<(), TxError> {
    match tx.send(f, tag) {
        Err(TxError::Full) if tx.flush().is_ok() => tx.send(f, tag),
        res => res,
    }
}

/// Counts the outcome of sending `f` out of `p`: true when it was queued.
#[inline]
fn sent(res: Result<(), TxError>, p: PortId, f: &Frame<'_>, counters: &WorkerCounters) -> bool {
    match res {
        Ok(()) => {
            counters.tx(p, 1, f.len() as u64);
            return true;
        }
        Err(TxError::Full | TxError::Io(_)) => counters.drop_n(p, DropReason::TxFull, 1),
        Err(TxError::Egress(_) | TxError::Offload(_)) => {
            counters.drop_n(p, DropReason::Malformed, 1)
        }
    }
    false
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

    #[test]
    fn a_tunnelled_super_frame_leaves_as_one_udp_gso_frame() {
        use crate::frame::{GsoType, Offload};
        use crate::wire::vxlan::{write_outer_v4, OuterV4, OVERHEAD_V4};
        let mut w = worker();
        let tables = w.process(&mut Batch::new(), Millis(1000));
        let tcp = testkit::tcp(S::A, 1, S::B, 2, testkit::ACK, &[7u8; 2500]);
        let inner = testkit::eth(S::mac(S::B), S::mac(S::A), 0x0800, &tcp);
        let mut buf = vec![0u8; OVERHEAD_V4 + inner.len()];
        buf[OVERHEAD_V4..].copy_from_slice(&inner);
        let outer = OuterV4 {
            dst_mac: S::HOP_MAC,
            src_mac: S::UP_MAC,
            src: S::UP,
            dst: S::HOP,
            src_port: 50000,
            vni: 4096,
        };
        write_outer_v4(&mut buf[..OVERHEAD_V4], &outer).unwrap();
        let meta = Meta {
            verdict: Verdict::Forward(UPLINK),
            offload: Offload {
                gso: GsoType::TcpV4Vxlan,
                gso_size: 1000,
                ..Offload::default()
            },
            ..Meta::default()
        };
        let mut txs: Vec<Option<MemoryTx>> = vec![Some(memory_port(UPLINK, 8, 4096).1)];
        let mut touched = vec![false];
        let len = buf.len();
        let f = Frame::new(&mut buf, 0, len, meta).unwrap();
        dispatch_one(&tables, &f, &mut txs, w.counters(), &mut touched);
        let sent: Vec<(usize, GsoType, u16)> = txs[0]
            .as_mut()
            .unwrap()
            .take_sent()
            .iter()
            .map(|(b, o)| (b.len(), o.gso, o.gso_size))
            .collect();
        // Three segments as chunks behind one outer Ethernet | IPv4 | UDP header.
        let chunk = OVERHEAD_V4 - udp_gso::OUTER + 54 + 1000;
        assert_eq!(
            sent,
            vec![(
                udp_gso::OUTER + 2 * chunk + chunk - 500,
                GsoType::UdpL4,
                chunk as u16
            )]
        );
        assert!(touched[0]);
        assert_eq!(w.counters().port(UPLINK).tx_packets, 1);
        // A port that refuses the UDP GSO frame (here: slots too short) gets its datagrams.
        let mut small: Vec<Option<MemoryTx>> = vec![Some(memory_port(UPLINK, 8, 2048).1)];
        dispatch_one(&tables, &f, &mut small, w.counters(), &mut touched);
        let sent: Vec<(usize, GsoType)> = small[0]
            .as_mut()
            .unwrap()
            .take_sent()
            .iter()
            .map(|(b, o)| (b.len(), o.gso))
            .collect();
        let d = |n| (OVERHEAD_V4 + 54 + n, GsoType::None);
        assert_eq!(sent, vec![d(1000), d(1000), d(500)]);
        assert_eq!(w.counters().port(UPLINK).tx_packets, 4);
        // Without its outer headers the frame cannot be cut: one malformed drop.
        let mut bare = inner.clone();
        let f = Frame::new(&mut bare, 0, inner.len(), meta).unwrap();
        dispatch_one(&tables, &f, &mut txs, w.counters(), &mut touched);
        assert_eq!(w.counters().drops(DropReason::Malformed), 1);
    }

    mod hotplug {
        use std::net::Ipv4Addr;
        use std::sync::atomic::AtomicBool;

        use super::super::*;
        use crate::config::{Config, NetworkConfig, PortRole};
        use crate::frame::NetworkId;
        use crate::port::afpacket::RxRing;
        use crate::port::testnet::{is_test_frame, test_frame, Netns, RawSock};

        /// Small rings: several sockets per interface and worker stay cheap.
        fn rt_config(workers: usize) -> RuntimeConfig {
            RuntimeConfig {
                workers,
                afpacket: AfPacketConfig {
                    rx_ring: RxRing::V2 {
                        frame_size: 2048,
                        frame_count: 256,
                    },
                    tx_frame_size: 2048,
                    tx_block_size: 64 << 10,
                    tx_block_count: 4,
                    ..AfPacketConfig::default()
                },
                ..RuntimeConfig::default()
            }
        }

        fn port(id: u16, name: &str) -> PortConfig {
            PortConfig {
                id: PortId(id),
                name: name.into(),
                io: PortIo::AfPacket,
                role: PortRole::Access {
                    network: NetworkId(0),
                    vlan: 0,
                },
            }
        }

        fn config(ports: &[&PortConfig]) -> Config {
            let net = NetworkConfig::new(
                NetworkId(0),
                "n",
                "10.77.0.0/24".parse().unwrap(),
                Ipv4Addr::new(10, 77, 0, 1),
            );
            Config {
                networks: vec![net],
                ports: ports.iter().map(|p| (*p).clone()).collect(),
                ..Config::default()
            }
        }

        /// Veth pairs `p<x>` (sluice's end) and `k<x>` (the test's end), up, without IPv6
        /// link-local addresses so that the kernel sends nothing of its own on them.
        fn veths(ns: &Netns, names: &[&str]) {
            for x in names {
                ns.ip(&format!("link add name p{x} type veth peer name k{x}"));
                for d in [format!("p{x}"), format!("k{x}")] {
                    ns.ip(&format!("link set dev {d} addrgenmode none"));
                    ns.ip(&format!("link set dev {d} up"));
                }
            }
        }

        fn tx_packets(dp: &Dataplane, id: u16) -> u64 {
            let s = dp.stats();
            s.ports
                .iter()
                .find(|p| p.id == PortId(id))
                .map_or(0, |p| p.stats.tx_packets)
        }

        #[test]
        fn ports_attach_and_detach_while_traffic_flows() {
            let ns = Netns::new("h");
            veths(&ns, &["a", "b", "c"]);
            ns.enter(|| {
                let (pa, pb, pc) = (port(1, "pa"), port(2, "pb"), port(3, "pc"));
                let dp = Dataplane::new(&config(&[&pa, &pb])).unwrap();
                let rt = Runtime::start(&dp, &rt_config(2)).unwrap();
                assert_eq!(rt.attached(), vec![PortId(1), PortId(2)]);
                let (ka, kb, kc) = (
                    RawSock::open("ka"),
                    RawSock::open("kb"),
                    RawSock::open("kc"),
                );
                const FLOW: usize = 1500;
                let done = AtomicBool::new(false);
                std::thread::scope(|s| {
                    // A steady A -> B flow (flooded: the destination MAC is never learned)
                    // for the whole time C is attached.
                    let seen_b = s.spawn(|| kb.capture(FLOW, |f| is_test_frame(f, 1)).len());
                    s.spawn(|| {
                        for _ in 0..FLOW {
                            ka.send(&test_frame(None, 1, 60));
                            std::thread::sleep(Duration::from_micros(500));
                        }
                        done.store(true, Ordering::Relaxed);
                    });
                    std::thread::sleep(Duration::from_millis(100));
                    rt.attach(&pc).unwrap();
                    assert_eq!(ns.packet_sockets("pc"), 2, "one socket per worker");
                    assert!(matches!(
                        rt.attach(&pc),
                        Err(RuntimeError::AlreadyAttached(_))
                    ));
                    dp.apply(&config(&[&pa, &pb, &pc])).unwrap();
                    let at_c = kc.capture(20, |f| is_test_frame(f, 1)).len();
                    assert_eq!(at_c, 20, "the flow reaches C once C is applied");
                    assert!(!done.load(Ordering::Relaxed), "C was attached while A sent");
                    dp.apply(&config(&[&pa, &pb])).unwrap();
                    rt.detach(PortId(3));
                    assert_eq!(ns.packet_sockets("pc"), 0, "every worker closed C");
                    assert!(!done.load(Ordering::Relaxed), "C was detached while A sent");
                    assert_eq!(seen_b.join().unwrap(), FLOW, "no frame to B was lost");
                });
                assert!(tx_packets(&dp, 2) >= FLOW as u64);

                // The same id again: the counters start over.
                rt.attach(&pc).unwrap();
                dp.apply(&config(&[&pa, &pb, &pc])).unwrap();
                assert_eq!(tx_packets(&dp, 3), 0);
                for _ in 0..10 {
                    ka.send(&test_frame(None, 2, 60));
                }
                assert_eq!(kc.capture(10, |f| is_test_frame(f, 2)).len(), 10);
                assert_eq!(tx_packets(&dp, 3), 10);

                // A missing interface is refused and changes nothing.
                let e = rt.attach(&port(4, "nosuch")).unwrap_err();
                assert!(matches!(e, RuntimeError::AfPacket(_)), "{e}");
                assert_eq!(rt.attached(), vec![PortId(1), PortId(2), PortId(3)]);
                let big = rt.attach(&port(u16::MAX, "pc")).unwrap_err();
                assert!(matches!(big, RuntimeError::PortIdTooLarge(_)), "{big}");
                for _ in 0..10 {
                    ka.send(&test_frame(None, 3, 60));
                }
                assert_eq!(kb.capture(10, |f| is_test_frame(f, 3)).len(), 10);
                rt.shutdown();
                assert_eq!(ns.packet_sockets("pa"), 0);
            });
        }

        #[test]
        fn a_runtime_without_ports_takes_them_later() {
            let ns = Netns::new("z");
            veths(&ns, &["a", "b"]);
            ns.enter(|| {
                let (pa, pb) = (port(1, "pa"), port(2, "pb"));
                let dp = Dataplane::new(&config(&[])).unwrap();
                let rt = Runtime::start(&dp, &rt_config(1)).unwrap();
                assert!(rt.attached().is_empty());
                // The worker sleeps in epoll between commands; without the waker every
                // command after the first would wait a whole idle sleep, so these 40 would
                // take at least 39 x IDLE_SLEEP. The bound leaves a loaded machine room.
                const CYCLES: u32 = 20;
                let t = Instant::now();
                for _ in 0..CYCLES {
                    rt.attach(&pa).unwrap();
                    rt.detach(PortId(1));
                }
                let without_waker = (2 * CYCLES - 1) * IDLE_SLEEP;
                assert!(t.elapsed() < without_waker / 2, "took {:?}", t.elapsed());
                rt.attach(&pa).unwrap();
                rt.attach(&pb).unwrap();
                dp.apply(&config(&[&pa, &pb])).unwrap();
                let (ka, kb) = (RawSock::open("ka"), RawSock::open("kb"));
                for _ in 0..10 {
                    ka.send(&test_frame(None, 7, 60));
                }
                assert_eq!(kb.capture(10, |f| is_test_frame(f, 7)).len(), 10);
                // The workers read the rings' counters once a second.
                let seen = |id| {
                    let stats = rt.port_kernel_stats();
                    stats.iter().find(|(p, _)| *p == id).map(|(_, s)| *s)
                };
                let deadline = Instant::now() + Duration::from_secs(3);
                while seen(PortId(1)).unwrap().packets < 10 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let a = seen(PortId(1)).unwrap();
                assert!(a.packets >= 10 && a.drops == 0, "{a:?}");
                rt.detach(PortId(1));
                rt.detach(PortId(1));
                assert_eq!(rt.attached(), vec![PortId(2)]);
                assert_eq!(seen(PortId(1)), None, "a detached port has no row");
                assert_eq!(ns.packet_sockets("pa"), 0);
            });
        }
    }
}
