"""The small world the shipped model is trained on: entity tables, the tools' real implementations, and the
train / held-out split of every entity kind.

Everything is drawn from one seeded `random.Random`, so the world is the same on every machine. Tables that a
tool reads (weather, local times, the product catalogue, contacts) are *not* fixed facts the model should
memorise: each conversation draws its own snapshot (the weather changes daily, stock changes hourly), so the
model can only answer by reading the tool result it was given. The fact table (capitals) is the one thing the
model is meant to know by heart, and it must say "I don't know" for countries outside it.
"""
import datetime
import random
import zlib

# ----------------------------------------------------------------------------------------------- entities --
# Multi-word names are written with underscores in the string and split on spaces.
CITIES = [c.replace("_", " ") for c in (
    "Paris London Tokyo Berlin Madrid Rome Lisbon Vienna Prague Warsaw Oslo Stockholm Helsinki Copenhagen Dublin "
    "Amsterdam Brussels Zurich Geneva Athens Istanbul Cairo Nairobi Lagos Accra Casablanca Tunis Dakar Johannesburg "
    "Cape_Town Mumbai Delhi Bangalore Chennai Kolkata Karachi Dhaka Bangkok Hanoi Manila Jakarta Singapore Seoul "
    "Busan Osaka Kyoto Beijing Shanghai Shenzhen Hangzhou Taipei Sydney Melbourne Perth Auckland Wellington Toronto "
    "Montreal Vancouver Chicago Boston Seattle Denver Houston Dallas Miami Atlanta Phoenix Portland Austin Detroit "
    "Mexico_City Bogota Lima Santiago Quito Caracas Havana Panama_City Montevideo Asuncion La_Paz Brasilia Recife "
    "Salvador Porto Seville Valencia Bilbao Lyon Marseille Nice Bordeaux Toulouse Munich Hamburg Cologne Frankfurt "
    "Leipzig Dresden Milan Naples Turin Florence Venice Bologna Krakow Gdansk Budapest Bucharest Sofia Belgrade "
    "Zagreb Ljubljana Riga Tallinn Vilnius Minsk Kyiv Tbilisi Yerevan Baku Tehran Doha Dubai Muscat Riyadh Amman "
    "Beirut Tashkent Almaty Ulaanbaatar Kathmandu Colombo Hobart Darwin Reykjavik Bergen Malmo Aarhus "
    "Tampere Antwerp Rotterdam Utrecht Basel Salzburg Graz Innsbruck Palermo Genoa Granada Malaga Cordoba Nantes "
    "Lille Rennes Dijon Nuremberg Stuttgart Bremen Hanover Glasgow Edinburgh Cardiff Belfast Leeds Manchester "
    "Liverpool Bristol York Oxford Cambridge"
).split()]

CONDITIONS = ["sunny", "cloudy", "rainy", "snowy", "windy", "foggy", "stormy", "clear", "partly cloudy", "drizzly"]

# UTC offsets in minutes for the time-zone tool (a plausible table, not a claim about the real cities).
OFFSETS = [-600, -480, -420, -360, -300, -240, -180, 0, 60, 120, 180, 210, 240, 270, 300, 330, 345, 360, 420, 480,
           540, 570, 600, 720]

FIRST_NAMES = (
    "Maria Jose Anna Luis Sofia Mateo Emma Noah Olivia Liam Ava Lucas Mia Elena Ivan Yuki Hana Kenji Aiko Chen Wei "
    "Li Mei Arjun Priya Ravi Anika Omar Layla Amir Fatima Kwame Ama Kofi Zara Lena Jonas Finn Nora Ines Tomas Clara "
    "Hugo Alma Felix Ida Oscar Vera Emil Freya Leon Greta Paul Rosa Diego Lucia Pablo Carmen Marco Giulia Nina Sven "
    "Astrid Nils Ingrid Pieter Sanne Daan Eva Jan Marta Piotr Ola Karel Petra Dana Radu Ioana Nikos Eleni Ahmet Elif "
    "Tariq Noor Sipho Thandi Amara Chidi Nia Kai Leilani Mateus Beatriz Rafael Julia Tiago Carla Sergio Lara"
).split()
LAST_NAMES = (
    "Silva Santos Garcia Lopez Martin Muller Schmidt Rossi Bianchi Dubois Moreau Novak Kowalski Nielsen Hansen "
    "Johansson Virtanen Tanaka Sato Suzuki Kim Park Lee Wang Zhang Liu Chen Patel Sharma Gupta Khan Ali Hassan "
    "Mensah Okafor Diallo Ndlovu Smith Jones Brown Taylor Walker Young King Wright Scott Green Baker Adams Nelson "
    "Hill Campbell Mitchell Roberts Carter Phillips Evans Turner Torres Parker Collins Edwards Stewart Morris Murphy "
    "Cook Rogers Morgan Cooper Peterson Bailey Reed Kelly Howard Ward Cox Diaz Richardson Wood Watson Brooks Bennett"
).split()

ADJECTIVES = ("blue red green black white silver golden steel wooden glass copper bamboo ceramic compact deluxe "
              "classic smart portable heavy light tiny giant velvet leather cotton linen marble granite crystal "
              "rustic modern vintage solar electric acoustic wireless folding nordic alpine coastal urban").split()
NOUNS = ("kettle lamp chair table backpack umbrella teapot mug notebook pen clock radio speaker headphones blanket "
         "pillow vase mirror bicycle helmet jacket scarf boots sneakers toaster blender skillet wok knife tent "
         "lantern compass telescope camera tripod keyboard monitor router charger drone guitar violin drum "
         "easel brush puzzle kite sled").split()

CURRENCIES = {  # units of the currency per 1 USD: the exchange table the currency tool uses
    "USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.0, "CHF": 0.88, "CAD": 1.36, "AUD": 1.52, "CNY": 7.2,
    "INR": 83.0, "BRL": 5.0, "MXN": 17.0, "SEK": 10.5, "NOK": 10.6, "DKK": 6.9, "PLN": 4.0, "KRW": 1330.0,
    "SGD": 1.34, "ZAR": 18.5, "TRY": 32.0, "NZD": 1.64,
}
CURRENCY_NAMES = {
    "USD": "US dollars", "EUR": "euros", "GBP": "British pounds", "JPY": "Japanese yen", "CHF": "Swiss francs",
    "CAD": "Canadian dollars", "AUD": "Australian dollars", "CNY": "Chinese yuan", "INR": "Indian rupees",
    "BRL": "Brazilian reais", "MXN": "Mexican pesos", "SEK": "Swedish kronor", "NOK": "Norwegian kroner",
    "DKK": "Danish kroner", "PLN": "Polish zloty", "KRW": "South Korean won", "SGD": "Singapore dollars",
    "ZAR": "South African rand", "TRY": "Turkish lira", "NZD": "New Zealand dollars",
}

# Unit conversions: (from, to) -> factor, or a function for temperatures.
UNITS = {
    ("km", "miles"): 0.621371, ("miles", "km"): 1.609344, ("kg", "lb"): 2.204623, ("lb", "kg"): 0.453592,
    ("m", "ft"): 3.280840, ("ft", "m"): 0.3048, ("l", "gal"): 0.264172, ("gal", "l"): 3.785412,
    ("cm", "in"): 0.393701, ("in", "cm"): 2.54, ("g", "oz"): 0.035274, ("oz", "g"): 28.349523,
    ("celsius", "fahrenheit"): None, ("fahrenheit", "celsius"): None,
}
UNIT_WORDS = {"km": "kilometers", "miles": "miles", "kg": "kilograms", "lb": "pounds", "m": "meters",
              "ft": "feet", "l": "liters", "gal": "gallons", "cm": "centimeters", "in": "inches", "g": "grams",
              "oz": "ounces", "celsius": "degrees Celsius", "fahrenheit": "degrees Fahrenheit"}

# The fact table the model learns by heart (real capitals), and countries it must say it does not know.
CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Austria": "Vienna", "Poland": "Warsaw", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Denmark": "Copenhagen", "Ireland": "Dublin", "Greece": "Athens", "Egypt": "Cairo", "Kenya": "Nairobi",
    "Ghana": "Accra", "Japan": "Tokyo", "South Korea": "Seoul", "Thailand": "Bangkok", "Vietnam": "Hanoi",
    "Indonesia": "Jakarta", "Philippines": "Manila", "India": "New Delhi", "China": "Beijing",
    "Australia": "Canberra", "Canada": "Ottawa", "Mexico": "Mexico City", "Brazil": "Brasilia", "Peru": "Lima",
    "Chile": "Santiago", "Argentina": "Buenos Aires", "Colombia": "Bogota", "Cuba": "Havana",
    "Hungary": "Budapest", "Romania": "Bucharest", "Bulgaria": "Sofia", "Serbia": "Belgrade", "Croatia": "Zagreb",
    "Latvia": "Riga", "Estonia": "Tallinn", "Lithuania": "Vilnius", "Georgia": "Tbilisi", "Armenia": "Yerevan",
    "Iceland": "Reykjavik", "Nepal": "Kathmandu", "Mongolia": "Ulaanbaatar", "Qatar": "Doha",
    "Morocco": "Rabat", "Tunisia": "Tunis", "Senegal": "Dakar", "Nigeria": "Abuja", "Turkey": "Ankara",
    "Switzerland": "Bern", "Netherlands": "Amsterdam", "Belgium": "Brussels", "Czechia": "Prague",
    "Slovenia": "Ljubljana", "Uruguay": "Montevideo", "Ecuador": "Quito", "New Zealand": "Wellington",
}
UNKNOWN_COUNTRIES = ("Bhutan Laos Malawi Zambia Namibia Botswana Eritrea Djibouti Comoros Vanuatu Tuvalu Nauru "
                     "Palau Kiribati Tonga Samoa Fiji Belize Guyana Suriname Paraguay Bolivia Honduras Nicaragua "
                     "Moldova Albania Montenegro Andorra Liechtenstein Luxembourg Malta Cyprus Oman Yemen "
                     "Kyrgyzstan Tajikistan Turkmenistan Brunei").split()

# Words for the string tool.
TEXT_WORDS = ("banana lantern river window orange garden pencil rocket silver thunder coffee mountain pillow "
              "dragon castle forest planet harbor violin meadow candle desert winter summer autumn spring island "
              "marble puzzle velvet shadow sunrise tiger falcon dolphin engine bridge camera ladder mirror "
              "basket cactus comet ember glacier hammock jigsaw kayak lemon maple nectar oasis pepper quartz "
              "raven saddle tundra umbrella walnut yarn zephyr anchor bamboo cobalt dune echo fable gravel "
              "hazel ivory jungle kettle lagoon mango nomad orbit pebble quiver ripple sparrow timber "
              "hello world data model token python kernel").split()

SYLLABLES = ("ba be bi bo da de di do ka ke ki ko la le li lo lu ma me mi mo na ne ni no ra re ri ro sa se si so "
             "ta te ti to va ve vi vo za ze zo bar dan kel mor nor ril sen tal vin dor fen gar hal jor kir lin mar "
             "nev par quin ros tor ul vak wen yor zel ash em ir os").split()

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


class Split:
    """One kind of entity divided into train and held-out values (held-out values never appear in training)."""

    def __init__(self, values, heldout_fraction, rng):
        values = list(values)
        rng.shuffle(values)
        n = max(1, int(round(len(values) * heldout_fraction)))
        self.heldout, self.train = values[:n], values[n:]

    def pick(self, rng, heldout):
        return rng.choice(self.heldout if heldout else self.train)


class World:
    def __init__(self, seed=20261202):
        rng = random.Random(seed)
        self.cities = Split(CITIES, 0.2, rng)
        people = [f"{f} {l}" for f in FIRST_NAMES for l in LAST_NAMES]
        rng.shuffle(people)
        self.people = Split(people[:3000], 0.2, rng)
        products = [f"{a} {n}" for a in ADJECTIVES for n in NOUNS]
        self.products = Split(products, 0.2, rng)
        unknown = list(UNKNOWN_COUNTRIES)
        rng.shuffle(unknown)
        self.unknown_countries = Split(unknown, 0.3, rng)
        self.words = Split(TEXT_WORDS, 0.2, rng)
        # Currencies and units are closed sets the tools define: the held-out split shares them, but draws
        # unseen amounts and phrasings.
        self.city_offset = {c: rng.choice(OFFSETS) for c in CITIES}
        # Words of held-out values: a made-up name (fictional_name) never equals one of them.
        self.heldout_words = {w.lower() for v in (self.cities.heldout + self.people.heldout + self.products.heldout
                                                  + self.words.heldout + self.unknown_countries.heldout)
                              for w in v.split()}

    def offset_of(self, city):
        """The time-zone tool's UTC offset of a city: the table's for real cities, a fixed one per made-up name."""
        if city in self.city_offset:
            return self.city_offset[city]
        return OFFSETS[zlib.crc32(city.encode("utf-8")) % len(OFFSETS)]

    def fictional_name(self, rng, syllables=(2, 3)):
        """A made-up capitalised name ("Velmorin"): training draws many of these besides the real tables, so the
        only way to get a name right is to copy it from the conversation, never to recall it."""
        while True:
            name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(*syllables))).capitalize()
            if name.lower() not in self.heldout_words and name not in CITIES:
                return name

    # ------------------------------------------------------------------------------ per-conversation draws --
    @staticmethod
    def weather_today(rng, city):
        return {"city": city, "condition": rng.choice(CONDITIONS), "temperature_c": rng.randint(-12, 38),
                "humidity": rng.randrange(20, 96, 5)}

    @staticmethod
    def product_record(rng, name, cities):
        price = round(rng.randint(300, 49999) / 100, 2)
        return {"name": name, "price": price, "currency": "USD", "in_stock": rng.randint(0, 250),
                "made_in": cities}

    @staticmethod
    def contact_record(rng, name, city):
        first, last = name.split(" ", 1)
        return {"name": name, "phone": f"+{rng.randint(1, 99)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
                "email": f"{first.lower()}.{last.lower()}@example.com", "city": city}

    @staticmethod
    def random_date(rng):
        d = datetime.date(2020, 1, 1) + datetime.timedelta(days=rng.randrange(0, 365 * 12))
        return d.isoformat()


# ----------------------------------------------------------------------------- tool implementations (real) --
def fmt_number(x):
    """A number as the tools print it: integers without a fraction, others rounded to 2 decimals."""
    if isinstance(x, int):
        return x
    r = round(x, 2)
    return int(r) if r == int(r) else r


def convert_units(value, from_unit, to_unit):
    if (from_unit, to_unit) not in UNITS:
        return {"error": f"cannot convert {from_unit} to {to_unit}"}
    if from_unit == "celsius":
        out = value * 9 / 5 + 32
    elif from_unit == "fahrenheit":
        out = (value - 32) * 5 / 9
    else:
        out = value * UNITS[(from_unit, to_unit)]
    return {"value": fmt_number(out), "unit": to_unit}


def convert_currency(amount, from_currency, to_currency):
    if from_currency not in CURRENCIES or to_currency not in CURRENCIES:
        return {"error": "unknown currency"}
    out = amount / CURRENCIES[from_currency] * CURRENCIES[to_currency]
    return {"amount": fmt_number(out), "currency": to_currency}


def calculate(expression):
    """Exact integer arithmetic on 'a op b' (op one of + - * /, division only when exact)."""
    a, op, b = expression.split(" ")
    a, b = int(a), int(b)
    if op == "+":
        return {"result": a + b}
    if op == "-":
        return {"result": a - b}
    if op == "*":
        return {"result": a * b}
    if op == "/" and b != 0 and a % b == 0:
        return {"result": a // b}
    return {"error": "not an exact integer division"}


def add_days(date, days):
    d = datetime.date.fromisoformat(date) + datetime.timedelta(days=days)
    return {"date": d.isoformat(), "weekday": WEEKDAYS[d.weekday()]}


def weekday_of(date):
    d = datetime.date.fromisoformat(date)
    return {"date": date, "weekday": WEEKDAYS[d.weekday()]}


def text_tool(text, operation):
    if operation == "reverse":
        return {"result": text[::-1]}
    if operation == "uppercase":
        return {"result": text.upper()}
    if operation == "lowercase":
        return {"result": text.lower()}
    if operation == "length":
        return {"result": len(text)}
    if operation == "word_count":
        return {"result": len(text.split())}
    return {"error": f"unknown operation {operation}"}


def local_time(rng, city, offset_minutes):
    h, m = rng.randrange(24), rng.randrange(60)
    sign = "+" if offset_minutes >= 0 else "-"
    o = abs(offset_minutes)
    return {"city": city, "time": f"{h:02d}:{m:02d}", "utc_offset": f"{sign}{o // 60:02d}:{o % 60:02d}"}
