//! A minimal request/response tool for the v6 RR rows, since Debian's sockperf (3.7) has no
//! IPv6: `sluice-e2e-bench --rr-server ADDR [--rr-udp]` echoes messages on ADDR;
//! `--rr-client ADDR [--rr-udp] --duration N` keeps one 64-byte message in flight for N
//! seconds and prints its round trips in sockperf's words (`avg-rtt=`, percentiles), so that
//! [`super::parse::sockperf`] reads both tools.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Bytes per message, as `sockperf pp -m 64`.
pub const MSG: usize = 64;

/// Echoes every message on `addr` until killed: UDP datagrams, or TCP messages of [`MSG`]
/// bytes on each accepted connection (one thread per connection).
pub fn serve(addr: SocketAddr, udp: bool) -> io::Result<()> {
    if udp {
        let s = UdpSocket::bind(addr)?;
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = s.recv_from(&mut buf)?;
            s.send_to(&buf[..n], from)?;
        }
    }
    for conn in TcpListener::bind(addr)?.incoming() {
        let mut c = conn?;
        std::thread::spawn(move || {
            let mut buf = [0u8; MSG];
            let _ = c.set_nodelay(true);
            while c.read_exact(&mut buf).is_ok() && c.write_all(&buf).is_ok() {}
        });
    }
    Ok(())
}

/// Round trips of one message at a time to the server at `addr` for `dur`.
pub fn ping_pong(addr: SocketAddr, udp: bool, dur: Duration) -> io::Result<Vec<Duration>> {
    let msg = [0x41u8; MSG];
    let mut back = [0u8; 2048];
    let mut rtts = Vec::new();
    let start = Instant::now();
    if udp {
        let unspecified: SocketAddr = match addr {
            SocketAddr::V4(_) => "0.0.0.0:0".parse(),
            SocketAddr::V6(_) => "[::]:0".parse(),
        }
        .map_err(io::Error::other)?;
        let s = UdpSocket::bind(unspecified)?;
        s.connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        while start.elapsed() < dur {
            let t = Instant::now();
            s.send(&msg)?;
            match s.recv(&mut back) {
                Ok(_) => rtts.push(t.elapsed()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    } else {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        c.set_nodelay(true)?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        while start.elapsed() < dur {
            let t = Instant::now();
            c.write_all(&msg)?;
            c.read_exact(&mut back[..MSG])?;
            rtts.push(t.elapsed());
        }
    }
    Ok(rtts)
}

/// The round trips in sockperf's words: `avg-rtt=` and the 50th and 99th percentiles, in
/// microseconds; an `ERROR:` line without any.
pub fn summary(rtts: &mut [Duration]) -> String {
    if rtts.is_empty() {
        return "sockperf: ERROR: no round trip completed\n".into();
    }
    rtts.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let avg = rtts.iter().map(|d| us(*d)).sum::<f64>() / rtts.len() as f64;
    let pct = |p: usize| us(rtts[(rtts.len() - 1) * p / 100]);
    format!(
        "sockperf: ====> avg-rtt={avg:.3} (observations={})\n\
         sockperf: ---> percentile 99.000 = {:.3}\n\
         sockperf: ---> percentile 50.000 = {:.3}\n",
        rtts.len(),
        pct(99),
        pct(50)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::parse;

    #[test]
    fn summary_reads_as_sockperf() {
        let mut rtts: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        rtts.reverse();
        let r = parse::sockperf(&summary(&mut rtts)).unwrap();
        assert_eq!(r.avg_us, 50.5);
        assert_eq!(r.p50_us, Some(50.0));
        assert_eq!(r.p99_us, Some(99.0));
        assert!(parse::sockperf(&summary(&mut [])).is_err());
    }

    #[test]
    fn ping_pong_over_v6_loopback() {
        for udp in [false, true] {
            let addr: SocketAddr = "[::1]:0".parse().unwrap();
            let bound = if udp {
                let s = UdpSocket::bind(addr).unwrap();
                let a = s.local_addr().unwrap();
                drop(s);
                a
            } else {
                let l = TcpListener::bind(addr).unwrap();
                let a = l.local_addr().unwrap();
                drop(l);
                a
            };
            std::thread::spawn(move || serve(bound, udp));
            std::thread::sleep(Duration::from_millis(100));
            let rtts = ping_pong(bound, udp, Duration::from_millis(100)).unwrap();
            assert!(!rtts.is_empty(), "udp={udp}");
        }
    }
}
