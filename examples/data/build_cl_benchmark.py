"""Builds examples/data/cl_benchmark: a small subset of O-LoRA's CL_Benchmark release in its own layout, for
examples/standard_cl.yaml.

    python examples/data/build_cl_benchmark.py /path/to/O-LoRA    # a checkout of github.com/cmnfriend/O-LoRA

Per task (DBpedia, Amazon, AG News), rows whose sentence is short (under 110 characters for DBpedia, whose prompt
lists 14 label words, 180 for the others: so that a prompt in SmolLM2's chat template fits train.max_length 128
tokens), in file order: 200 from train.json and 80 from test.json,
kept verbatim; labels.json copied whole. The release's dbpedia/train.json is stored with Git LFS in some
checkouts: when it is missing, training rows are taken from test.json rows not used for the eval file."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

TASKS = {"TC/dbpedia": 110, "SC/amazon": 180, "TC/agnews": 180}  # task -> longest sentence kept (characters)
OUT = Path(__file__).parent / "cl_benchmark" / "CL_Benchmark"


def short(rows: list[dict], n: int, limit: int, skip: tuple = ()) -> list[dict]:
    return [r for r in rows if len(r["sentence"]) < limit and r not in skip][:n]


def main(olora: Path) -> None:
    src = olora / "CL_Benchmark"
    for task, limit in TASKS.items():
        folder = OUT / task
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / task / "labels.json", folder / "labels.json")
        test_all = json.loads((src / task / "test.json").read_text(encoding="utf-8"))
        test = short(test_all, 80, limit)
        train_file = src / task / "train.json"
        if train_file.is_file() and train_file.stat().st_size > 1000:
            train = short(json.loads(train_file.read_text(encoding="utf-8")), 200, limit)
        else:
            train = short(test_all, 200, limit, skip=tuple(test))
        for name, rows in (("train", train), ("test", test)):
            (folder / f"{name}.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
        print(task, len(train), len(test))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
