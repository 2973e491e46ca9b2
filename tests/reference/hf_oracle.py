#!/usr/bin/env python3
"""Reference logits and greedy continuations from Hugging Face transformers, for the C++ golden tests.

    python tests/reference/hf_oracle.py --preset v32-tiny --model build/models/v32-tiny --out tests/golden/v32-tiny

Loads the checkpoint independently of dsinfer: the `safetensors` package reads the shards, torch's own
float8_e4m3fn -> float32 conversion decodes the FP8 weights, which are then multiplied by weight_scale_inv per
128x128 block. transformers' DeepseekV32ForCausalLM (or DeepseekV3ForCausalLM when the config has no indexer) is
built from config.json (quantization_config dropped) in float32 with eager attention, on the CPU. Writes:
  meta.json               preset, commands, checkpoint sha256s, versions, prompts (ids, logits file, shape,
                          greedy ids) and the robustness margins below
  <prompt>.logits.f32     little-endian float32 [n_tokens, vocab] logits for every position

Robustness: hooks on the router (mlp.gate) and the indexer record, for every decision, the margin between the last
selected and the first rejected score (absolute and relative to the larger of the two magnitudes): the MoE group
selection (top topk_group groups by the sum of their two best biased scores), the expert top-k inside the kept
groups, and the indexer top-k (rows with no more visible tokens than index_topk make no decision and are skipped).
It also counts the tokens whose group-limited expert set differs from the plain top-k (the group limit must matter)
and records the top1-top2 logit gap at every greedy step. Needs torch, transformers, safetensors, numpy
(see tests/reference/README.md).
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
REPO = os.path.dirname(os.path.dirname(HERE))

PROMPT_LENGTHS = (1, 17, 72)
GREEDY_STEPS = 32
DENSE_TOPK = 4096  # >= any prompt here: the indexer keeps every visible token, i.e. dense causal attention
TINY = 1e-4  # a relative margin below this is a near-tie: change the preset's seed in the generator


def prompt_ids(n, seed):
    """Deterministic ids in [3, 3999] (a 64-bit LCG; stays inside the fixture tokenizer's range)."""
    ids, s = [], seed
    for _ in range(n):
        s = (s * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        ids.append(3 + (s >> 33) % 3997)
    return ids


def load_state(model_dir):
    """All tensors as float32 torch tensors; FP8 ones dequantized (e4m3 x weight_scale_inv per 128x128 block)."""
    from safetensors.torch import load_file
    with open(os.path.join(model_dir, "model.safetensors.index.json")) as f:
        index = json.load(f)
    raw = {}
    for shard in sorted(set(index["weight_map"].values())):
        part = load_file(os.path.join(model_dir, shard))
        assert all(index["weight_map"][n] == shard for n in part), f"{shard}: tensors not listed in the index"
        raw.update(part)
    assert set(raw) == set(index["weight_map"]), "index weight_map and shard contents differ"
    state = {}
    for name, t in raw.items():
        if name.endswith("_scale_inv"):
            assert name[: -len("_scale_inv")] in raw and raw[name[: -len("_scale_inv")]].dtype == torch.float8_e4m3fn
            continue
        if t.dtype == torch.float8_e4m3fn:
            w = t.to(torch.float32)
            s = raw[name + "_scale_inv"]
            assert s.dtype == torch.float32 and list(s.shape) == [-(-w.shape[0] // 128), -(-w.shape[1] // 128)], name
            blk = s.repeat_interleave(128, 0).repeat_interleave(128, 1)[: w.shape[0], : w.shape[1]]
            state[name] = w * blk
        else:
            state[name] = t.to(torch.float32)
    return state, {n: str(t.dtype).replace("torch.", "") for n, t in raw.items()}


def to_hf_state(state, cfg):
    """Checkpoint names -> transformers 5 module names. transformers 5 stores the routed experts fused:
    mlp.experts.gate_up_proj [E, 2*inner, hidden] = cat(gate_proj, up_proj) per expert along the output dim,
    mlp.experts.down_proj [E, hidden, inner]. Every other name is the checkpoint's own."""
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


def build_model(cfg, state, index_topk=None):
    cfg = dict(cfg)
    cfg.pop("quantization_config", None)  # weights are already dequantized to float32
    if index_topk is not None:
        cfg["index_topk"] = index_topk
    if "index_topk" in cfg:
        from transformers import DeepseekV32Config as Config, DeepseekV32ForCausalLM as Model
    else:
        from transformers import DeepseekV3Config as Config, DeepseekV3ForCausalLM as Model
    conf = Config.from_dict(cfg)
    conf._attn_implementation = "eager"
    model = Model(conf).to(torch.float32).eval()
    hf_state = to_hf_state(state, cfg)
    want = set(model.state_dict())
    # Every module tensor must come from the checkpoint and every checkpoint tensor must be used: the rotary
    # tables are non-persistent buffers (not in the state dict), so no exception is needed.
    missing, unexpected = sorted(want - set(hf_state)), sorted(set(hf_state) - want)
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    for k, v in model.state_dict().items():
        if tuple(v.shape) != tuple(hf_state[k].shape):
            raise SystemExit(f"{k}: module shape {tuple(v.shape)} != checkpoint {tuple(hf_state[k].shape)}")
    model.load_state_dict(hf_state, strict=True)
    return model


def rel_margin(a, b):
    """(a - b) relative to the larger magnitude of the two (float64 inputs, a >= b)."""
    return (a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-30)


class Recorder:
    """Forward hooks on every router and indexer; collects decision margins for the current pass."""

    def __init__(self, model):
        self.tag = None
        self.stats = {}
        self.handles = []
        self._orig_topk = torch.Tensor.topk
        self._indexer_layer = None
        for name, mod in model.named_modules():
            layer = int(name.split(".")[2]) if name.startswith("model.layers.") else None
            if hasattr(mod, "e_score_correction_bias") and hasattr(mod, "topk_group"):
                self.handles.append(mod.register_forward_hook(self._router_hook(layer)))
            elif type(mod).__name__.endswith("Indexer"):
                self.handles.append(mod.register_forward_pre_hook(self._indexer_enter(layer)))
                self.handles.append(mod.register_forward_hook(self._indexer_leave))
        rec = self

        def topk(self_, k, dim=-1, *a, **kw):
            if rec._indexer_layer is not None and rec.tag is not None:
                rec._indexer_topk(self_, k, dim)
            return rec._orig_topk(self_, k, dim, *a, **kw)

        torch.Tensor.topk = topk

    def close(self):
        torch.Tensor.topk = self._orig_topk
        for h in self.handles:
            h.remove()

    def _put(self, key, rel, gap, count=None):
        s = self.stats.setdefault(self.tag, {}).setdefault(key, {"min_rel": float("inf"), "min_abs": float("inf"),
                                                                   "decisions": 0})
        if rel.size:
            s["min_rel"] = min(s["min_rel"], float(rel.min()))
            s["min_abs"] = min(s["min_abs"], float(gap.min()))
            s["decisions"] += int(rel.size)
        if count is not None:
            s["differs_from_unlimited"] = s.get("differs_from_unlimited", 0) + count[0]
            s["tokens"] = s.get("tokens", 0) + count[1]

    def _router_hook(self, layer):
        def hook(mod, inputs, output):
            if self.tag is None:
                return
            with torch.no_grad():
                x = inputs[0].reshape(-1, mod.hidden_dim)
                # the same float32 operations as the router itself, then the decisions examined in float64
                logits = torch.nn.functional.linear(x.float(), mod.weight.float())
                biased = (logits.sigmoid() + mod.e_score_correction_bias).double().numpy()
                T, E = biased.shape
                G, kg, k = mod.num_group, mod.topk_group, mod.top_k
                grouped = np.sort(biased.reshape(T, G, E // G), axis=-1)
                gscore = grouped[..., -1] + grouped[..., -2]
                gs = np.sort(gscore, axis=-1)[:, ::-1]
                self._put(f"layer {layer} moe group selection (top {kg} of {G} groups)",
                          rel_margin(gs[:, kg - 1], gs[:, kg]), gs[:, kg - 1] - gs[:, kg])
                keep = np.argsort(-gscore, axis=-1, kind="stable")[:, :kg]
                mask = np.zeros((T, G), dtype=bool)
                np.put_along_axis(mask, keep, True, axis=-1)
                limited = np.where(np.repeat(mask, E // G, axis=-1), biased, -np.inf)
                ls = np.sort(limited, axis=-1)[:, ::-1]
                self._put(f"layer {layer} moe expert top-{k} (in kept groups)",
                          rel_margin(ls[:, k - 1], ls[:, k]), ls[:, k - 1] - ls[:, k])
                sel_limited = np.sort(np.argsort(-limited, axis=-1, kind="stable")[:, :k], axis=-1)
                sel_plain = np.sort(np.argsort(-biased, axis=-1, kind="stable")[:, :k], axis=-1)
                got = np.sort(output[2].reshape(T, k).numpy(), axis=-1)
                assert (got == sel_limited).all(), f"layer {layer}: recomputed routing differs from transformers'"
                differs = int((sel_limited != sel_plain).any(axis=-1).sum())
                self._put(f"layer {layer} moe group limit changes the expert set", np.array([]), np.array([]),
                          count=(differs, T))
        return hook

    def _indexer_enter(self, layer):
        def hook(mod, inputs):
            self._indexer_layer = layer
        return hook

    def _indexer_leave(self, mod, inputs, output):
        self._indexer_layer = None

    def _indexer_topk(self, scores, k, dim):
        with torch.no_grad():
            v = scores.detach().double().movedim(dim, -1).reshape(-1, scores.shape[dim]).numpy()
        # transformers adds the float32 finfo.min causal mask: anything that low is an invisible (future) key
        visible = v > -1e30
        rows = visible.sum(axis=-1) > k  # rows with at most k visible keys keep them all: no decision
        if not rows.any():
            self._put(f"layer {self._indexer_layer} indexer top-{k}", np.array([]), np.array([]))
            return
        s = np.sort(np.where(visible, v, -np.inf)[rows], axis=-1)[:, ::-1]
        self._put(f"layer {self._indexer_layer} indexer top-{k}", rel_margin(s[:, k - 1], s[:, k]),
                  s[:, k - 1] - s[:, k])


def check_generator_encoders():
    """The generator's own float32 -> e4m3 / bf16 rounding must agree with torch's (round to nearest even)."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from make_small_checkpoint import E4M3, to_bf16_bits, to_e4m3_bits
    x = np.arange(0, 0x43E00001, 997, dtype=np.uint64).astype(np.uint32).view(np.float32)  # 0 .. 448
    mids = ((E4M3[1:] + E4M3[:-1]) / 2).astype(np.float32)  # exact ties
    x = np.concatenate([x, -x, mids, -mids, np.float32([448, 460, 463.9, -463.9])])
    want = torch.from_numpy(x).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    assert (to_e4m3_bits(x) == want).all(), "generator's e4m3 rounding differs from torch's"
    y = np.arange(0, 1 << 32, 40009, dtype=np.uint64).astype(np.uint32).view(np.float32)
    y = y[np.isfinite(y)]
    want = torch.from_numpy(y).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert (to_bf16_bits(y) == want).all(), "generator's bf16 rounding differs from torch's"


@torch.no_grad()
def logits_of(model, ids):
    return model(torch.tensor([ids]), use_cache=False).logits[0].to(torch.float32).numpy()


@torch.no_grad()
def greedy(model, ids, steps):
    """Plain greedy loop recomputing the whole sequence each step (no KV cache involved)."""
    seq, out, gaps, rels = list(ids), [], [], []
    for _ in range(steps):
        last = logits_of(model, seq)[-1].astype(np.float64)
        top2 = np.sort(last)[-2:]
        gaps.append(float(top2[1] - top2[0]))
        rels.append(float(rel_margin(top2[1], top2[0])))
        nxt = int(np.argmax(last))
        out.append(nxt)
        seq.append(nxt)
    return out, gaps, rels


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def finite_json(obj):
    """Strict JSON: a margin with no decision behind it (infinity) becomes null."""
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite_json(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def summarize(stats):
    """Per pass: the worst margin over layers for each kind of decision, and the group-limit count."""
    out = {}
    for tag, entries in stats.items():
        kinds = {}
        for key, s in entries.items():
            kind = key.split(" ", 2)[2]
            if "changes the expert set" in kind:
                k = kinds.setdefault(kind, {"tokens_x_layers": 0, "differs": 0})
                k["tokens_x_layers"] += s["tokens"]
                k["differs"] += s["differs_from_unlimited"]
            elif s["decisions"]:
                k = kinds.setdefault(kind, {"min_rel": float("inf"), "min_abs": float("inf"), "decisions": 0})
                k["min_rel"] = min(k["min_rel"], s["min_rel"])
                k["min_abs"] = min(k["min_abs"], s["min_abs"])
                k["decisions"] += s["decisions"]
        out[tag] = kinds
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)

    check_generator_encoders()
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    state, dtypes = load_state(args.model)
    model = build_model(cfg, state)
    rec = Recorder(model)
    bf16_only = args.preset == "v32-tiny-bf16"
    lengths = (17,) if bf16_only else PROMPT_LENGTHS

    prompts, greedy_margins = [], {}
    try:
        for n in lengths:
            ids = prompt_ids(n, seed=1000 + n)
            rec.tag = f"p{n}"
            logits = logits_of(model, ids)
            fname = f"p{n}.logits.f32"
            logits.astype("<f4").tofile(os.path.join(args.out, fname))
            entry = {"name": f"p{n}", "ids": ids, "logits_file": fname, "shape": list(logits.shape),
                     "greedy_ids": None}
            if n >= 17 and not bf16_only:
                rec.tag = f"p{n} greedy"
                entry["greedy_ids"], gaps, rels = greedy(model, ids, GREEDY_STEPS)
                greedy_margins[f"p{n}"] = {"min_abs": min(gaps), "min_rel": min(rels),
                                           "per_step_abs": [round(g, 6) for g in gaps]}
            prompts.append(entry)
            std = float(logits.std(axis=-1).mean())
            print(f"{args.preset} p{n}: logits {logits.shape}, mean per-position std {std:.3f}, "
                  f"max|logit| {np.abs(logits).max():.3f}", flush=True)
    finally:
        rec.close()

    if "index_topk" in cfg:
        n = max(lengths)
        dense = build_model(cfg, state, index_topk=DENSE_TOPK)
        ids = prompt_ids(n, seed=1000 + n)
        logits = logits_of(dense, ids)
        fname = f"p{n}_dense.logits.f32"
        logits.astype("<f4").tofile(os.path.join(args.out, fname))
        prompts.append({"name": f"p{n}_dense", "ids": ids, "logits_file": fname, "shape": list(logits.shape),
                        "greedy_ids": None, "index_topk": DENSE_TOPK})
        sparse = np.fromfile(os.path.join(args.out, f"p{n}.logits.f32"), dtype="<f4").reshape(logits.shape)
        print(f"{args.preset} p{n}: sparse vs dense (index_topk {cfg['index_topk']} vs {DENSE_TOPK}) "
              f"max|diff| {np.abs(sparse - logits).max():.3f}")

    stats = summarize(rec.stats)
    worst = {}
    for tag, kinds in stats.items():
        for kind, s in kinds.items():
            if "min_rel" in s:
                worst[f"{tag} {kind}"] = s["min_rel"]
    for name, g in greedy_margins.items():
        worst[f"{name} greedy top1-top2 logit gap"] = g["min_rel"]
    near_ties = sorted(k for k, v in worst.items() if v < TINY)

    files = ["config.json", "generation_config.json", "model.safetensors.index.json"] + sorted(
        f for f in os.listdir(args.model) if f.endswith(".safetensors"))
    meta = {
        "preset": args.preset,
        "generator_command": f"python3 scripts/make_small_checkpoint.py --preset {args.preset} --out DIR",
        "oracle_command": f"python tests/reference/hf_oracle.py --preset {args.preset} --model DIR "
                          f"--out tests/golden/{args.preset}",
        "made_by": f"tests/reference/hf_oracle.py --preset {args.preset} (checkpoint: scripts/make_small_checkpoint.py "
                   f"--preset {args.preset})",
        "reference": f"transformers {transformers.__version__} {type(model).__name__}, float32, eager attention, "
                     f"CPU; torch {torch.__version__}",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__, "python": sys.version.split()[0]},
        "greedy": f"{GREEDY_STEPS} tokens, argmax of the last position, whole sequence recomputed each step "
                  f"(use_cache=False)",
        "checkpoint_sha256": {f: sha256(os.path.join(args.model, f)) for f in files},
        "checkpoint_dtypes": dict(sorted(dtypes.items())),
        "prompts": prompts,
        "margins": {
            "definition": "margin = last selected score - first rejected score; rel = margin / max(|both|). "
                          "Router: biased sigmoid scores (group score = sum of a group's two best). Indexer: "
                          "transformers' fp32 index scores, rows with more visible keys than index_topk only. "
                          "Greedy: top1 - top2 logit at each step.",
            "by_pass": stats,
            "by_layer": rec.stats,
            "greedy": greedy_margins,
            "near_ties_below_1e-4": near_ties,
        },
        "min_relative_topk_margins": dict(sorted(worst.items())),
    }
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(finite_json(meta), f, indent=1, allow_nan=False)
        f.write("\n")
    for k, v in sorted(worst.items()):
        print(f"  min relative margin  {k}: {v:.3g}")
    for tag, kinds in stats.items():
        for kind, s in kinds.items():
            if "differs" in s:
                print(f"  {tag}: group limit changes the expert set for {s['differs']} of {s['tokens_x_layers']} "
                      f"token-layers")
    if near_ties:
        print(f"NEAR TIES (relative margin < {TINY}): {near_ties} -- change the preset's seed", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
