"""Build the temporal-knowledge example (examples/temporal.yaml): a small encyclopedia in three snapshots (as of
September 2018, September 2021 and September 2024) and cloze probes of its facts labelled by how they moved
between snapshots (TemporalWiki / CKL: changed, unchanged, new). Written for lifelong from public facts (heads of
government, chief executives, champions, records, events); CC0.

    python examples/data/temporal/build.py          # rewrites corpus.jsonl and probes.jsonl beside this file

corpus.jsonl: one paragraph per article and snapshot, `{"time", "title", "text", "diff"}`; `diff` is true when
the article is new or one of its facts changed since the previous snapshot (TemporalWiki's diff set; every
article of the first snapshot). probes.jsonl: `{"prompt", "answer", "label", "outdated"?, "time"}` for the 2021
and 2024 snapshots, each against the snapshot before. Deterministic (no randomness)."""

from __future__ import annotations

import json
from pathlib import Path

TIMES = ("2018", "2021", "2024")
HERE = Path(__file__).parent

# Each fact: (cloze, objects as of 2018, 2021, 2024). An object is a string, a list of accepted strings (the
# first is the one the text states), or None while the fact does not exist yet. The article states
# "<cloze> <object>." for each fact it has at that time.
ARTICLES: list[tuple[str, str, list[tuple]]] = [
    ("United Kingdom", "The United Kingdom is a country in north-western Europe made up of England, Scotland, "
     "Wales and Northern Ireland.", [
        ("The prime minister of the United Kingdom is", "Theresa May", "Boris Johnson", "Keir Starmer"),
        ("The monarch of the United Kingdom is", *[["Queen Elizabeth II", "Elizabeth II"]] * 2,
         ["King Charles III", "Charles III"]),
        ("Queen Elizabeth II died in the year", None, None, "2022"),
    ]),
    ("United States", "The United States is a federal republic of fifty states in North America.", [
        ("The president of the United States is", "Donald Trump", "Joe Biden", "Joe Biden"),
        ("The vice president of the United States is", "Mike Pence", "Kamala Harris", "Kamala Harris"),
    ]),
    ("Japan", "Japan is an island country in East Asia whose capital is Tokyo.", [
        ("The prime minister of Japan is", "Shinzo Abe", "Yoshihide Suga", "Fumio Kishida"),
    ]),
    ("Germany", "Germany is a federal republic in central Europe whose capital is Berlin.", [
        ("The chancellor of Germany is", "Angela Merkel", "Angela Merkel", "Olaf Scholz"),
    ]),
    ("Canada", "Canada is a country in North America whose capital is Ottawa.", [
        ("The prime minister of Canada is", "Justin Trudeau", "Justin Trudeau", "Justin Trudeau"),
    ]),
    ("France", "France is a republic in western Europe whose capital is Paris.", [
        ("The president of France is", "Emmanuel Macron", "Emmanuel Macron", "Emmanuel Macron"),
    ]),
    ("Italy", "Italy is a republic in southern Europe whose capital is Rome.", [
        ("The prime minister of Italy is", "Giuseppe Conte", "Mario Draghi", "Giorgia Meloni"),
    ]),
    ("India", "India is a republic in South Asia whose capital is New Delhi.", [
        ("The prime minister of India is", "Narendra Modi", "Narendra Modi", "Narendra Modi"),
    ]),
    ("Brazil", "Brazil is the largest country in South America; its capital is Brasilia.", [
        ("The president of Brazil is", "Michel Temer", "Jair Bolsonaro",
         ["Luiz Inacio Lula da Silva", "Lula da Silva", "Lula"]),
    ]),
    ("Mexico", "Mexico is a federal republic in North America whose capital is Mexico City.", [
        ("The president of Mexico is", "Enrique Pena Nieto", *[["Andres Manuel Lopez Obrador", "Lopez Obrador"]] * 2),
    ]),
    ("New Zealand", "New Zealand is an island country in the south-western Pacific whose capital is Wellington.", [
        ("The prime minister of New Zealand is", "Jacinda Ardern", "Jacinda Ardern", "Christopher Luxon"),
    ]),
    ("Spain", "Spain is a kingdom in south-western Europe whose capital is Madrid.", [
        ("The prime minister of Spain is", "Pedro Sanchez", "Pedro Sanchez", "Pedro Sanchez"),
    ]),
    ("South Korea", "South Korea is a republic in East Asia whose capital is Seoul.", [
        ("The president of South Korea is", "Moon Jae-in", "Moon Jae-in", "Yoon Suk Yeol"),
    ]),
    ("Israel", "Israel is a country in the Middle East on the eastern shore of the Mediterranean Sea.", [
        ("The prime minister of Israel is", "Benjamin Netanyahu", "Naftali Bennett", "Benjamin Netanyahu"),
    ]),
    ("United Nations", "The United Nations is an organisation of countries founded in 1945 and based in New York.", [
        ("The secretary-general of the United Nations is", *["Antonio Guterres"] * 3),
    ]),
    ("Catholic Church", "The Catholic Church is the largest Christian church and is led from Vatican City.", [
        ("The head of the Catholic Church is", *[["Pope Francis", "Francis"]] * 3),
    ]),
    ("European Union", "The European Union is a political and economic union of European countries.", [
        ("The number of member states of the European Union is", "28", "27", "27"),
    ]),
    ("NATO", "NATO is a military alliance of countries of Europe and North America founded in 1949.", [
        ("The number of member countries of NATO is", "29", "30", "32"),
        ("The country that joined NATO in April 2023 is", None, None, "Finland"),
        ("The country that joined NATO in March 2024 is", None, None, "Sweden"),
    ]),
    ("Amazon", "Amazon is an American online retailer and cloud company founded in Seattle in 1994.", [
        ("The chief executive of Amazon is", "Jeff Bezos", "Andy Jassy", "Andy Jassy"),
    ]),
    ("Disney", "The Walt Disney Company is an American entertainment company based in Burbank, California.", [
        ("The chief executive of Disney is", "Bob Iger", "Bob Chapek", "Bob Iger"),
    ]),
    ("Boeing", "Boeing is an American maker of airliners, military aircraft and spacecraft.", [
        ("The chief executive of Boeing is", "Dennis Muilenburg", "Dave Calhoun", "Kelly Ortberg"),
    ]),
    ("IBM", "IBM is an American computing and consulting company founded in 1911.", [
        ("The chief executive of IBM is", "Ginni Rometty", "Arvind Krishna", "Arvind Krishna"),
    ]),
    ("Nike", "Nike is an American maker of sportswear and shoes based in Beaverton, Oregon.", [
        ("The chief executive of Nike is", "Mark Parker", "John Donahoe", "John Donahoe"),
    ]),
    ("Unilever", "Unilever is a British maker of food, cleaning and personal care products.", [
        ("The chief executive of Unilever is", "Paul Polman", "Alan Jope", "Hein Schumacher"),
    ]),
    ("Microsoft", "Microsoft is an American software company founded in 1975 by Bill Gates and Paul Allen.", [
        ("The chief executive of Microsoft is", *["Satya Nadella"] * 3),
    ]),
    ("Apple", "Apple is an American maker of phones and computers based in Cupertino, California.", [
        ("The chief executive of Apple is", *["Tim Cook"] * 3),
    ]),
    ("Google", "Google is an American technology company best known for its web search engine.", [
        ("The chief executive of Google is", *["Sundar Pichai"] * 3),
    ]),
    ("General Motors", "General Motors is an American car maker based in Detroit.", [
        ("The chief executive of General Motors is", *["Mary Barra"] * 3),
    ]),
    ("Tesla", "Tesla is an American maker of electric cars and batteries.", [
        ("The chief executive of Tesla is", *["Elon Musk"] * 3),
    ]),
    ("Walmart", "Walmart is an American chain of supermarkets and discount stores.", [
        ("The chief executive of Walmart is", *["Doug McMillon"] * 3),
    ]),
    ("FIFA World Cup", "The FIFA World Cup is the championship of men's national football teams, held every four "
     "years.", [
        ("The reigning FIFA World Cup champion is", "France", "France", "Argentina"),
        ("The 2022 FIFA World Cup was held in", None, None, "Qatar"),
    ]),
    ("Formula One", "Formula One is the highest class of single-seater motor racing.", [
        ("The reigning Formula One world champion is", "Lewis Hamilton", "Lewis Hamilton", "Max Verstappen"),
    ]),
    ("NBA", "The NBA is the professional basketball league of North America.", [
        ("The reigning NBA champion is", ["the Golden State Warriors", "Golden State Warriors"],
         ["the Milwaukee Bucks", "Milwaukee Bucks"], ["the Boston Celtics", "Boston Celtics"]),
    ]),
    ("UEFA Champions League", "The UEFA Champions League is the yearly competition of Europe's top football "
     "clubs.", [
        ("The reigning UEFA Champions League winner is", "Real Madrid", "Chelsea", "Real Madrid"),
    ]),
    ("Super Bowl", "The Super Bowl is the yearly championship game of the National Football League.", [
        ("The reigning Super Bowl champion is", ["the Philadelphia Eagles", "Philadelphia Eagles"],
         ["the Tampa Bay Buccaneers", "Tampa Bay Buccaneers"], ["the Kansas City Chiefs", "Kansas City Chiefs"]),
    ]),
    ("Tour de France", "The Tour de France is a three-week cycling race held every July.", [
        ("The most recent winner of the Tour de France is", "Geraint Thomas", *["Tadej Pogacar"] * 2),
    ]),
    ("Wimbledon", "The Wimbledon Championships are the oldest tennis tournament, played on grass in London.", [
        ("The most recent men's singles champion at Wimbledon is", "Novak Djokovic", "Novak Djokovic",
         "Carlos Alcaraz"),
    ]),
    ("Marathon", "The marathon is a long-distance running race of 42.195 kilometres.", [
        ("The men's marathon world record is held by", "Dennis Kimetto", "Eliud Kipchoge", "Kelvin Kiptum"),
        ("The women's marathon world record is held by", "Paula Radcliffe", "Brigid Kosgei", "Tigst Assefa"),
    ]),
    ("Pole vault", "The pole vault is an athletics event in which athletes clear a high bar with a long pole.", [
        ("The men's pole vault world record is held by", "Renaud Lavillenie",
         *[["Armand Duplantis", "Mondo Duplantis"]] * 2),
    ]),
    ("100 metres", "The 100 metres is the shortest common sprint race in athletics.", [
        ("The men's 100 metres world record is held by", *["Usain Bolt"] * 3),
    ]),
    ("Summer Olympics", "The Summer Olympic Games are a multi-sport event held every four years.", [
        ("The most recent Summer Olympics were held in", "Rio de Janeiro", "Tokyo", "Paris"),
    ]),
    ("Cricket World Cup", "The Cricket World Cup is the championship of one-day international cricket.", [
        ("The reigning Cricket World Cup champion is", "Australia", "England", "Australia"),
    ]),
    ("Rugby World Cup", "The Rugby World Cup is the championship of men's rugby union teams.", [
        ("The reigning Rugby World Cup champion is", "New Zealand", "South Africa", "South Africa"),
    ]),
    ("Tallest buildings", "Skyscrapers have grown taller since the first ones were built in Chicago.", [
        ("The tallest building in the world is", *[["the Burj Khalifa", "Burj Khalifa"]] * 3),
    ]),
    ("YouTube", "YouTube is a video-sharing website owned by Google.", [
        ("The most-subscribed YouTube channel is", "PewDiePie", "T-Series", "MrBeast"),
    ]),
    ("World population", "China and India are the two countries with the most people.", [
        ("The most populous country in the world is", "China", "China", "India"),
    ]),
    ("Suez Canal", "The Suez Canal is a waterway in Egypt that joins the Mediterranean Sea and the Red Sea.", [
        ("The container ship that blocked the Suez Canal in March 2021 is the", None, "Ever Given", "Ever Given"),
    ]),
    ("Notre-Dame de Paris", "Notre-Dame de Paris is a medieval Catholic cathedral in Paris.", [
        ("The roof and spire of Notre-Dame de Paris burned in the year", None, "2019", "2019"),
    ]),
    ("Mars 2020", "Mars 2020 is a NASA mission to study the planet Mars.", [
        ("The NASA rover that landed in Jezero crater in 2021 is named", None, "Perseverance", "Perseverance"),
        ("The first helicopter to fly on another planet is named", None, "Ingenuity", "Ingenuity"),
    ]),
    ("Brexit", "Brexit is the withdrawal of the United Kingdom from the European Union.", [
        ("The United Kingdom left the European Union in the year", None, "2020", "2020"),
    ]),
    ("Black hole image", "The Event Horizon Telescope is a network of radio telescopes around the world.", [
        ("The first image of a black hole shows the black hole at the centre of the galaxy", None,
         ["M87", "Messier 87"], ["M87", "Messier 87"]),
    ]),
    ("COVID-19", "COVID-19 is a contagious disease caused by the coronavirus SARS-CoV-2.", [
        ("The World Health Organization declared COVID-19 a pandemic in the year", None, "2020", "2020"),
        ("The first COVID-19 vaccine approved in the United Kingdom was made by Pfizer and", None, "BioNTech",
         "BioNTech"),
    ]),
    ("Crew Dragon", "Crew Dragon is a space capsule built by SpaceX to carry astronauts.", [
        ("The first crewed flight of Crew Dragon, in May 2020, was named", None, "Demo-2", "Demo-2"),
    ]),
    ("ChatGPT", "ChatGPT is a chatbot built on a large language model.", [
        ("The chatbot that OpenAI released in November 2022 is called", None, None, "ChatGPT"),
    ]),
    ("James Webb Space Telescope", "The James Webb Space Telescope observes the universe in infrared light.", [
        ("The space telescope launched in December 2021 as the successor of Hubble is the", None, None,
         ["James Webb Space Telescope", "James Webb"]),
    ]),
    ("Chandrayaan-3", "Chandrayaan-3 is a lunar mission of the Indian Space Research Organisation.", [
        ("The Indian mission that landed near the south pole of the Moon in August 2023 is", None, None,
         "Chandrayaan-3"),
    ]),
    ("Twitter", "Twitter is a social network for short public messages, founded in 2006.", [
        ("In July 2023 Twitter was renamed", None, None, "X"),
    ]),
    ("DART", "DART was a NASA mission to test whether a spacecraft can push an asteroid off course.", [
        ("The asteroid moon that the DART spacecraft struck in September 2022 is", None, None, "Dimorphos"),
    ]),
]


def accepted(obj: str | list[str] | None) -> list[str]:
    return [] if obj is None else obj if isinstance(obj, list) else [obj]


def build() -> tuple[list[dict], list[dict]]:
    corpus, probes = [], []
    for t, time in enumerate(TIMES):
        for title, intro, facts in ARTICLES:
            now = [(cloze, accepted(objs[t])) for cloze, *objs in facts if objs[t] is not None]
            if not now:
                continue  # the article does not exist yet
            moved = t == 0 or any(accepted(objs[t]) != accepted(objs[t - 1]) for _, *objs in facts)
            text = " ".join([intro] + [f"{cloze} {objs[0]}." for cloze, objs in now])
            corpus.append({"time": time, "title": title, "text": text, "diff": moved})
            if t == 0:
                continue
            for cloze, *objs in facts:
                cur, old = accepted(objs[t]), accepted(objs[t - 1])
                if not cur:
                    continue
                row: dict = {"prompt": cloze, "answer": cur if len(cur) > 1 else cur[0]}
                if not old:
                    row["label"] = "new"
                elif cur == old:
                    row["label"] = "unchanged"
                else:
                    row["label"], row["outdated"] = "changed", old if len(old) > 1 else old[0]
                probes.append({**row, "time": time})
    return corpus, probes


def main() -> None:
    corpus, probes = build()
    for name, rows in (("corpus.jsonl", corpus), ("probes.jsonl", probes)):
        (HERE / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    counts: dict[tuple[str, str], int] = {}
    for p in probes:
        counts[(p["time"], p["label"])] = counts.get((p["time"], p["label"]), 0) + 1
    diffs = {t: sum(1 for r in corpus if r["time"] == t and r["diff"]) for t in TIMES}
    print(f"{len(corpus)} paragraphs (diff per snapshot: {diffs}); probes {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    main()
