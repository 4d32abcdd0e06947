//! Overlay flows in the kernel: a flow between a local overlay endpoint and a remote one is
//! offloaded as an encapsulating direction (the endpoint's frames wrapped in VXLAN to the remote
//! VTEP, out of the uplink) and a decapsulating one (the remote endpoint's VXLAN frames arriving
//! on the uplink, from that VTEP with that VNI, unwrapped to the endpoint). Built from an outer
//! header the userspace path just wrote, so the kernel sends what userspace would have sent.

use sluice_offload::{
    DecapAction, DecapKey, EncapAction, FlowAction, FlowKey, FlowUsage, Offload, OffloadError,
    Vxlan, VXLAN_OVERHEAD_V4,
};

use super::thread::FlowTable;
use super::{Direction, FlowTuple, PortOut};
use crate::wire::vxlan::OuterV4;
use crate::wire::{ethernet, MacAddr};

/// How a direction crosses the overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// Wrapped in VXLAN (the action's MACs are the outer ones).
    Encap {
        /// The tunnel.
        vxlan: Vxlan,
        /// The outer UDP source port.
        udp_sport: u16,
    },
    /// Unwrapped (the key is the inner flow on the uplink, the action's MACs the inner ones).
    Decap(Vxlan),
}

/// A local overlay endpoint of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalEnd {
    /// Its port (MTU: its network's).
    pub port: PortOut,
    /// Its MAC.
    pub mac: MacAddr,
}

/// Both directions of the flow `tuple` (IPv4 or IPv6 inside the IPv4 tunnel) from local endpoint `local` to the remote endpoint
/// `remote_mac`, which userspace sent out of `uplink` with outer headers `outer`: the
/// encapsulating direction first. `None` when the endpoint's frames, wrapped, would not fit
/// the uplink's MTU (userspace then cuts super-frames smaller; the kernel keeps their size).
pub fn overlay<T: FlowTuple>(
    tuple: &T,
    local: LocalEnd,
    remote_mac: MacAddr,
    uplink: PortOut,
    outer: &OuterV4,
) -> Option<[Direction; 2]> {
    let wrapped = u32::from(local.port.mtu) + VXLAN_OVERHEAD_V4 - ethernet::HEADER_LEN as u32;
    if wrapped > u32::from(uplink.mtu) {
        return None;
    }
    let [out, back] = overlay_keys(tuple, local.port.ifindex, uplink.ifindex);
    let vxlan = Vxlan {
        local: outer.src,
        remote: outer.dst,
        vni: outer.vni,
    };
    let action = |egress: PortOut, dst: MacAddr, src: MacAddr| FlowAction {
        egress_ifindex: egress.ifindex,
        eth_src: src.0,
        eth_dst: dst.0,
        decrement_ttl: false,
        snat: None,
        dnat: None,
    };
    Some([
        Direction {
            key: out,
            action: action(uplink, outer.dst_mac, outer.src_mac),
            tunnel: Some(Tunnel::Encap {
                vxlan,
                udp_sport: outer.src_port,
            }),
        },
        Direction {
            key: back,
            action: action(local.port, local.mac, remote_mac),
            tunnel: Some(Tunnel::Decap(vxlan)),
        },
    ])
}

/// The keys of both directions of overlay flow `tuple` (sent by the endpoint on interface
/// `local`; answered through the uplink `uplink`): the encapsulating one first.
pub fn overlay_keys<T: FlowTuple>(tuple: &T, local: u32, uplink: u32) -> [FlowKey; 2] {
    [flow_key(tuple, local), flow_key(&tuple.reversed(), uplink)]
}

/// The key of flow direction `t` arriving on interface `ifindex` (0: a flow's tuple as a key,
/// for the pipeline's records of either family).
pub fn flow_key<T: FlowTuple>(t: &T, ifindex: u32) -> FlowKey {
    FlowKey {
        ifindex,
        src: t.src().0,
        dst: t.dst().0,
        proto: t.proto(),
        sport: t.src().1,
        dport: t.dst().1,
    }
}

/// Installs overlay direction `key`/`action` wrapped or unwrapped as `tunnel` says.
pub(super) fn insert_tunnel(
    k: &Offload,
    key: &FlowKey,
    a: &FlowAction,
    tunnel: Tunnel,
) -> Result<(), OffloadError> {
    match tunnel {
        Tunnel::Encap { vxlan, udp_sport } => {
            let wrap = EncapAction {
                egress_ifindex: a.egress_ifindex,
                eth_src: a.eth_src,
                eth_dst: a.eth_dst,
                tunnel: vxlan,
                udp_sport,
            };
            k.insert_encap(key, &wrap)
        }
        Tunnel::Decap(vxlan) => {
            let unwrap = DecapAction {
                egress_ifindex: a.egress_ifindex,
                eth_src: a.eth_src,
                eth_dst: a.eth_dst,
            };
            let key = DecapKey {
                inner: *key,
                tunnel: vxlan,
            };
            k.insert_decap(&key, &unwrap)
        }
    }
}

impl Direction {
    /// Installs this direction in `k`.
    pub(super) fn install<K: FlowTable>(&self, k: &K) -> Result<(), OffloadError> {
        match self.tunnel {
            None => k.insert(&self.key, &self.action),
            Some(t) => k.insert_tunnel(&self.key, &self.action, t),
        }
    }

    /// What this direction forwarded in the kernel, None when it is not there.
    pub(super) fn usage<K: FlowTable>(&self, k: &K) -> Result<Option<FlowUsage>, OffloadError> {
        match self.tunnel {
            Some(Tunnel::Decap(vxlan)) => k.decap_usage(&self.decap_key(vxlan)),
            _ => k.usage(&self.key),
        }
    }

    /// Removes this direction from `k` (absent is Ok).
    pub(super) fn uninstall<K: FlowTable>(&self, k: &K) -> Result<(), OffloadError> {
        match self.tunnel {
            Some(Tunnel::Decap(vxlan)) => k.remove_decap(&self.decap_key(vxlan)),
            _ => k.remove(&self.key),
        }
    }

    fn decap_key(&self, vxlan: Vxlan) -> DecapKey {
        DecapKey {
            inner: self.key,
            tunnel: vxlan,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::L4Proto;
    use crate::nat::Tuple;
    use std::net::Ipv4Addr;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 3]);

    fn outer() -> OuterV4 {
        OuterV4 {
            dst_mac: MacAddr([2, 0, 0, 0, 9, 2]),
            src_mac: MacAddr([2, 0, 0, 0, 9, 1]),
            src: Ipv4Addr::new(192, 168, 1, 1),
            dst: Ipv4Addr::new(192, 168, 1, 2),
            src_port: 50_123,
            vni: 4096,
        }
    }

    fn tuple() -> Tuple {
        Tuple {
            proto: L4Proto::Tcp,
            src: Ipv4Addr::new(10, 20, 0, 2),
            src_port: 40_000,
            dst: Ipv4Addr::new(10, 20, 0, 3),
            dst_port: 5201,
        }
    }

    fn local(mtu: u16) -> LocalEnd {
        LocalEnd {
            port: PortOut { ifindex: 7, mtu },
            mac: A,
        }
    }

    const UPLINK: PortOut = PortOut {
        ifindex: 2,
        mtu: 1500,
    };

    #[test]
    fn an_overlay_flow_is_wrapped_out_of_the_uplink_and_unwrapped_back_to_the_endpoint() {
        let [out, back] = overlay(&tuple(), local(1450), B, UPLINK, &outer()).unwrap();
        let vxlan = Vxlan {
            local: Ipv4Addr::new(192, 168, 1, 1),
            remote: Ipv4Addr::new(192, 168, 1, 2),
            vni: 4096,
        };
        assert_eq!(
            (out.key.ifindex, out.key.sport, out.key.dport, out.key.proto),
            (7, 40_000, 5201, 6)
        );
        assert_eq!(out.key.src, std::net::IpAddr::from(tuple().src));
        assert_eq!(out.action.egress_ifindex, 2);
        assert_eq!(
            (out.action.eth_dst, out.action.eth_src),
            ([2, 0, 0, 0, 9, 2], [2, 0, 0, 0, 9, 1])
        );
        assert_eq!(
            out.tunnel,
            Some(Tunnel::Encap {
                vxlan,
                udp_sport: 50_123
            })
        );
        assert!(!out.action.decrement_ttl && out.action.snat.is_none());
        assert_eq!(
            (back.key.ifindex, back.key.sport, back.key.dport),
            (2, 5201, 40_000)
        );
        assert_eq!(back.key.src, std::net::IpAddr::from(tuple().dst));
        assert_eq!(back.action.egress_ifindex, 7);
        assert_eq!((back.action.eth_dst, back.action.eth_src), (A.0, B.0));
        assert_eq!(back.tunnel, Some(Tunnel::Decap(vxlan)));
    }

    /// A table that records which of its calls each direction made.
    #[derive(Default)]
    struct Calls(std::cell::RefCell<Vec<String>>);

    impl Calls {
        fn log(&self, what: String) -> Result<(), OffloadError> {
            self.0.borrow_mut().push(what);
            Ok(())
        }
    }

    impl FlowTable for Calls {
        fn insert(&self, key: &FlowKey, _: &FlowAction) -> Result<(), OffloadError> {
            self.log(format!("insert {}", key.ifindex))
        }
        fn remove(&self, key: &FlowKey) -> Result<(), OffloadError> {
            self.log(format!("remove {}", key.ifindex))
        }
        fn usage(&self, key: &FlowKey) -> Result<Option<FlowUsage>, OffloadError> {
            self.log(format!("usage {}", key.ifindex)).map(|()| None)
        }
        fn clear(&self) -> Result<(), OffloadError> {
            self.log("clear".into())
        }
        fn insert_tunnel(
            &self,
            k: &FlowKey,
            _: &FlowAction,
            t: Tunnel,
        ) -> Result<(), OffloadError> {
            let kind = if matches!(t, Tunnel::Encap { .. }) {
                "encap"
            } else {
                "decap"
            };
            self.log(format!("{kind} {}", k.ifindex))
        }
        fn remove_decap(&self, key: &DecapKey) -> Result<(), OffloadError> {
            self.log(format!(
                "remove decap {} vni {}",
                key.inner.ifindex, key.tunnel.vni
            ))
        }
        fn decap_usage(&self, key: &DecapKey) -> Result<Option<FlowUsage>, OffloadError> {
            self.log(format!("usage decap {}", key.inner.ifindex))
                .map(|()| None)
        }
    }

    #[test]
    fn directions_install_count_and_remove_themselves_by_kind() {
        let [out, back] = overlay(&tuple(), local(1450), B, UPLINK, &outer()).unwrap();
        let plain = Direction {
            tunnel: None,
            ..out
        };
        let t = Calls::default();
        for d in [out, back, plain] {
            d.install(&t).unwrap();
            d.usage(&t).unwrap();
            d.uninstall(&t).unwrap();
        }
        let want = [
            "encap 7",
            "usage 7",
            "remove 7",
            "decap 2",
            "usage decap 2",
            "remove decap 2 vni 4096",
            "insert 7",
            "usage 7",
            "remove 7",
        ];
        assert_eq!(*t.0.borrow(), want);
    }

    #[test]
    fn an_endpoint_mtu_that_does_not_fit_once_wrapped_stays_in_userspace() {
        assert!(overlay(&tuple(), local(1464), B, UPLINK, &outer()).is_some());
        assert!(overlay(&tuple(), local(1465), B, UPLINK, &outer()).is_none());
        assert!(overlay(&tuple(), local(1500), B, UPLINK, &outer()).is_none());
    }

    #[test]
    fn an_ipv6_flow_inside_the_tunnel_has_ipv6_keys() {
        let t6 = crate::nat::v6::Tuple6 {
            proto: L4Proto::Udp,
            src: "fd00:20::2".parse().unwrap(),
            src_port: 40_000,
            dst: "fd00:20::3".parse().unwrap(),
            dst_port: 53,
        };
        let [out, back] = overlay(&t6, local(1450), B, UPLINK, &outer()).unwrap();
        assert_eq!((out.key.src, out.key.dst), (t6.src.into(), t6.dst.into()));
        assert_eq!(
            (out.key.ifindex, out.key.proto, out.key.sport),
            (7, 17, 40_000)
        );
        assert_eq!((back.key.src, back.key.dst), (t6.dst.into(), t6.src.into()));
        assert_eq!(
            (back.key.ifindex, back.key.sport, back.key.dport),
            (2, 53, 40_000)
        );
        assert!(matches!(back.tunnel, Some(Tunnel::Decap(_))));
        assert_eq!(overlay_keys(&t6, 7, 2), [out.key, back.key]);
        assert_eq!(
            flow_key(&t6, 0),
            FlowKey {
                ifindex: 0,
                ..out.key
            }
        );
    }
}
