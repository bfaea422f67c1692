#!/usr/bin/env bash
# Store read/write throughput per backend against the local servers, archived under
# bench/results/<date>-<machine>/stores.md. Usage: bench/run-stores.sh [store_throughput flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/test-servers.sh start
trap 'bash deploy/test-servers.sh stop' EXIT
# shellcheck disable=SC1091
source deploy/.servers/env
cargo build --release -q -p skyx-bench --bin store_throughput
dir="bench/results/$(date +%F)-$(nproc)vcpu"
mkdir -p "$dir"
tmp=$(mktemp)
./target/release/store_throughput --out "$tmp" "$@"
{
    echo "# Store throughput, $(date +%F)"
    echo
    echo "- Machine: $(nproc) vCPU $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/{print $2}') GiB; servers on loopback on the same machine."
    echo "- Command: \`bash bench/run-stores.sh $*\`"
    echo "- Servers: s3s-fs 0.14.1, Azurite 3, gcp-storage-emulator via deploy/gcs_emulator.py (single-locked Python: its figure is the emulator's, not GCS's)."
    echo
    cat "$tmp"
} > "$dir/stores.md"
rm -f "$tmp"
echo "wrote $dir/stores.md"
