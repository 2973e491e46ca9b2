#!/usr/bin/env bash
# Retrains the shipped model from nothing, on the CPU: corpus -> tokenizer -> training -> export -> golden logits
# -> manifest. One command; needs the venv of training/README.md (torch, tokenizers, transformers, safetensors) and
# the dsinfer Python package built from this repo (the corpus is rendered by dsinfer's own chat encoder).
#   bash training/make_model.sh [WORK_DIR]       (default build/train; the model goes to models/dsinfer-v32-mini)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
WORK=${1:-build/train}
MODEL=models/dsinfer-v32-mini
mkdir -p "$WORK"
start=$(date +%s)
"$PY" training/generate_data.py --out "$WORK/data"
"$PY" training/train_tokenizer.py --data "$WORK/data" --out "$WORK/tokenizer"
# Two data-parallel ranks of one thread each (gloo): on this 2-core machine that trains about 1.5x faster than one
# process with two threads, whose small per-expert matrix products leave the second core idle much of the time.
# glibc keeps freed blocks up to 32 MB in the heap instead of unmapping them: on this VM a freshly mapped page
# costs ~15 us to fault in, which made a few large per-step tensors take 1.2 s of a 4.2 s step (train.head_ce).
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1000000000
"$PY" -m torch.distributed.run --standalone --nproc_per_node "${RANKS:-2}" \
  training/train.py --data "$WORK/data" --tokenizer "$WORK/tokenizer" --out "$WORK/run" --threads 1
"$PY" training/export.py --run "$WORK/run" --tokenizer "$WORK/tokenizer" --out "$MODEL"
echo "corpus, tokenizer, training and export: $(( $(date +%s) - start )) s"
