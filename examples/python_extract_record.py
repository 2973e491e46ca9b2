"""Example: extract a typed record with thinking on. The strict json_schema response format is rendered into the
prompt as DeepSeek's encoder does and enforced after </think>: the reasoning is free, the answer always validates.

    python examples/python_extract_record.py MODEL_DIR [seed]
"""
import json
import sys

import dsinfer

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 40},
                   "birth_year": {"type": "integer", "minimum": 0, "maximum": 2100},
                   "occupation": {"enum": ["mathematician", "physicist", "writer", "other"]}},
    "required": ["name", "birth_year", "occupation"],
    "additionalProperties": False,
}


def main():
    model_dir = sys.argv[1]
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    model = dsinfer.Model.load(model_dir)
    tok = dsinfer.Tokenizer.load(model_dir)
    session = dsinfer.Session(model, tok, thinking=True)
    session.set_sampler([dsinfer.Temperature(1.0), dsinfer.TopP(0.95), dsinfer.Dist(seed)])
    reply = session.chat(
        [{"role": "user", "content": "Extract the person from: Ada Lovelace, born 1815 in London, mathematician."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": SCHEMA}},
        max_reasoning_tokens=256,  # after 256 reasoning tokens only </think> may follow
        max_tokens=1024)
    record = json.loads(reply["content"])
    print(f"reasoning: {len(reply['reasoning_content'])} chars")
    print("record:", json.dumps(record, ensure_ascii=False))


if __name__ == "__main__":
    main()
