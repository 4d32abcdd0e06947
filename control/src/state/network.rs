//! Creating and removing networks: names, addressing (docker's rules for subnets, gateways,
//! ranges and aux addresses) and the driver's own checks.

use std::net::Ipv4Addr;

use sluice_dataplane::config::Ipv4Cidr;
use sluice_dataplane::counters::MAX_PORTS;
use sluice_dataplane::frame::{NetworkId, PortId};

use super::{ipv6, State, StateError, PREDEFINED};
use crate::driver;
use crate::ipam::{first_overlap, network_of, next_free_subnet, range_within};
use crate::model::{Driver, Network, NetworkSpec, Stamp};
use crate::naming::valid_name;

impl State {
    /// Creates a network (`docker network create`).
    pub fn create_network(
        &mut self,
        spec: NetworkSpec,
        stamp: Stamp,
    ) -> Result<&Network, StateError> {
        crate::validate::network_spec(&spec)?;
        if !valid_name(&spec.name) {
            return Err(StateError::InvalidName(spec.name));
        }
        if self.networks.values().any(|n| n.spec.name == spec.name) {
            return Err(StateError::NameTaken(spec.name));
        }
        if self.networks.contains_key(&stamp.id) {
            return Err(StateError::IdTaken(stamp.id));
        }
        if spec.options.vni.is_some() && spec.driver != Driver::Overlay {
            return Err(StateError::VniNeedsOverlay);
        }
        let ipvlan_opts = spec.options.ipvlan_mode.is_some() || spec.options.ipvlan_flag.is_some();
        if ipvlan_opts && spec.driver != Driver::Ipvlan {
            return Err(StateError::IpvlanOptionNeedsIpvlan);
        }
        if !spec.enable_ipv4 {
            ipv6::check_v6_only(&spec)?;
        }
        let created = driver::of(spec.driver).create(self, &spec)?;
        let mut spec = spec;
        spec.options.vni = created.vni.or(spec.options.vni);
        let v6 = self.addressing6(&spec)?;
        let dataplane_id = (0..=u16::MAX)
            .map(NetworkId)
            .find(|id| self.networks.values().all(|n| n.dataplane_id != *id))
            .ok_or(StateError::TooManyNetworks)?;
        let id = stamp.id.clone();
        self.insert_network(Network {
            id: stamp.id,
            created: stamp.created,
            spec,
            subnet: created.subnet,
            gateway: created.gateway,
            subnet6: v6.map(|(s, _)| s),
            gateway6: v6.map(|(_, g)| g),
            dataplane_id,
            parent_port: created.parent_port,
            uplink_port: created.uplink_port,
        });
        Ok(&self.networks[&id])
    }

    /// A free dataplane port id (endpoints and the ports networks own share the space).
    pub(crate) fn free_port(&self) -> Option<PortId> {
        (1..MAX_PORTS as u16).map(PortId).find(|p| {
            self.endpoints.values().all(|e| e.port != *p)
                && self
                    .networks
                    .values()
                    .all(|n| n.own_ports().all(|o| o != *p))
        })
    }

    /// The subnet and gateway a new network gets, after checking every address rule.
    pub(crate) fn addressing(
        &self,
        spec: &NetworkSpec,
    ) -> Result<(Ipv4Cidr, Ipv4Addr), StateError> {
        let subnet = match spec.subnet {
            Some(s) => {
                let s = network_of(s);
                if s.prefix > 30 {
                    return Err(StateError::SubnetTooSmall(s));
                }
                let others = self
                    .networks
                    .values()
                    .filter_map(|n| Some((&n.spec.name, n.subnet?)));
                if let Some((other, other_subnet)) = first_overlap(s, others) {
                    return Err(StateError::Overlap {
                        subnet: s,
                        other: other.clone(),
                        other_subnet,
                    });
                }
                crate::validate::own_clash(s, &self.own_addresses(spec))?;
                s
            }
            None => {
                if spec.gateway.is_some() {
                    return Err(StateError::NeedsSubnet("--gateway"));
                }
                if spec.ip_range.is_some() {
                    return Err(StateError::NeedsSubnet("--ip-range"));
                }
                if !spec.aux_addresses.is_empty() {
                    return Err(StateError::NeedsSubnet("--aux-address"));
                }
                let own = self.own_addresses(spec).into_iter().map(|(_, c)| c);
                let subnets = self.networks.values().filter_map(|n| n.subnet);
                let used: Vec<Ipv4Cidr> = subnets.chain(own).collect();
                next_free_subnet(used.iter()).ok_or(StateError::PoolsExhausted)?
            }
        };
        let usable = |ip: Ipv4Addr| {
            subnet.contains(ip) && ip != subnet.network() && ip != subnet.broadcast()
        };
        let not_in = |what: String, value: String| StateError::NotInSubnet {
            what,
            value,
            subnet,
        };
        let gateway = spec
            .gateway
            .unwrap_or_else(|| Ipv4Addr::from(u32::from(subnet.network()) + 1));
        if !usable(gateway) {
            return Err(not_in("gateway".into(), gateway.to_string()));
        }
        if let Some(r) = spec.ip_range {
            if !range_within(r, subnet) {
                return Err(not_in("ip range".into(), r.to_string()));
            }
        }
        for (name, ip) in &spec.aux_addresses {
            if !usable(*ip) {
                return Err(not_in(
                    format!("auxiliary address {name:?}"),
                    ip.to_string(),
                ));
            }
        }
        Ok((subnet, gateway))
    }

    /// Removes a network (`docker network rm`); it must have no endpoints.
    pub fn remove_network(&mut self, key: &str) -> Result<Network, StateError> {
        let n = self.network(key)?;
        if PREDEFINED.contains(&n.spec.name.as_str()) {
            return Err(StateError::Predefined(n.spec.name.clone()));
        }
        let count = self.endpoints_of(&n.id).count();
        if count > 0 {
            return Err(StateError::HasEndpoints {
                network: n.spec.name.clone(),
                count,
            });
        }
        let id = n.id.clone();
        self.pools.remove(&id);
        self.pools6.remove(&id);
        self.networks
            .remove(&id)
            .ok_or(StateError::NoSuchNetwork(id))
    }
}
