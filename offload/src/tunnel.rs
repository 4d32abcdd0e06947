//! Overlay (VXLAN over IPv4) flows in the kernel: an endpoint's frames to a remote endpoint are
//! wrapped and sent out of the uplink ([`EncapAction`], keyed like any flow on the endpoint's
//! interface), and the remote endpoint's VXLAN frames arriving on the uplink are unwrapped and
//! sent to the endpoint ([`DecapKey`]: the inner flow, its VNI and both VTEPs). Both kinds live
//! in the one flow map (a decapsulation key has its own `family` tag), so the socket filter
//! drops exactly what the TC program forwards on the uplink too.

use std::net::{IpAddr, Ipv4Addr};

use crate::layout::{key, value, RawKey, RawValue, FAMILY_VXLAN4};
use crate::{now_ns, FlowAction, FlowKey, FlowUsage, Offload, OffloadError};

/// `family` of a VXLAN decapsulation key of an IPv6 inner flow (an IPv6 frame inside VXLAN
/// over IPv4 arriving on the uplink): `src` and `dst` hold the inner addresses whole and `vni`
/// the VXLAN header's VNI word, so two overlays whose IPv6 subnets overlap keep their own
/// entries; both VTEPs are in the entry's value ([`decap_value`]), where the programs check
/// them (and the VNI again) after the lookup.
pub(crate) const FAMILY_VXLAN6: u8 = 0x46;

/// The VXLAN UDP port (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;
/// Bytes VXLAN over IPv4 adds: outer Ethernet, IPv4, UDP and VXLAN headers.
pub const VXLAN_OVERHEAD_V4: u32 = 50;

/// One VXLAN tunnel between this host's VTEP and a remote one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vxlan {
    /// Our VTEP (the uplink's address): the outer source of what we send.
    pub local: Ipv4Addr,
    /// The remote host's VTEP: the outer destination of what we send.
    pub remote: Ipv4Addr,
    /// The 24-bit network identifier.
    pub vni: u32,
}

/// Wrap a flow's frames in VXLAN and send them out of the uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncapAction {
    /// The uplink.
    pub egress_ifindex: u32,
    /// Outer source MAC (the uplink's).
    pub eth_src: [u8; 6],
    /// Outer destination MAC (the underlay next hop's).
    pub eth_dst: [u8; 6],
    /// The tunnel.
    pub tunnel: Vxlan,
    /// The outer UDP source port (from the inner flow, as the userspace path picks it).
    pub udp_sport: u16,
}

/// The reverse direction: a remote endpoint's frames of a flow, arriving in VXLAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecapKey {
    /// The inner flow, `ifindex` the uplink's; IPv4 or IPv6.
    pub inner: FlowKey,
    /// The tunnel as we send on it: `remote` must be the outer source, `local` the outer
    /// destination, and `vni` the frame's VNI.
    pub tunnel: Vxlan,
}

/// Strip the outer headers and send the inner frame to the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecapAction {
    /// The endpoint's host-side interface.
    pub egress_ifindex: u32,
    /// Inner source MAC written.
    pub eth_src: [u8; 6],
    /// Inner destination MAC written.
    pub eth_dst: [u8; 6],
}

/// The outer IPv4, UDP and VXLAN headers of `a`, lengths and IPv4 checksum left zero (the
/// program writes them per frame). UDP checksum zero, as Linux's vxlan sends over IPv4.
fn outer_template(a: &EncapAction) -> [u8; value::OUTER_LEN] {
    let mut h = tunnel_words(a.tunnel.local, a.tunnel.remote, a.tunnel.vni);
    h[0] = 0x45;
    h[8] = 64;
    h[9] = 17;
    h[20..22].copy_from_slice(&a.udp_sport.to_be_bytes());
    h[22..24].copy_from_slice(&VXLAN_PORT.to_be_bytes());
    h[28] = 0x08;
    h
}

/// The outer headers' tunnel words where a VXLAN frame carries them: IPv4 source at
/// [`OUTER_SRC`], destination at [`OUTER_DST`], the VXLAN header's VNI word at [`OUTER_VNI`];
/// every other byte zero.
fn tunnel_words(src: Ipv4Addr, dst: Ipv4Addr, vni: u32) -> [u8; value::OUTER_LEN] {
    let mut h = [0u8; value::OUTER_LEN];
    let at = |off: i16| off as usize;
    h[at(OUTER_SRC)..at(OUTER_SRC) + 4].copy_from_slice(&src.octets());
    h[at(OUTER_DST)..at(OUTER_DST) + 4].copy_from_slice(&dst.octets());
    h[at(OUTER_VNI)..at(OUTER_VNI) + 4].copy_from_slice(&(vni << 8).to_be_bytes());
    h
}

/// Offsets in the value's outer headers (at `value::OUTER`) of the outer IPv4 source and
/// destination and of the VXLAN header's VNI word.
pub(crate) const OUTER_SRC: i16 = 12;
pub(crate) const OUTER_DST: i16 = 16;
pub(crate) const OUTER_VNI: i16 = 32;

/// A value forwarding out of `egress` with MACs `macs` (source, destination) and `flags`.
fn value_with(
    egress: u32,
    (src, dst): ([u8; 6], [u8; 6]),
    flags: i32,
    now_ns: u64,
) -> [u8; value::SIZE] {
    let plain = FlowAction {
        egress_ifindex: egress,
        eth_src: src,
        eth_dst: dst,
        decrement_ttl: false,
        snat: None,
        dnat: None,
    };
    let mut b = RawValue::new(&plain, now_ns).to_bytes();
    let at = value::FLAGS as usize;
    b[at..at + 4].copy_from_slice(&(flags as u32).to_ne_bytes());
    b
}

/// The map value of an encapsulating entry.
pub(crate) fn encap_value(a: &EncapAction, now_ns: u64) -> [u8; value::SIZE] {
    let macs = (a.eth_src, a.eth_dst);
    let mut b = value_with(a.egress_ifindex, macs, value::ENCAP, now_ns);
    b[value::OUTER as usize..].copy_from_slice(&outer_template(a));
    b
}

/// The map value of a decapsulating entry of tunnel `t`: the outer headers' tunnel words a
/// frame must carry (source the remote VTEP, destination ours, the VNI; checked by the
/// programs for an IPv6 inner flow, whose key cannot hold them).
pub(crate) fn decap_value(a: &DecapAction, t: &Vxlan, now_ns: u64) -> [u8; value::SIZE] {
    let macs = (a.eth_src, a.eth_dst);
    let mut b = value_with(a.egress_ifindex, macs, value::DECAP, now_ns);
    b[value::OUTER as usize..].copy_from_slice(&tunnel_words(t.remote, t.local, t.vni));
    b
}

/// The map key of a decapsulating entry: for an IPv4 inner flow the inner addresses with the
/// VTEPs and VNI ([`FAMILY_VXLAN4`]), for an IPv6 one the inner addresses ([`FAMILY_VXLAN6`]).
pub(crate) fn decap_key(k: &DecapKey) -> Result<[u8; key::SIZE], OffloadError> {
    let mut b = RawKey::new(&k.inner).to_bytes();
    match (k.inner.src, k.inner.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            let (src, dst) = (key::SRC as usize, key::DST as usize);
            b[src + 4..src + 8].copy_from_slice(&k.tunnel.remote.octets());
            b[src + 8..src + 12].copy_from_slice(&(k.tunnel.vni << 8).to_be_bytes());
            b[dst + 4..dst + 8].copy_from_slice(&k.tunnel.local.octets());
            b[key::FAMILY as usize] = FAMILY_VXLAN4;
        }
        (IpAddr::V6(_), IpAddr::V6(_)) => {
            let vni = key::VNI as usize;
            b[vni..vni + 4].copy_from_slice(&(k.tunnel.vni << 8).to_be_bytes());
            b[key::FAMILY as usize] = FAMILY_VXLAN6;
        }
        _ => {
            return Err(OffloadError::Unsupported(
                "VXLAN decapsulation of a flow of two address families".into(),
            ))
        }
    }
    Ok(b)
}

impl Offload {
    /// Installs (or replaces) an encapsulating direction: frames of `key` (arriving on an
    /// overlay endpoint's interface) leave wrapped in VXLAN out of the uplink.
    pub fn insert_encap(&self, key: &FlowKey, action: &EncapAction) -> Result<(), OffloadError> {
        let k = RawKey::new(key).to_bytes();
        self.update(&k, &encap_value(action, now_ns()))
    }

    /// Installs (or replaces) a decapsulating direction on the uplink.
    pub fn insert_decap(&self, key: &DecapKey, action: &DecapAction) -> Result<(), OffloadError> {
        self.update(
            &decap_key(key)?,
            &decap_value(action, &key.tunnel, now_ns()),
        )
    }

    /// Removes a decapsulating direction (absent is Ok).
    pub fn remove_decap(&self, key: &DecapKey) -> Result<(), OffloadError> {
        self.delete(&decap_key(key)?)
    }

    /// A decapsulating entry's counters, None when absent.
    pub fn decap_usage(&self, key: &DecapKey) -> Result<Option<FlowUsage>, OffloadError> {
        self.usage_of(&decap_key(key)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel() -> Vxlan {
        Vxlan {
            local: Ipv4Addr::new(192, 0, 2, 1),
            remote: Ipv4Addr::new(192, 0, 2, 2),
            vni: 0x12_3456,
        }
    }

    #[test]
    fn the_encap_value_carries_outer_macs_and_the_header_template() {
        let a = EncapAction {
            egress_ifindex: 9,
            eth_src: [2, 0, 0, 0, 0, 1],
            eth_dst: [2, 0, 0, 0, 0, 2],
            tunnel: tunnel(),
            udp_sport: 0xc001,
        };
        let b = encap_value(&a, 5);
        assert_eq!(&b[28..32], &8u32.to_ne_bytes());
        assert_eq!(&b[32..44], &[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        let want: [u8; 36] = [
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2, // IPv4
            0xc0, 0x01, 0x12, 0xb5, 0, 0, 0, 0, // UDP to 4789, checksum 0
            0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0, // VXLAN, I flag and VNI
        ];
        assert_eq!(&b[44..], &want);
    }

    #[test]
    fn a_decap_key_is_tagged_and_holds_vni_and_both_vteps() {
        let inner = FlowKey {
            ifindex: 3,
            src: Ipv4Addr::new(10, 20, 0, 3).into(),
            dst: Ipv4Addr::new(10, 20, 0, 2).into(),
            proto: 6,
            sport: 5201,
            dport: 40000,
        };
        let b = decap_key(&DecapKey {
            inner,
            tunnel: tunnel(),
        })
        .unwrap();
        let plain = RawKey::new(&inner).to_bytes();
        assert_eq!(&b[..8], &plain[..8]);
        assert_eq!(&b[8..16], &[192, 0, 2, 2, 0x12, 0x34, 0x56, 0]);
        assert_eq!(&b[20..28], &[10, 20, 0, 2, 192, 0, 2, 1]);
        assert_eq!(&b[36..41], &plain[36..41]);
        assert_eq!(b[41], FAMILY_VXLAN4);
        let v6 = DecapKey {
            inner: FlowKey {
                src: "fd00::1".parse().unwrap(),
                dst: "fd00::2".parse().unwrap(),
                ..inner
            },
            tunnel: tunnel(),
        };
        let b6 = decap_key(&v6).unwrap();
        assert_eq!(
            &b6[..key::FAMILY as usize],
            &RawKey::new(&v6.inner).to_bytes()[..41]
        );
        assert_eq!(b6[41], FAMILY_VXLAN6);
        assert_eq!(&b6[44..], &[0x12, 0x34, 0x56, 0]);
        assert_eq!(
            &b[44..],
            &[0; 4],
            "the VNI word only in a v6 decapsulating key"
        );
        // Another overlay's VNI: another entry.
        let other = DecapKey {
            tunnel: Vxlan { vni: 7, ..tunnel() },
            ..v6
        };
        assert_ne!(decap_key(&other).unwrap(), b6);
        let mixed = DecapKey {
            inner: FlowKey {
                src: "fd00::1".parse().unwrap(),
                ..inner
            },
            tunnel: tunnel(),
        };
        assert!(matches!(
            decap_key(&mixed),
            Err(OffloadError::Unsupported(_))
        ));
    }

    #[test]
    fn a_decap_value_holds_the_tunnel_a_frame_must_come_by() {
        let a = DecapAction {
            egress_ifindex: 4,
            eth_src: [2, 0, 0, 0, 0, 3],
            eth_dst: [2, 0, 0, 0, 0, 4],
        };
        let b = decap_value(&a, &tunnel(), 5);
        assert_eq!(&b[28..32], &16u32.to_ne_bytes());
        let outer = &b[value::OUTER as usize..];
        assert_eq!(&outer[12..20], &[192, 0, 2, 2, 192, 0, 2, 1]);
        assert_eq!(&outer[32..36], &[0x12, 0x34, 0x56, 0]);
        assert!(outer[..12].iter().chain(&outer[20..32]).all(|b| *b == 0));
    }
}
