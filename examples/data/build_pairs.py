"""Preference pairs for examples/align.yaml, built from the shipped review_sentiment task: the chosen
response is the correct sentiment word, the rejected one a wrong label drawn with a fixed seed.

    python examples/data/build_pairs.py     # writes examples/data/sentiment_pairs/{train,eval}.jsonl
"""
import json
import random
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    rng = random.Random(0)
    out = HERE / "sentiment_pairs"
    out.mkdir(exist_ok=True)
    for split in ("train", "eval"):
        rows = [json.loads(x) for x in (HERE / "review_sentiment" / f"{split}.jsonl").read_text().splitlines()]
        labels = sorted({r["label"] for r in rows})
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                wrong = rng.choice([x for x in labels if x != r["label"]])
                f.write(json.dumps({"prompt": f"Classify this text: {r['text']}", "chosen": r["label"],
                                    "rejected": wrong}) + "\n")


if __name__ == "__main__":
    main()
