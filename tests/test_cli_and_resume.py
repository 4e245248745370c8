import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from lifelong.cli import main
from lifelong.testing import tiny_run_config


def write_cfg(tmp_path, name, **kw):
    raw = tiny_run_config(
        {"name": "replay", "fraction": 0.25, "buffer_size": 64}, name=name, output_dir=str(tmp_path / "runs"), **kw
    )
    raw["eval"]["bootstrap"] = 50
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


def no_model_loading(monkeypatch):
    """Make any model load fail loudly: a check that must come first is proven to."""

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("lifelong.runner.load_model_and_tokenizer", boom)


def test_cli_run_show_and_refuse_overwrite(tmp_path, capsys, monkeypatch):
    p = write_cfg(tmp_path, "cli", n_stages=2, steps=3)
    assert main(["run", str(p), "--quiet"]) == 0
    run_dir = tmp_path / "runs" / "cli"
    for f in ("config.yaml", "results.json", "per_example.json", "events.jsonl", "ckpt/latest", "report.html"):
        assert (run_dir / f).exists(), f
    res = json.loads((run_dir / "results.json").read_text())
    assert res["rows"] == ["baseline", "task0", "task1"] and len(res["matrix"][0]) == 2
    assert set(res["metrics"]["score"]["metrics"]) == {"AA", "AIA", "FM", "BWT", "FWT"}
    assert res["metrics"]["score"]["ci95"]["AA"][0] <= res["metrics"]["score"]["metrics"]["AA"]
    assert set(res["costs"]["task0"]) >= {"wall_s", "tokens", "trainable_params", "peak_memory_mb"}
    assert res["costs"]["task1"]["replay_buffer_examples"] > 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["strategy"][0]["fraction"] == 0.25 and saved["name"] == "cli"
    capsys.readouterr()
    assert main(["show", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "results matrix" in out and "FWT" in out and "baseline" in out
    before = (run_dir / "results.json").read_text()
    assert main(["run", str(p), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run_dir / "results.json").read_text() == before  # nothing lost
    assert main(["run", str(p), "--quiet", "--resume", "train.lr=0.5"]) == 2
    assert "config differs" in capsys.readouterr().err
    # --resume of a finished run: said at once, exit 0, nothing loaded, nothing written
    events = (run_dir / "events.jsonl").read_bytes()
    no_model_loading(monkeypatch)
    assert main(["run", str(p), "--quiet", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "already finished" in out and "new run name" in out and "results matrix" in out
    assert (run_dir / "events.jsonl").read_bytes() == events and (run_dir / "results.json").read_text() == before


def test_resume_of_missing_run_is_refused(tmp_path, capsys):
    p = write_cfg(tmp_path, "never", n_stages=2, steps=2)
    assert main(["run", str(p), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_bad_data_is_reported_before_training(tmp_path, capsys):
    raw = tiny_run_config("naive", n_stages=2, steps=2, output_dir=str(tmp_path / "runs"), name="bad")
    data = tmp_path / "s1.jsonl"
    data.write_text('{"text": "t1 abc?", "label": "yes"}\n{"text": "t1 abd?"}\n')
    raw["stages"][1]["data"] = {"path": "s1.jsonl"}
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw))
    assert main(["run", str(p), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "s1.jsonl line 2: field 'label' is missing" in err
    assert not (tmp_path / "runs" / "bad" / "events.jsonl").exists()  # no training happened
    # the failed start made no progress: the same command runs once the file is fixed
    data.write_text('{"text": "t1 abc?", "label": "yes"}\n{"text": "t1 abd?", "label": "no"}\n')
    assert main(["run", str(p), "--quiet"]) == 0
    assert json.loads((tmp_path / "runs" / "bad" / "results.json").read_text())["matrix"][-1][0] is not None


@pytest.mark.parametrize("progress", ["ckpt", "results.json", "keep"])
def test_a_run_that_made_progress_is_never_overwritten(tmp_path, capsys, monkeypatch, progress):
    p = write_cfg(tmp_path, "made", n_stages=2, steps=2)
    run_dir = tmp_path / "runs" / "made"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("name: made\n")
    (run_dir / progress).mkdir() if progress != "results.json" else (run_dir / progress).write_text("{}")
    no_model_loading(monkeypatch)
    assert main(["run", str(p), "--quiet"]) == 2
    assert "already exists; continue it with --resume" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_text() == "name: made\n"


@pytest.mark.parametrize("case", ["under-a-file", "is-a-file", "proc", "read-only"])
def test_unwritable_output_folder_is_one_line_before_loading(tmp_path, capsys, monkeypatch, case):
    from pathlib import Path

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    name = "r"
    if case == "under-a-file":
        out, words = blocker / "runs", "is under"
    elif case == "is-a-file":
        out, name, words = tmp_path, "a-file", "is a file"
    elif case == "proc":
        if not os.path.isdir("/proc"):
            pytest.skip("no /proc on this system")
        out, words = Path("/proc/lifelong-no-such-folder"), "cannot be written"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into a 0o500 folder; the cases under a file and under /proc cover root")
        out, words = tmp_path / "ro", "Permission denied"
        out.mkdir()
        out.chmod(0o500)
    raw = tiny_run_config("naive", n_stages=1, steps=1, output_dir=str(out), name=name)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    no_model_loading(monkeypatch)
    try:
        assert main(["run", str(p), "--quiet"]) == 2
    finally:
        if case == "read-only":
            out.chmod(0o700)
    err = capsys.readouterr().err
    assert err.startswith("error: run folder") and words in err and str(out) in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_merge_and_edit_out_that_cannot_be_written_fail_before_loading(tmp_path, capsys):
    from lifelong.testing import tiny_llama

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    tiny_llama().save_pretrained(str(tmp_path / "m"))
    capsys.readouterr()
    y = tmp_path / "merge.yaml"
    y.write_text(yaml.safe_dump({"merge_method": "linear", "models": [{"model": "m"}, {"model": "m"}]}))
    outs = [(blocker / "merged", "is a file")] + (
        [("/proc/lifelong-x/merged", "cannot be written")] if os.path.isdir("/proc") else []
    )
    for out, words in outs:
        assert main(["merge", str(y), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: the folder of --out") and words in err and err.count("\n") == 1, err
    # edit: the model path does not exist, so the --out check provably comes before any loading
    for out, words in [(blocker, "is a file"), (blocker / "edited", "is under")] + (
        [("/proc/lifelong-x", "cannot be written")] if os.path.isdir("/proc") else []
    ):
        assert main(["edit", str(tmp_path / "edits.jsonl"), "--model", str(tmp_path / "none"), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --out") and words in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_kill_9_mid_stage_then_resume_gives_the_same_matrix(tmp_path):
    common = dict(n_stages=3, steps=24, train={"checkpoint_every": 4})
    ref_cfg = write_cfg(tmp_path, "ref", **common)
    killed_cfg = write_cfg(tmp_path, "killed", **common)
    assert main(["run", str(ref_cfg), "--quiet"]) == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifelong", "run", str(killed_cfg), "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    events = tmp_path / "runs" / "killed" / "events.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if events.exists() and any(
            json.loads(l).get("type") == "checkpoint" and json.loads(l)["stage"] == 1
            for l in events.read_text().splitlines()
            if l.strip()
        ):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    time.sleep(0.3)  # land somewhere after the checkpoint, mid-step
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads((tmp_path / "runs" / "killed" / "results.json").read_text())
    assert done["matrix"][-1][0] is None  # it really was interrupted
    assert main(["run", str(killed_cfg), "--quiet", "--resume"]) == 0
    ref = json.loads((tmp_path / "runs" / "ref" / "results.json").read_text())
    got = json.loads((tmp_path / "runs" / "killed" / "results.json").read_text())
    assert got["matrix"] == ref["matrix"]
    assert got["metrics"]["score"]["metrics"] == ref["metrics"]["score"]["metrics"]
    kinds = [json.loads(l)["type"] for l in events.read_text().splitlines() if l.strip()]
    assert "resume" in kinds


def test_a_run_saved_before_new_settings_existed_still_resumes(tmp_path, capsys):
    """A config.yaml written by an older version lacks fields added since; they take their defaults."""
    cfg = write_cfg(tmp_path, "old", n_stages=2, steps=2)
    assert main(["run", str(cfg), "--quiet"]) == 0
    saved = tmp_path / "runs" / "old" / "config.yaml"
    raw = yaml.safe_load(saved.read_text())
    raw.pop("export")  # as written before `export` existed
    raw["train"].pop("keep_checkpoints")
    saved.write_text(yaml.safe_dump(raw, sort_keys=False))
    capsys.readouterr()
    assert main(["run", str(cfg), "--quiet", "--resume"]) == 0
    assert "already finished" in capsys.readouterr().out


@pytest.mark.parametrize("hard", [False, True])
def test_the_entry_point_exits_with_mains_code_and_flushes_before_a_hard_exit(hard):
    """`lifelong` (the console script, `python -m lifelong`) exits with main's code; after a multi-process
    run closed its process group it exits without interpreter teardown, and what was printed still arrives
    (an unterminated line in a pipe's buffer, and an atexit handler that must not run)."""
    code = (
        "import atexit, lifelong.cli as c\n"
        "atexit.register(lambda: print('teardown ran', flush=True))\n"
        f"def fake(argv=None):\n    c.HARD_EXIT = {hard}\n    print('results written', end='')\n    return 3\n"
        "c.main = fake\nc.entry()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("results written")
    assert ("teardown ran" in proc.stdout) is not hard
