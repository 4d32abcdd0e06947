//! The macvlan driver: endpoints appear directly on a parent interface's segment (tagged with
//! `parent=IF.VLAN`); the parent's router is their gateway, and nothing is published.

use sluice_dataplane::config::{Config, NetworkConfig, PortConfig, PortIo, PortRole};
use sluice_dataplane::frame::PortId;

use super::{Created, NetworkDriver};
use crate::model::{EndpointSpec, Network, NetworkSpec};
use crate::state::{State, StateError};

/// The macvlan driver.
pub(super) struct Macvlan;

impl NetworkDriver for Macvlan {
    fn create(&self, state: &State, spec: &NetworkSpec) -> Result<Created, StateError> {
        on_parent(state, spec, || check_parent(state, spec))
    }

    fn connect(&self, net: &Network, spec: &EndpointSpec) -> Result<(), StateError> {
        refuse_published(net, spec)
    }

    fn compile(&self, net: &Network, nc: &mut NetworkConfig, cfg: &mut Config) {
        nc.external_gateway = true;
        cfg.ports.extend(parent_port(net));
    }
}

/// A new network bridged onto a parent (macvlan, ipvlan): its addressing, the parent's port
/// `parent` decides, and no uplink of its own.
pub(super) fn on_parent(
    state: &State,
    spec: &NetworkSpec,
    parent: impl FnOnce() -> Result<Option<PortId>, StateError>,
) -> Result<Created, StateError> {
    let (subnet, gateway) = state.addressing(spec)?;
    let parent_port = parent()?;
    if spec.uplink.is_some() {
        return Err(StateError::UplinkNeedsRouting);
    }
    Ok(Created {
        subnet: Some(subnet),
        gateway: Some(gateway),
        parent_port,
        uplink_port: None,
        vni: None,
    })
}

/// Endpoints on a parent's segment are reached directly: no published ports.
pub(super) fn refuse_published(net: &Network, spec: &EndpointSpec) -> Result<(), StateError> {
    if spec.publish.is_empty() {
        Ok(())
    } else {
        Err(StateError::PublishOnMacvlan(net.spec.name.clone()))
    }
}

/// The dataplane port of `net`'s parent interface (macvlan, ipvlan): an access port, or a
/// trunk carrying the one VLAN of `parent=IF.VLAN`; none for a network without a parent.
pub(super) fn parent_port(net: &Network) -> Option<PortConfig> {
    let (Some(id), Some((ifname, tag))) = (net.parent_port, net.spec.options.parent_and_vlan())
    else {
        return None;
    };
    Some(PortConfig {
        id,
        name: ifname.to_string(),
        io: PortIo::AfPacket,
        role: match tag {
            Some(v) => PortRole::Trunk {
                network: net.dataplane_id,
                allowed: vec![v],
                native: None,
            },
            None => PortRole::Access {
                network: net.dataplane_id,
                vlan: 0,
            },
        },
    })
}

/// A macvlan or ipvlan network's parent: given, a valid VLAN if tagged, not another network's, and a
/// port for it (none for an internal network, which has no parent traffic).
pub(super) fn check_parent(
    state: &State,
    spec: &NetworkSpec,
) -> Result<Option<PortId>, StateError> {
    let (parent, vlan) = spec
        .options
        .parent_and_vlan()
        .ok_or(StateError::MacvlanNeedsParent)?;
    if let Some(v) = vlan {
        if !(1..=4094).contains(&v) || spec.options.vlan.is_some_and(|o| o != v) {
            return Err(StateError::BadParentVlan(
                spec.options.parent.clone().unwrap_or_default(),
            ));
        }
    }
    if let Some(o) = state.networks().find(|n| {
        n.spec
            .options
            .parent_and_vlan()
            .is_some_and(|(p, _)| p == parent)
    }) {
        return Err(StateError::ParentInUse {
            parent: parent.to_string(),
            other: o.spec.name.clone(),
        });
    }
    if spec.internal {
        return Ok(None);
    }
    state
        .free_port()
        .map(Some)
        .ok_or(StateError::TooManyEndpoints)
}
