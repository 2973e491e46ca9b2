#!/usr/bin/env python3
"""Writes a trained model (RUN_DIR/model.pt) as a Hugging Face checkpoint folder in DeepSeek-V3.2's real format.

    python training/export.py --run RUN_DIR --tokenizer TOK_DIR --out models/dsinfer-v32-mini

- config.json: every key of DeepSeek-V3.2's config.json (training/config.py).
- model-0000N-of-0000M.safetensors + model.safetensors.index.json, tensor names as in the real checkpoint
  (spec §8): every projection F8_E4M3 with an F32 `weight_scale_inv` of 128x128 blocks (scale = block amax / 448,
  the exact values the FP8-aware training ran with), BF16 embeddings, head, router gate, indexer weights_proj and
  norms (the indexer's k_norm weight and bias included), F32 e_score_correction_bias. The MTP module is stored as
  decoder layer `num_hidden_layers` with enorm, hnorm, eh_proj (BF16), its own attention (with indexer) and MoE,
  shared_head.norm, and the copies of the embedding and head the real checkpoint carries
  (embed_tokens.weight, shared_head.head.weight).
- generation_config.json with DeepSeek-V3.2's sampling defaults (temperature 1.0, top_p 0.95).
- tokenizer.json and tokenizer_config.json from the tokenizer folder.
The safetensors writer and the FP8 block quantizer are scripts/make_small_checkpoint.py's.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from config import msc  # noqa: E402  (scripts/make_small_checkpoint.py)
from model import quant_weight_blocks  # noqa: E402

FP8_PROJECTIONS = ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "wq_b", "wk", "gate_proj",
                   "up_proj", "down_proj")
GENERATION_CONFIG = {"_from_model_config": True, "bos_token_id": 0, "eos_token_id": 1, "do_sample": True,
                     "temperature": 1.0, "top_p": 0.95, "transformers_version": "4.46.3"}


def hf_name(key, n_layers):
    """The checkpoint name of a training-module parameter (None: not stored)."""
    if key.startswith("mtp."):
        rest = key[len("mtp."):]
        pre = f"model.layers.{n_layers}."
        if rest.startswith("block."):
            rest = rest[len("block."):]
        elif rest.startswith("shared_head_norm."):
            rest = "shared_head.norm." + rest[len("shared_head_norm."):]
        key = pre + rest
    elif key.startswith("layers."):
        key = "model." + key
    elif key.startswith(("embed_tokens.", "norm.")):
        key = "model." + key
    return key.replace("mlp.e_score_correction_bias", "mlp.gate.e_score_correction_bias")


def tensors(state, cfg):
    """(name, dtype, numpy array) in checkpoint order."""
    L = cfg["num_hidden_layers"]
    out = []
    for key, t in state.items():
        name = hf_name(key, L)
        t = t.detach().to(torch.float32)
        leaf = name.rsplit(".", 2)[-2]
        if name.endswith("e_score_correction_bias"):
            out.append((name, "F32", t.numpy().astype(np.float32)))
        elif leaf in FP8_PROJECTIONS and name.endswith(".weight"):
            codes, scale = msc.quantize_fp8_blocks(t.numpy())
            # The exported values must be exactly the ones the FP8-aware training used.
            dq = (msc.e4m3_value(codes) * np.repeat(np.repeat(scale, 128, 0), 128, 1)[:t.shape[0], :t.shape[1]])
            assert np.array_equal(dq.astype(np.float32), quant_weight_blocks(t).numpy()), name
            out.append((name, "F8_E4M3", codes))
            out.append((name + "_scale_inv", "F32", scale))
        else:
            out.append((name, "BF16", msc.to_bf16_bits(t.numpy())))
    if cfg.get("num_nextn_predict_layers"):
        pre = f"model.layers.{L}."
        out.append((pre + "embed_tokens.weight", "BF16", msc.to_bf16_bits(state["embed_tokens.weight"].numpy())))
        out.append((pre + "shared_head.head.weight", "BF16", msc.to_bf16_bits(state["lm_head.weight"].numpy())))
    return out


def export(run_dir, tok_dir, out_dir):
    ck = torch.load(os.path.join(run_dir, "model.pt"), map_location="cpu", weights_only=False)
    cfg, state = ck["config"], ck["state_dict"]
    os.makedirs(out_dir, exist_ok=True)
    for f in os.listdir(out_dir):
        if f.startswith("model-") and f.endswith(".safetensors"):
            os.remove(os.path.join(out_dir, f))
    w = msc.Writer(seed=0, fp8=True)
    for name, dtype, arr in tensors(state, cfg):
        w.add(name, dtype, arr)
    shards = w.save(out_dir, n_shards=2)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump(GENERATION_CONFIG, f, indent=2)
        f.write("\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(tok_dir, name), os.path.join(out_dir, name))
    return shards


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    shards = export(args.run, args.tokenizer, args.out)
    size = sum(os.path.getsize(os.path.join(args.out, s)) for s in shards)
    print(f"wrote {args.out}: {len(shards)} shards, {size / 1e6:.1f} MB of tensors")


if __name__ == "__main__":
    main()
