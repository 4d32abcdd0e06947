//! The real plumbing: veth pairs through rtnetlink (`crate::netlink`) and dataplane ports
//! through the runtime's hot-plug (`Runtime::attach`/`detach`).

use std::sync::Arc;

use sluice_dataplane::config::PortConfig;
use sluice_dataplane::frame::PortId;
use sluice_dataplane::pipeline::Dataplane;
use sluice_dataplane::port::KernelPortStats;
use sluice_dataplane::runtime::{Runtime, RuntimeConfig};

use crate::daemon::plumbing::{Attachment, Plumbing, PlumbingError};
use crate::model::Placement;
use crate::naming::{is_endpoint_ifname, ENDPOINT_PREFIX};
use crate::netlink::{self, NetlinkError};

/// rtnetlink + the dataplane runtime, in the daemon's network namespace.
pub struct Kernel {
    config: RuntimeConfig,
    runtime: Option<Runtime>,
    /// The dataplane started, whose flow offload reports its errors (`log_offload_error`).
    dp: Option<Arc<Dataplane>>,
}

impl Kernel {
    /// Plumbing whose runtime will run with `config`.
    pub fn new(config: RuntimeConfig) -> Kernel {
        Kernel {
            config,
            runtime: None,
            dp: None,
        }
    }

    fn runtime(&self) -> Result<&Runtime, PlumbingError> {
        self.runtime.as_ref().ok_or(PlumbingError::NotRunning)
    }

    /// Logs why the flow offload asked for does not run, or a port it could not attach to
    /// (forwarding goes on in userspace either way).
    fn log_offload_error(&self) {
        if let Some(e) = self.dp.as_ref().and_then(|dp| dp.offloads().take_error()) {
            tracing::warn!("flow offload off: {e}");
        }
    }
}

impl Plumbing for Kernel {
    fn start(&mut self, dp: &Arc<Dataplane>) -> Result<(), PlumbingError> {
        let rt = Runtime::start(dp, &self.config).map_err(PlumbingError::StartDataplane)?;
        self.runtime = Some(rt);
        self.dp = Some(Arc::clone(dp));
        self.log_offload_error();
        Ok(())
    }

    async fn attach(&mut self, a: &Attachment, port: &PortConfig) -> Result<(), PlumbingError> {
        let i = &a.iface;
        match a.placement {
            Placement::Sandbox => netlink::attach(&a.sandbox, i).await,
            Placement::HandOff => {
                netlink::create_veth_pair(&i.host_ifname, &i.sandbox_ifname, Some(i.mac), i.mtu)
                    .await
            }
        }
        .map_err(PlumbingError::from)?;
        let linked = std::time::Instant::now();
        if let Err(e) = self.runtime().and_then(|rt| {
            rt.attach(port).map_err(|source| PlumbingError::OpenPort {
                ifname: a.iface.host_ifname.clone(),
                source,
            })
        }) {
            if let Err(undo) = netlink::detach(&a.iface.host_ifname).await {
                tracing::error!(
                    "cannot remove {} after a failed attach: {undo}",
                    a.iface.host_ifname
                );
            }
            return Err(e);
        }
        tracing::debug!(
            port = %a.iface.host_ifname,
            open_ms = linked.elapsed().as_secs_f64() * 1e3,
            "dataplane port opened"
        );
        self.log_offload_error();
        Ok(())
    }

    fn open_port(&mut self, port: &PortConfig) -> Result<(), PlumbingError> {
        self.runtime()?
            .attach(port)
            .map_err(|source| PlumbingError::OpenPort {
                ifname: port.name.clone(),
                source,
            })?;
        self.log_offload_error();
        Ok(())
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
        netlink::detach(host_ifname)
            .await
            .map(drop)
            .map_err(PlumbingError::from)
    }

    async fn exists(&self, host_ifname: &str) -> Result<bool, PlumbingError> {
        netlink::link_exists(host_ifname)
            .await
            .map_err(PlumbingError::from)
    }

    async fn ours(&self) -> Result<Vec<String>, PlumbingError> {
        Ok(netlink::link_names_with_prefix(ENDPOINT_PREFIX)
            .await
            .map_err(PlumbingError::from)?
            .into_iter()
            .filter(|n| is_endpoint_ifname(n))
            .collect())
    }

    async fn delete_link(&mut self, host_ifname: &str) -> Result<(), PlumbingError> {
        match netlink::detach(host_ifname).await {
            Ok(_) | Err(NetlinkError::NotVeth { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn kernel_stats(&self) -> Vec<(PortId, KernelPortStats)> {
        self.runtime
            .as_ref()
            .map(Runtime::port_kernel_stats)
            .unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown();
        }
    }
}
