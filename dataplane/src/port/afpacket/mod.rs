//! AF_PACKET port: a `SOCK_RAW` packet socket bound to one interface (in the network namespace
//! the opening thread is in) with an mmap'ed RX ring (TPACKET_V2 by default, TPACKET_V3 on
//! request), a second one with a TX ring, and the virtio-net header on both
//! (`PACKET_VNET_HDR`), so that GSO
//! super-frames (up to 64 KiB) and checksum-partial frames pass through sluice unsegmented and
//! unchecksummed.
//!
//! # Ring layout
//!
//! Each ring has its socket and its `mmap`. The sending socket is apart because freeing a sent
//! frame's skb (`sock_wfree` -> `sock_def_write_space`) wakes whatever waits on its socket: on
//! the receiving socket that is the worker's epoll entry, woken (and its locks taken) for
//! every frame sent, about a tenth of a worker's time with 64-byte frames. The sending socket
//! is bound to nothing (each kick names the interface), so it receives nothing. Both sockets
//! get the same `PACKET_VERSION`, which decides the frame header of the rings:
//! `tpacket2_hdr` (32 bytes, `TPACKET2_HDRLEN` = 52 with
//! the `sockaddr_ll`) or `tpacket3_hdr` (48 bytes, `TPACKET3_HDRLEN` = 68). Offsets below are
//! from the start of a frame's header.
//!
//! RX, TPACKET_V2 ([`RxRing::V2`]): fixed-size frame slots, slot `i` at `i * frame_size` inside
//! its block (slots never straddle blocks). Each slot has its own `tp_status`: the kernel sets
//! `TP_STATUS_USER` and wakes `poll` as soon as it has written the frame, and takes the slot
//! back when user space writes `TP_STATUS_KERNEL`. Every slot must hold the largest frame, so
//! the ring holds few frames for its size; the RX half therefore holds at most half of the
//! slots at once (a batch is cut short), leaving the kernel room for a burst while the pipeline
//! works.
//!
//! RX, V2 with long-frame buffers ([`AfPacketConfig::rx_long_buffers`], sluiced's default via
//! [`mixed_rx`]): the slots are small (2 KiB), so the same memory holds many small frames, and
//! `PACKET_COPY_THRESH` is on: for a frame longer than a slot the kernel writes what fits,
//! sets `TP_STATUS_COPY` and queues the whole frame (a clone of the skb, no copy) on the
//! socket's receive queue, in slot order. When the walk reaches such a slot, the RX half
//! receives the frame with one `recv` into a buffer of its own (`long`); a batch stops at a
//! long frame when its buffers are used up. A GSO super-frame then costs a `recv` instead of
//! the ring's copy, and a 64-byte frame 2 KiB of ring instead of 68 KiB.
//!
//! RX, TPACKET_V3 ([`RxRing::V3`]): variable-size frames packed into blocks. Each block starts
//! with a `tpacket_block_desc` (`block_status`, `num_pkts`, `offset_to_first_pkt`); frames are
//! chained by `tp_next_offset`. The kernel hands a whole block to user space (`TP_STATUS_USER`)
//! when it is full or when the retire timer fires, and takes it back when user space writes
//! `TP_STATUS_KERNEL`: under light load every frame waits for the timer.
//!
//! For `SOCK_RAW` both versions place the frame at
//! `tp_mac = TPACKET_ALIGN(HDRLEN + max(maclen, 16)) + reserve + vnet_hdr_len - maclen`
//! and write the virtio-net header immediately in front of it, at `tp_mac - 10`
//! (`tpacket_rcv`: `virtio_net_hdr_from_skb(skb, h.raw + macoff - sizeof(struct
//! virtio_net_hdr), ...)`, the same call for V2 and V3). `PACKET_RESERVE` ([`RX_RESERVE`])
//! widens the gap between the `sockaddr_ll` that follows the header and the frame, which is the
//! headroom the pipeline gets; it is chosen so that the network header lands on a 16-byte
//! boundary (with either header, as `TPACKET_ALIGN(HDRLEN + 16)` is 80 for V2 and 96 for V3).
//!
//! TX: fixed-size frames. Without `PACKET_TX_HAS_OFF` the kernel reads data at
//! `HDRLEN - sizeof(sockaddr_ll)` (32 for V2, 48 for V3), and with `PACKET_VNET_HDR` that data
//! begins with the 10-byte virtio-net header followed by the Ethernet frame; `tp_len` counts both
//! (`tpacket_snd`, `tpacket_parse_header`). The status and length words sit where the socket's
//! header version puts them (`TxLayout`). For V3 the TX ring request must have
//! `tp_retire_blk_tov`, `tp_sizeof_priv` and `tp_feature_req_word` zero and `tp_next_offset` of
//! every frame must stay 0. One `sendto(fd, NULL, 0, MSG_DONTWAIT, interface)` per
//! [`flush`](crate::port::TxPort::flush) transmits every frame marked `TP_STATUS_SEND_REQUEST`; the kernel
//! sets it back to `TP_STATUS_AVAILABLE` when the skb is freed. `PACKET_LOSS` makes the kernel
//! skip (rather than stall on) a frame it rejects.
//!
//! A frame longer than a TX slot (sluiced's slots are 2 KiB) is sent with `sendmsg` on the
//! receiving socket (`Direct`), after the marked slots were kicked: a socket with a TX ring
//! sends only the ring's frames, whatever `sendmsg` is given, and the receiving one has none.
//! A port is thus two sockets, as many as before the sending socket was split off, and
//! closing it waits for as many RCU grace periods.
//!
//! # V2 or V3
//!
//! V2 is the default: a frame is visible (and `poll` wakes) as soon as the kernel wrote it, which
//! request/response traffic needs. V3 packs frames back to back, so a 64 KiB GSO super-frame and
//! a 60-byte ARP each take what they need and a ring of the same size absorbs far more small
//! frames, but a block is handed over only when full or when the retire timer
//! (`RxRing::V3 { retire_ms }`) fires, at least 1 ms: fine for bulk traffic, not for latency.
//!
//! # VLAN tags
//!
//! The kernel strips a received 802.1Q tag into metadata before packet taps see the frame
//! (`skb_vlan_untag`) and reports it in the frame header (`tp_vlan_tci`/`tp_vlan_tpid` for V2,
//! `hv1.tp_vlan_tci`/`hv1.tp_vlan_tpid` for V3) with `TP_STATUS_VLAN_VALID`. The RX half writes
//! it back into the frame (using 4 bytes of the reserve) and shifts the offload offsets, so
//! frames are seen as they were on the wire.
//!
//! # Where things are
//!
//! `ring` owns the mapping and all the unsafe code that touches it, behind a safe slot API;
//! `v2`, `v3` and `tx` are the TPACKET slot protocols on top of it; `rx` turns a ring frame
//! into a pipeline frame; `socket` is the life cycle (socket, options, rings, bind, fanout)
//! and the few socket calls of the halves; `config` the geometry, defaults and errors.

mod config;
mod long;
#[allow(unsafe_code)]
mod ring;
mod rx;
#[allow(unsafe_code)]
mod socket;
mod tx;
mod v2;
mod v3;

pub use config::{
    max_tx_frame, mixed_rx, v2_geometry, AfPacketConfig, AfPacketError, RxRing, Step,
    DEFAULT_RX_V2, DEFAULT_RX_V3, LONG_BUF, RX_RESERVE, SMALL_SLOT,
};
pub use rx::AfPacketRx;
pub use socket::{interface_index, open, prepare, Prepared};
pub use tx::AfPacketTx;

#[cfg(test)]
mod tests;
