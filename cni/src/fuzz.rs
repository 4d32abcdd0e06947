//! The body of the fuzz target for what a runtime hands the plugin: the network configuration
//! on stdin (with its `runtimeConfig`, `prevResult` and GC's valid attachments) and the `CNI_*`
//! variables. `fuzz/` runs it under libFuzzer; the tests below run it through proptest.

use super::config::{self, valid_name};
use super::endpoint_spec;
use super::result::CniResult;

/// One input: `CNI_ARGS`, `CNI_CONTAINERID`, `CNI_IFNAME` and the configuration, separated by
/// NUL bytes (missing fields are empty). Everything ADD, CHECK and GC derive from them without
/// sluiced is derived, and the specs sent to sluiced pass its own validation or are refused
/// there, never by a panic. The endpoint's name must always be one sluiced accepts.
pub fn cni_input(data: &[u8]) {
    let mut fields = data.splitn(4, |b| *b == 0);
    let mut text = || String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let (args, cid, ifname) = (text(), text(), text());
    let Ok(conf) = config::parse(fields.next().unwrap_or_default()) else {
        return;
    };
    if let Ok(spec) = conf.network_spec() {
        let _ = sluice_api::validate::network_spec(&spec);
    }
    if let Ok(spec) = endpoint_spec(
        &conf,
        &conf.name,
        &cid,
        "/run/netns/x",
        &ifname,
        Some(&args),
    ) {
        assert!(valid_name(&spec.name), "endpoint name {:?}", spec.name);
        let _ = sluice_api::validate::endpoint_spec(&spec);
    }
    if let Some(prev) = conf.prev_result.clone() {
        if let Ok(r) = serde_json::from_value::<CniResult>(prev) {
            let _ = r.expected(&ifname);
            let _ = r.missing_route(&[]);
        }
    }
    for a in conf.valid_attachments.iter().flatten() {
        let name = config::endpoint_name(&a.container_id, &a.ifname);
        assert!(valid_name(&name), "endpoint name {name:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seeds() -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/cni_input");
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|f| std::fs::read(f.unwrap().path()).unwrap())
            .collect();
        assert!(!out.is_empty());
        out.sort();
        out
    }

    #[test]
    fn seeds_parse_and_run() {
        for s in seeds() {
            let conf = s.splitn(4, |b| *b == 0).nth(3).unwrap();
            assert!(
                config::parse(conf).is_ok(),
                "{}",
                String::from_utf8_lossy(&s)
            );
            cni_input(&s);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn cni_input_takes_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..400)) {
            cni_input(&data);
        }

        #[test]
        fn cni_input_takes_mutated_seeds(
            i in any::<prop::sample::Index>(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        ) {
            let all = seeds();
            let mut v = all[i.index(all.len())].clone();
            for (at, b) in edits {
                let n = v.len();
                v[at.index(n)] = b;
            }
            cni_input(&v);
        }
    }
}
