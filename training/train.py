#!/usr/bin/env python3
"""Trains the shipped small DeepSeek-V3.2 model (PyTorch, CPU).

    python training/train.py --data DIR --tokenizer MODEL_DIR --out RUN_DIR [--threads 2]
    python -m torch.distributed.run --standalone --nproc_per_node 2 training/train.py ... --threads 1  (data parallel)

The recipe (config.TRAIN; ../shared/spec/dsv32-model.md §12), in four stages:
  0. copy task: sequences of random BPE tokens repeated once, loss on the repeat (induction_batch), until the model
     copies from its context (training/LOG.md: without it, the model never learned to copy a value it had not
     memorised); one step in `induction_every` of stage A repeats it. The head is trained tied to the embedding
     (model.tie_head) and saved as its own tensor, as the real checkpoint has it;
  A. dense: the main model and its MTP module learn with dense causal attention (the indexer idle); the loss is
     the next-token cross-entropy on what the assistant writes, plus the MTP module's cross-entropy on the token
     after next (weight 0.3, then 0.1), plus DeepSeek-V3's tiny sequence-wise balance loss;
  B. indexer warm-up: everything but the indexers is frozen; each indexer learns by KL divergence to its layer's
     attention distribution (summed over heads, L1-normalised) over all causal keys;
  C. sparse: each query attends only to the index_topk keys its indexer selects; everything learns; the indexers
     keep the KL loss over the selected keys with their input detached from the model. From
     `fp8_from_sparse_step` on, the forward runs DeepSeek's FP8 inference numerics (model.py), so the model
     learns the weights and activations dsinfer will run.
After every step of A and C each routed expert's selection bias moves by gamma towards balance (auxiliary-loss-free
balancing). Logs go to RUN_DIR/train_log.jsonl (loss curves, expert load, held-out loss and token accuracy); the
weights to RUN_DIR/model.pt.
"""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from config import MODEL_CONFIG, TRAIN  # noqa: E402
from model import DeepseekV32  # noqa: E402
from circuit import init_copy_circuit  # noqa: E402


def copy_targets(ids, mask, common):
    """Which assistant tokens a model gets right mainly by copying from its context: the token occurs earlier in
    the conversation and is not one of the corpus's most frequent ids (format and function words). Tool arguments
    taken from the request and answers stating a tool's result are made of these. The held-out accuracy on them
    (copy_acc) is the training's measure of in-context copying."""
    out = np.zeros(len(ids), dtype=bool)
    seen = set()
    for i in range(len(ids)):
        t = int(ids[i])
        if mask[i] and t in seen and t not in common:
            out[i] = True
        seen.add(t)
    return out


def encode_corpus(path, tok, max_len, limit=None, common=frozenset()):
    """[(ids int64 array, assistant mask bool array, copy-target bool array)] for the conversations of a jsonl
    file (copy targets: `copy_targets` with the given most frequent ids)."""
    out, skipped = [], 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            if limit is not None and n >= limit:
                break
            conv = json.loads(line)
            enc = tok.encode(conv["text"], add_special_tokens=False)
            if len(enc.ids) > max_len:
                skipped += 1
                continue
            starts = np.array([o[0] for o in enc.offsets])
            ends = np.array([o[1] for o in enc.offsets])
            mask = np.zeros(len(enc.ids), dtype=bool)
            for a, b in conv["spans"]:
                inside = (starts >= a) & (ends <= b)
                # The span must be whole tokens: its first token starts at a, its last ends at b.
                assert inside.any() and starts[inside].min() == a and ends[inside].max() == b, (a, b)
                mask |= inside
            ids = np.array(enc.ids, dtype=np.int64)
            out.append((ids, mask, copy_targets(ids, mask, common)))
    return out, skipped


class Batches:
    """Length-bucketed batches of about `tokens` padded tokens, in a seeded random order, epoch after epoch."""

    def __init__(self, corpus, tokens, seed):
        self.corpus, self.tokens, self.rng = corpus, tokens, random.Random(seed)
        self.queue, self.epoch = [], 0

    def _epoch(self):
        order = sorted(range(len(self.corpus)), key=lambda i: (len(self.corpus[i][0]), self.rng.random()))
        batches, cur = [], []
        for i in order:
            longest = len(self.corpus[i][0])
            if cur and (len(cur) + 1) * longest > self.tokens:
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        self.rng.shuffle(batches)
        self.epoch += 1
        return batches

    def next(self):
        if not self.queue:
            self.queue = self._epoch()
        return collate([self.corpus[i] for i in self.queue.pop()])


def collate(items):
    """ids (pad id 2), assistant mask, valid (not padding), copy targets: [B, T] each."""
    T = max(len(item[0]) for item in items)
    ids = torch.full((len(items), T), 2, dtype=torch.long)  # pad id
    mask = torch.zeros(len(items), T, dtype=torch.bool)
    valid = torch.zeros(len(items), T, dtype=torch.bool)
    copy = torch.zeros(len(items), T, dtype=torch.bool)
    for b, (x, m, c) in enumerate(items):
        ids[b, :len(x)] = torch.from_numpy(x)
        mask[b, :len(x)] = torch.from_numpy(m)
        copy[b, :len(x)] = torch.from_numpy(c)
        valid[b, :len(x)] = True
    return ids, mask, valid, copy


def induction_batch(rng, n_tokens, seq_len, first_id, last_id, random_offsets=0):
    """A batch of the copy task that makes in-context copying appear (induction heads): each sequence is BOS, a
    span of uniformly random BPE tokens, then the same span again; the loss is on the repeat, which only copying
    can predict. (ids, mask, valid, copy) like collate's, the repeat marked as copy targets."""
    B = max(1, n_tokens // seq_len)
    if random_offsets:
        return induction_batch_random(rng, B, seq_len, first_id, last_id, spans=int(random_offsets))
    half = (seq_len - 1) // 2
    span = torch.from_numpy(rng.integers(first_id, last_id, size=(B, half), dtype=np.int64))
    ids = torch.cat([torch.zeros(B, 1, dtype=torch.long), span, span], 1)  # BOS is id 0
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, 1 + half:] = True
    valid = torch.ones_like(mask)
    return ids, mask, valid, mask.clone()


def lag2_batch(rng, n_tokens, seq_len, first_id, last_id):
    """Triples (a, b, a) of random tokens: the third of each is the token two back, so one head that attends to the
    previous position and copies its token predicts it — the previous-token half of an induction circuit, which
    the models trained so far never formed below layer 2 (training/LOG.md). The loss is on every third token."""
    B = max(1, n_tokens // seq_len)
    n = (seq_len - 1) // 3
    ab = torch.from_numpy(rng.integers(first_id, last_id, size=(B, n, 2), dtype=np.int64))
    trip = torch.cat([ab, ab[..., :1]], -1).reshape(B, 3 * n)
    ids = torch.cat([torch.zeros(B, 1, dtype=torch.long), trip], 1)  # BOS is id 0
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, 3::3] = True
    return ids, mask, torch.ones_like(mask), mask.clone()


def induction_batch_random(rng, B, seq_len, first_id, last_id, spans=4):
    """The copy task with nothing positional to hold on to: each sequence is random BPE tokens cut into `spans`
    segments; in each, a piece of 8 to half a segment's tokens is repeated at a random later place. The loss is on
    each repeat after its first token. With one fixed-length repeat (induction_batch) the model can copy from a
    fixed offset back, which does not carry over to conversations (training/LOG.md)."""
    ids = torch.from_numpy(rng.integers(first_id, last_id, size=(B, seq_len), dtype=np.int64))
    ids[:, 0] = 0  # BOS
    mask = torch.zeros_like(ids, dtype=torch.bool)
    seg = (seq_len - 1) // spans  # one repeat inside each segment: its source, a random gap, the repeat
    for b in range(B):
        for k in range(spans):
            start = 1 + k * seg
            n = int(rng.integers(8, seg // 2 + 1))
            src = start + int(rng.integers(0, seg - 2 * n + 1))
            dst = int(rng.integers(src + n, start + seg - n + 1))
            ids[b, dst:dst + n] = ids[b, src:src + n]
            mask[b, dst + 1:dst + n] = True
    valid = torch.ones_like(mask)
    return ids, mask, valid, mask.clone()


def most_frequent_ids(path, tok, n, limit=2000):
    """The n most frequent token ids of the first `limit` conversations: format and function words."""
    counts = {}
    with open(path, encoding="utf-8") as f:
        for k, line in enumerate(f):
            if k >= limit:
                break
            for i in tok.encode(json.loads(line)["text"], add_special_tokens=False).ids:
                counts[i] = counts.get(i, 0) + 1
    return frozenset(sorted(counts, key=counts.get, reverse=True)[:n])


def set_valid(model, valid):
    mtp_moe = model.mtp.block.mlp if model.mtp is not None else None
    for moe in model.moe_layers():
        moe.valid = (valid[:, 1:] if moe is mtp_moe else valid).reshape(-1)


def head_ce(model, h, target, chunk=1024):
    """Per-token cross-entropy and argmax hit of the head on hidden states h [N, D], `chunk` rows at a time. The
    [N, vocab] logits are the largest tensors of a step; in pieces of 16 MB they stay below glibc's mmap threshold
    (make_model.sh sets it), so their memory is reused instead of freshly mapped and faulted in each time, which
    on this VM cost ~250 ms per [4096, 4096] tensor (profile of 2026-12-03)."""
    ces, hits = [], []
    for a in range(0, h.shape[0], chunk):
        logits = model.head(h[a:a + chunk]).float()
        t = target[a:a + chunk]
        ces.append(F.cross_entropy(logits, t, reduction="none"))
        hits.append(logits.detach().argmax(-1) == t)
    if not ces:
        return h.new_zeros(0, dtype=torch.float32), torch.zeros(0, dtype=torch.bool)
    return torch.cat(ces), torch.cat(hits)


def losses(model, ids, mask, valid, copy, mode, want_lm=True, copy_weight=1.0, context_weight=0.0):
    """Cross-entropy of the main head (next token) and the MTP head (token after next) on the loss tokens (copy
    targets weighted by copy_weight; the rest of the conversation — system prompt, tool list, user turns, tool
    results — by context_weight, 0 for assistant-only training), the indexers' mean KL over real queries, the
    balance loss, and token accuracies on what the assistant writes (copy_acc: on the copy targets alone)."""
    set_valid(model, valid)
    hn, hm, kls = model(ids, mode)
    out = {}
    if want_lm:
        tgt = (mask | valid)[:, 1:] if context_weight > 0 else mask[:, 1:]
        tgt = tgt & valid[:, 1:]
        target = ids[:, 1:][tgt]
        is_asst = mask[:, 1:][tgt]
        is_copy = copy[:, 1:][tgt]
        ce, hit = head_ce(model, hn[:, :-1][tgt], target)
        weight = torch.where(is_copy, copy_weight, torch.where(is_asst, 1.0, context_weight))
        out["ce"] = (ce * weight).sum() / weight[is_asst].sum().clamp_min(1.0)
        out["acc"] = hit[is_asst].float().mean()
        if is_copy.any():
            out["copy_acc"] = hit[is_copy].float().mean()
        if hm is not None:
            tgt2 = mask[:, 2:]
            ce2, hit2 = head_ce(model, hm[:, :-1][tgt2], ids[:, 2:][tgt2])
            out["mtp_ce"] = ce2.mean()
            out["mtp_acc"] = hit2.float().mean()
        out["aux"] = sum(m.aux for m in model.moe_layers())
    kl_terms = []
    for i, kl in enumerate(kls):
        if kl.dim():
            v = valid if kl.shape[1] == valid.shape[1] else valid[:, 1:]
            kl_terms.append((kl * v).sum() / v.sum())
    if kl_terms:
        out["kl"] = sum(kl_terms) / len(kl_terms)
    return out


def all_reduce_mean(model, world):
    """Data parallelism over processes (torchrun, gloo): every rank ends the step with the mean gradient of all
    ranks' batches, so the ranks' weights stay identical. A parameter a rank's batch did not reach (an expert no
    token chose) counts as a zero gradient there."""
    params = [p for p in model.parameters() if p.requires_grad]
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    torch.distributed.all_reduce(flat)
    flat /= world
    at = 0
    for p in params:
        p.grad = flat[at:at + p.numel()].view_as(p)
        at += p.numel()


def bf16_autocast_pays():
    """Whether PyTorch's bf16 matrix products run in oneDNN's vectorised kernels on this CPU (AVX-512 or AMX). Where
    they do not (an AVX2-only CPU), autocast falls back to generic kernels: a 4,096-token step of this model took
    40-90 s in bf16 against 4.2 s in fp32 on a 2-vCPU AMD EPYC without AVX-512 (training/LOG.md, 2026-12-05)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an internal op of PyTorch's: a version without it trains in fp32
        return False


def lr_at(step, total, peak, warmup, min_ratio):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def indexer_params(model):
    return [p for n, p in model.named_parameters() if ".indexer." in n]


def main_params(model):
    return [p for n, p in model.named_parameters() if ".indexer." not in n]


def make_optimizer(params, lr, wd):
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


@torch.no_grad()
def heldout_eval(model, batches, mode):
    model.eval()
    tot = {}
    for ids, mask, valid, copy in batches:
        out = losses(model, ids, mask, valid, copy, mode)
        for k, v in out.items():
            tot[k] = tot.get(k, 0.0) + float(v) / len(batches)
    model.train()
    return tot


def save(model, path, step, stage):
    model.sync_tied_head()
    tmp = path + ".tmp"
    torch.save({"config": model.cfg, "state_dict": model.state_dict(), "step": step, "stage": stage}, tmp)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True, help="folder with the trained tokenizer.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every stage's step count (smoke runs)")
    ap.add_argument("--tokens-per-batch", type=int, default=None, help="override (smoke runs)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a TRAIN or MODEL_CONFIG value (experiments), e.g. --set lr=1e-3")
    ap.add_argument("--init", default=None, metavar="MODEL_PT",
                    help="start from this checkpoint's weights (experiments), with --skip-stage for stages it did")
    ap.add_argument("--skip-stage", action="append", default=[], choices=["induction", "dense", "warmup", "sparse"])
    ap.add_argument("--save-every", type=int, default=500, help="also save model.pt every this many steps")
    ap.add_argument("--stop-after", type=float, default=None, metavar="SECONDS",
                    help="end the dense stage after this wall time (experiments; the run is then not a recipe)")
    args = ap.parse_args()
    cfg, tr = dict(MODEL_CONFIG), dict(TRAIN)
    if args.tokens_per_batch:
        tr["tokens_per_batch"] = args.tokens_per_batch
    for kv in args.set:
        k, v = kv.split("=", 1)
        target = tr if k in tr else cfg if k in cfg else None
        if target is None:
            ap.error(f"--set {k}: not a key of TRAIN or MODEL_CONFIG")
        target[k] = type(target[k])(json.loads(v)) if not isinstance(target[k], bool) else v == "true"
    for k in ("steps_dense", "steps_warmup", "steps_sparse", "fp8_from_sparse_step", "warmup_steps"):
        tr[k] = max(1, int(round(tr[k] * args.scale)))
    torch.set_num_threads(args.threads)
    bf16 = tr["bf16"] and bf16_autocast_pays()
    torch.manual_seed(tr["seed"])  # the same initial weights on every rank
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world > 1:
        torch.distributed.init_process_group("gloo")
    lead = rank == 0
    os.makedirs(args.out, exist_ok=True)
    t_start = time.time()

    tok = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    assert tok.get_vocab_size(with_added_tokens=True) <= cfg["vocab_size"]
    common = most_frequent_ids(os.path.join(args.data, "train.jsonl"), tok, tr["common_ids"])
    corpus, skipped = encode_corpus(os.path.join(args.data, "train.jsonl"), tok, tr["max_len"], common=common)
    held, _ = encode_corpus(os.path.join(args.data, "heldout.jsonl"), tok, tr["max_len"],
                            limit=tr["heldout_conversations"], common=common)
    held_batches = [collate(held[i:i + 8]) for i in range(0, len(held), 8)]
    n_tokens = sum(len(x) for x, _, _ in corpus)
    if lead:
        print(f"corpus: {len(corpus)} conversations ({skipped} over {tr['max_len']} tokens left out), "
              f"{n_tokens} tokens, {sum(int(m.sum()) for _, m, _ in corpus)} assistant tokens, "
              f"{sum(int(c.sum()) for _, _, c in corpus)} copy targets", flush=True)

    model = DeepseekV32(cfg)
    if tr["tie_head"]:
        model.tie_head()
    if tr["copy_circuit"] and not args.init:
        info = init_copy_circuit(model, tr["seed"])
        if lead:
            print(f"copy circuit constructed (training/circuit.py): rope margin {info['rope_margin']:.3f}", flush=True)
    if args.init:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=False)["state_dict"])
    n_params = sum(p.numel() for p in model.parameters())
    if lead:
        print(f"model: {n_params / 1e6:.2f} M parameters, {world} rank(s) of {args.threads} thread(s), "
              f"{'bf16 autocast' if bf16 else 'fp32'} outside the FP8-aware steps"
              + ("" if bf16 == tr["bf16"] else " (this CPU has no fast bf16 matrix products)"), flush=True)
    batches = Batches(corpus, tr["tokens_per_batch"], tr["seed"] + rank)
    synth_rng = np.random.default_rng(tr["seed"] + 7919 * (rank + 1))
    first_added_id = tok.token_to_id("<think>")  # BPE tokens are 3 .. first_added_id - 1
    opt_main = make_optimizer(main_params(model), tr["lr"], tr["weight_decay"])
    opt_idx = make_optimizer(indexer_params(model), tr["lr_indexer"], 0.0)
    main_total = tr["steps_induction"] + tr["steps_dense"] + tr["steps_sparse"]
    log = open(os.path.join(args.out, "train_log.jsonl"), "w") if lead else None
    step_main = 0
    seen_tokens = 0
    stages = [("induction", tr["steps_induction"]), ("dense", tr["steps_dense"]), ("warmup", tr["steps_warmup"]), ("sparse", tr["steps_sparse"])]
    for stage, n_steps in stages:
        if stage in args.skip_stage:  # done by the --init checkpoint: the schedules go on from where it ended
            step_main += 0 if stage == "warmup" else n_steps
            continue
        model.set_fp8(False)
        for p in main_params(model):
            p.requires_grad_(stage != "warmup")
        for p in indexer_params(model):
            p.requires_grad_(stage not in ("induction", "dense"))
        t_stage = time.time()
        for s in range(n_steps):
            if stage == "sparse" and s == tr["fp8_from_sparse_step"]:
                model.set_fp8(True)
            stop = args.stop_after is not None and stage == "dense" and time.time() - t_start > args.stop_after
            if world > 1:  # the ranks stop together, on rank 0's clock
                flag = torch.tensor([float(stop)])
                torch.distributed.broadcast(flag, 0)
                stop = bool(flag.item())
            if stop:
                if not lead:
                    break
                held_out = heldout_eval(model, held_batches, stage)
                print(f"--stop-after: dense stage ended at step {s}, {seen_tokens} tokens | heldout "
                      + json.dumps({k: round(v, 4) for k, v in held_out.items()}), flush=True)
                break
            synthetic = stage == "induction" or (stage == "dense" and tr["induction_every"] > 0
                                                        and s % tr["induction_every"] == 0)
            if synthetic:
                vocab = tr["induction_vocab"]
                last_id = first_added_id if vocab <= 0 else min(first_added_id, 3 + vocab)
                if stage == "induction" and s < tr["induction_lag2_steps"]:
                    ids, mask, valid, copy = lag2_batch(synth_rng, tr["tokens_per_batch"], tr["induction_len"], 3,
                                                        last_id)
                else:
                    ids, mask, valid, copy = induction_batch(synth_rng, tr["tokens_per_batch"], tr["induction_len"],
                                                             3, last_id, tr["induction_random_offsets"])
            else:
                ids, mask, valid, copy = batches.next()
            seen_tokens += int(valid.sum()) * world  # about: the other ranks' batches are as large on average
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and not model.num.fp8):
                out = losses(model, ids, mask, valid, copy, "dense" if stage == "induction" else stage,
                             want_lm=stage != "warmup", copy_weight=tr["copy_weight"],
                             context_weight=0.0 if synthetic else tr["context_weight"])
            if stage == "warmup":
                loss = out["kl"]
            else:
                late = step_main >= tr["mtp_switch_fraction"] * main_total
                lam = tr["mtp_weight_late"] if late else tr["mtp_weight_early"]
                loss = out["ce"] + lam * out.get("mtp_ce", 0.0) + tr["balance_alpha"] * out["aux"]
                if "kl" in out:
                    loss = loss + out["kl"]
            opt_main.zero_grad(set_to_none=True)
            opt_idx.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                all_reduce_mean(model, world)
            if stage != "warmup":
                torch.nn.utils.clip_grad_norm_(main_params(model), tr["grad_clip"])
                lr = lr_at(step_main, main_total, tr["lr"], tr["warmup_steps"], tr["lr_min_ratio"])
                for g in opt_main.param_groups:
                    g["lr"] = lr
                opt_main.step()
                step_main += 1
                with torch.no_grad():  # auxiliary-loss-free balancing
                    for moe in model.moe_layers():
                        if world > 1:  # the load over all ranks' batches, so the biases stay identical
                            torch.distributed.all_reduce(moe.load)
                        moe.e_score_correction_bias += tr["bias_update_speed"] * torch.sign(
                            moe.load.mean() - moe.load)
            if stage not in ("induction", "dense"):
                torch.nn.utils.clip_grad_norm_(indexer_params(model), tr["grad_clip"])
                lr_i = tr["lr_indexer"] if stage == "warmup" else lr_at(s, n_steps, tr["lr_indexer"], 1, 0.1)
                for g in opt_idx.param_groups:
                    g["lr"] = lr_i
                opt_idx.step()
            if lead and (s % 20 == 0 or s == n_steps - 1 or (stage == "induction" and s % 5 == 0)):
                loads = [m.load for m in model.moe_layers()]
                rec = {"stage": stage, "step": s, "step_main": step_main, "fp8": model.num.fp8,
                       "elapsed_s": round(time.time() - t_start, 1), "tokens": seen_tokens,
                       "epoch": batches.epoch, "batch": list(ids.shape),
                       **{k: round(float(v.detach()), 5) for k, v in out.items()},
                       "expert_load_max_over_mean": [round(float(l.max() / l.mean()), 3) for l in loads],
                       "expert_load_min_over_mean": [round(float(l.min() / l.mean()), 3) for l in loads]}
                if (s % tr["heldout_every"] == 0 and s > 0) or s == n_steps - 1:
                    rec["heldout"] = {k: round(v, 5) for k, v in heldout_eval(model, held_batches, stage).items()}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                rate = seen_tokens / max(1e-9, time.time() - t_start)
                print(f"[{stage} {s}/{n_steps}] " + " ".join(
                    f"{k}={float(v.detach()):.4f}" for k, v in out.items()) + f" | {rate:.0f} tok/s, "
                    f"{time.time() - t_start:.0f}s" + (f" | heldout {rec['heldout']}" if "heldout" in rec else ""),
                    flush=True)
            if lead and s % args.save_every == args.save_every - 1:
                save(model, os.path.join(args.out, "model.pt"), s, stage)
        if lead:
            print(f"stage {stage}: {n_steps} steps in {time.time() - t_stage:.0f}s", flush=True)
            save(model, os.path.join(args.out, "model.pt"), n_steps, stage)
    if not lead:
        return
    summary = {"wall_seconds": round(time.time() - t_start, 1), "tokens_seen": seen_tokens,
               "corpus_conversations": len(corpus), "corpus_tokens": n_tokens, "parameters": n_params,
               "threads": args.threads, "ranks": world, "bf16_autocast": bf16, "torch": torch.__version__, "train": tr}
    with open(os.path.join(args.out, "train_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
