"""A sampler written in Python, in a chain with built-ins: python examples/python_custom_sampler.py MODEL_DIR"""
import sys

import numpy as np

import dsinfer


class NoDigits(dsinfer.Sampler):
    """Bans tokens whose text contains a digit, then leaves the choice to the next sampler."""

    def __init__(self, tok):
        self.banned = {i for i in range(len(tok)) if any(ch.isdigit() for ch in tok.decode([i]))}

    def apply(self, c):
        for k in range(c.n):
            if int(c.ids[k]) in self.banned:
                c.logits[k] = -np.inf


model = dsinfer.Model.load(sys.argv[1])
tok = dsinfer.Tokenizer.load(sys.argv[1])
session = dsinfer.Session(model, tok)
session.set_sampler([NoDigits(tok), dsinfer.TopK(40), dsinfer.Temperature(0.8), dsinfer.Dist(seed=1)])
reply = session.chat([{"role": "user", "content": "Count to ten."}], max_tokens=24)
assert not any(ch.isdigit() for ch in reply["content"])
print(reply["content"])
