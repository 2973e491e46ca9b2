#!/usr/bin/env bash
# The GPU check of the CUDA backend (issues 6 and 8), for a machine with an NVIDIA GPU:
#   bash scripts/gpu_check.sh OUTDIR
# Builds a Release tree with -DDSINFER_CUDA=ON for the GPU's architecture (90a on Hopper), runs every CUDA test
# (CTest label "cuda": tests/cuda/*) and the GPU benchmarks (bench/cuda/*), and writes OUTDIR/summary.md (GPU,
# driver, CUDA version, pass/fail table, benchmark tables) plus one full log per step in OUTDIR/*.log.
# Budget: about 8 minutes on an H200 with 16 cores (only the needed targets are built); GPU_CHECK_BUDGET seconds
# (default 540) bound the whole run: steps that no longer fit are reported as not run. All logs are also packed
# into OUTDIR/all_logs.tar.gz (one file to copy back from a machine that returns few files).
#
# GPU machines may have no network and lack the Debian build dependencies (fmt, nlohmann-json, Catch2, PCRE2,
# pkg-config). `bash scripts/gpu_check.sh --fetch-deps` (on a machine with apt and network) downloads their .deb
# files into .gpu_deps/ (about 2 MB, git-ignored); carried to the GPU machine, they are unpacked into
# .gpu_deps/root (never into /) and used through CMAKE_PREFIX_PATH / PKG_CONFIG_* when the system lacks them.
set -uo pipefail
cd "$(dirname "$0")/.."
DEBS=(libfmt-dev libfmt9 nlohmann-json3-dev catch2 libpcre2-dev libpcre2-8-0 pkgconf pkgconf-bin libpkgconf3)
if [ "${1:-}" = "--fetch-deps" ]; then
  mkdir -p .gpu_deps && chmod 777 .gpu_deps
  (cd .gpu_deps && apt-get download "${DEBS[@]}") && ls -la .gpu_deps
  exit $?
fi
OUT=${1:?usage: scripts/gpu_check.sh OUTDIR   (or --fetch-deps)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BUILD=${BUILD:-build-gpu}
JOBS=${JOBS:-$(nproc)}
TEST_TIMEOUT=${TEST_TIMEOUT:-150}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-150}
export PATH=/usr/local/cuda/bin:$PATH
BUDGET=${GPU_CHECK_BUDGET:-540}
start=$(date +%s)
# Seconds a step may take: its own limit, or what is left of the budget (minus a margin for packing).
step_limit() { local left=$(( BUDGET - ($(date +%s) - start) - 15 )); [ "$left" -lt "$1" ] && echo "$left" || echo "$1"; }
# A .deb's files under a prefix: dpkg -x, else Python (an .deb is an ar archive holding data.tar.xz).
unpack_deb() {
  if command -v dpkg >/dev/null; then dpkg -x "$1" "$2"; return; fi
  python3 - "$1" "$2" <<'PY'
import io, sys, tarfile
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"!<arch>\n"
pos = 8
while pos < len(data):
    name = data[pos:pos + 16].decode().strip().rstrip("/")
    size = int(data[pos + 48:pos + 58].decode().strip())
    body = data[pos + 60:pos + 60 + size]
    if name.startswith("data.tar"):
        tarfile.open(fileobj=io.BytesIO(body)).extractall(sys.argv[2])
    pos += 60 + size + (size & 1)
PY
}
log() { echo "[gpu_check $(( $(date +%s) - start ))s] $*" | tee -a "$OUT/gpu_check.log"; }

# Dependencies: the same Debian packages as the test script (no network is fine when they are present); else
# the carried .gpu_deps/*.deb, unpacked into a private prefix.
if command -v dpkg >/dev/null && dpkg -s libfmt-dev nlohmann-json3-dev catch2 libpcre2-dev >/dev/null 2>&1; then
  log "build dependencies: installed"
else
  # Carried .deb files first: apt without network can hang on name resolution.
  if ! ls .gpu_deps/*.deb >/dev/null 2>&1; then
    timeout 90 bash scripts/install_deps.sh > "$OUT/install_deps.log" 2>&1 || log "install_deps.sh failed (see install_deps.log)"
  fi
  if ls .gpu_deps/*.deb >/dev/null 2>&1; then
    ROOT=$PWD/.gpu_deps/root
    rm -rf "$ROOT" && mkdir -p "$ROOT"
    for f in .gpu_deps/*.deb; do unpack_deb "$f" "$ROOT" 2>>"$OUT/install_deps.log" || log "could not unpack $f"; done
    LIBDIR=$ROOT/usr/lib/x86_64-linux-gnu
    export PATH=$ROOT/usr/bin:$PATH
    export LD_LIBRARY_PATH=$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export PKG_CONFIG_PATH=$LIBDIR/pkgconfig:$ROOT/usr/share/pkgconfig
    export PKG_CONFIG_SYSROOT_DIR=$ROOT
    export CMAKE_PREFIX_PATH=$ROOT/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
    log "build dependencies: unpacked .gpu_deps/*.deb into $ROOT"
  else
    log "build dependencies missing and no .gpu_deps/*.deb carried (run --fetch-deps where apt has network)"
  fi
fi

nvidia-smi > "$OUT/nvidia-smi.log" 2>&1 || log "nvidia-smi failed"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ')
NVCC=$(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' | head -1)
case "$CC" in
  9.0) ARCH=90a ;;          # Hopper: the arch-specific target (wgmma, setmaxnreg)
  "") ARCH=90a ;;
  *) ARCH=${CC/./} ;;
esac
log "GPU: ${GPU:-unknown} (compute capability ${CC:-?}), driver ${DRIVER:-?}, nvcc ${NVCC:-?}, building for sm_$ARCH"

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDSINFER_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
  -DDSINFER_TESTS=ON -DDSINFER_BENCH=ON > "$OUT/configure.log" 2>&1 || { log "configure FAILED"; tail -30 "$OUT/configure.log"; }
tests=$(ls tests/cuda/test_*.cu tests/cuda/test_*.cpp 2>/dev/null | xargs -n1 basename | sed 's/\.[^.]*$//' | sort -u)
benches=$(ls bench/cuda/bench_*.cu bench/cuda/bench_*.cpp 2>/dev/null | xargs -n1 basename | sed 's/\.[^.]*$//' | sort -u)
build_ok=1
# One target at a time on failure would be slow; build all at once, then again per target to know which broke.
if ! cmake --build "$BUILD" -j "$JOBS" --target $tests $benches > "$OUT/build.log" 2>&1; then
  build_ok=0
  log "build FAILED (see build.log); building targets one by one"
  for t in $tests $benches; do cmake --build "$BUILD" -j "$JOBS" --target "$t" >> "$OUT/build.log" 2>&1 || log "target $t failed to build"; done
fi
log "build done (ok=$build_ok)"

{
  echo "# GPU check"
  echo
  echo "- GPU: ${GPU:-unknown} (compute capability ${CC:-?}, built for sm_$ARCH)"
  echo "- driver: ${DRIVER:-?}; CUDA toolkit: ${NVCC:-?}"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | grep -q . && echo '(working tree modified)')"
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "## Tests (ctest -L cuda, one test per run; full output in <test>.log)"
  echo
  echo "| test | result | seconds |"
  echo "|---|---|---|"
} > "$OUT/summary.md"

n_fail=0
for t in $tests; do
  t0=$(date +%s)
  if [ ! -x "$BUILD/tests/cuda/$t" ]; then
    res="NOT BUILT"; n_fail=$((n_fail + 1))
  elif [ "$(step_limit "$TEST_TIMEOUT")" -lt 20 ]; then
    res="NOT RUN (time budget)"; n_fail=$((n_fail + 1))
  else
    timeout "$(step_limit "$TEST_TIMEOUT")" ctest --test-dir "$BUILD" -R "^${t}\$" -V --output-on-failure > "$OUT/$t.log" 2>&1
    rc=$?
    if grep -q "tests passed, 0 tests failed" "$OUT/$t.log" && ! grep -q "Skipped\|\*\*\*Skipped" "$OUT/$t.log"; then res="pass"
    elif grep -q "Skipped" "$OUT/$t.log"; then res="SKIPPED"; n_fail=$((n_fail + 1))
    elif [ $rc -eq 124 ]; then res="TIMEOUT (${TEST_TIMEOUT}s)"; n_fail=$((n_fail + 1))
    else res="FAIL"; n_fail=$((n_fail + 1)); fi
  fi
  dt=$(( $(date +%s) - t0 ))
  log "test $t: $res (${dt}s)"
  echo "| $t | $res | $dt |" >> "$OUT/summary.md"
  # A failing test once more under compute-sanitizer (stopping at the first failed check), for the first two
  # failures only: a device fault poisons the rest of that test's process, and memcheck names the kernel.
  if [ "$res" = "FAIL" ] && [ "${n_sanitized:-0}" -lt 2 ] && command -v compute-sanitizer >/dev/null; then
    n_sanitized=$(( ${n_sanitized:-0} + 1 ))
    timeout 180 compute-sanitizer --print-limit 20 "$BUILD/tests/cuda/$t" -a > "$OUT/$t.memcheck.log" 2>&1
    log "test $t under compute-sanitizer: rc=$? (see $t.memcheck.log)"
  fi
done

echo >> "$OUT/summary.md"
echo "## Benchmarks (full output in <bench>.log)" >> "$OUT/summary.md"
# bench_gemm and bench_moe first: they carry the issue-6 acceptance figures.
for b in bench_gemm bench_moe $(echo "$benches" | grep -v -x -e bench_gemm -e bench_moe); do
  echo "$benches" | grep -q -x "$b" || continue
  t0=$(date +%s)
  if [ "$(step_limit "$BENCH_TIMEOUT")" -lt 20 ]; then
    rc="not run (time budget)"; echo "not run: time budget" > "$OUT/$b.log"
  elif [ -x "$BUILD/bench/cuda/$b" ]; then
    timeout "$(step_limit "$BENCH_TIMEOUT")" "$BUILD/bench/cuda/$b" > "$OUT/$b.log" 2>&1
    rc=$?
  else
    rc=-1; echo "not built" > "$OUT/$b.log"
  fi
  dt=$(( $(date +%s) - t0 ))
  log "bench $b: rc=$rc (${dt}s)"
  { echo; echo "### $b (rc=$rc, ${dt}s)"; echo; cat "$OUT/$b.log"; } >> "$OUT/summary.md"
done

log "done: $n_fail test(s) not passing; total $(( $(date +%s) - start ))s"
{ echo; echo "Total time: $(( $(date +%s) - start )) s; tests not passing: $n_fail"; } >> "$OUT/summary.md"
(cd "$OUT" && tar czf all_logs.tar.gz --exclude=all_logs.tar.gz ./*.log summary.md) || log "packing the logs failed"
# Also on stdout, most important last (a remote run returns only the tail of its output).
for b in bench_mla bench_indexer bench_gemm bench_moe; do [ -f "$OUT/$b.log" ] && { echo "### $b"; cat "$OUT/$b.log"; }; done
sed -n '1,/^## Benchmarks/p' "$OUT/summary.md"
echo "Total time: $(( $(date +%s) - start )) s; tests not passing: $n_fail"
[ $n_fail -eq 0 ] && [ $build_ok -eq 1 ]
