"""A stream of changing (invented) facts for examples/knowledge*.yaml: stage 1 states 12 facts, stage 2 replaces
6 of them with new values and adds 6 new ones. Written as memory rows (text, key) and as instruction rows
(prompt, response) so the same knowledge can go into a memory or into the weights.

    python examples/data/knowledge/build.py
"""
import json
import random
from pathlib import Path

HERE = Path(__file__).parent
PLACES = ["Zorbia", "Melnor", "Pellas", "Trevant", "Quorin", "Daskel", "Ferrow", "Ilmara", "Bostra", "Kelvane",
          "Orrin", "Vashti", "Tamsk", "Glenmor", "Hadria", "Lunet", "Mirevale", "Nostra"]
NAMES = ["Quux", "Dravik", "Orbin", "Silka", "Talon", "Wex", "Brisa", "Carn", "Dolm", "Evra", "Fenn", "Gorsk",
         "Hale", "Irik", "Jorv", "Kesh", "Lomb", "Morra", "Nuvo", "Opal", "Prax", "Rilo", "Sarn", "Tova"]


def main() -> None:
    rng = random.Random(0)
    names = NAMES[:]
    rng.shuffle(names)
    v1 = {p: names.pop() for p in PLACES[:12]}
    v2 = dict(v1)
    for p in PLACES[:6]:
        v2[p] = names.pop()  # replaced
    for p in PLACES[12:]:
        v2[p] = names.pop()  # new
    def mem(v, keys):
        return [{"key": p, "text": f"The capital of {p} is {v[p]}."} for p in keys]

    def qa(v, keys):
        return [{"prompt": f"What is the capital of {p}?", "response": v[p]} for p in keys]

    files = {
        "stage1_memory.jsonl": mem(v1, PLACES[:12]),
        "stage2_memory.jsonl": mem(v2, PLACES[:6] + PLACES[12:]),
        "stage1_train.jsonl": qa(v1, PLACES[:12]),
        "stage2_train.jsonl": qa(v2, PLACES[:6] + PLACES[12:]),
        "eval_unchanged.jsonl": qa(v2, PLACES[6:12]),   # stated in stage 1, still true
        "eval_updated.jsonl": qa(v2, PLACES[:6]),       # superseded in stage 2: the new value is right
        "eval_new.jsonl": qa(v2, PLACES[12:]),          # added in stage 2
    }
    for name, rows in files.items():
        (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
