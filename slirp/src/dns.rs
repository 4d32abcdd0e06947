//! DNS at 10.0.2.3: queries (UDP and TCP, port 53) are forwarded to the host's first resolver
//! from resolv.conf, so the forwarder is only an address mapping in [`crate::udp`] and
//! [`crate::tcp`] flows.
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The DNS port.
pub const PORT: u16 = 53;

/// The resolv.conf to read: `SLUICE_SLIRP_RESOLV_CONF` (for tests) or /etc/resolv.conf.
pub fn resolv_conf_path() -> PathBuf {
    std::env::var_os("SLUICE_SLIRP_RESOLV_CONF")
        .map_or_else(|| "/etc/resolv.conf".into(), Into::into)
}

/// The first IPv4 `nameserver` of a resolv.conf text.
pub fn first_nameserver(resolv_conf: &str) -> Option<Ipv4Addr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver")).then(|| words.next()?.parse().ok())?
    })
}

/// The upstream resolver of this host, if resolv.conf names one.
pub fn host_resolver() -> Option<Ipv4Addr> {
    first_nameserver(&std::fs::read_to_string(resolv_conf_path()).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_ipv4_nameserver_wins() {
        let text =
            "# x\nsearch lan\nnameserver fe80::1\nnameserver 192.0.2.53\nnameserver 1.1.1.1\n";
        assert_eq!(first_nameserver(text), Some(Ipv4Addr::new(192, 0, 2, 53)));
        assert_eq!(first_nameserver("search lan\n"), None);
        assert_eq!(first_nameserver("nameserver\n"), None);
    }
}
