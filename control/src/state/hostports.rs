//! Host ports the daemon picks for mappings given without one (`-p 80`, `-p 127.0.0.1::80`,
//! `-P`): docker's ephemeral host ports, from a range of the daemon's own that stays clear of
//! the NAPT source ports, so a published port never takes a port outbound flows need.

use sluice_dataplane::config::PortRange;

use super::{State, StateError};
use crate::model::EndpointSpec;
use crate::publish::PublishSpec;

/// The default `--host-port-range`: docker takes 49153-60999, but sluice's NAPT owns
/// 32768-60999 on the uplink address, so picked host ports live just above it.
pub const DEFAULT_HOST_PORTS: PortRange = PortRange {
    first: 61000,
    last: 65535,
};

/// The range picked host ports come from (a newtype so the state's default is the daemon's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPorts(pub PortRange);

impl Default for HostPorts {
    fn default() -> Self {
        HostPorts(DEFAULT_HOST_PORTS)
    }
}

/// Why a `--host-port-range` cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--host-port-range {host} overlaps the NAPT source ports {napt} on the uplink address: pick a range outside {napt}")]
pub struct RangeOverlapsNapt {
    /// The refused range.
    pub host: PortRange,
    /// NAPT's source-port range.
    pub napt: PortRange,
}

/// Refuses a host-port range that shares a port with NAPT's source ports: a picked host port
/// there would capture replies of outbound flows.
pub fn check_range(host: PortRange, napt: PortRange) -> Result<(), RangeOverlapsNapt> {
    if host.overlaps(&napt) {
        return Err(RangeOverlapsNapt { host, napt });
    }
    Ok(())
}

impl State {
    /// Sets the range picked host ports come from (the daemon's `--host-port-range`); mappings
    /// already stored keep their ports.
    pub fn set_host_ports(&mut self, range: PortRange) {
        self.host_ports = HostPorts(range);
    }

    /// `spec`'s mappings with a host port picked for every one given without: the lowest
    /// block of the range, as long as its container ports, that clashes with no published
    /// port of any endpoint nor with the spec's other mappings.
    pub(super) fn pick_host_ports(
        &self,
        spec: &EndpointSpec,
    ) -> Result<Vec<PublishSpec>, StateError> {
        let range = self.host_ports.0;
        let mut picked: Vec<PublishSpec> = spec
            .publish
            .iter()
            .filter(|p| p.host_ports.is_some())
            .copied()
            .collect();
        let mut out = Vec::with_capacity(spec.publish.len());
        for p in &spec.publish {
            if p.host_ports.is_some() {
                out.push(*p);
                continue;
            }
            let taken = |c: &PublishSpec| {
                picked.iter().any(|o| o.clashes_with(c))
                    || self
                        .endpoints
                        .values()
                        .flat_map(|e| &e.spec.publish)
                        .any(|o| o.clashes_with(c))
            };
            let len = p.container_ports.len();
            let chosen = (u32::from(range.first)..=u32::from(range.last))
                .take_while(|first| first + len - 1 <= u32::from(range.last))
                .map(|first| {
                    p.with_host_ports(PortRange {
                        first: first as u16,
                        last: (first + len - 1) as u16,
                    })
                })
                .find(|c| !taken(c))
                .ok_or(StateError::HostPortsExhausted { port: *p, range })?;
            picked.push(chosen);
            out.push(chosen);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{ep, fresh, net};

    fn spec(name: &str, pid: u32, ports: &[&str]) -> EndpointSpec {
        EndpointSpec {
            publish: ports.iter().map(|p| p.parse().unwrap()).collect(),
            ..ep("n", name, pid)
        }
    }

    fn ports(s: &State, name: &str) -> Vec<String> {
        s.endpoints()
            .find(|e| e.spec.name == name)
            .unwrap()
            .spec
            .publish
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn picks_the_lowest_free_block_beside_fixed_ports() {
        let (mut s, mut st) = fresh();
        s.set_host_ports(PortRange {
            first: 50000,
            last: 50009,
        });
        s.create_network(net("n", Some("10.1.0.0/24")), st())
            .unwrap();
        s.connect(spec("a", 1, &["50000:80", "80", "127.0.0.1::81/udp"]), st())
            .unwrap();
        assert_eq!(
            ports(&s, "a"),
            ["50000:80/tcp", "50001:80/tcp", "127.0.0.1:50000:81/udp"],
            "the fixed 50000 is skipped; udp has its own ports"
        );
        s.connect(spec("b", 2, &["8000-8002", "10.0.0.1::90"]), st())
            .unwrap();
        assert_eq!(
            ports(&s, "b"),
            ["50002-50004:8000-8002/tcp", "10.0.0.1:50005:90/tcp"],
            "a range gets a block; a specific address still clashes with every address"
        );
        s.disconnect("n", "a").unwrap();
        s.connect(spec("c", 3, &["80"]), st()).unwrap();
        assert_eq!(
            ports(&s, "c"),
            ["50000:80/tcp"],
            "freed ports are picked again"
        );
    }

    #[test]
    fn a_used_up_range_is_a_clear_conflict() {
        let (mut s, mut st) = fresh();
        s.set_host_ports(PortRange {
            first: 50000,
            last: 50001,
        });
        s.create_network(net("n", Some("10.1.0.0/24")), st())
            .unwrap();
        s.connect(spec("a", 1, &["80", "81"]), st()).unwrap();
        let before = s.clone();
        let e = s.connect(spec("b", 2, &["80"]), st()).unwrap_err();
        assert!(matches!(e, StateError::HostPortsExhausted { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "no free host port for 80/tcp: the daemon's host-port range 50000-50001 is used up (free one, or start sluiced with a wider --host-port-range)"
        );
        assert_eq!(s, before, "a refused connect changes nothing");
        assert!(matches!(
            s.connect(spec("c", 3, &["8000-8002"]), st()),
            Err(StateError::HostPortsExhausted { .. })
        ));
    }

    #[test]
    fn the_range_must_stay_clear_of_napt() {
        let napt = PortRange {
            first: 32768,
            last: 60999,
        };
        assert_eq!(check_range(DEFAULT_HOST_PORTS, napt), Ok(()));
        let docker = PortRange {
            first: 49153,
            last: 60999,
        };
        let e = check_range(docker, napt).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--host-port-range 49153-60999 overlaps the NAPT source ports 32768-60999 on the uplink address: pick a range outside 32768-60999"
        );
        assert!(check_range(PortRange::single(32767), napt).is_ok());
    }
}
