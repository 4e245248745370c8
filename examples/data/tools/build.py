"""Build the tool-incremental example (examples/tools.yaml: tools learned in the weights; examples/tools-memory.yaml:
tools as memory documents): 20 invented tools in three stages (everyday, travel and home, work and information),
each with requests written for lifelong from templates and slot values, and the JSON call that serves each.
CC0.

    python examples/data/tools/build.py          # rewrites the jsonl files beside this file

stage<k>_tools.jsonl: the stage's tool definitions `{name, description, parameters}` (a memory stage's rows).
stage<k>_train.jsonl / stage<k>_eval.jsonl: `tool_call` rows `{prompt, tools, call}`, 10 training and 4 eval
requests per tool (eval requests are phrased in ways training never uses; no request repeats); `tools` holds
the called tool and two others of its stage. Deterministic (fixed seed)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
N_TRAIN, N_EVAL = 10, 4


def s(desc: str, **kw: Any) -> dict:
    return {"type": "string", "description": desc, **kw}


def i(desc: str, **kw: Any) -> dict:
    return {"type": "integer", "description": desc, **kw}


def n(desc: str) -> dict:
    return {"type": "number", "description": desc}


def tool(name: str, description: str, props: dict, required: list[str]) -> dict:
    return {"name": name, "description": description,
            "parameters": {"type": "object", "properties": props, "required": required}}


CITIES = ["Oslo", "Lima", "Cairo", "Tokyo", "Madrid", "Toronto", "Nairobi", "Berlin", "Sydney", "Dublin",
          "Seoul", "Lisbon", "Denver", "Mumbai", "Vienna", "Quito"]
ROOMS = ["kitchen", "bedroom", "living room", "office", "hallway", "bathroom", "garage", "basement"]
WORDS = ["serendipity", "ephemeral", "ubiquitous", "quixotic", "laconic", "gregarious", "meticulous", "pragmatic",
         "resilient", "candid", "verbose", "tenacious", "lucid", "whimsical"]
TOPICS = ["science", "sports", "business", "politics", "health", "technology", "climate", "travel", "music",
          "education", "space", "food", "art", "finance"]
DATES = ["2025-03-14", "2025-04-02", "2025-05-19", "2025-06-07", "2025-07-21", "2025-08-30", "2025-09-11",
         "2025-10-05", "2025-11-23", "2025-12-01", "2026-01-16", "2026-02-08", "2026-03-27", "2026-04-12"]
ARTISTS = ["Miles Davis", "Adele", "Bob Marley", "Nina Simone", "Daft Punk", "Bach", "Fela Kuti", "Bjork",
           "Johnny Cash", "Ella Fitzgerald", "Radiohead", "Shakira", "Queen", "Mozart"]
PEOPLE = ["ana@example.com", "li.wei@example.org", "sam@example.net", "omar@example.com", "eva@example.org",
          "raj@example.net", "kim@example.com", "joao@example.org", "nia@example.net", "tom@example.com",
          "lena@example.org", "ivan@example.net", "maya@example.com", "kofi@example.org"]
SUBJECTS = ["budget review", "team lunch", "project update", "holiday plans", "invoice", "travel booking",
            "weekly report", "new contract", "birthday party", "office move", "training day", "design draft",
            "quarterly goals", "client visit"]
CUISINES = ["Thai", "Italian", "Mexican", "Indian", "Japanese", "Greek", "Ethiopian", "Korean", "French",
            "Lebanese", "Peruvian", "Vietnamese", "Spanish", "Turkish"]
INGREDIENTS = ["lentils", "spinach", "mushrooms", "chickpeas", "salmon", "tofu", "eggplant", "pumpkin", "rice",
               "potatoes", "chicken", "beans", "cauliflower", "quinoa"]
SYMBOLS = ["AAPL", "MSFT", "TSLA", "AMZN", "NVDA", "IBM", "NFLX", "GOOG", "META", "INTC", "ORCL", "SAP", "ADBE",
           "UBER"]
CURRENCIES = ["USD", "EUR", "JPY", "GBP", "CHF", "CAD", "INR", "BRL"]
LANGUAGES = ["French", "German", "Spanish", "Japanese", "Swahili", "Italian", "Korean", "Portuguese"]
PHRASES = ["good morning", "where is the station", "thank you very much", "the bill please", "I am lost",
           "see you tomorrow", "how much is this", "happy birthday", "the door is open", "I love this city",
           "it is raining", "one coffee please", "nice to meet you", "the museum is closed"]
REMINDERS = ["call the dentist", "water the plants", "pay the rent", "buy milk", "renew my passport",
             "pick up the kids", "back up the laptop", "book a haircut", "send the report", "feed the cat",
             "return the library books", "charge the car", "order a gift", "check the tyres"]
UNITS = [("kilometers", "miles"), ("pounds", "kilograms"), ("liters", "gallons"), ("feet", "meters"),
         ("ounces", "grams"), ("inches", "centimeters")]


def pick(rng: random.Random, xs: list) -> Any:
    return rng.choice(xs)


# Each tool: its definition and a generator of (request, arguments) pairs from a random source; a generator
# gets `train` (True for training requests) to use its own phrasings for eval.
def weather(r: random.Random, train: bool) -> tuple[str, dict]:
    city, unit = pick(r, CITIES), r.choice([None, "celsius", "fahrenheit"])
    forms = ["What's the weather in {c}{u}?", "Is it cold in {c} right now{u}?", "Weather for {c}{u}, please."]
    alt = ["How warm is it in {c} today{u}?", "Tell me the current weather in {c}{u}."]
    text = pick(r, forms if train else alt).format(c=city, u=f" in {unit}" if unit else "")
    return text, {"city": city, **({"unit": unit} if unit else {})}


def timer(r: random.Random, train: bool) -> tuple[str, dict]:
    m, label = r.randint(2, 90), r.choice([None, "pasta", "tea", "laundry", "break", "bread"])
    forms = ["Set a timer for {m} minutes{l}.", "Start a {m} minute timer{l}.", "Timer: {m} minutes{l}."]
    alt = ["Can you time {m} minutes for me{l}?", "Count down {m} minutes{l}."]
    text = pick(r, forms if train else alt).format(m=m, l=f" called {label}" if label else "")
    return text, {"minutes": m, **({"label": label} if label else {})}


def currency(r: random.Random, train: bool) -> tuple[str, dict]:
    a, b = r.sample(CURRENCIES, 2)
    amount = r.choice([5, 20, 50, 75, 100, 250, 1000, 12.5, 99.99])
    forms = ["Convert {x} {a} to {b}.", "How much is {x} {a} in {b}?", "Change {x} {a} into {b}."]
    alt = ["What do {x} {a} come to in {b}?", "I have {x} {a}; what is that in {b}?"]
    return pick(r, forms if train else alt).format(x=amount, a=a, b=b), {"amount": amount, "from": a, "to": b}


def translate(r: random.Random, train: bool) -> tuple[str, dict]:
    p, lang = pick(r, PHRASES), pick(r, LANGUAGES)
    forms = ["Translate '{p}' into {l}.", "How do you say '{p}' in {l}?", "Put '{p}' in {l}."]
    alt = ["What is '{p}' in {l}?", "I need '{p}' translated to {l}."]
    return pick(r, forms if train else alt).format(p=p, l=lang), {"text": p, "target_language": lang}


def email(r: random.Random, train: bool) -> tuple[str, dict]:
    to, subj = pick(r, PEOPLE), pick(r, SUBJECTS)
    forms = ["Email {t} about the {s}.", "Send an email to {t} with the subject {s}.", "Write to {t}: {s}."]
    alt = ["Drop {t} a mail titled {s}.", "Mail {t} regarding the {s}."]
    return pick(r, forms if train else alt).format(t=to, s=subj), {"to": to, "subject": subj}


def reminder(r: random.Random, train: bool) -> tuple[str, dict]:
    text, date = pick(r, REMINDERS), pick(r, DATES)
    forms = ["Remind me to {t} on {d}.", "Set a reminder on {d} to {t}.", "On {d}, remind me to {t}."]
    alt = ["Don't let me forget to {t} on {d}.", "I must {t} on {d}; remind me."]
    return pick(r, forms if train else alt).format(t=text, d=date), {"text": text, "date": date}


def music(r: random.Random, train: bool) -> tuple[str, dict]:
    artist, shuffle = pick(r, ARTISTS), r.choice([None, True, False])
    tail = {None: "", True: " on shuffle", False: " in order, no shuffle"}[shuffle]
    forms = ["Play some {a}{s}.", "Put on {a}{s}.", "I want to hear {a}{s}."]
    alt = ["Could you play music by {a}{s}?", "Start {a}{s}."]
    args = {"artist": artist, **({"shuffle": shuffle} if shuffle is not None else {})}
    return pick(r, forms if train else alt).format(a=artist, s=tail), args


def flight(r: random.Random, train: bool) -> tuple[str, dict]:
    a, b = r.sample(CITIES, 2)
    d = pick(r, DATES)
    forms = ["Book a flight from {a} to {b} on {d}.", "Fly me from {a} to {b} on {d}.",
             "I need a flight {a} to {b}, {d}."]
    alt = ["Get me on a plane from {a} to {b} on {d}.", "Reserve a seat from {a} to {b} for {d}."]
    return pick(r, forms if train else alt).format(a=a, b=b, d=d), {"origin": a, "destination": b, "date": d}


def restaurant(r: random.Random, train: bool) -> tuple[str, dict]:
    c, k = pick(r, CITIES), pick(r, CUISINES)
    forms = ["Find a {k} restaurant in {c}.", "Where can I eat {k} food in {c}?", "Any good {k} places in {c}?"]
    alt = ["Recommend {k} food in {c}.", "Look for a {k} place to eat in {c}."]
    return pick(r, forms if train else alt).format(c=c, k=k), {"city": c, "cuisine": k}


def thermostat(r: random.Random, train: bool) -> tuple[str, dict]:
    t, room = r.choice([18, 19, 20, 21, 22, 23, 24, 19.5, 21.5]), r.choice([None] + ROOMS)
    forms = ["Set the thermostat to {t} degrees{r}.", "Heat{r} to {t} degrees.", "Make it {t} degrees{r}."]
    alt = ["Change the temperature{r} to {t}.", "I want {t} degrees{r}."]
    text = pick(r, forms if train else alt).format(t=t, r=f" in the {room}" if room else "")
    return text, {"temperature": t, **({"room": room} if room else {})}


def lights(r: random.Random, train: bool) -> tuple[str, dict]:
    room, b = pick(r, ROOMS), r.choice([None, 10, 25, 40, 50, 60, 75, 90, 100])
    forms = ["Turn on the lights in the {r}{b}.", "Lights on in the {r}{b}.", "Switch on the {r} lights{b}."]
    alt = ["Light up the {r}{b}.", "Can you put the {r} lights on{b}?"]
    text = pick(r, forms if train else alt).format(r=room, b=f" at {b} percent" if b else "")
    return text, {"room": room, **({"brightness": b} if b else {})}


def stock(r: random.Random, train: bool) -> tuple[str, dict]:
    sym = pick(r, SYMBOLS)
    forms = ["What's the price of {s} stock?", "How is {s} trading?", "Quote for {s}, please."]
    alt = ["Check the share price of {s}.", "Where does {s} stand today?"]
    return pick(r, forms if train else alt).format(s=sym), {"symbol": sym}


def tip(r: random.Random, train: bool) -> tuple[str, dict]:
    bill, pct = r.choice([18.4, 32, 45.5, 60, 87.25, 120, 24, 73.1]), r.choice([10, 12, 15, 18, 20, 25])
    forms = ["What's a {p} percent tip on {b}?", "Tip {p} percent on a bill of {b}.", "Work out a {p}% tip for {b}."]
    alt = ["How much should I leave at {p} percent of {b}?", "The bill is {b}; tip {p} percent."]
    return pick(r, forms if train else alt).format(b=bill, p=pct), {"bill": bill, "percent": pct}


def recipes(r: random.Random, train: bool) -> tuple[str, dict]:
    ing, mins = pick(r, INGREDIENTS), r.choice([None, 15, 20, 30, 45, 60])
    forms = ["Find recipes with {i}{m}.", "What can I cook with {i}{m}?", "Recipe ideas using {i}{m}."]
    alt = ["Show me dishes made from {i}{m}.", "Suggest something with {i}{m}."]
    text = pick(r, forms if train else alt).format(i=ing, m=f" in under {mins} minutes" if mins else "")
    return text, {"ingredient": ing, **({"max_minutes": mins} if mins else {})}


def meeting(r: random.Random, train: bool) -> tuple[str, dict]:
    title, d, mins = pick(r, SUBJECTS), pick(r, DATES), r.choice([15, 30, 45, 60, 90])
    forms = ["Schedule a {m} minute meeting on {d} about the {t}.", "Set up the {t} meeting on {d} for {m} minutes.",
             "Book {m} minutes on {d} for the {t}."]
    alt = ["Put a {m}-minute {t} meeting in the calendar on {d}.", "Plan the {t} on {d}, {m} minutes long."]
    return pick(r, forms if train else alt).format(t=title, d=d, m=mins), {
        "title": title, "date": d, "duration_minutes": mins}


def definition(r: random.Random, train: bool) -> tuple[str, dict]:
    w = pick(r, WORDS)
    forms = ["What does {w} mean?", "Define {w}.", "Give me the meaning of {w}."]
    alt = ["Look up the word {w}.", "I don't know the word {w}; explain it."]
    return pick(r, forms if train else alt).format(w=w), {"word": w}


def package(r: random.Random, train: bool) -> tuple[str, dict]:
    num = "".join(r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(2)) + str(r.randint(10**7, 10**8 - 1))
    forms = ["Where is my package {n}?", "Track parcel {n}.", "Status of shipment {n}?"]
    alt = ["Has {n} been delivered yet?", "Follow the delivery {n}."]
    return pick(r, forms if train else alt).format(n=num), {"tracking_number": num}


def news(r: random.Random, train: bool) -> tuple[str, dict]:
    topic, count = pick(r, TOPICS), r.choice([None, 3, 5, 10])
    forms = ["Show me the latest {t} news{c}.", "What's new in {t}{c}?", "{t} headlines{c}, please."]
    alt = ["Any {t} stories today{c}?", "Catch me up on {t}{c}."]
    text = pick(r, forms if train else alt).format(t=topic, c=f", top {count}" if count else "")
    return text[0].upper() + text[1:], {"topic": topic, **({"count": count} if count else {})}


def distance(r: random.Random, train: bool) -> tuple[str, dict]:
    a, b = r.sample(CITIES, 2)
    unit = r.choice(["km", "miles"])
    forms = ["How far is {a} from {b} in {u}?", "Distance from {a} to {b} in {u}.", "{a} to {b}: how many {u}?"]
    alt = ["Measure {a} to {b} in {u}.", "In {u}, how far apart are {a} and {b}?"]
    return pick(r, forms if train else alt).format(a=a, b=b, u=unit), {"origin": a, "destination": b, "unit": unit}


def units(r: random.Random, train: bool) -> tuple[str, dict]:
    (fr, to), v = pick(r, UNITS), r.choice([1, 2.5, 3, 10, 12, 42, 100, 0.5])
    if r.random() < 0.5:
        fr, to = to, fr
    forms = ["Convert {v} {f} to {t}.", "How many {t} is {v} {f}?", "{v} {f} in {t}?"]
    alt = ["Express {v} {f} in {t}.", "What are {v} {f} in {t}?"]
    return pick(r, forms if train else alt).format(v=v, f=fr, t=to), {"value": v, "from_unit": fr, "to_unit": to}


DATE = "a date as YYYY-MM-DD"
STAGES: list[list[tuple[dict, Any]]] = [
    [  # everyday
        (tool("get_weather", "Current weather of a city.",
              {"city": s("city name"), "unit": s("temperature unit", enum=["celsius", "fahrenheit"])}, ["city"]),
         weather),
        (tool("set_timer", "Start a countdown timer.",
              {"minutes": i("length in minutes", minimum=1), "label": s("name of the timer")}, ["minutes"]), timer),
        (tool("convert_currency", "Convert an amount of money between currencies.",
              {"amount": n("amount to convert"), "from": s("ISO code of the source currency"),
               "to": s("ISO code of the target currency")}, ["amount", "from", "to"]), currency),
        (tool("translate_text", "Translate a text into another language.",
              {"text": s("text to translate"), "target_language": s("language to translate into")},
              ["text", "target_language"]), translate),
        (tool("send_email", "Send an email.", {"to": s("recipient address"), "subject": s("subject line")},
              ["to", "subject"]), email),
        (tool("create_reminder", "Create a reminder for a day.", {"text": s("what to remember"), "date": s(DATE)},
              ["text", "date"]), reminder),
        (tool("play_music", "Play music by an artist.",
              {"artist": s("artist name"), "shuffle": {"type": "boolean", "description": "shuffle the tracks"}},
              ["artist"]), music),
    ],
    [  # travel and home
        (tool("book_flight", "Book a flight between two cities.",
              {"origin": s("departure city"), "destination": s("arrival city"), "date": s(DATE)},
              ["origin", "destination", "date"]), flight),
        (tool("find_restaurant", "Find restaurants by city and cuisine.",
              {"city": s("city name"), "cuisine": s("kind of food")}, ["city", "cuisine"]), restaurant),
        (tool("set_thermostat", "Set the heating to a temperature in degrees Celsius.",
              {"temperature": n("target temperature"), "room": s("room name")}, ["temperature"]), thermostat),
        (tool("turn_on_lights", "Turn on the lights of a room.",
              {"room": s("room name"), "brightness": i("percent of full brightness", minimum=1, maximum=100)},
              ["room"]), lights),
        (tool("get_stock_price", "Latest price of a stock.", {"symbol": s("ticker symbol")}, ["symbol"]), stock),
        (tool("calculate_tip", "Tip on a restaurant bill.",
              {"bill": n("bill amount"), "percent": i("tip in percent", minimum=0, maximum=100)},
              ["bill", "percent"]), tip),
        (tool("search_recipes", "Search recipes by ingredient.",
              {"ingredient": s("main ingredient"), "max_minutes": i("longest cooking time", minimum=1)},
              ["ingredient"]), recipes),
    ],
    [  # work and information
        (tool("schedule_meeting", "Put a meeting in the calendar.",
              {"title": s("meeting title"), "date": s(DATE), "duration_minutes": i("length in minutes", minimum=5)},
              ["title", "date", "duration_minutes"]), meeting),
        (tool("get_definition", "Dictionary definition of an English word.", {"word": s("the word")}, ["word"]),
         definition),
        (tool("track_package", "Delivery status of a parcel.", {"tracking_number": s("the tracking number")},
              ["tracking_number"]), package),
        (tool("get_news", "Latest news headlines on a topic.",
              {"topic": s("news topic"), "count": i("number of headlines", minimum=1, maximum=20)}, ["topic"]),
         news),
        (tool("calculate_distance", "Distance between two cities.",
              {"origin": s("first city"), "destination": s("second city"),
               "unit": s("unit of the answer", enum=["km", "miles"])}, ["origin", "destination", "unit"]), distance),
        (tool("convert_units", "Convert a quantity between units of measurement.",
              {"value": n("quantity"), "from_unit": s("unit of the quantity"), "to_unit": s("unit to convert to")},
              ["value", "from_unit", "to_unit"]), units),
    ],
]


def requests(make: Any, rng: random.Random, k: int, train: bool, seen: set[str]) -> list[tuple[str, dict]]:
    out: list[tuple[str, dict]] = []
    while len(out) < k:
        text, args = make(rng, train)
        if text not in seen:
            seen.add(text)
            out.append((text, args))
    return out


def main() -> None:
    rng = random.Random(17)
    for k, stage in enumerate(STAGES, 1):
        defs = [t for t, _ in stage]
        splits: dict[str, list[dict]] = {"train": [], "eval": []}
        for t, make in stage:
            seen: set[str] = set()
            for split, count in (("train", N_TRAIN), ("eval", N_EVAL)):
                for text, args in requests(make, rng, count, split == "train", seen):
                    others = rng.sample([d for d in defs if d["name"] != t["name"]], 2)
                    offered = sorted([t, *others], key=lambda d: d["name"])
                    call = {"name": t["name"], "arguments": args}
                    splits[split].append({"prompt": text, "tools": offered, "call": call})
        rng.shuffle(splits["train"])
        files = {f"stage{k}_tools.jsonl": defs, f"stage{k}_train.jsonl": splits["train"],
                 f"stage{k}_eval.jsonl": splits["eval"]}
        for name, rows in files.items():
            (HERE / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"stage {k}: {len(defs)} tools, {len(splits['train'])} train, {len(splits['eval'])} eval requests")


if __name__ == "__main__":
    main()
