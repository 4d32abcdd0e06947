#!/usr/bin/env bash
# Runs every check sluice has: formatting, lints, unit and property tests, the fuzz targets'
# proptest harnesses and a short libFuzzer run of each, and the end-to-end tests in network
# namespaces and against real container engines (dockerd, podman, CNI; as root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/setup-engines.sh
export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== build every binary (release: sluice, sluiced, sluice-cni, sluice-demo, sluice-e2e-bench) for the namespace tests"
cargo build --release --bins
export SLUICE_BIN="$PWD/target/release/sluice"
echo "== fuzz smoke: every cargo-fuzz target for 60 s (scripts/fuzz.sh)"
./scripts/fuzz.sh 60
echo "== cargo test"
cargo test --workspace -- --test-threads=2
