#!/usr/bin/env python3
"""Writes the shipped model's card (README.md), licence and sha256 manifest from the measured files.

    python training/model_card.py --run build/train/run --eval build/train/eval [--model models/dsinfer-v32-mini]
    python training/model_card.py --eval-only --eval DIR     (re-measured weights: only the evaluation section)

Every figure in the card comes from a file a script wrote: RUN/train_summary.json (training time, tokens),
RUN/train_log.jsonl (final losses, expert load), EVAL/*.json (tools/eval_chat and training/mtp_accuracy.py) and
the checkpoint itself (config.json, tensor bytes).
"""
import argparse
import hashlib
import json
import os

LICENSE = """MIT License

Copyright (c) 2026 the dsinfer authors

Permission is hereby granted, free of charge, to any person obtaining a copy of this model and associated
documentation files (the "Model"), to deal in the Model without restriction, including without limitation the
rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Model, and to permit
persons to whom the Model is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial portions of
the Model.

THE MODEL IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE
WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR
COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE MODEL OR THE USE OR OTHER DEALINGS IN THE MODEL.
"""

RATE_NAMES = [("tool_calls_seen", "tool-call exact match, seen tools"),
              ("tool_calls_unseen", "tool-call exact match, unseen tools"),
              ("answer", "final answer states the tool result"),
              ("no_tool", "no tool call where no listed tool serves"),
              ("chat", "plain chat (capitals, \"I don't know\", greetings)"),
              ("json", "JSON reply equal to the expected record"),
              ("well_formed", "well-formed output (DSML parses, ends by itself)")]


# The project's targets for this model (issue 15), FP8 greedy; the card says plainly which are not met.
TARGETS = {"tool_calls_seen": 95.0, "tool_calls_unseen": 80.0, "answer": 95.0, "well_formed": 100.0, "no_tool": 90.0}


def rate(e, key):
    r = e["rates"].get(key)
    return f"{r['percent']:.1f} % ({r['ok']}/{r['total']})" if r else "–"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run")
    ap.add_argument("--eval", required=True)
    ap.add_argument("--model", default="models/dsinfer-v32-mini")
    ap.add_argument("--eval-only", action="store_true",
                    help="replace only the card's evaluation section (the training run's files are not needed)")
    args = ap.parse_args()
    if args.eval_only:
        card = open(os.path.join(args.model, "README.md")).read()
        begin, end = card.index("## Evaluation"), card.index("## Use")
        # Without EVAL/mtp.json (training/mtp_accuracy.py needs the training code's PyTorch) the card's MTP sentence
        # stays as it was: the weights did not change.
        old = card[begin:end]
        mtp_text = old[old.index("MTP module, top-1"):old.index("on all tokens.") + len("on all tokens.")]
        card = card[:begin] + evaluation_section(args.eval, mtp_text) + "\n" + card[end:]
        write_files(args.model, card)
        return
    if not args.run:
        ap.error("--run is required (or --eval-only)")
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    summary = json.load(open(os.path.join(args.run, "train_summary.json")))
    log = [json.loads(line) for line in open(os.path.join(args.run, "train_log.jsonl"))]
    last = {}
    for rec in log:
        last[rec["stage"]] = rec
    index = json.load(open(os.path.join(args.model, "model.safetensors.index.json")))
    tr = summary["train"]
    sparse = last["sparse"]
    card = f"""# dsinfer-v32-mini

A {summary['parameters'] / 1e6:.1f} M-parameter model in exactly DeepSeek-V3.2's architecture and checkpoint format,
trained from scratch by the dsinfer project on a 2-core CPU so that dsinfer has a model that does a real job out of
the box: it chats, thinks, reads the tool list it is given, calls tools in DeepSeek-V3.2's DSML format, and answers
from the tools' results. It knows almost nothing else: a small table of capital cities, and that it should say
"I don't know" outside it. It is a demonstration and test model, not a general assistant.

## Architecture (config.json)

DeepSeek-V3.2 with every part active, scaled down: hidden size {cfg['hidden_size']}, {cfg['num_hidden_layers']} layers
(layer 0 dense SwiGLU with inner size {cfg['intermediate_size']}, layers 1-{cfg['num_hidden_layers'] - 1} MoE), MLA with
{cfg['num_attention_heads']} heads, q-LoRA rank {cfg['q_lora_rank']}, latent rank {cfg['kv_lora_rank']}, nope/rope/v head dims
{cfg['qk_nope_head_dim']}/{cfg['qk_rope_head_dim']}/{cfg['v_head_dim']}, YaRN RoPE as in DeepSeek-V3.2's config; the DSA
lightning indexer with {cfg['index_n_heads']} heads of {cfg['index_head_dim']} and index_topk {cfg['index_topk']};
{cfg['n_routed_experts']} routed experts (inner size {cfg['moe_intermediate_size']}) in {cfg['n_group']} groups, {cfg['topk_group']}
groups and {cfg['num_experts_per_tok']} experts per token, sigmoid scores with a selection-only bias, one shared expert,
routed scaling {cfg['routed_scaling_factor']}; one MTP module (`num_nextn_predict_layers: 1`, stored as layer
{cfg['num_hidden_layers']}). Vocabulary {cfg['vocab_size']} (byte-level BPE).

Files as DeepSeek ships them: `config.json` with every key of DeepSeek-V3.2's, {len(set(index['weight_map'].values()))}
safetensors shards with `model.safetensors.index.json`, projections in FP8 e4m3 with F32 `weight_scale_inv` per
128x128 block, embeddings, head, router, indexer weights_proj and norms in BF16, the router bias in F32;
`generation_config.json` with DeepSeek-V3.2's sampling defaults (temperature 1.0, top_p 0.95);
`tokenizer.json` / `tokenizer_config.json` with DeepSeek-V3.2's pre-tokenizer, normalizer and decoder and its special
token strings. Token ids differ from the real tokenizer's: BOS, EOS and pad are 0, 1, 2 as there, but the chat
and tool tokens (`<think>` ... `<｜tool▁sep｜>`, the real ids 128798-128814) follow the {cfg['vocab_size'] - 17}-entry BPE
vocabulary in the real order, since a 129280-row embedding and head would not fit this model's size.

## Data

Synthetic conversations (training/generate_data.py, seeded), rendered by dsinfer's own DeepSeek-V3.2 chat encoder,
thinking on and off: ten tools with JSON-schema parameters (weather over a table of cities, an exact integer
calculator, unit and currency conversion, date arithmetic and weekdays, a product catalogue, local times, string
utilities, an address book); single, parallel and dependent calls; requests no listed tool can serve; plain chat
over a capital-city table with "I don't know" outside it; JSON-only replies under a response format. Tool lists are
random subsets in random order, with tools renamed, re-described and given renamed parameters, and half of the
listed tools made up per conversation (names and parameter names drawn from word lists), so the model must read the
list. {summary['corpus_conversations']} training conversations ({summary['corpus_tokens']} tokens) were used.
The held-out set (600 conversations) has unseen cities, people, products and words, unseen phrasings and, in half
the conversations, unseen tools (new names, parameter names and descriptions).

## Training

training/train.py on {summary['ranks']} data-parallel processes of {summary['threads']} CPU thread(s) (PyTorch
{summary['torch']}), {summary['wall_seconds'] / 60:.0f} minutes of training, {summary['tokens_seen']} tokens seen.
The initial weights contain a working copy circuit (training/circuit.py: previous-token heads in layer 0, induction
heads in layer 1, the index heads that keep them under sparse attention, and the MTP block as an induction head one
token further); everything else starts at random or, for the residual branches, at zero. Trained from random weights
alone this model size never learned to copy from its context within the time (training/LOG.md). Loss on what the
assistant writes and, weighted {tr['context_weight']}, on the rest of the conversation: (A) {tr['steps_dense']} steps with
dense attention, the MTP module's loss weighted {tr['mtp_weight_early']} then {tr['mtp_weight_late']}; (B) {tr['steps_warmup']}
steps where only the indexers learn, by KL divergence to their layer's attention; (C) {tr['steps_sparse']} steps of sparse
attention over the indexer's top {cfg['index_topk']} keys, indexer input detached, the last
{tr['steps_sparse'] - tr['fp8_from_sparse_step']} with DeepSeek's FP8 inference numerics simulated (quantization-aware).
Expert balance by the bias update (gamma {tr['bias_update_speed']}) and a sequence-wise balance loss (alpha
{tr['balance_alpha']}). Final training losses: next-token {sparse.get('ce', float('nan')):.3f}, MTP
{sparse.get('mtp_ce', float('nan')):.3f}, indexer KL {sparse.get('kl', float('nan')):.3f}; expert load per MoE layer (max / mean
over the last batch) {sparse['expert_load_max_over_mean']}. Curves: the run's train_log.jsonl (see training/README.md
to reproduce).

{evaluation_section(args.eval)}
## Use

```sh
bash scripts/demo.sh                                  # builds dsinfer and runs a tool-using conversation
build/tools/dsinfer chat --messages request.json      # this model is the CLI's default
```

## Licence

MIT (LICENSE). Trained only on data generated by the scripts in training/.
"""
    write_files(args.model, card)


def evaluation_section(eval_dir, mtp_text=None):
    ev = {k: json.load(open(os.path.join(eval_dir, f"{k}.json")))
          for k in ("fp8_greedy", "fp8_sampled", "reference_greedy", "fp8_greedy_nogrammar")}
    def grammar(e):  # "tool_grammar" in records written before eval_chat's --grammar also held JSON replies
        return e.get("grammar", e.get("tool_grammar", "on"))
    for k in ("fp8_greedy", "fp8_sampled", "reference_greedy"):
        assert grammar(ev[k]) == "on", k
    assert grammar(ev["fp8_greedy_nogrammar"]) == "off"
    if not os.path.exists(os.path.join(eval_dir, "mtp.json")) and mtp_text:
        mtp_sentence = mtp_text
    else:
        mtp = json.load(open(os.path.join(eval_dir, "mtp.json")))
        mtp_sentence = (f"MTP module, top-1 accuracy on the token\nafter next (training code on the exported weights; "
                        f"dsinfer drafts with it in speculative decoding,\n`--speculative mtp`): "
                        f"{mtp['fp8']['mtp_assistant']['percent']:.1f} %\non assistant tokens in FP8 numerics "
                        f"({mtp['reference']['mtp_assistant']['percent']:.1f} % in reference numerics),\n"
                        f"{mtp['fp8']['mtp_all']['percent']:.1f} % on all tokens.")
    rows = "\n".join(f"| {label} | {rate(ev['fp8_greedy'], k)} | {rate(ev['fp8_sampled'], k)} | "
                     f"{rate(ev['reference_greedy'], k)} | {rate(ev['fp8_greedy_nogrammar'], k)} |"
                     for k, label in RATE_NAMES)
    short = [f"{label} {ev['fp8_greedy']['rates'][k]['percent']:.1f} % (target {t:.0f} %)"
             for k, t in TARGETS.items() for key, label in RATE_NAMES
             if key == k and k in ev["fp8_greedy"]["rates"] and ev["fp8_greedy"]["rates"][k]["percent"] < t]
    limits = ("Below the project's targets (FP8, greedy): " + "; ".join(short) + ". Expect wrong or missing tool "
              "calls, above all with tools whose names and descriptions it has not seen, and replies that misstate a "
              "result now and then.") if short else "Every target of the project (issue 15) is met."
    greedy_wins = all(ev["fp8_greedy"]["rates"][k]["percent"] >= ev["fp8_sampled"]["rates"][k]["percent"]
                      for k in ev["fp8_greedy"]["rates"] if k in ev["fp8_sampled"]["rates"])
    advice = ("Greedy decoding scores at least as well as the\ngeneration_config sampling on every measure: for tool "
              "use, ask for it (`dsinfer chat --greedy`, a greedy sampler chain,\n`temperature: 0` in a request). "
              if greedy_wins else "")
    return f"""## Evaluation (through dsinfer: tools/eval_chat, {ev['fp8_greedy']['conversations']} held-out conversations)

| measure | FP8, greedy | FP8, generation_config sampling (seed 1) | reference precision, greedy | FP8, greedy, no grammar |
|---|---|---|---|---|
{rows}

Each assistant turn is scored with the reference conversation up to it. The first three columns generate as dsinfer
serves the same request: with tools (tool_choice "auto") a call the model begins is held to the listed tools, so it
parses and names a declared tool with valid arguments; with a response_format the reply is held to its JSON schema
(docs/structured-output.md). The last is the model's own output (`eval_chat --grammar off`).
{advice}{mtp_sentence}

{limits}
"""


def write_files(model, card):
    with open(os.path.join(model, "README.md"), "w") as f:
        f.write(card)
    with open(os.path.join(model, "LICENSE"), "w") as f:
        f.write(LICENSE)
    names = sorted(n for n in os.listdir(model) if n != "SHA256SUMS")
    with open(os.path.join(model, "SHA256SUMS"), "w") as f:
        for n in names:
            h = hashlib.sha256(open(os.path.join(model, n), "rb").read()).hexdigest()
            f.write(f"{h}  {n}\n")
    total = sum(os.path.getsize(os.path.join(model, n)) for n in names)
    print(f"wrote the card, licence and manifest; {len(names)} files, {total / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
