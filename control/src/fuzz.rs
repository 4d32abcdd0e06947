//! The bodies of the fuzz targets for the daemon's parsers of outside input: API request bodies,
//! the embedded DNS server's datagrams and the docker plugin's calls. `fuzz/` runs them under
//! libFuzzer; the tests below run them through proptest so that CI exercises them without
//! cargo-fuzz. Each must return (an error is an answer, not a finding) and never panic.

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use sluice_dataplane::config::NatConfig;

use crate::api::DisconnectRequest;
use crate::compile::dataplane_config;
use crate::dns::names::NameTable;
use crate::dns::wire;
use crate::model::{EndpointSpec, NetworkSpec, Placement, Sandbox, Stamp};
use crate::plugins::docker::driver::{endpoint_spec, network_spec, parse};
use crate::plugins::docker::ipam::DockerIpam;
use crate::plugins::docker::protocol::{
    Call, CreateEndpointRequest, CreateNetworkRequest, DiscoveryRequest, EndpointRequest,
    JoinRequest, NetworkRequest, ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest,
    RequestPoolRequest,
};
use crate::state::State;

/// Deterministic stamps, so that a crash replays.
fn stamps() -> impl FnMut() -> Stamp {
    let mut n = 0u64;
    move || {
        n += 1;
        Stamp {
            // Unique in the first 10 digits too (host interface names are made from them).
            id: format!("{n:010x}{n:054x}"),
            created: crate::model::rfc3339(n, 0),
        }
    }
}

/// docker's predefined networks, a user network `n` (10.88.0.0/24) with endpoints `a` and
/// `b`, and the stamp source to change it further.
fn sample_state() -> (State, impl FnMut() -> Stamp) {
    let mut st = stamps();
    let mut s = State::with_defaults(&mut st);
    let net = NetworkSpec {
        name: "n".into(),
        subnet: Some("10.88.0.0/24".parse().expect("a valid subnet")),
        ..NetworkSpec::default()
    };
    s.create_network(net, st()).expect("the sample network");
    for name in ["a", "b"] {
        let ep = EndpointSpec {
            network: "n".into(),
            sandbox: Sandbox::Netns(format!("/run/netns/{name}").into()),
            name: name.into(),
            ip: None,
            ip6: None,
            mac: None,
            aliases: vec![format!("{name}-alias")],
            links: Vec::new(),
            publish: Vec::new(),
            names: Default::default(),
            ifname: None,
            placement: Placement::Sandbox,
        };
        s.connect(ep, st()).expect("the sample endpoint");
    }
    (s, st)
}

/// An API request body: read as each request type the API takes (`POST /networks`,
/// `.../connect`, `.../disconnect`), and what parses is applied to a state as the engine would
/// (validation, IPAM, names), then compiled into a dataplane configuration.
pub fn api_body(data: &[u8]) {
    let (mut s, mut st) = sample_state();
    if let Ok(spec) = serde_json::from_slice::<NetworkSpec>(data) {
        let name = spec.name.clone();
        if s.create_network(spec, st()).is_ok() {
            let _ = s.remove_network(&name);
        }
    }
    if let Ok(mut spec) = serde_json::from_slice::<EndpointSpec>(data) {
        if spec.network.is_empty() {
            spec.network = "n".into();
        }
        let _ = s.connect(spec, st());
    }
    if let Ok(req) = serde_json::from_slice::<DisconnectRequest>(data) {
        let _ = s.disconnect("n", &req.endpoint);
    }
    let _ = dataplane_config(&s, None, NatConfig::default());
}

/// A datagram to the embedded DNS server, from an endpoint's sandbox: the server's answer
/// (reply, forward or drop), and the parts of the wire format the forwarder reads.
pub fn dns_datagram(data: &[u8]) {
    static TABLE: OnceLock<NameTable> = OnceLock::new();
    let table = TABLE.get_or_init(|| NameTable::from_state(&sample_state().0));
    let sandbox = Sandbox::Netns("/run/netns/a".into());
    let mut out = Vec::new();
    for max_len in [512, 65_535] {
        let _ = table.respond(&sandbox, data, max_len, &mut out);
        assert!(out.len() <= max_len, "a reply longer than asked");
    }
    if let Ok(m) = wire::parse(data) {
        let _ = m.answers();
        wire::reply(
            &m,
            wire::Rcode::NoError,
            &[
                wire::Answer::A(Ipv4Addr::LOCALHOST),
                wire::Answer::Ptr("x.n"),
            ],
            5,
            512,
            &mut out,
        );
    }
    let _ = wire::format_error(data, &mut out);
}

/// A conversation with the docker plugin: lines `PATH BODY` as libnetwork sends them (the
/// capture in plugins/docker/testdata has this shape). Every body is parsed as its call's
/// request and mapped onto sluice as far as that needs no engine: network and endpoint specs
/// (validated against a state) and the IPAM driver's pools and addresses, kept across lines.
pub fn docker_calls(data: &[u8]) {
    let (mut s, mut st) = sample_state();
    let mut ipam = DockerIpam::in_memory();
    for line in data.split(|b| *b == b'\n') {
        let (path, body) = match line.iter().position(|b| *b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &[][..]),
        };
        let Some(call) = std::str::from_utf8(path).ok().and_then(Call::from_path) else {
            continue;
        };
        docker_call(call, body, &mut s, &mut st, &mut ipam);
    }
}

fn docker_call(
    call: Call,
    body: &[u8],
    s: &mut State,
    st: &mut impl FnMut() -> Stamp,
    ipam: &mut DockerIpam,
) {
    match call {
        Call::CreateNetwork => {
            if let Ok(spec) =
                parse::<CreateNetworkRequest>(call, body).and_then(|r| network_spec(&r))
            {
                let _ = s.create_network(spec, st());
            }
        }
        Call::CreateEndpoint => {
            if let Ok(spec) = parse::<CreateEndpointRequest>(call, body)
                .and_then(|r| endpoint_spec(&r, "n".into()))
            {
                let _ = s.connect(spec, st());
            }
        }
        Call::DeleteNetwork => drop(parse::<NetworkRequest>(call, body)),
        Call::Join => drop(parse::<JoinRequest>(call, body)),
        Call::DiscoverNew | Call::DiscoverDelete => drop(parse::<DiscoveryRequest>(call, body)),
        Call::RequestPool => {
            if let Ok(r) = parse::<RequestPoolRequest>(call, body) {
                let _ = ipam.request_pool(&r.pool, &r.sub_pool, r.v6, &[]);
            }
        }
        Call::ReleasePool => {
            if let Ok(r) = parse::<ReleasePoolRequest>(call, body) {
                let _ = ipam.release_pool(&r.pool_id);
            }
        }
        Call::RequestAddress => {
            if let Ok(r) = parse::<RequestAddressRequest>(call, body) {
                let _ = ipam.request_address(&r.pool_id, &r.address, r.is_gateway());
            }
        }
        Call::ReleaseAddress => {
            if let Ok(r) = parse::<ReleaseAddressRequest>(call, body) {
                let _ = ipam.release_address(&r.pool_id, &r.address);
            }
        }
        _ => drop(parse::<EndpointRequest>(call, body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The seed corpus kept in fuzz/seeds/TARGET.
    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds")
            .join(target);
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|f| std::fs::read(f.unwrap().path()).unwrap())
            .collect();
        assert!(!out.is_empty(), "no seeds in {}", dir.display());
        out.sort();
        out
    }

    /// Each seed with a few bytes changed, to stay near inputs that parse.
    fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
        let all = seeds(target);
        (
            0..all.len(),
            prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        )
            .prop_map(move |(i, edits)| {
                let mut v = all[i].clone();
                for (at, b) in edits {
                    if !v.is_empty() {
                        let n = v.len();
                        v[at % n] = b;
                    }
                }
                v
            })
    }

    #[test]
    fn seeds_run_and_mostly_parse() {
        for s in seeds("api_body") {
            api_body(&s);
        }
        for s in seeds("dns_datagram") {
            assert!(wire::parse(&s).is_ok(), "a seed query does not parse");
            dns_datagram(&s);
        }
        for s in seeds("docker_calls") {
            docker_calls(&s);
        }
    }

    #[test]
    fn the_sample_resolver_answers_its_names() {
        let (s, _) = sample_state();
        let table = NameTable::from_state(&s);
        let sandbox = Sandbox::Netns("/run/netns/a".into());
        assert!(!table.lookup(&sandbox, "b-alias").is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn targets_take_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
            api_body(&data);
            dns_datagram(&data);
            docker_calls(&data);
        }

        #[test]
        fn api_body_takes_mutated_seeds(data in mutated("api_body")) {
            api_body(&data);
        }

        #[test]
        fn dns_datagram_takes_mutated_seeds(data in mutated("dns_datagram")) {
            dns_datagram(&data);
        }

        #[test]
        fn docker_calls_take_mutated_seeds(data in mutated("docker_calls")) {
            docker_calls(&data);
        }
    }
}
