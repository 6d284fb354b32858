#!/usr/bin/env bash
# The test command of the README: lint, unit and end-to-end tests, then the MCP conformance
# suite run directly and through the gateway, and schemathesis against the admin API's OpenAPI
# document. Needs the peers that .ci/run installs.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace
cargo test --workspace
TOOLGATE_BIN="$PWD/target/debug/toolgate" bash scripts/conformance.sh
TOOLGATE_BIN="$PWD/target/debug/toolgate" bash scripts/schemathesis.sh
# Benchmarks are not tests: a short smoke run checks that the instruments still work.
bash bench/run.sh --smoke
bash bench/scripts/cpu-split.sh --smoke
