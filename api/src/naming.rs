//! The naming rules in one place: what Linux accepts as an interface name, docker's rule for
//! network and endpoint names, and how sluice names the interfaces it creates (`sl` + 10 hex
//! digits of the endpoint id on the host side, `sp` + the same digits for a peer handed off
//! to docker), so that the state's checks, the netlink layer and the daemon's sweep of
//! leftover interfaces agree.

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// The prefix of every host-side veth sluice creates for an endpoint.
pub const ENDPOINT_PREFIX: &str = "sl";

/// The prefix of a veth peer left in sluiced's namespace for docker to move.
const HANDOFF_PREFIX: &str = "sp";

/// How many hex digits of the endpoint id follow the prefix.
const ID_DIGITS: usize = 10;

/// What is wrong with `name` as an interface name, if anything: the kernel's rule (1-15 bytes,
/// not `.` or `..`), restricted to letters, digits, `-`, `_` and `.` so names stay safe in logs,
/// paths and `ip` output.
pub fn ifname_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        return Some("interface names are 1-15 bytes");
    }
    if name == "." || name == ".." {
        return Some("`.` and `..` are not interface names");
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        return Some("interface names use letters, digits, '-', '_', '.'");
    }
    None
}

/// True when Linux accepts `name` as an interface name (see [`ifname_problem`]).
pub fn valid_ifname(name: &str) -> bool {
    ifname_problem(name).is_none()
}

/// docker's rule for network and endpoint names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn id_digits(endpoint_id: &str) -> &str {
    endpoint_id.get(..ID_DIGITS).unwrap_or(endpoint_id)
}

/// The host-side veth name of the endpoint with id `endpoint_id`.
pub fn host_ifname(endpoint_id: &str) -> String {
    format!("{ENDPOINT_PREFIX}{}", id_digits(endpoint_id))
}

/// The peer name of an endpoint whose peer docker moves into the container itself.
pub fn handoff_ifname(endpoint_id: &str) -> String {
    format!("{HANDOFF_PREFIX}{}", id_digits(endpoint_id))
}

/// True for names [`host_ifname`] makes from a full id: the daemon deletes leftovers of a
/// crash by this rule, so it never matches a name sluice did not make.
pub fn is_endpoint_ifname(name: &str) -> bool {
    name.strip_prefix(ENDPOINT_PREFIX).is_some_and(|h| {
        h.len() == ID_DIGITS
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifnames_follow_the_kernel() {
        assert!(valid_ifname("eth0"));
        assert!(valid_ifname("sl-abc_def.0123"));
        assert!(!valid_ifname("sl-abc_def.01234"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("."));
        assert!(!valid_ifname(".."));
        assert!(!valid_ifname("a/b"));
        assert!(!valid_ifname("a:b"));
        assert!(!valid_ifname("a b"));
        assert!(!valid_ifname("é"));
    }

    #[test]
    fn names_follow_docker() {
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name(""));
        assert!(!valid_name("-web"));
        assert!(!valid_name("a/b"));
    }

    #[test]
    fn only_endpoint_names_are_ours() {
        assert!(is_endpoint_ifname("sl0123456789"));
        assert!(is_endpoint_ifname("slabcdef0123"));
        assert!(!is_endpoint_ifname("sl0123"));
        assert!(!is_endpoint_ifname("slABCDEF0123"));
        assert!(!is_endpoint_ifname("sl12345-host0"));
        assert!(!is_endpoint_ifname("eth0"));
        let id = "0123456789abcdef";
        assert!(is_endpoint_ifname(&host_ifname(id)));
        assert_eq!(handoff_ifname(id), "sp0123456789");
        assert!(valid_ifname(&host_ifname(id)) && valid_ifname(&handoff_ifname(id)));
    }
}
