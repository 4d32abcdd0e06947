//! The bridge stage: a network's frames after classification. Learns source MACs (collected
//! for one write at batch end), hands frames for the gateway to the gateway stage (or answers
//! its ARP broadcasts), and forwards by FDB lookup or floods. Its drops: FDB full, spoofed MAC
//! (a source that is another port's static entry), hairpin, ICC denied.

use super::flow::Ipv4Info;
use super::state::BatchState;
use crate::bridge::{Learn, SourceCheck};
use crate::counters::DropReason as R;
use crate::counters::DropReason;
use crate::frame::{Frame, NetworkId, Verdict};
use crate::tables::{NetworkEntry, PortEntry};
use crate::wire::ethernet::{self, L2Header, ETHERTYPE_ARP, ETHERTYPE_IPV6};

/// FDB size from which prefetching pays: below it the table stays in the CPU caches.
const FDB_PREFETCH_FROM: usize = 16 * 1024;

impl<'t> BatchState<'t> {
    /// Prefetches the FDB line a bridged frame `f` (further on in the batch) will look its
    /// destination up in, when its network's FDB guard is the one held and the table is large.
    /// A guess from the raw header: a wrong one costs a wasted prefetch, never a wrong result.
    #[inline(always)]
    pub(super) fn prefetch_fdb(&self, f: &Frame<'_>) {
        let Some((held, fdb)) = &self.fdb else {
            return;
        };
        if fdb.len() < FDB_PREFETCH_FROM {
            return;
        }
        let Some(port) = self.t.port(f.meta.ingress) else {
            return;
        };
        if port.network != Some(*held) {
            return;
        }
        let Some((dst, tag)) = ethernet::peek_dst_vid(f.data()) else {
            return;
        };
        if dst.is_multicast() {
            return;
        }
        if let Some(vlan) = port.ingress_vlan(tag) {
            fdb.prefetch(vlan, dst);
        }
    }

    /// Bridges a classified frame of network `net` that arrived on `port`; `ip` is what
    /// classification parsed of an endpoint's frame to the gateway.
    pub(super) fn bridge(
        &mut self,
        f: &mut Frame<'_>,
        l2: &L2Header,
        port: &'t PortEntry,
        (net_id, net): (NetworkId, &'t NetworkEntry),
        ip: Option<Ipv4Info>,
    ) -> Result<Verdict, DropReason> {
        self.learn_source(f, l2, port, net_id, net)?;
        let (vlan, ingress) = (f.meta.vlan, f.meta.ingress);
        let cfg = &net.config;
        if vlan == cfg.vlan && !cfg.external_gateway {
            if l2.dst == cfg.gateway_mac {
                return self.gateway(f, l2, net, port, ip);
            }
            if l2.dst.is_broadcast() && l2.ethertype == ETHERTYPE_ARP {
                if let Some(v) = super::gateway::arp_for(f, l2, cfg.gateway_mac, cfg.gateway)? {
                    return Ok(v);
                }
            }
            if l2.dst.is_multicast() && l2.ethertype == ETHERTYPE_IPV6 {
                let overlay = self.t.overlays().of(net_id);
                if let Some(v) = super::ipv6::ndp_for(f, l2, net, overlay)? {
                    return Ok(v);
                }
            }
        }
        let overlay = self.t.overlays().of(net_id);
        if let Some(ov) = overlay {
            if let Some(v) = self.vxlan_egress(f, l2, net, ov)? {
                if let (true, Verdict::Forward(up)) = (self.offload, v) {
                    self.offer_overlay_out(f, port, up);
                }
                return Ok(v);
            }
        }
        if l2.dst.is_multicast() {
            return Ok(Verdict::Flood {
                network: net_id,
                vlan,
            });
        }
        match self.fdb(net_id, net).lookup(vlan, l2.dst) {
            Some(p) if p == ingress => {
                if cfg.hairpin {
                    Ok(Verdict::Forward(p))
                } else {
                    Err(R::Hairpin)
                }
            }
            Some(p) => {
                let both_endpoints =
                    port.is_endpoint() && self.t.port(p).is_some_and(PortEntry::is_endpoint);
                if !cfg.icc && both_endpoints {
                    return Err(R::IccDenied);
                }
                if self.offload && both_endpoints && overlay.is_none() {
                    self.offer_bridged(f, port, p, cfg.mtu);
                }
                Ok(Verdict::Forward(p))
            }
            None if overlay.is_some() => Err(R::VxlanUnknownDst),
            None => Ok(Verdict::Flood {
                network: net_id,
                vlan,
            }),
        }
    }

    /// Checks the frame's source MAC against the FDB and queues it for learning when new or
    /// moved.
    fn learn_source(
        &mut self,
        f: &Frame<'_>,
        l2: &L2Header,
        port: &PortEntry,
        net_id: NetworkId,
        net: &'t NetworkEntry,
    ) -> Result<(), DropReason> {
        let (vlan, ingress, now) = (f.meta.vlan, f.meta.ingress, self.now);
        // An endpoint's source MAC was just checked to be its own, which is a static FDB entry
        // on this port (never aged): learning could only answer `Known`, so it is skipped.
        let check = if port.endpoint.is_some() {
            SourceCheck::Known
        } else {
            self.fdb(net_id, net)
                .check_source(vlan, l2.src, ingress, now)
        };
        match check {
            SourceCheck::Known => Ok(()),
            SourceCheck::Learn => {
                let item = Learn {
                    vlan,
                    mac: l2.src,
                    port: ingress,
                };
                let _ = self.learn.try_push((net_id, item));
                Ok(())
            }
            SourceCheck::Full => Err(R::FdbFull),
            SourceCheck::StaticElsewhere => Err(R::SpoofedMac),
            SourceCheck::Group => Err(R::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::*;

    #[test]
    fn an_external_gateway_is_left_to_the_segment() {
        let mut s = S::new();
        s.config.networks[0].external_gateway = true;
        let mut w = worker_for(&s);
        let (v, _) = run_one(&mut w, PORT_A, &arp_request(S::mac(S::A), S::A, S::GW), T0);
        assert!(
            matches!(v, Verdict::Flood { .. }),
            "the ARP request goes to the segment's router, sluice does not answer: {v:?}"
        );
        let ping = S::from_endpoint(S::A, &icmp_echo(S::A, S::GW, true, 7, 1));
        let (v, _) = run_one(&mut w, PORT_A, &ping, T0);
        assert!(
            matches!(v, Verdict::Flood { .. }),
            "frames to the gateway MAC are bridged, not routed: {v:?}"
        );
    }

    #[test]
    fn endpoints_bridge_to_each_other_and_unknown_floods() {
        let s = S::new();
        let mut w = worker_for(&s);
        let f = bridged_a_to_b();
        let (v, out) = run_one(&mut w, PORT_A, &f, T0);
        assert_eq!(v, Verdict::Forward(PORT_B));
        assert_eq!(out, f);
        let unknown = eth(
            MacAddr([2, 9, 9, 9, 9, 9]),
            S::mac(S::A),
            0x0800,
            &udp(S::A, 1, S::B, 2, b"x"),
        );
        assert!(matches!(
            run_one(&mut w, PORT_A, &unknown, T0).0,
            Verdict::Flood { vlan: 0, .. }
        ));
        let bcast = arp_request(S::mac(S::A), S::A, S::B);
        assert!(matches!(
            run_one(&mut w, PORT_A, &bcast, T0).0,
            Verdict::Flood { .. }
        ));
    }

    #[test]
    fn icc_off_leaves_only_the_gateway() {
        let mut s = S::new();
        s.config.networks[0].icc = false;
        let mut w = worker_for(&s);
        let f = bridged_a_to_b();
        assert_eq!(
            run_one(&mut w, PORT_A, &f, T0).0,
            Verdict::Drop(R::IccDenied)
        );
        let routed = S::from_endpoint(S::A, &udp(S::A, 1, S::B, 2, b"x"));
        assert_eq!(
            run_one(&mut w, PORT_A, &routed, T0).0,
            Verdict::Drop(R::IccDenied)
        );
        let ping = S::from_endpoint(S::A, &icmp_echo(S::A, S::GW, true, 7, 1));
        assert_eq!(
            run_one(&mut w, PORT_A, &ping, T0).0,
            Verdict::Forward(PORT_A)
        );
        let tables = w.dataplane().tables();
        let flood: Vec<PortId> = tables
            .flood_targets(crate::frame::NetworkId(0), 0, PORT_A)
            .map(|(p, _)| p)
            .collect();
        assert_eq!(flood, vec![TRUNK]);
    }
}
