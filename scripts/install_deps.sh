#!/usr/bin/env bash
# Installs what building and testing dsinfer needs on a Debian machine (run as root, or with sudo available).
# Idempotent: packages already present are skipped quickly.
set -euo pipefail
pkgs=(cmake g++ make pkg-config libfmt-dev nlohmann-json3-dev catch2 libpcre2-dev libcpp-httplib-dev python3 python3-dev python3-venv binutils)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The small-checkpoint generator needs numpy (its output does not depend on numpy's version: it uses its own
# integer PRNG). Prefer pip; fall back to Debian's package where pip may not install into the system Python.
if ! python3 -c "import numpy" >/dev/null 2>&1; then
  python3 -m pip install --quiet numpy 2>/dev/null || $SUDO apt-get install -y -qq python3-numpy >/dev/null
fi
