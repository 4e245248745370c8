"""Reference SARI values for tests/test_scenario_summarization.py, computed by the two implementations the field
uses, neither installable from PyPI: Hugging Face evaluate's `metrics/sari/sari.py` (sentence-level SARI,
averaged; what TRACE scores simplification with) and EASSE's `easse/sari.py` (`corpus_sari`, defaults). Neither is
copied here: the script imports them from checkouts given on the command line, with stand-ins for the imports
they need only for packaging (`evaluate.Metric`, `datasets.Features`, `sacremoses`), and writes the check items
(sentences written for lifelong, CC0) with the values to `reference.json`.

    # evaluate: a checkout of huggingface/evaluate at a7dd338386a4fae9a1767e05eb9ef9479513d9e8
    # easse: a checkout of feralvam/easse at 6a4352ec299ed03fda8ee45445ca43d9c7673e89
    python tests/data/sari/build_reference.py evaluate easse     # needs sacrebleu (2.6.0 here)
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
import types
from pathlib import Path

HERE = Path(__file__).parent

PAIRS = [
    (
        "The committee, which had convened in emergency session, ultimately decided to postpone the vote until March.",
        [
            "The committee met in an emergency session. It decided to delay the vote until March.",
            "The committee decided to postpone the vote until March.",
            "In an emergency meeting, the committee put off the vote until March.",
        ],
    ),
    (
        "Owing to inclement weather, the outdoor concert was relocated to the municipal gymnasium.",
        [
            "Because of bad weather, the outdoor concert was moved to the city gym.",
            "The concert was moved indoors to the city gym because of bad weather.",
            "Due to bad weather, the concert moved to the town gym.",
        ],
    ),
    (
        "Photosynthesis is the process by which green plants utilize sunlight to synthesize nutrients from carbon "
        "dioxide and water.",
        [
            "Photosynthesis is how green plants use sunlight to make food from carbon dioxide and water.",
            "Green plants use sunlight to make food from carbon dioxide and water. This is called photosynthesis.",
            "Photosynthesis is how plants make food from sunlight, carbon dioxide and water.",
        ],
    ),
    (
        "The river, swollen by weeks of relentless rain, eventually overflowed its banks and inundated the village.",
        [
            "After weeks of heavy rain, the river flooded the village.",
            "The river rose after weeks of rain and flooded the village.",
            "Weeks of rain made the river overflow and flood the village.",
        ],
    ),
    (
        "Despite numerous attempts, the engineers were unable to ascertain the cause of the malfunction.",
        [
            "The engineers tried many times but could not find out what caused the fault.",
            "Despite many tries, the engineers could not find the cause of the problem.",
            "The engineers could not find what caused the malfunction.",
        ],
    ),
    (
        "He didn't anticipate that the well-known author would respond to his letter so promptly.",
        [
            "He didn't expect the famous author to answer his letter so quickly.",
            "He did not think the famous writer would reply so fast.",
            "The famous author answered his letter quickly, which he didn't expect.",
        ],
    ),
    (
        "In 1969, Apollo 11 became the first crewed mission to land on the Moon, a milestone watched by millions.",
        [
            "In 1969, Apollo 11 was the first mission to land people on the Moon.",
            "Millions watched Apollo 11 land on the Moon in 1969.",
            "Apollo 11 landed on the Moon in 1969. Millions of people watched.",
        ],
    ),
    (
        "The medication should be administered twice daily, preferably with food, to minimize gastrointestinal "
        "discomfort.",
        [
            "Take the medicine twice a day with food to avoid stomach upset.",
            "Take this medicine twice a day, with food, so your stomach does not hurt.",
            "The medicine should be taken twice a day with food.",
        ],
    ),
    (
        "The the cat sat sat on the mat, and the dog sat on the mat too.",
        [
            "The cat sat on the mat, and so did the dog.",
            "The cat and the dog sat on the mat.",
            "The cat sat on the mat. The dog sat on the mat too.",
        ],
    ),
    (
        "Subsequently, the corporation announced a comprehensive restructuring that would eliminate approximately "
        "1,200 positions.",
        [
            "Later, the company said it would cut about 1,200 jobs.",
            "The company then announced it would cut about 1,200 jobs as part of a big reorganization.",
            "Then the company said about 1,200 jobs would go.",
        ],
    ),
    (
        '"We are delighted," the spokesperson remarked, "and we intend to expand operations next year."',
        [
            '"We are very happy," the spokesperson said. "We plan to grow next year."',
            "The spokesperson said they were happy and planned to expand next year.",
            '"We are happy and will grow next year," the spokesperson said.',
        ],
    ),
    (
        "Migratory birds navigate vast distances using a combination of celestial cues and the Earth's magnetic field.",
        [
            "Migrating birds use the stars and the Earth's magnetic field to find their way over long distances.",
            "Birds that migrate find their way using the sky and Earth's magnetism.",
            "Migratory birds fly long distances using the stars and the magnetic field of the Earth.",
        ],
    ),
]


def perturb(rng: random.Random, s: str) -> str:
    """One word dropped and one inserted (a plausible, imperfect output)."""
    w = s.split()
    if len(w) > 4:
        del w[rng.randrange(len(w))]
        w.insert(rng.randrange(len(w)), rng.choice(["very", "then", "also", "the", "big"]))
    return " ".join(w)


def check_items() -> tuple[list[dict], list[dict]]:
    """Two corpora: every source with 5 outputs (a copy, a reference, edited ones, a cut) and 4 edge cases (empty,
    upper case, unrelated, repeated words), three references each; and one reference each (TRACE's setting)."""
    rng = random.Random(17)
    three = []
    for src, refs in PAIRS:
        half = " ".join(src.split()[: len(src.split()) // 2])
        for out in (src, refs[0], perturb(rng, refs[1]), perturb(rng, src), half):
            three.append({"source": src, "prediction": out, "references": refs})
    three += [
        {"source": PAIRS[0][0], "prediction": "", "references": PAIRS[0][1]},
        {"source": PAIRS[1][0], "prediction": PAIRS[1][1][0].upper(), "references": PAIRS[1][1]},
        {"source": PAIRS[2][0], "prediction": "Plants eat light.", "references": PAIRS[2][1]},
        {"source": PAIRS[8][0], "prediction": "the the the the cat", "references": PAIRS[8][1]},
    ]
    one = [{"source": src, "prediction": perturb(rng, refs[2]), "references": [refs[0]]} for src, refs in PAIRS]
    return three, one


def load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def stand_ins() -> None:
    """Modules the two scripts import for packaging only (their SARI code does not use them)."""
    ev = types.ModuleType("evaluate")
    ev.Metric = object  # type: ignore[attr-defined]
    ev.MetricInfo = dict  # type: ignore[attr-defined]
    utils = types.ModuleType("evaluate.utils")
    fu = types.ModuleType("evaluate.utils.file_utils")
    fu.add_start_docstrings = lambda *a: lambda f: f  # type: ignore[attr-defined]
    utils.file_utils = fu  # type: ignore[attr-defined]
    ev.utils = utils  # type: ignore[attr-defined]
    ds = types.ModuleType("datasets")
    ds.Features = dict  # type: ignore[attr-defined]
    ds.Value = ds.Sequence = lambda *a, **k: None  # type: ignore[attr-defined]
    sm = types.ModuleType("sacremoses")
    sm.MosesTokenizer = object  # type: ignore[attr-defined]
    for m in (ev, utils, fu, ds, sm):
        sys.modules[m.__name__] = m


def main(evaluate_dir: str, easse_dir: str) -> None:
    import sacrebleu

    stand_ins()
    hf = load("hf_sari", Path(evaluate_dir) / "metrics" / "sari" / "sari.py")
    sys.path.insert(0, easse_dir)
    from easse.sari import corpus_sari  # type: ignore[import-not-found]

    def sentence(it: dict) -> float:  # in [0, 1], as SARIsent gives it
        return hf.SARIsent(
            hf.normalize(it["source"]), hf.normalize(it["prediction"]), [hf.normalize(r) for r in it["references"]]
        )

    out: dict = {}
    for name, items in zip(("three_references", "one_reference"), check_items()):
        per = [sentence(it) for it in items]
        for it, s in zip(items, per):
            it["evaluate_sentence_sari"] = 100 * s
        k = len(items[0]["references"])
        refs = [[it["references"][j] for it in items] for j in range(k)]
        out[name] = {
            "items": items,
            "evaluate_sari": 100 * (sum(per) / len(per)),  # as evaluate's Sari._compute
            "easse_corpus_sari": corpus_sari([it["source"] for it in items], [it["prediction"] for it in items], refs),
        }
    doc = {"source": "About 95 species are currently accepted .", "prediction": "About 95 you now get in .",
           "references": ["About 95 species are currently known .", "About 95 species are now accepted .",
                          "95 species are now accepted ."]}  # fmt: skip
    out["evaluate_docstring_example"] = {**doc, "evaluate_sentence_sari": 100 * sentence(doc)}
    out["provenance"] = {
        "evaluate": "huggingface/evaluate a7dd338386a4fae9a1767e05eb9ef9479513d9e8 metrics/sari/sari.py: "
        "SARIsent, normalize",
        "easse": "feralvam/easse 6a4352ec299ed03fda8ee45445ca43d9c7673e89 easse/sari.py: corpus_sari (defaults)",
        "sacrebleu": sacrebleu.__version__,
    }
    (HERE / "reference.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
