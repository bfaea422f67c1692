#!/usr/bin/env bash
# The fast, hermetic tier for contributors: the pure crates (catalog, planner, protocol,
# pipeline and its scheduler), the gateway (its core, and run_copy with agents in-process on
# loopback between local directories), the agent API, and the layout's
# tidy rules. No servers and no network beyond loopback; seconds once built. The whole suite
# is `bash .ci/run`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --workspace --lib --quiet
cargo test --locked --quiet -p skyx-planner -p skyx-protocol -p skyx-pipeline --tests
cargo test --locked --quiet -p skyx-gateway --test tracker --test run_copy
cargo test --locked --quiet -p skyx-tests --test e2e tidy::
