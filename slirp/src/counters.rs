//! What the engine did and why it dropped: every dropped frame is counted, never a panic.
#![forbid(unsafe_code)]

/// Why a frame or a flow was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// The frame does not parse (short, bad header, bad checksum).
    Malformed,
    /// Well-formed, but nothing here handles it (other ethertypes, IP options, fragments, ...).
    Unsupported,
    /// The flow table is full.
    FlowLimit,
    /// ICMP echo to another host while unprivileged ping sockets are not allowed.
    NoPingSocket,
    /// The destination may not be reached (host loopback disabled, inside the virtual network).
    Refused,
    /// Host sockets failed (connect, send) or the TAP queue was full.
    HostError,
}

/// Frame and drop counts of one engine.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Frames read from the TAP.
    pub rx_frames: u64,
    /// Frames written to the TAP.
    pub tx_frames: u64,
    /// Drops for [`Drop::Malformed`].
    pub malformed: u64,
    /// Drops for [`Drop::Unsupported`].
    pub unsupported: u64,
    /// Drops for [`Drop::FlowLimit`].
    pub flow_limit: u64,
    /// Drops for [`Drop::NoPingSocket`].
    pub no_ping_socket: u64,
    /// Drops for [`Drop::Refused`].
    pub refused: u64,
    /// Drops for [`Drop::HostError`].
    pub host_error: u64,
    /// UDP flows closed early to make room for new ones.
    pub udp_evicted: u64,
}

impl Counters {
    /// Counts one drop.
    pub fn drop(&mut self, why: Drop) {
        self.drops(why, 1);
    }

    /// Counts `n` drops for the same reason (the datagrams of a refused batch).
    pub fn drops(&mut self, why: Drop, n: u64) {
        let c = match why {
            Drop::Malformed => &mut self.malformed,
            Drop::Unsupported => &mut self.unsupported,
            Drop::FlowLimit => &mut self.flow_limit,
            Drop::NoPingSocket => &mut self.no_ping_socket,
            Drop::Refused => &mut self.refused,
            Drop::HostError => &mut self.host_error,
        };
        *c += n;
    }
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rx {} tx {} drops: malformed {} unsupported {} flow-limit {} no-ping-socket {} \
             refused {} host-error {}; udp flows evicted {}",
            self.rx_frames,
            self.tx_frames,
            self.malformed,
            self.unsupported,
            self.flow_limit,
            self.no_ping_socket,
            self.refused,
            self.host_error,
            self.udp_evicted
        )
    }
}
