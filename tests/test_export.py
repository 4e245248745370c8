"""Models out of a run (issue 15 items 1-3): exports that plain transformers / PEFT load with the run's logits,
model cards and lineage, `lifelong export` / `show` / `runs`, `start_from` by stage name, checkpoint retention,
adapter-only checkpoints that resume exactly, and an export cut by a kill redone on `--resume`."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file, load_model
from transformers import AutoModelForCausalLM

from lifelong.cli import main
from lifelong.models.export import content_hash
from lifelong.runner import Run
from lifelong.testing import tiny_llama, tiny_run_config, tiny_tokenizer
from lifelong.validation import validate_raw

IDS = [[1, 33, 5, 40, 14, 15, 86, 70]]
"""One input for every logits comparison."""

LOAD = r"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
jobs, out = json.loads(sys.argv[1]), {}
ids = torch.tensor(json.loads(sys.argv[2]))
for key, kind, path, base in jobs:
    AutoTokenizer.from_pretrained(path)  # the tokenizer files load too
    if kind == "hf":
        model = AutoModelForCausalLM.from_pretrained(path)
    else:
        from peft import PeftModel
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), path)
    with torch.no_grad():
        out[key] = model.eval()(ids).logits.tolist()
assert not any(m == "lifelong" or m.startswith("lifelong.") for m in sys.modules), "lifelong was imported"
print(json.dumps(out))
"""


def plain_logits(jobs: list[tuple[str, str, str, str]]) -> dict[str, torch.Tensor]:
    """Logits of exports loaded by a fresh interpreter that imports transformers / PEFT and no lifelong."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", LOAD, json.dumps(jobs), json.dumps(IDS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {k: torch.tensor(v) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.tensor(IDS)).logits


def stage_end_logits(cfg) -> tuple[Run, dict[str, torch.Tensor]]:
    """Run `cfg`, recording the run's model's logits as each stage ends (before any export is written)."""
    seen: dict[str, torch.Tensor] = {}
    holder: list[Run] = []

    def on_event(e: dict) -> None:
        if e["type"] == "stage_end":
            seen[cfg.stages[e["stage"]].name] = logits(holder[0].model)

    run = Run(cfg, quiet=True, callbacks=[on_event])
    holder.append(run)
    run.execute()
    return run, seen


def config(tmp_path, strategy="naive", n_stages=2, steps=3, **kw):
    raw = tiny_run_config(strategy, n_stages=n_stages, steps=steps, output_dir=str(tmp_path / "runs"), **kw)
    raw["eval"]["bootstrap"] = 0
    return raw


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A tiny llama with its tokenizer as a Hugging Face folder: the base PEFT adapters name."""
    path = tmp_path_factory.mktemp("base") / "tiny"
    tiny_llama().save_pretrained(str(path))
    tiny_tokenizer().save_pretrained(str(path))
    return str(path)


def test_hf_exports_of_a_naive_run_load_with_plain_transformers(tmp_path, capsys):
    raw = config(tmp_path, name="naive", train={"checkpoint_every": 1, "keep_checkpoints": 3})
    raw["export"] = {"stages": "all"}
    run, ref = stage_end_logits(validate_raw(raw))
    d = run.run_dir
    got = plain_logits([(s, "hf", str(d / "models" / s), "") for s in ("task0", "task1")])
    for s in ("task0", "task1"):
        assert torch.equal(got[s], ref[s]), s  # same weights, same computation: bit for bit
        for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "README.md"):
            assert (d / "models" / s / f).is_file(), (s, f)
    assert not torch.equal(ref["task0"], ref["task1"])  # each export is its own stage's model
    # lineage: parent chain with content hashes, recomputable from the files
    lin0, lin1 = (json.loads((d / "models" / s / "lineage.json").read_text()) for s in ("task0", "task1"))
    assert lin0["parent"] == {"name": "base", "content_hash": None} and lin0["base"]["tiny"] == "llama"
    assert lin1["parent"] == {"name": "task0", "content_hash": lin0["content_hash"]}
    assert lin1["content_hash"] == content_hash(d / "models" / "task1") != lin0["content_hash"]
    assert lin0["config_hash"] == lin1["config_hash"] and lin1["run"] == "naive" and lin1["format"] == "hf"
    # the card: base, stream so far, strategy, matrix rows baseline..stage only
    card0 = (d / "models" / "task0" / "README.md").read_text()
    assert "| baseline |" in card0 and "| task0 |" in card0 and "| task1 |" not in card0.split("## Results")[1]
    assert "`naive`" in card0 and "tiny `llama`" in card0 and "accuracy ↑" in card0
    # retention: the newest 3 of s0-step1, s0-step2, s0-end, s1-step1, s1-step2, s1-end
    assert sorted(p.name for p in (d / "ckpt").iterdir() if p.is_dir()) == [
        "stage1-end",
        "stage1-step1",
        "stage1-step2",
    ]
    # disk per stage in the costs, the export's size among them
    res = json.loads((d / "results.json").read_text())
    for s in ("task0", "task1"):
        c = res["costs"][s]
        assert c["checkpoint_mb"] > 0 and c["export_mb"] == pytest.approx(
            sum(f.stat().st_size for f in (d / "models" / s).rglob("*") if f.is_file()) / 2**20
        )
        assert c["disk_mb"] == pytest.approx(c["checkpoint_mb"] + c["export_mb"])
    capsys.readouterr()
    assert main(["show", str(d)]) == 0
    out = capsys.readouterr().out
    assert "cost per stage (disk in MiB)" in out and "stage models" in out and lin1["content_hash"][:12] in out
    assert main(["runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "naive" in out and "2/2" in out and "task0: hf export" in out
    # after the fact: task0's export is copied; peft is refused with the reason; a missing stage says how
    assert main(["export", str(d), "--stage", "task0", "--out", str(tmp_path / "t0")]) == 0
    assert content_hash(tmp_path / "t0") == lin0["content_hash"]
    assert main(["export", str(d), "--out", str(tmp_path / "p"), "--format", "peft"]) == 2
    assert "cannot export peft" in capsys.readouterr().err
    shutil.rmtree(d / "models" / "task0")
    assert main(["export", str(d), "--stage", "task0", "--out", str(tmp_path / "t0b")]) == 2
    err = capsys.readouterr().err
    assert "weights of stage 'task0' are not in the run directory" in err and "export.stages: all" in err
    assert main(["export", str(d), "--stage", "task1", "--out", str(tmp_path / "t0")]) == 2  # never overwrites
    assert "not empty" in capsys.readouterr().err


def test_peft_and_merged_exports_of_a_lora_run_load_with_plain_peft(tmp_path, tiny_base):
    raw = config(tmp_path, {"name": "lora", "r": 4}, name="lora")
    raw["model"] = {"path": tiny_base}
    raw["export"] = {"stages": "all", "format": "peft", "merged": True}
    run = Run(validate_raw(raw), quiet=True)
    run.execute()
    d = run.run_dir
    jobs = [
        (f"{s}/{k}", k, str(d / "models" / s / ("merged" if k == "hf" else "")), tiny_base)
        for s in ("task0", "task1")
        for k in ("peft", "hf")
    ]
    got = plain_logits(jobs)
    run.model.base_model.enable_adapter_layers()
    for i, s in enumerate(("task0", "task1")):
        run.model.base_model.set_adapter(f"stage{i}")  # earlier adapters are frozen: this is stage i's model
        ref = logits(run.model)
        for k in ("peft", "hf"):
            assert torch.allclose(got[f"{s}/{k}"], ref, atol=1e-6, rtol=0), (s, k)
        lin = json.loads((d / "models" / s / "lineage.json").read_text())
        assert lin["format"] == "peft" and lin["adapters"] == [f"stage{i}"] and lin["base"]["path"] == tiny_base
        assert json.loads((d / "models" / s / "adapter_config.json").read_text())["base_model_name_or_path"]
        assert "PeftModel.from_pretrained" in (d / "models" / s / "README.md").read_text()
    assert not torch.allclose(got["task0/peft"], got["task1/peft"])
    # adapter-only checkpoints: the stage-end checkpoint holds the adapters, not the base
    ck = d / "ckpt" / "stage1-end"
    held = load_file(str(ck / "model.safetensors"))
    assert held and all("lora_" in n for n in held)
    assert json.loads((ck / "meta.json").read_text())["weights"]["frozen"] == "start"
    full = sum(t.numel() * t.element_size() for t in run.model.state_dict().values())
    assert (ck / "model.safetensors").stat().st_size < full / 4


def test_lora_resume_from_an_adapter_only_mid_stage_checkpoint_is_exact(tmp_path, tiny_base):
    """Reference run keeping every checkpoint; then `latest` is moved back to stage 1's step 2 (its end, row
    and export discarded, as a kill there leaves them) and the run resumes: same matrix, same export bytes."""
    raw = config(tmp_path, {"name": "lora", "r": 4}, name="resume", steps=4)
    raw["model"] = {"path": tiny_base}
    raw["train"].update(checkpoint_every=2, keep_checkpoints=10)
    cfg = validate_raw(raw)
    Run(cfg, quiet=True).execute()
    d = tmp_path / "runs" / "resume"
    ref = json.loads((d / "results.json").read_text())
    ref_hash = json.loads((d / "models" / "task1" / "lineage.json").read_text())["content_hash"]
    assert sorted(p.name for p in (d / "ckpt").iterdir() if p.is_dir()) == [
        "stage0-end",
        "stage0-step2",
        "stage1-end",
        "stage1-step2",
    ]
    step = d / "ckpt" / "stage1-step2"
    assert all("lora_" in n for n in load_file(str(step / "model.safetensors")))
    shutil.rmtree(d / "ckpt" / "stage1-end")
    shutil.rmtree(d / "models")
    (d / "ckpt" / "latest").write_text("stage1-step2")
    events = (d / "events.jsonl").read_text().splitlines()
    (d / "events.jsonl").write_text("\n".join(e for e in events if json.loads(e)["type"] != "end") + "\n")
    run = Run(cfg, resume=True, quiet=True)
    out = run.execute()
    assert out.matrix == ref["matrix"]
    assert json.loads((d / "models" / "task1" / "lineage.json").read_text())["content_hash"] == ref_hash


def test_start_from_an_earlier_stage_and_a_new_run_from_an_export_by_name(tmp_path):
    raw = config(tmp_path, name="branch", n_stages=3)
    raw["stages"][2]["start_from"] = "task0"  # two stages back
    raw["stages"][2]["train"] = {"lr": 1e-12}  # barely moves: its model is task0's
    raw["export"] = {"stages": "all"}
    run, ref = stage_end_logits(validate_raw(raw))
    d = run.run_dir
    assert torch.allclose(ref["task2"], ref["task0"], atol=1e-6) and not torch.allclose(ref["task2"], ref["task1"])
    lin0, lin2 = (json.loads((d / "models" / s / "lineage.json").read_text()) for s in ("task0", "task2"))
    assert lin2["parent"] == {"name": "task0", "content_hash": lin0["content_hash"]}
    assert (d / "keep" / "task0" / "model.safetensors").is_file()  # kept for the branch, listed by show
    # a new run starts from the exported stage model by its folder: its baseline is that stage's row
    raw2 = config(tmp_path, name="continued", n_stages=2)
    raw2["model"] = {"path": str(d / "models" / "task0")}
    raw2["export"] = {"stages": ["task0"]}
    cont = Run(validate_raw(raw2), quiet=True)
    res2 = cont.execute()
    first = json.loads((d / "results.json").read_text())
    assert res2.matrix[0] == first["matrix"][1][:2]  # row `task0` of the first run, exactly
    lin = json.loads((cont.run_dir / "models" / "task0" / "lineage.json").read_text())
    assert lin["base"]["exported_from"]["run"] == "branch" and lin["base"]["exported_from"]["stage"] == "task0"
    assert lin["base"]["exported_from"]["content_hash"] == lin0["content_hash"]
    assert not (cont.run_dir / "models" / "task1").exists()


@pytest.mark.parametrize(
    "export, strategy, words",
    [
        ({"format": "peft"}, "naive", "export.format: strategy naive cannot export `peft`"),
        ({"stages": "all"}, "prompt", "export: strategy prompt cannot export its stage models: soft prompts"),
        ({"format": "peft"}, "lora_moe", "cannot export `peft`: gated LoRA experts"),
        ({"stages": ["task0", "tsk1"]}, "naive", "export.stages.1: unknown stage 'tsk1'; did you mean 'task1'?"),
        ({"merged": True}, "lora", "merged: true goes with format: peft"),
        ({"max_shard_size": "2 gigs"}, "naive", "export.max_shard_size: '2 gigs' is not a size"),
    ],
)
def test_export_settings_are_checked_before_anything_loads(tmp_path, export, strategy, words):
    raw = tiny_run_config(strategy, n_stages=2)
    raw["export"] = export
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    from lifelong.validation import load_config

    with pytest.raises(ValueError) as e:
        load_config(p)
    assert words in str(e.value) and "c.yaml:" in str(e.value), str(e.value)


def test_default_export_of_a_strategy_without_one_is_skipped_and_said(tmp_path):
    run = Run(validate_raw(config(tmp_path, "prompt", name="prompt", steps=2)), quiet=True)
    run.execute()
    assert not (run.run_dir / "models").exists()
    events = [json.loads(e) for e in (run.run_dir / "events.jsonl").read_text().splitlines()]
    assert any(e["type"] == "export_skipped" and "soft prompts" in e["reason"] for e in events)


def test_an_export_cut_by_a_kill_is_redone_on_resume(tmp_path):
    raw = config(tmp_path, name="killed", train={"keep_checkpoints": 10})
    raw["export"] = {"stages": "all"}
    p = tmp_path / "killed.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LIFELONG_FAULT": "export-write:2"}
    proc = subprocess.run(
        [sys.executable, "-m", "lifelong", "run", str(p), "--quiet"],
        env=env,
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    d = tmp_path / "runs" / "killed"
    assert (d / "models" / "task0" / "lineage.json").is_file() and not (d / "models" / "task1").exists()
    assert [p.name for p in (d / "models").iterdir() if p.name.startswith(".tmp")]  # the cut one
    assert main(["run", str(p), "--quiet", "--resume"]) == 0
    assert sorted(p.name for p in (d / "models").iterdir()) == ["task0", "task1"]  # no temporary left
    exported = AutoModelForCausalLM.from_pretrained(str(d / "models" / "task1")).state_dict()
    ckpt = tiny_llama()
    load_model(ckpt, str(d / "ckpt" / "stage1-end" / "model.safetensors"))
    assert all(torch.equal(t, exported[n]) for n, t in ckpt.state_dict().items())  # the stage's weights
