//! The shortcut stage: the staged fast path. Before the batch runs, staging picks the frames
//! that will probably be routed and looks their flows up at once (`Conntrack::lookup_batch`,
//! misses overlapped); a staged plain frame (see `plain`) whose flow holds a shortcut of this
//! epoch for its ingress port is then rewritten at once and leaves, skipping every other
//! stage. `nat` calls [`BatchState::remember`] to cache a routed decision for later packets.
//! It drops nothing: any doubt sends the frame down the full path.

use parking_lot::MutexGuard;

use super::dataplane::Dataplane;
use super::flow::{self, FlowOf, Ipv4Info, L4Kind};
use super::plain::{self, Plain};
use super::route::Adjacency;
use super::state::BatchState;
use crate::batch::Batch;
use crate::frame::{Frame, GsoType, PortId, Verdict};
use crate::nat::{Conntrack, Hit, Probe, Shortcut};
use crate::tables::Tables;
use crate::wire::ethernet::{self, parse_l2, EthernetFrame, ETHERTYPE_IPV4};
use crate::wire::ipv4;
use crate::wire::MacAddr;

/// The staging pre-pass (when `wanted`): looks up at once the tuples of the frames that will
/// probably be routed, into `flows` and `hits` (one entry per frame). Returns the
/// conntrack guard (taken only then) and how many frames have a staged entry (0 when nothing
/// was staged).
pub(super) fn stage<'d>(
    dp: &'d Dataplane,
    wanted: bool,
    tables: &Tables,
    batch: &Batch<'_>,
    flows: &mut [Option<Staged>],
    hits: &mut [Option<Hit>],
) -> (Option<MutexGuard<'d, Conntrack>>, usize) {
    if !wanted {
        return (None, 0);
    }
    let frames = batch.frames();
    let n = frames.len().min(flows.len()).min(hits.len());
    let mut any = false;
    // The frames of a batch mostly come from one port: its rule is looked up once per run.
    let mut port: Option<(PortId, Option<RoutedFrom>)> = None;
    for (flow, f) in flows.iter_mut().zip(&frames[..n]) {
        let ingress = f.meta.ingress;
        let from = match port {
            Some((p, from)) if p == ingress => from,
            _ => {
                let from = RoutedFrom::of(tables, ingress);
                port = Some((ingress, from));
                from
            }
        };
        *flow = from.and_then(|from| staged(&from, f));
        any |= flow.is_some();
    }
    if !any {
        return (None, 0);
    }
    let ct = dp.conntrack.lock();
    let flows = &flows[..n];
    ct.lookup_batch(|i| flows[i].as_ref().map(|s| &s.probe), &mut hits[..n]);
    (Some(ct), n)
}

/// What NAT will probably look frame `f` (from a port whose routed frames `from` describes)
/// up by: the flow of an IPv4 packet (not an ICMP error) sent to the port's routed MAC. Cheap
/// checks only (the header checksum only of a plain packet): a wrong guess costs a wasted
/// lookup, never a wrong result, since a staged hit is used only for the very tuple it was
/// staged for.
#[inline(always)]
fn staged(from: &RoutedFrom, f: &Frame<'_>) -> Option<Staged> {
    let d = f.data();
    if let Some(p) = plain::parse(d) {
        // A plain frame holds a whole Ethernet header.
        let eth = EthernetFrame::new_unchecked(d);
        if eth.dst() != from.ours {
            return None;
        }
        return Some(Staged {
            probe: Probe::new(&p.tuple),
            plain: (p.ttl > 1 && from.shortcut_from(eth.src())).then_some(p),
        });
    }
    let l2 = parse_l2(d).ok()?;
    if l2.ethertype != ETHERTYPE_IPV4 || l2.dst != from.ours {
        return None;
    }
    let ip = flow::parse_ipv4_unverified(d, l2.l3_offset).ok()?;
    let flow = flow::flow_of(d, &ip).ok()?;
    (flow.kind != L4Kind::Error).then(|| Staged {
        probe: Probe::new(&flow.tuple),
        plain: None,
    })
}

/// Which source MACs a shortcut may serve on a port.
#[derive(Clone, Copy, Debug)]
enum ShortcutSource {
    /// Any: an uplink.
    Any,
    /// Only the endpoint's own.
    Only(MacAddr),
    /// None: a port of a network that is no endpoint (its frames feed learning).
    Never,
}

/// How the frames the full path routes from one port look, and which of them a shortcut may
/// serve.
#[derive(Clone, Copy, Debug)]
struct RoutedFrom {
    /// Their destination MAC: the port's network's gateway MAC, or the uplink's.
    ours: MacAddr,
    /// The source MACs a shortcut may serve.
    source: ShortcutSource,
}

impl RoutedFrom {
    /// The rule of port `ingress` (`None` for an unknown port or one with no routed frames).
    fn of(t: &Tables, ingress: PortId) -> Option<RoutedFrom> {
        let port = t.port(ingress)?;
        Some(match (port.network, port.endpoint) {
            (Some(net), endpoint) => RoutedFrom {
                ours: t.network(net)?.config.gateway_mac,
                source: endpoint
                    .map_or(ShortcutSource::Never, |(mac, _)| ShortcutSource::Only(mac)),
            },
            (None, _) => RoutedFrom {
                ours: t.uplink_on(ingress)?.mac,
                source: ShortcutSource::Any,
            },
        })
    }

    /// True when a shortcut may serve this port's routed frames sent from `src`.
    fn shortcut_from(&self, src: MacAddr) -> bool {
        match self.source {
            ShortcutSource::Any => true,
            ShortcutSource::Only(mac) => mac == src,
            ShortcutSource::Never => false,
        }
    }
}

/// What the staging pre-pass read from a frame that looks routed.
#[derive(Clone, Copy, Debug)]
pub(super) struct Staged {
    /// The tuple it is looked up by.
    pub(super) probe: Probe,
    /// Set when a shortcut may serve it: a plain packet (see `plain`) with a TTL above 1,
    /// from a source MAC its port's shortcuts serve.
    pub(super) plain: Option<Plain>,
}

/// True for the packets whose decision a shortcut may cache: untagged TCP or UDP without IPv4
/// options (later packets of the flow are served only when plain).
fn shortcut_shape(ip: &Ipv4Info, flow: &FlowOf) -> bool {
    ip.l3 == ethernet::HEADER_LEN
        && ip.hl == ipv4::MIN_HEADER_LEN
        && matches!(flow.kind, L4Kind::Tcp | L4Kind::Udp)
}

impl BatchState<'_> {
    /// The fast path: a frame that staging found plain (header checksum, TTL and Ethernet
    /// addresses checked there) and whose staged lookup hit a flow holding a shortcut of this
    /// epoch for its ingress port is checked for its length and rewritten as the flow's
    /// earlier packets were. `None` sends it down the full path, which checks everything again
    /// (and drops, or answers with ICMP, what fails here).
    #[inline(always)]
    pub(super) fn shortcut(&mut self, f: &mut Frame<'_>) -> Option<Verdict> {
        let (i, hits, flows) = (self.cur, self.staged_hits, self.staged_flows);
        let hit = hits.get(i)?.as_ref()?;
        let p = flows.get(i)?.as_ref()?.plain?;
        let (epoch, ingress) = (self.epoch, f.meta.ingress);
        let gso = f.meta.offload.gso != GsoType::None;
        let s = self
            .ct
            .as_mut()?
            .follow_shortcut(hit, p.tcp_flags, self.now, |s| {
                s.epoch == epoch && epoch != 0 && s.ingress == ingress && (gso || p.total <= s.mtu)
            })?;
        let partial = f.meta.offload.csum_partial;
        let d = f.data_mut();
        plain::rewrite(d, &hit.rewrite, partial);
        EthernetFrame::new_unchecked(d).set_addresses(&s.l2_out);
        f.meta.vlan = s.vlan;
        self.routed = true;
        Some(Verdict::Forward(s.egress))
    }

    /// Caches the decision just taken for `hit`'s direction when later packets can reuse it
    /// (see the module's "Shortcuts"): the frame arrived on an endpoint or an uplink, with the
    /// Ethernet addresses a shortcut checks (`RoutedFrom`).
    pub(super) fn remember(
        &mut self,
        f: &Frame<'_>,
        ip: &Ipv4Info,
        flow: &FlowOf,
        hit: &Hit,
        mtu: u16,
        adj: &Adjacency,
    ) {
        let ingress = f.meta.ingress;
        let Ok(l2) = parse_l2(f.data()) else {
            return;
        };
        let allowed = RoutedFrom::of(self.t, ingress)
            .is_some_and(|from| from.ours == l2.dst && from.shortcut_from(l2.src));
        if self.epoch == 0 || !shortcut_shape(ip, flow) || !allowed {
            return;
        }
        let l2_out = ethernet::addresses(adj.dst_mac, adj.src_mac);
        let epoch = self.epoch;
        self.ct().set_shortcut(
            hit,
            Shortcut {
                epoch,
                ingress,
                egress: adj.port,
                vlan: adj.vlan,
                mtu,
                l2_out,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Meta, PortId, HEADROOM};
    use crate::testkit::{self, Scenario as S, PORT_A, PORT_B, UPLINK};

    fn guess(t: &Tables, port: PortId, frame: &[u8]) -> Option<Probe> {
        let mut buf = vec![0u8; HEADROOM + frame.len()];
        buf[HEADROOM..].copy_from_slice(frame);
        let meta = Meta {
            ingress: port,
            ..Meta::default()
        };
        let f = Frame::new(&mut buf, HEADROOM, frame.len(), meta).unwrap();
        let from = RoutedFrom::of(t, port)?;
        staged(&from, &f).map(|s| s.probe)
    }

    #[test]
    fn staging_picks_frames_for_the_gateway_or_the_uplink() {
        let t = Tables::build(&S::new().config, None).unwrap();
        let tcp = testkit::tcp(S::A, 40000, S::REMOTE, 80, testkit::SYN, b"");
        let out = S::from_endpoint(S::A, &tcp);
        let expected = flow::flow_of(&out, &flow::parse_ipv4(&out, 14).unwrap());
        assert_eq!(
            guess(&t, PORT_A, &out),
            Some(Probe::new(&expected.unwrap().tuple))
        );
        let back = S::from_outside(&testkit::udp(S::REMOTE, 53, S::UP, 40000, b"x"));
        assert!(guess(&t, UPLINK, &back).is_some());
        // Bridged, ARP, ICMP errors, and a gateway MAC on a port of no network: not staged.
        let bridged = testkit::eth(S::mac(S::B), S::mac(S::A), 0x0800, &tcp);
        assert_eq!(guess(&t, PORT_A, &bridged), None);
        let arp = testkit::arp_request(S::mac(S::A), S::A, S::GW);
        assert_eq!(guess(&t, PORT_A, &arp), None);
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&testkit::ipv4(S::UP, S::REMOTE, 17, 64, &[0; 8]));
        let err = S::from_outside(&testkit::ipv4(S::REMOTE, S::UP, 1, 64, &icmp));
        assert_eq!(guess(&t, UPLINK, &err), None);
        assert_eq!(guess(&t, UPLINK, &out), None);
        assert_eq!(guess(&t, PORT_B, &back), None);
    }
}
