"""`lifelong edit` for long runs, on the session's tiny fact model: the progress bar's running metrics,
per-request rows written as each group finishes, warnings and counts for edits that did not converge, the
refusals of --resume, editor state round trips (GRACE, MEND), and located JSON errors.
(kill -9 and resume: tests/test_edit_cli_resume.py)"""

import io
import json

import pytest
import torch
from rich.console import Console

from lifelong.cli import main
from lifelong.editing import build_editor, load_requests
from lifelong.editing.protocol import run_protocol
from lifelong.testing import fact_requests

GRACE = ["layer=3", "eps_init=0.05"]
STUCK = ["layer=3", "eps_init=0.05", "steps=1", "lr=1e-5", "stop_loss=0.001"]  # one tiny step: cannot converge


def write_requests(tmp_path, fs, n=4, start=0, name="edits.jsonl"):
    rows = fact_requests(fs.facts, list(fs.facts)[start : start + n])
    for i, r in enumerate(rows):
        r["id"] = f"e{start + i}"
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def edit(fs, req, out, *extra):
    return main(["edit", str(req), "--model", fs.path, "--out", str(out), "--quiet", *extra])


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- invalid JSON: file, line and the right column ----------------------------------------------------------
def test_invalid_json_names_the_file_line_and_column(tmp_path, fact_setup):
    good = json.dumps(fact_requests(fact_setup.facts, list(fact_setup.facts)[:1])[0])
    line = '{"prompt": "The home of {}", "subject": "Kal" "target_new": "Rome"}'
    assert line.index('"target_new"') + 1 == 47  # the column the decoder stops at
    p = tmp_path / "edits.jsonl"
    p.write_text(good + "\n" + line + "\n" + good + "\n")
    with pytest.raises(ValueError) as e:
        load_requests(p)
    assert str(e.value).startswith(f"{p} line 2: not valid JSON (Expecting ',' delimiter at column 47)")
    cut = '{"prompt": "The home of {}", "subject": "Kalo"'  # the object never closes: the end of line 3
    p.write_text(good + "\n" + good + "\r\n" + cut + "\r\n")
    with pytest.raises(ValueError) as e:
        load_requests(p)
    assert f"{p} line 3: not valid JSON (Expecting ',' delimiter at column {len(cut) + 1}, the end of the line)" in str(
        e.value
    )


# ---- progress, per-request rows, warnings -----------------------------------------------------------------
def test_bar_shows_running_efficacy_and_not_converged_and_warns_per_edit(fact_setup):
    model, tok = fact_setup.load(), fact_setup.tok
    reqs = load_requests(fact_requests(fact_setup.facts, list(fact_setup.facts)[:3]))
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=250)
    editor = build_editor("grace", dict(layer=3, eps_init=0.05, steps=1, lr=1e-5, stop_loss=0.001))
    seen = []
    out = run_protocol(
        model, tok, editor, reqs, bootstrap=0, console=console, on_group=lambda st, r, res: seen.append(r)
    )
    text = buf.getvalue()
    assert "efficacy[cf_prob]" in text and "not converged 3" in text, text
    for r in reqs:  # one warning per edit, naming it, its final loss and the threshold
        assert f"(subject {r.subject!r}) did not converge: final target NLL" in text
    assert text.count("> threshold 0.001") == 3
    assert [len(r) for r in seen] == [1, 1, 1] and all(r[0]["converged"] is False for r in seen)
    assert len(out["not_converged"]) == 3 and all(b["loss"] > b["threshold"] for b in out["not_converged"])
    quiet = io.StringIO()
    run_protocol(fact_setup.load(), tok, build_editor("grace", dict(layer=3, eps_init=0.05)), reqs[:1], quiet=True,
                 console=Console(file=quiet, force_terminal=True), bootstrap=0)  # fmt: skip
    assert quiet.getvalue() == ""  # --quiet: no bar (and this edit converged: no warning)


def test_cli_writes_rows_as_it_goes_and_counts_edits_that_did_not_converge(tmp_path, fact_setup, capsys):
    req = write_requests(tmp_path, fact_setup, n=3)
    out = tmp_path / "stuck"
    assert edit(fact_setup, req, out, "--method", "grace", *STUCK) == 0
    captured = capsys.readouterr()
    for i in range(3):
        assert f"warning: edit {i + 1} ('e{i}') did not converge: final target NLL" in captured.err
    assert "Not converged: 3 of 3 edits" in captured.out
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["not_converged"] == 3 and [b["id"] for b in meta["not_converged_edits"]] == ["e0", "e1", "e2"]
    assert all(b["loss"] > b["threshold"] == 0.001 for b in meta["not_converged_edits"])
    assert (
        "Not converged: 3 of 3 edits (final loss above the threshold): e0 (target NLL"
        in (out / "metrics.md").read_text()
    )
    immediate = rows(out / "per_request.jsonl")  # scored right after each edit
    assert [r["index"] for r in immediate] == [0, 1, 2] and all(r["converged"] is False for r in immediate)
    final = rows(out / "final_per_request.jsonl")  # all edits re-scored at the end
    assert [r["id"] for r in final] == ["e0", "e1", "e2"] and "converged" not in final[0]
    assert json.loads((out / "run.json").read_text())["status"] == "finished" and not (out / "state").exists()
    assert (out / "editor_state.pt").exists()  # GRACE's edits are its codebook
    ok = tmp_path / "ok"
    assert edit(fact_setup, req, ok, "--method", "grace", *GRACE) == 0
    assert "Not converged: 0 of 3 edits" in (ok / "metrics.md").read_text()
    assert json.loads((ok / "metrics.json").read_text())["not_converged"] == 0
    assert all(r["converged"] for r in rows(ok / "per_request.jsonl"))
    assert sum(r["efficacy[top1]"] for r in rows(ok / "per_request.jsonl")) > sum(
        r["efficacy[top1]"] for r in immediate
    )


def test_ft_that_cannot_converge_is_warned_about(tmp_path, fact_setup, capsys):
    req = write_requests(tmp_path, fact_setup, n=2)
    out = tmp_path / "ft"
    assert (
        edit(fact_setup, req, out, "--method", "ft", "--group", "1", "layer=0", "steps=1", "norm_constraint=1e-6") == 0
    )
    meta = json.loads((out / "metrics.json").read_text())
    if not meta["convergence_recorded"]:
        pytest.skip("ft.py records no convergence yet (EditResult.note_convergence)")
    assert meta["not_converged"] == 2 and "did not converge" in capsys.readouterr().err


# ---- an interrupted run (a crash inside the run; kill -9 itself: test_edit_cli_resume.py) --------------------
class Crash(Exception):
    pass


def crash_at(monkeypatch, point, nth):
    import lifelong.editing.api as api

    count = {"n": 0}

    def fault(name):
        if name == point:
            count["n"] += 1
            if count["n"] == nth:
                raise Crash(point)

    monkeypatch.setattr(api, "fault_point", fault)


def test_resume_after_a_crash_equals_an_uninterrupted_run_and_refuses_other_settings(
    tmp_path, fact_setup, monkeypatch, capsys
):
    req = write_requests(tmp_path, fact_setup, n=5)
    ref, out = tmp_path / "ref", tmp_path / "out"
    args = ["--method", "ft", "--group", "2", "--every", "2", "layer=0", "steps=5", "lr=1e-2", "norm_constraint=1e-2"]
    assert edit(fact_setup, req, ref, *args) == 0
    crash_at(monkeypatch, "edit:group", 2)  # the second group's rows appended, its state not saved
    with pytest.raises(Crash):
        edit(fact_setup, req, out, *args)
    monkeypatch.undo()
    assert len(rows(out / "per_request.jsonl")) == 4 and (out / "state" / "latest").read_text() == "2"
    capsys.readouterr()
    refusals = [
        ([], "holds an interrupted edit run (2 of 5 requests done); add --resume"),
        (["--resume", "--method", "grace"], "method grace (was ft)"),
        (["--resume", *args[:-1], "norm_constraint=0.02"], "params norm_constraint=0.02 (was 0.01)"),
        (["--resume", *args[:2], "--group", "1", *args[4:]], "group 1 (was 2)"),
    ]
    for extra, words in refusals:
        assert edit(fact_setup, req, out, *(extra or args)) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    other = write_requests(tmp_path, fact_setup, n=5, start=5, name="other.jsonl")
    assert edit(fact_setup, other, out, "--resume", *args) == 2
    assert "the requests file differs" in capsys.readouterr().err
    changed = fact_setup.load()
    with torch.no_grad():
        changed.model.norm.weight[0] += 1
    changed.save_pretrained(str(tmp_path / "changed"))
    fact_setup.tok.save_pretrained(str(tmp_path / "changed"))
    assert (
        main(["edit", str(req), "--model", str(tmp_path / "changed"), "--out", str(out), "--quiet", "--resume", *args])
        == 2
    )
    assert "on another model" in capsys.readouterr().err
    assert edit(fact_setup, req, out, "--resume", *args) == 0
    assert (out / "per_request.jsonl").read_text() == (ref / "per_request.jsonl").read_text()
    assert (out / "final_per_request.jsonl").read_text() == (ref / "final_per_request.jsonl").read_text()
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (ref, out))
    assert a["summary"] == b["summary"] and a["retention"] == b["retention"] and len(a["retention"]) == 3
    from safetensors.torch import load_file

    for name in ("deltas.safetensors", "model/model.safetensors"):
        x, y = load_file(str(ref / name)), load_file(str(out / name))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert edit(fact_setup, req, out, "--resume", *args) == 2
    assert "holds a finished edit run (5 requests); there is nothing to resume" in capsys.readouterr().err
    assert edit(fact_setup, req, out, *args) == 2
    assert "choose another --out" in capsys.readouterr().err


def test_in_context_sequential_runs_are_not_resumable(tmp_path, fact_setup, monkeypatch, capsys):
    pytest.importorskip("sentence_transformers")
    req = write_requests(tmp_path, fact_setup, n=2)
    out = tmp_path / "ic"
    crash_at(monkeypatch, "edit:group", 1)
    try:
        edit(fact_setup, req, out, "--method", "in_context")
    except (Crash, ValueError, OSError) as e:  # no embedding model offline: nothing to test
        if not isinstance(e, Crash):
            pytest.skip(f"in_context unavailable: {e}")
    monkeypatch.undo()
    capsys.readouterr()
    assert edit(fact_setup, req, out, "--method", "in_context", "--resume") == 2
    assert "cannot be continued exactly" in capsys.readouterr().err


# ---- editor state ------------------------------------------------------------------------------------------
def test_grace_state_dict_restores_the_codebook_on_a_fresh_model(fact_setup):
    tok = fact_setup.tok
    reqs = load_requests(fact_requests(fact_setup.facts, list(fact_setup.facts)[:4]))
    model = fact_setup.load()
    editor = build_editor("grace", dict(layer=3, eps_init=0.05))
    editor.edit(model, tok, reqs)
    state = editor.state_dict()
    assert len(state["codebooks"]["3"]["labels"]) == 4
    ids = torch.tensor([tok(r.text)["input_ids"] for r in reqs])
    with torch.no_grad():
        want = model(input_ids=ids).logits
    fresh, other = fact_setup.load(), build_editor("grace", dict(layer=3, eps_init=0.05))
    with torch.no_grad():
        assert not torch.equal(fresh(input_ids=ids).logits, want)
    other.load_state_dict(state, fresh)
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=ids).logits, want)
    more = load_requests(fact_requests(fact_setup.facts, list(fact_setup.facts)[4:6]))
    editor.edit(model, tok, more)  # both continue identically
    other.edit(fresh, tok, more)
    for k, v in editor.state_dict()["codebooks"]["3"].items():
        assert (
            torch.equal(v, other.state_dict()["codebooks"]["3"][k])
            if torch.is_tensor(v)
            else v == other.state_dict()["codebooks"]["3"][k]
        )
    other.load_state_dict({}, fresh)  # an empty state: no codebook, the model as it was
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=ids).logits, fact_setup.load()(input_ids=ids).logits)


def test_mend_state_dict_carries_the_trained_editor(tmp_path, fact_setup):
    from lifelong.editing.mend import MendEditor, MendParams

    tok = fact_setup.tok
    train = fact_requests(fact_setup.facts, list(fact_setup.facts)[:6])
    reqs = load_requests(fact_requests(fact_setup.facts, list(fact_setup.facts)[8:9]))
    a = MendEditor(MendParams(editor_path=str(tmp_path / "mend"), steps=5), train_requests=train)
    m1 = fact_setup.load()
    d1 = a.edit(m1, tok, reqs).deltas
    state = a.state_dict()
    assert set(state) == {"net", "meta"}
    b = MendEditor(MendParams(editor_path=str(tmp_path / "elsewhere"), steps=5))  # no editor there, no training data
    m2 = fact_setup.load()
    b.load_state_dict(state, m2)
    d2 = b.edit(m2, tok, reqs).deltas
    assert d1.keys() == d2.keys() and all(torch.equal(d1[k], d2[k]) for k in d1)
    assert not (tmp_path / "elsewhere").exists()
