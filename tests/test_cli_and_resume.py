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
    raw = tiny_run_config({"name": "replay", "fraction": 0.25, "buffer_size": 64}, name=name,
                          output_dir=str(tmp_path / "runs"), **kw)
    raw["eval"]["bootstrap"] = 50
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


def test_cli_run_show_and_refuse_overwrite(tmp_path, capsys):
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


def test_resume_of_missing_run_is_refused(tmp_path, capsys):
    p = write_cfg(tmp_path, "never", n_stages=2, steps=2)
    assert main(["run", str(p), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_bad_data_is_reported_before_training(tmp_path, capsys):
    raw = tiny_run_config("naive", output_dir=str(tmp_path / "runs"), name="bad")
    data = tmp_path / "s1.jsonl"
    data.write_text('{"text": "t1 abc?", "label": "yes"}\n{"text": "t1 abd?"}\n')
    raw["stages"][1]["data"] = {"path": "s1.jsonl"}
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw))
    assert main(["run", str(p), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "s1.jsonl line 2: field 'label' is missing" in err
    assert not (tmp_path / "runs" / "bad" / "events.jsonl").exists()  # no training happened


@pytest.mark.slow
def test_kill_9_mid_stage_then_resume_gives_the_same_matrix(tmp_path):
    common = dict(n_stages=3, steps=24, train={"checkpoint_every": 4})
    ref_cfg = write_cfg(tmp_path, "ref", **common)
    killed_cfg = write_cfg(tmp_path, "killed", **common)
    assert main(["run", str(ref_cfg), "--quiet"]) == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "lifelong", "run", str(killed_cfg), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    events = tmp_path / "runs" / "killed" / "events.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if events.exists() and any(json.loads(l).get("type") == "checkpoint" and json.loads(l)["stage"] == 1
                                   for l in events.read_text().splitlines() if l.strip()):
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
