#!/usr/bin/env python3
"""Writes small DeepSeek-V3.2-architecture checkpoints in the real Hugging Face layout.

    python3 scripts/make_small_checkpoint.py --preset v32-tiny --out DIR [--tokenizer DIR] [--check META]
    python3 scripts/make_small_checkpoint.py --preset v32-tiny --check tests/golden/v32-tiny/meta.json  (temp dir)

The output is bit-identical on every machine and numpy version: weights come from this script's own integer
PRNG (splitmix64) mapped to floats with exact arithmetic, and float32 -> bfloat16 / float8_e4m3fn rounding and the
safetensors writer are implemented here. CI regenerates the checkpoints instead of storing them; `--check META`
compares the files' sha256 with the ones a golden meta.json recorded when its goldens were made.

Layout and dtypes follow DeepSeek-V3.2 (../shared/spec/dsv32-model.md §6, §8): every projection is F8_E4M3 with an
F32 `weight_scale_inv` of 128x128 blocks (partial edge blocks included); embeddings, lm_head, the router gate, the
indexer's weights_proj and all norms are BF16; the router's e_score_correction_bias is F32.
"""
import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import struct
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMON = {
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "max_position_embeddings": 163840,
    "moe_layer_freq": 1,
    "norm_topk_prob": True,
    "num_nextn_predict_layers": 0,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "tie_word_embeddings": False,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.44.2",  # as in DeepSeek's config.json; informational only
    "use_cache": True,
    "vocab_size": 4096,
    "hidden_size": 256,
    "intermediate_size": 320,
    "moe_intermediate_size": 160,
    "num_hidden_layers": 4,
    "first_k_dense_replace": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "n_routed_experts": 16,
    "n_shared_experts": 1,
    "num_experts_per_tok": 4,
    "n_group": 4,
    "topk_group": 2,
    "q_lora_rank": 192,
    "kv_lora_rank": 128,
    "qk_nope_head_dim": 64,
    "qk_rope_head_dim": 32,
    "v_head_dim": 64,
}
INDEXER = {"index_n_heads": 8, "index_head_dim": 64, "index_topk": 16}
FP8 = {
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "scale_fmt": "ue8m0",
        "weight_block_size": [128, 128],
    }
}

PRESETS = {
    "v32-tiny": dict(seed=1, fp8=True, config={
        **COMMON, **INDEXER, **FP8,
        "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32"}),
    "v3-tiny": dict(seed=2, fp8=True, config={
        **COMMON, **FP8,
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3"}),
    # A benchmark-sized V3.2 model (issue 7): ~440 M parameters, ~0.45 GB in FP8; not used by the tests.
    "v32-bench": dict(seed=4, fp8=True, config={
        **COMMON, **FP8, "index_n_heads": 16, "index_head_dim": 64, "index_topk": 256,
        "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32",
        "vocab_size": 8192, "hidden_size": 1024, "intermediate_size": 2816, "moe_intermediate_size": 512,
        "num_hidden_layers": 8, "first_k_dense_replace": 1, "num_attention_heads": 16, "num_key_value_heads": 16,
        "n_routed_experts": 48, "n_shared_experts": 1, "num_experts_per_tok": 6, "n_group": 8, "topk_group": 4,
        "q_lora_rank": 384, "kv_lora_rank": 256, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64}),
    # v32-bench with an MTP module (issue 18's bench_speculative); random weights: its drafts are not accepted.
    "v32-bench-mtp": dict(seed=4, fp8=True, config={
        **COMMON, **FP8, "index_n_heads": 16, "index_head_dim": 64, "index_topk": 256, "num_nextn_predict_layers": 1,
        "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32",
        "vocab_size": 8192, "hidden_size": 1024, "intermediate_size": 2816, "moe_intermediate_size": 512,
        "num_hidden_layers": 8, "first_k_dense_replace": 1, "num_attention_heads": 16, "num_key_value_heads": 16,
        "n_routed_experts": 48, "n_shared_experts": 1, "num_experts_per_tok": 6, "n_group": 8, "topk_group": 4,
        "q_lora_rank": 384, "kv_lora_rank": 256, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64}),
    # The same model with BF16 weights (issue 7's BF16-vs-BF16 comparison): ~1.2 GB; not used by the tests.
    "v32-bench-bf16": dict(seed=4, fp8=False, config={
        **COMMON, "index_n_heads": 16, "index_head_dim": 64, "index_topk": 256,
        "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32",
        "vocab_size": 8192, "hidden_size": 1024, "intermediate_size": 2816, "moe_intermediate_size": 512,
        "num_hidden_layers": 8, "first_k_dense_replace": 1, "num_attention_heads": 16, "num_key_value_heads": 16,
        "n_routed_experts": 48, "n_shared_experts": 1, "num_experts_per_tok": 6, "n_group": 8, "topk_group": 4,
        "q_lora_rank": 384, "kv_lora_rank": 256, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64}),
    # v32-tiny with V3.2's vocabulary size, for what costs per vocabulary id (sampling, constraints: bench_engine,
    # bench_constraint); give it a tokenizer of that size (bench/make_bench_vocab.py). ~70 M parameters, not used by
    # the tests.
    "v32-tiny-vocab": dict(seed=1, fp8=True, config={
        **COMMON, **INDEXER, **FP8, "vocab_size": 129280,
        "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32"}),
    # v32-tiny plus one MTP module (spec §7) stored as layer num_hidden_layers, written after every v32-tiny tensor
    # from the same seed: its main-model tensors are bitwise v32-tiny's (the v32-tiny goldens hold for it).
    "v32-tiny-mtp": dict(seed=1, fp8=True, config={
        **COMMON, **INDEXER, **FP8, "num_nextn_predict_layers": 1,
        "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32"}),
    # The smallest V3.2 model with every part (two layers: one dense, one MoE; indexer; FP8): what the fuzz targets
    # that generate run against (fuzz_capi), where v32-tiny's forward would take most of each execution.
    "v32-micro": dict(seed=5, fp8=True, config={
        **COMMON, **FP8, "index_n_heads": 4, "index_head_dim": 32, "index_topk": 8,
        "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32",
        "hidden_size": 128, "intermediate_size": 128, "moe_intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 2, "q_lora_rank": 64, "kv_lora_rank": 64,
        "qk_nope_head_dim": 32, "qk_rope_head_dim": 32, "v_head_dim": 32}),
    "v32-tiny-bf16": dict(seed=3, fp8=False, config={
        **COMMON, **INDEXER,
        "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32"}),
}

MASK64 = (1 << 64) - 1


@contextlib.contextmanager
def replaced(path, mode="w"):
    """Writes `path` as a new file renamed over the old one: a program that has the old file mapped (a test's
    server or model, while ctest regenerates the checkpoints) keeps reading it instead of faulting (SIGBUS) on a
    file truncated under it."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):  # the write failed: leave no partial file behind
            os.remove(tmp)


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def uniform(seed, name, shape, lo, hi):
    """float32 array, uniform in [lo, hi), from splitmix64 of (seed, name, index): exact and portable."""
    n = int(np.prod(shape)) if shape else 1
    base = np.uint64((fnv1a64(name) ^ (seed * 0x9E3779B97F4A7C15)) & MASK64)
    with np.errstate(over="ignore"):
        z = base + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.float64) * (2.0 ** -24)  # 24 random bits: exact in float64
    return (lo + (hi - lo) * u).astype(np.float32).reshape(shape)


def to_bf16_bits(x):
    """float32 -> bfloat16 bit patterns, round to nearest even (no NaNs occur here)."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    b = b + np.uint64(0x7FFF) + ((b >> np.uint64(16)) & np.uint64(1))
    return (b >> np.uint64(16)).astype(np.uint16)


def _e4m3_table():
    vals = []
    for code in range(127):  # 0x00..0x7e: the non-negative finite values, increasing
        e, m = code >> 3, code & 7
        vals.append(m * 2.0 ** -9 if e == 0 else (1 + m / 8.0) * 2.0 ** (e - 7))
    return np.array(vals, dtype=np.float64)


E4M3 = _e4m3_table()


def to_e4m3_bits(x):
    """float32 -> float8_e4m3fn codes: round to nearest, ties to the even code, saturate at +-448."""
    x = np.asarray(x, dtype=np.float64)
    a = np.minimum(np.abs(x), 448.0)
    hi = np.clip(np.searchsorted(E4M3, a, side="left"), 0, 126)
    lo = np.clip(hi - 1, 0, 126)
    d_hi, d_lo = E4M3[hi] - a, a - E4M3[lo]
    pick_lo = (d_lo < d_hi) | ((d_lo == d_hi) & (lo % 2 == 0))
    code = np.where(pick_lo, lo, hi).astype(np.uint8)
    return np.where(np.signbit(x), code | np.uint8(0x80), code).astype(np.uint8)


def e4m3_value(codes):
    mag = E4M3[codes & 0x7F]
    return np.where(codes & 0x80, -mag, mag)


def quantize_fp8_blocks(w, block=128):
    """Per 128x128 block: scale = amax/448, codes = e4m3(w/scale). Returns (codes uint8, scale_inv float32)."""
    n, k = w.shape
    sn, sk = -(-n // block), -(-k // block)
    scale = np.zeros((sn, sk), dtype=np.float32)
    codes = np.zeros((n, k), dtype=np.uint8)
    for i in range(sn):
        for j in range(sk):
            blk = w[i * block:(i + 1) * block, j * block:(j + 1) * block]
            amax = max(float(np.max(np.abs(blk))), 1e-12)
            s = np.float32(amax) / np.float32(448.0)
            scale[i, j] = s
            codes[i * block:(i + 1) * block, j * block:(j + 1) * block] = to_e4m3_bits(blk / s)
    return codes, scale


class Writer:
    def __init__(self, seed, fp8):
        self.seed, self.fp8 = seed, fp8
        self.tensors = []  # (name, dtype, shape, bytes)

    def add(self, name, dtype, array):
        self.tensors.append((name, dtype, list(array.shape), np.ascontiguousarray(array).tobytes()))

    def bf16(self, name, shape, lo, hi):
        self.add(name, "BF16", to_bf16_bits(uniform(self.seed, name, shape, lo, hi)))

    def projection(self, name, out_f, in_f, gain=1.0):
        a = gain * math.sqrt(3.0 / in_f)  # sqrt is correctly rounded everywhere (IEEE 754); pow() need not be
        w = uniform(self.seed, name, (out_f, in_f), -a, a)
        if self.fp8:
            codes, scale = quantize_fp8_blocks(w)
            self.add(name, "F8_E4M3", codes)
            self.add(name + "_scale_inv", "F32", scale)
        else:
            self.add(name, "BF16", to_bf16_bits(w))

    def norm(self, name, n):
        self.bf16(name, (n,), 0.8, 1.2)

    def mlp(self, prefix, hidden, inner):
        self.projection(prefix + "gate_proj.weight", inner, hidden)
        self.projection(prefix + "up_proj.weight", inner, hidden)
        self.projection(prefix + "down_proj.weight", hidden, inner)

    def save(self, out_dir, n_shards=2):
        total = sum(len(b) for _, _, _, b in self.tensors)
        shards, cur, size = [], [], 0
        for t in self.tensors:
            if cur and size >= total / n_shards and len(shards) < n_shards - 1:
                shards.append(cur)
                cur, size = [], 0
            cur.append(t)
            size += len(t[3])
        shards.append(cur)
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            header, offset = {"__metadata__": {"format": "pt"}}, 0
            for name, dtype, shape, data in shard:
                header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
                offset += len(data)
                weight_map[name] = fname
            hbytes = json.dumps(header, separators=(",", ":")).encode()
            hbytes += b" " * ((8 - len(hbytes) % 8) % 8)  # keep tensor data 8-byte aligned
            with replaced(os.path.join(out_dir, fname), "wb") as f:
                f.write(struct.pack("<Q", len(hbytes)))
                f.write(hbytes)
                for _, _, _, data in shard:
                    f.write(data)
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        with replaced(os.path.join(out_dir, "model.safetensors.index.json")) as f:
            json.dump(index, f, indent=2)
            f.write("\n")
        return [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]


def write_layer(w, c, layer):
    """One decoder layer's tensors (attention, indexer where configured, dense MLP or MoE) under model.layers.{layer}."""
    D, H = c["hidden_size"], c["num_attention_heads"]
    dn, dr, dv = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    qr, kvr = c["q_lora_rank"], c["kv_lora_rank"]
    pre = f"model.layers.{layer}."
    w.norm(pre + "input_layernorm.weight", D)
    w.norm(pre + "post_attention_layernorm.weight", D)
    a = pre + "self_attn."
    w.projection(a + "q_a_proj.weight", qr, D)
    w.norm(a + "q_a_layernorm.weight", qr)
    w.projection(a + "q_b_proj.weight", H * (dn + dr), qr)
    w.projection(a + "kv_a_proj_with_mqa.weight", kvr + dr, D)
    w.norm(a + "kv_a_layernorm.weight", kvr)
    w.projection(a + "kv_b_proj.weight", H * (dn + dv), kvr)
    w.projection(a + "o_proj.weight", D, H * dv)
    if "index_n_heads" in c:
        i = a + "indexer."
        hi, di = c["index_n_heads"], c["index_head_dim"]
        w.projection(i + "wq_b.weight", hi * di, qr)
        w.projection(i + "wk.weight", di, D)
        w.bf16(i + "k_norm.weight", (di,), 0.8, 1.2)
        w.bf16(i + "k_norm.bias", (di,), -0.1, 0.1)
        w.bf16(i + "weights_proj.weight", (hi, D), -math.sqrt(3.0 / D), math.sqrt(3.0 / D))
    m = pre + "mlp."
    if layer >= c["first_k_dense_replace"]:
        E = c["n_routed_experts"]
        g = 2.0 * math.sqrt(3.0 / D)
        w.bf16(m + "gate.weight", (E, D), -g, g)
        w.add(m + "gate.e_score_correction_bias", "F32", uniform(w.seed, m + "bias", (E,), -0.05, 0.05))
        for e in range(E):
            w.mlp(f"{m}experts.{e}.", D, c["moe_intermediate_size"])
        w.mlp(m + "shared_experts.", D, c["moe_intermediate_size"] * c["n_shared_experts"])
    else:
        w.mlp(m, D, c["intermediate_size"])


def build(preset):
    p = PRESETS[preset]
    c = p["config"]
    w = Writer(p["seed"], p["fp8"])
    D, V = c["hidden_size"], c["vocab_size"]
    w.bf16("model.embed_tokens.weight", (V, D), -1.0, 1.0)
    for layer in range(c["num_hidden_layers"]):
        write_layer(w, c, layer)
    w.norm("model.norm.weight", D)
    lm = 3.0 * math.sqrt(3.0 / D)  # logits with a std of about 3: clear greedy decisions
    w.bf16("lm_head.weight", (V, D), -lm, lm)
    if c.get("num_nextn_predict_layers", 0):
        # The MTP module (spec §7) as DeepSeek stores it: layer num_hidden_layers with enorm, hnorm, eh_proj (BF16,
        # as training/export.py writes it), a full decoder layer, shared_head.norm, and copies of the embedding and
        # lm_head (shared with the main model; readers use the main model's).
        L = c["num_hidden_layers"]
        pre = f"model.layers.{L}."
        w.norm(pre + "enorm.weight", D)
        w.norm(pre + "hnorm.weight", D)
        a = math.sqrt(3.0 / (2 * D))
        w.bf16(pre + "eh_proj.weight", (D, 2 * D), -a, a)
        write_layer(w, c, L)
        w.norm(pre + "shared_head.norm.weight", D)
        # The copies hold the main tensors' values (generated from the main names).
        w.add(pre + "embed_tokens.weight", "BF16", to_bf16_bits(uniform(w.seed, "model.embed_tokens.weight", (V, D), -1.0, 1.0)))
        w.add(pre + "shared_head.head.weight", "BF16", to_bf16_bits(uniform(w.seed, "lm_head.weight", (V, D), -lm, lm)))
    return w


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True, choices=sorted(PRESETS))
    ap.add_argument("--out", help="output directory (optional with --check: a temporary directory is used)")
    ap.add_argument("--tokenizer", default=os.path.join(REPO, "tests", "fixtures", "tokenizer"),
                    help="directory with tokenizer.json / tokenizer_config.json to copy (skipped if absent)")
    ap.add_argument("--check", metavar="META", help="golden meta.json whose checkpoint_sha256 the output must match")
    args = ap.parse_args()
    if not args.out and not args.check:
        ap.error("--out is required (it may be left out only with --check)")
    if args.out:
        return generate(args)
    with tempfile.TemporaryDirectory(prefix=f"dsinfer-{args.preset}-") as tmp:
        args.out = tmp
        return generate(args)


def generate(args):
    os.makedirs(args.out, exist_ok=True)
    cfg = PRESETS[args.preset]["config"]
    with replaced(os.path.join(args.out, "config.json")) as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    with replaced(os.path.join(args.out, "generation_config.json")) as f:
        json.dump({"bos_token_id": 0, "eos_token_id": 1, "do_sample": True, "temperature": 1.0, "top_p": 0.95}, f,
                  indent=2)
        f.write("\n")
    writer = build(args.preset)
    shards = writer.save(args.out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        src = os.path.join(args.tokenizer, name)
        if os.path.exists(src):
            with open(src, "rb") as f_in, replaced(os.path.join(args.out, name), "wb") as f_out:
                shutil.copyfileobj(f_in, f_out)
    files = ["config.json", "generation_config.json", "model.safetensors.index.json"] + shards
    digests = {f: sha256(os.path.join(args.out, f)) for f in files}
    if args.check:
        with open(args.check) as f:
            want = json.load(f).get("checkpoint_sha256") or {}
        if not want:
            print(f"{args.check} has no checkpoint_sha256 map: nothing to check against", file=sys.stderr)
            return 1
        bad = [f for f in sorted(set(want) | set(digests)) if digests.get(f) != want.get(f)]
        if bad:
            for f in bad:
                print(f"{args.preset}: {f}: sha256 {digests.get(f)} != {want.get(f)} recorded in {args.check}",
                      file=sys.stderr)
            print(f"{args.preset}: the regenerated checkpoint differs from the one the golden files in "
                  f"{os.path.dirname(args.check)} were made from; re-make the goldens (tests/reference/README.md) "
                  f"or restore the generator", file=sys.stderr)
            return 1
        print(f"{args.preset}: {len(want)} files match {args.check}")
    else:
        params = sum(int(np.prod(shape)) for name, _, shape, _ in writer.tensors if not name.endswith("_scale_inv"))
        print(json.dumps({"preset": args.preset, "out": args.out, "parameters": params,
                          "tensor_bytes": sum(len(b) for _, _, _, b in writer.tensors),
                          "checkpoint_sha256": digests}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
