"""The tools the model learns to call: ten kinds of task, each with pools of names, descriptions and parameter
names, split into the variants training sees and variants only the held-out evaluation uses ("unseen tools":
new names, new parameter names, new descriptions, the same kind of task).

A conversation's tool list is a random subset in random order, and each tool in it a random variant, so the model
has to read the list it is given: it cannot learn that the weather tool is called `get_weather` with `city`.
"""
from world import UNITS

UNIT_ENUM = sorted({u for pair in UNITS for u in pair})
TEXT_OPS = ["reverse", "uppercase", "lowercase", "length", "word_count"]

# kind -> names, descriptions and parameters. Each pool is (train, heldout). A parameter is
# (canonical key, JSON type, extra schema, (train names, heldout names), (train descriptions, heldout descriptions),
#  required).
KINDS = {
    "weather": {
        "names": (["get_weather", "weather_lookup", "fetch_weather", "current_weather", "check_weather",
                   "weather_now", "get_conditions", "lookup_forecast"],
                  ["meteo_report", "outdoor_conditions", "sky_status"]),
        "descriptions": (["Get the current weather for a city.",
                          "Look up today's weather conditions in a given city.",
                          "Returns temperature, humidity and sky conditions for a city."],
                         ["Reports what the weather is like right now in a place."]),
        "params": [
            ("city", "string", {}, (["city", "location", "city_name", "place"], ["town", "locality"]),
             (["The city name, e.g. Paris.", "Name of the city."], ["Where to report on."]), True),
            ("unit", "string", {"enum": ["celsius", "fahrenheit"]},
             (["unit", "units", "temperature_unit"], ["scale"]),
             (["Temperature unit (default celsius).", "celsius or fahrenheit."], ["Which temperature scale."]),
             False),
        ],
    },
    "calculator": {
        "names": (["calculate", "calculator", "evaluate", "compute", "math_eval", "arithmetic", "do_math", "calc"],
                  ["solve_arithmetic", "number_cruncher", "exact_math"]),
        "descriptions": (["Evaluate an arithmetic expression exactly.",
                          "Exact integer calculator for expressions like '12 * 7'.",
                          "Computes the result of a simple arithmetic expression."],
                         ["Works out one integer operation and returns the exact answer."]),
        "params": [
            ("expression", "string", {}, (["expression", "expr", "formula", "input"], ["equation", "math_input"]),
             (["An expression such as '17 + 25'.", "The arithmetic to evaluate."], ["Two integers and an operator."]),
             True),
        ],
    },
    "units": {
        "names": (["convert_units", "unit_converter", "convert_measurement", "units_convert", "measure_convert",
                   "convert_unit"], ["change_units", "quantity_converter", "transform_units"]),
        "descriptions": (["Convert a value from one unit to another.",
                          "Unit conversion for length, mass, volume and temperature.",
                          "Converts a measurement between units."],
                         ["Expresses a quantity in a different unit of measure."]),
        "params": [
            ("value", "number", {}, (["value", "quantity", "amount_value", "number"], ["magnitude", "size_value"]),
             (["The number to convert.", "Numeric value."], ["How much of the source unit."]), True),
            ("from_unit", "string", {"enum": UNIT_ENUM},
             (["from_unit", "source_unit", "unit_from", "from"], ["input_unit", "original_unit"]),
             (["Unit of the value.", "The unit to convert from."], ["The unit the quantity is given in."]), True),
            ("to_unit", "string", {"enum": UNIT_ENUM},
             (["to_unit", "target_unit", "unit_to", "to"], ["output_unit", "desired_unit"]),
             (["Unit to convert to.", "The target unit."], ["The unit wanted."]), True),
        ],
    },
    "currency": {
        "names": (["convert_currency", "currency_converter", "exchange_money", "fx_convert", "money_convert",
                   "currency_exchange"], ["swap_currency", "forex_rate_convert"]),
        "descriptions": (["Convert an amount of money between currencies at today's rates.",
                          "Currency conversion using the current exchange table.",
                          "Exchange an amount from one currency into another."],
                         ["Tells how much money is worth in another currency."]),
        "params": [
            ("amount", "number", {}, (["amount", "value", "sum", "money"], ["total", "cash_amount"]),
             (["How much money.", "The amount to convert."], ["The sum of money to exchange."]), True),
            ("from_currency", "string", {},
             (["from_currency", "source_currency", "base", "from_code"], ["have_currency", "origin_currency"]),
             (["ISO 4217 code of the source currency, e.g. EUR.", "Currency code of the amount."], ["Currency held now."]), True),
            ("to_currency", "string", {},
             (["to_currency", "target_currency", "quote", "to_code"], ["want_currency", "destination_currency"]),
             (["ISO 4217 code of the target currency, e.g. JPY.", "Currency code to convert into."], ["Currency wanted."]), True),
        ],
    },
    "add_days": {
        "names": (["add_days", "date_add", "shift_date", "days_after", "date_offset", "compute_date"],
                  ["move_date", "future_date"]),
        "descriptions": (["Add a number of days to a date (negative to go back).",
                          "Date arithmetic: the date a given number of days from a start date.",
                          "Shift a YYYY-MM-DD date by some days and return the new date and weekday."],
                         ["Finds the calendar date that lies some days away from another."]),
        "params": [
            ("date", "string", {}, (["date", "start_date", "from_date", "day"], ["base_date", "origin_day"]),
             (["Start date as YYYY-MM-DD.", "The date to start from."], ["Reference date, YYYY-MM-DD."]), True),
            ("days", "integer", {}, (["days", "offset", "num_days", "n_days"], ["day_count", "delta_days"]),
             (["Days to add; negative goes back.", "Number of days."], ["How many days to move."]), True),
        ],
    },
    "weekday": {
        "names": (["get_weekday", "day_of_week", "weekday_lookup", "which_weekday", "date_to_weekday"],
                  ["name_the_day", "weekday_finder"]),
        "descriptions": (["Tell the day of the week of a date.",
                          "Returns the weekday name for a YYYY-MM-DD date.",
                          "Find which day of the week a date falls on."],
                         ["Gives the name of the day for a calendar date."]),
        "params": [
            ("date", "string", {}, (["date", "day", "the_date", "iso_date"], ["calendar_date", "when"]),
             (["A date as YYYY-MM-DD.", "The date to look up."], ["Date in ISO form."]), True),
        ],
    },
    "product": {
        "names": (["lookup_product", "product_info", "get_product", "catalog_search", "find_product",
                   "product_lookup"], ["inventory_query", "item_details"]),
        "descriptions": (["Look up a product in the store catalogue: price, stock and origin.",
                          "Get catalogue details of a product by name.",
                          "Search the product database for an item."],
                         ["Fetches what the shop knows about one article."]),
        "params": [
            ("name", "string", {}, (["name", "product", "product_name", "item"], ["article", "goods_name"]),
             (["The product name.", "Name of the item."], ["Which article."]), True),
        ],
    },
    "time": {
        "names": (["get_local_time", "local_time", "time_in_city", "current_time", "world_clock", "city_time"],
                  ["clock_lookup", "time_zone_now"]),
        "descriptions": (["Current local time and UTC offset in a city.",
                          "What time it is now in a given city.",
                          "World clock: local time for a city."],
                         ["Reads the clock of a place right now."]),
        "params": [
            ("city", "string", {}, (["city", "location", "place", "city_name"], ["town", "locality"]),
             (["The city name.", "City to check."], ["Where."]), True),
        ],
    },
    "text": {
        "names": (["text_tool", "string_utility", "transform_text", "text_ops", "string_ops", "manipulate_string"],
                  ["word_tool", "letter_utility"]),
        "descriptions": (["String utilities: reverse, change case, count characters or words.",
                          "Apply a text operation to a string.",
                          "Small text helper for strings."],
                         ["Does simple things to a piece of text."]),
        "params": [
            ("text", "string", {}, (["text", "input_text", "string", "source"], ["phrase", "content_text"]),
             (["The text to work on.", "Input string."], ["The words to process."]), True),
            ("operation", "string", {"enum": TEXT_OPS}, (["operation", "op", "action", "mode"], ["transform", "task"]),
             (["What to do with the text.", "The operation."], ["Which change to apply."]), True),
        ],
    },
    "contact": {
        "names": (["find_contact", "lookup_contact", "get_contact", "contact_search", "address_book",
                   "people_lookup"], ["directory_query", "person_finder"]),
        "descriptions": (["Find a person in the address book: phone, email and home city.",
                          "Look up contact details by name.",
                          "Search contacts for a person."],
                         ["Returns how to reach someone and where they live."]),
        "params": [
            ("name", "string", {}, (["name", "person", "full_name", "contact_name"], ["who", "person_label"]),
             (["Full name of the person.", "The contact's name."], ["The person to find."]), True),
        ],
    },
}


class ToolVariant:
    """One concrete tool as a conversation shows it: its kind, its name, and the names of its parameters."""

    def __init__(self, kind, name, description, params):
        self.kind, self.name, self.description = kind, name, description
        self.params = params  # canonical key -> (shown name, type, extra, description, required)

    def key(self, canonical):
        return self.params[canonical][0]

    def spec(self):
        props, required = {}, []
        for canonical, (shown, typ, extra, desc, req) in self.params.items():
            props[shown] = {"type": typ, **extra, "description": desc}
            if req:
                required.append(shown)
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": {"type": "object", "properties": props,
                                                                "required": required}}}

    def arguments(self, canonical_args):
        """The call's arguments under this variant's parameter names, in the schema's order."""
        return {self.params[k][0]: canonical_args[k] for k in self.params if k in canonical_args}


def make_variant(kind, rng, unseen, canonical_bias=0.35):
    """A variant of `kind`: from the train pools, or (unseen) from the held-out pools only. In training the
    canonical (first) name and parameter names come up more often, so the names a newcomer will type work best."""
    spec = KINDS[kind]
    pick = 1 if unseen else 0

    def choose(pool):
        values = pool[pick]
        if not unseen and rng.random() < canonical_bias:
            return values[0]
        return rng.choice(values)

    params = {}
    for canonical, typ, extra, names, descs, req in spec["params"]:
        params[canonical] = (choose(names), typ, extra, choose(descs), req)
    return ToolVariant(kind, choose(spec["names"]), choose(spec["descriptions"]), params)


# Made-up variants (training only): a tool's name and parameter names drawn per conversation from word lists, so
# no name can be learned by heart and every call has to copy the names the tool list shows. The kind words keep a
# made-up name meaningful some of the time; the rest are plain nonsense ("amber_otter", "tool_17"), as real tool
# lists often are. Descriptions come from a kind's word list too, so matching a request to a tool rests on words
# rather than on three memorised sentences. (LOG.md 2026-12-04, seventh session.)
SYNTH_VERBS = ["get", "fetch", "find", "lookup", "check", "query", "read", "show", "tell", "run", "do", "make",
               "resolve", "report", "request", "ask", "load", "give", "pull", "see"]
SYNTH_WORDS = ["amber", "otter", "maple", "delta", "quartz", "nova", "pixel", "cobalt", "lumen", "ridge", "zephyr",
               "orbit", "tango", "ember", "falcon", "willow", "basil", "cedar", "harbor", "meadow", "onyx", "pebble",
               "saffron", "tundra", "violet", "walnut", "yonder", "zinc", "alpha", "bravo", "comet", "dune", "fjord",
               "glade", "hazel", "iris", "jade", "kelp", "lotus", "mango", "nectar", "opal", "prism", "quill", "raven",
               "sable", "thistle", "umber", "vortex", "wren", "xeno", "yarrow", "zest", "atlas", "beacon", "cinder"]
SYNTH_KIND = {
    "weather": (["weather", "sky", "forecast", "conditions", "climate", "rain"],
                ["the weather in a city", "current weather conditions for a city", "the sky and temperature of a city",
                 "today's forecast for a city", "weather: temperature, humidity and sky"]),
    "calculator": (["math", "calc", "arith", "sum", "numbers", "compute"],
                   ["an arithmetic expression exactly", "the exact value of a calculation",
                    "integer arithmetic such as 12 * 7", "the result of a math expression"]),
    "units": (["units", "measure", "metric", "convert", "length", "mass"],
              ["a measurement in another unit", "a value converted between units of length, mass or volume",
               "unit conversion of a quantity", "a quantity in a different unit"]),
    "currency": (["currency", "money", "fx", "exchange", "cash", "rates"],
                 ["an amount of money in another currency", "currency exchange at today's rates",
                  "money converted between currencies", "the value of a sum in a different currency"]),
    "add_days": (["date", "days", "calendar", "shift", "offset", "later"],
                 ["the date some days after or before a date", "a date moved by a number of days",
                  "date arithmetic: a start date plus days", "the calendar date a number of days away"]),
    "weekday": (["weekday", "day", "dow", "week", "dayname", "calendar"],
                ["the day of the week of a date", "which weekday a date falls on", "the weekday name of a date",
                 "the name of the day for a given date"]),
    "product": (["product", "item", "catalog", "shop", "store", "stock"],
                ["a product's price, stock and origin", "catalogue details of an item", "an item in the store database",
                 "what the shop has on a product"]),
    "time": (["time", "clock", "hour", "zone", "local", "tz"],
             ["the local time in a city", "what time it is in a city", "the clock and UTC offset of a city",
              "current time in a place"]),
    "text": (["text", "string", "words", "letters", "str", "chars"],
             ["a text operation on a string", "a string reversed, recased or counted", "simple changes to a text",
              "string utilities for a piece of text"]),
    "contact": (["contact", "person", "people", "phone", "directory", "address"],
                ["a person's phone, email and home city", "contact details of someone by name",
                 "a person in the address book", "how to reach a person"]),
}
SYNTH_DESC_VERBS = ["Returns", "Gives", "Looks up", "Finds", "Reports", "Tells", "Shows", "Computes"]


def synthetic_variant(kind, rng, forbidden=frozenset()):
    """A made-up variant of `kind` (training only): names from the word lists, never one in `forbidden` (the
    held-out pools). Types, enums and which parameters are required stay the kind's own."""
    kind_words, phrases = SYNTH_KIND[kind]

    def name(parts):
        while True:
            n = "_".join(parts())
            if n not in forbidden:
                return n

    def tool_parts():
        x = rng.random()
        if x < 0.4:
            return [rng.choice(SYNTH_VERBS), rng.choice(kind_words)]
        if x < 0.6:
            return [rng.choice(kind_words), rng.choice(SYNTH_WORDS)]
        if x < 0.8:
            return [rng.choice(SYNTH_WORDS), rng.choice(SYNTH_WORDS)]
        return [rng.choice(["tool", "fn", "api", "svc"]), str(rng.randint(1, 99))]

    spec = KINDS[kind]
    params, used = {}, set()
    for canonical, typ, extra, names, descs, req in spec["params"]:
        while True:
            x = rng.random()
            if x < 0.4:
                shown = rng.choice(names[0])  # a familiar parameter name under a made-up tool
            elif x < 0.7:
                shown = name(lambda: [rng.choice(SYNTH_WORDS)])
            elif x < 0.85:
                shown = name(lambda: [canonical.split("_")[0], rng.choice(SYNTH_WORDS)])
            else:
                shown = name(lambda: [rng.choice(["arg", "p", "x", "in"]) + str(rng.randint(1, 9))])
            if shown not in used and shown not in forbidden:
                used.add(shown)
                break
        params[canonical] = (shown, typ, extra, rng.choice(descs[0]), req)
    description = f"{rng.choice(SYNTH_DESC_VERBS)} {rng.choice(phrases)}."
    return ToolVariant(kind, name(tool_parts), description, params)


def canonical_variant(kind):
    """The variant with every first name: what the demo and the docs use."""
    spec = KINDS[kind]
    params = {c: (names[0][0], typ, extra, descs[0][0], req) for c, typ, extra, names, descs, req in spec["params"]}
    return ToolVariant(kind, spec["names"][0][0], spec["descriptions"][0][0], params)


def heldout_tokens():
    """Every name that only held-out tools use (the training corpus must never contain them as tool names)."""
    out = set()
    for spec in KINDS.values():
        out.update(spec["names"][1])
        for p in spec["params"]:
            out.update(p[3][1])
    return out


def check_pools():
    """Held-out pools must be disjoint from every train pool."""
    train = set()
    for spec in KINDS.values():
        train.update(spec["names"][0])
        for p in spec["params"]:
            train.update(p[3][0])
    clash = heldout_tokens() & train
    assert not clash, f"held-out tool names also in training pools: {clash}"


check_pools()
