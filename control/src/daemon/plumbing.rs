//! What the engine needs from the machine, behind one trait (netavark's driver-trait idea):
//! creating an endpoint's interface in its sandbox and opening its dataplane port, and undoing
//! that. `Kernel` is the real thing (rtnetlink + the dataplane runtime); tests use a fake, so
//! the engine's ordering and rollback rules are tested without root.

use std::future::Future;
use std::sync::Arc;

use sluice_dataplane::config::PortConfig;
use sluice_dataplane::frame::PortId;
use sluice_dataplane::pipeline::Dataplane;
use sluice_dataplane::port::KernelPortStats;

use sluice_dataplane::runtime::RuntimeError;

use crate::model::{Placement, Sandbox};
use crate::netlink::{NetlinkError, SandboxIface, Step};

/// The interface an endpoint gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// Where the interface goes.
    pub sandbox: Sandbox,
    /// The veth pair's names and the sandbox end's addressing.
    pub iface: SandboxIface,
    /// Whether sluice moves the peer into the sandbox or leaves it for the engine.
    pub placement: Placement,
}

/// Why plumbing failed: each variant names the step that failed and carries what the kernel,
/// the dataplane or the OS said (the netlink errors also name the interface and namespace).
#[derive(Debug, thiserror::Error)]
pub enum PlumbingError {
    /// The sandbox's namespace path or process does not exist: the client named a sandbox
    /// that is not there.
    #[error(transparent)]
    NamespaceNotFound(NetlinkError),
    /// The namespace exists but could not be opened or entered.
    #[error(transparent)]
    EnterNamespace(NetlinkError),
    /// An interface name or setting the kernel would refuse (checked before anything is made).
    #[error(transparent)]
    InvalidInterface(NetlinkError),
    /// The sandbox already has an interface of the name the endpoint's would get.
    #[error(transparent)]
    NameInUse(NetlinkError),
    /// Creating the veth pair, its peer straight inside the sandbox, failed.
    #[error(transparent)]
    CreateVeth(NetlinkError),
    /// Adding the address to the sandbox end failed.
    #[error(transparent)]
    SetAddress(NetlinkError),
    /// Bringing the sandbox end or its `lo` up failed.
    #[error(transparent)]
    LinkUp(NetlinkError),
    /// Adding the default route failed.
    #[error(transparent)]
    SetRoute(NetlinkError),
    /// Deleting an interface failed (or it is not a veth sluice may delete).
    #[error(transparent)]
    DeleteLink(NetlinkError),
    /// Looking up or listing interfaces failed.
    #[error(transparent)]
    ReadLinks(NetlinkError),
    /// The runtime shut down while an interface was being made.
    #[error(transparent)]
    Aborted(NetlinkError),
    /// An interface a network needs (a macvlan parent, its own uplink) is not in sluiced's
    /// namespace.
    #[error("interface {0} does not exist in sluiced's network namespace")]
    NoSuchInterface(String),
    /// The dataplane could not open a port on an interface.
    #[error("cannot open {ifname}: {source}")]
    OpenPort {
        /// The interface.
        ifname: String,
        /// What the dataplane said.
        #[source]
        source: RuntimeError,
    },
    /// The compiled configuration has no port for the endpoint (a bug if the rules passed).
    #[error("no dataplane port for endpoint {0}")]
    NoPort(String),
    /// The dataplane's workers could not be started.
    #[error("cannot start the dataplane: {0}")]
    StartDataplane(#[source] RuntimeError),
    /// A port was to be opened before the dataplane was started.
    #[error("the dataplane is not running")]
    NotRunning,
    /// The engine's thread or its runtime could not be started.
    #[error("{what}: {source}")]
    EngineThread {
        /// Which (`engine thread`, `engine runtime`).
        what: &'static str,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A failure injected by the tests' fake plumbing.
    #[cfg(test)]
    #[error("{0}: injected failure")]
    Injected(String),
}

impl From<NetlinkError> for PlumbingError {
    /// Sorts a netlink failure by the step it happened in.
    fn from(e: NetlinkError) -> Self {
        use NetlinkError as N;
        match &e {
            _ if e.is_missing_namespace() => PlumbingError::NamespaceNotFound(e),
            N::Netns { .. } => PlumbingError::EnterNamespace(e),
            N::BadName { .. } | N::BadSetting { .. } => PlumbingError::InvalidInterface(e),
            N::NameInUse { .. } => PlumbingError::NameInUse(e),
            N::Aborted { .. } => PlumbingError::Aborted(e),
            N::NotVeth { .. } => PlumbingError::DeleteLink(e),
            N::Request { step, .. } => match step {
                Step::CreateVeth => PlumbingError::CreateVeth(e),
                Step::SetAddress => PlumbingError::SetAddress(e),
                Step::LinkUp => PlumbingError::LinkUp(e),
                Step::SetRoute => PlumbingError::SetRoute(e),
                Step::Delete => PlumbingError::DeleteLink(e),
                Step::FindPeer
                | Step::LookUp
                | Step::ListLinks
                | Step::ListAddresses
                | Step::ListRoutes => PlumbingError::ReadLinks(e),
            },
        }
    }
}

impl PlumbingError {
    /// The 4xx status for failures the client's request caused (a sandbox or parent interface
    /// that does not exist, a name or setting the kernel refuses, a name already taken in the
    /// sandbox); `None` for the machine's failures (500). Not 404: the API's clients read 404
    /// as "no such network or endpoint".
    pub fn client_status(&self) -> Option<u16> {
        match self {
            PlumbingError::NamespaceNotFound(_)
            | PlumbingError::NoSuchInterface(_)
            | PlumbingError::InvalidInterface(_) => Some(400),
            PlumbingError::NameInUse(_) => Some(409),
            _ => None,
        }
    }
}

/// Interfaces and dataplane ports: the side effects of connect and disconnect.
pub trait Plumbing {
    /// Starts forwarding with the dataplane's current configuration (its ports opened).
    fn start(&mut self, dp: &Arc<Dataplane>) -> Result<(), PlumbingError>;

    /// Creates the endpoint's interface and opens `port` on its host end. On error nothing
    /// is left behind.
    fn attach(
        &mut self,
        a: &Attachment,
        port: &PortConfig,
    ) -> impl Future<Output = Result<(), PlumbingError>>;

    /// Closes the port and deletes the interface (a missing interface is not an error).
    fn detach(
        &mut self,
        host_ifname: &str,
        port: PortId,
    ) -> impl Future<Output = Result<(), PlumbingError>>;

    /// Opens a dataplane port on an existing interface (a macvlan network's parent).
    fn open_port(&mut self, port: &PortConfig) -> Result<(), PlumbingError>;

    /// Closes a port opened with `open_port`.
    fn close_port(&mut self, port: PortId);

    /// Whether the host end of an endpoint's interface still exists (it goes away with its
    /// sandbox).
    fn exists(&self, host_ifname: &str) -> impl Future<Output = Result<bool, PlumbingError>>;

    /// Interfaces with sluice's endpoint prefix, to find leftovers of a crash.
    fn ours(&self) -> impl Future<Output = Result<Vec<String>, PlumbingError>>;

    /// Deletes a leftover interface that no endpoint owns (no port is open on it).
    fn delete_link(&mut self, host_ifname: &str)
        -> impl Future<Output = Result<(), PlumbingError>>;

    /// What the kernel counted for each open port since it was opened (frames dropped in its
    /// AF_PACKET rings or TAP queues before sluice could read them).
    fn kernel_stats(&self) -> Vec<(PortId, KernelPortStats)>;

    /// Stops forwarding (ports closed, interfaces kept for the next start).
    fn stop(&mut self);
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::collections::BTreeMap;

    /// Records interfaces in memory; `fail_attach` makes the next attach fail.
    #[derive(Debug, Default)]
    pub(crate) struct Fake {
        pub(crate) links: BTreeMap<String, Attachment>,
        pub(crate) ports: BTreeMap<u16, String>,
        pub(crate) fail_attach: bool,
        pub(crate) started: bool,
        /// Interfaces that exist for `open_port` and `exists` (a macvlan parent).
        pub(crate) parents: Vec<String>,
        /// What `kernel_stats` reports, by port id.
        pub(crate) kernel: BTreeMap<u16, KernelPortStats>,
    }

    impl Plumbing for Fake {
        fn start(&mut self, dp: &Arc<Dataplane>) -> Result<(), PlumbingError> {
            for p in dp.tables().ports() {
                self.ports.insert(p.config.id.0, p.config.name.clone());
            }
            self.started = true;
            Ok(())
        }

        async fn attach(&mut self, a: &Attachment, port: &PortConfig) -> Result<(), PlumbingError> {
            if std::mem::take(&mut self.fail_attach) {
                return Err(PlumbingError::Injected(a.iface.host_ifname.clone()));
            }
            self.links.insert(a.iface.host_ifname.clone(), a.clone());
            self.ports.insert(port.id.0, port.name.clone());
            Ok(())
        }

        fn open_port(&mut self, port: &PortConfig) -> Result<(), PlumbingError> {
            if !self.parents.contains(&port.name) {
                return Err(PlumbingError::NoSuchInterface(port.name.clone()));
            }
            self.ports.insert(port.id.0, port.name.clone());
            Ok(())
        }

        fn close_port(&mut self, port: PortId) {
            self.ports.remove(&port.0);
        }

        async fn detach(&mut self, host_ifname: &str, port: PortId) -> Result<(), PlumbingError> {
            self.links.remove(host_ifname);
            self.ports.remove(&port.0);
            Ok(())
        }

        async fn exists(&self, host_ifname: &str) -> Result<bool, PlumbingError> {
            Ok(self.links.contains_key(host_ifname)
                || self.parents.iter().any(|p| p == host_ifname))
        }

        async fn ours(&self) -> Result<Vec<String>, PlumbingError> {
            Ok(self.links.keys().cloned().collect())
        }

        async fn delete_link(&mut self, host_ifname: &str) -> Result<(), PlumbingError> {
            self.links.remove(host_ifname);
            Ok(())
        }

        fn kernel_stats(&self) -> Vec<(PortId, KernelPortStats)> {
            self.kernel
                .iter()
                .map(|(id, k)| (PortId(*id), *k))
                .collect()
        }

        fn stop(&mut self) {
            self.started = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::engine::EngineError;
    use std::io;

    fn request(step: Step, errno: i32) -> NetlinkError {
        NetlinkError::Request {
            step,
            ifname: "eth0".into(),
            netns: "pid 7".into(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    #[test]
    fn netlink_failures_name_their_step() {
        let e = PlumbingError::from(request(Step::SetRoute, libc::EEXIST));
        assert!(matches!(e, PlumbingError::SetRoute(_)), "{e}");
        assert!(e.to_string().contains("default route"), "{e}");
        let e = PlumbingError::from(request(Step::CreateVeth, libc::EPERM));
        assert!(matches!(e, PlumbingError::CreateVeth(_)), "{e}");
        assert_eq!(e.client_status(), None);
        let e = PlumbingError::from(request(Step::SetAddress, libc::EINVAL));
        assert!(matches!(e, PlumbingError::SetAddress(_)), "{e}");
    }

    #[test]
    fn a_missing_namespace_is_the_clients_fault() {
        let netns = |op, errno| NetlinkError::Netns {
            netns: "/run/netns/gone".into(),
            op,
            source: io::Error::from_raw_os_error(errno),
        };
        let e = PlumbingError::from(netns("open", libc::ENOENT));
        assert!(matches!(e, PlumbingError::NamespaceNotFound(_)), "{e}");
        assert_eq!(EngineError::from(e).status(), 400);
        let e = PlumbingError::from(netns("enter", libc::EINVAL));
        assert!(matches!(e, PlumbingError::EnterNamespace(_)), "{e}");
        assert_eq!(EngineError::from(e).status(), 500);
        let bad = NetlinkError::BadName {
            name: "a b".into(),
            reason: "no",
        };
        assert_eq!(EngineError::from(PlumbingError::from(bad)).status(), 400);
        let clash = NetlinkError::NameInUse {
            ifname: "eth0".into(),
            netns: "pid 7".into(),
        };
        assert_eq!(EngineError::from(PlumbingError::from(clash)).status(), 409);
    }
}
