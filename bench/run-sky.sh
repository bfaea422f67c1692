#!/usr/bin/env bash
# Side-by-side benchmark on the emulated sky: brings up the default 8-region sky (needs root),
# measures its grid with `skyx bench paths`, then copies one dataset between region pairs with
# rclone, skyx --via direct, skyx's overlay and the overlay with zstd. Results (sky.md, sky.json,
# sky.svg, the measured grid) go to bench/results/<date>-<cpus>vcpu/. About 10 minutes.
# Usage: bench/run-sky.sh [extra arguments for bench/sky_bench.py]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="bench/results/$(date +%Y-%m-%d)-$(nproc)vcpu"
SKY=skybench
bash deploy/test-servers.sh install
if ! command -v rclone >/dev/null; then
    apt-get install -y -q rclone >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q rclone >/dev/null; }
fi
cargo build --release --locked -p skyx
SKYX="$PWD/target/release/skyx"
"$SKYX" sky down --name "$SKY" >/dev/null 2>&1 || true
"$SKYX" sky up --name "$SKY" --subnet 78
trap '"$SKYX" sky down --name "$SKY" >/dev/null' EXIT
python3 bench/sky_bench.py --skyx "$SKYX" --sky "$SKY" --out "$OUT" "$@"
