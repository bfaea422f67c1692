#!/usr/bin/env bash
# The whole test suite, as CI and the README run it: formatting, lints, then every test of the
# workspace. Installs (first run: about 2 minutes) and starts the local object-store servers the
# store conformance suite runs against, and stops them on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== test servers"
bash deploy/test-servers.sh start
trap 'bash deploy/test-servers.sh stop' EXIT
# shellcheck disable=SC1091
source deploy/.servers/env

echo "== cargo test"
df -h "$PWD" "${TMPDIR:-/tmp}" | sed 's/^/disk before tests: /'
# The end-to-end tests hold up to about 8 GB at once (the 2 GiB object, its copies and the S3
# server's multipart parts); with less, they fail with ENOSPC in whatever runs beside them.
free_kb=$(df --output=avail -k "${TMPDIR:-/tmp}" | tail -1)
if [ "$free_kb" -lt $((10 * 1024 * 1024)) ]; then
    echo "warning: only $((free_kb / 1024)) MiB free for test data; the end-to-end tests need about 8 GiB" >&2
fi
# The binaries the end-to-end tests run, built here with the features the test build resolves
# (what tests/e2e/util.rs `bin` asks for), so their build shows in the log, not inside a test.
cargo build --workspace --tests --bins --locked
status=0
if cargo nextest --version >/dev/null 2>&1; then
    # cargo-nextest (on the CI machines): every test in a process of its own, per-test times
    # in the log (settings in .config/nextest.toml). Doc tests are cargo test's alone.
    cargo nextest run --workspace --locked 2>&1 | tee target/test-output.txt || status=$?
    cargo test --workspace --locked --doc 2>&1 | tee -a target/test-output.txt || status=$?
    # One closing tally of nextest's tests (there are no doc tests), as cargo test's gives it
    # below; no summary (the build failed) counts nothing.
    summary=$(grep -E 'Summary \[' target/test-output.txt | tail -1 || true)
    count() { echo "$summary" | grep -oE "[0-9]+ $1" | grep -oE '^[0-9]+' || echo 0; }
    failed=$(($(count failed) + $(count 'exec failed') + $(count 'timed out')))
    echo "total: $(count passed) passed, $failed failed, $(count skipped) skipped"
else
    cargo test --workspace --locked --no-fail-fast 2>&1 | tee target/test-output.txt || status=$?
    # Print one closing tally for the whole run (cargo prints one line per test binary).
    awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' \
        target/test-output.txt
fi
if [ "$status" -ne 0 ]; then
    # Why each failed test failed, together at the end where a truncated log still shows it.
    echo "== why tests failed"
    grep -E -A4 "panicked at" target/test-output.txt | grep -v "^--$" | head -120 || true
    df -h "$PWD" "${TMPDIR:-/tmp}" | sed 's/^/disk after tests: /'
    free -m | sed 's/^/memory after tests: /'
    dmesg 2>/dev/null | grep -iE "out of memory|killed process" | tail -5 || true
    echo "== the test servers' logs, their ends"
    bash deploy/test-servers.sh logs 2>&1 | head -400 || true
fi
exit "$status"
