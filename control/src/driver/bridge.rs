//! The bridge driver (docker0's replacement): a switched network with a gateway, routed
//! (NAPT) to the daemon's uplink or to an uplink of its own (`--uplink`).

use std::collections::BTreeMap;

use sluice_dataplane::config::{
    Config, NetworkConfig, PortConfig, PortIo, PortRole, UplinkConfig, UplinkV6,
};
use sluice_dataplane::frame::PortId;
use sluice_dataplane::wire::MacAddr;

use super::{Created, NetworkDriver};
use crate::model::{Network, NetworkSpec, UplinkSpec};
use crate::naming::valid_ifname;
use crate::state::{State, StateError};

/// The bridge driver.
pub(super) struct Bridge;

impl NetworkDriver for Bridge {
    fn create(&self, state: &State, spec: &NetworkSpec) -> Result<Created, StateError> {
        let (subnet, gateway) = match spec.enable_ipv4 {
            true => Some(state.addressing(spec)?).unzip(),
            false => (None, None),
        };
        if spec.options.parent.is_some() {
            return Err(StateError::ParentNeedsMacvlan);
        }
        let uplink_port = match &spec.uplink {
            Some(u) => Some(check_uplink(state, spec, u)?),
            None => None,
        };
        Ok(Created {
            subnet,
            gateway,
            parent_port: None,
            uplink_port,
            vni: None,
        })
    }

    fn inspect_options(&self, net: &Network, options: &mut BTreeMap<String, String>) {
        if let Some(u) = &net.spec.uplink {
            options.insert("uplink".into(), u.name.clone());
            options.insert("uplink_ip".into(), format!("{}/{}", u.ip.addr, u.ip.prefix));
            if let Some(g) = u.gateway {
                options.insert("uplink_gateway".into(), g.to_string());
            }
            if let Some(ip6) = u.ip6 {
                options.insert("uplink_ip6".into(), format!("{}/{}", ip6.addr, ip6.prefix));
            }
            if let Some(g) = u.gateway6 {
                options.insert("uplink_gateway6".into(), g.to_string());
            }
        }
    }

    fn compile(&self, net: &Network, nc: &mut NetworkConfig, cfg: &mut Config) {
        let (Some(port), Some(u)) = (net.uplink_port, &net.spec.uplink) else {
            return;
        };
        nc.uplink = Some(port);
        cfg.ports.push(PortConfig {
            id: port,
            name: u.name.clone(),
            io: PortIo::AfPacket,
            role: PortRole::Uplink,
        });
        cfg.network_uplinks.push(UplinkConfig {
            port,
            ip: u.ip,
            mac: u.mac.unwrap_or_else(|| MacAddr::from_ipv4(u.ip.addr)),
            next_hop: u.gateway,
            mtu: net.spec.options.mtu.unwrap_or(1500),
        });
        cfg.uplinks6.extend(u.ip6.map(|ip| UplinkV6 {
            port,
            ip,
            next_hop: u.gateway6,
        }));
    }
}

/// A network's own uplink: a routed network, an interface no other network uses, an address
/// outside every network's subnet; and a port for it.
fn check_uplink(state: &State, spec: &NetworkSpec, u: &UplinkSpec) -> Result<PortId, StateError> {
    if spec.internal {
        return Err(StateError::UplinkNeedsRouting);
    }
    if u.gateway6.is_some() && u.ip6.is_none() {
        return Err(StateError::UplinkGateway6NeedsIp6);
    }
    if !valid_ifname(&u.name) {
        return Err(StateError::InvalidIfname(u.name.clone()));
    }
    if let Some(o) = state.networks().find(|n| {
        n.spec.uplink.as_ref().is_some_and(|x| x.name == u.name)
            || n.spec
                .options
                .parent_and_vlan()
                .is_some_and(|(p, _)| p == u.name)
    }) {
        return Err(StateError::ParentInUse {
            parent: u.name.clone(),
            other: o.spec.name.clone(),
        });
    }
    if let Some(o) = state
        .networks()
        .find(|n| n.subnet.is_some_and(|s| s.overlaps(&u.ip)))
    {
        return Err(StateError::UplinkOverlaps {
            ip: u.ip,
            other: o.spec.name.clone(),
        });
    }
    state.free_port().ok_or(StateError::TooManyEndpoints)
}
