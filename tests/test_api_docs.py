"""docs/api.md is tested as documented: its ```python blocks run in order, in one namespace, in a fresh folder."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_every_example_in_docs_api_runs(tmp_path, monkeypatch):
    code = blocks(DOC.read_text(encoding="utf-8"))
    assert len(code) >= 7  # load, run, custom strategy, open, models out, merge, edit
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_api"}
    out = io.StringIO()
    for k, block in enumerate(code):
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"{DOC}:block{k}", "exec"), namespace)  # noqa: S102 (our own documentation)
    printed = out.getvalue()
    assert "nan is not a usable number" in printed  # the documented error is the real one
    record = namespace["record"]
    assert record.rows == ["baseline", "task0", "task1"] and record.finished
    from lifelong.strategies import STRATEGIES

    custom = namespace["custom"]  # the custom strategy's penalty ran at every step of both stages
    assert custom.costs["task1"]["pull_calls"] == 2 * custom.costs["task1"]["steps"] and custom.metrics
    assert "pull_to_start" not in STRATEGIES
    assert (tmp_path / "runs" / "doc-custom" / "report.html").exists()
    assert namespace["lineage"]["stage"] == "task1" and (tmp_path / "exported" / "config.json").exists()
    assert any(m.stage == "task1" for m in namespace["run"].stage_models())
    scored = namespace["scored"]  # lifelong eval from the API: a score and a CI per task, readable as a run
    assert [t["name"] for t in scored.tasks] == ["yesno", "prose"] and all(t["ci95"] for t in scored.tasks)
    assert namespace["api"].open_run(tmp_path / "evals" / "m0").score("prose", "model") == scored.score("prose")
