//! Flow offload, the kernel half: sluice's userspace pipeline stays the slow path and the only
//! source of policy; once it has validated a flow it installs an exact-match entry per direction
//! here, and a TC program (clsact ingress, cls_bpf direct action) on each host-side interface
//! forwards matching frames inside the kernel with `bpf_redirect`, rewriting MACs, TTL and NAT
//! addresses and ports. A socket filter with the same classification drops exactly those frames
//! from sluice's packet sockets (which see a frame before tc ingress), so nothing is forwarded
//! twice.
#![deny(missing_docs)]

mod asm;
mod layout;
mod link;
mod prog;
mod sys;
mod tc;
#[cfg(test)]
mod test_run;
mod tunnel;
mod tunnel_prog;
#[cfg(test)]
mod tunnel_test_run;

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use layout::{key, value, RawKey, RawValue};
use prog::Ending;
pub use tunnel::{DecapAction, DecapKey, EncapAction, Vxlan, VXLAN_OVERHEAD_V4, VXLAN_PORT};

/// Why an offload operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    /// The kernel (or our privileges) cannot run the offload: no BPF, no cls_bpf, no CAP_BPF/CAP_NET_ADMIN.
    #[error("flow offload unsupported here: {0}")]
    Unsupported(String),
    /// A bpf(2) command failed.
    #[error("bpf {op}: {source}")]
    Bpf {
        /// The command that failed.
        op: &'static str,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// Attaching to or detaching from an interface failed (netlink).
    #[error("tc on ifindex {ifindex}: {message}")]
    Tc {
        /// The interface.
        ifindex: u32,
        /// What went wrong.
        message: String,
    },
    /// The flow map is full.
    #[error("the offload flow map is full ({0} entries)")]
    Full(u32),
}

/// One direction of a flow as it arrives on an interface: the exact-match key.
///
/// `ifindex` is the interface's index in the namespace the filters are attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Ingress interface (the host-side interface sluice reads).
    pub ifindex: u32,
    /// Source address; `src` and `dst` are the same family.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// What the kernel does with a frame of that direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowAction {
    /// `bpf_redirect(egress_ifindex, 0)`: out of that interface.
    pub egress_ifindex: u32,
    /// Always written.
    pub eth_src: [u8; 6],
    /// Always written.
    pub eth_dst: [u8; 6],
    /// A routed hop: TTL / hop limit minus one.
    pub decrement_ttl: bool,
    /// New source address and port (same family).
    pub snat: Option<(IpAddr, u16)>,
    /// New destination address and port.
    pub dnat: Option<(IpAddr, u16)>,
}

/// How much a flow entry forwarded inside the kernel, and when it last did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowUsage {
    /// Frames forwarded (a GSO super-frame counts once).
    pub packets: u64,
    /// Bytes forwarded (Ethernet frame lengths).
    pub bytes: u64,
    /// CLOCK_MONOTONIC nanoseconds, see [`now_ns`].
    pub last_used_ns: u64,
}

/// The loaded programs and their flow map (one per sluiced; fds closed on drop).
///
/// Dropping it also empties the map, so filters still attached somewhere forward nothing
/// more (every frame then goes to userspace); [`Offload::detach`] removes them.
#[derive(Debug)]
pub struct Offload {
    map: sys::Map,
    capacity: u32,
    /// One `u32`: 1 while `map` holds an entry. The programs read it first and leave every
    /// frame alone at once while nothing is offloaded (their lookups cost a frame ~130 ns).
    active: sys::Map,
    /// The entries `map` holds (only this type adds or removes them), mirrored into `active`.
    entries: Mutex<u32>,
    tc: OwnedFd,
    filter: OwnedFd,
    /// Interfaces whose clsact qdisc we added (and so remove on detach).
    added_clsact: Mutex<HashSet<u32>>,
    /// Attached interfaces that are (or may become) veths with their peer in another namespace:
    /// entries leaving through one use `bpf_redirect_peer`.
    peer_targets: Mutex<link::PeerTargets>,
}

impl Offload {
    /// Creates the map (`capacity` entries) and loads both programs.
    pub fn new(capacity: u32) -> Result<Self, OffloadError> {
        let map = sys::Map::hash("sluice_flows", key::SIZE, value::SIZE, capacity)
            .map_err(|e| bpf_error("map create", e))?;
        let active =
            sys::Map::array("sluice_active", 4, 1).map_err(|e| bpf_error("map create", e))?;
        let fds = prog::Maps {
            flows: map.fd().as_raw_fd(),
            active: active.fd().as_raw_fd(),
        };
        let tc = load(
            prog::SCHED_CLS,
            "sluice_tc",
            &prog::program(fds, Ending::Tc),
        )?;
        let sockf = prog::program(fds, Ending::SocketFilter);
        let filter = load(prog::SOCKET_FILTER, "sluice_sockf", &sockf)?;
        Ok(Offload {
            map,
            capacity,
            active,
            entries: Mutex::new(0),
            tc,
            filter,
            added_clsact: Mutex::new(HashSet::new()),
            peer_targets: Mutex::default(),
        })
    }

    /// Adds a clsact qdisc to `ifindex` (current netns) if it has none, and our ingress filter.
    pub fn attach(&self, ifindex: u32) -> Result<(), OffloadError> {
        let added = tc::add_clsact(ifindex).map_err(attach_error(ifindex, "add a clsact qdisc"))?;
        if let Err(e) = tc::add_filter(ifindex, self.tc.as_fd()) {
            if added {
                // Best effort: leave the interface as we found it.
                let _ = tc::del_clsact(ifindex);
            }
            return Err(attach_error(ifindex, "add the bpf filter")(e));
        }
        if added {
            self.added().insert(ifindex);
        }
        // Without the socket its entries take the plain redirect, which is only slower.
        let _ = self.peers().attached(ifindex);
        Ok(())
    }

    /// Removes our filter (and the clsact qdisc if we added it). An interface already gone is Ok.
    pub fn detach(&self, ifindex: u32) -> Result<(), OffloadError> {
        let ours = self.added().remove(&ifindex);
        self.peers().detached(ifindex);
        // No interface, no qdisc (EINVAL: "parent qdisc doesn't exist") or no filter: all gone.
        let gone = |e: &io::Error| {
            matches!(
                e.raw_os_error(),
                Some(libc::ENODEV | libc::ENOENT | libc::EINVAL)
            )
        };
        match tc::del_filter(ifindex) {
            Err(e) if !gone(&e) => return Err(tc_error(ifindex, "delete the bpf filter")(e)),
            _ => {}
        }
        if ours {
            match tc::del_clsact(ifindex) {
                Err(e) if !gone(&e) => return Err(tc_error(ifindex, "delete the qdisc")(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// The socket-filter program, for SO_ATTACH_BPF on sluice's packet sockets.
    ///
    /// Every socket of a fanout group needs it (the filter runs on the socket fanout chose).
    /// It only drops frames arriving on a key's interface; frames the TC program redirects
    /// leave through the egress interface as outgoing frames, which sluice's sockets ignore
    /// (`PACKET_IGNORE_OUTGOING`).
    pub fn socket_filter(&self) -> BorrowedFd<'_> {
        self.filter.as_fd()
    }

    /// Attaches [`Offload::socket_filter`] to `socket` (`SO_ATTACH_BPF`).
    pub fn attach_socket_filter(&self, socket: BorrowedFd<'_>) -> Result<(), OffloadError> {
        sys::attach_socket_filter(socket, self.socket_filter())
            .map_err(|e| bpf_error("SO_ATTACH_BPF", e))
    }

    /// Installs (or replaces) one direction. Its counters start at zero and its last use at
    /// [`now_ns`], so that aging does not remove it before its first frame.
    pub fn insert(&self, key: &FlowKey, action: &FlowAction) -> Result<(), OffloadError> {
        let value = RawValue::new(action, now_ns()).to_bytes();
        self.update(&RawKey::new(key).to_bytes(), &value)
    }

    /// Writes one raw entry, sending its frames straight into the egress veth's peer when it
    /// is one in another namespace.
    fn update(&self, key: &[u8; key::SIZE], value: &[u8; value::SIZE]) -> Result<(), OffloadError> {
        let mut v = *value;
        if self.redirects_to_peer(layout::egress(&v)) {
            layout::add_flag(&mut v, value::PEER);
        }
        let full = |e: io::Error| match e.raw_os_error() {
            Some(libc::E2BIG) => OffloadError::Full(self.capacity),
            _ => bpf_error("map update", e),
        };
        if self.map.insert_new(key, &v).map_err(full)? {
            self.counted(1)
        } else {
            self.map.update(key, &v).map_err(full)
        }
    }

    /// Removes one direction (absent is Ok).
    pub fn remove(&self, key: &FlowKey) -> Result<(), OffloadError> {
        self.delete(&RawKey::new(key).to_bytes())
    }

    /// Deletes one raw entry (absent is Ok).
    fn delete(&self, key: &[u8; key::SIZE]) -> Result<(), OffloadError> {
        match self.map.delete(key) {
            Ok(true) => self.counted(-1),
            Ok(false) => Ok(()),
            Err(e) => Err(bpf_error("map delete", e)),
        }
    }

    /// Adds `delta` to the entry count and tells the programs when the map becomes empty or
    /// stops being empty.
    fn counted(&self, delta: i32) -> Result<(), OffloadError> {
        let mut n = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let was = *n;
        *n = n.saturating_add_signed(delta);
        if (was == 0) != (*n == 0) {
            let flag = u32::from(*n != 0).to_ne_bytes();
            self.active
                .update(&0u32.to_ne_bytes(), &flag)
                .map_err(|e| bpf_error("map update", e))?;
        }
        Ok(())
    }

    /// Whether the map holds any entry, as the programs see it.
    pub fn is_active(&self) -> Result<bool, OffloadError> {
        let mut flag = [0u8; 4];
        self.active
            .lookup(&0u32.to_ne_bytes(), &mut flag)
            .map_err(|e| bpf_error("map lookup", e))?;
        Ok(flag != [0; 4])
    }

    /// The entry's counters, None when absent.
    pub fn usage(&self, key: &FlowKey) -> Result<Option<FlowUsage>, OffloadError> {
        self.usage_of(&RawKey::new(key).to_bytes())
    }

    /// One raw entry's counters, None when absent.
    fn usage_of(&self, key: &[u8; key::SIZE]) -> Result<Option<FlowUsage>, OffloadError> {
        let mut value = [0u8; value::SIZE];
        let found = self
            .map
            .lookup(key, &mut value)
            .map_err(|e| bpf_error("map lookup", e))?;
        Ok(found.then(|| layout::usage(&value)))
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<(), OffloadError> {
        let mut keys = Vec::new();
        let mut next = [0u8; key::SIZE];
        let mut prev: Option<[u8; key::SIZE]> = None;
        while self
            .map
            .next_key(prev.as_ref().map(|k| &k[..]), &mut next)
            .map_err(|e| bpf_error("map get next key", e))?
        {
            keys.push(next);
            prev = Some(next);
        }
        for key in keys {
            self.delete(&key)?;
        }
        Ok(())
    }

    /// Whether entries leaving through attached interface `ifindex` use `bpf_redirect_peer`
    /// (a veth whose peer is in another namespace), asking the kernel until the answer is
    /// final; an interface the kernel cannot describe takes the plain redirect.
    pub fn redirects_to_peer(&self, ifindex: u32) -> bool {
        self.peers().is_peer(ifindex)
    }

    fn added(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        self.added_clsact.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, link::PeerTargets> {
        self.peer_targets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Offload {
    fn drop(&mut self) {
        // Filters keep the program (and so the map) alive: leave nothing they could forward.
        let _ = self.clear();
    }
}

/// Now on the clock of `FlowUsage::last_used_ns` (CLOCK_MONOTONIC, ns).
pub fn now_ns() -> u64 {
    sys::monotonic_ns()
}

/// A bpf(2) failure; a missing privilege or missing bpf(2) means the offload cannot run here.
fn bpf_error(op: &'static str, source: io::Error) -> OffloadError {
    match source.raw_os_error() {
        Some(libc::EPERM | libc::ENOSYS) => OffloadError::Unsupported(format!(
            "bpf {op}: {source} (needs CAP_BPF and CAP_NET_ADMIN)"
        )),
        _ => OffloadError::Bpf { op, source },
    }
}

/// An attach failure; no privilege (EPERM), an unknown qdisc or filter kind (ENOENT: no
/// clsact or no cls_bpf in this kernel) or no support (EOPNOTSUPP) means the offload cannot run.
fn attach_error(ifindex: u32, what: &'static str) -> impl FnOnce(io::Error) -> OffloadError {
    move |e| match e.raw_os_error() {
        Some(libc::EPERM | libc::ENOENT | libc::EOPNOTSUPP) => {
            OffloadError::Unsupported(format!("tc on ifindex {ifindex}: {what}: {e}"))
        }
        _ => tc_error(ifindex, what)(e),
    }
}

fn tc_error(ifindex: u32, what: &'static str) -> impl FnOnce(io::Error) -> OffloadError {
    move |e| OffloadError::Tc {
        ifindex,
        message: format!("{what}: {e}"),
    }
}

/// How much of a refused program's verifier log an error carries.
const LOG_TAIL: usize = 2048;

/// Loads one program; when the verifier refuses it, loads it again with a log and puts the
/// log's tail into the error.
fn load(prog_type: u32, name: &str, insns: &[asm::Insn]) -> Result<OwnedFd, OffloadError> {
    let insns = asm::encode(insns);
    let first = match sys::prog_load(prog_type, name, &insns, &mut []) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    if !matches!(first.raw_os_error(), Some(libc::EACCES | libc::EINVAL)) {
        return Err(bpf_error("prog load", first));
    }
    let mut log = vec![0u8; 1 << 20];
    let again = match sys::prog_load(prog_type, name, &insns, &mut log) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[end.saturating_sub(LOG_TAIL)..end]);
    Err(OffloadError::Bpf {
        op: "prog load",
        source: io::Error::new(again.kind(), format!("{again}; verifier log tail:\n{text}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The offload, or None (with a message) where this process cannot load BPF programs.
    pub(crate) fn offload(capacity: u32) -> Option<Offload> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: loading BPF programs needs root");
            return None;
        }
        match Offload::new(capacity) {
            Err(OffloadError::Unsupported(why)) => {
                eprintln!("skipped: {why}");
                None
            }
            res => Some(res.expect("both programs pass the verifier")),
        }
    }

    fn key(src: IpAddr, dst: IpAddr, sport: u16) -> FlowKey {
        FlowKey {
            ifindex: 1,
            src,
            dst,
            proto: 6,
            sport,
            dport: 80,
        }
    }

    fn action(nat: Option<(IpAddr, u16)>) -> FlowAction {
        FlowAction {
            egress_ifindex: 2,
            eth_src: [2, 0, 0, 0, 0, 1],
            eth_dst: [2, 0, 0, 0, 0, 2],
            decrement_ttl: true,
            snat: nat,
            dnat: nat,
        }
    }

    #[test]
    fn programs_load_and_entries_come_and_go_for_both_families() {
        let Some(off) = offload(2) else { return };
        let v4 = key(
            Ipv4Addr::new(10, 0, 0, 1).into(),
            Ipv4Addr::new(10, 0, 0, 2).into(),
            1,
        );
        let v6: IpAddr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into();
        let v6 = key(v6, v6, 1);
        assert_eq!(off.usage(&v4).unwrap(), None);
        assert!(!off.is_active().unwrap());
        let before = now_ns();
        off.insert(&v4, &action(Some((Ipv4Addr::new(192, 0, 2, 1).into(), 9))))
            .unwrap();
        off.insert(&v6, &action(None)).unwrap();
        let used = off.usage(&v4).unwrap().expect("inserted");
        assert_eq!((used.packets, used.bytes), (0, 0));
        assert!(used.last_used_ns >= before && used.last_used_ns <= now_ns());
        // A third direction does not fit in a map of two.
        let third = key(v4.src, v4.dst, 2);
        assert!(matches!(
            off.insert(&third, &action(None)),
            Err(OffloadError::Full(2))
        ));
        // Replacing an existing one does.
        off.insert(&v6, &action(None)).unwrap();
        off.remove(&v4).unwrap();
        off.remove(&v4).unwrap();
        assert_eq!(off.usage(&v4).unwrap(), None);
        assert!(off.usage(&v6).unwrap().is_some());
        // The programs' gate follows the count: one entry left (the replaced one counted once).
        assert!(off.is_active().unwrap());
        off.remove(&v6).unwrap();
        assert!(!off.is_active().unwrap());
        off.insert(&v4, &action(None)).unwrap();
        off.insert(&v6, &action(None)).unwrap();
        assert!(off.is_active().unwrap());
        off.clear().unwrap();
        assert!(!off.is_active().unwrap());
        assert_eq!(off.usage(&v4).unwrap(), None);
        assert_eq!(off.usage(&v6).unwrap(), None);
    }

    #[test]
    fn attach_failures_that_mean_no_support_say_so() {
        let err =
            |errno| attach_error(3, "add the bpf filter")(io::Error::from_raw_os_error(errno));
        for errno in [libc::EPERM, libc::ENOENT, libc::EOPNOTSUPP] {
            assert!(
                matches!(err(errno), OffloadError::Unsupported(_)),
                "{errno}"
            );
        }
        assert!(matches!(
            err(libc::ENODEV),
            OffloadError::Tc { ifindex: 3, .. }
        ));
    }

    #[test]
    fn offload_can_be_shared_with_the_offload_thread() {
        fn shared<T: Send + Sync>() {}
        shared::<Offload>();
    }

    #[test]
    fn a_refused_program_carries_the_verifier_log_tail() {
        let Some(_off) = offload(1) else { return };
        // Returns without setting R0.
        let err = load(prog::SOCKET_FILTER, "sluice_bad", &[asm::Insn::exit()]).unwrap_err();
        assert!(err.to_string().contains("R0 !read_ok"), "{err}");
    }

    #[test]
    fn detaching_from_an_interface_that_is_gone_is_ok() {
        let Some(off) = offload(4) else { return };
        // No interface has this index (indexes are allocated upwards from 1).
        off.detach(0x7fff_fff0).unwrap();
        let err = off.attach(0x7fff_fff0).unwrap_err();
        assert!(
            matches!(
                err,
                OffloadError::Tc {
                    ifindex: 0x7fff_fff0,
                    ..
                }
            ),
            "{err}"
        );
    }
}
