//! Connecting and disconnecting endpoints: docker's rules for names, sandboxes, MACs, static
//! addresses and published ports, the driver's own checks, and the interface names.

use std::net::{Ipv4Addr, Ipv6Addr};

use sluice_dataplane::wire::MacAddr;

use super::{State, StateError, PREDEFINED};
use crate::driver;
use crate::ipam::Pool;
use crate::model::{Endpoint, EndpointSpec, Network, Placement, Stamp};
use crate::naming::{handoff_ifname, host_ifname, valid_ifname, valid_name};

/// docker's MAC for an endpoint without a static one: 02:42 and its v4 address, or on an
/// IPv6-only network one derived from its v6 address.
fn derived_mac(ip: Option<Ipv4Addr>, ip6: Option<Ipv6Addr>) -> MacAddr {
    match (ip, ip6) {
        (Some(ip), _) => MacAddr::from_ipv4(ip),
        (None, Some(ip6)) => MacAddr::from_ipv6(ip6),
        (None, None) => MacAddr::from_ipv4(Ipv4Addr::UNSPECIFIED),
    }
}

impl State {
    /// Connects an endpoint (`docker network connect`): checks the name, sandbox, MAC and
    /// published ports, picks the host ports left to it, then takes the static address or
    /// allocates one.
    pub fn connect(
        &mut self,
        mut spec: EndpointSpec,
        stamp: Stamp,
    ) -> Result<&Endpoint, StateError> {
        crate::validate::endpoint_spec(&spec)?;
        let net = self.network(&spec.network)?;
        let (net_id, net_name) = (net.id.clone(), net.spec.name.clone());
        let has_ipv4 = net.spec.enable_ipv4;
        let host_ifname = host_ifname(&stamp.id);
        self.check_endpoint(net, &spec, &stamp.id, &host_ifname)?;
        spec.publish = self.pick_host_ports(&spec)?;
        let port = self.free_port().ok_or(StateError::TooManyEndpoints)?;
        let v4 = match has_ipv4 {
            true => Some(self.address(&net_id, &net_name, spec.ip)?),
            false => None,
        };
        let v6 = self.address6(&net_id, &net_name, &spec)?;
        let mac = spec.mac.unwrap_or_else(|| {
            derived_mac(
                v4.as_ref().map(|(_, ip)| *ip),
                v6.as_ref().map(|(_, ip)| *ip),
            )
        });
        if let Some(o) = self.endpoints_of(&net_id).find(|e| e.mac == mac) {
            return Err(StateError::MacInUse {
                mac,
                other: o.spec.name.clone(),
                network: net_name,
            });
        }
        let sandbox_ifname = self.sandbox_ifname(&spec, &stamp.id)?;
        let ip = v4.map(|(pool, ip)| {
            self.pools.insert(net_id.clone(), pool);
            ip
        });
        let ip6 = v6.map(|(pool6, ip6)| {
            self.pools6.insert(net_id.clone(), pool6);
            ip6
        });
        let id = stamp.id;
        let e = Endpoint {
            host_ifname,
            sandbox_ifname,
            id: id.clone(),
            spec,
            network_id: net_id,
            ip,
            ip6,
            mac,
            port,
        };
        self.endpoints.insert(id.clone(), e);
        Ok(&self.endpoints[&id])
    }

    /// The rules an endpoint joining `net` must pass before anything is allocated for it.
    fn check_endpoint(
        &self,
        net: &Network,
        spec: &EndpointSpec,
        id: &str,
        host_ifname: &str,
    ) -> Result<(), StateError> {
        let net_name = &net.spec.name;
        let drv = driver::of(net.spec.driver);
        if !drv.has_ipam() {
            return Err(StateError::CannotConnect(net_name.clone()));
        }
        if !valid_name(&spec.name) {
            return Err(StateError::InvalidName(spec.name.clone()));
        }
        if self.endpoints.contains_key(id)
            || self
                .endpoints
                .values()
                .any(|e| e.host_ifname == host_ifname)
        {
            return Err(StateError::IdTaken(id.to_string()));
        }
        for e in self.endpoints_of(&net.id) {
            if e.spec.name == spec.name {
                return Err(StateError::EndpointNameTaken {
                    name: spec.name.clone(),
                    network: net_name.clone(),
                });
            }
            if e.spec.sandbox == spec.sandbox {
                return Err(StateError::AlreadyConnected {
                    sandbox: spec.sandbox.to_string(),
                    network: net_name.clone(),
                });
            }
        }
        if !net.spec.enable_ipv4 {
            if spec.ip.is_some() {
                return Err(StateError::Ipv4Disabled("--ip"));
            }
            // `-p 8080:80` is published on the uplink's v6 address; a v4 host address cannot be.
            if spec.publish.iter().any(|p| p.host_ip.is_some()) {
                return Err(StateError::Ipv4Disabled(
                    "a port published on an IPv4 host address",
                ));
            }
        }
        if spec.ip.is_some() && net.spec.subnet.is_none() {
            return Err(StateError::StaticIpNeedsSubnet);
        }
        if !spec.aliases.is_empty() && PREDEFINED.contains(&net_name.as_str()) {
            return Err(StateError::AliasOnDefaultBridge);
        }
        if let Some(mac) = spec.mac {
            if mac.is_multicast() || mac == MacAddr::default() {
                return Err(StateError::BadMac(mac));
            }
        }
        if !spec.publish.is_empty() && net.spec.internal {
            return Err(StateError::PublishOnInternal(net_name.clone()));
        }
        drv.connect(net, spec)?;
        self.check_publish(spec)
    }

    /// The endpoint's address (`wanted`, or the pool's next free one) and the network's pool
    /// with it taken, to be stored once every other rule has passed.
    fn address(
        &self,
        net_id: &str,
        net_name: &str,
        wanted: Option<Ipv4Addr>,
    ) -> Result<(Pool, Ipv4Addr), StateError> {
        let mut pool = self
            .pools
            .get(net_id)
            .cloned()
            .ok_or_else(|| StateError::CannotConnect(net_name.to_string()))?;
        let ip = match wanted {
            Some(ip) => pool.claim(ip).map(|()| ip),
            None => pool.allocate(),
        }
        .map_err(|err| StateError::Ipam {
            network: net_name.to_string(),
            err,
        })?;
        Ok((pool, ip))
    }

    /// The interface name inside the sandbox: the one asked for (unique in the sandbox), the
    /// first free `ethN`, or the hand-off name when the engine moves the peer itself.
    fn sandbox_ifname(&self, spec: &EndpointSpec, id: &str) -> Result<String, StateError> {
        let taken: Vec<&str> = self
            .endpoints
            .values()
            .filter(|e| e.spec.sandbox == spec.sandbox)
            .map(|e| e.sandbox_ifname.as_str())
            .collect();
        Ok(match (&spec.ifname, spec.placement) {
            (_, Placement::HandOff) => handoff_ifname(id),
            (Some(name), Placement::Sandbox) => {
                if !valid_ifname(name) {
                    return Err(StateError::InvalidIfname(name.clone()));
                }
                if taken.contains(&name.as_str()) {
                    return Err(StateError::IfnameTaken {
                        ifname: name.clone(),
                        sandbox: spec.sandbox.to_string(),
                    });
                }
                name.clone()
            }
            (None, Placement::Sandbox) => (0..)
                .map(|i| format!("eth{i}"))
                .find(|n| !taken.contains(&n.as_str()))
                .unwrap_or_default(),
        })
    }

    /// Refuses published ports that clash with each other or with any endpoint's.
    fn check_publish(&self, spec: &EndpointSpec) -> Result<(), StateError> {
        for (i, p) in spec.publish.iter().enumerate() {
            if let Some(o) = spec.publish[..i].iter().find(|o| o.clashes_with(p)) {
                return Err(StateError::PortClash {
                    port: *p,
                    other: spec.name.clone(),
                    other_port: *o,
                });
            }
            for e in self.endpoints.values() {
                if let Some(o) = e.spec.publish.iter().find(|o| o.clashes_with(p)) {
                    return Err(StateError::PortClash {
                        port: *p,
                        other: e.spec.name.clone(),
                        other_port: *o,
                    });
                }
            }
        }
        Ok(())
    }

    /// Disconnects an endpoint (by name or id) from a network and releases its address.
    pub fn disconnect(&mut self, network: &str, endpoint: &str) -> Result<Endpoint, StateError> {
        let n = self.network(network)?;
        let (net_id, net_name) = (n.id.clone(), n.spec.name.clone());
        let id = self
            .endpoints_of(&net_id)
            .find(|e| e.id == endpoint || e.spec.name == endpoint)
            .map(|e| e.id.clone())
            .ok_or_else(|| StateError::NoSuchEndpoint {
                endpoint: crate::validate::shown(endpoint),
                network: net_name.clone(),
            })?;
        let e = self
            .endpoints
            .remove(&id)
            .ok_or_else(|| StateError::NoSuchEndpoint {
                endpoint: crate::validate::shown(endpoint),
                network: net_name,
            })?;
        if let (Some(ip), Some(p)) = (e.ip, self.pools.get_mut(&net_id)) {
            p.release(ip);
        }
        if let (Some(ip), Some(p)) = (e.ip6, self.pools6.get_mut(&net_id)) {
            p.release(ip);
        }
        Ok(e)
    }
}
