//! The overlay driver (docker's `overlay`): one network across hosts. On each host it is a
//! bridge domain with the same subnet, gateway address and MAC; frames to endpoints on other
//! hosts travel in VXLAN (the dataplane's `vxlan` stage) through the daemon's uplink, whose
//! address is this host's VTEP. The VNI is given (`-o vni=N`) or the lowest free one from 4096
//! up (docker's first overlay VNI); the MTU defaults to 1450, what fits a 1500-byte underlay
//! after the 50 bytes of VXLAN over IPv4.

use std::collections::BTreeMap;

use sluice_dataplane::config::{Config, NetworkConfig};
use sluice_dataplane::overlay::OverlayConfig;
use sluice_dataplane::wire::vxlan::MAX_VNI;

use super::{Created, NetworkDriver};
use crate::model::{Driver, Network, NetworkSpec};
use crate::state::{State, StateError};

/// The first VNI handed out when none is given (docker's overlay starts there too).
const FIRST_VNI: u32 = 4096;

/// The MTU of an overlay network unless `-o mtu` says otherwise.
const DEFAULT_MTU: u16 = 1450;

/// The overlay driver.
pub(super) struct Overlay;

impl NetworkDriver for Overlay {
    fn create(&self, state: &State, spec: &NetworkSpec) -> Result<Created, StateError> {
        if spec.options.parent.is_some() {
            return Err(StateError::ParentNeedsMacvlan);
        }
        if spec.uplink.is_some() {
            return Err(StateError::NotForOverlay("--uplink"));
        }
        if spec.options.vlan.is_some() {
            return Err(StateError::NotForOverlay("--opt vlan"));
        }
        let (subnet, gateway) = state.addressing(spec)?;
        let vni = vni_for(state, spec.options.vni)?;
        Ok(Created {
            subnet: Some(subnet),
            gateway: Some(gateway),
            parent_port: None,
            uplink_port: None,
            vni: Some(vni),
        })
    }

    fn mtu(&self, net: &Network) -> u16 {
        net.spec.options.mtu.unwrap_or(DEFAULT_MTU)
    }

    fn inspect_options(&self, _net: &Network, options: &mut BTreeMap<String, String>) {
        options
            .entry(crate::model::OPT_MTU.to_string())
            .or_insert_with(|| DEFAULT_MTU.to_string());
    }

    fn compile(&self, net: &Network, nc: &mut NetworkConfig, cfg: &mut Config) {
        let Some(vni) = net.spec.options.vni else {
            return;
        };
        nc.mtu = self.mtu(net);
        cfg.overlays.push(OverlayConfig {
            network: net.dataplane_id,
            vni,
            remotes: Vec::new(),
        });
    }
}

/// The VNI of a new overlay network: `asked` if no other overlay network has it, else the
/// lowest free one from [`FIRST_VNI`].
fn vni_for(state: &State, asked: Option<u32>) -> Result<u32, StateError> {
    let holder = |vni: u32| {
        state
            .networks()
            .find(|n| n.spec.driver == Driver::Overlay && n.spec.options.vni == Some(vni))
    };
    match asked {
        Some(vni) => match holder(vni) {
            Some(other) => Err(StateError::VniTaken {
                vni,
                other: other.spec.name.clone(),
            }),
            None => Ok(vni),
        },
        None => (FIRST_VNI..=MAX_VNI)
            .find(|v| holder(*v).is_none())
            .ok_or(StateError::VnisExhausted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::dataplane_config;
    use crate::state::tests::{ep, fresh, net};
    use sluice_dataplane::config::NatConfig;
    use sluice_dataplane::tables::Tables;

    fn overlay(name: &str, subnet: &str, opts: &[&str]) -> NetworkSpec {
        let mut n = net(name, Some(subnet));
        n.driver = Driver::Overlay;
        for o in opts {
            n.options.set(o).unwrap();
        }
        n
    }

    #[test]
    fn vnis_are_given_or_allocated_from_4096() {
        let (mut s, mut st) = fresh();
        s.create_network(overlay("a", "10.20.0.0/24", &[]), st())
            .unwrap();
        s.create_network(overlay("b", "10.21.0.0/24", &["vni=4097"]), st())
            .unwrap();
        s.create_network(overlay("c", "10.22.0.0/24", &[]), st())
            .unwrap();
        let vni = |n: &str| s.inspect(n).unwrap().options["vni"].clone();
        assert_eq!(
            (vni("a"), vni("b"), vni("c")),
            ("4096".into(), "4097".into(), "4098".into())
        );
        assert_eq!(
            s.create_network(overlay("d", "10.23.0.0/24", &["vni=4097"]), st()),
            Err(StateError::VniTaken {
                vni: 4097,
                other: "b".into()
            })
        );
        let mut bridge = net("e", Some("10.24.0.0/24"));
        bridge.options.set("vni=7").unwrap();
        assert_eq!(
            s.create_network(bridge, st()),
            Err(StateError::VniNeedsOverlay)
        );
        let mut vlan = overlay("f", "10.25.0.0/24", &["vlan=5"]);
        assert_eq!(
            s.create_network(vlan.clone(), st()),
            Err(StateError::NotForOverlay("--opt vlan"))
        );
        vlan.options.vlan = None;
        vlan.options.parent = Some("eth1".into());
        assert_eq!(
            s.create_network(vlan, st()),
            Err(StateError::ParentNeedsMacvlan)
        );
    }

    #[test]
    fn compiles_to_an_overlay_with_mtu_1450() {
        let (mut s, mut st) = fresh();
        s.create_network(overlay("ov", "10.20.0.0/24", &["vni=5000"]), st())
            .unwrap();
        s.create_network(overlay("big", "10.21.0.0/24", &["mtu=9000"]), st())
            .unwrap();
        s.connect(ep("ov", "web", 1), st()).unwrap();
        let cfg = dataplane_config(&s, None, NatConfig::default());
        Tables::build(&cfg, None).unwrap();
        let id = |n: &str| {
            s.networks()
                .find(|x| x.spec.name == n)
                .unwrap()
                .dataplane_id
        };
        let mtu = |n: &str| cfg.networks.iter().find(|x| x.id == id(n)).unwrap().mtu;
        assert_eq!((mtu("ov"), mtu("big")), (1450, 9000));
        // The endpoints' own interfaces take the overlay's MTU too (what fits once wrapped).
        let iface_mtu = |n: &str| {
            let net = s.networks().find(|x| x.spec.name == n).unwrap();
            super::super::of(net.spec.driver).mtu(net)
        };
        assert_eq!((iface_mtu("ov"), iface_mtu("big")), (1450, 9000));
        let vnis: Vec<(u32, usize)> = cfg
            .overlays
            .iter()
            .map(|o| (o.vni, o.remotes.len()))
            .collect();
        assert!(
            vnis.contains(&(5000, 0)) && vnis.contains(&(4096, 0)),
            "{vnis:?}"
        );
        let o = s.inspect("ov").unwrap().options;
        assert_eq!(
            (o["vni"].as_str(), o[crate::model::OPT_MTU].as_str()),
            ("5000", "1450")
        );
    }

    #[test]
    fn cluster_remotes_fill_the_table_and_bad_ones_are_skipped() {
        use crate::cluster::records::EndpointRecord;
        use sluice_dataplane::overlay::RemoteEndpoint;
        use sluice_dataplane::wire::MacAddr;
        use std::net::Ipv4Addr;
        let (mut s, mut st) = fresh();
        s.create_network(overlay("ov", "10.20.0.0/24", &[]), st())
            .unwrap();
        let local_mac = s.connect(ep("ov", "web", 1), st()).unwrap().mac;
        let remote = |ip: [u8; 4], vtep: u8| EndpointRecord {
            id: format!("id{}", ip[3]),
            name: format!("r{}", ip[3]),
            host: Ipv4Addr::new(192, 0, 2, vtep),
            node: String::new(),
            mac: MacAddr::from_ipv4(ip.into()),
            ip: ip.into(),
            ip6: Some(format!("fd00:20::{}", ip[3]).parse().unwrap()),
            aliases: Vec::new(),
        };
        let good = remote([10, 20, 0, 9], 2);
        let outside = remote([10, 99, 0, 9], 2);
        let clash = EndpointRecord {
            mac: local_mac,
            ..remote([10, 20, 0, 10], 3)
        };
        let mut remotes = std::collections::BTreeMap::new();
        remotes.insert("ov".to_string(), vec![good.clone(), outside, clash]);
        remotes.insert("gone".to_string(), vec![good]);
        let mut cfg = dataplane_config(&s, None, NatConfig::default());
        crate::cluster::fill_remotes(&s, &mut cfg, &remotes);
        assert_eq!(
            cfg.overlays[0].remotes,
            vec![RemoteEndpoint {
                mac: MacAddr::from_ipv4(Ipv4Addr::new(10, 20, 0, 9)),
                ipv4: Ipv4Addr::new(10, 20, 0, 9),
                ipv6: None,
                vtep: Ipv4Addr::new(192, 0, 2, 2),
            }],
            "a v4-only network takes no v6 address"
        );
        Tables::build(&cfg, None).unwrap();
    }

    #[test]
    fn dual_stack_overlays_take_the_remote_v6_addresses_that_fit() {
        use crate::cluster::records::EndpointRecord;
        use sluice_dataplane::wire::MacAddr;
        use std::net::Ipv4Addr;
        let (mut s, mut st) = fresh();
        let mut spec = overlay("ov", "10.20.0.0/24", &[]);
        spec.enable_ipv6 = true;
        spec.subnet6 = Some("fd00:20::/64".parse().unwrap());
        s.create_network(spec, st()).unwrap();
        let local6 = s.connect(ep("ov", "web", 1), st()).unwrap().ip6;
        assert!(local6.is_some());
        let remote = |last: u8, ip6: &str| EndpointRecord {
            id: format!("id{last}"),
            name: format!("r{last}"),
            host: Ipv4Addr::new(192, 0, 2, 2),
            node: String::new(),
            mac: MacAddr::from_ipv4(Ipv4Addr::new(10, 20, 0, last)),
            ip: Ipv4Addr::new(10, 20, 0, last),
            ip6: Some(ip6.parse().unwrap()),
            aliases: Vec::new(),
        };
        let clash = local6.unwrap().to_string();
        let list = vec![
            remote(9, "fd00:20::9"),
            remote(10, "fd00:99::10"),
            remote(11, &clash),
        ];
        let remotes = std::collections::BTreeMap::from([("ov".to_string(), list)]);
        let mut cfg = dataplane_config(&s, None, NatConfig::default());
        crate::cluster::fill_remotes(&s, &mut cfg, &remotes);
        let v6: Vec<_> = cfg.overlays[0].remotes.iter().map(|r| r.ipv6).collect();
        assert_eq!(v6, [Some("fd00:20::9".parse().unwrap()), None, None]);
        let t = Tables::build(&cfg, None).unwrap();
        let ov = t.overlays().of(cfg.overlays[0].network).unwrap();
        assert_eq!(
            ov.mac_of6("fd00:20::9".parse().unwrap()),
            Some(MacAddr::from_ipv4(Ipv4Addr::new(10, 20, 0, 9)))
        );
    }
}
