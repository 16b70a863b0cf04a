#!/usr/bin/env bash
# The test suite: unit tests, then the black-box suites that run the real binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --all-targets
