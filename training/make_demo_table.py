#!/usr/bin/env python3
"""Writes examples/data/weather.json: one day's weather for every city of the training world (training/world.py),
the table the demo's get_weather tool (examples/demo_tools.hpp) reads. Seeded: the same file every time.

    python3 training/make_demo_table.py
"""
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from world import CITIES, World  # noqa: E402


def main():
    rng = random.Random(20261202)
    table = {"date": "2026-12-02", "cities": {}}
    for city in CITIES:
        w = World.weather_today(rng, city)
        table["cities"][city] = {k: w[k] for k in ("condition", "temperature_c", "humidity")}
    out = os.path.join(os.path.dirname(HERE), "examples", "data", "weather.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(table, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {out}: {len(table['cities'])} cities")


if __name__ == "__main__":
    main()
