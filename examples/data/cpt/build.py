"""Build two continual pre-training domains from text every CPython install ships (no download):
`docs`: the language reference topics of `pydoc_data.topics` (technical English), and `code`: Python source
of standard-library modules. Both are under the PSF License (Python's own documentation and library).

    python examples/data/cpt/build.py        # rewrites examples/data/cpt/{docs,code}/{train,eval}.jsonl
Deterministic (fixed seed, sorted inputs); documents are chunks of about 600 characters.
"""
from __future__ import annotations

import json
import random
import sysconfig
from pathlib import Path

HERE = Path(__file__).parent
N_TRAIN, N_EVAL, SIZE = 160, 16, 600


def chunks(text: str, size: int = SIZE) -> list[str]:
    out, cur = [], ""
    for para in text.split("\n\n"):
        para = para.strip()
        if not para:
            continue
        if cur and len(cur) + len(para) > size:
            out.append(cur)
            cur = ""
        cur = f"{cur}\n\n{para}" if cur else para
        while len(cur) > 2 * size:
            out.append(cur[:size])
            cur = cur[size:]
    if cur:
        out.append(cur)
    return [c for c in out if len(c) > 200]


def docs_domain() -> list[str]:
    from pydoc_data.topics import topics

    return [c for name in sorted(topics) for c in chunks(topics[name])]


def code_domain() -> list[str]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for pkg in ("json", "email", "http", "logging", "importlib") for p in (lib / pkg).glob("*.py"))
    return [c for f in files for c in chunks(f.read_text(encoding="utf-8"))]


def main() -> None:
    rng = random.Random(0)
    for name, docs in (("docs", docs_domain()), ("code", code_domain())):
        rng.shuffle(docs)
        out = HERE / name
        out.mkdir(exist_ok=True)
        for split, part in (("train", docs[:N_TRAIN]), ("eval", docs[N_TRAIN:N_TRAIN + N_EVAL])):
            with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for d in part:
                    f.write(json.dumps({"text": d}) + "\n")
        print(name, len(docs), "chunks available")


if __name__ == "__main__":
    main()
