"""The benchmark registry: `benchmark: {name, <params>}` in a config expands into ordinary stages before
validation; `lifelong validate` prints them; bad params are located at `benchmark.<field>`; `lifelong ls
benchmarks` lists names, orders and params. A toy benchmark registered from user code drives the mechanism."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifelong.benchmarks import BENCHMARKS, Benchmark, BenchmarkError, BenchmarkParams
from lifelong.benchmarks.base import sample
from lifelong.cli import main as cli
from lifelong.configio import ConfigError
from lifelong.validation import load_config


class ToyParams(BenchmarkParams):
    words: int = 2
    """Words per toy row."""
    kind: str = "instruct"
    """Stage kind of every stage."""


class Toy(Benchmark):
    """A toy stream of two yes/no tasks."""

    Params = ToyParams
    orders = {1: ["alpha", "beta"], 2: ["beta", "alpha"]}
    tasks = ["alpha", "beta"]

    def expand(self, params: Any, base_dir: Path) -> list[dict]:
        if params.path is not None:
            self.local_root(params, base_dir)
        out = []
        for t in self.task_list(params):
            pool = [
                {"text": f"{t} " + " ".join(["w"] * params.words) + f" {i}", "label": "yes" if i % 3 else "no"}
                for i in range(30)
            ]
            train = sample(pool[:20], params.train_per_task, params.seed, f"{t}/train")
            test = sample(pool[20:], params.eval_per_task, params.seed, f"{t}/test")
            out.append({"name": t, "kind": params.kind, "data": {"rows": train}, "eval": {"rows": test}})
        return out


@pytest.fixture
def toy() -> Iterator[str]:
    BENCHMARKS.register("toy_bench")(Toy)
    yield "toy_bench"
    BENCHMARKS.unregister("toy_bench")


def _write(tmp_path: Path, bench: Any, **top: Any) -> Path:
    raw = {"name": "b", "model": {"tiny": "llama"}, "benchmark": bench, **top}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _error(path: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, list(overrides))
    return str(e.value)


def test_expansion_gives_ordinary_stages_in_the_published_order(toy: str, tmp_path: Path) -> None:
    one = load_config(_write(tmp_path, {"name": toy, "order": 1, "train_per_task": 5}))
    two = load_config(_write(tmp_path, {"name": toy, "order": 2, "train_per_task": 5}))
    assert [s.name for s in one.stages] == ["alpha", "beta"]
    assert [s.name for s in two.stages] == ["beta", "alpha"]
    assert len(one.stages[0].data.rows) == 5 and len(one.stages[0].eval.rows) == 10  # type: ignore[union-attr,arg-type]
    custom = load_config(_write(tmp_path, {"name": toy, "tasks": ["beta"]}))
    assert [s.name for s in custom.stages] == ["beta"]
    default = load_config(_write(tmp_path, toy))  # `benchmark: NAME` alone: the first order, every row
    assert [s.name for s in default.stages] == ["alpha", "beta"] and len(default.stages[0].data.rows) == 20  # type: ignore[union-attr,arg-type]


def test_expansion_is_deterministic_given_the_seed(toy: str, tmp_path: Path) -> None:
    def rows(seed: int) -> list:
        cfg = load_config(_write(tmp_path, {"name": toy, "train_per_task": 6, "seed": seed}))
        return [s.data.rows for s in cfg.stages]  # type: ignore[union-attr]

    assert rows(3) == rows(3)
    assert rows(3) != rows(4)


def test_overrides_reach_the_benchmark_params(toy: str, tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, {"name": toy}), ["benchmark.order=2", "benchmark.words=4"])
    assert [s.name for s in cfg.stages] == ["beta", "alpha"]
    assert cfg.stages[0].data.rows[0]["text"].count("w") == 4  # type: ignore[union-attr,index]


def test_validate_prints_the_expanded_stages(toy: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _write(tmp_path, {"name": toy, "order": 2, "train_per_task": 3, "eval_per_task": 2})
    assert cli(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    printed = yaml.safe_load(out)
    assert "benchmark" not in printed
    assert [s["name"] for s in printed["stages"]] == ["beta", "alpha"]
    assert len(printed["stages"][0]["data"]["rows"]) == 3
    assert "valid (2 stages" in out


@pytest.mark.parametrize(
    "bench, field, words",
    [
        ({"order": 7}, "benchmark.order", "no published order 7; orders: 1, 2"),
        ({"tasks": ["alpah"]}, "benchmark.tasks", "did you mean 'alpha'?"),
        ({"order": 1, "tasks": ["alpha"]}, "benchmark.order", "give `order` or `tasks`, not both"),
        ({"train_per_task": 0}, "benchmark.train_per_task", "greater than or equal to 1"),
        ({"wrods": 3}, "benchmark.wrods", "unknown key"),
        ({"path": "no/such/dir"}, "benchmark.path", "no such folder 'no/such/dir'"),
    ],
)
def test_bad_params_are_located(toy: str, tmp_path: Path, bench: dict, field: str, words: str) -> None:
    path = _write(tmp_path, {"name": toy, **bench})
    msg = _error(path)
    key = field.split(".")[1]
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.strip().startswith(f"{key}:"))
    assert msg.startswith(f"{path}:{line}: {field}: "), msg
    assert words in msg and len(msg.splitlines()) == 1


def test_unknown_name_stages_too_and_a_bad_section_are_errors(toy: str, tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, {"name": "toy_bnch"}))
    assert "benchmark.name: unknown benchmark 'toy_bnch'; did you mean 'toy_bench'?" in msg
    msg = _error(_write(tmp_path, toy, stages=[{"name": "s", "data": {"rows": [{"text": "x"}]}}]))
    assert "stages: `stages` and `benchmark` are exclusive" in msg
    msg = _error(_write(tmp_path, [toy]))
    assert "benchmark: give the benchmark as `benchmark: NAME`" in msg


def test_problems_in_expanded_stages_point_at_the_benchmark_line(toy: str, tmp_path: Path) -> None:
    """Checks that run after expansion locate an expanded stage's problem at the `benchmark:` line; the
    config's own keys keep their lines."""
    path = _write(tmp_path, {"name": toy, "kind": "instrct"}, train={"eval_tasks": ["gamma"]})
    msg = _error(path)
    text = path.read_text().splitlines()
    bench = next(n for n, t in enumerate(text, 1) if t.startswith("benchmark:"))
    tasks = next(n for n, t in enumerate(text, 1) if t.strip().startswith("eval_tasks:"))
    assert f"{path}:{bench}: stages.0.kind: unknown stage kind 'instrct'; did you mean 'instruct'?" in msg
    assert f"{path}:{tasks + 1}: train.eval_tasks.0: unknown eval task 'gamma'" in msg


def test_ls_benchmarks_lists_orders_tasks_and_params(toy: str, capsys: pytest.CaptureFixture) -> None:
    assert cli(["ls", "benchmarks"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("toy_bench:") :]
    assert block.startswith("toy_bench: A toy stream of two yes/no tasks.")
    wanted = ("    tasks: alpha, beta", "    order 2: beta -> alpha", "    train_per_task: ", "    words: int (default")
    for line in wanted:
        assert line in block


def test_benchmark_error_names_its_field() -> None:
    e = BenchmarkError("path", "gone")
    assert e.field == "path" and str(e) == "gone"
