//! What the engine needs from the machine, behind one trait (netavark's driver-trait idea):
//! creating an endpoint's interface in its sandbox and opening its dataplane port, and undoing
//! that. `Kernel` is the real thing (rtnetlink + the dataplane runtime); tests use a fake, so
//! the engine's ordering and rollback rules are tested without root.

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;

use sluice_dataplane::config::{Ipv4Cidr, PortConfig};
use sluice_dataplane::frame::PortId;
use sluice_dataplane::pipeline::Dataplane;
use sluice_dataplane::wire::MacAddr;

use crate::model::{Placement, Sandbox};

/// The interface an endpoint gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// Where the interface goes.
    pub sandbox: Sandbox,
    /// The host end, which the dataplane reads.
    pub host_ifname: String,
    /// The name inside the sandbox (`eth0`, ...).
    pub sandbox_ifname: String,
    /// The endpoint's MAC.
    pub mac: MacAddr,
    /// The endpoint's address and prefix.
    pub ip: Ipv4Cidr,
    /// Default route via this address (first routed network only).
    pub gateway: Option<Ipv4Addr>,
    /// The interface MTU.
    pub mtu: u16,
    /// Whether sluice moves the peer into the sandbox or leaves it for the engine.
    pub placement: Placement,
}

/// Why plumbing failed; the message names the interface and what failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlumbingError(pub String);

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
                return Err(PlumbingError(format!(
                    "{}: injected failure",
                    a.host_ifname
                )));
            }
            self.links.insert(a.host_ifname.clone(), a.clone());
            self.ports.insert(port.id.0, port.name.clone());
            Ok(())
        }

        fn open_port(&mut self, port: &PortConfig) -> Result<(), PlumbingError> {
            if !self.parents.contains(&port.name) {
                return Err(PlumbingError(format!("no interface {}", port.name)));
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

        fn stop(&mut self) {
            self.started = false;
        }
    }
}
