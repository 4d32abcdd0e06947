//! A simplified Linux TCP conntrack state machine: enough to pick each flow's timeout (a closed
//! connection is forgotten in seconds, an established one is kept for days), without sequence
//! number tracking.

use super::Dir;

/// TCP FIN flag.
pub(super) const FIN: u8 = 0x01;
/// TCP SYN flag.
pub(super) const SYN: u8 = 0x02;
/// TCP RST flag.
pub(super) const RST: u8 = 0x04;
/// TCP ACK flag.
pub(super) const ACK: u8 = 0x10;

/// Connection state, named as Linux conntrack names it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(super) enum TcpState {
    /// Created, no segment seen yet.
    None,
    /// The original side sent SYN.
    SynSent,
    /// The reply side answered SYN-ACK.
    SynRecv,
    /// The handshake completed (or a mid-stream ACK was picked up).
    Established,
    /// One side sent FIN.
    FinWait,
    /// The other side acknowledged the first FIN.
    CloseWait,
    /// Both sides sent FIN; waiting for the last ACK.
    LastAck,
    /// Both FINs acknowledged.
    TimeWait,
    /// Reset.
    Close,
}

impl TcpState {
    /// The state stored in a flow's state byte.
    pub(super) fn from_u8(v: u8) -> TcpState {
        match v {
            1 => TcpState::SynSent,
            2 => TcpState::SynRecv,
            3 => TcpState::Established,
            4 => TcpState::FinWait,
            5 => TcpState::CloseWait,
            6 => TcpState::LastAck,
            7 => TcpState::TimeWait,
            8 => TcpState::Close,
            _ => TcpState::None,
        }
    }

    /// The state `sluice conntrack ls` shows for a flow of `proto` in TCP state `self`:
    /// the TCP state's name, or for UDP and ICMP whether a reply was seen.
    pub(super) fn shown(self, proto: crate::config::L4Proto, replied: bool) -> &'static str {
        match proto {
            crate::config::L4Proto::Tcp => self.name(),
            _ if replied => "REPLIED",
            _ => "UNREPLIED",
        }
    }

    /// The name `sluice conntrack ls` shows.
    pub(super) fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
        }
    }
}

/// Which sides have sent FIN (bit 0: original, bit 1: reply).
pub(super) type Fins = u8;

fn fin_bit(dir: Dir) -> Fins {
    match dir {
        Dir::Original => 1,
        Dir::Reply => 2,
    }
}

/// The state after a segment with `flags` travelling in `dir`; `None` for a segment without
/// SYN, ACK, FIN or RST, which is invalid and must not refresh the flow.
#[inline]
pub(super) fn next(state: TcpState, fins: Fins, dir: Dir, flags: u8) -> Option<(TcpState, Fins)> {
    use TcpState as S;
    let (syn, ack, fin, rst) = (
        flags & SYN != 0,
        flags & ACK != 0,
        flags & FIN != 0,
        flags & RST != 0,
    );
    if rst {
        return Some((S::Close, fins));
    }
    if syn {
        return Some(match (ack, dir, state) {
            // A new connection, or the same tuple reused after a close.
            (false, Dir::Original, S::None | S::SynSent | S::TimeWait | S::Close) => {
                (S::SynSent, 0)
            }
            (true, Dir::Reply, S::SynSent | S::SynRecv) => (S::SynRecv, fins),
            _ => (state, fins),
        });
    }
    if fin {
        let fins = fins | fin_bit(dir);
        let both = fins == 3;
        return Some(match state {
            S::SynRecv | S::Established | S::FinWait | S::CloseWait if both => (S::LastAck, fins),
            S::SynRecv | S::Established => (S::FinWait, fins),
            _ => (state, fins),
        });
    }
    if !ack {
        return None;
    }
    Some(match (state, dir) {
        (S::None, _) | (S::SynRecv, Dir::Original) => (S::Established, fins),
        // The side that has not closed acknowledges the other side's FIN.
        (S::FinWait, _) if fins & fin_bit(dir) == 0 => (S::CloseWait, fins),
        (S::LastAck, _) => (S::TimeWait, fins),
        _ => (state, fins),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Dir::{Original as O, Reply as R};
    use TcpState as S;

    fn run(steps: &[(Dir, u8)]) -> TcpState {
        let (mut s, mut f) = (S::None, 0);
        for &(d, flags) in steps {
            if let Some((ns, nf)) = next(s, f, d, flags) {
                (s, f) = (ns, nf);
            }
        }
        s
    }

    #[test]
    fn handshake_and_orderly_close() {
        assert_eq!(run(&[(O, SYN)]), S::SynSent);
        assert_eq!(run(&[(O, SYN), (R, SYN | ACK)]), S::SynRecv);
        let est = [(O, SYN), (R, SYN | ACK), (O, ACK)];
        assert_eq!(run(&est), S::Established);
        let mut c = est.to_vec();
        c.push((O, FIN | ACK));
        assert_eq!(run(&c), S::FinWait);
        c.push((R, ACK));
        assert_eq!(run(&c), S::CloseWait);
        c.push((R, FIN | ACK));
        assert_eq!(run(&c), S::LastAck);
        c.push((O, ACK));
        assert_eq!(run(&c), S::TimeWait);
    }

    #[test]
    fn simultaneous_fins_and_rst_and_reopen() {
        let est = [(O, SYN), (R, SYN | ACK), (O, ACK)];
        let mut c = est.to_vec();
        c.extend([(O, FIN | ACK), (R, FIN | ACK), (O, ACK)]);
        assert_eq!(run(&c), S::TimeWait);
        c.push((O, SYN));
        assert_eq!(run(&c), S::SynSent);
        let mut r = est.to_vec();
        r.push((R, RST));
        assert_eq!(run(&r), S::Close);
        r.push((O, SYN));
        assert_eq!(run(&r), S::SynSent);
    }

    #[test]
    fn pickup_ignored_segments_and_invalid() {
        assert_eq!(run(&[(O, ACK)]), S::Established);
        // A SYN inside an established connection does not reset it.
        assert_eq!(run(&[(O, ACK), (O, SYN)]), S::Established);
        // The FIN sender's own ACK does not move FIN_WAIT on.
        assert_eq!(run(&[(O, ACK), (O, FIN | ACK), (O, ACK)]), S::FinWait);
        assert_eq!(next(S::Established, 0, O, 0), None);
        assert_eq!(next(S::Established, 0, O, 0x08), None);
    }

    #[test]
    fn state_byte_round_trips() {
        for s in [
            S::None,
            S::SynSent,
            S::SynRecv,
            S::Established,
            S::FinWait,
            S::CloseWait,
            S::LastAck,
            S::TimeWait,
            S::Close,
        ] {
            assert_eq!(TcpState::from_u8(s as u8), s);
            assert!(!s.name().is_empty());
        }
    }
}
