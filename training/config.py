"""The shipped model's architecture (config.json) and the training recipe, in one place.

config.json carries every key of DeepSeek-V3.2's own config.json (the common keys come from
scripts/make_small_checkpoint.py, which writes the repo's test checkpoints), with the sizes scaled down.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import make_small_checkpoint as msc  # noqa: E402

MODEL_NAME = "dsinfer-v32-mini"

MODEL_CONFIG = {
    **msc.COMMON, **msc.FP8,
    "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32",
    "vocab_size": 4096, "hidden_size": 256, "intermediate_size": 768, "moe_intermediate_size": 192,
    "num_hidden_layers": 4, "first_k_dense_replace": 1,
    "num_attention_heads": 8, "num_key_value_heads": 8,
    "n_routed_experts": 16, "n_shared_experts": 1, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2,
    "q_lora_rank": 192, "kv_lora_rank": 128, "qk_nope_head_dim": 32, "qk_rope_head_dim": 32, "v_head_dim": 32,
    "index_n_heads": 4, "index_head_dim": 64, "index_topk": 128,
    "num_nextn_predict_layers": 1,
}

TRAIN = {
    "seed": 1234,
    "max_len": 1024,           # conversations longer than this (in tokens) are left out
    "tokens_per_batch": 4096,  # padded tokens per step and rank (make_model.sh runs two ranks)
    "copy_circuit": True,      # start from a constructed induction circuit (training/circuit.py; LOG.md 2026-12-04)
    "steps_induction": 0,      # stage 0: the copy task alone (train.induction_batch); unneeded with copy_circuit
    "induction_every": 8, "induction_len": 256,  # and one step in 8 of stage A is the copy task too
    "induction_random_offsets": 4,  # N > 0: N repeats per sequence at random places and lengths (LOG.md)
    "induction_lag2_steps": 0,  # the first N steps of stage 0 are train.lag2_batch (experiments, LOG.md)
    "induction_vocab": 0,      # N > 0: the copy task's random tokens are the first N BPE ids only (experiments)
    "steps_dense": 1750,       # stage A: the main model (and MTP) with dense attention
    "steps_warmup": 50,        # stage B: only the indexer learns, by KL to the dense attention (spec §12)
    "steps_sparse": 170,       # stage C: top-k sparse attention, everything learns, indexer input detached
    "fp8_from_sparse_step": 130,  # quantization-aware (FP8 numerics) from this step of stage C on
    "lr": 2e-3, "lr_min_ratio": 0.1, "warmup_steps": 100, "weight_decay": 0.1, "grad_clip": 1.0,
    "lr_indexer": 1e-3,
    "mtp_weight_early": 0.3, "mtp_weight_late": 0.1, "mtp_switch_fraction": 0.7,
    "bias_update_speed": 1e-3,  # gamma of the auxiliary-loss-free balancing
    "balance_alpha": 1e-4,      # the sequence-wise balance loss
    "heldout_every": 200, "heldout_conversations": 64,
    "common_ids": 256,          # copy targets (train.copy_targets) exclude the corpus's most frequent ids
    "copy_weight": 4.0,         # loss weight of copy targets relative to the other loss tokens (LOG.md: P1 vs P2)
    "context_weight": 0.3,      # loss weight of the tokens the assistant does not write (0: assistant-only)
    "tie_head": True,           # the head trained as the embedding x D^-1/2 (model.tie_head), saved as both tensors
    "bf16": True,               # bf16 autocast outside the FP8-aware steps, where oneDNN computes bf16 on this CPU
                                # (train.bf16_autocast_pays: AVX-512/AMX; on an AVX2-only CPU a step is ~10x slower)
}
