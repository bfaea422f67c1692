#!/usr/bin/env bash
# Server-side copies against copies through agents, on this machine's local servers, archived
# under bench/results/<date>-<machine>/server-side.md:
#   S3 -> S3       two buckets of one s3s-fs server (CopyObject; UploadPartCopy past 5 GiB)
#   Azure -> Azure two Azurite accounts (Copy Blob from the source's signed URL)
# each with `skyx cp --server-side always` and `--server-side never` (one local agent pair),
# same dataset, one run, so the ratios compare like with like. The emulators copy on one disk:
# this measures what skyx adds around the provider's copy, not a cloud's copy speed.
# Usage: bench/run-server-side.sh [--gib N]   (N: GiB of 128 MiB random files, default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=1
if [ "${1:-}" = "--gib" ]; then GIB=$2; fi

cargo build --release -q -p skyx
SKYX="$PWD/target/release/skyx"
bash deploy/test-servers.sh start
WORK=$(mktemp -d /tmp/skyx-bench-ss.XXXXXX)
trap 'rm -rf "$WORK"; bash deploy/test-servers.sh stop' EXIT
# shellcheck disable=SC1091
source deploy/.servers/env
export SKYX_STATE_DIR="$WORK/state"
export AWS_ENDPOINT_URL=$SKYX_TEST_S3_ENDPOINT AWS_ACCESS_KEY_ID=$SKYX_TEST_S3_ACCESS_KEY \
    AWS_SECRET_ACCESS_KEY=$SKYX_TEST_S3_SECRET_KEY AWS_REGION=us-east-1 \
    AZURE_STORAGE_CONNECTION_STRING="$SKYX_TEST_AZURE_CONNECTION_STRING"
cat >"$WORK/config.toml" <<TOML
[remotes.second]
type = "azure"
account = "skyxsecond"
connection_string = "$SKYX_TEST_AZURE_B_CONNECTION_STRING"
TOML
export SKYX_CONFIG="$WORK/config.toml"

DATA="$WORK/data"
python3 - "$DATA" "$GIB" <<'PY'
import os, random, sys
root, gib = sys.argv[1], float(sys.argv[2])
os.makedirs(root, exist_ok=True)
rng = random.Random(11)
for i in range(max(1, int(gib * 8))):
    with open(f"{root}/part-{i:03}.bin", "wb") as f:
        for _ in range(128):
            f.write(rng.randbytes(1 << 20))
PY
BYTES=$(du -sb "$DATA" | cut -f1)
OBJECTS=$(find "$DATA" -type f | wc -l)

"$SKYX" mb s3://ss-src >/dev/null && "$SKYX" mb s3://ss-dst >/dev/null
"$SKYX" mb az://devstoreaccount1/ss-src >/dev/null && "$SKYX" mb second:ss-dst >/dev/null
"$SKYX" cp -r "$DATA" s3://ss-src/data --no-progress >/dev/null
"$SKYX" cp -r "$DATA" az://devstoreaccount1/ss-src/data --no-progress >/dev/null

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
run() { # label src dst mode
    local label=$1 src=$2 dst=$3 mode=$4 t0 t1
    t0=$(date +%s.%N)
    "$SKYX" cp -r "$src" "$dst" --server-side "$mode" --json >"$WORK/$label.json"
    t1=$(date +%s.%N)
    python3 - "$label" "$t0" "$t1" "$WORK/$label.json" >>"$RESULTS" <<'PY'
import json, sys
label, t0, t1, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
r = json.load(open(path))
assert r["objects_copied"] == r["objects_total"] and not r["objects_failed"], r
print(f"{label}\t{t1 - t0:.3f}\t{r['objects_server_side']}\t{r['bytes_sent']}\t{len(r['agents'])}\t{json.dumps(r['verified'])}")
PY
}
run s3-server-side s3://ss-src/data s3://ss-dst/server-side always
run s3-agents s3://ss-src/data s3://ss-dst/agents never
run azure-server-side az://devstoreaccount1/ss-src/data second:ss-dst/server-side always
run azure-agents az://devstoreaccount1/ss-src/data second:ss-dst/agents never

OUT="bench/results/$(date +%F)-$(nproc)vcpu"
mkdir -p "$OUT"
python3 - "$RESULTS" "$BYTES" "$OBJECTS" "$GIB" >"$OUT/server-side.md" <<'PY'
import platform, subprocess, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
by = {r[0]: r for r in rows}
nbytes, objects, gib = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
print("# Server-side copies vs copies through agents (local servers)\n")
print(f"Machine: {platform.node()}, {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} vCPU, Linux {platform.release()}")
print(f"Command: `bash bench/run-server-side.sh --gib {gib}` (one run)")
print(f"Dataset: {objects} random files of 128 MiB, {nbytes / 2**30:.2f} GiB\n")
print("| copy | mode | seconds | MiB/s | objects server-side | bytes through agents | agents | verified |")
print("|---|---|---:|---:|---:|---:|---:|---|")
for label, what in [("s3-server-side", "S3 -> S3"), ("s3-agents", "S3 -> S3"),
                    ("azure-server-side", "Azure -> Azure (2 accounts)"), ("azure-agents", "Azure -> Azure (2 accounts)")]:
    r = by[label]
    secs = float(r[1])
    print(f"| {what} | {label.split('-', 1)[1]} | {secs:.2f} | {nbytes / 2**20 / secs:.0f} | {r[2]} | {int(r[3]):,} | {r[4]} | {r[5]} |")
print()
for c in ("s3", "azure"):
    ratio = float(by[f"{c}-agents"][1]) / float(by[f"{c}-server-side"][1])
    print(f"- {c}: server-side took 1/{ratio:.1f} of the time through agents")
print("\nBoth servers copy on this machine's disk: the server-side figures show what skyx adds around "
      "a provider's own copy, not what S3 or Azure would do between regions. Never run against the "
      "real services.")
PY
cat "$OUT/server-side.md"
