"""kill -9 of a `lifelong edit` run mid-way (a subprocess killing itself at a named point, lifelong.faults),
then `--resume`: the per-request rows, the final scores and the final weights (or GRACE's codebook) equal
those of an uninterrupted run, and the killed run kept every edit finished before the kill.

Points: `edit:group` (a group's rows appended to per_request.jsonl, its state not yet saved: the rows are
redone, not duplicated), `edit:state` (inside the state save: some files written, not renamed) and
`write:latest` (the new state folder in place, `state/latest` not yet moved)."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from lifelong.cli import main
from lifelong.testing import fact_requests

pytestmark = pytest.mark.slow  # subprocesses (about 6 s each); CI runs them


def write_requests(tmp_path, fs, n):
    rows = fact_requests(fs.facts, list(fs.facts)[:n])
    for i, r in enumerate(rows):
        r["id"] = f"e{i}"
    p = tmp_path / "edits.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def kill_at(args, fault):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LIFELONG_FAULT": fault, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lifelong", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=600,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, (fault, proc.returncode, proc.stderr.decode()[-2000:])


def lines(path):
    return path.read_text().splitlines()


CASES = [
    ("ft", ["--group", "1", "layer=0", "steps=5", "lr=1e-2", "norm_constraint=1e-2"], "edit:group:3", 3),
    (
        "ft",
        ["--group", "2", "--every", "2", "layer=0", "steps=5", "lr=1e-2", "norm_constraint=1e-2"],
        "edit:state:2",
        4,
    ),
    ("grace", ["layer=3", "eps_init=0.05"], "write:latest:4", 4),
    ("rome", ["layer=0", "n_prefixes=2", "v_steps=8", "stats.tokens=20000"], "edit:group:3", 3),  # via its state_dict
]


@pytest.mark.parametrize("method,extra,fault,kept", CASES, ids=["ft-group", "ft-state", "grace-latest", "rome-group"])
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, fact_setup, monkeypatch, method, extra, fault, kept):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    req = write_requests(tmp_path, fact_setup, 6)
    if method == "rome":
        extra = extra + [f"stats.corpus.path={fact_setup.corpus}"]
    common = [str(req), "--model", fact_setup.path, "--method", method, "--quiet", *extra]
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main(["edit", *common, "--out", str(ref)]) == 0
    kill_at(["edit", *common, "--out", str(out)], fault)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "running"  # recognisably unfinished
    assert not (out / "metrics.json").exists()
    before = lines(out / "per_request.jsonl")
    assert before[:kept] == lines(ref / "per_request.jsonl")[:kept]  # every edit finished before the kill is kept
    assert main(["edit", *common, "--out", str(out), "--resume"]) == 0
    assert lines(out / "per_request.jsonl") == lines(ref / "per_request.jsonl")
    assert lines(out / "final_per_request.jsonl") == lines(ref / "final_per_request.jsonl")
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (ref, out))
    assert a["summary"] == b["summary"] and a["retention"] == b["retention"] and a["immediate"] == b["immediate"]
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert not (out / "state").exists() and not [p for p in out.rglob("*") if ".tmp" in p.name]
    if method == "grace":
        x, y = (torch.load(d / "editor_state.pt", weights_only=True)["codebooks"]["3"] for d in (ref, out))
        assert len(x["labels"]) == 6
        assert all(torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k] for k in x)
        return
    for name in ("deltas.safetensors", "model/model.safetensors"):
        x, y = load_file(str(ref / name)), load_file(str(out / name))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name
    deltas = load_file(str(out / "deltas.safetensors"))
    assert deltas and all((d != 0).any() for d in deltas.values())  # the edits changed weights
