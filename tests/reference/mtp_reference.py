#!/usr/bin/env python3
"""The oracle of dsinfer's MTP module (spec §7): the logits the multi-token-prediction layer gives at every position
of a prompt, computed in float64 by the spec-formula emulation of fp8_reference.py in reference mode (fp32-style
math, FP8 weights dequantized; no dsinfer code).

    python tests/reference/mtp_reference.py --model build/models/v32-tiny-mtp --out tests/golden/v32-tiny-mtp

For a prompt t_0..t_{n-1}, the main model's final-normed hidden states h_0..h_{n-1}; then for i in [0, n-1), at
RoPE position i and causal over the MTP layer's own keys:

    u_i = eh_proj(concat[enorm(Embed[t_{i+1}]), hnorm(h_i)])      (embedding half first: vLLM, SGLang, the export)
    v_i = DecoderLayer_L(u_i)                                     (L = num_hidden_layers: attention with its own
                                                                   indexer, MoE; returns residual + ffn output)
    logits_i = shared_head.norm(v_i) . lm_head^T                  (the token t_{i+2})

DeepSeek's inference/model.py has no MTP; the wiring follows the spec's reading of DeepSeek-V3's README_WEIGHTS and
vLLM's deepseek_mtp.py, as training/model.py does (no position-0 zeroing of the embedding: that is a vLLM quirk the
training code does not have). The embedding and lm_head are the main model's.

Writes meta.json (the prompt, the checkpoint's sha256s, the format) and mtp_p72.logits.f32, [71, vocab] float32.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from fp8_reference import Emulation, load  # noqa: E402
from hf_oracle import prompt_ids  # noqa: E402


class MtpEmulation(Emulation):
    def hidden(self, ids):
        """The main model's final-normed hidden states [T, D] (Emulation.forward without the lm_head)."""
        c = self.c
        pos = torch.arange(len(ids))
        h = self.raw["model.embed_tokens.weight"].to(self.dt)[torch.tensor(ids)]
        res = torch.zeros_like(h)
        for L in range(c["num_hidden_layers"]):
            res = res + h
            h = self.attention(L, self.rms(res, f"model.layers.{L}.input_layernorm.weight"), pos)
            res = res + h
            x = self.rms(res, f"model.layers.{L}.post_attention_layernorm.weight")
            h = self.moe(L, x) if L >= c["first_k_dense_replace"] else self.mlp(f"model.layers.{L}.mlp.", x)
        return self.rms(res + h, "model.norm.weight")

    def mtp_logits(self, ids):
        c = self.c
        L = c["num_hidden_layers"]
        p = f"model.layers.{L}."
        hn = self.hidden(ids)
        T = len(ids) - 1
        pos = torch.arange(T)
        e = self.raw["model.embed_tokens.weight"].to(self.dt)[torch.tensor(ids[1:])]
        u = self.lin(p + "eh_proj.weight",
                     torch.cat([self.rms(e, p + "enorm.weight"), self.rms(hn[:T], p + "hnorm.weight")], -1))
        res = u
        h = self.attention(L, self.rms(res, p + "input_layernorm.weight"), pos)
        res = res + h
        x = self.rms(res, p + "post_attention_layernorm.weight")
        h = self.moe(L, x) if L >= c["first_k_dense_replace"] else self.mlp(p + "mlp.", x)
        v = self.rms(res + h, p + "shared_head.norm.weight")
        return (v @ self.raw["lm_head.weight"].to(self.dt).T).to(torch.float32).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the v32-tiny-mtp checkpoint (scripts/make_small_checkpoint.py)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="v32-tiny-mtp")
    args = ap.parse_args()
    cfg, raw = load(args.model)
    ids = prompt_ids(72, seed=1000 + 72)  # hf_oracle.py's 72-token prompt (p72)
    logits = MtpEmulation(cfg, raw, fp8=False).mtp_logits(ids)
    os.makedirs(args.out, exist_ok=True)
    logits.astype("<f4").tofile(os.path.join(args.out, "mtp_p72.logits.f32"))
    gen = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make_small_checkpoint.py"), "--preset",
                          args.preset, "--out", args.model], check=True, capture_output=True, text=True)
    meta = {
        "preset": args.preset,
        "made_by": f"tests/reference/mtp_reference.py --preset {args.preset}",
        "reference": "float64 spec emulation (fp8_reference.py Emulation, reference mode) plus the MTP module of "
                     "spec §7; see the script's docstring",
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": sys.version.split()[0]},
        "checkpoint_sha256": json.loads(gen.stdout)["checkpoint_sha256"],
        "format": "raw little-endian float32 [n - 1, vocab], row i = MTP logits at position i (token i + 2)",
        "prompts": [{"name": "p72", "ids": ids, "mtp_logits_file": "mtp_p72.logits.f32",
                     "shape": [len(ids) - 1, cfg["vocab_size"]]}],
    }
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}: MTP logits [{len(ids) - 1}, {cfg['vocab_size']}]")


if __name__ == "__main__":
    main()
