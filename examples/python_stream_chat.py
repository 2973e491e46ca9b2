"""Streaming chat from Python: python examples/python_stream_chat.py MODEL_DIR [question]"""
import sys

import dsinfer

model = dsinfer.Model.load(sys.argv[1], progress=lambda f, stage: print(f"\rloading {f:4.0%} {stage:28}", end="",
                                                                          file=sys.stderr))
print(file=sys.stderr)
tok = dsinfer.Tokenizer.load(sys.argv[1])
session = dsinfer.Session(model, tok)
question = sys.argv[2] if len(sys.argv) > 2 else "What is DeepSeek Sparse Attention?"
for event in session.chat_stream([{"role": "user", "content": question}], max_tokens=32):
    if event["kind"] in ("content", "reasoning"):
        print(event["text"], end="", flush=True)
print()
