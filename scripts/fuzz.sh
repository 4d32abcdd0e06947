#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a while with the stable toolchain
# (RUSTC_BOOTSTRAP=1), installing cargo-fuzz from crates.io if it is missing. Each target starts
# from its seeds in fuzz/seeds/TARGET (kept in the repo) and grows its working corpus in
# fuzz/corpus/TARGET (not kept). A crash fails the run and leaves its input in fuzz/artifacts/.
#   scripts/fuzz.sh            # smoke: 60 s per target (what .ci/run does), 6 minutes in all
#   scripts/fuzz.sh 300        # a campaign: 5 minutes per target
#   scripts/fuzz.sh 300 dns_datagram cni_input
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(pipeline overlay api_body dns_datagram docker_calls cni_input)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# No sanitizer: the targets are safe Rust; debug assertions (-a) make overflows findings.
flags=(--sanitizer none --debug-assertions)
cargo fuzz build "${flags[@]}"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  seeds=()
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  echo "== fuzz $t for ${secs}s"
  log="corpus/$t.log"
  if ! cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $t found a crash (input in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+[[:space:]]+DONE)' "$log" || true
done
