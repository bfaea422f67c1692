#!/usr/bin/env bash
# A copy of N small files killed at half (gateway and agents, SIGKILL), one source file added
# and one rewritten, then resumed: the objects and wire bytes the resume moves against what
# the remaining, added and changed objects need. Results go to
# bench/results/<date>-<cpus>vcpu/resume.md. About 15 minutes at the default 1,000,000.
# Usage: bench/run-resume.sh [--files N]
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=1000000
if [ "${1:-}" = "--files" ]; then FILES=$2; fi
cargo build --release --locked -q -p skyx
OUT="bench/results/$(date +%F)-$(nproc)vcpu"
mkdir -p "$OUT"
python3 bench/resume_bench.py --skyx "$PWD/target/release/skyx" --files "$FILES" --out "$OUT/resume.md"
