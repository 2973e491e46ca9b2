#!/usr/bin/env python3
"""Reference logits and greedy continuations from Hugging Face transformers, for the C++ golden tests.

    python tests/reference/hf_oracle.py --preset v32-tiny --model build/models/v32-tiny --out tests/golden/v32-tiny

Loads the checkpoint independently of dsinfer (the `safetensors` package; FP8 weights dequantized here as
e4m3 x weight_scale_inv per 128x128 block), builds transformers' own DeepseekV32ForCausalLM (or
DeepseekV3ForCausalLM when the config has no indexer) in float32 with eager attention, and writes:
  meta.json               preset, checkpoint sha256s, versions, prompts (ids, logits file, greedy ids), margins
  <prompt>.logits.f32     little-endian float32 [n_tokens, vocab] logits for every position
Needs torch, transformers, safetensors, numpy (see tests/reference/README.md).
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
from make_small_checkpoint import e4m3_value  # noqa: E402  (the table-driven e4m3 decoder; no torch involved)

PROMPT_LENGTHS = (1, 17, 72)
GREEDY_STEPS = 32


def prompt_ids(n, seed):
    """Deterministic ids in [3, 3999] (a 64-bit LCG; stays inside the fixture tokenizer's range)."""
    ids, s = [], seed
    for _ in range(n):
        s = (s * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        ids.append(3 + (s >> 33) % 3997)
    return ids


def load_state(model_dir):
    """All tensors as float32 torch tensors, FP8 ones dequantized here (e4m3 x weight_scale_inv per 128x128 block)."""
    from safetensors.torch import load_file as load_torch
    with open(os.path.join(model_dir, "model.safetensors.index.json")) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    raw = {}
    for s in shards:
        raw.update(load_torch(os.path.join(model_dir, s)))
    state = {}
    for name, t in raw.items():
        if name.endswith("_scale_inv"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            codes = t.view(torch.uint8).numpy()
            scale = raw[name + "_scale_inv"].numpy().astype(np.float64)
            w = e4m3_value(codes).astype(np.float64)
            blk = np.repeat(np.repeat(scale, 128, axis=0), 128, axis=1)[: w.shape[0], : w.shape[1]]
            state[name] = torch.from_numpy((w * blk).astype(np.float32))
        else:
            state[name] = t.to(torch.float32)
    return state


def to_hf_state(state, cfg):
    """Checkpoint names -> transformers 5 module names (its experts are fused 3-D tensors)."""
    out = dict(state)
    E = cfg.get("n_routed_experts", 0)
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}.mlp."
        if f"{p}experts.0.gate_proj.weight" not in state:
            continue
        gu, dn = [], []
        for e in range(E):
            g = out.pop(f"{p}experts.{e}.gate_proj.weight")
            u = out.pop(f"{p}experts.{e}.up_proj.weight")
            gu.append(torch.cat([g, u], dim=0))
            dn.append(out.pop(f"{p}experts.{e}.down_proj.weight"))
        out[p + "experts.gate_up_proj"] = torch.stack(gu)
        out[p + "experts.down_proj"] = torch.stack(dn)
    return out


class MarginRecorder:
    """Wraps torch.topk / Tensor.topk during a forward to record how close each top-k decision was to a tie."""

    def __init__(self):
        self.margins = {}
        self._orig_fn, self._orig_method = torch.topk, torch.Tensor.topk

    def _record(self, tag, x, k, dim):
        with torch.no_grad():
            v = x.detach().to(torch.float64)
            n = v.shape[dim]
            if k >= n:
                return
            s = torch.sort(v, dim=dim, descending=True).values
            kth, nxt = s.narrow(dim, k - 1, 1), s.narrow(dim, k, 1)
            # transformers masks with finfo.min rather than -inf: treat anything that low as masked.
            finite = (nxt > -1e30) & (kth > -1e30)
            if finite.any():
                rel = ((kth - nxt).abs() / kth.abs().clamp_min(1e-30))[finite]
                m = float(rel.min())
                self.margins[tag] = min(self.margins.get(tag, float("inf")), m)

    def __enter__(self):
        rec = self

        def fn(x, k, dim=-1, *a, **kw):
            rec._record(f"topk k={k} of {x.shape[dim]}", x, k, dim)
            return rec._orig_fn(x, k, dim, *a, **kw)

        def method(self_, k, dim=-1, *a, **kw):
            rec._record(f"topk k={k} of {self_.shape[dim]}", self_, k, dim)
            return rec._orig_method(self_, k, dim, *a, **kw)

        torch.topk, torch.Tensor.topk = fn, method
        return self

    def __exit__(self, *exc):
        torch.topk, torch.Tensor.topk = self._orig_fn, self._orig_method


def build_model(cfg, state, index_topk=None):
    cfg = dict(cfg)
    cfg.pop("quantization_config", None)
    if index_topk is not None:
        cfg["index_topk"] = index_topk
    if "index_topk" in cfg:
        from transformers import DeepseekV32Config as Config, DeepseekV32ForCausalLM as Model
    else:
        from transformers import DeepseekV3Config as Config, DeepseekV3ForCausalLM as Model
    conf = Config.from_dict(cfg)
    conf._attn_implementation = "eager"
    model = Model(conf).to(torch.float32).eval()
    missing, unexpected = model.load_state_dict(to_hf_state(state, cfg), strict=False)
    # transformers keeps non-persistent rotary buffers out of the state dict; nothing else may be missing.
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    return model


@torch.no_grad()
def logits_of(model, ids):
    return model(torch.tensor([ids]), use_cache=False).logits[0].to(torch.float32).numpy()


@torch.no_grad()
def greedy(model, ids, steps):
    """Plain greedy loop recomputing the whole sequence each step (no cache involved)."""
    seq, out, gaps = list(ids), [], []
    for _ in range(steps):
        last = logits_of(model, seq)[-1].astype(np.float64)
        top2 = np.sort(last)[-2:]
        gaps.append(float(top2[1] - top2[0]))
        nxt = int(np.argmax(last))
        out.append(nxt)
        seq.append(nxt)
    return out, min(gaps)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)

    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    state = load_state(args.model)
    model = build_model(cfg, state)
    lengths = PROMPT_LENGTHS if args.preset != "v32-tiny-bf16" else (17,)

    prompts, margins = [], {}
    for n in lengths:
        ids = prompt_ids(n, seed=1000 + n)
        with MarginRecorder() as rec:
            logits = logits_of(model, ids)
        for k, v in rec.margins.items():
            margins[f"p{n} {k}"] = v
        fname = f"p{n}.logits.f32"
        logits.astype("<f4").tofile(os.path.join(args.out, fname))
        entry = {"name": f"p{n}", "ids": ids, "logits_file": fname, "shape": list(logits.shape), "greedy_ids": None}
        if n >= 17 and args.preset != "v32-tiny-bf16":
            entry["greedy_ids"], gap = greedy(model, ids, GREEDY_STEPS)
            margins[f"p{n} greedy min top1-top2 logit gap"] = gap
        prompts.append(entry)
        print(f"{args.preset} p{n}: logits {logits.shape}, max|logit| {np.abs(logits).max():.3f}", flush=True)

    if "index_topk" in cfg:
        n = max(lengths)
        dense = build_model(cfg, state, index_topk=1 << 16)
        ids = prompt_ids(n, seed=1000 + n)
        logits = logits_of(dense, ids)
        fname = f"p{n}_dense.logits.f32"
        logits.astype("<f4").tofile(os.path.join(args.out, fname))
        prompts.append({"name": f"p{n}_dense", "ids": ids, "logits_file": fname, "shape": list(logits.shape),
                        "greedy_ids": None, "index_topk": 1 << 16})

    files = ["config.json", "generation_config.json", "model.safetensors.index.json"] + sorted(
        f for f in os.listdir(args.model) if f.endswith(".safetensors"))
    meta = {
        "preset": args.preset,
        "made_by": f"tests/reference/hf_oracle.py --preset {args.preset} (checkpoint: scripts/make_small_checkpoint.py "
                   f"--preset {args.preset})",
        "reference": f"transformers {transformers.__version__} {type(model).__name__}, float32, eager attention; "
                     f"torch {torch.__version__}",
        "checkpoint_sha256": {f: sha256(os.path.join(args.model, f)) for f in files},
        "prompts": prompts,
        "min_relative_topk_margins": margins,
    }
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    for k, v in sorted(margins.items()):
        print(f"  margin {k}: {v:.3g}")


if __name__ == "__main__":
    main()
