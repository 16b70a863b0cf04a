#!/usr/bin/env bash
# Lints: formatting and clippy (warnings are errors), with the default features and without them
# (the chat alone, no `trace` feature), so code behind a feature gate stays clean both ways.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo clippy --locked --no-default-features --all-targets -- -D warnings
