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
    let mut ct = dp.conntrack.lock();
    let flows = &flows[..n];
    ct.lookup_batch(|i| flows[i].as_ref().map(|s| &s.probe), &mut hits[..n]);
    // From here on, a staged miss needs a new lookup only if a flow was added for its tag.
    ct.mark_inserts();
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
pub(super) struct RoutedFrom {
    /// Their destination MAC: the port's network's gateway MAC, or the uplink's.
    pub(super) ours: MacAddr,
    /// The source MACs a shortcut may serve.
    source: ShortcutSource,
}

impl RoutedFrom {
    /// The rule of port `ingress` (`None` for an unknown port or one with no routed frames).
    #[inline(always)]
    pub(super) fn of(t: &Tables, ingress: PortId) -> Option<RoutedFrom> {
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
    pub(super) fn shortcut_from(&self, src: MacAddr) -> bool {
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
        if self.offload {
            self.offer_routed(hit, p.tcp_flags, f.len());
        }
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
    /// Ethernet addresses a shortcut checks (`RoutedFrom`). Inlined into its one caller, the
    /// NAT stage, as the flow's first packet takes this path.
    #[inline(always)]
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
    use crate::pipeline::tests::*;
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

    /// What a worker produced for a session: every frame's verdict and bytes, per batch, then the
    /// flows left and the drop counters.
    type Outcome = (Vec<Vec<(Verdict, Vec<u8>)>>, usize, Vec<u64>);

    /// Runs a session of mixed batches (new flows, a flow's first packet twice in one batch,
    /// replies, ICMP errors, published ports, hairpin, pings, bridged and bad frames) through a
    /// dataplane staging its lookups in every batch (`true`) or none.
    fn staged_session(staging: bool) -> Outcome {
        let s = S::new();
        let mut dp = Dataplane::new(&s.config).unwrap();
        dp.set_staging(staging);
        let mut w = dp.worker();
        learn_next_hop(&mut w);
        let syn = S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, SYN, b""));
        let query = S::from_endpoint(S::A, &udp(S::A, 5353, S::REMOTE, 53, b"query"));
        let mut bad_sum = syn.clone();
        bad_sum[24] ^= 0xff;
        let first = Frames::new()
            .push(PORT_A, &syn)
            .push(PORT_A, &syn)
            .push(PORT_A, &query)
            .push(
                PORT_A,
                &S::from_endpoint(S::A, &icmp_echo(S::A, S::REMOTE, true, 40001, 1)),
            )
            .push(
                PORT_A,
                &S::from_endpoint(S::A, &icmp_echo(S::A, S::GW, true, 7, 1)),
            )
            .push(PORT_A, &bridged_a_to_b())
            .push(PORT_A, &arp_request(S::mac(S::A), S::A, S::GW))
            .push(
                PORT_A,
                &S::from_endpoint(S::A, &tcp(S::A, 41000, S::UP, 8080, SYN, b"")),
            )
            .push(
                UPLINK,
                &S::from_outside(&tcp(S::REMOTE, 50000, S::UP, 8080, SYN, b"")),
            )
            .push(PORT_A, &bad_sum)
            .run(&mut w, T0);
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&first[2].1[14..14 + 28]);
        let c = crate::wire::checksum::internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let hairpin_port = tuple_of(&first[7].1).src_port;
        let query_port = tuple_of(&first[2].1).src_port;
        let second = Frames::new()
            .push(
                UPLINK,
                &S::from_outside(&tcp(S::REMOTE, 80, S::UP, 40000, SYN | ACK, b"")),
            )
            .push(
                UPLINK,
                &S::from_outside(&udp(S::REMOTE, 53, S::UP, query_port, b"answer")),
            )
            .push(
                UPLINK,
                &S::from_outside(&icmp_echo(S::REMOTE, S::UP, false, 40001, 1)),
            )
            .push(
                UPLINK,
                &S::from_outside(&ipv4(S::REMOTE, S::UP, 1, 64, &icmp)),
            )
            .push(
                PORT_B,
                &S::from_endpoint(S::B, &tcp(S::B, 80, S::REMOTE, 50000, SYN | ACK, b"")),
            )
            .push(
                PORT_B,
                &S::from_endpoint(S::B, &tcp(S::B, 80, S::GW, hairpin_port, SYN | ACK, b"")),
            )
            .push(
                UPLINK,
                &S::from_outside(&icmp_echo(S::REMOTE, S::UP, true, 1, 1)),
            )
            .push(
                UPLINK,
                &S::from_outside(&tcp(S::REMOTE, 50000, S::UP, 8081, SYN, b"")),
            )
            .run(&mut w, T0);
        let third = Frames::new()
            .push(
                PORT_A,
                &S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, ACK, b"")),
            )
            .push(
                PORT_A,
                &S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, 0x04, b"")),
            )
            .push(
                PORT_A,
                &S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, ACK, b"")),
            )
            .run(&mut w, T0);
        let drops = R::ALL.iter().map(|r| w.counters().drops(*r)).collect();
        let flows = w.dataplane().conntrack().len();
        (vec![first, second, third], flows, drops)
    }

    #[test]
    fn staged_lookups_change_nothing() {
        let staged = staged_session(true);
        let (batches, flows, _) = &staged;
        // The session exercises what it is meant to: a first packet twice in one batch, replies
        // and an ICMP error translated back, a bad checksum refused.
        assert_eq!(
            batches[0][..3].iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            [Verdict::Forward(UPLINK); 3]
        );
        assert_eq!(batches[0][9].0, Verdict::Drop(R::Malformed));
        assert!(batches[1][..4]
            .iter()
            .all(|(v, _)| *v == Verdict::Forward(PORT_A)));
        assert_eq!(*flows, 5);
        assert_eq!(staged, staged_session(false));
    }

    /// Sets the TTL of the IPv4 frame `f` (untagged) and recomputes its header checksum.
    fn with_ttl(mut f: Vec<u8>, ttl: u8) -> Vec<u8> {
        f[22] = ttl;
        f[24..26].fill(0);
        let c = crate::wire::checksum::internet_checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    }

    /// One step of a shortcut session.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// Adds frame `kind` (see `shortcut_frame`) in variant `variant` to the current batch.
        Frame(usize, usize),
        /// Runs the current batch.
        Flush,
        /// Applies configuration `n` of `shortcut_config`.
        Configure(usize),
    }

    /// The frames of a shortcut session: both directions of a NAPT TCP flow and of a UDP flow, a
    /// published port both ways, hairpin, and an ARP reply that may move the next hop; each in
    /// variants that a shortcut must not serve (TTL 1, bad header checksum, oversize for a small
    /// MTU, tagged, other source MAC, other port, FIN and RST, broadcast destination).
    fn shortcut_frame(kind: usize, variant: usize) -> (PortId, Vec<u8>) {
        let flags = match variant {
            7 => 0x01 | ACK,
            8 => 0x04,
            _ => ACK,
        };
        let payload = if variant == 3 {
            vec![7u8; 1000]
        } else {
            vec![7u8; 6]
        };
        let (port, frame) = match kind {
            0 => (
                PORT_A,
                S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, flags, &payload)),
            ),
            1 => (
                UPLINK,
                S::from_outside(&tcp(S::REMOTE, 80, S::UP, 40000, flags, &payload)),
            ),
            2 => (
                PORT_A,
                S::from_endpoint(S::A, &udp(S::A, 5353, S::REMOTE, 53, &payload)),
            ),
            3 => (
                UPLINK,
                S::from_outside(&udp(S::REMOTE, 53, S::UP, 5353, &payload)),
            ),
            4 => (
                UPLINK,
                S::from_outside(&tcp(S::REMOTE, 50000, S::UP, 8080, flags, &payload)),
            ),
            5 => (
                PORT_B,
                S::from_endpoint(S::B, &tcp(S::B, 80, S::REMOTE, 50000, flags, &payload)),
            ),
            6 => (
                PORT_A,
                S::from_endpoint(S::A, &tcp(S::A, 41000, S::UP, 8080, flags, &payload)),
            ),
            _ => {
                let mac = MacAddr([0x02, 0, 0, 0, 0, 0xf0 | (variant as u8 & 1)]);
                return (UPLINK, arp_reply(mac, S::HOP, S::UP_MAC, S::UP));
            }
        };
        match variant {
            1 => (port, with_ttl(frame, 1)),
            2 => {
                let mut f = frame;
                f[24] ^= 0x5a;
                (port, f)
            }
            4 => (port, tagged(&frame, 10)),
            5 => {
                let mut f = frame;
                f[11] ^= 0x01;
                (port, f)
            }
            6 => (if port == PORT_A { PORT_B } else { PORT_A }, frame),
            9 => {
                let mut f = frame;
                f[..6].copy_from_slice(&MacAddr::BROADCAST.0);
                (port, f)
            }
            _ => (port, frame),
        }
    }

    /// Configuration `n` of a shortcut session: the scenario, without published ports, with the
    /// network internal, or with a 576-byte uplink MTU.
    fn shortcut_config(n: usize) -> crate::config::Config {
        let mut c = S::new().config;
        match n % 4 {
            1 => c.forwards.clear(),
            2 => c.networks[0].internal = true,
            3 => {
                if let Some(u) = c.uplink.as_mut() {
                    u.mtu = 576;
                }
            }
            _ => {}
        }
        c
    }

    /// Runs `steps` through a dataplane staging its lookups in every batch (`true`: shortcuts are
    /// taken) or none, and returns what came out, the flows left, the drop counters and how many
    /// frames took a shortcut.
    fn shortcut_session(staging: bool, steps: &[Step]) -> (Outcome, u64) {
        let mut dp = Dataplane::new(&S::new().config).unwrap();
        dp.set_staging(staging);
        let mut w = dp.worker();
        learn_next_hop(&mut w);
        let mut out = Vec::new();
        let mut batch = Frames::new();
        let mut now = T0;
        for step in steps.iter().copied().chain([Step::Flush]) {
            match step {
                Step::Frame(kind, variant) => {
                    let (port, frame) = shortcut_frame(kind, variant);
                    batch.push(port, &frame);
                }
                Step::Flush => {
                    out.push(batch.run(&mut w, now));
                    batch = Frames::new();
                    now = Millis(now.0 + 300);
                }
                Step::Configure(n) => w.dataplane().apply(&shortcut_config(n)).unwrap(),
            }
        }
        let drops = R::ALL.iter().map(|r| w.counters().drops(*r)).collect();
        let flows = w.dataplane().conntrack().len();
        ((out, flows, drops), w.counters().shortcuts())
    }

    /// Batches of plain frames (variant 0) of the given kinds, each batch run in turn.
    fn plain_batches(batches: &[&[usize]]) -> Vec<Step> {
        batches
            .iter()
            .flat_map(|b| b.iter().map(|&k| Step::Frame(k, 0)).chain([Step::Flush]))
            .collect()
    }

    #[test]
    fn established_flows_take_their_shortcut_in_both_directions() {
        let steps = plain_batches(&[&[0, 4], &[1, 5], &[0, 1, 4, 5]]);
        let (fast, taken) = shortcut_session(true, &steps);
        let (full, never) = shortcut_session(false, &steps);
        // The first packet of each direction decides; every later one takes the shortcut.
        assert_eq!((taken, never), (4, 0));
        assert_eq!(fast, full);
        let last = &fast.0[2];
        assert_eq!(
            last.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            [
                Verdict::Forward(UPLINK),
                Verdict::Forward(PORT_A),
                Verdict::Forward(PORT_B),
                Verdict::Forward(UPLINK)
            ]
        );
        assert!(last.iter().all(|(_, f)| checksums_valid(f)));
        assert_eq!(&last[0].1[..6], &S::HOP_MAC.0, "to the next hop");
        assert_eq!(
            &last[2].1[..6],
            &S::mac(S::B).0,
            "to the published endpoint"
        );
    }

    #[test]
    fn batches_stage_after_a_batch_that_routed() {
        let s = S::new();
        let mut w = worker_for(&s);
        learn_next_hop(&mut w);
        let out = S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, ACK, b"x"));
        let bridged = bridged_a_to_b();
        let mut run = |frame: &[u8]| {
            Frames::new().push(PORT_A, frame).run(&mut w, T0);
            w.counters().shortcuts()
        };
        // The flow's first packet decides (the ARP batch before it routed nothing), the second
        // comes after a routed batch: staged, shortcut. After a bridged batch nothing is staged.
        assert_eq!(
            [run(&out), run(&out), run(&bridged), run(&out), run(&out)],
            [0, 1, 1, 1, 2]
        );
    }

    #[test]
    fn a_moved_next_hop_or_a_new_configuration_retires_shortcuts() {
        let mut steps = plain_batches(&[&[0], &[0, 7], &[0]]);
        steps.push(Step::Configure(2));
        steps.extend(plain_batches(&[&[0]]));
        let ((batches, _, _), taken) = shortcut_session(true, &steps);
        assert_eq!(taken, 1, "only the packet before the ARP reply");
        assert_eq!(
            &batches[2][0].1[..6],
            &[0x02, 0, 0, 0, 0, 0xf0],
            "the new next hop's MAC"
        );
        assert_eq!(batches[3][0].0, Verdict::Drop(R::NoRoute), "internal now");
    }

    proptest! {
        /// Shortcuts change nothing: any session of established and perturbed packets, ARP
        /// replies and configuration changes gives the same frames, verdicts, flows and counters
        /// with them as through the full pipeline alone.
        #[test]
        fn shortcuts_change_nothing(steps in proptest::collection::vec(
            prop_oneof![
                6 => (0usize..8, 0usize..10).prop_map(|(k, v)| Step::Frame(k, v)),
                2 => Just(Step::Flush),
                1 => (0usize..4).prop_map(Step::Configure),
            ],
            0..40,
        )) {
            let (fast, _) = shortcut_session(true, &steps);
            let (full, never) = shortcut_session(false, &steps);
            prop_assert_eq!(never, 0);
            prop_assert_eq!(fast, full);
        }
    }
}
