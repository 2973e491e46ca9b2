#!/usr/bin/env bash
# The main job: builds dsinfer and runs a tool-using conversation through the C++ engine with
# examples/chat_with_tools.cpp: a question, the model's tool call, the tool run by the example's own code (a weather
# table, an exact calculator), the result fed back, the model's answer; then a plain chat turn.
# With the trained model models/dsinfer-v32-mini (issue 15), greedy, so that what README shows is what runs; a checkout
# without the model runs the same loop with the small random-weight test checkpoint (meaningless text).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
BUILD=${BUILD:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDSINFER_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target example_chat_with_tools dsinfer_cli
MODEL=models/dsinfer-v32-mini
if [ -f "$MODEL/SHA256SUMS" ]; then
  (cd "$MODEL" && sha256sum --quiet --strict -c SHA256SUMS) || { echo "$MODEL does not match its manifest"; exit 1; }
else
  MODEL="$BUILD/models/v32-tiny"
  [ -f "$MODEL/config.json" ] || python3 scripts/make_small_checkpoint.py --preset v32-tiny --out "$MODEL"
  echo "models/dsinfer-v32-mini is not in this checkout yet: running the loop with $MODEL (random weights, so the"
  echo "text is meaningless; the tool calls it happens to make are still parsed, run and fed back)"
fi
"$BUILD/tools/dsinfer" info --model "$MODEL"
"$BUILD/examples/example_chat_with_tools" "$MODEL" "What's the weather like in Paris?" --greedy
"$BUILD/examples/example_chat_with_tools" "$MODEL" "What is 1234 times 56?" --thinking --greedy
