#!/usr/bin/env bash
# Small files between regions 200+ ms apart in the emulated sky (links delayed by their
# measured round trips): skyx against rclone, both run where the gateway sits (the source's
# region). Results go to bench/results/<date>-<cpus>vcpu/sky-small.md. Needs root.
# Usage: bench/run-sky-small.sh [--files N]   (default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=2000
if [ "${1:-}" = "--files" ]; then FILES=$2; fi
if ! command -v rclone >/dev/null; then
    apt-get install -y -q rclone >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q rclone >/dev/null; }
fi
bash deploy/test-servers.sh install
cargo build --release --locked -q -p skyx
OUT="bench/results/$(date +%F)-$(nproc)vcpu"
mkdir -p "$OUT"
python3 bench/sky_small_bench.py --skyx "$PWD/target/release/skyx" --files "$FILES" --out "$OUT/sky-small.md"
