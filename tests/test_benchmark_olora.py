"""`standard_cl` and `long_sequence` over a fixture in O-LoRA's released layout (tests/data/benchmarks/olora: a few
rows per task of CL_Benchmark/<category>/<dataset>/{train,test}.json and labels.json, and the release's
configs/instruction_config.json): published orders, the prompts and label words character for character, sampling,
located errors, the hub path, and a tiny-model run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifelong.cli import main as cli
from lifelong.configio import ConfigError
from lifelong.validation import load_config, validate_raw

FIXTURE = Path(__file__).parent / "data" / "benchmarks" / "olora"

ORDERS = {  # O-LoRA scripts/order_{1,2,3}.sh and Progressive Prompts' orders 4-6 (O-LoRA scripts/long.sh = order 6)
    1: "dbpedia amazon yahoo agnews",
    2: "dbpedia amazon agnews yahoo",
    3: "yahoo amazon agnews dbpedia",
    4: "MNLI CB WiC COPA QQP BoolQA RTE IMDB yelp amazon SST-2 dbpedia agnews MultiRC yahoo",
    5: "MultiRC BoolQA WiC MNLI CB COPA QQP RTE IMDB SST-2 dbpedia agnews yelp amazon yahoo",
    6: "yelp amazon MNLI CB COPA QQP RTE IMDB SST-2 dbpedia agnews yahoo MultiRC BoolQA WiC",
}
FOLDERS = {
    "agnews": "TC/agnews", "amazon": "SC/amazon", "yelp": "SC/yelp", "dbpedia": "TC/dbpedia", "yahoo": "TC/yahoo",
    "MNLI": "NLI/MNLI", "CB": "NLI/CB", "RTE": "NLI/RTE", "QQP": "QQP/QQP", "IMDB": "SC/IMDB", "SST-2": "SC/SST-2",
    "BoolQA": "BoolQA/BoolQA", "COPA": "COPA/COPA", "MultiRC": "MultiRC/MultiRC", "WiC": "WiC/WiC",
}  # fmt: skip


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _cfg(bench: dict, **top: Any) -> Any:
    raw = {"name": "b", "model": {"tiny": "llama"}, "benchmark": {"path": str(FIXTURE), **bench}, **top}
    return validate_raw(raw, "<test>", base_dir=Path.cwd())


def _items(task_cfg: Any) -> list[dict]:
    """The eval items lifelong builds from an expanded stage's eval task (what the model is asked)."""
    from lifelong.data import load_rows
    from lifelong.data.formats import to_eval_items

    return to_eval_items(load_rows(task_cfg), "classification", task_cfg, task_cfg.labels)


def _olora_prompt(task: str, sentence: str) -> str:
    """O-LoRA's prompt, rebuilt from its release: instruction_config.json, labels.json, and the steps of
    src/uie_dataset_lora.py (instruction + "Option: " + labels + " \\n" + "{0}" + "\\nAnswer:"; COPA: "{0}\\nAnswer:")
    and src/uie_collator.py ("Task:" + task + "\\n" + "Dataset:" + dataset + "\\n" before it, then format)."""
    category, dataset = FOLDERS[task].split("/")
    instructions = json.loads((FIXTURE / "configs" / "instruction_config.json").read_text(encoding="utf-8"))
    labels = json.loads((FIXTURE / "CL_Benchmark" / FIXTURE_DIR(task) / "labels.json").read_text(encoding="utf-8"))
    if category == "COPA":
        instruction = "{0}" + "\nAnswer:"
    else:
        instruction = instructions[category][0]["instruction"]
        instruction += "Option: " + ", ".join(labels) + " \n" + "{0}" + "\nAnswer:"
    return ("Task:" + category + "\n" + "Dataset:" + dataset + "\n" + instruction).format(sentence)


def FIXTURE_DIR(task: str) -> str:  # noqa: N802
    return FOLDERS[task]


def test_orders_match_the_published_lists() -> None:
    from lifelong.benchmarks import BENCHMARKS

    standard, long = BENCHMARKS.get("standard_cl"), BENCHMARKS.get("long_sequence")
    assert {k: " ".join(v) for k, v in standard.orders.items()} == {k: ORDERS[k] for k in (1, 2, 3)}
    assert {k: " ".join(v) for k, v in long.orders.items()} == {k: ORDERS[k] for k in (4, 5, 6)}
    for number in (1, 2, 3):
        assert [s.name for s in _cfg({"name": "standard_cl", "order": number}).stages] == ORDERS[number].split()
    assert [s.name for s in _cfg({"name": "standard_cl"}).stages] == ORDERS[1].split()  # default: order 1
    assert [s.name for s in _cfg({"name": "long_sequence", "order": 5}).stages] == ORDERS[5].split()
    five = _cfg({"name": "standard_cl", "tasks": ["agnews", "yelp", "amazon", "dbpedia", "yahoo"]})
    assert [s.name for s in five.stages] == ["agnews", "yelp", "amazon", "dbpedia", "yahoo"]


def test_prompts_and_label_words_are_o_loras_character_for_character() -> None:
    cfg = _cfg({"name": "long_sequence", "order": 4})
    assert len(cfg.stages) == 15
    for stage in cfg.stages:
        folder = FIXTURE / "CL_Benchmark" / FOLDERS[stage.name]
        labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
        test = json.loads((folder / "test.json").read_text(encoding="utf-8"))
        items = _items(stage.eval)
        assert [it["prompt"] for it in items] == [_olora_prompt(stage.name, r["sentence"]) for r in test]
        assert [it["targets"] for it in items] == [[r["label"]] for r in test]
        assert all(it["options"] == labels for it in items)  # label words, in labels.json's order
        assert stage.data.labels == labels and stage.eval.labels == labels  # type: ignore[union-attr]


def test_one_prompt_written_out() -> None:
    """The first AG News fixture row's prompt, typed out from O-LoRA's instruction_config.json and loader."""
    agnews = next(s for s in _cfg({"name": "standard_cl"}).stages if s.name == "agnews")
    first = _items(agnews.eval)[0]
    assert first["prompt"] == (
        "Task:TC\nDataset:agnews\nWhat is the topic of the following paragraph? Choose one from the option.\n"
        "Option: World, Sports, Business, Science or Technology \n"
        "Title: Up, down and away: NASA #39;s  #39;Weightless Wonder #39; makes final flight\n"
        "Text: HOUSTON -- The NASA turbojet notoriously known as the  quot;vomit comet quot; for its use in training "
        "astronauts for weightlessness made its final flight Friday.\n\nAnswer:"
    )
    assert first["targets"] == ["Science or Technology"]
    copa = next(s for s in _cfg({"name": "long_sequence"}).stages if s.name == "COPA")
    assert _items(copa.eval)[0]["prompt"].startswith("Task:COPA\nDataset:COPA\nWhich sentence is the ")
    assert _items(copa.eval)[0]["options"] == ["A", "B"]


def test_scoring_and_prefix_options() -> None:
    cfg = _cfg({"name": "standard_cl"})
    assert {s.eval.scorer for s in cfg.stages} == {"exact_match"}  # type: ignore[union-attr]
    assert cfg.stages[0].eval.params == {"max_new_tokens": 16}  # type: ignore[union-attr]
    choice = _cfg({"name": "standard_cl", "scorer": "choice", "task_prefix": False})
    assert {s.eval.scorer for s in choice.stages} == {"choice"}  # type: ignore[union-attr]
    assert _items(choice.stages[0].eval)[0]["prompt"].startswith("What is the topic of the following paragraph?")


def test_sampling_is_deterministic_and_counts(cache: Path) -> None:
    def rows(seed: int) -> list[list[str]]:
        cfg = _cfg({"name": "standard_cl", "train_per_task": 3, "eval_per_task": 2, "seed": seed})
        return [Path(s.data.path).read_text(encoding="utf-8").splitlines() for s in cfg.stages]  # type: ignore[union-attr,arg-type]

    a, b = rows(0), rows(0)
    assert a == b and all(len(r) == 3 for r in a)
    assert any(x != y for x, y in zip(a, rows(7)))  # another seed, other rows (6 rows choose 3: 20 ways per task)
    full = _cfg({"name": "standard_cl"})  # no counts: every row of the files
    assert [len(Path(s.eval.path).read_text().splitlines()) for s in full.stages] == [4, 4, 4, 4]  # type: ignore[union-attr,arg-type]
    assert all(p.parent == cache / "benchmarks" / "standard_cl" for p in map(Path, [full.stages[0].data.path]))  # type: ignore[union-attr,arg-type]


def test_validate_prints_ordinary_stages(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bench = {"name": "standard_cl", "order": 3, "path": str(FIXTURE)}
    raw = {"name": "b", "model": {"tiny": "llama"}, "benchmark": bench}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert cli(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    printed = yaml.safe_load(out)
    assert "benchmark" not in printed and [s["name"] for s in printed["stages"]] == ORDERS[3].split()
    assert printed["stages"][0]["data"]["template"].startswith("Task:TC\nDataset:yahoo\nWhat is the topic")
    assert "valid (4 stages" in out


def test_bad_paths_and_tasks_are_located(tmp_path: Path) -> None:
    raw = {"name": "b", "model": {"tiny": "llama"}, "benchmark": {"name": "standard_cl", "path": str(tmp_path)}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    line = next(n for n, t in enumerate(path.read_text().splitlines(), 1) if t.strip().startswith("path:"))
    assert str(e.value).startswith(f"{path}:{line}: benchmark.path: {tmp_path} has no TC/dbpedia/ (task dbpedia)")
    broken = tmp_path / "CL_Benchmark" / "TC" / "dbpedia"
    broken.mkdir(parents=True)
    (broken / "labels.json").write_text('["Company"]', encoding="utf-8")
    (broken / "train.json").write_text('[{"sentence": "x", "label": "Plant"}]', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"benchmark\.path: .*train\.json: no row with a label of labels\.json"):
        validate_raw({**raw, "benchmark": {"name": "standard_cl", "path": str(tmp_path), "tasks": ["dbpedia"]}})
    # rows labelled outside labels.json (MNLI's test set has 131 labelled "-") are left out, with a warning
    (broken / "train.json").write_text('[{"sentence": "x", "label": "-"}, {"sentence": "y", "label": "Company"}]')
    (broken / "test.json").write_text('[{"sentence": "z", "label": "Company"}]', encoding="utf-8")
    with pytest.warns(UserWarning, match=r"train\.json: 1 of 2 rows have a label not in labels\.json .*row 0, '-'"):
        cfg = validate_raw({**raw, "benchmark": {"name": "standard_cl", "path": str(tmp_path), "tasks": ["dbpedia"]}})
    assert [json.loads(x)["text"] for x in Path(cfg.stages[0].data.path).read_text().splitlines()] == ["y"]  # type: ignore[union-attr,arg-type]
    with pytest.raises(ConfigError, match=r"benchmark\.tasks: unknown task 'MNLI'"):
        _cfg({"name": "standard_cl", "tasks": ["MNLI"]})  # a long-sequence task, not a standard_cl one
    with pytest.raises(ConfigError, match=r"benchmark\.order: no published order 4; orders: 1, 2, 3"):
        _cfg({"name": "standard_cl", "order": 4})
    with pytest.raises(ConfigError, match=r"benchmark\.path: give `path` .* or `hub`"):
        validate_raw({"name": "b", "model": {"tiny": "llama"}, "benchmark": {"name": "standard_cl"}})


def test_hub_snapshot_is_read_like_a_local_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """`hub: org/name` downloads only the listed tasks' folders of a dataset repo in the CL_Benchmark layout (the
    download is faked here; the call is huggingface_hub's)."""
    import huggingface_hub

    calls: list[dict] = []

    def fake(**kw: Any) -> str:
        calls.append(kw)
        return str(FIXTURE)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    raw = {"name": "b", "model": {"tiny": "llama"}, "benchmark": {"name": "standard_cl", "hub": "org/cl-benchmark"}}
    cfg = validate_raw(raw)
    assert [s.name for s in cfg.stages] == ORDERS[1].split()
    assert calls[0]["repo_id"] == "org/cl-benchmark" and calls[0]["repo_type"] == "dataset"
    assert "TC/dbpedia/*" in calls[0]["allow_patterns"] and "SC/yelp/*" not in calls[0]["allow_patterns"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"benchmark\.hub: cannot download org/cl-benchmark: the hub is offline"):
        validate_raw(raw)


def test_a_tiny_model_runs_an_expanded_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = {
        "name": "olora-tiny",
        "output_dir": str(tmp_path / "runs"),
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "train": {"lr": 1e-3, "batch_size": 4, "max_steps": 2, "max_length": 512},
        "eval": {"batch_size": 8, "bootstrap": 0, "max_examples": 2},
        "benchmark": {"name": "standard_cl", "path": str(FIXTURE), "tasks": ["agnews", "amazon"],
                      "train_per_task": 4, "max_new_tokens": 3},
    }  # fmt: skip
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    assert cli(["run", str(path), "--quiet"]) == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "runs" / "olora-tiny" / "results.json").read_text(encoding="utf-8"))
    assert [t["name"] for t in res["tasks"]] == ["agnews", "amazon"]
    assert [t["metric"] for t in res["tasks"]] == ["exact_match", "exact_match"]
    assert len(res["matrix"]) == 3 and all(0 <= v <= 100 for row in res["matrix"] for v in row)
    saved = yaml.safe_load((tmp_path / "runs" / "olora-tiny" / "config.yaml").read_text(encoding="utf-8"))
    assert "benchmark" not in saved and [s["name"] for s in saved["stages"]] == ["agnews", "amazon"]
