"""`lifelong run` under accelerate's DeepSpeed plugin, launched as users launch it:
`accelerate launch --config_file examples/accelerate/zero2-1node-8gpu.yaml --num_processes 2 --mixed_precision no
-m lifelong run cfg.yaml`, on 2 CPU processes (gloo; `lifelong.train.accel.accelerator` starts DeepSpeed
there). Only where deepspeed is installed (it is not a lifelong dependency); skipped otherwise.

ZeRO-2: the results matrix and every per-example score equal a one-process run with the same global batch
(naive, replay, ewc, l2, lwf, lora, seq_lora, merge_after_stage; gradient accumulation with a warmup + cosine
schedule; checkpoints inside stages with `optimizer_state: keep`, and kill -9 + `--resume` bit for bit), and the
weights in the stage-end checkpoints are the one-process weights up to float summation order. ZeRO-3: the same
for naive, replay, lwf, lora, seq_lora and merge_after_stage. Both: a stream of instruct, preference (DPO) and
merge stages. The one-process runs use the same run configs (tests/test_sharded.py's `run_configs`) with twice
the per-process batch."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import yaml

pytest.importorskip("deepspeed")

from test_sharded import launch, matrix_difference, results, run_configs, weights  # noqa: E402

from lifelong.testing import free_port  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "accelerate"
pytestmark = pytest.mark.slow


def zero(stage: int, *args: str, fault: str | None = None):
    """`lifelong <args>` launched with the example ZeRO-`stage` config on 2 CPU processes in float32."""
    options = ("--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(free_port()))
    return launch(str(CONFIGS / f"zero{stage}-1node-8gpu.yaml"), *args, fault=fault, options=options)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    from lifelong.testing import tiny_pretrained

    root = tmp_path_factory.mktemp("deepspeed")
    base = tiny_pretrained(root / "base")
    return types.SimpleNamespace(config=run_configs(root, base), runs=root / "runs", root=root, base=base)


def pair(ds, strategy: str, name: str, batch: int, stage: int = 2, **train) -> tuple:
    """The ZeRO-`stage` run (`batch` per process) and the one-process run (2 x `batch`) of the same config."""
    from lifelong.cli import main

    proc = zero(stage, "run", ds.config(strategy, f"{name}-zero{stage}", batch, **train), "--quiet")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert results(ds.runs / f"{name}-zero{stage}")["zero_stage"] == stage
    assert main(["run", ds.config(strategy, f"{name}-one", 2 * batch, **train), "--quiet"]) == 0
    return ds.runs / f"{name}-zero{stage}", ds.runs / f"{name}-one"


def same_results(two, one, tag: str = "stage1-end") -> None:
    a, b = results(two), results(one)
    assert a["processes"] == 2 and a["sharding"] == "deepspeed" and b["sharding"] == "none"
    diff = matrix_difference(a, b)
    print(f"{two.name}: max |matrix difference| 1 vs 2 processes = {diff}")
    assert diff <= 1e-5, (a["matrix"], b["matrix"])
    assert a["matrix"][1] != a["matrix"][0] or a["matrix"][2] != a["matrix"][0]  # it trained
    assert json.loads((two / "per_example.json").read_text()) == json.loads((one / "per_example.json").read_text())
    wa, wb = weights(two, tag), weights(one, tag)  # written whole by the main process, as one process writes them
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    print(f"{two.name}: max |weight difference| after 2 stages = {worst:.2e}")
    assert worst < 5e-3  # float summation order, amplified by AdamW (as under FSDP2); a wrong step is 1e-2 or more


@pytest.mark.parametrize("strategy", ["naive", "replay", "ewc", "l2", "lwf", "lora", "seq_lora", "merge_after_stage"])
def test_zero2_run_matches_one_process(ds, strategy):
    two, one = pair(ds, strategy, strategy, 8, checkpoint_every=0)
    same_results(two, one)


def test_zero2_gradient_accumulation_and_schedule(ds):
    """Two micro-batches per step (the engine steps at accelerate's boundary, dividing the loss itself) and a
    warmup + cosine schedule, which only reaches the engine's optimizer through lifelong's LambdaLR on the
    same parameter groups: a step per micro-batch, or a constant learning rate, would move the weights by far
    more than the bound."""
    two, one = pair(ds, "naive", "accum", 4, checkpoint_every=0, grad_accum=2, schedule="cosine", warmup_steps=5)
    same_results(two, one)
    lrs = [json.loads(line) for line in (two / "events.jsonl").read_text().splitlines()]
    lrs = [e["lr"] for e in lrs if e["type"] == "step" and e["stage"] == 0]
    assert len(lrs) == 40 and lrs[0] < lrs[5] and lrs[-1] < lrs[5]  # warmed up, then decayed


def test_zero2_refuses_what_it_cannot_run(ds, tmp_path):
    """A strategy that edits gradients in before_step is refused before anything loads, with its reason."""
    raw = yaml.safe_load(Path(ds.config("naive", "agem", 8, checkpoint_every=0)).read_text())
    raw["strategy"] = "agem"
    cfg = tmp_path / "agem.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = zero(2, "run", str(cfg), "--quiet")
    assert proc.returncode != 0
    assert "strategy agem cannot train sharded (DeepSpeed): it projects the whole gradient" in proc.stderr
    assert not (ds.runs / "agem").exists()


def test_zero2_checkpoints_keep_and_kill_resume(ds, capsys):
    """Checkpoints inside a stage and `optimizer_state: keep` under ZeRO-2: each process saves its part of
    DeepSpeed's optimizer state (`ckpt/<tag>/zero/rank<r>.pt`). The run equals one process; a kill -9 inside
    the stage-1-end checkpoint write (resumed inside stage 1 from `stage1-step20`: weights, moments and fp32
    masters) or inside the `stage1-step20` write (resumed from `stage0-end`, whose kept moments start stage 1)
    gives the uninterrupted run's matrix and weights bit for bit; a resume without DeepSpeed is refused."""
    from lifelong.cli import main

    train = {"checkpoint_every": 20, "optimizer_state": "keep"}
    reference, one = pair(ds, "naive", "keep", 8, **train)
    with capsys.disabled():
        same_results(reference, one)
    for n, latest in ((4, "stage1-step20"), (3, "stage0-end")):
        cfg = ds.config("naive", f"killed{n}", 8, **train)
        assert zero(2, "run", cfg, "--quiet", fault=f"checkpoint-write:{n}").returncode != 0
        run_dir = ds.runs / f"killed{n}"
        assert (run_dir / "ckpt" / "latest").read_text().strip() == latest
        assert sorted(p.name for p in (run_dir / "ckpt" / latest / "zero").iterdir()) == ["rank0.pt", "rank1.pt"]
        if n == 4:  # one process cannot take DeepSpeed's two parts
            capsys.readouterr()
            assert main(["run", cfg, "--quiet", "--resume"]) != 0
            assert "resume it under DeepSpeed with 2 processes" in capsys.readouterr().err
        proc = zero(2, "run", cfg, "--quiet", "--resume")
        assert proc.returncode == 0, proc.stderr[-4000:]
        got, ref = results(run_dir), results(reference)
        assert got["matrix"] == ref["matrix"] and got["metrics"] == ref["metrics"]
        wa, wb = weights(run_dir, "stage1-end"), weights(reference, "stage1-end")
        assert wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa), latest  # bit for bit


@pytest.mark.parametrize("strategy", ["naive", "replay", "lwf", "lora", "seq_lora", "merge_after_stage"])
def test_zero3_run_matches_one_process(ds, strategy):
    """ZeRO-3: the weights are partitioned during each stage (the engine's own forward gathers them) and
    gathered whole on every process at its end (`deepspeed.zero.GatheredParameters`), so evaluation,
    checkpoints, kept weights and exports read a plain model; the model is built whole, not under
    `deepspeed.zero.Init` (which would initialise a model built from a config differently)."""
    two, one = pair(ds, strategy, f"{strategy}3", 8, stage=3, checkpoint_every=0)
    same_results(two, one)


@pytest.mark.parametrize("stage", [2, 3])
def test_preference_and_merge_stages_under_deepspeed(ds, stage):
    """An instruct, a preference (DPO, averaged halfway back to the stage start), an instruct stage from the base
    and a merge of the two instruct stages' kept weights (tests/test_sharded_strategies.py's stream): DPO trains
    through the engine with its own objective; averaging, kept weights and the merge act on the plain model
    between stages. The same matrix as one process, the merge's output in the final checkpoint."""
    from safetensors.torch import load_file
    from test_sharded_strategies import preference_merge_config

    from lifelong.cli import main

    raw, paths = preference_merge_config(ds.base), []
    for suffix, batch in ((f"zero{stage}", 8), ("one", 16)):
        cfg = {**raw, "name": f"pref{stage}-{suffix}", "output_dir": str(ds.runs)}
        cfg["train"] = {**raw["train"], "batch_size": batch}
        paths.append(ds.root / f"pref{stage}-{suffix}.yaml")
        paths[-1].write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = zero(stage, "run", str(paths[0]), "--quiet")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert main(["run", str(paths[1]), "--quiet"]) == 0
    two, one = ds.runs / f"pref{stage}-zero{stage}", ds.runs / f"pref{stage}-one"
    a, b = results(two), results(one)
    assert a["zero_stage"] == stage and a["processes"] == 2
    diff = matrix_difference(a, b)
    print(f"preference + merge, ZeRO-{stage}: max |matrix difference| 1 vs 2 processes = {diff}")
    assert diff <= 1e-5, (a["matrix"], b["matrix"])
    assert a["matrix"][2][1] > a["matrix"][1][1] + 10  # DPO raised the preference accuracy
    wa, wb = weights(two, "stage3-end"), weights(one, "stage3-end")
    merged = load_file(str(two / "keep" / "merged-merged" / "model.safetensors"))
    assert all(bool((wa[k] == merged[k]).all()) for k in merged)  # the merge's output is the model
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    print(f"preference + merge, ZeRO-{stage}: max |weight difference| after the merge = {worst:.2e}")
    assert worst < 1e-3
