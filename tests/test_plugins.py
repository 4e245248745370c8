"""Methods added from outside the package: entry points of an installed distribution and registration from
user code, for every registry (docs/architecture.md's recipes name these tests).

Each toy method is source text written to tmp_path, never a module of `lifelong`. "Installed" means a real
`*.dist-info` folder (METADATA, entry_points.txt) on sys.path, which is what pip leaves behind, so
`importlib.metadata` finds it exactly as it finds a pip-installed plugin. Registries are module-level: the
`plugins` fixture takes back every name a test added and puts the lazy-loading state back.
"""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifelong.cli import main as cli
from lifelong.configio import ConfigError
from lifelong.registry import ENTRY_POINT_GROUPS, DuplicateNameError, Registry
from lifelong.testing import tiny_run_config
from lifelong.validation import validate_raw


def _registries() -> dict[str, Registry]:
    """`lifelong ls` word -> registry."""
    from lifelong.benchmarks import BENCHMARKS
    from lifelong.editing import EDITORS
    from lifelong.eval.scorers import SCORERS
    from lifelong.merging import MERGE_METHODS
    from lifelong.stages import STAGE_KINDS
    from lifelong.strategies import STRATEGIES

    return {
        "strategies": STRATEGIES,
        "stages": STAGE_KINDS,
        "scorers": SCORERS,
        "merges": MERGE_METHODS,
        "editors": EDITORS,
        "benchmarks": BENCHMARKS,
    }


# ---- the toy methods: plain source text, as a user's own package would hold them -----------------------
STRATEGY = '''
"""A toy strategy from outside lifelong."""
from typing import Any, Optional

import torch

from lifelong.config import Strict
from lifelong.strategies import Strategy


class PullParams(Strict):
    pull: float = 1000.0
    """Weight of the penalty."""


class ToyPull(Strategy):
    """Toy plugin: a penalty -pull * sum(final norm weights), so every step raises those weights."""

    Params = PullParams

    def __init__(self, params: Any = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.calls = 0

    def penalty(self, ctx: Any, batch: dict, out: Any) -> Optional[torch.Tensor]:
        self.calls += 1
        return -self.params.pull * dict(ctx.model.named_parameters())["model.norm.weight"].sum()

    def cost(self) -> dict:
        return {"toy_pull_calls": self.calls}

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = int(state.get("calls", 0))
'''

SCORER = '''
"""A toy scorer from outside lifelong."""
from typing import Any

import numpy as np

from lifelong.config import Strict
from lifelong.eval.scorers import Scorer


class ShareParams(Strict):
    per: float = 8.0
    """Divisor of the number of options."""


class ToyShare(Scorer):
    """Toy plugin: scores every item as its number of options / `per` (25 for two options and per 8)."""

    Params = ShareParams
    metric = "toy_share"
    formats = ("classification", "choice")

    def score(self, lm: Any, items: list) -> np.ndarray:
        return np.array([[len(it["options"]) / self.params.per] for it in items], dtype=float)
'''

STAGE = '''
"""A toy stage kind from outside lifelong."""
from typing import Any, Optional

import torch

from pydantic import Field

from lifelong.config import Strict
from lifelong.stages import StageKind


class HalveParams(Strict):
    factor: float = Field(default=0.5, gt=0, le=1)
    """What the final norm's weights are multiplied by."""


class ToyHalve(StageKind):
    """Toy plugin: scales the final norm's weights by `params.factor`; trains nothing."""

    trainable = False
    Params = HalveParams

    def prepare(self, env: Any, index: int) -> Any:
        return None

    def apply(self, env: Any, index: int, prepared: Any, resume: Optional[dict] = None) -> dict:
        w = dict(env.model.named_parameters())["model.norm.weight"]
        with torch.no_grad():
            w.mul_(self.params(env.cfg.stages[index]).factor)
        return {"toy_halved": int(w.numel())}
'''

MERGE = '''
"""A toy merge method from outside lifelong."""
from typing import Any, Optional

import torch

from lifelong.merging import MergeMethod


class ToyMax(MergeMethod):
    """Toy plugin: the element-wise maximum of the models."""

    def merge(self, tensors: list, weights: list, base: Optional[torch.Tensor], ctx: Any) -> torch.Tensor:
        return torch.stack(tensors).amax(dim=0)
'''

EDITOR = '''
"""A toy editor from outside lifelong."""
from typing import Any

from lifelong.config import Strict
from lifelong.editing import EditResult, Editor


class BumpParams(Strict):
    by: float = 1.0
    """Added to the final norm's weights per request."""


class ToyBump(Editor):
    """Toy plugin: adds `by` to the final norm's weights for each request."""

    Params = BumpParams

    def apply(self, model: Any, tok: Any, requests: list) -> EditResult:
        result = EditResult(self.name, list(requests))
        w = dict(model.named_parameters())["model.norm.weight"]
        result.record(model, "model.norm.weight", self.params.by * (0 * w.detach() + 1))
        return result
'''

BENCHMARK = """
from lifelong.benchmarks import Benchmark, BenchmarkParams


class ToyParams(BenchmarkParams):
    rows: int = 8
    \"\"\"Rows per task.\"\"\"


class ToyStream(Benchmark):
    \"\"\"Two yes/no tasks from a plugin.\"\"\"

    Params = ToyParams
    orders = {1: ["p", "q"], 2: ["q", "p"]}
    tasks = ["p", "q"]

    def expand(self, params, base_dir):
        rows = [{"text": f"x{i}", "label": "yes" if i % 2 else "no"} for i in range(params.rows)]
        return [{"name": t, "data": {"rows": rows}, "eval": {"rows": rows}} for t in self.task_list(params)]
"""

TOYS = {  # ls word -> (source, class, registered name)
    "strategies": (STRATEGY, "ToyPull", "toy_pull"),
    "scorers": (SCORER, "ToyShare", "toy_share"),
    "stages": (STAGE, "ToyHalve", "toy_halve"),
    "merges": (MERGE, "ToyMax", "toy_max"),
    "editors": (EDITOR, "ToyBump", "toy_bump"),
    "benchmarks": (BENCHMARK, "ToyStream", "toy_stream"),
}


class Plugins:
    """Writes toy plugins under tmp_path and registers them the two ways a user does; undone at teardown."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.mp = root, monkeypatch
        self.tag = uuid.uuid4().hex[:8]  # module and distribution names unique per test: no import cache
        self.modules: list[str] = []
        self.before = {reg: set(reg._items) for reg in _registries().values()}
        monkeypatch.syspath_prepend(str(root))

    def module(self, source: str, stem: str = "toy") -> str:
        """Write `source` as a top-level module of the user's (not lifelong's) code; return its name."""
        name = f"{stem}_{self.tag}_{len(self.modules)}"
        (self.root / f"{name}.py").write_text(source, encoding="utf-8")
        self.modules.append(name)
        importlib.invalidate_caches()
        return name

    def install(self, entry_points: dict[str, dict[str, str]], dist: str = "toy-plugin") -> str:
        """A distribution as pip installs it: `<name>-<version>.dist-info` with METADATA and
        entry_points.txt on sys.path. Registries forget that they loaded their plugins, as in a new process."""
        dist = f"{dist}-{self.tag}"
        info = self.root / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n", encoding="utf-8")
        (info / "entry_points.txt").write_text(
            "".join(
                f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for g, eps in entry_points.items()
            ),
            encoding="utf-8",
        )
        importlib.invalidate_caches()
        for reg in _registries().values():
            self.mp.setattr(reg, "_plugins_loaded", False)
        return dist

    def add(self, what: str, how: str) -> str:
        """The toy of registry `what` registered by `how` (entry_point | user_code); returns its name."""
        source, cls, name = TOYS[what]
        mod = self.module(source)
        if how == "entry_point":
            self.install({ENTRY_POINT_GROUPS[_registries()[what].kind]: {name: f"{mod}:{cls}"}})
        else:
            _registries()[what].register(name)(getattr(importlib.import_module(mod), cls))
        return name

    def cleanup(self) -> None:
        for reg, names in self.before.items():
            for n in set(reg._items) - names:
                reg.unregister(n)
        for m in self.modules:
            sys.modules.pop(m, None)


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Plugins]:
    (tmp_path / "site").mkdir()
    p = Plugins(tmp_path / "site", monkeypatch)
    yield p
    p.cleanup()


# ---- helpers: what a user does with a method once it is registered ---------------------------------------
def _listed(what: str, name: str, capsys: pytest.CaptureFixture) -> str:
    """The entry of `name` in `lifelong ls what`: its line and the indented lines under it."""
    assert cli(["ls", what]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith(f"{name}:")), None)
    assert start is not None, f"{name} not in `lifelong ls {what}`"
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return "\n".join(lines[start:end])


def _validate(raw: dict, path: Path, capsys: pytest.CaptureFixture) -> str:
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    code = cli(["validate", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _tiny(tmp_path: Path, name: str, n_stages: int = 1, steps: int = 4, **top: Any) -> dict:
    """A one-process tiny run config over 8 eval rows per task, no bootstrap (seconds, not minutes)."""
    raw = tiny_run_config(n_stages=n_stages, steps=steps, name=name, output_dir=str(tmp_path / "runs"), **top)
    raw["eval"] = {"batch_size": 32, "bootstrap": 0, "max_examples": 8}
    for s in raw["stages"]:
        s["data"]["rows"] = s["data"]["rows"][:32]
    return raw


def _run(raw: dict, path: Path, capsys: pytest.CaptureFixture) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    code = cli(["run", str(path), "--quiet"])
    _, err = capsys.readouterr()
    assert code == 0, err
    return Path(raw["output_dir"]) / raw["name"]


def _final_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    tag = (run_dir / "ckpt" / "latest").read_text(encoding="utf-8").strip()
    return load_file(str(run_dir / "ckpt" / tag / "model.safetensors"))


HOW = ["entry_point", "user_code"]


# ---- one test per recipe ------------------------------------------------------------------------------
@pytest.mark.parametrize("how", HOW)
def test_strategy_plugin(how: str, plugins: Plugins, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    name = plugins.add("strategies", how)
    from lifelong.strategies import STRATEGIES

    assert STRATEGIES.get(name).__name__ == "ToyPull"
    assert "pull: float (default 1000.0)" in _listed("strategies", name, capsys)
    raw = _tiny(tmp_path, f"strategy-{how}", strategy=[{"name": name, "pull": 1000.0}], steps=4)
    assert f"strategy {name}" in _validate(raw, tmp_path / "run.yaml", capsys)
    bad = dict(raw, strategy=[{"name": name, "pull": "strong"}])  # its parameters are typed like a built-in's
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad), encoding="utf-8")
    assert cli(["validate", str(tmp_path / "bad.yaml")]) == 2
    assert "strategy.0.pull" in capsys.readouterr().err

    run_dir = _run(raw, tmp_path / "run.yaml", capsys)
    res = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert res["costs"]["task0"]["toy_pull_calls"] >= 4  # its hook ran at every step
    # the penalty's gradient (-pull per weight) dominates the loss's: under Adam every final-norm weight
    # (all 1.0 at init) rises by about lr per step, which the plain loss alone does not do
    norm = _final_weights(run_dir)["model.norm.weight"]
    assert float((norm - 1.0).min()) > 0.5 * 4 * raw["train"]["lr"]


@pytest.mark.parametrize("how", HOW)
def test_scorer_plugin(how: str, plugins: Plugins, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    name = plugins.add("scorers", how)
    from lifelong.eval.scorers import SCORERS

    assert name in SCORERS
    assert "per: float (default 8.0)" in _listed("scorers", name, capsys)
    raw = _tiny(tmp_path, f"scorer-{how}", steps=2)
    raw["stages"][0]["eval"].update(scorer=name, params={"per": 8.0})
    assert "valid" in _validate(raw, tmp_path / "run.yaml", capsys)

    res = json.loads((_run(raw, tmp_path / "run.yaml", capsys) / "results.json").read_text(encoding="utf-8"))
    assert res["tasks"][0]["scorer"] == name and res["tasks"][0]["metric"] == "toy_share"
    assert [row[0] for row in res["matrix"]] == [25.0, 25.0]  # 2 options / 8, in percent, baseline and stage


@pytest.mark.parametrize("how", HOW)
def test_stage_kind_plugin(how: str, plugins: Plugins, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    name = plugins.add("stages", how)
    from lifelong.stages import STAGE_KINDS

    assert name in STAGE_KINDS.names()
    assert "capabilities: trainable=False" in _listed("stages", name, capsys)
    raw = _tiny(tmp_path, f"stage-{how}")
    task = raw["stages"][0]["eval"]
    raw["stages"] = [{"name": "halve", "kind": name, "eval": task, "params": {"factor": 2.0}}]
    with pytest.raises(ConfigError, match=r"stages\.0\.params\.factor: Input should be less than or equal to 1"):
        validate_raw(raw)  # the kind's own parameters are typed and bounded
    raw["stages"][0]["params"] = {"factor": 0.5}  # no data: the kind does not train
    assert "valid (1 stages" in _validate(raw, tmp_path / "run.yaml", capsys)

    run_dir = _run(raw, tmp_path / "run.yaml", capsys)
    res = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert res["costs"]["halve"]["toy_halved"] == 64
    assert _final_weights(run_dir)["model.norm.weight"].eq(0.5).all()  # RMSNorm weights start at 1


@pytest.mark.parametrize("how", HOW)
def test_merge_method_plugin(how: str, plugins: Plugins, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    from lifelong.merging import MERGE_METHODS
    from lifelong.merging.base import TensorContext

    name = plugins.add("merges", how)
    method = MERGE_METHODS.get(name)()
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    assert method.merge([a, b], [1.0, 1.0], None, TensorContext("w")).tolist() == [1.0, 3.0]
    _listed("merges", name, capsys)
    raw = _tiny(tmp_path, f"merge-{how}")
    raw["stages"].append({"name": "merged", "kind": "merge", "merge": {"method": name, "models": ["base", "task0"]}})
    assert "valid (2 stages" in _validate(raw, tmp_path / "run.yaml", capsys)

    from safetensors.torch import load_file

    from lifelong.testing import tiny_llama, tiny_tokenizer

    for seed in (0, 1):  # `lifelong merge` streams the two models' tensors through the toy
        tiny_llama(seed=seed).save_pretrained(str(tmp_path / f"m{seed}"))
        tiny_tokenizer().save_pretrained(str(tmp_path / f"m{seed}"))
    spec = {"merge_method": name, "models": [{"model": str(tmp_path / "m0")}, {"model": str(tmp_path / "m1")}]}
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert cli(["merge", str(tmp_path / "merge.yaml"), "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    merged = {k: v for f in sorted((tmp_path / "out").glob("*.safetensors")) for k, v in load_file(str(f)).items()}
    ins = [load_file(str(tmp_path / f"m{seed}" / "model.safetensors")) for seed in (0, 1)]
    key = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(merged[key], torch.maximum(ins[0][key], ins[1][key]))


@pytest.mark.parametrize("how", HOW)
def test_editor_plugin(how: str, plugins: Plugins, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    from lifelong.editing import edit, parse_request
    from lifelong.testing import tiny_llama, tiny_tokenizer

    name = plugins.add("editors", how)
    request = {"prompt": "The home of {}", "subject": "Kalo", "target_new": "Paris"}
    model = tiny_llama()
    before = model.model.norm.weight.detach().clone()
    result = edit(
        model, tiny_tokenizer(), [parse_request(request, "r0"), parse_request(request, "r1")], method=name, by=0.25
    )
    assert torch.allclose(model.model.norm.weight, before + 0.5) and result.method == name
    result.undo(model)
    assert torch.equal(model.model.norm.weight, before)
    assert "by: float (default 1.0)" in _listed("editors", name, capsys)
    raw = _tiny(tmp_path, f"edit-{how}")
    raw["stages"].append(
        {"name": "facts", "kind": "edit", "edit": {"method": name, "params": {"by": 0.5}}, "data": {"rows": [request]}}
    )
    assert "valid (2 stages" in _validate(raw, tmp_path / "run.yaml", capsys)


@pytest.mark.parametrize("how", HOW)
def test_benchmark_plugin(how: str, plugins: Plugins, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    name = plugins.add("benchmarks", how)
    listed = _listed("benchmarks", name, capsys)
    assert "order 2: q -> p" in listed and "rows: int (default 8)" in listed
    raw = _tiny(tmp_path, f"bench-{how}", steps=2)
    del raw["stages"]
    raw["benchmark"] = {"name": name, "order": 2, "rows": 4}
    out = _validate(raw, tmp_path / "run.yaml", capsys)
    assert "valid (2 stages" in out and [s["name"] for s in yaml.safe_load(out)["stages"]] == ["q", "p"]
    raw["benchmark"]["rows"] = "many"  # its params are typed like a built-in's
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert cli(["validate", str(tmp_path / "bad.yaml")]) == 2
    assert "benchmark.rows: Input should be a valid integer" in capsys.readouterr().err
    raw["benchmark"]["rows"] = 4
    res = json.loads((_run(raw, tmp_path / "run.yaml", capsys) / "results.json").read_text(encoding="utf-8"))
    assert [t["name"] for t in res["tasks"]] == ["q", "p"] and len(res["matrix"]) == 3  # baseline + 2 stages


# ---- how entry points load ------------------------------------------------------------------------------
def test_registries_have_one_group_each_named_like_ls() -> None:
    for what, reg in _registries().items():
        assert reg.group == f"lifelong.{what}" == ENTRY_POINT_GROUPS[reg.kind]


def test_entry_points_load_lazily_once_and_a_module_value_runs_its_decorators(plugins: Plugins) -> None:
    from lifelong.strategies import STRATEGIES, Strategy

    toy = plugins.module(STRATEGY)
    mod = plugins.module(
        f"from lifelong.strategies import STRATEGIES\nfrom {toy} import ToyPull\n\n\n"
        "@STRATEGIES.register('toy_decorated')\nclass Decorated(ToyPull):\n"
        '    """Registered by its own module\'s decorator."""\n',
        stem="decorated",
    )
    dist = plugins.install({"lifelong.strategies": {"any_label": mod, "toy_object": f"{toy}:ToyPull"}})
    STRATEGIES.register("toy_user")(type("UserStrategy", (Strategy,), {}))  # registering loads no plugin
    assert mod not in sys.modules and toy not in sys.modules

    assert {"toy_decorated", "toy_object", "toy_user"} <= set(STRATEGIES.names())  # the first lookup loads
    assert STRATEGIES.get("toy_decorated").__name__ == "Decorated"
    assert STRATEGIES.get("toy_object").registered_name == "toy_object"
    assert STRATEGIES.origin("toy_object") == (
        f"{toy}.ToyPull from entry point 'toy_object = {toy}:ToyPull' "
        f"(group lifelong.strategies) of distribution {dist} 0.1"
    )
    assert STRATEGIES.origin("toy_user") == f"{__name__}.UserStrategy"
    sys.modules.pop(mod)
    STRATEGIES.names()
    assert mod not in sys.modules  # once: later lookups do not load again


def test_no_plugin_installed_leaves_the_registry_as_it_was() -> None:
    reg: Registry[int] = Registry("thing", group=f"lifelong.none_{uuid.uuid4().hex}")
    reg.register("one")(1)
    assert reg.names() == ["one"] and "two" not in reg
    with pytest.raises(ValueError, match="unknown thing 'onf'; did you mean 'one'"):
        reg.get("onf")


def test_a_plugin_that_fails_to_import_names_its_distribution_and_entry_point(
    plugins: Plugins, capsys: pytest.CaptureFixture
) -> None:
    mod = plugins.module("raise RuntimeError('needs a GPU driver')\n", stem="broken")
    dist = plugins.install({"lifelong.strategies": {"broken": f"{mod}:Broken"}}, dist="broken-plugin")
    from lifelong.strategies import STRATEGIES

    for _ in range(2):  # the same clear error at every lookup until the plugin is fixed or uninstalled
        with pytest.raises(ValueError) as err:
            STRATEGIES.get("naive")
        msg = str(err.value)
        assert f"entry point 'broken = {mod}:Broken' (group lifelong.strategies)" in msg
        assert f"distribution {dist} 0.1" in msg and "RuntimeError: needs a GPU driver" in msg
        assert f"pip uninstall {dist}" in msg
    assert cli(["ls", "strategies"]) == 2  # the CLI prints it as one line, no traceback
    err_out = capsys.readouterr().err
    assert err_out.startswith("error: strategy plugin failed to load") and "Traceback" not in err_out


def test_a_plugin_taking_a_name_in_use_is_refused_with_both_origins(plugins: Plugins) -> None:
    mod = plugins.module(STRATEGY)
    dist = plugins.install({"lifelong.strategies": {"naive": f"{mod}:ToyPull"}}, dist="clash-plugin")
    from lifelong.strategies import STRATEGIES

    with pytest.raises(DuplicateNameError) as err:
        STRATEGIES.get("naive")  # any lookup loads the plugins
    msg = str(err.value)
    assert "strategy 'naive' is registered twice: by lifelong.strategies.naive." in msg
    assert f"by {mod}.ToyPull from entry point 'naive = {mod}:ToyPull'" in msg and f"{dist} 0.1" in msg


def test_user_code_taking_a_name_in_use_is_refused_for_every_registry() -> None:
    for reg in _registries().values():
        taken = reg.names()[0]
        with pytest.raises(DuplicateNameError, match=f"{reg.kind} '{taken}' is registered twice: by lifelong"):
            reg.register(taken)(type("Mine", (), {}))
        assert reg.origin(taken).startswith("lifelong.")


def test_import_lifelong_loads_no_registry() -> None:
    """Plugins load at a registry's first lookup; `import lifelong` does not even import the registries."""
    import subprocess

    code = "import sys, lifelong; print(sorted(m for m in sys.modules if m.startswith('lifelong.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
