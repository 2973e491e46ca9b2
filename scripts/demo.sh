#!/usr/bin/env bash
# The main job: builds dsinfer and runs a real conversation with the model shipped in models/dsinfer-v32-mini (a
# small DeepSeek-V3.2 trained by training/make_model.sh): a question the model answers by calling a tool, the tool
# run by the example's own code, the result fed back, the model's answer; then a plain chat turn. Once in chat
# mode, once with thinking on.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
BUILD=${BUILD:-build}
MODEL=models/dsinfer-v32-mini
(cd "$MODEL" && sha256sum --quiet --strict -c SHA256SUMS) || { echo "models/dsinfer-v32-mini does not match its manifest"; exit 1; }
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDSINFER_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target example_chat_with_tools dsinfer_cli
"$BUILD/examples/example_chat_with_tools" "$MODEL" "What's the weather like in Paris?"
"$BUILD/examples/example_chat_with_tools" "$MODEL" "What is 1234 times 56?" --thinking
