#!/usr/bin/env python3
"""Build the continual relation-extraction stream of examples/relation.yaml: sentences stating well-known public
facts (capitals, rivers, landmarks; books, companies, music), one relation per sentence, written for lifelong
(CC0; see ../README.md). Standard library only, deterministic (fixed seed), safe to re-run; ``--check`` exits 1
if the committed files differ.

Stage 1 (geography) has the relations `capital of` (city -> country), `flows through` (river -> country) and
`located in` (landmark -> city); stage 2 (culture and business) `written by` (work -> author), `founded by`
(company -> founder) and `composed by` (music -> composer). Every fact is used once: per relation 50 facts train
and 13 or 14 evaluate (150 train, 40 eval per stage), each sentence from one of four templates per relation, so
eval facts are never seen in training. Rows: ``{"text", "head", "tail", "relation"}`` (the `relation` format).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

SEED = 7
HERE = os.path.dirname(os.path.abspath(__file__))

# (head, tail) facts per relation; a head written with its article ("the Danube") keeps it in the sentence and
# drops it in the row's `head`.
# fmt: off
FACTS: dict[str, list[tuple[str, str]]] = {
    "capital of": [
        ("Paris", "France"), ("Berlin", "Germany"), ("Madrid", "Spain"), ("Rome", "Italy"), ("Lisbon", "Portugal"),
        ("Vienna", "Austria"), ("Bern", "Switzerland"), ("Brussels", "Belgium"), ("Amsterdam", "the Netherlands"),
        ("Copenhagen", "Denmark"), ("Oslo", "Norway"), ("Stockholm", "Sweden"), ("Helsinki", "Finland"),
        ("Dublin", "Ireland"), ("London", "the United Kingdom"), ("Warsaw", "Poland"), ("Prague", "the Czech Republic"),
        ("Budapest", "Hungary"), ("Bucharest", "Romania"), ("Sofia", "Bulgaria"), ("Athens", "Greece"),
        ("Ankara", "Turkey"), ("Moscow", "Russia"), ("Kyiv", "Ukraine"), ("Vilnius", "Lithuania"), ("Riga", "Latvia"),
        ("Tallinn", "Estonia"), ("Reykjavik", "Iceland"), ("Belgrade", "Serbia"), ("Zagreb", "Croatia"),
        ("Ljubljana", "Slovenia"), ("Bratislava", "Slovakia"), ("Tirana", "Albania"), ("Cairo", "Egypt"),
        ("Nairobi", "Kenya"), ("Accra", "Ghana"), ("Abuja", "Nigeria"), ("Dakar", "Senegal"), ("Rabat", "Morocco"),
        ("Tunis", "Tunisia"), ("Addis Ababa", "Ethiopia"), ("Kampala", "Uganda"), ("Lusaka", "Zambia"),
        ("Ottawa", "Canada"), ("Mexico City", "Mexico"), ("Havana", "Cuba"), ("Bogota", "Colombia"), ("Lima", "Peru"),
        ("Santiago", "Chile"), ("Buenos Aires", "Argentina"), ("Brasilia", "Brazil"), ("Caracas", "Venezuela"),
        ("Quito", "Ecuador"), ("Montevideo", "Uruguay"), ("Tokyo", "Japan"), ("Beijing", "China"),
        ("Seoul", "South Korea"), ("New Delhi", "India"), ("Bangkok", "Thailand"), ("Hanoi", "Vietnam"),
        ("Canberra", "Australia"), ("Wellington", "New Zealand"), ("Tehran", "Iran"), ("Manila", "the Philippines"),
    ],
    "flows through": [
        ("the Danube", "Austria"), ("the Danube", "Hungary"), ("the Danube", "Serbia"), ("the Danube", "Slovakia"),
        ("the Danube", "Germany"), ("the Rhine", "Germany"), ("the Rhine", "Switzerland"),
        ("the Rhine", "the Netherlands"), ("the Seine", "France"), ("the Loire", "France"), ("the Rhone", "France"),
        ("the Rhone", "Switzerland"), ("the Thames", "England"), ("the Severn", "Wales"), ("the Elbe", "Germany"),
        ("the Elbe", "the Czech Republic"), ("the Vltava", "the Czech Republic"), ("the Oder", "Poland"),
        ("the Vistula", "Poland"), ("the Po", "Italy"), ("the Tiber", "Italy"), ("the Arno", "Italy"),
        ("the Ebro", "Spain"), ("the Tagus", "Spain"), ("the Tagus", "Portugal"), ("the Douro", "Portugal"),
        ("the Volga", "Russia"), ("the Dnieper", "Ukraine"), ("the Dnieper", "Belarus"), ("the Nile", "Egypt"),
        ("the Nile", "Sudan"), ("the Nile", "Uganda"), ("the Niger", "Mali"), ("the Niger", "Nigeria"),
        ("the Zambezi", "Zambia"), ("the Zambezi", "Mozambique"), ("the Amazon", "Brazil"), ("the Amazon", "Peru"),
        ("the Orinoco", "Venezuela"), ("the Parana", "Argentina"), ("the Mississippi", "the United States"),
        ("the Missouri", "the United States"), ("the Yukon", "Canada"), ("the Fraser", "Canada"),
        ("the Mackenzie", "Canada"), ("the Ganges", "India"), ("the Ganges", "Bangladesh"), ("the Indus", "Pakistan"),
        ("the Brahmaputra", "India"), ("the Yangtze", "China"), ("the Mekong", "Laos"), ("the Mekong", "Cambodia"),
        ("the Mekong", "Vietnam"), ("the Irrawaddy", "Myanmar"), ("the Tigris", "Iraq"), ("the Euphrates", "Syria"),
        ("the Euphrates", "Iraq"), ("the Murray", "Australia"), ("the Shannon", "Ireland"), ("the Tay", "Scotland"),
        ("the Glomma", "Norway"), ("the Daugava", "Latvia"), ("the Neman", "Lithuania"),
    ],
    "located in": [
        ("the Eiffel Tower", "Paris"), ("the Colosseum", "Rome"), ("Big Ben", "London"),
        ("the Brandenburg Gate", "Berlin"), ("the Sagrada Familia", "Barcelona"), ("the Acropolis", "Athens"),
        ("the Hagia Sophia", "Istanbul"), ("the Kremlin", "Moscow"), ("the Louvre", "Paris"), ("the Prado", "Madrid"),
        ("the Uffizi", "Florence"), ("the Rijksmuseum", "Amsterdam"), ("the Charles Bridge", "Prague"),
        ("Tower Bridge", "London"), ("the Statue of Liberty", "New York"), ("the Golden Gate Bridge", "San Francisco"),
        ("the Empire State Building", "New York"), ("the Space Needle", "Seattle"), ("the CN Tower", "Toronto"),
        ("the Sydney Opera House", "Sydney"), ("the Burj Khalifa", "Dubai"), ("the Taj Mahal", "Agra"),
        ("the Forbidden City", "Beijing"), ("the Petronas Towers", "Kuala Lumpur"), ("Tokyo Tower", "Tokyo"),
        ("the Alhambra", "Granada"), ("the Leaning Tower", "Pisa"), ("the Doge's Palace", "Venice"),
        ("the Atomium", "Brussels"), ("the Vasa Museum", "Stockholm"), ("Schonbrunn Palace", "Vienna"),
        ("Buckingham Palace", "London"), ("Westminster Abbey", "London"), ("the Arc de Triomphe", "Paris"),
        ("the Trevi Fountain", "Rome"), ("the Pantheon", "Rome"), ("the Reichstag building", "Berlin"),
        ("the Parthenon", "Athens"), ("the Blue Mosque", "Istanbul"), ("Topkapi Palace", "Istanbul"),
        ("the Hermitage Museum", "Saint Petersburg"), ("Saint Basil's Cathedral", "Moscow"),
        ("Wawel Castle", "Krakow"), ("Prague Castle", "Prague"), ("the Guggenheim Museum Bilbao", "Bilbao"),
        ("Belem Tower", "Lisbon"), ("Edinburgh Castle", "Edinburgh"), ("the British Museum", "London"),
        ("the Metropolitan Museum of Art", "New York"), ("the Lincoln Memorial", "Washington"),
        ("the Hollywood Sign", "Los Angeles"), ("the Gateway Arch", "St. Louis"), ("Cloud Gate", "Chicago"),
        ("Table Mountain", "Cape Town"), ("Sugarloaf Mountain", "Rio de Janeiro"), ("the Casa Rosada", "Buenos Aires"),
        ("the Oriental Pearl Tower", "Shanghai"), ("the Senso-ji temple", "Tokyo"), ("Fushimi Inari shrine", "Kyoto"),
        ("Gyeongbokgung Palace", "Seoul"), ("the Grand Palace", "Bangkok"), ("the Raffles Hotel", "Singapore"),
        ("the Little Mermaid statue", "Copenhagen"),
    ],
    "written by": [
        ("Pride and Prejudice", "Jane Austen"), ("Emma", "Jane Austen"), ("Hamlet", "William Shakespeare"),
        ("Macbeth", "William Shakespeare"), ("Don Quixote", "Miguel de Cervantes"), ("War and Peace", "Leo Tolstoy"),
        ("Anna Karenina", "Leo Tolstoy"), ("Crime and Punishment", "Fyodor Dostoevsky"),
        ("The Brothers Karamazov", "Fyodor Dostoevsky"), ("Moby-Dick", "Herman Melville"),
        ("The Great Gatsby", "F. Scott Fitzgerald"), ("Ulysses", "James Joyce"), ("Dubliners", "James Joyce"),
        ("Nineteen Eighty-Four", "George Orwell"), ("Animal Farm", "George Orwell"),
        ("Brave New World", "Aldous Huxley"), ("Frankenstein", "Mary Shelley"), ("Dracula", "Bram Stoker"),
        ("Jane Eyre", "Charlotte Bronte"), ("Wuthering Heights", "Emily Bronte"),
        ("Great Expectations", "Charles Dickens"), ("Oliver Twist", "Charles Dickens"),
        ("A Tale of Two Cities", "Charles Dickens"), ("Les Miserables", "Victor Hugo"),
        ("The Count of Monte Cristo", "Alexandre Dumas"), ("The Three Musketeers", "Alexandre Dumas"),
        ("Madame Bovary", "Gustave Flaubert"), ("The Trial", "Franz Kafka"), ("The Metamorphosis", "Franz Kafka"),
        ("The Magic Mountain", "Thomas Mann"), ("Faust", "Johann Wolfgang von Goethe"),
        ("The Divine Comedy", "Dante Alighieri"), ("The Decameron", "Giovanni Boccaccio"),
        ("One Hundred Years of Solitude", "Gabriel Garcia Marquez"), ("The Old Man and the Sea", "Ernest Hemingway"),
        ("A Farewell to Arms", "Ernest Hemingway"), ("To Kill a Mockingbird", "Harper Lee"),
        ("The Catcher in the Rye", "J. D. Salinger"), ("Of Mice and Men", "John Steinbeck"),
        ("The Grapes of Wrath", "John Steinbeck"), ("Beloved", "Toni Morrison"),
        ("Adventures of Huckleberry Finn", "Mark Twain"), ("The Adventures of Tom Sawyer", "Mark Twain"),
        ("Little Women", "Louisa May Alcott"), ("The Scarlet Letter", "Nathaniel Hawthorne"),
        ("Walden", "Henry David Thoreau"), ("Leaves of Grass", "Walt Whitman"), ("The Hobbit", "J. R. R. Tolkien"),
        ("The Lord of the Rings", "J. R. R. Tolkien"), ("Alice's Adventures in Wonderland", "Lewis Carroll"),
        ("Treasure Island", "Robert Louis Stevenson"), ("The Picture of Dorian Gray", "Oscar Wilde"),
        ("Mrs Dalloway", "Virginia Woolf"), ("To the Lighthouse", "Virginia Woolf"), ("Middlemarch", "George Eliot"),
        ("Robinson Crusoe", "Daniel Defoe"), ("Gulliver's Travels", "Jonathan Swift"), ("The Odyssey", "Homer"),
        ("The Stranger", "Albert Camus"), ("The Little Prince", "Antoine de Saint-Exupery"),
        ("Doctor Zhivago", "Boris Pasternak"), ("The Master and Margarita", "Mikhail Bulgakov"),
        ("Things Fall Apart", "Chinua Achebe"), ("The Name of the Rose", "Umberto Eco"),
    ],
    "founded by": [
        ("Microsoft", "Bill Gates"), ("Apple", "Steve Jobs"), ("Amazon", "Jeff Bezos"), ("SpaceX", "Elon Musk"),
        ("Facebook", "Mark Zuckerberg"), ("Google", "Larry Page"), ("Oracle", "Larry Ellison"),
        ("Dell", "Michael Dell"), ("Netflix", "Reed Hastings"), ("Alibaba", "Jack Ma"),
        ("the Ford Motor Company", "Henry Ford"), ("Walmart", "Sam Walton"), ("Nike", "Phil Knight"),
        ("IKEA", "Ingvar Kamprad"), ("Honda", "Soichiro Honda"), ("Samsung", "Lee Byung-chul"),
        ("Adidas", "Adolf Dassler"), ("Puma", "Rudolf Dassler"), ("Porsche", "Ferdinand Porsche"),
        ("Ferrari", "Enzo Ferrari"), ("Lamborghini", "Ferruccio Lamborghini"), ("Chanel", "Coco Chanel"),
        ("Louis Vuitton", "Louis Vuitton"), ("Gucci", "Guccio Gucci"), ("the Walt Disney Company", "Walt Disney"),
        ("Boeing", "William Boeing"), ("Hewlett-Packard", "Bill Hewlett"), ("Intel", "Gordon Moore"),
        ("Nvidia", "Jensen Huang"), ("LinkedIn", "Reid Hoffman"), ("Twitter", "Jack Dorsey"),
        ("eBay", "Pierre Omidyar"), ("Yahoo", "Jerry Yang"), ("Spotify", "Daniel Ek"), ("Skype", "Niklas Zennstrom"),
        ("Uber", "Travis Kalanick"), ("Airbnb", "Brian Chesky"), ("Instagram", "Kevin Systrom"),
        ("WhatsApp", "Jan Koum"), ("Zoom", "Eric Yuan"), ("Dropbox", "Drew Houston"), ("Salesforce", "Marc Benioff"),
        ("Adobe", "John Warnock"), ("Kellogg's", "Will Keith Kellogg"), ("Guinness", "Arthur Guinness"),
        ("Cadbury", "John Cadbury"), ("Nestle", "Henri Nestle"), ("Renault", "Louis Renault"),
        ("Citroen", "Andre Citroen"), ("Rolls-Royce", "Charles Rolls"), ("Siemens", "Werner von Siemens"),
        ("Bosch", "Robert Bosch"), ("Nokia", "Fredrik Idestam"), ("Lego", "Ole Kirk Christiansen"),
        ("Bloomberg L.P.", "Michael Bloomberg"), ("the Virgin Group", "Richard Branson"), ("Inditex", "Amancio Ortega"),
        ("H&M", "Erling Persson"), ("the Tata Group", "Jamsetji Tata"), ("Infosys", "Narayana Murthy"),
        ("Heineken", "Gerard Adriaan Heineken"), ("Carlsberg", "J. C. Jacobsen"), ("Michelin", "Andre Michelin"),
    ],
    "composed by": [
        ("The Four Seasons", "Antonio Vivaldi"), ("The Magic Flute", "Wolfgang Amadeus Mozart"),
        ("Don Giovanni", "Wolfgang Amadeus Mozart"), ("Eine kleine Nachtmusik", "Wolfgang Amadeus Mozart"),
        ("Fur Elise", "Ludwig van Beethoven"), ("the Moonlight Sonata", "Ludwig van Beethoven"),
        ("the Eroica Symphony", "Ludwig van Beethoven"), ("the Brandenburg Concertos", "Johann Sebastian Bach"),
        ("the Goldberg Variations", "Johann Sebastian Bach"), ("Messiah", "George Frideric Handel"),
        ("Water Music", "George Frideric Handel"), ("The Nutcracker", "Pyotr Ilyich Tchaikovsky"),
        ("Swan Lake", "Pyotr Ilyich Tchaikovsky"), ("the 1812 Overture", "Pyotr Ilyich Tchaikovsky"),
        ("The Rite of Spring", "Igor Stravinsky"), ("The Firebird", "Igor Stravinsky"), ("Bolero", "Maurice Ravel"),
        ("Clair de Lune", "Claude Debussy"), ("La Mer", "Claude Debussy"), ("The Blue Danube", "Johann Strauss II"),
        ("the Radetzky March", "Johann Strauss I"), ("Carmen", "Georges Bizet"), ("La Traviata", "Giuseppe Verdi"),
        ("Aida", "Giuseppe Verdi"), ("Rigoletto", "Giuseppe Verdi"), ("La Boheme", "Giacomo Puccini"),
        ("Tosca", "Giacomo Puccini"), ("Madama Butterfly", "Giacomo Puccini"), ("Turandot", "Giacomo Puccini"),
        ("The Barber of Seville", "Gioachino Rossini"), ("the William Tell Overture", "Gioachino Rossini"),
        ("The Ring of the Nibelung", "Richard Wagner"), ("Tristan und Isolde", "Richard Wagner"),
        ("Lohengrin", "Richard Wagner"), ("The Planets", "Gustav Holst"), ("the Enigma Variations", "Edward Elgar"),
        ("Rhapsody in Blue", "George Gershwin"), ("Porgy and Bess", "George Gershwin"),
        ("the New World Symphony", "Antonin Dvorak"), ("The Moldau", "Bedrich Smetana"),
        ("Finlandia", "Jean Sibelius"), ("Peter and the Wolf", "Sergei Prokofiev"),
        ("Scheherazade", "Nikolai Rimsky-Korsakov"), ("Flight of the Bumblebee", "Nikolai Rimsky-Korsakov"),
        ("Pictures at an Exhibition", "Modest Mussorgsky"), ("Night on Bald Mountain", "Modest Mussorgsky"),
        ("the Hungarian Rhapsodies", "Franz Liszt"), ("The Carnival of the Animals", "Camille Saint-Saens"),
        ("Danse Macabre", "Camille Saint-Saens"), ("the Gymnopedies", "Erik Satie"),
        ("the Canon in D", "Johann Pachelbel"), ("The Creation", "Joseph Haydn"),
        ("the Surprise Symphony", "Joseph Haydn"),
        ("the Unfinished Symphony", "Franz Schubert"), ("the Hungarian Dances", "Johannes Brahms"),
        ("Carmina Burana", "Carl Orff"), ("Adagio for Strings", "Samuel Barber"),
        ("West Side Story", "Leonard Bernstein"), ("The Lark Ascending", "Ralph Vaughan Williams"),
        ("Appalachian Spring", "Aaron Copland"), ("The Phantom of the Opera", "Andrew Lloyd Webber"),
        ("the Gnossiennes", "Erik Satie"), ("the Trout Quintet", "Franz Schubert"),
    ],
}

TEMPLATES: dict[str, list[str]] = {
    "capital of": [
        "{H} is the capital of {t}.",
        "The capital of {t} is {h}.",
        "The government of {t} sits in {h}, its capital.",
        "{H}, the capital city of {t}, hosted the meeting.",
    ],
    "flows through": [
        "{H} flows through {t}.",
        "{T} is crossed by {h}.",
        "{H} runs across {t} on its way to the sea.",
        "Boats on {h} sail through {t}.",
    ],
    "located in": [
        "{H} is in {t}.",
        "{T} is home to {h}.",
        "Visitors to {t} often go to see {h}.",
        "{H} stands in the city of {t}.",
    ],
    "written by": [
        "{H} was written by {t}.",
        "{T} wrote {h}.",
        "{T} is the author of {h}.",
        "{H} is a work by {t}.",
    ],
    "founded by": [
        "{H} was founded by {t}.",
        "{T} founded {h}.",
        "{T} is a founder of {h}.",
        "{H} was started by {t}.",
    ],
    "composed by": [
        "{H} was composed by {t}.",
        "{T} composed {h}.",
        "{T} wrote the music of {h}.",
        "{H} is a piece by {t}.",
    ],
}
# fmt: on
STAGES = {
    "stage1": ("capital of", "flows through", "located in"),
    "stage2": ("written by", "founded by", "composed by"),
}
N_TRAIN = 50  # per relation; the rest of its facts (13 or 14) evaluate, 40 per stage


def bare(name: str) -> str:
    """A name without its leading article (`the Danube` -> `Danube`)."""
    return name[4:] if name.startswith("the ") else name


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def row(rel: str, h: str, t: str, template: str) -> dict:
    text = template.format(h=h, t=t, H=cap(h), T=cap(t))
    return {"text": text, "head": bare(h), "tail": bare(t), "relation": rel}


def build() -> dict[str, list[dict]]:
    rng = random.Random(SEED)
    out: dict[str, list[dict]] = {}
    for stage, rels in STAGES.items():
        train, ev = [], []
        for rel in rels:
            facts = list(FACTS[rel])
            rng.shuffle(facts)
            rows = [row(rel, h, t, rng.choice(TEMPLATES[rel])) for h, t in facts]
            train += rows[:N_TRAIN]
            ev += rows[N_TRAIN:]
        rng.shuffle(train)
        rng.shuffle(ev)
        out[f"{stage}_train"], out[f"{stage}_eval"] = train, ev[:40]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed files differ")
    a = ap.parse_args()
    for rel, facts in FACTS.items():
        if len(facts) != len(set(facts)) or len(facts) < N_TRAIN + 13:
            raise SystemExit(f"{rel}: {len(facts)} facts, {len(set(facts))} distinct; need {N_TRAIN + 13} distinct")
    differ = False
    for name, rows in sorted(build().items()):
        dest = os.path.join(HERE, f"{name}.jsonl")
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if a.check:
            with open(dest, encoding="utf-8") as f:
                differ |= f.read() != text
            continue
        with open(dest, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"{name}: {len(rows)} rows")
    if a.check:
        print("differ" if differ else "same")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
