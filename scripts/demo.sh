#!/usr/bin/env bash
# The main job: builds namespaces, attaches them to sluice and shows bridging, NAT, a published
# port and a short benchmark against the kernel bridge; removes everything when done.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -p sluice-cli -p sluice-control -p sluice-lab -p sluice-bench --bins
exec ./target/release/sluice demo --bench-bin ./target/release/sluice-e2e-bench "$@"
