//! The flow table: a slab of compact flows, a hash index of both directions' tuples, the port
//! allocator (which probes that index) and the timer wheel.

use std::net::Ipv4Addr;

use hashbrown::hash_map::{Entry, EntryRef};
use hashbrown::HashMap;

use super::index::{self, tag_from_mix, tag_of, Index};
use super::tcp::{self, TcpState};
use super::timer::{Wheel, NIL, UNLINKED};
use super::tuple::{Key, Probe, Tuple};
use super::{Dir, FlowId, FlowInfo, Hit, NatAction, NatError, Owner, Shortcut, Timeouts};
use crate::config::{L4Proto, NatConfig, PortRange};
use crate::counters::MAX_PORTS;
use crate::frame::PortId;
use crate::time::Millis;

mod offloaded;
pub use offloaded::OffloadPair;

/// `Flow::flags`: the slab entry holds a live flow.
const LIVE: u8 = 1;
/// `Flow::flags`: a packet was seen in `Dir::Reply`.
const REPLIED: u8 = 2;
/// `Flow::flags`: the flow was handed to the kernel offload (see `offloaded`); cleared when a
/// direction's shortcut is set again.
const OFFLOADED: u8 = 0x40;

/// Index value bit telling that the key is the flow's reply tuple.
const REPLY_BIT: u32 = 1;

/// Most flows a table holds, whatever the configuration: two index entries per flow at a load
/// of at most 1/2 must fit the index's 2^32 slots.
const MAX_FLOWS: usize = 1 << (index::MAX_BITS - 2);

/// The owner of flows made by `Conntrack::create`: charged to no port, held to no limit.
pub const UNOWNED: PortId = PortId(u16::MAX);

/// The port space one owner draws NAPT ports from toward one destination: (owner port,
/// protocol, translated source address, destination address, destination port; 0 for ICMP,
/// whose ids are the port space), packed by `share_key` into one integer, which hashes in
/// one step on the first packet's path.
type ShareKey = u128;

/// Packs the fields of a `ShareKey`.
#[inline]
fn share_key(owner: u16, proto: L4Proto, src: u32, dst: u32, dport: u16) -> ShareKey {
    (u128::from(owner) << 88)
        | (u128::from(proto.number()) << 80)
        | (u128::from(src) << 48)
        | (u128::from(dst) << 16)
        | u128::from(dport)
}

/// How far ahead of its lookups `lookup_batch` fetches: the flow of the probe `DISTANCE`
/// ahead, the index line of the one `2 * DISTANCE` ahead.
const DISTANCE: usize = 8;

/// One tracked flow: two cache lines (128 bytes). The first holds all a packet of the original
/// direction reads and writes (both tuples, deadline, state, that direction's shortcut), so the
/// most common packet touches one line; the second holds the reply direction's shortcut and the
/// timer links. A free entry keeps its generation and chains the free list through `next`.
#[repr(C, align(64))]
pub(super) struct Flow {
    orig_src: u32,
    orig_dst: u32,
    orig_sport: u16,
    orig_dport: u16,
    xlat_src: u32,
    xlat_dst: u32,
    xlat_sport: u16,
    xlat_dport: u16,
    /// Deadline in milliseconds (`Millis`).
    pub(super) expires: u64,
    generation: u16,
    proto: L4Proto,
    /// `TcpState` as a byte (unused for UDP and ICMP).
    state: u8,
    /// `LIVE`, `REPLIED` and, for TCP, the sides that sent FIN (`tcp::Fins` shifted by 2).
    flags: u8,
    /// The pipeline's cached decision for packets of the original direction.
    original: Shortcut,
    /// The same for replies (second line).
    reply: Shortcut,
    /// Previous flow in the timer slot's list, or in no list.
    pub(super) prev: u32,
    /// Next flow in the timer slot's list, or the next free entry.
    pub(super) next: u32,
    /// Timer slot the flow is linked into, or `UNLINKED`.
    pub(super) slot: u16,
    /// The port the flow is charged to (`Owner::port`).
    owner: u16,
    /// The flow holds a NAPT port counted in its owner's share toward its destination.
    shared: bool,
}

impl Flow {
    fn orig(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: Ipv4Addr::from(self.orig_src),
            src_port: self.orig_sport,
            dst: Ipv4Addr::from(self.orig_dst),
            dst_port: self.orig_dport,
        }
    }

    fn translated(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: Ipv4Addr::from(self.xlat_src),
            src_port: self.xlat_sport,
            dst: Ipv4Addr::from(self.xlat_dst),
            dst_port: self.xlat_dport,
        }
    }

    /// The index key of the tuple the flow is found by in `dir`.
    fn key(&self, dir_bit: u32) -> Key {
        if dir_bit == 0 {
            self.orig().key()
        } else {
            self.translated().reversed().key()
        }
    }

    fn live(&self) -> bool {
        self.flags & LIVE != 0
    }

    /// The port space its NAPT port was drawn from, for its owner's share.
    fn share_key(&self) -> ShareKey {
        let dport = if self.proto == L4Proto::Icmp {
            0
        } else {
            self.xlat_dport
        };
        share_key(self.owner, self.proto, self.xlat_src, self.xlat_dst, dport)
    }

    fn fins(&self) -> tcp::Fins {
        self.flags >> 2
    }

    fn state_name(&self) -> &'static str {
        TcpState::from_u8(self.state).shown(self.proto, self.flags & REPLIED != 0)
    }
}

/// The connection-tracking table; see the module documentation for semantics and costs.
pub struct Conntrack {
    flows: Vec<Flow>,
    free: u32,
    len: usize,
    index: Index,
    wheel: Wheel,
    ports: PortRange,
    max_flows: usize,
    timeouts: Timeouts,
    timer_visits: u64,
    /// Live flows per owner port (`Owner`), indexed by port id.
    owned: Box<[u32]>,
    /// NAPT ports held per owner and destination (entries at zero are removed).
    shares: HashMap<ShareKey, u32>,
    /// The tags of the keys indexed since `mark_inserts`, one bit each of 256 (`recent_bit`).
    recent: [u64; 4],
}

/// Where `recent` keeps tag `tag`: word and bit.
#[inline(always)]
fn recent_bit(tag: u32) -> (usize, u64) {
    ((tag as usize >> 6) & 3, 1 << (tag & 63))
}

impl Conntrack {
    /// An empty table allocating from `cfg.ports`, holding at most `cfg.max_flows` flows (capped
    /// at 2^30). Nothing large is allocated until flows arrive.
    pub fn new(cfg: &NatConfig, timeouts: Timeouts) -> Self {
        Conntrack {
            flows: Vec::new(),
            free: NIL,
            len: 0,
            index: Index::new(),
            wheel: Wheel::new(),
            ports: cfg.ports,
            max_flows: cfg.max_flows.min(MAX_FLOWS),
            timeouts,
            timer_visits: 0,
            owned: vec![0; MAX_PORTS].into_boxed_slice(),
            shares: HashMap::new(),
            recent: [0; 4],
        }
    }

    /// Starts a new record of the keys indexed from now on (see `still_misses`); the pipeline
    /// marks when it has looked a batch's flows up.
    pub fn mark_inserts(&mut self) {
        self.recent = [0; 4];
    }

    /// True when a lookup of probe `p` that missed at the last `mark_inserts` would miss
    /// now too: no key indexed since has `p`'s tag bit (flows removed since cannot turn a
    /// miss into a hit). False may also mean a key of another tag sharing the bit.
    #[inline(always)]
    pub fn still_misses(&self, p: &Probe) -> bool {
        let (w, b) = recent_bit(p.tag);
        self.recent[w] & b == 0
    }

    /// Records a key of tag `tag` indexed (for `still_misses`).
    #[inline(always)]
    fn note_insert(&mut self, tag: u32) {
        let (w, b) = recent_bit(tag);
        self.recent[w] |= b;
    }

    /// The flow a packet with tuple `t` belongs to, in either direction, and the tuple it must
    /// carry after translation. No allocation.
    #[inline(always)]
    pub fn lookup(&self, t: &Tuple) -> Option<Hit> {
        let key = t.key();
        self.find(&key, tag_of(&key)).map(|v| self.hit(v))
    }

    /// `lookup` for a batch: `out[i]` is the lookup of `probe(i)` (`None` when it gives no
    /// probe), for every `i` below `out.len()` (`probe` is called with those only).
    /// Software-pipelined so that memory latency overlaps across probes: while probe `i` is
    /// looked up on lines already loaded, the flow of probe `i + DISTANCE` and the index line
    /// of probe `i + 2 * DISTANCE` are being fetched. That keeps a steady few dozen lines in
    /// flight, about what the CPU's miss buffers hold, rather than a burst they would drop.
    /// Pays off when the table is far larger than the CPU caches; same results as `lookup`.
    /// No allocation.
    #[inline(always)]
    pub fn lookup_batch<'p>(
        &self,
        probe: impl Fn(usize) -> Option<&'p Probe>,
        out: &mut [Option<Hit>],
    ) {
        let n = out.len();
        for i in 0..n + 2 * DISTANCE {
            if let Some(p) = (i < n).then(|| probe(i)).flatten() {
                self.index.prefetch(p.tag);
            }
            if let Some(j) = i.checked_sub(DISTANCE).filter(|&j| j < n) {
                if let Some(v) = probe(j).and_then(|p| self.index.first_candidate(p.tag)) {
                    self.prefetch_flow(v);
                }
            }
            if let Some(k) = i.checked_sub(2 * DISTANCE).filter(|&k| k < n) {
                out[k] = probe(k).and_then(|p| self.find(&p.key, p.tag).map(|v| self.hit(v)));
            }
        }
    }

    /// Starts loading the lines of the flow index value `v` names that its direction's packets
    /// read: the first line, and for a reply also the second.
    fn prefetch_flow(&self, v: u32) {
        if let Some(f) = self.flows.get((v >> 1) as usize) {
            let p: *const Flow = f;
            crate::prefetch::prefetch(p);
            if v & REPLY_BIT != 0 {
                crate::prefetch::prefetch(p.cast::<u8>().wrapping_add(64));
            }
        }
    }

    /// The index value of the live flow `key` (tagged `tag`) belongs to.
    #[inline(always)]
    fn find(&self, key: &Key, tag: u32) -> Option<u32> {
        self.index.find(tag, |v| {
            self.flows[(v >> 1) as usize].key(v & REPLY_BIT) == *key
        })
    }

    /// True when some flow is found by `key`.
    fn contains(&self, key: &Key) -> bool {
        self.find(key, tag_of(key)).is_some()
    }

    /// The hit an index value stands for.
    #[inline(always)]
    fn hit(&self, v: u32) -> Hit {
        let idx = v >> 1;
        let f = &self.flows[idx as usize];
        let flow = FlowId {
            index: idx,
            generation: f.generation,
        };
        if v & REPLY_BIT == 0 {
            Hit {
                flow,
                dir: Dir::Original,
                rewrite: f.translated(),
            }
        } else {
            Hit {
                flow,
                dir: Dir::Reply,
                rewrite: f.orig().reversed(),
            }
        }
    }

    /// Tracks a new flow whose first packet has tuple `orig`, translated by `action`, charged
    /// to no owner (`create_for` with an unlimited owner).
    pub fn create(
        &mut self,
        orig: &Tuple,
        action: NatAction,
        now: Millis,
    ) -> Result<Hit, NatError> {
        self.create_for(orig, action, now, &Owner::unlimited(UNOWNED))
    }

    /// Tracks a new flow whose first packet has tuple `orig`, translated by `action`, charged
    /// to `owner` within its limits. With SNAT
    /// a source port (ICMP: echo id) is allocated so that the reply tuple is unique. The flow
    /// starts with the UDP/ICMP unreplied timeout or, for TCP, in state NONE with the SYN_SENT
    /// timeout; the caller then accounts the first packet with `update` like any other.
    pub fn create_for(
        &mut self,
        orig: &Tuple,
        action: NatAction,
        now: Millis,
        owner: &Owner,
    ) -> Result<Hit, NatError> {
        if self.contains(&orig.key()) {
            return Err(NatError::Exists);
        }
        self.create_after_miss(orig, action, now, owner)
    }

    /// `create_for` of a tuple the caller has just looked up (`lookup`, with no change to the
    /// table since) and not found: the first packet's path, which so probes the index for
    /// its tuple once, not twice. Given a tracked tuple, it would index a second flow for it.
    #[inline]
    pub fn create_after_miss(
        &mut self,
        orig: &Tuple,
        action: NatAction,
        now: Millis,
        owner: &Owner,
    ) -> Result<Hit, NatError> {
        let orig_key = orig.key();
        // The key's hash, once: the index's tag and the port allocator's start.
        let orig_mix = orig_key.mix();
        if self.len >= self.max_flows {
            return Err(NatError::TableFull);
        }
        let counted = self.owned.get(usize::from(owner.port.0)).copied();
        if counted.is_some_and(|n| n as usize >= owner.max_flows) {
            return Err(NatError::OwnerQuota);
        }
        let icmp = orig.proto == L4Proto::Icmp;
        let mut x = *orig;
        if let Some((addr, port)) = action.dnat {
            x.dst = addr;
            if !icmp {
                x.dst_port = port;
            }
        }
        let mut share = None;
        if let Some(addr) = action.snat {
            x.src = addr;
            if counted.is_some() {
                share = Some(self.take_share(owner, &x)?);
            }
            let port = self.allocate(orig, orig_mix, x).inspect_err(|_| {
                share.inspect(|key| self.release_share(key));
            })?;
            x.src_port = port;
            if icmp {
                x.dst_port = port;
            }
        } else if self.contains(&x.reversed().key()) {
            return Err(NatError::Clash);
        }
        self.charge(owner.port);
        let reply_key = x.reversed().key();

        let idx = self.alloc_slot();
        let f = &mut self.flows[idx as usize];
        f.orig_src = u32::from(orig.src);
        f.orig_dst = u32::from(orig.dst);
        f.orig_sport = orig.src_port;
        f.orig_dport = orig.dst_port;
        f.xlat_src = u32::from(x.src);
        f.xlat_dst = u32::from(x.dst);
        f.xlat_sport = x.src_port;
        f.xlat_dport = x.dst_port;
        f.proto = orig.proto;
        f.state = TcpState::None as u8;
        f.flags = LIVE;
        f.original = Shortcut::default();
        f.reply = Shortcut::default();
        f.owner = owner.port.0;
        f.shared = share.is_some();
        f.expires = now.plus_secs(self.timeouts.for_flow(f)).0;
        let generation = f.generation;
        self.wheel.link(&mut self.flows, idx);
        self.index_flow(idx, (orig_key, orig_mix), reply_key);
        self.len += 1;
        Ok(Hit {
            flow: FlowId {
                index: idx,
                generation,
            },
            dir: Dir::Original,
            rewrite: x,
        })
    }

    /// Indexes flow `idx` by its original key (`orig`: the key and its `Key::mix`) and, when
    /// it differs, by its reply key; records both tags for `still_misses`.
    #[inline(always)]
    fn index_flow(&mut self, idx: u32, orig: (Key, u64), reply_key: Key) {
        let orig_tag = tag_from_mix(orig.1);
        self.index.insert(orig_tag, idx << 1);
        self.note_insert(orig_tag);
        if reply_key != orig.0 {
            let reply_tag = tag_of(&reply_key);
            self.index.insert(reply_tag, (idx << 1) | REPLY_BIT);
            self.note_insert(reply_tag);
        }
    }

    /// Counts a new flow for its owner `port`.
    fn charge(&mut self, port: PortId) {
        if let Some(n) = self.owned.get_mut(usize::from(port.0)) {
            *n += 1;
        }
    }

    /// Takes one NAPT port of `owner`'s share of the port space it draws from for `x`
    /// (translated but for its source port), if that share is not used up: one hash lookup
    /// on the first packet's path (`release_share` gives it back).
    fn take_share(&mut self, owner: &Owner, x: &Tuple) -> Result<ShareKey, NatError> {
        let dport = if x.proto == L4Proto::Icmp {
            0
        } else {
            x.dst_port
        };
        let key = share_key(
            owner.port.0,
            x.proto,
            u32::from(x.src),
            u32::from(x.dst),
            dport,
        );
        let max = owner.max_ports_per_destination;
        match self.shares.entry(key) {
            Entry::Occupied(mut e) if (*e.get() as usize) < max => *e.get_mut() += 1,
            Entry::Vacant(e) if max > 0 => {
                e.insert(1);
            }
            _ => return Err(NatError::PortShare),
        }
        Ok(key)
    }

    /// Gives back one NAPT port of the share `key` (entries at zero are removed).
    fn release_share(&mut self, key: &ShareKey) {
        if let EntryRef::Occupied(mut e) = self.shares.entry_ref(key) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// A source port for `x` (already translated but for its source port) whose reply tuple no
    /// flow uses: the original port if it is in the range and free, else the first free one
    /// from a start derived from `orig_mix` (`orig`'s `Key::mix`).
    fn allocate(&self, orig: &Tuple, orig_mix: u64, x: Tuple) -> Result<u16, NatError> {
        let free = |port: u16| {
            let mut t = x;
            t.src_port = port;
            if x.proto == L4Proto::Icmp {
                t.dst_port = port;
            }
            !self.contains(&t.reversed().key())
        };
        if self.ports.contains(orig.src_port) && free(orig.src_port) {
            return Ok(orig.src_port);
        }
        if self.ports.is_empty() {
            return Err(NatError::PortsExhausted);
        }
        let len = u64::from(self.ports.len());
        // Offsets into the range from `start`, wrapping once: one division, not one a port.
        let start = orig_mix % len;
        (start..len)
            .chain(0..start)
            .map(|off| self.ports.first + off as u16)
            .find(|&p| free(p))
            .ok_or(NatError::PortsExhausted)
    }

    /// A cleared slab entry: the head of the free list, or a new one at the end.
    fn alloc_slot(&mut self) -> u32 {
        if self.free != NIL {
            let idx = self.free;
            self.free = self.flows[idx as usize].next;
            let f = &mut self.flows[idx as usize];
            f.next = NIL;
            return idx;
        }
        let idx = self.flows.len() as u32;
        if self.flows.len() == self.flows.capacity() {
            // A new buffer advised before the entries move in, so that all of it is faulted in
            // huge (a reallocation would keep the moved part on the pages it had).
            let mut grown = Vec::with_capacity(self.flows.len().max(8) * 2);
            crate::hugepage::advise(&grown);
            grown.append(&mut self.flows);
            self.flows = grown;
        }
        self.flows.push(Flow {
            orig_src: 0,
            orig_dst: 0,
            orig_sport: 0,
            orig_dport: 0,
            xlat_src: 0,
            xlat_dst: 0,
            xlat_sport: 0,
            xlat_dport: 0,
            expires: 0,
            prev: NIL,
            next: NIL,
            slot: UNLINKED,
            generation: 0,
            proto: L4Proto::Udp,
            state: 0,
            flags: 0,
            original: Shortcut::default(),
            reply: Shortcut::default(),
            owner: UNOWNED.0,
            shared: false,
        });
        idx
    }

    /// The live flow `id` names, if it still exists.
    #[inline(always)]
    fn live_index(&self, id: FlowId) -> Option<usize> {
        let f = self.flows.get(id.index as usize)?;
        (f.live() && f.generation == id.generation).then_some(id.index as usize)
    }

    /// The shortcut cached for the direction of `hit` when `usable` accepts it (a direction
    /// without one holds the default, epoch 0), after accounting the packet as `update` does.
    /// `None`, with nothing accounted, when the flow no longer exists or `usable` refuses: the
    /// caller then takes the full path, which accounts the packet itself.
    #[inline(always)]
    pub fn follow_shortcut(
        &mut self,
        hit: &Hit,
        tcp_flags: u8,
        now: Millis,
        usable: impl FnOnce(&Shortcut) -> bool,
    ) -> Option<Shortcut> {
        let i = self.live_index(hit.flow)?;
        let f = &self.flows[i];
        let s = match hit.dir {
            Dir::Original => f.original,
            Dir::Reply => f.reply,
        };
        if !usable(&s) {
            return None;
        }
        self.account(i, hit.dir, tcp_flags, now);
        Some(s)
    }

    /// Caches `s` for the direction of `hit` (ignored for a flow that no longer exists).
    pub fn set_shortcut(&mut self, hit: &Hit, s: Shortcut) {
        if let Some(i) = self.live_index(hit.flow) {
            let f = &mut self.flows[i];
            match hit.dir {
                Dir::Original => f.original = s,
                Dir::Reply => f.reply = s,
            }
            // A new decision (new tables or neighbours): the flow may be offloaded again.
            f.flags &= !OFFLOADED;
        }
    }

    /// Accounts a packet of flow `flow` travelling in `dir`: advances the TCP state machine
    /// (`tcp_flags` is the TCP flags byte; 0 for UDP and ICMP), records a reply, and pushes the
    /// deadline to now + the state's timeout. A later deadline is only written (the wheel
    /// re-slots lazily); an earlier one relinks the flow. Unknown or stale ids are ignored.
    /// Inlined: called once per packet of the pipeline's full path.
    #[inline(always)]
    pub fn update(&mut self, flow: FlowId, dir: Dir, tcp_flags: u8, now: Millis) {
        if let Some(i) = self.live_index(flow) {
            self.account(i, dir, tcp_flags, now);
        }
    }

    /// `update` of the live flow at slab index `i`.
    #[inline(always)]
    fn account(&mut self, i: usize, dir: Dir, tcp_flags: u8, now: Millis) {
        let f = &mut self.flows[i];
        if f.proto == L4Proto::Tcp {
            let Some((state, fins)) =
                tcp::next(TcpState::from_u8(f.state), f.fins(), dir, tcp_flags)
            else {
                return;
            };
            f.state = state as u8;
            f.flags = (f.flags & (LIVE | REPLIED | OFFLOADED)) | (fins << 2);
        }
        if dir == Dir::Reply {
            f.flags |= REPLIED;
        }
        let expires = now.plus_secs(self.timeouts.for_flow(f)).0;
        if expires >= f.expires {
            f.expires = expires;
        } else {
            f.expires = expires;
            self.wheel.unlink(&mut self.flows, i as u32);
            self.wheel.link(&mut self.flows, i as u32);
        }
    }

    /// Frees every flow whose deadline is at or before `now` (at most one tick late) and
    /// returns how many. Visits only the flows in the slots due since the last call.
    pub fn expire(&mut self, now: Millis) -> usize {
        let mut freed = 0;
        for slot in self.wheel.due(now) {
            let mut cur = self.wheel.take(slot);
            while cur != NIL {
                let f = &mut self.flows[cur as usize];
                let next = f.next;
                f.prev = NIL;
                f.next = NIL;
                f.slot = UNLINKED;
                self.timer_visits += 1;
                if f.expires <= now.0 {
                    self.free_flow(cur);
                    freed += 1;
                } else {
                    self.wheel.link(&mut self.flows, cur);
                }
                cur = next;
            }
        }
        freed
    }

    /// Forgets flow `flow` now (no-op for a stale id), freeing its port.
    pub fn remove(&mut self, flow: FlowId) {
        if self.live_index(flow).is_some() {
            self.free_flow(flow.index);
        }
    }

    /// Drops every flow for which `keep` is false (e.g. the flows of a removed endpoint or
    /// published port) and returns how many. O(table): a control-plane operation.
    pub fn retain(&mut self, mut keep: impl FnMut(&FlowInfo) -> bool) -> usize {
        let mut dropped = 0;
        for i in 0..self.flows.len() {
            if self.flows[i].live() && !keep(&self.info(i)) {
                self.free_flow(i as u32);
                dropped += 1;
            }
        }
        dropped
    }

    /// Unlinks, unindexes and frees a live flow.
    fn free_flow(&mut self, idx: u32) {
        self.wheel.unlink(&mut self.flows, idx);
        let f = &mut self.flows[idx as usize];
        let orig_key = f.orig().key();
        let reply_key = f.translated().reversed().key();
        let (owner, share) = (f.owner, f.shared.then(|| f.share_key()));
        f.flags = 0;
        f.generation = f.generation.wrapping_add(1);
        f.next = self.free;
        self.free = idx;
        self.index.remove(tag_of(&orig_key), idx << 1);
        if reply_key != orig_key {
            self.index
                .remove(tag_of(&reply_key), (idx << 1) | REPLY_BIT);
        }
        self.len -= 1;
        if let Some(n) = self.owned.get_mut(usize::from(owner)) {
            *n -= 1;
        }
        if let Some(key) = share {
            self.release_share(&key);
        }
    }

    fn info(&self, i: usize) -> FlowInfo {
        let f = &self.flows[i];
        FlowInfo {
            id: FlowId {
                index: i as u32,
                generation: f.generation,
            },
            original: f.orig(),
            reply: f.translated().reversed(),
            state: f.state_name(),
            expires: Millis(f.expires),
            replied: f.flags & REPLIED != 0,
        }
    }

    /// Number of tracked flows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Live flows charged to `port` (see `Owner`).
    pub fn owned_by(&self, port: PortId) -> usize {
        self.owned
            .get(usize::from(port.0))
            .map_or(0, |&n| n as usize)
    }

    /// NAPT ports `port` holds toward `dst` (address and port; ICMP: port 0) from source
    /// address `from`.
    pub fn ports_held(
        &self,
        port: PortId,
        proto: L4Proto,
        from: Ipv4Addr,
        dst: (Ipv4Addr, u16),
    ) -> usize {
        let key = share_key(port.0, proto, u32::from(from), u32::from(dst.0), dst.1);
        self.shares.get(&key).map_or(0, |&n| n as usize)
    }

    /// True when no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every tracked flow, in slab order (for `sluice conntrack ls`). O(table).
    pub fn flows(&self) -> impl Iterator<Item = FlowInfo> + '_ {
        (0..self.flows.len())
            .filter(|&i| self.flows[i].live())
            .map(|i| self.info(i))
    }

    /// Heap bytes the table holds (slab, index and wheel), for stats and capacity planning.
    pub fn memory_bytes(&self) -> usize {
        self.flows.capacity() * std::mem::size_of::<Flow>()
            + self.index.memory_bytes()
            + self.wheel.memory_bytes()
    }

    /// Total flows the timer wheel has examined since creation: the observable that shows
    /// expiry costs O(flows due), not O(table).
    pub fn timer_visits(&self) -> u64 {
        self.timer_visits
    }
}

impl Timeouts {
    /// The timeout of `f` in its current state, in seconds.
    #[inline]
    fn for_flow(&self, f: &Flow) -> u32 {
        self.for_state(f.proto, TcpState::from_u8(f.state), f.flags & REPLIED != 0)
    }
}

#[cfg(test)]
impl Conntrack {
    /// Asserts the table's internal invariants: the index and the slab agree, every live flow
    /// is in exactly one timer list, and the free list holds every other entry.
    pub(super) fn check(&self) {
        let mut keys = 0;
        let mut live = 0;
        let mut owned = vec![0u32; MAX_PORTS];
        let mut shares: HashMap<ShareKey, u32> = HashMap::new();
        for (i, f) in self.flows.iter().enumerate() {
            if !f.live() {
                continue;
            }
            live += 1;
            if let Some(n) = owned.get_mut(usize::from(f.owner)) {
                *n += 1;
            }
            if f.shared {
                *shares.entry(f.share_key()).or_insert(0) += 1;
            }
            let i = i as u32;
            let (ok, rk) = (f.orig().key(), f.translated().reversed().key());
            assert_eq!(self.find(&ok, tag_of(&ok)), Some(i << 1));
            keys += 1;
            if rk != ok {
                assert_eq!(self.find(&rk, tag_of(&rk)), Some((i << 1) | REPLY_BIT));
                keys += 1;
            }
        }
        assert_eq!(live, self.len);
        assert_eq!(&owned[..], &self.owned[..], "flows per owner");
        assert_eq!(shares, self.shares, "ports per owner and destination");
        assert_eq!(keys, self.index.len());
        for (tag, v) in self.index.check() {
            let f = &self.flows[(v >> 1) as usize];
            assert!(f.live(), "index entry of a dead flow");
            let key = f.key(v & REPLY_BIT);
            assert_eq!(tag, tag_of(&key), "entry under a wrong tag");
            assert!(v & REPLY_BIT == 0 || key != f.orig().key());
        }
        let mut linked: Vec<u32> = (0..super::timer::SLOTS as usize)
            .flat_map(|s| self.wheel.list(&self.flows, s))
            .collect();
        linked.sort_unstable();
        let before = linked.len();
        linked.dedup();
        assert_eq!(before, linked.len(), "a flow is linked twice");
        assert_eq!(linked.len(), self.len);
        assert!(linked.iter().all(|&i| self.flows[i as usize].live()));
        let mut free = 0;
        let mut cur = self.free;
        while cur != NIL {
            assert!(!self.flows[cur as usize].live());
            free += 1;
            cur = self.flows[cur as usize].next;
        }
        assert_eq!(free + self.len, self.flows.len());
    }
}

impl std::fmt::Debug for Conntrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conntrack")
            .field("flows", &self.len())
            .field("memory_bytes", &self.memory_bytes())
            .finish_non_exhaustive()
    }
}
