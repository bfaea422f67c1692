#!/usr/bin/env bash
# `skyx cp` end to end on this machine, archived under bench/results/<date>-<machine>/cp.md:
#  1. the data plane through real agent processes (source -> relay -> sink on loopback): chunks
#     in the clear over TCP+TLS per hop (what skyx did before sealing), sealed end to end over
#     handshake-authenticated TCP (the default), the same unsealed (--encrypt off), sealed over
#     TCP+TLS per hop, sealed over QUIC: throughput, the relay's
#     CPU per byte forwarded, every agent's peak memory;
#  2. `skyx cp` against `rclone copy` between the same two local servers (s3s-fs -> Azurite),
#     same dataset, one run, so the ratios compare like with like.
# Usage: bench/run-cp.sh [--gib N] [--agents-only]   (N: GiB of large files, default 1;
#        --agents-only: part 1 alone, written to cp-agents.md)
# Needs: the test servers (started here), rclone (installed here from Debian if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=1
AGENTS_ONLY=0
while [ $# -gt 0 ]; do
    case $1 in
        --gib) GIB=$2; shift 2 ;;
        --agents-only) AGENTS_ONLY=1; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

if [ "$AGENTS_ONLY" = 0 ] && ! command -v rclone >/dev/null; then
    echo "installing rclone (Debian package)" >&2
    apt-get install -y -q rclone >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q rclone >/dev/null; }
fi
cargo build --release -q -p skyx
SKYX="$PWD/target/release/skyx"
bash deploy/test-servers.sh start
trap 'bash deploy/test-servers.sh stop' EXIT
# shellcheck disable=SC1091
source deploy/.servers/env

WORK=$(mktemp -d /tmp/skyx-bench-cp.XXXXXX)
trap 'rm -rf "$WORK"; bash deploy/test-servers.sh stop' EXIT
export SKYX_STATE_DIR="$WORK/state"
export AWS_ENDPOINT_URL=$SKYX_TEST_S3_ENDPOINT AWS_ACCESS_KEY_ID=$SKYX_TEST_S3_ACCESS_KEY \
    AWS_SECRET_ACCESS_KEY=$SKYX_TEST_S3_SECRET_KEY AWS_REGION=us-east-1 \
    AZURE_STORAGE_CONNECTION_STRING="$SKYX_TEST_AZURE_CONNECTION_STRING"

# The dataset: large random files, large compressible (CSV-like) files, many small files.
DATA="$WORK/data"
python3 - "$DATA" "$GIB" <<'EOF'
import os, random, sys
root, gib = sys.argv[1], float(sys.argv[2])
os.makedirs(f"{root}/random", exist_ok=True); os.makedirs(f"{root}/csv", exist_ok=True)
mib = 1 << 20
n_big = max(1, int(gib * 1024 / 128))
rng = random.Random(7)
for i in range(n_big):
    with open(f"{root}/random/part-{i:03}.bin", "wb") as f:
        for _ in range(128):
            f.write(rng.randbytes(mib))
for i in range(max(1, n_big // 2)):
    with open(f"{root}/csv/part-{i:03}.csv", "w") as f:
        written, n = 0, i * 1000003
        while written < 128 * mib:
            n = (n * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            line = f"{n % 100000},aws:us-east-1,2026-11-23T{n % 24:02}:00:00Z,{n % 977},{n % 1000}.{n % 10}\n"
            f.write(line); written += len(line)
os.makedirs(f"{root}/small", exist_ok=True)
for i in range(2000):
    with open(f"{root}/small/f{i:05}", "wb") as f:
        f.write(rng.randbytes(4096))
EOF
BYTES=$(du -sb "$DATA" | cut -f1)
OBJECTS=$(find "$DATA" -type f | wc -l)

timed() { # label, command...: runs it, prints "label seconds peak_kib"
    local label=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >"$WORK/$label.out" 2>"$WORK/$label.err" || { echo "$label failed:" >&2; cat "$WORK/$label.err" >&2; exit 1; }
    t1=$(date +%s.%N)
    echo "$label $(python3 -c "print(round($t1 - $t0, 3))")"
}

VIA=(--rehearse --src-region aws:us-east-1 --dst-region gcp:asia-southeast1 --via aws:us-east-2 --max-vms-per-region 1 --connections 8)
RESULTS="$WORK/results.txt"
: >"$RESULTS"
# 1. Real agents on loopback, through a relay.
ROWS="tls-clear tcp tcp-clear tls quic"
for t in $ROWS; do
    case $t in
        tcp-clear) flags=(--transport tcp --encrypt off) ;;
        tls-clear) flags=(--transport tls --encrypt off) ;;
        *) flags=(--transport "$t") ;;
    esac
    timed "agents-$t" "$SKYX" cp -r "$DATA" "$WORK/out-$t" "${VIA[@]}" "${flags[@]}" --json >>"$RESULTS"
    diff -r "$DATA" "$WORK/out-$t" >/dev/null || { echo "agents-$t: the copy differs from the source" >&2; exit 1; }
    rm -rf "$WORK/out-$t"
done

if [ "$AGENTS_ONLY" = 1 ]; then
    : # part 2 skipped
else

# 2. The same two servers for both tools: s3s-fs (source) -> Azurite (destination).
"$SKYX" mb s3://bench-src >/dev/null
"$SKYX" cp -r "$DATA" s3://bench-src/data --no-progress >/dev/null
for c in rclone-default rclone-16 skyx-auto skyx-off; do
    "$SKYX" mb "az://devstoreaccount1/$c" >/dev/null
done
(
    # rclone 1.60 (Debian): the sandbox's AWS_CA_BUNDLE breaks its S3 backend; Azurite needs
    # both use_emulator and endpoint (see shared/DEPENDENCIES.md).
    unset AWS_CA_BUNDLE
    export RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=Other RCLONE_CONFIG_S3_ENDPOINT=$SKYX_TEST_S3_ENDPOINT \
        RCLONE_CONFIG_S3_ACCESS_KEY_ID=$SKYX_TEST_S3_ACCESS_KEY RCLONE_CONFIG_S3_SECRET_ACCESS_KEY=$SKYX_TEST_S3_SECRET_KEY \
        RCLONE_CONFIG_S3_REGION=us-east-1 RCLONE_CONFIG_S3_FORCE_PATH_STYLE=true
    AZ_ENDPOINT=$(echo "$SKYX_TEST_AZURE_CONNECTION_STRING" | sed -n 's/.*BlobEndpoint=\([^;]*\);.*/\1/p')
    export RCLONE_CONFIG_AZ_TYPE=azureblob RCLONE_CONFIG_AZ_USE_EMULATOR=true RCLONE_CONFIG_AZ_ENDPOINT=$AZ_ENDPOINT
    timed rclone-default rclone copy s3:bench-src/data az:rclone-default/data
    timed rclone-16 rclone copy --transfers 16 --checkers 16 s3:bench-src/data az:rclone-16/data
) >>"$RESULTS"
timed skyx-auto "$SKYX" cp -r s3://bench-src/data az://devstoreaccount1/skyx-auto/data --json >>"$RESULTS"
timed skyx-off "$SKYX" cp -r s3://bench-src/data az://devstoreaccount1/skyx-off/data --compress off --json >>"$RESULTS"
for c in rclone-default rclone-16 skyx-auto skyx-off; do
    n=$("$SKYX" ls -r "az://devstoreaccount1/$c/data" | wc -l)
    [ "$n" = "$OBJECTS" ] || { echo "$c: $n objects at the destination, expected $OBJECTS" >&2; exit 1; }
done
fi

dir="bench/results/$(date +%F)-$(nproc)vcpu"
mkdir -p "$dir"
out_file="$dir/cp.md"
[ "$AGENTS_ONLY" = 1 ] && out_file="$dir/cp-agents.md"
python3 - "$WORK" "$BYTES" "$OBJECTS" "$GIB" "$out_file" "$AGENTS_ONLY" <<'EOF'
import json, sys, subprocess, datetime, os
work, total, objects, gib, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
agents_only = sys.argv[6] == "1"
times = {}
for line in open(f"{work}/results.txt"):
    parts = line.split()
    if len(parts) == 2 and parts[0][0].isalpha() and not line.startswith("{"):
        times[parts[0]] = float(parts[1])
def report(label):
    return json.load(open(f"{work}/{label}.out"))
cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True, text=True).stdout.strip()
mem = subprocess.run(["sh", "-c", "free -g | awk '/Mem:/{print $2}'"], capture_output=True, text=True).stdout.strip()
L = []
L.append(f"# skyx cp on this machine, {datetime.date.today()}\n")
L.append(f"- Machine: {os.cpu_count()} vCPU {cpu}, {mem} GiB.")
L.append(f"- Command: `bash bench/run-cp.sh --gib {gib}{' --agents-only' if agents_only else ''}` (release build).")
L.append(f"- Dataset: {objects} files, {total/1e9:.2f} GB: 128 MiB random files, 128 MiB CSV-like files (zstd -1 shrinks them ~6x), 2,000 x 4 KiB random files.")
L.append("- Every process (agents, gateway, servers, rclone) shares these cores: compare rows of this run, not machines.\n")
L.append("## 1. Real agents on loopback: source -> relay -> sink (local files, 8 connections)\n")
L.append("- tls-clear: what skyx did before chunks were sealed: chunks in the clear, every hop mutual TLS (`--transport tls --encrypt off`).")
L.append("- tcp: chunks sealed end to end (AES-256-GCM), hops opened by the hop handshake; the relay forwards ciphertext (the default).")
L.append("- tcp-clear: `--encrypt off`, the same hops with chunks in the clear (benchmarks only).")
L.append("- tls: chunks sealed, and every hop mutual TLS besides (the relay decrypts and re-encrypts the TLS layer).")
L.append("- quic: chunks sealed, over QUIC (its own TLS 1.3 per hop).\n")
L.append("| transport | wall s | GB/s logical | wire/logical | relay CPU s | relay GB forwarded per CPU-second | vs tls-clear | peak agent RSS |")
L.append("|---|---|---|---|---|---|---|---|")
rows = ["tls-clear", "tcp", "tcp-clear", "tls", "quic"]
def relay_rate(t):
    relay = [a for a in report(f"agents-{t}")["agents"] if a["region"] == "aws:us-east-2"][0]
    return relay["wire_bytes_out"] / 1e9 / relay["cpu_seconds"] if relay["cpu_seconds"] > 0 else float("nan")
for t in rows:
    r = report(f"agents-{t}")
    relay = [a for a in r["agents"] if a["region"] == "aws:us-east-2"][0]
    peak = max(a["peak_rss_bytes"] for a in r["agents"])
    fwd = relay["wire_bytes_out"] / 1e9
    per_cpu = fwd / relay["cpu_seconds"] if relay["cpu_seconds"] > 0 else float("nan")
    wire = sum(h["wire_bytes"] for h in r["hops"] if h["src_region"] == "aws:us-east-1")
    L.append(f"| {t} | {times[f'agents-{t}']:.2f} | {total/1e9/times[f'agents-{t}']:.3f} | {wire/total:.2f} | {relay['cpu_seconds']:.1f} | {per_cpu:.2f} | {per_cpu/relay_rate('tls-clear'):.2f}x | {peak/2**20:.0f} MiB |")
L.append("")
if agents_only:
    open(out, "w").write("\n".join(L) + "\n")
    print("\n".join(L))
    sys.exit(0)
L.append("## 2. skyx cp vs rclone copy, s3s-fs -> Azurite (same servers, same data, one run)\n")
L.append("| method | wall s | MB/s | vs rclone (default) |")
L.append("|---|---|---|---|")
base = times["rclone-default"]
for label, name in [("rclone-default", "rclone copy (defaults: 4 transfers)"), ("rclone-16", "rclone copy --transfers 16"),
                    ("skyx-auto", "skyx cp (compression auto)"), ("skyx-off", "skyx cp --compress off")]:
    t = times[label]
    L.append(f"| {name} | {t:.2f} | {total/1e6/t:.0f} | {base/t:.2f}x |")
for label in ["skyx-auto", "skyx-off"]:
    r = report(label)
    L.append(f"\n{label}: wire bytes {sum(h['wire_bytes'] for h in r['hops'])/1e9:.2f} GB for {total/1e9:.2f} GB logical; verified {r['verified']}.")
L.append("\nBoth tools run on this one machine; skyx's agents and rclone alike are bound by the emulators here,"
         " so this compares the tools' overheads, not inter-cloud networks (that is the emulated sky's job).")
open(out, "w").write("\n".join(L) + "\n")
print("\n".join(L))
EOF
echo "wrote $out_file"
