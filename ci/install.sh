#!/usr/bin/env bash
# Installs what a fresh machine lacks to build, test and lint p2pchat: the C linker Rust needs
# (gcc, libc6-dev), `just`, and the Rust components rustfmt and clippy; for `just lab` and its
# check: tcpdump, tshark, jq, iproute2, procps and ethtool (checksum offload off in the lab); the lab's DNS server (dnsmasq-base: the binary,
# no system service) and its report's toolchain (weasyprint, poppler-utils' pdfinfo and pdftotext); and nftables for the loss test (tests/loss.rs)
# and util-linux's unshare (the discovery tests' host names, the full-disk test's tmpfs) (apt, as root or through password-less sudo, only those missing). Idempotent; used by .ci/run and by the GitHub Actions workflow. The Rust
# toolchain itself (rustup, Rust 1.88 or newer: `rust-version` in Cargo.toml) must be there already.
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

# The lab's tools and the linker Rust needs, as command:Debian package (ip, sysctl and cc may be
# absent from minimal images).
missing=()
for pair in tcpdump:tcpdump tshark:tshark jq:jq ip:iproute2 sysctl:procps nft:nftables cc:gcc cc:libc6-dev \
  dnsmasq:dnsmasq-base ethtool:ethtool weasyprint:weasyprint pdfinfo:poppler-utils unshare:util-linux; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo)
  else
    as_root=(false)
  fi
  if ! command -v apt-get >/dev/null 2>&1 || [ "${as_root[*]}" = false ]; then
    echo "ci/install.sh: cannot install ${missing[*]} (needs apt-get and root); just lab will say so" >&2
  else
    # tshark asks whether non-root users may capture; answer no, without a prompt.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | "${as_root[@]}" debconf-set-selections
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
fi
if ! command -v just >/dev/null 2>&1; then
  if command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1; then
    # A system pip may refuse (PEP 668, "externally managed"): then cargo builds it below.
    PIP_ROOT_USER_ACTION=ignore "$(command -v pip3 || command -v pip)" install --quiet \
      --disable-pip-version-check rust-just || echo "ci/install.sh: pip could not install just" >&2
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

for tool in tcpdump tshark jq ip sysctl nft cc dnsmasq weasyprint pdfinfo; do
  if command -v "$tool" >/dev/null 2>&1; then
    echo "$tool: $(command -v "$tool")"
  fi
done
