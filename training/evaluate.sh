#!/usr/bin/env bash
# Evaluates the shipped model through dsinfer itself (tools/eval_chat) on the held-out conversations, in every mode
# the model card reports, and records the CI subset the CTest case compares against.
#   bash training/evaluate.sh [WORK_DIR]     (default build/train; needs build/tools/eval_chat)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
WORK=${1:-build/train}
MODEL=models/dsinfer-v32-mini
GOLDEN=tests/golden/dsinfer-v32-mini
EVAL="$WORK/eval"
mkdir -p "$EVAL" "$GOLDEN"
# The held-out set as the evaluation reads it (messages, tools, checks; no rendered text), from the training run's
# data when it is there; without it (re-measuring the shipped weights) the committed copy is used.
if [ -f "$WORK/data/heldout.jsonl" ]; then
  "$PY" - "$WORK/data/heldout.jsonl" "$GOLDEN/heldout.jsonl" <<'PYEOF'
import json, sys
with open(sys.argv[1], encoding="utf-8") as src, open(sys.argv[2], "w", encoding="utf-8") as dst:
    for line in src:
        c = json.loads(line)
        keep = {k: c[k] for k in ("thinking", "unseen_tools", "tools", "messages", "checks")}
        dst.write(json.dumps(keep, ensure_ascii=False) + "\n")
PYEOF
fi
E=build/tools/eval_chat
"$E" --model "$MODEL" --data "$GOLDEN/heldout.jsonl" --precision fp8 --sampling greedy --out "$EVAL/fp8_greedy.json"
"$E" --model "$MODEL" --data "$GOLDEN/heldout.jsonl" --precision fp8 --sampling default --seed 1 \
     --out "$EVAL/fp8_sampled.json"
"$E" --model "$MODEL" --data "$GOLDEN/heldout.jsonl" --precision reference --sampling greedy \
     --out "$EVAL/reference_greedy.json"
"$E" --model "$MODEL" --data "$GOLDEN/heldout.jsonl" --precision fp8 --sampling greedy --grammar off \
     --out "$EVAL/fp8_greedy_nogrammar.json"
# The CTest case's record: the first 50 conversations, FP8, greedy (failures dropped: the record is the rates).
"$E" --model "$MODEL" --data "$GOLDEN/heldout.jsonl" --n 50 --precision fp8 --sampling greedy --out "$EVAL/ci50.json"
"$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); r.pop('failures'); r.pop('seconds'); r['model']='models/dsinfer-v32-mini'; r['data']='tests/golden/dsinfer-v32-mini/heldout.jsonl'; json.dump(r, open(sys.argv[2],'w'), indent=1)" \
  "$EVAL/ci50.json" "$GOLDEN/eval_50_fp8_greedy.json"
# The MTP head's accuracy comes from the training code (PyTorch) on the run's data; without either it is skipped and
# `training/model_card.py --eval-only` keeps the card's MTP sentence.
if [ -d "$WORK/data" ] && "$PY" -c "import torch" 2>/dev/null; then
  "$PY" training/mtp_accuracy.py --model "$MODEL" --data "$WORK/data" --out "$EVAL/mtp.json"
else
  echo "evaluate.sh: no $WORK/data or no PyTorch: the MTP accuracy (training/mtp_accuracy.py) is not re-measured"
fi
