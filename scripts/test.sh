#!/usr/bin/env bash
# Installs what the tests need, builds everything (CUDA code too where nvcc exists) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase's wall time is printed ("[time] ..."), so a CI log shows where its minutes go (the budget is 30).
phase_start=$SECONDS
phase_done() { echo "[time] $1: $((SECONDS - phase_start)) s (total $SECONDS s)"; phase_start=$SECONDS; }
bash scripts/install_deps.sh
phase_done "dependencies"
BUILD=${BUILD:-build}
JOBS=${JOBS:-$(nproc)}
# ccache (scripts/install_deps.sh installs it): the wheel build below then reuses the release build's objects of
# xgrammar, a minute of compiling (same compiler, flags and paths: cmake/xgrammar.cmake extracts it once into .deps/).
# Depend mode hashes the compiler's own dependency output instead of running the preprocessor, so a miss costs
# almost nothing. The cache lives in the build folder; CC/CXX name the compiler alike for both builds (ccache hashes
# its name).
launcher=()
if command -v ccache >/dev/null; then
  mkdir -p "$BUILD"
  export CCACHE_DIR="$(cd "$BUILD" && pwd)/ccache" CCACHE_DEPEND=1 CCACHE_NOHASHDIR=1
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
# The release build has MPI (distributed runs: tests/lib/dist under mpirun); the sanitizer builds do not (OpenMPI's
# own allocations would be reported as leaks).
CC=gcc CXX=g++ cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDSINFER_TESTS=ON -DDSINFER_MPI=ON "${launcher[@]}" \
  >/dev/null
cmake --build "$BUILD" -j "$JOBS"
phase_done "release build"
ctest --test-dir "$BUILD" --output-on-failure -j "$JOBS"
phase_done "release tests"

# Sanitizers (issue 20), CPU only (the CUDA backend is not instrumented), benchmarks off, -O1 with line tables
# info. SANITIZERS=0 skips them.
if [ "${SANITIZERS:-1}" != 0 ]; then
  models_dir="$(cd "$BUILD" && pwd)/models"  # the sanitizer builds use the checkpoints generated above
  # 1. AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer over the whole ctest suite: any report (a heap
  #    overflow, a use after free, undefined behaviour, a leak at exit) fails the test that made it.
  CC=clang CXX=clang++ cmake -S . -B "$BUILD-asan" -DDSINFER_ASAN=ON -DDSINFER_BENCH=OFF -DDSINFER_CUDA=OFF \
    -DDSINFER_TESTS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSINFER_MODELS_DIR="$models_dir" >/dev/null
  cmake --build "$BUILD-asan" -j "$JOBS" >/dev/null
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=66:strict_string_checks=1:detect_stack_use_after_return=0" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=67" \
    ctest --test-dir "$BUILD-asan" --output-on-failure -j "$JOBS" -LE long  # test_long_prompt: release build only
  phase_done "ASan+UBSan build and suite"
  # 2. ThreadSanitizer (any report fails the run): the thread pool (its workers, a thread that cannot be started),
  #    the C ABI's sessions on one model from four threads, and the session/engine tests where threads meet: a cancel
  #    from another thread during a generation, the engine stepping many sessions through the model's worker
  #    threads (sessions joining, leaving, failing, cancelled) and sampling them on its own workers. The rest of
  #    test_session is single-threaded logic that the ASan run covers; under TSan it would add minutes.
  cmake -S . -B "$BUILD-tsan" -DDSINFER_TSAN=ON -DDSINFER_BENCH=OFF -DDSINFER_CUDA=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSINFER_MODELS_DIR="$models_dir" >/dev/null
  cmake --build "$BUILD-tsan" -j "$JOBS" --target test_capi_threads test_util test_session >/dev/null
  TSAN_OPTIONS="halt_on_error=1 exitcode=66" "$BUILD-tsan/tests/lib/util/test_util" "[thread_pool]"
  TSAN_OPTIONS="halt_on_error=1 exitcode=66" "$BUILD-tsan/tests/capi/test_capi_threads" "$BUILD/models/v32-tiny"
  TSAN_OPTIONS="halt_on_error=1 exitcode=66" "$BUILD-tsan/tests/lib/session/test_session" \
    "cancel from another thread stops a running generation,*concurrent sessions give the same tokens as alone,\
continuous batching:*,the engine samples*"
  phase_done "TSan build and tests"
fi

# The Python package, installed with pip into a fresh virtual environment, and its pytest suite.
# The wheel is built once (`pip wheel .`); the test venv installs it, and test_wheel.py installs it again into a fresh
# venv of its own (no dev packages) to use it as a user would.
python3 -m venv "$BUILD/pyvenv"
"$BUILD/pyvenv/bin/pip" install --quiet --upgrade pip
rm -rf "$BUILD/wheel"
wheel_settings=()
[ ${#launcher[@]} -eq 0 ] || wheel_settings=(--config-settings=cmake.define.CMAKE_C_COMPILER_LAUNCHER=ccache
                                             --config-settings=cmake.define.CMAKE_CXX_COMPILER_LAUNCHER=ccache)
CC=gcc CXX=g++ "$BUILD/pyvenv/bin/pip" wheel --quiet --no-deps -w "$BUILD/wheel" "${wheel_settings[@]}" .
wheel=$(ls "$BUILD"/wheel/dsinfer-*.whl)
"$BUILD/pyvenv/bin/pip" install --quiet "$wheel" pytest jsonschema openai
"$BUILD/pyvenv/bin/pip" install --quiet --force-reinstall --no-deps "$wheel"  # this build's, whatever was installed
phase_done "wheel build and venv"
DSINFER_WHEEL="$wheel" DSINFER_TEST_MODEL="$BUILD/models/v32-tiny" DSINFER_SCENARIOS_C="$BUILD/tests/capi/capi_scenarios_c" \
  DSINFER_SAMPLE_CONSTRAINED="$BUILD/tests/lib/constraint/sample_constrained" DSINFER_EXAMPLES="$BUILD/examples" \
  DSINFER_BAD_MODEL="$BUILD/tests/capi/bad-model" "$BUILD/pyvenv/bin/python" -m pytest -q --durations=10 tests/python
phase_done "Python tests"

# `dsinfer serve` with the official openai client on loopback: protocol, errors, faults, then the bounded load test.
# (DSINFER_TEST_MPI: the release build has MPI, so test_distributed.py runs the server under mpirun too.)
DSINFER_CLI="$BUILD/tools/dsinfer" DSINFER_TEST_MODEL="$BUILD/models/v32-tiny" DSINFER_TEST_MPI=1 \
  "$BUILD/pyvenv/bin/python" -m pytest -q --durations=5 tests/server
phase_done "server tests"

# --- Fuzzing (tests/fuzz, docs/fuzzing.md) --------------------------------------------------------------------
# The build above already replayed every seed corpus (ctest fuzz_*_replay). Here the targets also run briefly under
# libFuzzer with ASan+UBSan (clang), two at a time, FUZZ_SECONDS each (10 by default; 0 skips this block). Only the
# targets whose code builds in about a minute: fuzz_openai_request needs the whole library (xgrammar, the model)
# instrumented, several minutes more; its corpus is replayed by ctest here and in the sanitizer build.
if [ "${FUZZ_SECONDS:-10}" -gt 0 ]; then
  FUZZ_BUILD="$BUILD-fuzz" FUZZ_PARALLEL=2 JOBS="$JOBS" bash scripts/fuzz.sh "${FUZZ_SECONDS:-10}" \
    fuzz_safetensors fuzz_config fuzz_tokenizer fuzz_chat fuzz_completion fuzz_stream
fi
phase_done "fuzzing"
