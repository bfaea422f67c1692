#!/usr/bin/env bash
# Many objects through a relay from the synthetic benchmark device (`synthetic://COUNTx1024`
# lists and serves objects without storing them; as a destination it checks every byte and
# discards it): the gateway's and every agent's memory sampled against objects done, the time
# from the command's start to the first landing, the rate, and `sync --dry-run` of the same
# count against a destination holding it. Results go to
# bench/results/<date>-<cpus>vcpu/scale.{md,json,svg}.
# Usage: bench/run-scale.sh [--objects N]   (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=1000000
if [ "${1:-}" = "--objects" ]; then N=$2; fi
cargo build --release --locked -q -p skyx
OUT="bench/results/$(date +%F)-$(nproc)vcpu"
mkdir -p "$OUT"
python3 bench/scale_bench.py --skyx "$PWD/target/release/skyx" --objects "$N" --out "$OUT"
