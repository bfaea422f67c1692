#!/usr/bin/env bash
# Loopback throughput of the data plane (source -> [relay ->] sink, real protocol and TCP),
# archived under bench/results/<date>-<machine>/dataplane.md. Usage: bench/run-dataplane.sh [--gib N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p skyx-bench --bin dataplane
dir="bench/results/$(date +%F)-$(nproc)vcpu"
mkdir -p "$dir"
tmp=$(mktemp)
./target/release/dataplane --out "$tmp" "$@" 2>/dev/null
{
    echo "# Data plane on loopback, $(date +%F)"
    echo
    echo "- Machine: $(nproc) vCPU $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/{print $2}') GiB."
    echo "- Command: \`bash bench/run-dataplane.sh $*\` (release build)."
    echo "- Source, relay and sink run in one process on 2 tokio workers plus the blocking pool, so"
    echo "  every row is what this one box does playing all roles; compare rows, not machines."
    echo "- Compression: zstd -1 per 8 MiB chunk, two chunks at a time; a chunk that does not shrink"
    echo "  is sent raw (so 'random + zstd' costs one compression attempt, not the wire)."
    echo "- Transports: plain TCP (the protocol alone), then the production ones: TCP with per-job"
    echo "  mutual TLS, and QUIC (quinn, one connection per hop with N streams, its own TLS 1.3)."
    echo
    cat "$tmp"
} > "$dir/dataplane.md"
rm -f "$tmp"
echo "wrote $dir/dataplane.md"
