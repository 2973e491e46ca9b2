#!/usr/bin/env bash
# Fuzzing campaigns (docs/fuzzing.md): builds the targets of tests/fuzz with clang, libFuzzer, ASan and UBSan in
# $FUZZ_BUILD, then runs each target for SECONDS (or FUZZ_RUNS executions) starting from its seed corpus.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]       default: 60 seconds, every target
#
# Environment: FUZZ_BUILD (default build-fuzz), JOBS (build parallelism), FUZZ_PARALLEL (targets run at once,
# default 1), FUZZ_RUNS (a number of executions per target instead of a time), FUZZ_NICE (nice level, default 0).
# New inputs go to $FUZZ_BUILD/corpus/<target> (the repository's seeds are only read); a crash, leak, sanitizer
# report or timeout leaves its input in $FUZZ_BUILD/findings/<target>/ and makes the script exit 1. Each target's
# execution count is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
shift || true
ALL=(fuzz_safetensors fuzz_config fuzz_tokenizer fuzz_chat fuzz_completion fuzz_stream fuzz_openai_request
     fuzz_session_restore fuzz_capi)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")
B=${FUZZ_BUILD:-build-fuzz}
JOBS=${JOBS:-$(nproc)}
PAR=${FUZZ_PARALLEL:-1}
NICE=${FUZZ_NICE:-0}
command -v clang++ >/dev/null || { echo "fuzz.sh needs clang (apt-get install clang libclang-rt-dev)"; exit 2; }
# The file loaders' targets write each input to a scratch file: in memory where possible.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi

CC=clang CXX=clang++ cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSINFER_FUZZ=ON -DDSINFER_TESTS=ON \
  -DDSINFER_CUDA=OFF -DDSINFER_BENCH=OFF >/dev/null
nice -n "$NICE" cmake --build "$B" -j "$JOBS" --target "${TARGETS[@]}" >/dev/null
# fuzz_session_restore and fuzz_capi run against small generated checkpoints (DSINFER_MODELS_DIR = $B/models).
for preset in v32-tiny v32-micro; do
  [ -f "$B/models/$preset/config.json" ] || python3 scripts/make_small_checkpoint.py --preset $preset \
    --out "$B/models/$preset" >/dev/null
done

run_one() {
  local t=$1 work="$B/corpus/$1" findings="$B/findings/$1/" limit
  mkdir -p "$work" "$findings"
  if [ -n "${FUZZ_RUNS:-}" ]; then limit="-runs=$FUZZ_RUNS"; else limit="-max_total_time=$SECONDS_PER_TARGET"; fi
  # -rss_limit_mb / -malloc_limit_mb: an input that makes a loader allocate gigabytes is a finding, as a crash is.
  # Leak detection stays on (ASan's default); -timeout flags an input that takes more than 10 s (a hang).
  if nice -n "$NICE" "$B/tests/fuzz/$t" "$limit" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
      -print_final_stats=1 -artifact_prefix="$findings" "$work" "tests/fuzz/corpus/$t" >"$B/$t.log" 2>&1; then
    echo "$t: $(grep -m1 -o 'stat::number_of_executed_units: [0-9]*' "$B/$t.log" | grep -o '[0-9]*$') executions, no finding"
  else
    echo "$t: FINDING (see $B/$t.log and $findings)"
    tail -n 30 "$B/$t.log"
    return 1
  fi
}

status=0
pids=()
for t in "${TARGETS[@]}"; do
  run_one "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$PAR" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
