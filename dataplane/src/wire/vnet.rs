//! The virtio-net header (`struct virtio_net_hdr`, 10 bytes) that AF_PACKET (`PACKET_VNET_HDR`)
//! and TAP (`IFF_VNET_HDR`) put in front of every frame, so that GSO super-frames and
//! checksum-partial frames cross the kernel boundary without being segmented or checksummed.
//!
//! Layout: `flags: u8, gso_type: u8, hdr_len: u16, gso_size: u16, csum_start: u16,
//! csum_offset: u16`. Both AF_PACKET and TAP (without `TUNSETVNETBE`/`TUNSETVNETLE`) use the
//! legacy virtio byte order, which is the host's native order: little-endian on x86. The 16-bit
//! fields are therefore read and written in native order.

use super::WireError;
use crate::frame::{GsoType, Offload};

/// Length of `struct virtio_net_hdr` (without the `num_buffers` field of the mergeable variant).
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum still has to be completed.
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified.
const F_DATA_VALID: u8 = 2;

const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
/// UFO (IPv4 fragmentation offload): removed from Linux, refused here.
const GSO_UDP: u8 = 3;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

const WHAT: &str = "virtio-net";

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

/// Decodes the virtio-net header at the start of `buf`.
///
/// Refuses unknown flag bits, unknown GSO types, UFO (`VIRTIO_NET_HDR_GSO_UDP`, which sluice
/// cannot express) and an ECN bit on a non-GSO frame, so that every accepted header round-trips
/// through [`write_vnet`] byte for byte.
pub fn read_vnet(buf: &[u8]) -> Result<Offload, WireError> {
    if buf.len() < VNET_HDR_LEN {
        return Err(WireError::Truncated(WHAT));
    }
    let flags = buf[0];
    if flags & !(F_NEEDS_CSUM | F_DATA_VALID) != 0 {
        return Err(WireError::Malformed(WHAT));
    }
    let gso_ecn = buf[1] & GSO_ECN != 0;
    let gso = match buf[1] & !GSO_ECN {
        GSO_NONE if !gso_ecn => GsoType::None,
        GSO_TCPV4 => GsoType::TcpV4,
        GSO_TCPV6 => GsoType::TcpV6,
        GSO_UDP_L4 => GsoType::UdpL4,
        GSO_UDP => return Err(WireError::Malformed(WHAT)),
        _ => return Err(WireError::Malformed(WHAT)),
    };
    Ok(Offload {
        gso,
        gso_ecn,
        hdr_len: u16_at(buf, 2),
        gso_size: u16_at(buf, 4),
        csum_partial: flags & F_NEEDS_CSUM != 0,
        csum_start: u16_at(buf, 6),
        csum_offset: u16_at(buf, 8),
        data_valid: flags & F_DATA_VALID != 0,
    })
}

/// Encodes `off` as a virtio-net header into the first [`VNET_HDR_LEN`] bytes of `buf`.
///
/// Fails when `buf` is too short, when `off` sets the ECN bit without GSO, or for a tunnelled
/// super-frame (the header cannot carry those).
pub fn write_vnet(off: &Offload, buf: &mut [u8]) -> Result<(), WireError> {
    let Some(out) = buf.get_mut(..VNET_HDR_LEN) else {
        return Err(WireError::Truncated(WHAT));
    };
    let gso_type = match off.gso {
        GsoType::None if off.gso_ecn => return Err(WireError::Malformed(WHAT)),
        GsoType::None => GSO_NONE,
        GsoType::TcpV4 => GSO_TCPV4,
        GsoType::TcpV6 => GSO_TCPV6,
        GsoType::UdpL4 => GSO_UDP_L4,
        // The 10-byte header cannot say where the inner headers are.
        GsoType::TcpV4Vxlan | GsoType::TcpV6Vxlan | GsoType::UdpL4Vxlan => {
            return Err(WireError::Malformed(WHAT))
        }
    };
    let mut flags = 0;
    if off.csum_partial {
        flags |= F_NEEDS_CSUM;
    }
    if off.data_valid {
        flags |= F_DATA_VALID;
    }
    out[0] = flags;
    out[1] = gso_type | if off.gso_ecn { GSO_ECN } else { 0 };
    out[2..4].copy_from_slice(&off.hdr_len.to_ne_bytes());
    out[4..6].copy_from_slice(&off.gso_size.to_ne_bytes());
    out[6..8].copy_from_slice(&off.csum_start.to_ne_bytes());
    out[8..10].copy_from_slice(&off.csum_offset.to_ne_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    #[cfg(target_endian = "little")]
    fn decodes_a_kernel_tcp_gso_header() {
        // What the kernel writes for a checksum-partial TCP/IPv4 super-frame with MSS 1448:
        // csum_start 34 (14 + 20), csum_offset 16 (TCP checksum field), hdr_len 66.
        let b = [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0];
        let off = read_vnet(&b).unwrap();
        assert_eq!(
            off,
            Offload {
                gso: GsoType::TcpV4,
                gso_ecn: false,
                gso_size: 1448,
                hdr_len: 66,
                csum_partial: true,
                csum_start: 34,
                csum_offset: 16,
                data_valid: false,
            }
        );
        let mut out = [0xffu8; 12];
        write_vnet(&off, &mut out).unwrap();
        assert_eq!(&out[..10], &b);
        assert_eq!(&out[10..], &[0xff, 0xff], "writes exactly 10 bytes");
    }

    #[test]
    fn refuses_bad_headers() {
        assert_eq!(read_vnet(&[0; 9]), Err(WireError::Truncated(WHAT)));
        let mut b = [0u8; 10];
        assert_eq!(read_vnet(&b), Ok(Offload::default()));
        b[1] = GSO_UDP;
        assert_eq!(read_vnet(&b), Err(WireError::Malformed(WHAT)));
        b[1] = 2;
        assert!(read_vnet(&b).is_err());
        b[1] = GSO_ECN;
        assert!(read_vnet(&b).is_err(), "ECN without GSO");
        b[1] = GSO_TCPV6 | GSO_ECN;
        assert_eq!(read_vnet(&b).unwrap().gso, GsoType::TcpV6);
        b[0] = 4;
        assert!(read_vnet(&b).is_err(), "unknown flag");
        let off = Offload {
            gso_ecn: true,
            ..Offload::default()
        };
        assert!(write_vnet(&off, &mut [0; 10]).is_err());
        let tunnel = Offload {
            gso: GsoType::TcpV4Vxlan,
            ..Offload::default()
        };
        assert!(write_vnet(&tunnel, &mut [0; 10]).is_err(), "tunnel GSO");
        let tunnel6 = Offload {
            gso: GsoType::TcpV6Vxlan,
            ..Offload::default()
        };
        assert!(write_vnet(&tunnel6, &mut [0; 10]).is_err(), "tunnel GSO");
        assert!(write_vnet(&Offload::default(), &mut [0; 9]).is_err());
    }

    fn arb_offload() -> impl Strategy<Value = Offload> {
        (
            prop_oneof![
                Just(GsoType::None),
                Just(GsoType::TcpV4),
                Just(GsoType::TcpV6),
                Just(GsoType::UdpL4)
            ],
            any::<bool>(),
            any::<[u16; 4]>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(gso, ecn, f, csum_partial, data_valid)| Offload {
                gso,
                gso_ecn: ecn && gso != GsoType::None,
                gso_size: f[0],
                hdr_len: f[1],
                csum_partial,
                csum_start: f[2],
                csum_offset: f[3],
                data_valid,
            })
    }

    proptest! {
        #[test]
        fn offload_round_trips(off in arb_offload()) {
            let mut b = [0u8; VNET_HDR_LEN];
            write_vnet(&off, &mut b).unwrap();
            prop_assert_eq!(read_vnet(&b), Ok(off));
        }

        #[test]
        fn accepted_bytes_round_trip(b in any::<[u8; 10]>()) {
            if let Ok(off) = read_vnet(&b) {
                let mut out = [0u8; VNET_HDR_LEN];
                write_vnet(&off, &mut out).unwrap();
                prop_assert_eq!(out, b);
            }
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..16), off in arb_offload()) {
            let _ = read_vnet(&b);
            let mut out = b.clone();
            let _ = write_vnet(&off, &mut out);
        }
    }
}
