//! The real plumbing: veth pairs through rtnetlink (`crate::netlink`) and dataplane ports
//! through the runtime's hot-plug (`Runtime::attach`/`detach`).

use std::sync::Arc;

use sluice_dataplane::config::PortConfig;
use sluice_dataplane::frame::PortId;
use sluice_dataplane::pipeline::Dataplane;
use sluice_dataplane::runtime::{Runtime, RuntimeConfig};

use crate::daemon::plumbing::{Attachment, Plumbing, PlumbingError};
use crate::model::Placement;
use crate::netlink::{self, NetlinkError, SandboxIface};

/// Host ends of endpoint veths are `sl` + 10 hex digits of the endpoint id (see `State::connect`).
fn is_endpoint_ifname(name: &str) -> bool {
    name.strip_prefix("sl").is_some_and(|h| {
        h.len() == 10
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

fn err(e: NetlinkError) -> PlumbingError {
    PlumbingError(e.to_string())
}

/// rtnetlink + the dataplane runtime, in the daemon's network namespace.
pub struct Kernel {
    config: RuntimeConfig,
    runtime: Option<Runtime>,
}

impl Kernel {
    /// Plumbing whose runtime will run with `config`.
    pub fn new(config: RuntimeConfig) -> Kernel {
        Kernel {
            config,
            runtime: None,
        }
    }

    fn runtime(&self) -> Result<&Runtime, PlumbingError> {
        self.runtime
            .as_ref()
            .ok_or_else(|| PlumbingError("the dataplane is not running".into()))
    }
}

impl Plumbing for Kernel {
    fn start(&mut self, dp: &Arc<Dataplane>) -> Result<(), PlumbingError> {
        let rt = Runtime::start(dp, &self.config)
            .map_err(|e| PlumbingError(format!("cannot start the dataplane: {e}")))?;
        self.runtime = Some(rt);
        Ok(())
    }

    async fn attach(&mut self, a: &Attachment, port: &PortConfig) -> Result<(), PlumbingError> {
        let iface = SandboxIface {
            host_ifname: a.host_ifname.clone(),
            sandbox_ifname: a.sandbox_ifname.clone(),
            mac: a.mac,
            ip: a.ip,
            gateway: a.gateway,
            mtu: a.mtu,
        };
        match a.placement {
            Placement::Sandbox => netlink::attach(&a.sandbox, &iface).await,
            Placement::HandOff => {
                netlink::create_veth_pair(&a.host_ifname, &a.sandbox_ifname, Some(a.mac), a.mtu)
                    .await
            }
        }
        .map_err(err)?;
        let linked = std::time::Instant::now();
        if let Err(e) = self.runtime().and_then(|rt| {
            rt.attach(port)
                .map_err(|e| PlumbingError(format!("cannot open {}: {e}", a.host_ifname)))
        }) {
            if let Err(undo) = netlink::detach(&a.host_ifname).await {
                tracing::error!(
                    "cannot remove {} after a failed attach: {undo}",
                    a.host_ifname
                );
            }
            return Err(e);
        }
        tracing::debug!(
            port = %a.host_ifname,
            open_ms = linked.elapsed().as_secs_f64() * 1e3,
            "dataplane port opened"
        );
        Ok(())
    }

    fn open_port(&mut self, port: &PortConfig) -> Result<(), PlumbingError> {
        self.runtime()?
            .attach(port)
            .map_err(|e| PlumbingError(format!("cannot open {}: {e}", port.name)))
    }

    fn close_port(&mut self, port: PortId) {
        if let Some(rt) = &self.runtime {
            rt.detach(port);
        }
    }

    async fn detach(&mut self, host_ifname: &str, port: PortId) -> Result<(), PlumbingError> {
        if let Some(rt) = &self.runtime {
            rt.detach(port);
        }
        netlink::detach(host_ifname).await.map(drop).map_err(err)
    }

    async fn exists(&self, host_ifname: &str) -> Result<bool, PlumbingError> {
        netlink::link_exists(host_ifname).await.map_err(err)
    }

    async fn ours(&self) -> Result<Vec<String>, PlumbingError> {
        Ok(netlink::link_names_with_prefix("sl")
            .await
            .map_err(err)?
            .into_iter()
            .filter(|n| is_endpoint_ifname(n))
            .collect())
    }

    async fn delete_link(&mut self, host_ifname: &str) -> Result<(), PlumbingError> {
        match netlink::detach(host_ifname).await {
            Ok(_) | Err(NetlinkError::NotVeth { .. }) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_endpoint_names_are_ours() {
        assert!(is_endpoint_ifname("sl0123456789"));
        assert!(is_endpoint_ifname("slabcdef0123"));
        assert!(!is_endpoint_ifname("sl0123"));
        assert!(!is_endpoint_ifname("slABCDEF0123"));
        assert!(!is_endpoint_ifname("sl12345-host0"));
        assert!(!is_endpoint_ifname("eth0"));
    }
}
