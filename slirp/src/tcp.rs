//! TCP, translated passt-style: the guest's connection is mapped straight onto a nonblocking
//! host socket. Guest data is written to the socket and acknowledged only for what the socket
//! took; the window advertised to the guest is the socket's free send buffer. Host data is
//! peeked (not read) from the socket, sent to the guest and discarded from the socket only
//! when the guest acknowledges it, so retransmissions need no buffer of our own.
#![forbid(unsafe_code)]

use std::io;
use std::net::IpAddr;

use sluice_dataplane::wire::{checksum, tcp, TcpPacket, IPPROTO_TCP};

use crate::counters::Drop;
use crate::frame::{self, ip_headers, Ends};

/// Where the payload of a segment without options starts in a frame between `ends`.
pub fn payload_at(ends: &Ends) -> usize {
    ends.l4_at() + tcp::MIN_HEADER_LEN
}
/// The window scale we announce (windows up to 8 MiB).
pub const OUR_WSCALE: u8 = 7;
/// Retransmission timeout towards the guest, in milliseconds.
pub const RTO_MS: u64 = 300;
/// The largest payload of one super-frame to the guest (IPv4 total length <= 65535; IPv6's
/// payload length leaves it the same room).
pub const MAX_TSO_PAYLOAD: usize = 65535 - 40;
/// How many times a SYN (to the guest) or an unanswered segment is sent before giving up.
pub const MAX_RETRIES: u32 = 8;
/// Guest data segments acknowledged by one ACK, as a receiver's delayed ACK does (at least
/// every second full-sized segment, RFC 5681); the engine acknowledges the rest at the end of
/// each batch of TAP frames ([`TcpConn::flush_ack`]), so no segment waits past its batch.
/// Measured (bench/RESULTS.md, wave 6): 2 cut the stack's CPU per 64 KiB by a quarter under
/// load; an ACK per segment, every third and every fourth were slower.
pub const ACK_EVERY: u32 = 2;

/// The operations the translation needs from the host socket (a fake one in tests).
pub trait HostSocket {
    /// Writes as much of `data` as the socket takes (`WouldBlock` when none).
    fn write(&mut self, data: &[u8]) -> io::Result<usize>;
    /// Copies the next not yet sent bytes (after the peek offset) without consuming them;
    /// `Ok(0)` at the end of the stream.
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Moves the peek offset back to the first unacknowledged byte.
    fn rewind(&mut self) -> io::Result<()>;
    /// Discards `n` bytes the guest acknowledged.
    fn consume(&mut self, n: usize) -> io::Result<()>;
    /// Free space in the send buffer, in bytes.
    fn send_space(&self) -> usize;
    /// What [`HostSocket::send_space`] is when nothing is queued.
    fn send_capacity(&self) -> usize;
    /// Sends a FIN to the host peer.
    fn shutdown_write(&mut self) -> io::Result<()>;
}

/// Where frames to the guest are built and sent.
pub trait GuestTx {
    /// The buffer to build the next frame in (at least [`crate::frame::MAX_FRAME`] bytes).
    fn buf(&mut self) -> &mut [u8];
    /// Sends the first `len` bytes of [`GuestTx::buf`].
    fn send(&mut self, len: usize);
    /// Whether [`GuestTx::send_tso`] may be used (a TAP with the virtio-net header).
    fn tso(&self) -> bool;
    /// Sends a TCP super-frame of `len` bytes between `ends` whose checksum field holds only the
    /// pseudo-header sum: the guest's kernel takes it as `gso_size`-byte segments and completes
    /// the checksum.
    fn send_tso(&mut self, len: usize, gso_size: u16, ends: &Ends);
}

/// A guest segment, borrowed from its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Source port (the guest's).
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags.
    pub flags: u8,
    /// Window (unscaled).
    pub window: u16,
    /// The MSS option.
    pub mss: Option<u16>,
    /// The window-scale option.
    pub wscale: Option<u8>,
    /// The payload.
    pub payload: &'a [u8],
}

impl Segment<'_> {
    /// True when all of `flags` are set.
    pub fn has(&self, flags: u8) -> bool {
        self.flags & flags == flags
    }
}

/// Parses the TCP part of a guest packet, checking the checksum when `verify` (not when the
/// guest's kernel left it partial for offload).
pub fn parse(l4: &[u8], src: IpAddr, dst: IpAddr, verify: bool) -> Result<Segment<'_>, Drop> {
    let p = TcpPacket::new_checked(l4).map_err(|_| Drop::Malformed)?;
    if verify && !frame::tcp_checksum_ok(&p, src, dst) {
        return Err(Drop::Malformed);
    }
    let (mut mss, mut wscale) = (None, None);
    let mut opts = p.options();
    while let Some((&kind, rest)) = opts.split_first() {
        match kind {
            0 => break,
            1 => opts = rest,
            _ => {
                let len = usize::from(*rest.first().ok_or(Drop::Malformed)?);
                if len < 2 || len > opts.len() {
                    return Err(Drop::Malformed);
                }
                match (kind, len) {
                    (2, 4) => mss = Some(u16::from_be_bytes([opts[2], opts[3]])),
                    (3, 3) => wscale = Some(opts[2].min(14)),
                    _ => {}
                }
                opts = &opts[len..];
            }
        }
    }
    Ok(Segment {
        src_port: p.src_port(),
        dst_port: p.dst_port(),
        seq: p.seq(),
        ack: p.ack(),
        flags: p.flags(),
        window: p.window(),
        mss,
        wscale,
        payload: &l4[p.header_len()..],
    })
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The guest sent SYN; the host socket is connecting.
    Connecting,
    /// A host-forward connection: we sent SYN to the guest.
    SynToGuest,
    /// Both ends are open (or half-closed).
    Established,
}

/// What the engine does with the flow after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The flow lives on.
    Keep,
    /// Both directions finished: close the socket normally.
    Close,
    /// Abort: close the socket with a reset (the guest already got or sent RST).
    Reset,
}

/// One translated connection.
#[derive(Debug)]
pub struct TcpConn {
    ends: Ends,
    remote_port: u16,
    guest_port: u16,
    state: State,
    rcv_nxt: u32,
    iss: u32,
    snd_una: u32,
    snd_nxt: u32,
    snd_wnd: u32,
    guest_wscale: u8,
    our_wscale: u8,
    mss: usize,
    our_mss: u16,
    guest_fin: bool,
    fin_sent: bool,
    fin_acked: bool,
    rto_at: Option<u64>,
    retries: u32,
    adv_wnd: std::cell::Cell<u32>,
    /// The host socket may hold data not yet sent to the guest (the last push stopped at the
    /// guest's window, not at an empty socket); without it a guest ACK does not look.
    host_pending: bool,
    /// Guest data segments taken since the last ACK we sent (see [`ACK_EVERY`]).
    segs_unacked: std::cell::Cell<u32>,
}

fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl TcpConn {
    fn new(ends: Ends, remote_port: u16, guest_port: u16, mtu: u16, iss: u32) -> Self {
        TcpConn {
            ends,
            remote_port,
            guest_port,
            state: State::Connecting,
            rcv_nxt: 0,
            iss,
            snd_una: iss,
            snd_nxt: iss.wrapping_add(1),
            snd_wnd: 0,
            guest_wscale: 0,
            our_wscale: 0,
            mss: 536,
            our_mss: mtu.saturating_sub(if ends.is_v6() { 60 } else { 40 }),
            guest_fin: false,
            fin_sent: false,
            fin_acked: false,
            rto_at: None,
            retries: 0,
            adv_wnd: std::cell::Cell::new(0),
            host_pending: true,
            segs_unacked: std::cell::Cell::new(0),
        }
    }

    /// A connection the guest opens with `syn`; `ends` are those of frames to the guest. The
    /// SYN-ACK goes out once the host socket connected ([`TcpConn::on_connected`]).
    pub fn from_guest_syn(ends: Ends, syn: &Segment<'_>, mtu: u16, iss: u32) -> Self {
        let mut c = TcpConn::new(ends, syn.dst_port, syn.src_port, mtu, iss);
        c.rcv_nxt = syn.seq.wrapping_add(1);
        c.learn_options(syn);
        c
    }

    /// A connection the host opened (a host forward): sends SYN to the guest.
    pub fn to_guest(
        ends: Ends,
        remote_port: u16,
        guest_port: u16,
        mtu: u16,
        iss: u32,
        now: u64,
        tx: &mut impl GuestTx,
    ) -> Self {
        let mut c = TcpConn::new(ends, remote_port, guest_port, mtu, iss);
        c.state = State::SynToGuest;
        c.emit(tx, tcp::SYN, iss, 0, 65535);
        c.rto_at = Some(now + RTO_MS);
        c
    }

    /// Answers a segment that belongs to no connection (or is refused) with RST, as a
    /// closed port does.
    pub fn refuse(ends: Ends, seg: &Segment<'_>, tx: &mut impl GuestTx) {
        if seg.has(tcp::RST) {
            return;
        }
        let mut c = TcpConn::new(ends, seg.dst_port, seg.src_port, 1500, 0);
        let len = seg.payload.len() as u32 + u32::from(seg.flags & (tcp::SYN | tcp::FIN) != 0);
        c.rcv_nxt = seg.seq.wrapping_add(len);
        c.snd_nxt = if seg.has(tcp::ACK) { seg.ack } else { 0 };
        c.reset(tx);
    }

    /// The connection's state.
    pub fn state(&self) -> State {
        self.state
    }

    fn learn_options(&mut self, syn: &Segment<'_>) {
        self.mss = usize::from(syn.mss.unwrap_or(536).min(self.our_mss).max(64));
        if let Some(ws) = syn.wscale {
            self.guest_wscale = ws;
            self.our_wscale = OUR_WSCALE;
        }
        self.snd_wnd = u32::from(syn.window);
    }

    /// The host socket connected: answer the guest's SYN.
    pub fn on_connected(&mut self, sock: &impl HostSocket, tx: &mut impl GuestTx, now: u64) {
        self.state = State::Established;
        self.send_syn_ack(sock, tx);
        self.rto_at = Some(now + RTO_MS);
    }

    /// Answers the guest's SYN (the window of a SYN is never scaled).
    fn send_syn_ack(&self, sock: &impl HostSocket, tx: &mut impl GuestTx) {
        let wnd = self.window(sock).min(65535) as u16;
        self.emit(tx, tcp::SYN | tcp::ACK, self.iss, 0, wnd);
    }

    /// Tells the guest the connection is refused or broken.
    pub fn reset(&self, tx: &mut impl GuestTx) {
        self.emit(tx, tcp::RST | tcp::ACK, self.snd_nxt, 0, 0);
    }

    fn window(&self, sock: &impl HostSocket) -> u32 {
        sock.send_space() as u32
    }

    fn window_field(&self, sock: &impl HostSocket) -> u16 {
        (self.window(sock) >> self.our_wscale).min(65535) as u16
    }

    fn ack_now(&self, sock: &impl HostSocket, tx: &mut impl GuestTx) {
        self.emit(tx, tcp::ACK, self.snd_nxt, 0, self.window_field(sock));
    }

    /// True while the window last advertised is small enough that the guest may stall on it:
    /// the host socket's buffer drains without any event, so the engine re-checks such
    /// connections ([`TcpConn::on_window_check`]) instead.
    pub fn window_watch(&self, sock: &impl HostSocket) -> bool {
        self.state == State::Established
            && !self.guest_fin
            && (self.adv_wnd.get() as usize) < sock.send_capacity() / 2
    }

    /// Sends a window update if the host socket's free space grew well beyond what the
    /// guest was last told.
    pub fn on_window_check(&self, sock: &impl HostSocket, tx: &mut impl GuestTx) {
        let (now, was) = (self.window(sock), self.adv_wnd.get());
        if now > was.saturating_mul(2) || now >= was + 2 * u32::from(self.our_mss) {
            self.ack_now(sock, tx);
        }
    }

    /// Builds and sends a segment; the payload (if any) already lies at [`payload_at`].
    fn emit(&self, tx: &mut impl GuestTx, flags: u8, seq: u32, payload_len: usize, window: u16) {
        let syn = flags & tcp::SYN != 0;
        let hl = if syn {
            tcp::MIN_HEADER_LEN + 8
        } else {
            tcp::MIN_HEADER_LEN
        };
        let l4_len = hl + payload_len;
        let l4_at = self.ends.l4_at();
        let buf = tx.buf();
        let seg = &mut buf[l4_at..l4_at + l4_len];
        // The data offset has no setter in the wire view; header length in 32-bit words.
        seg[12] = ((hl / 4) as u8) << 4;
        if syn {
            let ws = if self.our_wscale > 0 || self.state == State::SynToGuest {
                OUR_WSCALE
            } else {
                0
            };
            let [m0, m1] = self.our_mss.to_be_bytes();
            seg[20..28].copy_from_slice(&[2, 4, m0, m1, 1, 3, 3, ws]);
        }
        let mut p = TcpPacket::new_unchecked(seg);
        p.set_src_port(self.remote_port);
        p.set_dst_port(self.guest_port);
        p.set_seq(seq);
        p.set_ack(if flags & tcp::ACK != 0 {
            self.rcv_nxt
        } else {
            0
        });
        p.set_flags(flags);
        p.set_window(window);
        p.set_urgent(0);
        if flags & tcp::ACK != 0 {
            self.segs_unacked.set(0);
        }
        if flags & tcp::SYN == 0 {
            self.adv_wnd.set(u32::from(window) << self.our_wscale);
        }
        let tso = payload_len > self.mss;
        if tso {
            let pseudo = self.ends.pseudo_sum(IPPROTO_TCP, l4_len);
            p.set_checksum(checksum::fold(pseudo));
        } else {
            frame::fill_tcp_checksum(&mut p, &self.ends);
        }
        let len = ip_headers(buf, &self.ends, IPPROTO_TCP, l4_len, 0);
        if tso {
            tx.send_tso(len, self.mss as u16, &self.ends);
        } else {
            tx.send(len);
        }
    }

    /// A segment from the guest for this connection.
    pub fn on_segment(
        &mut self,
        seg: &Segment<'_>,
        sock: &mut impl HostSocket,
        tx: &mut impl GuestTx,
        now: u64,
    ) -> Verdict {
        if seg.has(tcp::RST) {
            return Verdict::Reset;
        }
        match self.state {
            State::Connecting => Verdict::Keep,
            State::SynToGuest => {
                if !self.accept_syn_ack(seg) {
                    return Verdict::Keep;
                }
                self.ack_now(sock, tx);
                self.push(sock, tx, now)
            }
            State::Established => self.on_established(seg, sock, tx, now),
        }
    }

    /// Takes the guest's answer to our SYN; false when `seg` is not it.
    fn accept_syn_ack(&mut self, seg: &Segment<'_>) -> bool {
        if !seg.has(tcp::SYN | tcp::ACK) || seg.ack != self.iss.wrapping_add(1) {
            return false;
        }
        self.rcv_nxt = seg.seq.wrapping_add(1);
        self.learn_options(seg);
        if seg.wscale.is_none() {
            self.our_wscale = 0;
        }
        self.snd_una = seg.ack;
        self.state = State::Established;
        self.rto_at = None;
        self.retries = 0;
        true
    }

    fn on_established(
        &mut self,
        seg: &Segment<'_>,
        sock: &mut impl HostSocket,
        tx: &mut impl GuestTx,
        now: u64,
    ) -> Verdict {
        if seg.has(tcp::SYN) {
            if self.snd_una == self.iss && seg.seq.wrapping_add(1) == self.rcv_nxt {
                self.send_syn_ack(sock, tx);
            }
            return Verdict::Keep;
        }
        if seg.has(tcp::ACK) {
            if let Err(e) = self.on_ack(seg, sock, now) {
                return self.fail(e, tx);
            }
        }
        if !seg.payload.is_empty() || seg.has(tcp::FIN) {
            if let Err(e) = self.on_data(seg, sock, tx) {
                return self.fail(e, tx);
            }
        }
        if self.guest_fin && self.fin_acked {
            return Verdict::Close;
        }
        if !self.host_pending {
            return Verdict::Keep;
        }
        self.push(sock, tx, now)
    }

    fn fail(&self, _e: io::Error, tx: &mut impl GuestTx) -> Verdict {
        self.reset(tx);
        Verdict::Reset
    }

    fn on_ack(
        &mut self,
        seg: &Segment<'_>,
        sock: &mut impl HostSocket,
        now: u64,
    ) -> io::Result<()> {
        self.snd_wnd = u32::from(seg.window) << self.guest_wscale;
        let ack = seg.ack;
        if !seq_lt(self.snd_una, ack) || seq_lt(self.snd_nxt, ack) {
            return Ok(());
        }
        let mut data = ack.wrapping_sub(self.snd_una) as usize;
        if self.snd_una == self.iss {
            data -= 1;
        }
        if self.fin_sent && ack == self.snd_nxt {
            self.fin_acked = true;
            data -= 1;
        }
        self.snd_una = ack;
        self.retries = 0;
        self.rto_at = (ack != self.snd_nxt).then_some(now + RTO_MS);
        if data > 0 {
            sock.consume(data)?;
        }
        Ok(())
    }

    fn on_data(
        &mut self,
        seg: &Segment<'_>,
        sock: &mut impl HostSocket,
        tx: &mut impl GuestTx,
    ) -> io::Result<()> {
        let skip = self.rcv_nxt.wrapping_sub(seg.seq) as i32;
        if skip < 0 || skip as usize > seg.payload.len() || self.guest_fin {
            self.ack_now(sock, tx);
            return Ok(());
        }
        let data = &seg.payload[skip as usize..];
        let mut written = 0;
        while written < data.len() {
            match sock.write(&data[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.rcv_nxt = self.rcv_nxt.wrapping_add(written as u32);
        if seg.has(tcp::FIN) && written == data.len() {
            self.guest_fin = true;
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            sock.shutdown_write()?;
        }
        // Every second segment is acknowledged at once: writing the ACK to the TAP runs the
        // guest's transmit path for its next segments here, beside the guest's own sending
        // (measured: deferring all ACKs to the end of a batch cost throughput, one per segment
        // costs CPU). A short write or a FIN is acknowledged at once.
        let unacked = self.segs_unacked.get() + 1;
        self.segs_unacked.set(unacked);
        if unacked >= ACK_EVERY || written < data.len() || self.guest_fin {
            self.ack_now(sock, tx);
        }
        Ok(())
    }

    /// True while guest data was taken but not acknowledged yet ([`ACK_EVERY`]).
    pub fn ack_owed(&self) -> bool {
        self.segs_unacked.get() > 0
    }

    /// Acknowledges the guest data taken and not acknowledged yet (at the end of a batch).
    pub fn flush_ack(&self, sock: &impl HostSocket, tx: &mut impl GuestTx) {
        if self.ack_owed() {
            self.ack_now(sock, tx);
        }
    }

    /// Sends host data to the guest while its window allows (and FIN at the end of stream).
    pub fn push(&mut self, sock: &mut impl HostSocket, tx: &mut impl GuestTx, now: u64) -> Verdict {
        if self.state != State::Established || self.fin_sent {
            return Verdict::Keep;
        }
        // One look at the socket per burst: its send queue only shrinks meanwhile.
        let window = self.window_field(sock);
        loop {
            let in_flight = self.snd_nxt.wrapping_sub(self.snd_una);
            let room = self.snd_wnd.saturating_sub(in_flight) as usize;
            self.host_pending = true;
            if room == 0 {
                return Verdict::Keep;
            }
            let seg_max = if tx.tso() { MAX_TSO_PAYLOAD } else { self.mss };
            let at = payload_at(&self.ends);
            let n = room.min(seg_max).min(tx.buf().len() - at);
            match sock.peek(&mut tx.buf()[at..at + n]) {
                Ok(0) => {
                    self.emit(tx, tcp::FIN | tcp::ACK, self.snd_nxt, 0, window);
                    self.snd_nxt = self.snd_nxt.wrapping_add(1);
                    self.fin_sent = true;
                    self.rto_at.get_or_insert(now + RTO_MS);
                    return Verdict::Keep;
                }
                Ok(k) => {
                    self.emit(tx, tcp::ACK | tcp::PSH, self.snd_nxt, k, window);
                    self.snd_nxt = self.snd_nxt.wrapping_add(k as u32);
                    self.rto_at.get_or_insert(now + RTO_MS);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.host_pending = false;
                    return Verdict::Keep;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(e, tx),
            }
        }
    }

    /// The host socket has room again: tell the guest the window opened.
    pub fn on_writable(&mut self, sock: &impl HostSocket, tx: &mut impl GuestTx) {
        if self.state == State::Established && !self.guest_fin {
            self.ack_now(sock, tx);
        }
    }

    /// Retransmits what the guest has not acknowledged once the timeout passed.
    pub fn on_timer(
        &mut self,
        sock: &mut impl HostSocket,
        tx: &mut impl GuestTx,
        now: u64,
    ) -> Verdict {
        match self.rto_at {
            Some(at) if at <= now => {}
            _ => return Verdict::Keep,
        }
        self.retries += 1;
        if self.retries > MAX_RETRIES {
            self.reset(tx);
            return Verdict::Reset;
        }
        self.rto_at = Some(now + (RTO_MS << self.retries.min(4)));
        if self.state == State::SynToGuest {
            self.emit(tx, tcp::SYN, self.iss, 0, 65535);
            return Verdict::Keep;
        }
        if self.snd_una == self.iss {
            self.send_syn_ack(sock, tx);
            return Verdict::Keep;
        }
        if let Err(e) = sock.rewind() {
            return self.fail(e, tx);
        }
        self.snd_nxt = self.snd_una;
        self.fin_sent = false;
        self.snd_wnd = self.snd_wnd.max(self.mss as u32);
        self.push(sock, tx, now)
    }

    /// When the connection next needs [`TcpConn::on_timer`].
    pub fn deadline(&self) -> Option<u64> {
        self.rto_at
    }
}

#[cfg(test)]
#[path = "tcp_tests.rs"]
mod tests;
