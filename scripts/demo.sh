#!/usr/bin/env bash
# Builds dsinfer, makes the repo's small DeepSeek-V3.2-architecture checkpoint and generates with it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
BUILD=${BUILD:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDSINFER_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target dsinfer_cli
MODEL="$BUILD/models/v32-tiny"
[ -f "$MODEL/config.json" ] || python3 scripts/make_small_checkpoint.py --preset v32-tiny --out "$MODEL"
"$BUILD/tools/dsinfer" info --model "$MODEL"
echo "greedy continuation of ids 0,100,200,300,400:"
"$BUILD/tools/dsinfer" generate --model "$MODEL" --ids 0,100,200,300,400 --n 16
echo "greedy continuation of a text prompt (the small model has random weights: expect gibberish):"
"$BUILD/tools/dsinfer" generate --model "$MODEL" --prompt "The weather in Hangzhou tomorrow" --n 24
