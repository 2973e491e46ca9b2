"""Synthetic conversations in OpenAI message form, with what the evaluation checks at each assistant turn.

A conversation is a system message (a prompt, a random tool list, or a response format), then one to three user
turns. A turn is one scenario: a single tool call, parallel calls, calls that depend on an earlier result, a request
no listed tool can serve, plain chat over the fact table, or a JSON reply. Every assistant message carries a short
reasoning trace; the renderer keeps or drops it exactly as DeepSeek-V3.2's format does (thinking mode keeps it only
after the last user message).

Held-out conversations draw held-out entity values and held-out phrasings (every fourth template of each list
is held out), and with `unseen_tools` the held-out tool variants (tools.py).
"""
import json
import os
import random

import tools as T
from world import (CAPITALS, CURRENCIES, CURRENCY_NAMES, UNIT_WORDS, UNITS, World, add_days,
                   calculate, convert_currency, convert_units, fmt_number, local_time, text_tool, weekday_of)


# Training only: the share of cities and people that are made-up names (World.fictional_name) rather than the tables'
# real ones, and of conversations that are copy drills (sc_echo, sc_recall). A model of this size otherwise learns
# the training names by heart and never learns to copy a value it has not seen from the request or a tool result
# — which is what every held-out tool call and answer needs.
FICTIONAL_SHARE = 0.35
COPY_DRILL_SHARE = 0.12
# Training only: the share of listed tools that are made-up variants (tools.synthetic_variant: names and parameter
# names drawn per conversation), so a tool's name has to be read from the list rather than recalled.
SYNTHETIC_TOOL_SHARE = float(os.environ.get("DSINFER_SYNTHETIC_TOOLS", "0.5"))
HELDOUT_NAMES = frozenset(T.heldout_tokens())
# Experiment knob (training split only): more tool turns per conversation and short tool lists, so a step holds
# more tool calls whose name, parameters and values must be found in the context.
CALL_DENSE = os.environ.get("DSINFER_CALL_DENSE") == "1"
# Experiment knob (training split only): one tool turn over only the tools it needs (sometimes one more).
MICRO = os.environ.get("DSINFER_MICRO") == "1"


def dumps(x):
    return json.dumps(x, ensure_ascii=False)


def num_text(x):
    """A number as a person writes it in a sentence (and as the tools print it)."""
    return str(fmt_number(x))


class Ctx:
    """What one conversation is built from: the generator's random state, the split, and the tool list."""

    def __init__(self, rng, world, heldout, variants):
        self.r, self.w, self.heldout = rng, world, heldout
        self.variants = variants  # kind -> ToolVariant (only the kinds in this conversation's tool list)
        self.next_call = 0

    def t(self, templates):
        """A template from the split: every fourth one is held out."""
        pool = [x for i, x in enumerate(templates) if (i % 4 == 3) == self.heldout]
        return self.r.choice(pool)

    def call(self, kind, canonical_args):
        v = self.variants[kind]
        cid = f"call_{self.next_call}"
        self.next_call += 1
        args = v.arguments(canonical_args)
        return ({"id": cid, "type": "function", "function": {"name": v.name, "arguments": dumps(args)}},
                {"name": v.name, "arguments": args})

    def city(self):
        if not self.heldout and self.r.random() < FICTIONAL_SHARE:
            return self.w.fictional_name(self.r) + self.r.choice(["", "", "", " Bay", "ville", "burg", "port"])
        return self.w.cities.pick(self.r, self.heldout)

    def person(self):
        if not self.heldout and self.r.random() < FICTIONAL_SHARE:
            return f"{self.w.fictional_name(self.r)} {self.w.fictional_name(self.r)}"
        return self.w.people.pick(self.r, self.heldout)


def assistant_calls(ctx, reasoning, calls):
    msg = {"role": "assistant", "content": "", "reasoning_content": reasoning, "tool_calls": [c[0] for c in calls]}
    return msg, {"kind": "tool_calls", "calls": [c[1] for c in calls]}


def tool_results(calls, results):
    return [{"role": "tool", "tool_call_id": c[0]["id"], "content": dumps(res)} for c, res in zip(calls, results)]


def final(reasoning, content, must_contain):
    return ({"role": "assistant", "content": content, "reasoning_content": reasoning},
            {"kind": "answer", "must_contain": [str(x) for x in must_contain]})


# ------------------------------------------------------------------------------------------------ scenarios --
# Each returns (user text, [(message, check or None), ...]) and names the tool kinds it needs.

def weather_sentence(ctx, res, unit="celsius"):
    temp = res.get("temperature_c", res.get("temperature_f"))
    sym = "°C" if unit == "celsius" else "°F"
    return ctx.t([
        f"It is {res['condition']} in {res['city']} right now, {temp}{sym} with {res['humidity']}% humidity.",
        f"In {res['city']} it's currently {res['condition']} and {temp}{sym} (humidity {res['humidity']}%).",
        f"The weather in {res['city']}: {res['condition']}, {temp}{sym}, humidity {res['humidity']}%.",
        f"{res['city']} has {res['condition']} weather at the moment: {temp}{sym}, {res['humidity']}% humidity.",
        f"Right now {res['city']} is {res['condition']}, at {temp}{sym} and {res['humidity']}% humidity.",
    ]), [res["condition"], temp]


def weather_result(ctx, city, unit):
    res = World.weather_today(ctx.r, city)
    if unit == "fahrenheit":
        res = {"city": city, "condition": res["condition"],
               "temperature_f": fmt_number(round(res["temperature_c"] * 9 / 5 + 32)), "humidity": res["humidity"]}
    return res


def sc_weather(ctx):
    city = ctx.city()
    fahrenheit = ctx.r.random() < 0.2
    unit = "fahrenheit" if fahrenheit else "celsius"
    if fahrenheit:
        user = ctx.t([f"What's the weather in {city} in Fahrenheit?", f"How warm is it in {city}? Use Fahrenheit.",
                      f"Weather for {city} please, in degrees Fahrenheit.",
                      f"Tell me the temperature in {city} in Fahrenheit.",
                      f"I need the current weather in {city}, Fahrenheit please."])
        args = {"city": city, "unit": "fahrenheit"}
    else:
        user = ctx.t([f"What's the weather like in {city}?", f"How is the weather in {city} today?",
                      f"Is it raining in {city}?", f"Can you check the weather in {city}?",
                      f"Weather in {city}?", f"What is the temperature in {city} right now?",
                      f"I'm going out in {city}. What's the weather?", f"Tell me the current weather for {city}.",
                      f"Do I need an umbrella in {city} today?", f"how's the weather in {city}",
                      f"Please look up the weather in {city}.", f"What are the conditions in {city} now?"])
        args = {"city": city}
    v = ctx.variants["weather"]
    call = ctx.call("weather", args)
    r1 = ctx.t([f"The user wants the weather in {city}. The {v.name} tool can look it up, so I will call it.",
                f"I need the current weather for {city}; {v.name} gives that.",
                f"To answer I should call {v.name} with {city}.",
                f"Weather question about {city}. I'll use {v.name}."])
    m1, c1 = assistant_calls(ctx, r1, [call])
    res = weather_result(ctx, city, unit)
    text, must = weather_sentence(ctx, res, unit)
    r2 = ctx.t([f"The tool says {city} is {res['condition']}. I will report that.",
                f"I have the weather for {city}; now I answer.",
                "The result came back, so I can tell the user.",
                f"{city}: {res['condition']}. Let me summarise it."])
    m2, c2 = final(r2, text, must)
    return user, [(m1, c1)] + [(m, None) for m in tool_results([call], [res])] + [(m2, c2)]


def sc_weather_parallel(ctx):
    a = ctx.city()
    b = ctx.city()
    while b == a:
        b = ctx.city()
    user = ctx.t([f"What's the weather in {a} and in {b}?", f"Compare the weather in {a} and {b}.",
                  f"How is the weather in {a}? And in {b}?", f"Weather in {a} and {b} please.",
                  f"Is it warmer in {a} or in {b} right now?", f"Check the weather for both {a} and {b}.",
                  f"I'm travelling from {a} to {b}. What's the weather in each?",
                  f"Can you get me the weather in {a} as well as {b}?"])
    v = ctx.variants["weather"]
    calls = [ctx.call("weather", {"city": a}), ctx.call("weather", {"city": b})]
    r1 = ctx.t([f"Two cities: {a} and {b}. I can call {v.name} for both at once.",
                f"I'll look up {a} and {b} in parallel with {v.name}.",
                f"The user asks about {a} and {b}; two calls to {v.name}.",
                f"Both {a} and {b} need a weather lookup."])
    m1, c1 = assistant_calls(ctx, r1, calls)
    res = [weather_result(ctx, a, "celsius"), weather_result(ctx, b, "celsius")]
    ta, ma = weather_sentence(ctx, res[0])
    tb, mb = weather_sentence(ctx, res[1])
    r2 = ctx.t(["I have both results and will give each.", f"Results for {a} and {b} are in.",
                "Both lookups returned; I'll summarise them.", "Now I can answer for both cities."])
    m2, c2 = final(r2, ta + " " + tb, ma + mb)
    return user, [(m1, c1)] + [(m, None) for m in tool_results(calls, res)] + [(m2, c2)]


OP_WORDS = {"+": ["plus", "+", "added to"], "-": ["minus", "-", "take away"], "*": ["times", "multiplied by", "*"],
            "/": ["divided by", "/", "over"]}


def sc_calculator(ctx):
    op = ctx.r.choice("+-*/")
    if op == "/":
        b = ctx.r.randint(2, 99)
        a = b * ctx.r.randint(2, 999)
    else:
        a, b = ctx.r.randint(2, 9999), ctx.r.randint(2, 999)
    w = ctx.r.choice(OP_WORDS[op])
    user = ctx.t([f"What is {a} {w} {b}?", f"Calculate {a} {w} {b}.", f"Can you compute {a} {w} {b} for me?",
                  f"Could you work out {a} {w} {b}?", f"{a} {w} {b} = ?", f"Please calculate {a} {w} {b} exactly.",
                  f"How much is {a} {w} {b}?", f"Quick math: {a} {w} {b}?"])
    expr = f"{a} {op} {b}"
    v = ctx.variants["calculator"]
    call = ctx.call("calculator", {"expression": expr})
    r1 = ctx.t([f"This is arithmetic: {expr}. {v.name} gives an exact answer.",
                f"I will evaluate {expr} with {v.name} rather than guess.",
                f"The user wants {expr}; calling {v.name}.", f"Exact result needed for {expr}."])
    m1, c1 = assistant_calls(ctx, r1, [call])
    res = calculate(expr)
    n = res["result"]
    shown = {"+": "+", "-": "-", "*": "×", "/": "÷"}[op]
    text = ctx.t([f"{a} {shown} {b} = {n}.", f"The result is {n}.", f"{a} {w} {b} is {n}.",
                  f"That comes to {n}.", f"It equals {n}."])
    m2, c2 = final(ctx.t([f"The tool returned {n}.", "I have the exact result.", f"Result: {n}. Done.",
                          "Now I can give the number."]), text, [n])
    return user, [(m1, c1)] + [(m, None) for m in tool_results([call], [res])] + [(m2, c2)]


def unit_amount(ctx):
    return ctx.r.choice([ctx.r.randint(1, 500), round(ctx.r.randint(10, 9999) / 10, 1)])


def sc_units(ctx):
    f, t = ctx.r.choice(list(UNITS))
    x = unit_amount(ctx)
    fw, tw = UNIT_WORDS[f], UNIT_WORDS[t]
    xs = num_text(x)
    user = ctx.t([f"Convert {xs} {fw} to {tw}.", f"How many {tw} is {xs} {fw}?", f"What is {xs} {fw} in {tw}?",
                  f"I have {xs} {fw}. How much is that in {tw}?", f"{xs} {fw} to {tw} please.",
                  f"Can you convert {xs} {fw} into {tw}?", f"Please express {xs} {fw} in {tw}.",
                  f"{xs} {fw} equals how many {tw}?"])
    v = ctx.variants["units"]
    call = ctx.call("units", {"value": x, "from_unit": f, "to_unit": t})
    r1 = ctx.t([f"A unit conversion from {f} to {t}; {v.name} does that.", f"I'll convert {xs} {f} to {t} with {v.name}.",
                f"The user wants {fw} in {tw}. Calling {v.name}.", f"Conversion: {xs} {f} -> {t}."])
    m1, c1 = assistant_calls(ctx, r1, [call])
    res = convert_units(x, f, t)
    y = num_text(res["value"])
    text = ctx.t([f"{xs} {fw} is {y} {tw}.", f"That is {y} {tw}.", f"{xs} {fw} equals {y} {tw}.",
                  f"It comes to {y} {tw}.", f"You get {y} {tw}."])
    m2, c2 = final(ctx.t([f"The converted value is {y}.", "The tool converted it.", f"{y} {t}. I'll answer.",
                          "Conversion done."]), text, [y])
    return user, [(m1, c1)] + [(m, None) for m in tool_results([call], [res])] + [(m2, c2)]


def currency_amount(ctx):
    return ctx.r.choice([ctx.r.randint(1, 5000), round(ctx.r.randint(100, 99999) / 100, 2)])


def currency_words(ctx, code):
    return ctx.r.choice([code, CURRENCY_NAMES[code]])


def sc_currency(ctx):
    f, t = ctx.r.sample(sorted(CURRENCIES), 2)
    x = currency_amount(ctx)
    xs = num_text(x)
    fw, tw = currency_words(ctx, f), currency_words(ctx, t)
    user = ctx.t([f"Convert {xs} {fw} to {tw}.", f"How much is {xs} {fw} in {tw}?", f"What are {xs} {fw} worth in {tw}?",
                  f"I want to exchange {xs} {fw} into {tw}. How much will I get?", f"{xs} {fw} in {tw}?",
                  f"Please convert {xs} {fw} into {tw}.", f"If I have {xs} {fw}, how many {tw} is that?",
                  f"Change {xs} {fw} to {tw} at today's rate."])
    v = ctx.variants["currency"]
    call = ctx.call("currency", {"amount": x, "from_currency": f, "to_currency": t})
    r1 = ctx.t([f"Currency conversion {f} to {t}; {v.name} has today's rates.",
                f"I'll convert {xs} {f} into {t} with {v.name}.", f"{f} -> {t} for {xs}. Calling {v.name}.",
                f"The user needs {xs} {f} in {t}."])
    m1, c1 = assistant_calls(ctx, r1, [call])
    res = convert_currency(x, f, t)
    y = num_text(res["amount"])
    text = ctx.t([f"{xs} {f} is {y} {t}.", f"That is {y} {t} at today's rate.", f"You would get {y} {t}.",
                  f"{xs} {f} comes to {y} {t}.", f"It converts to {y} {t}."])
    m2, c2 = final(ctx.t([f"The tool says {y} {t}.", "I have the converted amount.", "Conversion finished.",
                          f"{y} {t}; answering."]), text, [y])
    return user, [(m1, c1)] + [(m, None) for m in tool_results([call], [res])] + [(m2, c2)]


def sc_add_days(ctx):
    d = World.random_date(ctx.r)
    n = ctx.r.randint(1, 400)
    back = ctx.r.random() < 0.25
    days = -n if back else n
    if back:
        user = ctx.t([f"What was the date {n} days before {d}?", f"Go back {n} days from {d}.",
                      f"Which date is {n} days earlier than {d}?", f"Subtract {n} days from {d}.",
                      f"{n} days before {d} was which date?"])
    else:
        user = ctx.t([f"What date is {n} days after {d}?", f"Add {n} days to {d}.",
                      f"If today is {d}, what is the date in {n} days?", f"Which date comes {n} days after {d}?",
                      f"{d} plus {n} days is which date?", f"What will the date be {n} days from {d}?"])
    v = ctx.variants["add_days"]
    call = ctx.call("add_days", {"date": d, "days": days})
    r1 = ctx.t([f"Date arithmetic: {d} with {days} days. {v.name} does it exactly.",
                f"I'll shift {d} by {days} days using {v.name}.", f"Calling {v.name} with {d} and {days}.",
                "Counting days by hand is error-prone; I'll use the tool."])
    m1, c1 = assistant_calls(ctx, r1, [call])
    res = add_days(d, days)
    text = ctx.t([f"It is {res['date']}, a {res['weekday']}.", f"The date is {res['date']} ({res['weekday']}).",
                  f"That would be {res['weekday']}, {res['date']}.", f"{res['date']}, which is a {res['weekday']}.",
                  f"You land on {res['date']}, a {res['weekday']}."])
    m2, c2 = final(ctx.t([f"The tool says {res['date']}.", "I have the new date.", "Got the date and weekday.",
                          f"{res['date']} it is."]), text, [res["date"]])
    return user, [(m1, c1)] + [(m, None) for m in tool_results([call], [res])] + [(m2, c2)]


def sc_weekday(ctx):
    d = World.random_date(ctx.r)
    user = ctx.t([f"What day of the week is {d}?", f"Which weekday was {d}?", f"Is {d} a weekend?",
                  f"On what day of the week does {d} fall?", f"Tell me the weekday of {d}.",
                  f"{d}: which day of the week?", f"What weekday is {d}?", f"Was {d} a Monday?"])
    v = ctx.variants["weekday"]
    call = ctx.call("weekday", {"date": d})
    r1 = ctx.t([f"I need the weekday of {d}; {v.name} tells it.", f"Calling {v.name} for {d}.",
                f"The weekday of {d} is best looked up.", f"Weekday question about {d}."])
    m1, c1 = assistant_calls(ctx, r1, [call])
    res = weekday_of(d)
    text = ctx.t([f"{d} is a {res['weekday']}.", f"It falls on a {res['weekday']}.", f"That day is a {res['weekday']}.",
                  f"{d} was a {res['weekday']}.", f"The weekday is {res['weekday']}."])
    m2, c2 = final(ctx.t([f"It's a {res['weekday']}.", "I have the weekday.", "The tool answered.",
                          f"{res['weekday']}; answering."]), text, [res["weekday"]])
    return user, [(m1, c1)] + [(m, None) for m in tool_results([call], [res])] + [(m2, c2)]


def product_answer(ctx, res, ask):
    if ask == "price":
        return ctx.t([f"The {res['name']} costs {res['price']} USD.", f"It is priced at {res['price']} USD.",
                      f"The {res['name']} is {res['price']} USD.", f"Price: {res['price']} USD.",
                      f"It sells for {res['price']} USD."]), [res["price"]]
    if ask == "stock":
        n = res["in_stock"]
        if n == 0:
            return ctx.t([f"The {res['name']} is out of stock.", "Sorry, it is out of stock right now.",
                          f"There are no {res['name']}s in stock.", "None left: it's out of stock.",
                          "It is currently out of stock."]), ["out of stock"]
        return ctx.t([f"There are {n} in stock.", f"{n} units of the {res['name']} are in stock.",
                      f"Yes, {n} are available.", f"The store has {n} in stock.", f"In stock: {n}."]), [n]
    return ctx.t([f"The {res['name']} is made in {res['made_in']}.", f"It comes from {res['made_in']}.",
                  f"It is made in {res['made_in']}.", f"Origin: {res['made_in']}.",
                  f"The {res['name']} is produced in {res['made_in']}."]), [res["made_in"]]


def sc_product(ctx):
    name = ctx.w.products.pick(ctx.r, ctx.heldout)
    ask = ctx.r.choice(["price", "stock", "origin"])
    user = ctx.t({
        "price": [f"How much does the {name} cost?", f"What's the price of the {name}?", f"Price of the {name}?",
                  f"How expensive is the {name}?", f"Can you check what the {name} costs?",
                  f"I'd like to buy the {name}. How much is it?", f"Tell me the price of the {name}.",
                  f"What does the {name} sell for?"],
        "stock": [f"Is the {name} in stock?", f"How many {name}s do you have?", f"Do you have the {name} available?",
                  f"Can I order the {name} today?", f"Check the stock of the {name}.",
                  f"Are there any {name}s left?", f"How many units of the {name} are in stock?",
                  f"Is the {name} available right now?"],
        "origin": [f"Where is the {name} made?", f"Where does the {name} come from?",
                   f"In which city is the {name} produced?", f"What is the origin of the {name}?",
                   f"Where was the {name} manufactured?", f"Which city makes the {name}?",
                   f"Tell me where the {name} is made.", f"Origin of the {name}?"],
    }[ask])
    v = ctx.variants["product"]
    call = ctx.call("product", {"name": name})
    r1 = ctx.t([f"A catalogue question about the {name}; {v.name} has it.", f"I'll look up the {name} with {v.name}.",
                f"Calling {v.name} for the {name}.", f"I need the catalogue record of the {name}."])
    m1, c1 = assistant_calls(ctx, r1, [call])
    res = World.product_record(ctx.r, name, ctx.city())
    text, must = product_answer(ctx, res, ask)
    m2, c2 = final(ctx.t(["I found the product.", f"The catalogue has the {name}.", "Record received.",
                          "Now I can answer about the product."]), text, must)
    return user, [(m1, c1)] + [(m, None) for m in tool_results([call], [res])] + [(m2, c2)]


def sc_time(ctx):
    city = ctx.city()
    user = ctx.t([f"What time is it in {city}?", f"What's the local time in {city}?", f"Current time in {city}?",
                  f"Is it night in {city} right now?", f"Tell me the time in {city}.",
                  f"What time is it now over in {city}?", f"Can you check the clock in {city}?",
                  f"I need to call someone in {city}. What time is it there?"])
    v = ctx.variants["time"]
    call = ctx.call("time", {"city": city})
    r1 = ctx.t([f"The local time in {city}: {v.name} knows it.", f"I'll call {v.name} for {city}.",
                f"Time question about {city}.", f"Let me check {city}'s clock with {v.name}."])
    m1, c1 = assistant_calls(ctx, r1, [call])
    res = local_time(ctx.r, city, ctx.w.offset_of(city))
    text = ctx.t([f"It is {res['time']} in {city} (UTC{res['utc_offset']}).", f"The local time in {city} is {res['time']}.",
                  f"In {city} it's {res['time']} right now.", f"It's {res['time']} there (UTC{res['utc_offset']}).",
                  f"{city} time: {res['time']}."])
    m2, c2 = final(ctx.t([f"It's {res['time']} in {city}.", "I have the local time.", "The clock reading is in.",
                          "Answering with the time."]), text, [res["time"]])
    return user, [(m1, c1)] + [(m, None) for m in tool_results([call], [res])] + [(m2, c2)]


def sc_text(ctx):
    word = ctx.w.words.pick(ctx.r, ctx.heldout)
    op = ctx.r.choice(T.TEXT_OPS)
    if op == "word_count":
        word = " ".join(ctx.w.words.pick(ctx.r, ctx.heldout) for _ in range(ctx.r.randint(2, 6)))
    user = ctx.t({
        "reverse": [f"Reverse the text '{word}'.", f"What is '{word}' spelled backwards?", f"Reverse '{word}' please.",
                    f"Write '{word}' in reverse.", f"Can you flip '{word}' backwards?"],
        "uppercase": [f"Convert '{word}' to uppercase.", f"Make '{word}' all capitals.", f"Uppercase '{word}'.",
                      f"Write '{word}' in upper case.", f"Turn '{word}' into capital letters."],
        "lowercase": [f"Convert '{word.upper()}' to lowercase.", f"Make '{word.upper()}' lower case.",
                      f"Lowercase '{word.upper()}'.", f"Write '{word.upper()}' in small letters.",
                      f"Turn '{word.upper()}' into lowercase."],
        "length": [f"How many characters are in '{word}'?", f"What is the length of '{word}'?",
                   f"Count the characters in '{word}'.", f"How long is the string '{word}'?",
                   f"Number of characters in '{word}'?"],
        "word_count": [f"How many words are in '{word}'?", f"Count the words in '{word}'.",
                       f"Word count of '{word}'?", f"How many words does '{word}' have?",
                       f"Tell me how many words are in '{word}'."],
    }[op])
    text_in = word.upper() if op == "lowercase" else word
    v = ctx.variants["text"]
    call = ctx.call("text", {"text": text_in, "operation": op})
    r1 = ctx.t([f"A string task: {op}. {v.name} does it.", f"I'll apply {op} to the text with {v.name}.",
                f"Calling {v.name} with operation {op}.", f"The text operation is {op}."])
    m1, c1 = assistant_calls(ctx, r1, [call])
    res = text_tool(text_in, op)
    out = res["result"]
    text = ctx.t([f"The result is '{out}'." if isinstance(out, str) else f"The answer is {out}.",
                  f"Here it is: {out}", f"You get {out}.", f"Result: {out}", f"It gives {out}."])
    m2, c2 = final(ctx.t(["The tool returned the result.", f"Result: {out}.", "Done with the text.",
                          "Now I answer."]), text, [out])
    return user, [(m1, c1)] + [(m, None) for m in tool_results([call], [res])] + [(m2, c2)]


def sc_contact(ctx):
    name = ctx.person()
    ask = ctx.r.choice(["phone", "email", "city"])
    user = ctx.t({
        "phone": [f"What is {name}'s phone number?", f"How can I call {name}?", f"Find the phone number of {name}.",
                  f"Give me {name}'s number.", f"Look up {name}'s phone."],
        "email": [f"What is {name}'s email address?", f"How do I email {name}?", f"Find the email of {name}.",
                  f"I need {name}'s email.", f"Look up the email address for {name}."],
        "city": [f"Where does {name} live?", f"Which city is {name} in?", f"What city does {name} live in?",
                 f"Find out where {name} lives.", f"In which city does {name} live?"],
    }[ask])
    v = ctx.variants["contact"]
    call = ctx.call("contact", {"name": name})
    r1 = ctx.t([f"I need {name}'s contact record; {v.name} has it.", f"Looking up {name} with {v.name}.",
                f"Calling {v.name} for {name}.", f"The address book should have {name}."])
    m1, c1 = assistant_calls(ctx, r1, [call])
    res = World.contact_record(ctx.r, name, ctx.city())
    val = res[ask]
    text = ctx.t({
        "phone": [f"{name}'s phone number is {val}.", f"You can call {name} at {val}.", f"The number is {val}.",
                  f"Phone: {val}.", f"{name} can be reached at {val}."],
        "email": [f"{name}'s email is {val}.", f"You can write to {val}.", f"The email address is {val}.",
                  f"Email: {val}.", f"{name} uses {val}."],
        "city": [f"{name} lives in {val}.", f"{name} is in {val}.", f"They live in {val}.", f"Home city: {val}.",
                 f"{name}'s city is {val}."],
    }[ask])
    m2, c2 = final(ctx.t([f"Found {name}.", "The record came back.", f"I have {name}'s details.",
                          "Answering from the contact record."]), text, [val])
    return user, [(m1, c1)] + [(m, None) for m in tool_results([call], [res])] + [(m2, c2)]


# Multi-round: a later call takes an earlier result.
def sc_product_currency(ctx):
    name = ctx.w.products.pick(ctx.r, ctx.heldout)
    to = ctx.r.choice([c for c in sorted(CURRENCIES) if c != "USD"])
    tw = currency_words(ctx, to)
    user = ctx.t([f"How much does the {name} cost in {tw}?", f"What is the price of the {name} in {tw}?",
                  f"I pay in {tw}. How much is the {name}?", f"Give me the {name}'s price converted to {tw}.",
                  f"Price of the {name} in {tw}?", f"Can you tell me what the {name} costs in {tw}?",
                  f"Convert the price of the {name} to {tw}.", f"How many {tw} is the {name}?"])
    vp, vc = ctx.variants["product"], ctx.variants["currency"]
    c1 = ctx.call("product", {"name": name})
    m1, k1 = assistant_calls(ctx, ctx.t([f"First I need the {name}'s price from {vp.name}, then convert it to {to}.",
                                         f"Two steps: look up the {name}, then convert with {vc.name}.",
                                         f"I'll get the price with {vp.name} first.",
                                         f"The price is in the catalogue; conversion after that."]), [c1])
    res1 = World.product_record(ctx.r, name, ctx.city())
    c2 = ctx.call("currency", {"amount": res1["price"], "from_currency": "USD", "to_currency": to})
    m2, k2 = assistant_calls(ctx, ctx.t([f"It costs {res1['price']} USD. Now convert to {to} with {vc.name}.",
                                         f"Price found: {res1['price']} USD. Next, {vc.name}.",
                                         f"Converting {res1['price']} USD to {to}.",
                                         f"I have the price; now the currency step."]), [c2])
    res2 = convert_currency(res1["price"], "USD", to)
    y = num_text(res2["amount"])
    text = ctx.t([f"The {name} costs {res1['price']} USD, which is {y} {to}.", f"That is {y} {to}.",
                  f"It costs {y} {to} ({res1['price']} USD).", f"In {to} the {name} costs {y}.",
                  f"About {y} {to}."])
    m3, k3 = final(ctx.t([f"{y} {to}. Done.", "Both steps are done.", "I have the converted price.",
                          "Answering with the converted price."]), text, [y])
    return user, ([(m1, k1)] + [(m, None) for m in tool_results([c1], [res1])] + [(m2, k2)]
                  + [(m, None) for m in tool_results([c2], [res2])] + [(m3, k3)])


def sc_product_weather(ctx):
    name = ctx.w.products.pick(ctx.r, ctx.heldout)
    user = ctx.t([f"What's the weather where the {name} is made?", f"Is it sunny in the city that makes the {name}?",
                  f"Check the weather in the {name}'s home city.", f"How's the weather where the {name} comes from?",
                  f"Find where the {name} is made and tell me the weather there.",
                  f"What is the weather like in the city where the {name} is produced?",
                  f"Weather at the {name}'s place of origin?", f"Look up the origin of the {name} and its weather."])
    vp, vw = ctx.variants["product"], ctx.variants["weather"]
    c1 = ctx.call("product", {"name": name})
    m1, k1 = assistant_calls(ctx, ctx.t([f"I must find where the {name} is made ({vp.name}), then the weather there.",
                                         f"First {vp.name} for the origin, then {vw.name}.",
                                         "Two steps: origin, then weather.", f"Looking up the {name} first."]), [c1])
    res1 = World.product_record(ctx.r, name, ctx.city())
    city = res1["made_in"]
    c2 = ctx.call("weather", {"city": city})
    m2, k2 = assistant_calls(ctx, ctx.t([f"It is made in {city}. Now {vw.name} for {city}.",
                                         f"Origin is {city}; checking its weather.", f"Next: weather in {city}.",
                                         f"{city} it is. Calling {vw.name}."]), [c2])
    res2 = weather_result(ctx, city, "celsius")
    text, must = weather_sentence(ctx, res2)
    text = ctx.t([f"The {name} is made in {city}. ", f"It comes from {city}. ", f"{city} makes it. ",
                  f"The {name} is from {city}. "]) + text
    m3, k3 = final(ctx.t(["I have the origin and its weather.", "Both lookups are done.", "Now I can answer.",
                          f"Weather in {city} found."]), text, [city] + must)
    return user, ([(m1, k1)] + [(m, None) for m in tool_results([c1], [res1])] + [(m2, k2)]
                  + [(m, None) for m in tool_results([c2], [res2])] + [(m3, k3)])


def sc_contact_time(ctx):
    name = ctx.person()
    user = ctx.t([f"What time is it where {name} lives?", f"Is it a good time to call {name}? What time is it there?",
                  f"Check the local time in {name}'s city.", f"What's the time for {name} right now?",
                  f"Find {name}'s city and tell me the time there.", f"What is the current time at {name}'s place?",
                  f"Local time for {name}?", f"I want to phone {name}. What time is it in their city?"])
    vc, vt = ctx.variants["contact"], ctx.variants["time"]
    c1 = ctx.call("contact", {"name": name})
    m1, k1 = assistant_calls(ctx, ctx.t([f"First find where {name} lives with {vc.name}, then the time there.",
                                         f"{vc.name} first, then {vt.name}.", f"Looking up {name}'s city.",
                                         "Two steps: city, then clock."]), [c1])
    res1 = World.contact_record(ctx.r, name, ctx.city())
    city = res1["city"]
    c2 = ctx.call("time", {"city": city})
    m2, k2 = assistant_calls(ctx, ctx.t([f"{name} lives in {city}. Now {vt.name} for {city}.",
                                         f"City is {city}; checking the time.", f"Next: the clock in {city}.",
                                         f"{city}. Calling {vt.name}."]), [c2])
    res2 = local_time(ctx.r, city, ctx.w.offset_of(city))
    text = ctx.t([f"{name} lives in {city}, where it is {res2['time']} now.",
                  f"It's {res2['time']} in {city}, where {name} lives.", f"In {city} it is {res2['time']}.",
                  f"{name} is in {city}; local time {res2['time']}.", f"Right now it's {res2['time']} for {name}."])
    m3, k3 = final(ctx.t(["I have the city and the time.", "Both lookups done.", "Answering now.",
                          f"The time in {city} is known."]), text, [res2["time"]])
    return user, ([(m1, k1)] + [(m, None) for m in tool_results([c1], [res1])] + [(m2, k2)]
                  + [(m, None) for m in tool_results([c2], [res2])] + [(m3, k3)])


def sc_weather_time(ctx):
    city = ctx.city()
    user = ctx.t([f"What's the weather and the local time in {city}?", f"Time and weather in {city}?",
                  f"Tell me the time in {city} and how the weather is.", f"In {city}: what time is it and is it raining?",
                  f"Give me {city}'s current time and weather.", f"Check both the clock and the weather in {city}.",
                  f"What time is it in {city}, and what's the weather?", f"Weather plus local time for {city} please."])
    vw, vt = ctx.variants["weather"], ctx.variants["time"]
    calls = [ctx.call("weather", {"city": city}), ctx.call("time", {"city": city})]
    m1, k1 = assistant_calls(ctx, ctx.t([f"Two independent lookups for {city}: {vw.name} and {vt.name}.",
                                         "I can call both tools at once.", f"Weather and time for {city} in parallel.",
                                         "Two calls in one go."]), calls)
    res = [weather_result(ctx, city, "celsius"), local_time(ctx.r, city, ctx.w.offset_of(city))]
    wt, wm = weather_sentence(ctx, res[0])
    text = f"It is {res[1]['time']} in {city}. " + wt
    m2, k2 = final(ctx.t(["Both results are in.", "I have the weather and the time.", "Answering both.",
                          "Done with both lookups."]), text, [res[1]["time"]] + wm)
    return user, [(m1, k1)] + [(m, None) for m in tool_results(calls, res)] + [(m2, k2)]


# Requests no listed tool can serve.
MISSING = {
    "weather": ("check the weather", lambda c: f"What's the weather in {c.city()}?"),
    "calculator": ("do exact calculations", lambda c: f"What is {c.r.randint(100, 999)} times {c.r.randint(10, 99)}?"),
    "units": ("convert units", lambda c: f"How many miles is {c.r.randint(5, 200)} km?"),
    "currency": ("convert currencies", lambda c: f"How much is {c.r.randint(5, 900)} euros in yen?"),
    "add_days": ("do date arithmetic", lambda c: f"What date is {c.r.randint(2, 90)} days after {World.random_date(c.r)}?"),
    "weekday": ("look up weekdays", lambda c: f"What day of the week is {World.random_date(c.r)}?"),
    "product": ("look up products", lambda c: f"How much does the {c.w.products.pick(c.r, c.heldout)} cost?"),
    "time": ("tell the local time", lambda c: f"What time is it in {c.city()}?"),
    "text": ("transform text", lambda c: f"Reverse the text '{c.w.words.pick(c.r, c.heldout)}'."),
    "contact": ("look up contacts", lambda c: f"What is {c.person()}'s phone number?"),
}
IMPOSSIBLE = [
    ("book flights", ["Book me a flight to {city} tomorrow.", "Can you reserve a plane ticket to {city}?",
                      "I need a flight to {city} on Friday, please book it.", "Get me on the next flight to {city}.",
                      "Find and book the cheapest flight to {city}."]),
    ("send emails", ["Send an email to my boss saying I'm late.", "Email the team that the meeting moved.",
                     "Please send a message to {person} about dinner.", "Write and send an email to {person}.",
                     "Can you email my landlord for me?"]),
    ("play music", ["Play some jazz.", "Put on my favourite song.", "Start playing music in the kitchen.",
                    "Can you play the radio?", "Play something relaxing."]),
    ("set alarms", ["Set an alarm for 6 am.", "Wake me up at 7 tomorrow.", "Set a timer for ten minutes.",
                    "Remind me at noon to call mom.", "Create an alarm for 5:30."]),
    ("order food", ["Order a pizza for me.", "Get me sushi delivered.", "I want to order dinner from the Thai place.",
                    "Order two coffees to my office.", "Can you order groceries?"]),
    ("make payments", ["Pay my electricity bill.", "Transfer 50 dollars to {person}.", "Send money to my sister.",
                       "Pay the invoice from yesterday.", "Wire 200 euros to my account."]),
]


def sc_missing_tool(ctx, kind):
    """The user asks for something only a tool of `kind` could do, and no such tool is listed."""
    ability, make = MISSING[kind]
    user = make(ctx)
    reasoning = ctx.t([f"None of the listed tools can {ability}, so I cannot look this up.",
                       f"I have no tool to {ability}. I should say so honestly.",
                       f"The available tools don't {ability}; I won't guess.",
                       f"Nothing here can {ability}."])
    text = ctx.t([f"Sorry, I can't {ability} with the tools I have.",
                  f"I'm sorry, but none of my tools can {ability}, so I can't answer that reliably.",
                  f"Unfortunately I have no way to {ability} here.",
                  f"I can't help with that: I don't have a tool to {ability}.",
                  f"Sorry, I'm not able to {ability} right now."])
    return user, [({"role": "assistant", "content": text, "reasoning_content": reasoning}, {"kind": "no_tool"})]


def sc_impossible(ctx):
    ability, templates = ctx.r.choice(IMPOSSIBLE)
    user = ctx.t(templates).format(city=ctx.city(), person=ctx.person())
    reasoning = ctx.t([f"The user wants me to {ability}. No tool can do that.",
                       f"I can't {ability}; none of the tools allow it.",
                       f"There is no tool to {ability}, so I'll explain.",
                       f"Request to {ability}: not possible with these tools."])
    text = ctx.t([f"Sorry, I can't {ability}: none of my tools can do that.",
                  f"I'm not able to {ability}. I can only use the tools I've been given.",
                  f"Unfortunately I can't {ability} for you.",
                  f"That's outside what I can do: I have no tool to {ability}.",
                  f"I'm sorry, I don't have a way to {ability}."])
    return user, [({"role": "assistant", "content": text, "reasoning_content": reasoning}, {"kind": "no_tool"})]


GREETINGS = [
    (["Hi!", "Hello", "Hey there", "Good morning!", "Hi, how are you?", "Hello!", "hey", "Good evening"],
     ["Hello! How can I help you today?", "Hi! What can I do for you?", "Hello! I'm here to help.",
      "Hi there! How can I help?", "Good to see you! What do you need?"],
     ["The user greets me; I greet back.", "A greeting. I'll reply politely.", "Just a hello.",
      "Friendly greeting; answer in kind."]),
    (["Thanks!", "Thank you so much.", "Great, thanks.", "Perfect, thank you!", "thx", "Thanks a lot",
      "Cheers!", "Much appreciated."],
     ["You're welcome!", "Glad I could help!", "Any time!", "You're welcome. Anything else?", "Happy to help!"],
     ["The user thanks me.", "A thank-you; reply briefly.", "Nothing to look up here.", "Polite closing."]),
    (["Who are you?", "What are you?", "What can you do?", "Are you a person?", "Introduce yourself.",
      "What is your name?", "Tell me about yourself.", "Which model are you?"],
     ["I'm a small assistant model running on dsinfer. I can answer simple questions and use the tools I'm given.",
      "I am a tiny DeepSeek-V3.2-style model trained for the dsinfer project. I can chat and call tools.",
      "I'm a small demo assistant: I know a few facts and can call tools like weather or calculators.",
      "A small model served by dsinfer. Ask me something, or give me tools to use."],
     ["The user asks who I am.", "A question about me.", "I should introduce myself briefly.",
      "Self-introduction."]),
]


def sc_chat(ctx):
    users, answers, reasons = ctx.r.choice(GREETINGS)
    return ctx.t(users), [({"role": "assistant", "content": ctx.t(answers), "reasoning_content": ctx.t(reasons)},
                           {"kind": "chat", "must_contain": []})]


def sc_capital(ctx):
    if ctx.r.random() < 0.7:
        country = ctx.r.choice(sorted(CAPITALS))
        cap = CAPITALS[country]
        user = ctx.t([f"What is the capital of {country}?", f"What's {country}'s capital city?",
                      f"Capital of {country}?", f"Which city is the capital of {country}?",
                      f"Tell me the capital of {country}.", f"Do you know the capital of {country}?",
                      f"{country}: what is its capital?", f"Name the capital of {country}."])
        text = ctx.t([f"The capital of {country} is {cap}.", f"{cap} is the capital of {country}.",
                      f"It's {cap}.", f"{country}'s capital is {cap}.", f"The capital city is {cap}."])
        reason = ctx.t([f"I know this: the capital of {country} is {cap}.", f"{country} -> {cap}.",
                        "A fact I know; no tool needed.", f"Capital question. {cap}."])
        return user, [({"role": "assistant", "content": text, "reasoning_content": reason},
                       {"kind": "chat", "must_contain": [cap]})]
    country = ctx.w.unknown_countries.pick(ctx.r, ctx.heldout)
    user = ctx.t([f"What is the capital of {country}?", f"What's {country}'s capital city?", f"Capital of {country}?",
                  f"Which city is the capital of {country}?", f"Tell me the capital of {country}.",
                  f"Do you know the capital of {country}?", f"{country}: what is its capital?",
                  f"Name the capital of {country}."])
    text = ctx.t([f"I don't know the capital of {country}.", f"Sorry, I don't know that.",
                  f"I'm not sure, and I don't want to guess: I don't know the capital of {country}.",
                  f"I don't know, sorry.", f"That's not something I know."])
    reason = ctx.t([f"I don't know the capital of {country}.", "I don't have that fact; better to say so.",
                    f"{country} is not a country I know about.", "I should not guess."])
    return user, [({"role": "assistant", "content": text, "reasoning_content": reason},
                   {"kind": "chat", "must_contain": ["know"]})]


TOOL_SCENARIOS = [  # (weight, needed kinds, builder)
    (6, ["weather"], sc_weather), (3, ["weather"], sc_weather_parallel), (4, ["calculator"], sc_calculator),
    (4, ["units"], sc_units), (4, ["currency"], sc_currency), (3, ["add_days"], sc_add_days),
    (3, ["weekday"], sc_weekday), (4, ["product"], sc_product), (3, ["time"], sc_time), (3, ["text"], sc_text),
    (3, ["contact"], sc_contact), (3, ["product", "currency"], sc_product_currency),
    (2, ["product", "weather"], sc_product_weather), (2, ["contact", "time"], sc_contact_time),
    (2, ["weather", "time"], sc_weather_time),
]

SYSTEM_PROMPTS = ["", "You are a helpful assistant.", "You are a concise assistant.",
                  "You are a helpful assistant. Use tools when they help.", "Answer briefly and accurately.",
                  "You are dsinfer's demo assistant."]


# -------------------------------------------------------------------------------- copy drills (training) --
def drill_value(ctx):
    r = ctx.r
    kind = r.randrange(7)
    if kind == 0:
        return ctx.w.fictional_name(r, (1, 4))
    if kind == 1:
        return ctx.city()
    if kind == 2:
        return ctx.person()
    if kind == 3:
        return str(r.choice([r.randint(0, 99), r.randint(100, 99999), r.randint(100000, 99999999)]))
    if kind == 4:
        return f"{r.randint(0, 9999)}.{r.randint(0, 99):02d}" if r.random() < 0.5 else World.random_date(r)
    if kind == 5:
        return ctx.w.words.pick(r, False)
    return "".join(r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(r.randint(1, 3))) + "-" + str(r.randint(1, 9999))


def sc_echo(ctx):
    items = [drill_value(ctx) for _ in range(ctx.r.randint(1, 8))]
    text = ctx.r.choice([", ", " ", "; ", " / "]).join(items)
    user = ctx.r.choice([f"Repeat after me: {text}", f"Please repeat exactly: {text}", f"Copy this text: {text}",
                         f"Say back to me: {text}", f"Echo: {text}", f"Write this again, word for word: {text}",
                         f"Repeat: {text}"])
    reason = ctx.r.choice(["The user wants the text back exactly.", "Repeat it verbatim.", f"Repeat: {text}"])
    return user, [({"role": "assistant", "content": text, "reasoning_content": reason}, None)]


DRILL_KEYS = ["code", "name", "city", "number", "color", "room", "flight", "order", "pin", "id", "owner", "date",
              "password", "plate", "seat", "ticket", "label", "amount", "street", "team"]


def sc_recall(ctx):
    keys = ctx.r.sample(DRILL_KEYS, ctx.r.randint(2, 6))
    vals = {k: drill_value(ctx) for k in keys}
    sep = ctx.r.choice(["; ", ", ", "\n"])
    facts = sep.join(ctx.r.choice([f"{k}: {vals[k]}", f"{k} = {vals[k]}", f"the {k} is {vals[k]}"]) for k in keys)
    ask = ctx.r.choice(keys)
    user = ctx.r.choice([f"Here are some details: {facts}. What is the {ask}?", f"{facts}\nWhich {ask} did I give?",
                         f"Remember this: {facts}. Now tell me the {ask}.", f"Note: {facts}. {ask}?"])
    text = ctx.r.choice([f"The {ask} is {vals[ask]}.", f"{vals[ask]}", f"You gave the {ask} as {vals[ask]}.",
                         f"It's {vals[ask]}."])
    reason = ctx.r.choice([f"The {ask} was given as {vals[ask]}.", f"Look up {ask}: {vals[ask]}.",
                           "It is in the message."])
    return user, [({"role": "assistant", "content": text, "reasoning_content": reason}, None)]


# ---------------------------------------------------------------------------------------- JSON replies --
JSON_TASKS = [
    ("person", {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                                 "city": {"type": "string"}},
                "required": ["name", "age", "city"], "additionalProperties": False}),
    ("order", {"type": "object", "properties": {"product": {"type": "string"}, "quantity": {"type": "integer"},
                                                "express": {"type": "boolean"}},
               "required": ["product", "quantity", "express"], "additionalProperties": False}),
    ("meeting", {"type": "object", "properties": {"date": {"type": "string"}, "city": {"type": "string"},
                                                  "attendees": {"type": "array", "items": {"type": "string"}}},
                 "required": ["date", "city", "attendees"], "additionalProperties": False}),
]


def sc_json(ctx, task):
    if task == "person":
        name = ctx.person().split(" ")[0]
        age, city = ctx.r.randint(18, 90), ctx.city()
        user = ctx.t([f"{name} is {age} years old and lives in {city}.", f"Meet {name}, {age}, from {city}.",
                      f"My friend {name} lives in {city}. She is {age}.", f"{name} ({age}) moved to {city} last year.",
                      f"Extract the person: {name}, aged {age}, living in {city}."])
        obj = {"name": name, "age": age, "city": city}
    elif task == "order":
        product = ctx.w.products.pick(ctx.r, ctx.heldout)
        q, express = ctx.r.randint(1, 20), ctx.r.random() < 0.5
        ship = ctx.r.choice(["with express shipping", "express please"]) if express else \
            ctx.r.choice(["standard shipping is fine", "no rush"])
        user = ctx.t([f"I'd like {q} of the {product}, {ship}.", f"Order {q} x {product}, {ship}.",
                      f"Please send me {q} {product}s; {ship}.", f"Can I get {q} units of the {product}? {ship}.",
                      f"{q} {product}, {ship}."])
        obj = {"product": product, "quantity": q, "express": express}
    else:
        date, city = World.random_date(ctx.r), ctx.city()
        people = [p.split(" ")[0] for p in ctx.r.sample(ctx.w.people.heldout if ctx.heldout else ctx.w.people.train,
                                                        ctx.r.randint(1, 3))]
        who = " and ".join(people) if len(people) < 3 else f"{people[0]}, {people[1]} and {people[2]}"
        user = ctx.t([f"Meeting on {date} in {city} with {who}.", f"{who} will meet in {city} on {date}.",
                      f"Schedule: {date}, {city}, attendees {who}.", f"On {date} I'm meeting {who} in {city}.",
                      f"Plan a meeting in {city} on {date} with {who}."])
        obj = {"date": date, "city": city, "attendees": people}
    reason = ctx.t(["The reply must be JSON following the schema.", "I'll extract the fields as JSON.",
                    "Only JSON is allowed here.", "Structured output: fill the schema."])
    return user, [({"role": "assistant", "content": dumps(obj), "reasoning_content": reason},
                   {"kind": "json", "expect": obj})]


# ------------------------------------------------------------------------------------------ conversations --
class ConversationGenerator:
    def __init__(self, world, seed, heldout):
        self.w, self.r, self.heldout = world, random.Random(seed), heldout

    def conversation(self, unseen_tools=False, thinking=None):
        r = self.r
        thinking = r.random() < 0.5 if thinking is None else thinking
        if not self.heldout and r.random() < COPY_DRILL_SHARE:
            return self._copy_drill(thinking)
        dense = CALL_DENSE and not self.heldout
        kind = r.choices(["tools", "chat", "json"], weights=[90, 5, 5] if dense else [80, 10, 10])[0]
        if kind == "json":
            return self._json_conversation(thinking)
        micro = MICRO and not self.heldout
        if micro:
            kind = "tools"
        n_turns = 1 if micro else r.choices([1, 2, 3], weights=[10, 30, 60] if dense else [30, 40, 30])[0]
        plans = []  # (builder, needed kinds, missing kind)
        for _ in range(n_turns):
            x = 0.5 if micro else r.random()
            if kind == "chat" or x < 0.08:
                plans.append((r.choice([sc_chat, sc_capital, sc_capital]), [], None))
            elif x < 0.14:
                plans.append((sc_impossible, [], None))
            elif x < 0.22:
                plans.append((None, [], r.choice(sorted(T.KINDS))))
            else:
                w, need, fn = r.choices(TOOL_SCENARIOS, weights=[s[0] for s in TOOL_SCENARIOS])[0]
                plans.append((fn, need, None))
        needed = {k for _, need, _ in plans for k in need}
        missing = {m for _, _, m in plans if m}
        if missing & needed:  # a turn needs a tool another turn must lack: drop the missing-tool turn
            plans = [p for p in plans if not (p[2] and p[2] in needed)]
            missing -= needed
        others = [k for k in sorted(T.KINDS) if k not in needed and k not in missing]
        n_total = r.randint(max(len(needed), 1), max(len(needed), min(5, len(needed) + (1 if dense else 2))))
        if micro:
            n_total = len(needed) + (r.random() < 0.3)
        if kind == "chat" and r.random() < 0.5:
            chosen = []
        else:
            chosen = sorted(needed) + r.sample(others, max(0, n_total - len(needed)))
        r.shuffle(chosen)
        variants = {}
        for k in chosen:
            if not self.heldout and r.random() < SYNTHETIC_TOOL_SHARE:
                v = T.synthetic_variant(k, r, HELDOUT_NAMES)
                while v.name in {u.name for u in variants.values()}:
                    v = T.synthetic_variant(k, r, HELDOUT_NAMES)
            else:
                v = T.make_variant(k, r, unseen_tools)
            variants[k] = v
        ctx = Ctx(r, self.w, self.heldout, variants)
        system = {"role": "system", "content": r.choice(SYSTEM_PROMPTS)}
        messages, checks = [system], {}
        for fn, need, miss in plans:
            user, turn = sc_missing_tool(ctx, miss) if miss else fn(ctx)
            messages.append({"role": "user", "content": user})
            for m, check in turn:
                if check is not None:
                    checks[len(messages)] = check
                messages.append(m)
        tools = [variants[k].spec() for k in chosen]
        return {"thinking": thinking, "unseen_tools": bool(unseen_tools and chosen), "tools": tools,
                "messages": messages, "checks": checks}

    def _copy_drill(self, thinking):
        ctx = Ctx(self.r, self.w, False, {})
        messages = [{"role": "system", "content": self.r.choice(SYSTEM_PROMPTS)}]
        for _ in range(self.r.choice([1, 1, 2, 3])):
            user, turn = self.r.choice([sc_echo, sc_recall])(ctx)
            messages.append({"role": "user", "content": user})
            messages.extend(m for m, _ in turn)
        return {"thinking": thinking, "unseen_tools": False, "tools": [], "messages": messages, "checks": {}}

    def _json_conversation(self, thinking):
        r = self.r
        task, schema = r.choice(JSON_TASKS)
        ctx = Ctx(r, self.w, self.heldout, {})
        rf = {"type": "json_schema", "json_schema": {"name": task, "schema": schema, "strict": True}}
        messages = [{"role": "system", "content": r.choice(["Reply with JSON only.", "Extract the data.",
                                                            "You convert text into JSON records."]),
                     "response_format": rf}]
        checks = {}
        for _ in range(r.choice([1, 1, 2])):
            user, turn = sc_json(ctx, task)
            messages.append({"role": "user", "content": user})
            for m, check in turn:
                checks[len(messages)] = check
                messages.append(m)
        return {"thinking": thinking, "unseen_tools": False, "tools": [], "messages": messages, "checks": checks}
