#!/usr/bin/env bash
# Broadcast benchmark on the emulated sky (needs root): brings up a four-region sky at 1/20
# scale (the source, aws:us-east-1, and three destinations on Azure and GCP), then copies one
# dataset to the three destinations as one broadcast, as three overlay copies at once and as
# three direct copies at once. Results (sky-broadcast.md, sky-broadcast.json) go to
# bench/results/<date>-<cpus>vcpu/. About 5 minutes.
# Usage: bench/run-sky-broadcast.sh [extra arguments for bench/sky_broadcast_bench.py]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="bench/results/$(date +%Y-%m-%d)-$(nproc)vcpu"
SKY=skybcast
bash deploy/test-servers.sh install
cargo build --release --locked -p skyx
SKYX="$PWD/target/release/skyx"
"$SKYX" sky down --name "$SKY" >/dev/null 2>&1 || true
"$SKYX" sky up --name "$SKY" --subnet 79 --scale 0.05 \
    --regions aws:us-east-1,azure:southafricanorth,azure:brazilsouth,gcp:asia-southeast1-a
trap '"$SKYX" sky down --name "$SKY" >/dev/null' EXIT
python3 bench/sky_broadcast_bench.py --skyx "$SKYX" --sky "$SKY" --out "$OUT" "$@"
