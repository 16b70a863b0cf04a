#!/usr/bin/env bash
# Installs what a fresh machine lacks to build, test and lint p2pchat: `just`, and the Rust
# components rustfmt and clippy. Idempotent; used by .ci/run and by the GitHub Actions workflow.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
  echo "ci/install.sh: cargo is not installed; install a Rust toolchain (rustup) first" >&2
  exit 1
fi

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

if ! command -v just >/dev/null 2>&1; then
  if command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1; then
    PIP_ROOT_USER_ACTION=ignore "$(command -v pip3 || command -v pip)" install --quiet --disable-pip-version-check rust-just
  fi
  if ! command -v just >/dev/null 2>&1; then
    # pip may have put it in a scripts folder that is not on PATH.
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
    if [ -n "$scripts" ] && [ -x "$scripts/just" ]; then
      ln -sf "$scripts/just" /usr/local/bin/just
    else
      cargo install just --locked
    fi
  fi
fi
just --version
