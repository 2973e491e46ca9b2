"""A tool-calling loop in Python: python examples/python_tool_loop.py MODEL_DIR
(The repo's small model has random weights and rarely calls a tool; the loop is the point.)"""
import json
import sys

import dsinfer


def get_weather(city):
    return {"city": city, "weather": "sunny"}


tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
model = dsinfer.Model.load(sys.argv[1])
tok = dsinfer.Tokenizer.load(sys.argv[1])
session = dsinfer.Session(model, tok)
messages = [{"role": "user", "content": "What is the weather in Hangzhou?"}]
for _ in range(4):
    reply = session.chat(messages, tools=tools, max_tokens=64)
    messages.append(reply)
    if not reply["tool_calls"]:
        break
    for call in reply["tool_calls"]:
        args = json.loads(call["function"]["arguments"])
        messages.append({"role": "tool", "content": json.dumps(get_weather(**args))})
print(f"{len(messages)} messages; final answer: {messages[-1]['content']!r}")
