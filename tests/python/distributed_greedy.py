"""Started by test_distributed.py under `mpirun -np 2 python distributed_greedy.py CHECKPOINT`: rank 0 generates
greedily through a Session on a distributed model, then on an ordinary load in the same process, and checks that the
tokens are the same and that each rank holds part of the weights; rank 1 serves with dsinfer.run_worker until rank
0's model is gone. Prints "rank 0: distributed Python OK" when every check passed."""
import sys

import dsinfer

PROMPT = [0, 1000, 2000, 77, 3000, 12]
N_TOKENS = 12


def greedy(model, tok):
    session = dsinfer.Session(model, tok, capacity=64)
    session.set_sampler([dsinfer.Greedy()])
    session.prefill(PROMPT)
    for _ in session.generate(max_tokens=N_TOKENS, stop_at_eos=False):
        pass
    return list(session.generated)


def main(path):
    options = dict(n_threads=1, distributed=True, distributed_timeout_s=120)  # two ranks share this machine's cores
    rank, size = dsinfer.distributed_rank()
    assert size == 2, size
    if rank != 0:
        dsinfer.run_worker(path, **options)
        print(f"rank {rank}: served")
        return
    tok = dsinfer.Tokenizer.load(path)
    model = dsinfer.Model.load(path, **options)
    info = model.info
    distributed_tokens = greedy(model, tok)
    del model  # the last reference (greedy's session is gone): rank 1's run_worker returns

    local = dsinfer.Model.load(path, n_threads=1)
    local_tokens = greedy(local, tok)
    whole = local.info["rank_weight_bytes"]
    assert local.info["distributed_ranks"] == 1 and len(whole) == 1, local.info
    assert len(distributed_tokens) == N_TOKENS and distributed_tokens == local_tokens, (distributed_tokens,
                                                                                        local_tokens)
    assert info["distributed_ranks"] == 2 and len(info["rank_weight_bytes"]) == 2, info
    assert info["attention_split_by_heads"] and not local.info["attention_split_by_heads"], (info, local.info)
    # Each rank holds its half of the routed experts and the replicated rest: less than the whole, more than half.
    assert all(whole[0] / 2 < b < whole[0] for b in info["rank_weight_bytes"]), (info["rank_weight_bytes"], whole)
    print(f"rank 0: distributed Python OK {distributed_tokens}")


if __name__ == "__main__":
    main(sys.argv[1])
