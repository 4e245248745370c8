"""Sharded training (FSDP2 through accelerate) on CPU with gloo.

`test_sharding_api_two_processes`: the shared API of `lifelong.train.sharding` over 2 processes of a model
sharded with torch's `fully_shard` (what accelerate's FSDP2 plugin calls): gathers, shard-local writes, full
state dicts and optimizer state round trips, against the same model unsharded.

The end-to-end tests launch `lifelong run` as users do, `accelerate launch --config_file fsdp2.yaml -m lifelong
run cfg.yaml` (`distributed_type: FSDP`, `fsdp_version: 2`; on CPU processes lifelong turns on the FSDP2
plugin accelerate leaves off, `lifelong.train.accel.fsdp_on_cpu`), on 2 processes: the results matrix equals a
one-process run with the same global batch (naive, replay, lora); a kill -9 inside a checkpoint write and
`--resume` give the uninterrupted sharded run's matrix and weights; a strategy that cannot train sharded is
refused before anything loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest
import torch
import yaml

from lifelong.testing import FSDP2_LAUNCH_CONFIG as FSDP2_CONFIG
from lifelong.testing import accelerate_launcher as _launcher
from lifelong.testing import free_port as _free_port
from lifelong.testing import tiny_run_config
from lifelong.train import sharding

SPECS = {
    "naive": "naive",
    "replay": {"name": "replay", "fraction": 0.25, "buffer_size": 64},
    "lora": {"name": "lora", "r": 4},
    "ewc": {"name": "ewc", "weight": 1000.0},
    "lwf": {"name": "lwf", "weight": 1.0},
    "l2": {"name": "l2", "weight": 1.0},
    "merge_after_stage": {"name": "merge_after_stage", "weight": 0.5},
    "seq_lora": {"name": "seq_lora", "r": 4},
}
"""The strategies of the end-to-end runs here and in tests/test_deepspeed.py."""


def _api_worker(rank: int, world: int, port: int) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from lifelong.testing import tiny_llama

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ref = tiny_llama(seed=0)  # the same weights on every process
        model = tiny_llama(seed=0)
        assert not sharding.is_sharded(model)
        assert sharding.full_state_dict(model).keys() == ref.state_dict().keys()
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        assert sharding.is_sharded(model) and not sharding.is_sharded(ref)
        names = [n for n, _ in model.named_parameters()]
        params = dict(model.named_parameters())
        plain = dict(ref.named_parameters())
        for n in names:  # every rank gathers every parameter, in the same order
            p = params[n]
            assert sharding.is_sharded(p)
            assert torch.equal(sharding.full_tensor(p), plain[n].detach()), n
            local = sharding.local_tensor(p)
            assert local.shape[0] == torch.chunk(plain[n], world, dim=0)[rank].shape[0]
            assert torch.equal(sharding.local_tensor(sharding.shard_like(plain[n].detach(), p)), local)
        plain_t = plain[names[1]]
        assert sharding.full_tensor(plain_t) is plain_t and sharding.local_tensor(plain_t) is plain_t
        # a shard-local write of a full tensor: every process holds the same new values
        target = names[3]
        new = torch.arange(plain[target].numel(), dtype=torch.float32).reshape(plain[target].shape)
        sharding.assign_full_(params[target], new)
        assert torch.equal(sharding.full_tensor(params[target]), new)
        with pytest.raises(ValueError, match="shape"):
            sharding.shard_like(new[:1], params[target])
        # full state dicts: process 0 only by default, every process with all_ranks
        sd = sharding.full_state_dict(model)
        every = sharding.full_state_dict(model, all_ranks=True)
        expected = {**ref.state_dict(), target: new}
        assert every.keys() == expected.keys()
        assert all(torch.equal(every[k], expected[k]) and every[k].device.type == "cpu" for k in expected)
        assert (sd.keys() == expected.keys()) if rank == 0 else sd == {}
        # loaded back from a full state dict every process holds; a part with strict=False
        sharding.load_full_state_dict(model, ref.state_dict())
        assert torch.equal(sharding.full_tensor(params[target]), plain[target].detach())
        sharding.load_full_state_dict(model, {target: new}, strict=False)
        assert torch.equal(sharding.full_tensor(params[target]), new)
        sharding.load_full_state_dict(model, ref.state_dict())
        # optimizer state: one step, saved whole, loaded into a fresh sharded model, then the same next step
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        batch = torch.tensor([[1, 2, 3, 4, 5, 6]]) + rank
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
        state = sharding.full_optimizer_state(model, opt, all_ranks=True)
        rank0 = sharding.full_optimizer_state(model, opt)  # a collective: every process calls it
        assert (rank0.keys() == state.keys()) if rank == 0 else rank0 == {}
        weights = sharding.full_state_dict(model, all_ranks=True)
        assert set(state["state"]) == set(names)  # keyed by parameter name, whole tensors
        assert state["state"][target]["exp_avg"].shape == plain[target].shape
        twin = tiny_llama(seed=1)
        for layer in twin.model.layers:
            fully_shard(layer)
        fully_shard(twin)
        twin_opt = torch.optim.AdamW(twin.parameters(), lr=1e-2)
        sharding.load_full_state_dict(twin, weights)
        sharding.load_full_optimizer_state(twin, twin_opt, state)
        assert not any(sharding.is_sharded(v) for v in weights.values())  # what was loaded is left as it was
        for m, o in ((model, opt), (twin, twin_opt)):
            m(input_ids=batch, labels=batch).loss.backward()
            o.step()
            o.zero_grad()
        a, b = sharding.full_state_dict(model, all_ranks=True), sharding.full_state_dict(twin, all_ranks=True)
        assert all(torch.equal(a[k], b[k]) for k in a)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sharding_api_two_processes():
    import torch.multiprocessing as mp

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch without gloo")
    mp.spawn(_api_worker, args=(2, _free_port()), nprocs=2, join=True)


def test_sharding_mode_names_the_accelerator_setup():
    from accelerate.utils import DistributedType

    def acc(kind, n=1, version=2):
        plugin = types.SimpleNamespace(fsdp_version=version)
        return types.SimpleNamespace(
            distributed_type=kind, num_processes=n, state=types.SimpleNamespace(fsdp_plugin=plugin)
        )

    assert sharding.sharding_mode(acc(DistributedType.NO)) == "none"
    assert sharding.sharding_mode(acc(DistributedType.MULTI_CPU, 2)) == "ddp"
    assert sharding.sharding_mode(acc(DistributedType.MULTI_GPU, 1)) == "none"
    assert sharding.sharding_mode(acc(DistributedType.FSDP, 2)) == "fsdp2"
    assert sharding.sharding_mode(acc(DistributedType.FSDP, 2, version=1)) == "fsdp1"
    assert sharding.sharding_mode(acc(DistributedType.DEEPSPEED, 2)) == "deepspeed"


def test_plain_tensors_and_models_pass_through():
    from lifelong.testing import tiny_llama

    model = tiny_llama(seed=0)
    p = model.model.embed_tokens.weight
    assert not sharding.is_sharded(model) and not sharding.is_sharded(p)
    assert sharding.full_tensor(p) is p and sharding.local_tensor(p) is p
    new = torch.ones_like(p)
    sharding.assign_full_(p, new)
    assert torch.equal(p, new) and not p.requires_grad or p.grad is None
    sd = sharding.full_state_dict(model)
    fresh = tiny_llama(seed=1)
    sharding.load_full_state_dict(fresh, sd)
    assert torch.equal(fresh.model.embed_tokens.weight, new)
    with pytest.raises(ValueError, match="missing"):
        sharding.load_full_state_dict(fresh, {k: v for k, v in sd.items() if "embed" not in k})


# ---- end to end: accelerate launch with an FSDP2 config ------------------------------------------------
needs_launcher = pytest.mark.skipif(
    _launcher() is None or not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="accelerate CLI or torch.distributed with gloo not available",
)


def run_configs(root, base: str):
    """A writer of run configs on the tiny stream: `config(strategy, name, batch, **train)` writes
    `root/<name>.yaml` (runs under `root/runs`) and returns its path: 2 stages of 40 steps (lr 3e-3; adapters 1e-2), a
    checkpoint every 20 (a kill can land mid-stage), `train` entries replacing these; `train.batch_size` is per
    process. `base`: a tiny llama that knows the answer format (adapters learn on it)."""

    def config(strategy: str, name: str, batch: int, **train) -> str:
        raw = tiny_run_config(
            SPECS[strategy],
            name=name,
            output_dir=str(root / "runs"),
            n_stages=2,
            steps=40,
            train={"lr": 1e-2 if "lora" in strategy else 3e-3, "checkpoint_every": 20, "keep_checkpoints": 4},
        )
        raw["model"] = {"path": base}
        if "lora" not in strategy:  # unclipped: FSDP2 then equals DDP bit for bit (test below); LoRA keeps clipping
            raw["train"]["max_grad_norm"] = None
        raw["train"]["batch_size"] = batch  # per process: 8 x 2 processes = 16 in one
        raw["train"].update(train)
        raw["eval"]["bootstrap"] = 20
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return str(path)

    return config


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """The accelerate configs (FSDP2, DDP) and `run_configs`' writer."""
    from lifelong.testing import tiny_pretrained

    root = tmp_path_factory.mktemp("sharded")
    base = tiny_pretrained(root / "base")
    accel, ddp = root / "fsdp2.yaml", root / "ddp.yaml"
    accel.write_text(yaml.safe_dump(FSDP2_CONFIG))
    plain = {k: v for k, v in FSDP2_CONFIG.items() if k != "fsdp_config"}
    ddp.write_text(yaml.safe_dump({**plain, "distributed_type": "MULTI_GPU"}))  # on CPU: data parallel, gloo
    return types.SimpleNamespace(
        root=root, accel=str(accel), ddp=str(ddp), config=run_configs(root, base), runs=root / "runs", sharded={}
    )


def launch(accel: str, *args: str, fault: str | None = None, options: tuple = ()) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file accel [options] -m lifelong <args>` (2 CPU processes), with this
    interpreter's accelerate (a launcher script elsewhere on PATH may belong to another environment)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("LIFELONG_FAULT", None)
    if fault:
        env["LIFELONG_FAULT"] = fault
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", accel, *options]
    return subprocess.run([*cmd, "-m", "lifelong", *args], env=env, capture_output=True, text=True, timeout=900)


def results(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def weights(run_dir, tag: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "ckpt" / tag / "model.safetensors"))


def matrix_difference(a: dict, b: dict) -> float:
    """The largest |difference| between two runs' results matrices (`results.json` contents)."""
    return max(abs(x - y) for ra, rb in zip(a["matrix"], b["matrix"]) for x, y in zip(ra, rb))


def sharded_run(stream, strategy: str):
    """The 2-process FSDP2 run of `strategy` (once per module: the kill test resumes against it)."""
    if strategy not in stream.sharded:
        proc = launch(stream.accel, "run", stream.config(strategy, f"{strategy}-fsdp2", 8), "--quiet")
        assert proc.returncode == 0, proc.stderr[-4000:]
        stream.sharded[strategy] = stream.runs / f"{strategy}-fsdp2"
    return stream.sharded[strategy]


@pytest.mark.slow
@needs_launcher
@pytest.mark.parametrize("strategy", ["naive", "replay", "lora"])
def test_fsdp2_run_matches_one_process(stream, strategy):
    from lifelong.cli import main

    two = sharded_run(stream, strategy)
    assert main(["run", stream.config(strategy, f"{strategy}-one", 16), "--quiet"]) == 0
    one = stream.runs / f"{strategy}-one"
    a, b = results(two), results(one)
    assert a["processes"] == 2 and a["sharding"] == "fsdp2"  # really sharded, not data parallel
    assert b["processes"] == 1 and b["sharding"] == "none"
    diff = matrix_difference(a, b)
    print(f"{strategy}: max |matrix difference| 1 vs 2 processes = {diff}")
    assert diff <= 1e-5, (a["matrix"], b["matrix"])
    assert any(x != y for x, y in zip(a["matrix"][1] + a["matrix"][2], a["matrix"][0] * 2))  # it learned
    assert json.loads((two / "per_example.json").read_text()) == json.loads((one / "per_example.json").read_text())
    # whole weights in the checkpoints, as one process writes them; equal up to the order of float sums
    wa, wb = weights(two, "stage1-end"), weights(one, "stage1-end")
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    print(f"{strategy}: max |weight difference| after 2 stages = {worst:.2e}")
    assert worst < 5e-3


@pytest.mark.slow
@needs_launcher
def test_fsdp2_equals_data_parallel_bit_for_bit(stream):
    """With 2 processes the sharded gradient is the same sum of the same two halves as DDP's all-reduce, so
    FSDP2 and DDP train the same weights exactly: what differs from one process is float summation order.
    (With gradient clipping they differ by rounding, ~1e-7 after 20 steps: FSDP2 sums the squared norm shard
    by shard before its all-reduce.)"""
    fsdp2 = sharded_run(stream, "naive")
    proc = launch(stream.ddp, "run", stream.config("naive", "naive-ddp", 8), "--quiet")
    assert proc.returncode == 0, proc.stderr[-4000:]
    ddp = stream.runs / "naive-ddp"
    assert results(ddp)["sharding"] == "ddp" and results(ddp)["matrix"] == results(fsdp2)["matrix"]
    for tag in ("stage0-step20", "stage0-end", "stage1-end"):
        wa, wb = weights(fsdp2, tag), weights(ddp, tag)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), tag


@pytest.mark.slow
@needs_launcher
def test_kill_and_resume_under_fsdp2(stream):
    """lora: the second stage adds an adapter to the sharded model (an unsharded rebuild, then sharded again);
    the kill lands inside the stage-end checkpoint of stage 1, so the resume starts mid-stage from
    `stage1-step20` (adapter-only weights, the sharded optimizer's state by parameter name)."""
    reference = sharded_run(stream, "lora")
    cfg = stream.config("lora", "lora-killed", 8)
    proc = launch(stream.accel, "run", cfg, "--quiet", fault="checkpoint-write:4")
    assert proc.returncode != 0
    run_dir = stream.runs / "lora-killed"
    assert (run_dir / "ckpt" / "latest").read_text().strip() == "stage1-step20"
    assert not (run_dir / "results.json").exists() or None in sum(results(run_dir)["matrix"], [])
    proc = launch(stream.accel, "run", cfg, "--quiet", "--resume")
    assert proc.returncode == 0, proc.stderr[-4000:]
    got, ref = results(run_dir), results(reference)
    assert got["matrix"] == ref["matrix"] and got["metrics"] == ref["metrics"]
    wa, wb = weights(run_dir, "stage1-end"), weights(reference, "stage1-end")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # bit for bit
    kinds = [json.loads(line)["type"] for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert "resume" in kinds and kinds[-1] == "end"


@pytest.mark.slow
@needs_launcher
def test_refused_strategy_under_fsdp2(stream, tmp_path):
    from lifelong.strategies import STRATEGIES

    def refusal(name: str) -> str:
        try:
            return STRATEGIES.get(name)().fsdp_refusal()
        except Exception:  # parameters without defaults: not a candidate here
            return ""

    refusing = [n for n in STRATEGIES.names() if refusal(n)]
    if not refusing:
        pytest.skip("every strategy trains sharded")
    name = refusing[0]
    raw = yaml.safe_load(open(stream.config("naive", "refused", 8)).read())
    raw["strategy"] = name
    cfg = tmp_path / "refused.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = launch(stream.accel, "run", str(cfg), "--quiet")
    assert proc.returncode != 0
    assert f"strategy {name} cannot train sharded (FSDP2)" in proc.stderr
    assert refusal(name) in proc.stderr  # the reason, from the strategy
    assert not (stream.runs / "refused").exists()  # refused before the run folder


def test_validation_refuses_what_cannot_train_sharded(tmp_path, monkeypatch):
    from lifelong.configio import ConfigError
    from lifelong.strategies import STRATEGIES, Strategy
    from lifelong.testing import tiny_run_config
    from lifelong.validation import load_config, validate_raw

    class Whole(Strategy):
        fsdp_note = "it reads every weight by name"

    STRATEGIES.register("whole_weights")(Whole)
    try:
        raw = tiny_run_config("whole_weights", output_dir=str(tmp_path))
        assert validate_raw(raw, sharding="none") and validate_raw(raw, sharding="ddp")
        with pytest.raises(ConfigError, match="strategy whole_weights cannot train sharded .FSDP2.: it reads every"):
            validate_raw(raw, sharding="fsdp2")
        with pytest.raises(ConfigError, match="DeepSpeed"):
            validate_raw(raw, sharding="deepspeed")
        with pytest.raises(ConfigError, match="fsdp_version: 2"):
            validate_raw(tiny_run_config("naive", output_dir=str(tmp_path)), sharding="fsdp1")
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if t.startswith("strategy:"))
        # what `accelerate launch --config_file fsdp2.yaml` exports: `lifelong validate` under it refuses
        monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
        monkeypatch.setenv("FSDP_VERSION", "2")
        with pytest.raises(ConfigError, match=rf"cfg.yaml:{line}: strategy.name: strategy whole_weights"):
            load_config(path)
        monkeypatch.setenv("FSDP_VERSION", "1")
        with pytest.raises(ConfigError, match="FSDP version 1"):
            load_config(path)
        monkeypatch.delenv("ACCELERATE_USE_FSDP")
        assert load_config(path).strategy[0].name == "whole_weights"
        # and without the launcher, `lifelong validate --sharding fsdp2` says what the launch would refuse
        from lifelong.cli import main

        monkeypatch.delenv("FSDP_VERSION")
        assert main(["validate", str(path), "--sharding", "fsdp2"]) == 2
        assert main(["validate", str(path), "--sharding", "none"]) == 0
        # DeepSpeed: ZeRO-2 takes checkpoints inside a stage and optimizer_state: keep (each process saves and
        # carries its part of DeepSpeed's optimizer state); ZeRO-3 refuses them and evaluation inside a stage
        naive = tiny_run_config("naive", output_dir=str(tmp_path), train={"checkpoint_every": 5})
        naive["stages"][1]["train"] = {"optimizer_state": "keep", "eval_every": 2}
        monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
        assert validate_raw(naive, sharding="deepspeed")
        monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
        with pytest.raises(ConfigError) as err:
            validate_raw(naive, sharding="deepspeed")
        said = str(err.value).splitlines()
        assert said[0].startswith("<config>: train.checkpoint_every: checkpoints inside a stage under ZeRO-3")
        assert said[1].startswith("<config>: stages.1.train.optimizer_state: optimizer_state: keep under ZeRO-3")
        assert said[2].startswith("<config>: stages.1.train.eval_every: evaluation inside a stage under ZeRO-3")
        assert len(said) == 3
        naive["train"]["checkpoint_every"] = 0
        del naive["stages"][1]["train"]
        assert validate_raw(naive, sharding="deepspeed")
        # strategies whose penalty reads whole weights at every step: ZeRO-2 only
        ewc = tiny_run_config({"name": "ewc"}, output_dir=str(tmp_path))
        with pytest.raises(ConfigError, match="strategy ewc cannot train sharded .DeepSpeed.: its penalty reads"):
            validate_raw(ewc, sharding="deepspeed")
        monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
        assert validate_raw(ewc, sharding="deepspeed")
        # a strategy FSDP2 takes but DeepSpeed cannot (its before_step edits gradients the engine keeps): refused
        # under DeepSpeed only, with its reason, alone or composed
        agem = tiny_run_config([{"name": "replay"}, {"name": "agem"}], output_dir=str(tmp_path))
        assert validate_raw(agem, sharding="fsdp2")
        with pytest.raises(ConfigError, match=r"strategy agem cannot train sharded .DeepSpeed.: it projects the whole"):
            validate_raw(agem, sharding="deepspeed")
        from lifelong.strategies import build_strategy

        why = build_strategy(validate_raw(agem).strategy).deepspeed_refusal()
        assert why.startswith("AGEM: it projects the whole gradient") and "Replay" not in why
    finally:
        STRATEGIES.unregister("whole_weights")


def test_optimizer_state_by_name_and_by_position():
    from lifelong.train.loop import optimizer_state_as

    names = ["a.weight", "b.weight"]
    by_pos = {"state": {0: {"step": 1}, 1: {"step": 2}}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}
    by_name = optimizer_state_as(by_pos, names, by_name=True)
    assert by_name == {
        "state": {"a.weight": {"step": 1}, "b.weight": {"step": 2}},
        "param_groups": [{"lr": 0.1, "params": names}],
    }
    assert optimizer_state_as(by_name, names, by_name=False) == by_pos
    assert optimizer_state_as(by_name, names, by_name=True) is by_name  # already keyed that way
    with pytest.raises(ValueError, match="b.weight. that this model does not train"):
        optimizer_state_as(by_name, ["a.weight", "c.weight"], by_name=False)
