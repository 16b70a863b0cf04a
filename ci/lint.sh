#!/usr/bin/env bash
# Lints: formatting and clippy (warnings are errors).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
