#!/usr/bin/env bash
# Installs what building and testing dsinfer needs on a Debian machine (run as root, or with sudo available).
# Idempotent: packages already present are skipped quickly.
set -euo pipefail
# clang and libclang-rt-dev: libFuzzer and the sanitizer runtimes (tests/fuzz, scripts/fuzz.sh, the ASan+UBSan job of
# scripts/test.sh).
# libopenmpi-dev and openmpi-bin: distributed runs (DSINFER_MPI, lib/dist) and their tests under mpirun.
# ccache: scripts/test.sh's wheel build reuses the release build's objects through it.
pkgs=(cmake g++ make pkg-config libfmt-dev nlohmann-json3-dev catch2 libpcre2-dev libcpp-httplib-dev python3 python3-dev python3-venv binutils clang libclang-rt-dev libopenmpi-dev openmpi-bin ccache)
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
# xgrammar's C++ core (constrained decoding, lib/constraint) is built from its PyPI source distribution, pinned in
# cmake/xgrammar.cmake (which checks its sha256). Fetched once into .deps/ with pip, the ordinary PyPI client; a
# throwaway virtual environment provides pip where the system Python has none.
XG_VERSION=$(sed -n 's/^set(DSINFER_XGRAMMAR_VERSION \(.*\))$/\1/p' "$(dirname "$0")/../cmake/xgrammar.cmake")
DEPS="$(dirname "$0")/../.deps"
if [ ! -f "$DEPS/xgrammar-$XG_VERSION.tar.gz" ]; then
  mkdir -p "$DEPS"
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip download --quiet --no-deps --no-binary xgrammar "xgrammar==$XG_VERSION" -d "$DEPS"
  else
    tmp=$(mktemp -d)
    python3 -m venv "$tmp/venv"
    "$tmp/venv/bin/pip" download --quiet --no-deps --no-binary xgrammar "xgrammar==$XG_VERSION" -d "$DEPS"
    rm -rf "$tmp"
  fi
fi
