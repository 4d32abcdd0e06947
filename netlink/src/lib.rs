//! The daemon's netlink layer: plugs a sandbox's network namespace into sluice's userspace
//! bridge with a veth pair (the host end is then opened by the AF_PACKET dataplane; there is no
//! kernel bridge) and removes it again.
//!
//! Every call opens its own rtnetlink connection(s) on the caller's tokio runtime and closes
//! them when it returns. Work inside a sandbox namespace goes through a netlink socket created
//! in that namespace: a netlink socket stays bound to the namespace it was created in, so only
//! the socket's creation needs the namespace, and that happens on a short-lived OS thread of its
//! own (`conn::in_netns`); no thread of the caller's runtime ever changes namespace. No `ip`
//! process is spawned.
//!
//! The peer end is created directly inside the sandbox (`ip link add H type veth peer name eth0
//! netns NS`), already named and with its MAC and MTU, in one atomic kernel request: there is
//! no temporary name to collide, no move and no rename. (It cannot be created up: the kernel
//! opens the peer before the pair is tied together and refuses with `ENOTCONN`.) If a later
//! step fails (link up, address, route), the host end is deleted, which removes the peer too:
//! an attach either fully applies or leaves nothing behind.

mod conn;
mod veth;

use std::fmt;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use sluice_dataplane::config::{Ipv4Cidr, Ipv6Cidr};
use sluice_dataplane::wire::MacAddr;

use sluice_api::model::Sandbox;
pub use sluice_api::naming::IFNAME_MAX;
pub use veth::{
    attach, create_veth_pair, detach, link_exists, link_names_with_prefix, sandbox_link,
    SandboxLink, SandboxRoute,
};

/// What a [`NetlinkError::Netns`] from [`open_netns`] says was being done.
const OPEN_NETNS: &str = "open";

/// Smallest MTU Linux accepts on an Ethernet (veth) device carrying IPv4.
pub const MTU_MIN: u16 = 68;

/// One interface of a sandbox as the daemon wants it: the veth pair's names and the sandbox
/// end's addressing, so that [`attach`] can apply all of it in one go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxIface {
    /// Name of the host end, in the daemon's namespace (opened by the dataplane).
    pub host_ifname: String,
    /// Name of the sandbox end inside the sandbox (`eth0`, `eth1`, ...).
    pub sandbox_ifname: String,
    /// MAC address of the sandbox end (the dataplane's port config knows it).
    pub mac: MacAddr,
    /// IPv4 address and prefix length of the sandbox end; none on an IPv6-only network.
    pub ip: Option<Ipv4Cidr>,
    /// Default route via this gateway; `None` adds no default route (secondary networks).
    pub gateway: Option<Ipv4Addr>,
    /// A default route on the link itself, with no gateway (ipvlan's routed modes); only
    /// without `gateway`.
    pub default_on_link: bool,
    /// MTU of both ends.
    pub mtu: u16,
    /// The sandbox end's IPv6 address on a dual-stack network (the kernel adds the
    /// link-local one itself).
    pub ipv6: Option<SandboxIpv6>,
}

/// The IPv6 side of a [`SandboxIface`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SandboxIpv6 {
    /// The address, set without duplicate address detection (the IPAM made it unique), so
    /// that it is usable at once.
    pub addr: Ipv6Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// Default route via this gateway; `None` adds none.
    pub gateway: Option<Ipv6Addr>,
}

/// Why a netlink operation failed; every variant names the interface or namespace concerned
/// and what was being done, so the daemon can return it to the CLI as is.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// An interface name that Linux would reject (checked before anything is created).
    #[error("bad interface name {name:?}: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A setting out of range for the interface (checked before anything is created).
    #[error("bad settings for {ifname}: {reason}")]
    BadSetting {
        /// The interface.
        ifname: String,
        /// What is wrong.
        reason: String,
    },
    /// The network namespace could not be opened or entered.
    #[error("cannot {op} network namespace {netns}: {source}")]
    Netns {
        /// The namespace (path or pid).
        netns: String,
        /// What was being done.
        op: &'static str,
        /// What the OS said.
        source: io::Error,
    },
    /// A netlink request failed.
    #[error("cannot {step} {ifname} in {netns}: {source}")]
    Request {
        /// What was being done.
        step: Step,
        /// The interface concerned.
        ifname: String,
        /// The namespace the request went to.
        netns: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// The sandbox already has an interface of the name the endpoint's would get (found
    /// when creating the pair fails, so the error names the clash rather than `File exists`).
    #[error("{netns} already has an interface {ifname}; pick another name with --ifname")]
    NameInUse {
        /// The name inside the sandbox.
        ifname: String,
        /// The sandbox.
        netns: String,
    },
    /// The runtime shut down while [`attach`] ran (whatever it had created may remain; the
    /// daemon's start-up sweep of leftover host ends removes it).
    #[error("attaching {ifname} was aborted: the runtime is shutting down")]
    Aborted {
        /// The host end being created.
        ifname: String,
    },
    /// [`detach`] refuses to delete an interface that is not a veth (a daemon bug or a name
    /// clash must never take down a physical or foreign interface).
    #[error("refusing to delete {ifname}: it is a {kind} device, not a veth")]
    NotVeth {
        /// The interface.
        ifname: String,
        /// Its kind as the kernel reports it (`device` when it has none, like a NIC).
        kind: String,
    },
}

/// The netlink request a [`NetlinkError::Request`] names (its text reads "cannot STEP IF").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Looking an interface up by name.
    LookUp,
    /// Deleting an interface.
    Delete,
    /// Creating the veth pair (its peer created straight inside the sandbox).
    CreateVeth,
    /// Finding the new peer inside the sandbox.
    FindPeer,
    /// Adding the address to the sandbox end.
    SetAddress,
    /// Bringing an interface up.
    LinkUp,
    /// Adding the default route.
    SetRoute,
    /// Listing the interfaces.
    ListLinks,
    /// Listing an interface's addresses.
    ListAddresses,
    /// Listing the routes through an interface.
    ListRoutes,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::LookUp => "look up",
            Step::Delete => "delete",
            Step::CreateVeth => "create the veth pair",
            Step::FindPeer => "find the new veth peer",
            Step::SetAddress => "add the address to",
            Step::LinkUp => "bring up",
            Step::SetRoute => "add the default route via",
            Step::ListLinks => "list links with prefix",
            Step::ListAddresses => "list addresses of",
            Step::ListRoutes => "list routes through",
        })
    }
}

impl NetlinkError {
    /// The errno behind the error, if the kernel gave one (e.g. `EEXIST` for a name in use).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            NetlinkError::Netns { source, .. } | NetlinkError::Request { source, .. } => {
                source.raw_os_error()
            }
            NetlinkError::NameInUse { .. } => Some(libc::EEXIST),
            _ => None,
        }
    }

    /// True when the sandbox's namespace file (its path, or its process) does not exist.
    pub fn is_missing_namespace(&self) -> bool {
        matches!(self, NetlinkError::Netns { op, source, .. }
            if *op == OPEN_NETNS && source.kind() == io::ErrorKind::NotFound)
    }
}

/// Checks an interface name by `naming`'s rule (the kernel's, restricted to safe bytes) before
/// any request is made.
pub fn check_ifname(name: &str) -> Result<(), NetlinkError> {
    match sluice_api::naming::ifname_problem(name) {
        Some(reason) => Err(NetlinkError::BadName {
            name: name.into(),
            reason,
        }),
        None => Ok(()),
    }
}

fn check_mtu(ifname: &str, mtu: u16) -> Result<(), NetlinkError> {
    if mtu < MTU_MIN {
        return Err(NetlinkError::BadSetting {
            ifname: ifname.into(),
            reason: format!("MTU {mtu} is below {MTU_MIN}"),
        });
    }
    Ok(())
}

fn check_mac(ifname: &str, mac: MacAddr) -> Result<(), NetlinkError> {
    if mac.is_multicast() || mac == MacAddr::default() {
        return Err(NetlinkError::BadSetting {
            ifname: ifname.into(),
            reason: format!("MAC {mac} is not a unicast address"),
        });
    }
    Ok(())
}

impl SandboxIface {
    /// Checks everything the kernel would reject, before anything is created.
    pub fn validate(&self) -> Result<(), NetlinkError> {
        check_ifname(&self.host_ifname)?;
        check_ifname(&self.sandbox_ifname)?;
        check_mtu(&self.sandbox_ifname, self.mtu)?;
        check_mac(&self.sandbox_ifname, self.mac)?;
        let bad = |reason: String| {
            Err(NetlinkError::BadSetting {
                ifname: self.sandbox_ifname.clone(),
                reason,
            })
        };
        if self.ip.is_none() && self.ipv6.is_none() {
            return bad("no IPv4 and no IPv6 address".into());
        }
        if let Some(ip) = self.ip {
            if ip.prefix == 0 || ip.prefix > 32 {
                return bad(format!("prefix length {} is not 1-32", ip.prefix));
            }
            if ip.addr.is_unspecified() || ip.addr.is_multicast() {
                return bad(format!("{} is not a host address", ip.addr));
            }
        }
        if self.default_on_link && self.gateway.is_some() {
            return bad("a default route on the link takes no gateway".into());
        }
        if let Some(gw) = self.gateway {
            match self.ip {
                Some(ip) if ip.contains(gw) && gw != ip.addr => {}
                Some(ip) => {
                    return bad(format!(
                        "gateway {gw} is not another address of {}/{}",
                        ip.addr, ip.prefix
                    ))
                }
                None => return bad(format!("gateway {gw} without an IPv4 address")),
            }
        }
        if let Some(v6) = self.ipv6 {
            let (addr, prefix) = (v6.addr, v6.prefix);
            if prefix == 0 || prefix > 128 {
                return bad(format!("IPv6 prefix length {prefix} is not 1-128"));
            }
            if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
                return bad(format!("{addr} is not a host address"));
            }
            let subnet = Ipv6Cidr { addr, prefix };
            if let Some(gw) = v6.gateway {
                if !subnet.contains(gw) || gw == addr {
                    return bad(format!(
                        "gateway {gw} is not another address of {addr}/{prefix}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The namespace file of a sandbox: its path, or `/proc/PID/ns/net` for a process.
pub fn netns_path(sandbox: &Sandbox) -> PathBuf {
    match sandbox {
        Sandbox::Netns(p) => p.clone(),
        Sandbox::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
    }
}

/// Opens a sandbox's network namespace (the descriptor that `setns` and `IFLA_NET_NS_FD` take);
/// holding it keeps the namespace alive even if its process exits meanwhile.
pub fn open_netns(sandbox: &Sandbox) -> Result<File, NetlinkError> {
    File::open(netns_path(sandbox)).map_err(|source| NetlinkError::Netns {
        netns: sandbox.to_string(),
        op: OPEN_NETNS,
        source,
    })
}
#[cfg(test)]
mod tests {
    use super::conn::{in_netns, route_socket};
    use super::*;

    fn iface() -> SandboxIface {
        SandboxIface {
            host_ifname: "slv1".into(),
            sandbox_ifname: "eth0".into(),
            mac: MacAddr([0x02, 0x42, 10, 0, 0, 2]),
            ip: Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 2), 24),
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            default_on_link: false,
            mtu: 1500,
            ipv6: Some(SandboxIpv6 {
                addr: "fd00::2".parse().unwrap(),
                prefix: 64,
                gateway: Some("fd00::1".parse().unwrap()),
            }),
        }
    }

    fn v6(addr: &str, prefix: u8, gateway: Option<&str>) -> Option<SandboxIpv6> {
        Some(SandboxIpv6 {
            addr: addr.parse().unwrap(),
            prefix,
            gateway: gateway.map(|g| g.parse().unwrap()),
        })
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn ifnames_follow_the_kernel() {
        // The rule itself is tested in `naming`; here, that it is applied and named.
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("sl-abc_def.01234").is_err());
        let e = check_ifname("averyveryverylongname").unwrap_err();
        assert!(e.to_string().contains("averyveryverylongname"), "{e}");
    }

    #[test]
    fn settings_are_validated() {
        assert!(iface().validate().is_ok());
        let no_gw = SandboxIface {
            gateway: None,
            ..iface()
        };
        assert!(no_gw.validate().is_ok());
        let on_link = SandboxIface {
            default_on_link: true,
            ..no_gw.clone()
        };
        assert!(on_link.validate().is_ok());
        let v4_only = SandboxIface {
            ipv6: None,
            ..iface()
        };
        assert!(v4_only.validate().is_ok());
        let v6_only = SandboxIface {
            ip: None,
            gateway: None,
            ..iface()
        };
        assert!(v6_only.validate().is_ok());
        let v6_only_with_v4_gateway = SandboxIface {
            gateway: iface().gateway,
            ..v6_only.clone()
        };
        assert!(v6_only_with_v4_gateway.validate().is_err());
        let no_address = SandboxIface {
            ipv6: None,
            ..v6_only.clone()
        };
        assert!(no_address.validate().is_err());
        let cases = [
            SandboxIface {
                default_on_link: true,
                ..iface()
            },
            SandboxIface { mtu: 67, ..iface() },
            SandboxIface {
                mac: MacAddr::BROADCAST,
                ..iface()
            },
            SandboxIface {
                mac: MacAddr::default(),
                ..iface()
            },
            SandboxIface {
                ip: Some(Ipv4Cidr {
                    addr: Ipv4Addr::new(10, 0, 0, 2),
                    prefix: 33,
                }),
                ..iface()
            },
            SandboxIface {
                ip: Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 24),
                ..iface()
            },
            SandboxIface {
                gateway: Some(Ipv4Addr::new(10, 0, 1, 1)),
                ..iface()
            },
            SandboxIface {
                gateway: Some(Ipv4Addr::new(10, 0, 0, 2)),
                ..iface()
            },
            SandboxIface {
                host_ifname: "sl-far-too-long-name".into(),
                ..iface()
            },
            SandboxIface {
                ipv6: v6("fd00::2", 129, None),
                ..iface()
            },
            SandboxIface {
                ipv6: v6("ff02::2", 64, None),
                ..iface()
            },
            SandboxIface {
                ipv6: v6("fd00::2", 64, Some("fd01::1")),
                ..iface()
            },
            SandboxIface {
                ipv6: v6("fd00::2", 64, Some("fd00::2")),
                ..iface()
            },
        ];
        for c in cases {
            let e = c.validate().unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("eth0") || msg.contains("sl-far-too-long-name"),
                "{msg}"
            );
        }
    }

    #[test]
    fn pids_name_their_proc_file() {
        assert_eq!(
            netns_path(&Sandbox::Pid(42)),
            PathBuf::from("/proc/42/ns/net")
        );
        let p = PathBuf::from("/run/netns/x");
        assert_eq!(netns_path(&Sandbox::Netns(p.clone())), p);
    }

    #[test]
    fn missing_namespace_is_a_clear_error() {
        let sb = Sandbox::Netns(PathBuf::from("/nonexistent/sluice-netns"));
        let e = rt().block_on(attach(&sb, &iface())).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let msg = e.to_string();
        assert!(
            msg.contains("open") && msg.contains("/nonexistent/sluice-netns"),
            "{msg}"
        );
    }

    #[test]
    fn not_a_namespace_file_is_refused() {
        let e = rt()
            .block_on(in_netns(
                &File::open("/proc/self/stat").unwrap(),
                "stat",
                route_socket,
            ))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        assert!(
            e.to_string().contains("enter network namespace stat"),
            "{e}"
        );
    }

    #[test]
    fn bad_names_fail_before_any_request() {
        let rt = rt();
        let e = rt
            .block_on(create_veth_pair("same", "same", None, 1500))
            .unwrap_err();
        assert!(matches!(e, NetlinkError::BadName { .. }), "{e}");
        let e = rt
            .block_on(create_veth_pair("slok", "sl/peer", None, 1500))
            .unwrap_err();
        assert!(matches!(e, NetlinkError::BadName { .. }), "{e}");
        let e = rt.block_on(detach("a b")).unwrap_err();
        assert!(matches!(e, NetlinkError::BadName { .. }), "{e}");
    }

    #[test]
    fn reads_the_current_namespace() {
        let rt = rt();
        assert!(rt.block_on(link_exists("lo")).unwrap());
        assert!(!rt.block_on(link_exists("slnone0x0")).unwrap());
        let names = rt.block_on(link_names_with_prefix("lo")).unwrap();
        assert!(names.iter().any(|n| n == "lo"), "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("lo")), "{names:?}");
        assert!(!rt.block_on(detach("slnone0x0")).unwrap());
    }

    #[test]
    fn detach_refuses_other_kinds() {
        let e = rt().block_on(detach("lo")).unwrap_err();
        assert!(matches!(e, NetlinkError::NotVeth { .. }), "{e}");
        assert!(e.to_string().contains("lo"), "{e}");
    }
}
