"""Strategies and stage kinds under sharded parameters (FSDP2) on CPU with gloo.

`test_strategy_hooks_sharded_match_one_process`: each strategy's own hooks (state snapshots, penalties,
gradient edits, teachers, generation; its state through a checkpoint between the stages) around a small
two-stage training loop shaped like
`lifelong.train.loop.train_stage` (global micro-batches split over the processes, the loss token-weighted
across them, hooks in the loop's order), on a tiny llama sharded over 2 processes with torch's `fully_shard`
(what accelerate's FSDP2 plugin calls), against the same loop in one process. SGD, not AdamW: its update is
linear in the gradient, so float rounding stays at rounding size and any real difference in a hook's math
shows (AdamW divides by the second moment, which turns 1e-8 gradient noise on near-zero gradients into
1e-4 weight changes even for naive training).

The end-to-end tests launch `accelerate launch --config_file fsdp2.yaml -m lifelong run` on 2 CPU processes
(FSDP2, `train.batch_size` 8 per process) against `lifelong run` in one process with the same global batch
(16): the results matrix and the per-example scores are the same, the checkpoints hold whole weights and
whole strategy state close to the one-process ones (AdamW's float noise aside), for l2, ewc, lwf and olora;
a preference (DPO, averaged) stage and a merge stage in one stream (each row is one stage kind); an edit stage
(ROME) on a sharded model. `test_refusals_under_sharding`: what cannot train sharded is refused with its
reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest
import torch
import yaml

from lifelong.testing import FSDP2_LAUNCH_CONFIG as FSDP2
from lifelong.testing import accelerate_launcher as _launcher
from lifelong.testing import free_port as _free_port

CASES: list[tuple[str, dict]] = [
    ("naive", {}),
    ("replay", {"fraction": 0.25}),
    ("l2", {"weight": 1.0}),
    ("ewc", {"weight": 20.0}),
    ("ewc", {"weight": 0.01, "online": True, "gamma": 0.9, "normalize": True, "fisher": "sampled"}),
    ("lwf", {"weight": 1.0, "positions": "all"}),
    ("elastic_reset", {"reset_every": 3, "ema_decay": 0.5}),
    ("merge_after_stage", {"weight": 0.5}),
    ("agem", {"sample_size": 8}),  # 8 steps at lr 0.2 (below): updates that conflict with the memory
    ("rho1", {"keep": 0.5}),
    ("sdft", {"check": "none", "max_new_tokens": 4}),
    ("generative_replay", {"pseudo_per_stage": 4, "max_new_tokens": 8}),
    ("seq_lora", {"r": 4}),
    ("lora_moe", {"experts": "fixed", "n_experts": 2, "r": 4, "balance": 0.5}),
]
STEPS, LR = 4, 0.05
LONGER = {"agem": (8, 0.2)}
"""Strategies whose hooks need more training to act (steps, learning rate)."""


def _examples(name: str, stage: int) -> list[dict]:
    """Stage `stage`'s training examples; for agem the two stages want opposite answers (so the update
    conflicts with the memory and gets projected)."""
    from lifelong.data.formats import Formatter
    from lifelong.testing import tiny_stream, tiny_tokenizer

    fm = Formatter(tiny_tokenizer())
    rows = tiny_stream(2, n_train=32)[stage]["train"]
    if name == "agem":
        rows = [{"text": r["text"], "label": "yes" if stage else "no"} for r in rows]
    out = []
    for r in rows:
        p, q = fm.prompt_ids(r["text"]), fm.response_ids(r["label"])
        out.append(
            {"input_ids": p + q, "labels": [-100] * len(p) + q, "prompt_text": r["text"], "response_text": r["label"]}
        )
    return out


class _Acc:
    """The accelerator members hooks use."""

    def __init__(self, world: int, rank: int) -> None:
        self.num_processes, self.process_index, self.is_main_process = world, rank, rank == 0
        self.device = torch.device("cpu")

    def reduce(self, t: torch.Tensor, op: str) -> torch.Tensor:
        import torch.distributed as dist

        dist.all_reduce(t)
        return t


def _train(name: str, params: dict, world: int, rank: int) -> tuple[dict, dict, dict]:
    """Two stages of the loop's shape; returns whole weights, the strategy's checkpoint state and its costs."""
    from torch.distributed.fsdp import fully_shard

    from lifelong.data.collate import collate
    from lifelong.data.formats import Formatter
    from lifelong.strategies import STRATEGIES
    from lifelong.testing import tiny_llama, tiny_tokenizer
    from lifelong.train import sharding
    from lifelong.train.accel import shard
    from lifelong.train.context import StageContext

    torch.manual_seed(0)
    cls = STRATEGIES.get(name)
    strategy = cls(cls.Params(**params), seed=0)
    model, tok, acc = tiny_llama(seed=0), tiny_tokenizer(), _Acc(world, rank)
    steps, lr = LONGER.get(name, (STEPS, LR))
    for stage in range(2):
        examples = _examples(name, stage)
        ctx = StageContext(
            stage_index=stage,
            stage_name=f"s{stage}",
            model=model,
            tokenizer=tok,
            examples=examples,
            accelerator=acc,
            device=acc.device,
            formatter=Formatter(tok),
        )
        model = ctx.model = strategy.wrap_model(ctx)
        ctx.num_steps = steps
        strategy.before_stage(ctx)  # stage 0: before the model is sharded, as in the loop
        if world > 1 and not sharding.is_sharded(model):  # as accelerate's policy: each decoder layer, then the rest
            for layer in [m for m in model.modules() if type(m).__name__ == "LlamaDecoderLayer"]:
                fully_shard(layer)
            fully_shard(model)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
        model.train()
        stream = strategy.batches(ctx, ([examples[(i * 8 + j) % len(examples)] for j in range(8)] for i in range(99)))
        for step in range(steps):
            ctx.step = step
            gbatch = next(stream)
            batch = collate([gbatch[i] for i in shard(len(gbatch), world, rank)], 0, "cpu")
            out = model(**batch)
            loss = out.loss
            if world > 1:  # token-weighted like the loop
                n_local = (batch["labels"][:, 1:] != -100).sum()
                n_all = acc.reduce(n_local.clone(), "sum")
                loss = loss * n_local * world / n_all
            pen = strategy.penalty(ctx, batch, out)
            (loss + pen if pen is not None else loss).backward()
            strategy.before_step(ctx)
            opt.step()
            opt.zero_grad(set_to_none=True)
        model.eval()
        strategy.after_stage(ctx)
        if stage == 0:  # through a checkpoint: state gathered whole on process 0, read back by every process
            state = [strategy.state_dict()]
            if world > 1:
                import torch.distributed as dist

                dist.broadcast_object_list(state, src=0)
            strategy = cls(cls.Params(**params), seed=0)
            strategy.load_state_dict(state[0])
    weights = sharding.full_state_dict(model, all_ranks=True)
    return weights, _flat(strategy.state_dict()), {k: v for k, v in strategy.cost().items() if isinstance(v, int)}


def _flat(state: object, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if isinstance(state, dict):
        for k, v in state.items():
            out.update(_flat(v, f"{prefix}{k}."))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out.update(_flat(v, f"{prefix}{i}."))
    elif isinstance(state, torch.Tensor):
        out[prefix[:-1]] = state
    return out


def _hooks_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = [_train(name, params, world, rank) for name, params in CASES]
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], relative: bool = False) -> float:
    """max |a - b| over every tensor; `relative`: each tensor's max |a - b| over its max |a| where that is
    above 1 (large state such as a normalized Fisher is compared relatively, small state absolutely)."""
    assert a.keys() == b.keys()
    out = [0.0]
    for k in a:
        if a[k].numel():
            d = float((a[k].double() - b[k].double()).abs().max())
            out.append(d / max(float(a[k].double().abs().max()), 1.0) if relative else d)
    return max(out)


@pytest.mark.slow
def test_strategy_hooks_sharded_match_one_process(tmp_path):
    import torch.multiprocessing as mp

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch without gloo")
    out = str(tmp_path / "two.pt")
    mp.spawn(_hooks_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    two = torch.load(out, weights_only=False)
    torch.set_num_threads(1)
    naive = None
    for (name, params), (w2, s2, c2) in zip(CASES, two):
        w1, s1, c1 = _train(name, params, 1, 0)
        label = f"{name} {params}"
        assert _max_diff(w1, w2) < 1e-6, label  # measured: <= 4.4e-7 (agem), 1.2e-7 or less for the others
        assert s1.keys() == s2.keys(), label  # the checkpoint state, gathered whole
        assert _max_diff(s1, s2, relative=True) < 2e-5, label  # measured: <= 3.9e-6 (a normalized Fisher)
        assert c1 == c2, label  # replayed examples, projections, resets, rewrites, ...
        if name == "naive":
            naive = w1
        elif naive is not None and w1.keys() != naive.keys():  # adapters: their zero-initialized halves trained
            assert max(float(w1[k].abs().max()) for k in w1.keys() - naive.keys() if "B" in k) > 1e-3, label
        elif name not in LONGER:  # the strategy changed training, so agreeing above says something about its hooks
            assert naive is not None and _max_diff(w1, naive) > 1e-4, label
        if name == "agem":
            assert c1["projected_steps"] > 0


# ---- end to end: accelerate launch with an FSDP2 config ------------------------------------------------
needs_launcher = pytest.mark.skipif(
    _launcher() is None or not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="accelerate CLI or torch.distributed with gloo not available",
)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The accelerate config, a tiny llama that knows the answer format, and `pair(name, raw)`: the run
    config `raw` (train.batch_size 16) launched on 2 FSDP2 processes (batch 8 each) and run in one process;
    returns the two run directories."""
    from lifelong.cli import main
    from lifelong.testing import tiny_pretrained

    root = tmp_path_factory.mktemp("sharded-strategies")
    accel = root / "fsdp2.yaml"
    accel.write_text(yaml.safe_dump(FSDP2))

    def pair(name: str, raw: dict) -> tuple:
        paths = []
        for suffix, batch in (("fsdp2", raw["train"]["batch_size"] // 2), ("one", raw["train"]["batch_size"])):
            cfg = {**raw, "name": f"{name}-{suffix}", "output_dir": str(root / "runs")}
            cfg["train"] = {**raw["train"], "batch_size": batch}
            path = root / f"{name}-{suffix}.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            paths.append(str(path))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
        cmd = [str(_launcher()), "launch", "--config_file", str(accel), "-m", "lifelong", "run", paths[0], "--quiet"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert main(["run", paths[1], "--quiet"]) == 0
        return root / "runs" / f"{name}-fsdp2", root / "runs" / f"{name}-one"

    return types.SimpleNamespace(pair=pair, base=tiny_pretrained(root / "base"))


def _results(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _same_results(two, one) -> dict:
    """The sharded run's results equal the one-process run's: matrix (to 1e-5) and every per-example score."""
    a, b = _results(two), _results(one)
    assert a["processes"] == 2 and a["sharding"] == "fsdp2" and b["sharding"] == "none"
    diff = max(abs(x - y) for ra, rb in zip(a["matrix"], b["matrix"]) for x, y in zip(ra, rb))
    print(f"{two.name}: max |matrix difference| 1 vs 2 processes = {diff}")
    assert diff <= 1e-5, (a["matrix"], b["matrix"])
    assert json.loads((two / "per_example.json").read_text()) == json.loads((one / "per_example.json").read_text())
    return a


def _checkpoint(run_dir, tag: str, what: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "ckpt" / tag / f"{what}.safetensors"))


def _tiny(strategy, n_stages: int = 2, **top) -> dict:
    from lifelong.testing import tiny_run_config

    raw = tiny_run_config(strategy, n_stages=n_stages, steps=30, **top)
    raw["eval"]["bootstrap"] = 20
    return raw


E2E = {
    "l2": {"name": "l2", "weight": 0.01},
    "ewc": {"name": "ewc", "weight": 1000.0},
    "lwf": {"name": "lwf", "weight": 1.0},
    "olora": {"name": "olora", "r": 4, "lambda2": 0.01},  # stage 1: a new adapter, orthogonality penalty
}


@pytest.mark.slow
@needs_launcher
@pytest.mark.parametrize("strategy", sorted(E2E))
def test_sharded_strategy_run_matches_one_process(sharded, strategy):
    raw = _tiny(E2E[strategy], train={"checkpoint_every": 20, "keep_checkpoints": 4})
    if strategy == "olora":  # adapters learn on a model that knows the answer format
        raw["model"] = {"path": sharded.base}
    two, one = sharded.pair(strategy, raw)
    a = _same_results(two, one)
    assert a["matrix"][1] != a["matrix"][0] or a["matrix"][2] != a["matrix"][0]  # it trained
    for tag in ("stage0-end", "stage1-step20", "stage1-end"):  # whole weights and strategy state, mid-stage too
        wa, wb = _checkpoint(two, tag, "model"), _checkpoint(one, tag, "model")
        assert wa.keys() == wb.keys()
        worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
        print(f"{strategy} {tag}: max |weight difference| = {worst:.2e}")
        assert worst < 5e-3  # measured <= 1e-4: float summation order, which AdamW amplifies (naive: 1e-4)
        if (two / "ckpt" / tag / "strategy.safetensors").exists():  # l2's anchor, ewc's Fisher and anchor, ...
            sa, sb = _checkpoint(two, tag, "strategy"), _checkpoint(one, tag, "strategy")
            assert sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)
            rel = max(float((sa[k] - sb[k]).abs().max() / sb[k].abs().max().clamp(min=1)) for k in sa)
            print(f"{strategy} {tag}: max relative |state difference| = {rel:.2e}")
            assert rel < 5e-3


def preference_merge_config(base: str) -> dict:
    """task0 (instruct), pref1 (DPO against the stage start, averaged halfway back to it), task2 (from the base),
    merged (task arithmetic of task0 and task2 from their kept safetensors), on the tiny llama `base`
    (tests/test_deepspeed.py runs it too)."""
    raw = _tiny("naive", n_stages=3)
    raw["model"] = {"path": base}
    s0, s1, s2 = raw["stages"]

    def pairs(rows: list) -> list:
        return [
            {"prompt": r["text"], "chosen": r["label"], "rejected": "no" if r["label"] == "yes" else "yes"}
            for r in rows
        ]

    s2["start_from"] = "base"
    raw["stages"] = [
        s0,
        {
            "name": "pref1",
            "kind": "preference",
            "data": {"rows": pairs(s1["data"]["rows"])},
            "eval": {"rows": pairs(s1["eval"]["rows"])},
            "preference": {"beta": 0.1, "average": [0.5]},
        },
        s2,
        {"name": "merged", "kind": "merge", "merge": {"method": "task_arithmetic", "models": ["task0", "task2"]}},
    ]
    return raw


@pytest.mark.slow
@needs_launcher
def test_sharded_preference_and_merge_stages_match_one_process(sharded):
    """task0 (instruct), pref1 (DPO against the stage start, averaged halfway back to it), task2 (from the
    base), merged (task arithmetic of task0 and task2 from their kept safetensors): each matrix row is one
    stage kind."""
    raw = preference_merge_config(sharded.base)
    from safetensors.torch import load_file

    two, one = sharded.pair("pref-merge", raw)
    a = _same_results(two, one)
    assert a["matrix"][2][1] > a["matrix"][1][1] + 10  # DPO raised the preference accuracy
    ref_two = json.loads((two / "keep" / "dpo_ref_stage1.json").read_text())
    ref_one = json.loads((one / "keep" / "dpo_ref_stage1.json").read_text())
    assert max(abs(x - y) for p, q in zip(ref_two, ref_one) for x, y in zip(p, q)) < 1e-4  # reference log-probs
    for name in ("task0", "task2", "merged-merged"):  # kept weights and the merge's output, whole
        ka, kb = (
            load_file(str(two / "keep" / name / "model.safetensors")),
            load_file(str(one / "keep" / name / "model.safetensors")),
        )
        assert ka.keys() == kb.keys() and max(float((ka[k] - kb[k]).abs().max()) for k in ka) < 1e-3
    wa, wb = _checkpoint(two, "stage3-end", "model"), _checkpoint(one, "stage3-end", "model")
    merged = load_file(str(two / "keep" / "merged-merged" / "model.safetensors"))
    assert all(torch.equal(wa[k], merged[k]) for k in merged)  # the merge landed in the shards (head, norm too)
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    print(f"preference + merge: max |weight difference| after the merge = {worst:.2e}")
    assert worst < 1e-3


@pytest.mark.slow
@needs_launcher
def test_sharded_edit_stage_matches_one_process(sharded, fact_setup, tmp_path):
    """A fine-tuning stage (which leaves the model sharded) then ROME edits: the edit runs on a whole copy on
    the main process and the changed matrix is written into every process's shards. The first stage trains at
    a learning rate below float resolution, so both runs edit the same weights and the edited checkpoints can
    be compared exactly (after real training ROME's solve amplifies AdamW's 1e-6 float noise: measured 0.1 on
    the edited matrix, the matrix unchanged)."""
    from lifelong.testing import fact_requests

    subjects = list(fact_setup.facts)
    (tmp_path / "edits.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in fact_requests(fact_setup.facts, subjects[:4]))
    )
    known = [{"prompt": f"The home of {s}", "response": fact_setup.facts[s]} for s in subjects[20:28]]
    raw = {
        "name": "edit",
        "torch_threads": 1,
        "model": {"path": fact_setup.path},
        "train": {"lr": 1e-12, "batch_size": 12, "max_steps": 5, "max_length": 16, "keep_checkpoints": 2},
        "eval": {"batch_size": 16, "bootstrap": 0},
        "stages": [
            {"name": "known", "data": {"rows": known}, "eval": {"rows": known, "params": {"max_new_tokens": 2}}},
            {
                "name": "edits",
                "kind": "edit",
                "data": {"path": str(tmp_path / "edits.jsonl")},
                "edit": {"method": "rome", "params": {"layer": 0, "n_prefixes": 5, "stats": fact_setup.stats}},
            },
        ],
    }
    two, one = sharded.pair("edit", raw)
    a = _same_results(two, one)
    assert a["matrix"][2][1] >= a["matrix"][1][1] + 50  # the edits landed
    assert _results(two)["edits"]["edits"]["summary"] == _results(one)["edits"]["edits"]["summary"]
    wa, wb = _checkpoint(two, "stage1-end", "model"), _checkpoint(one, "stage1-end", "model")
    start = _checkpoint(one, "stage0-end", "model")
    edited = [k for k in wb if not torch.equal(wb[k], start[k])]
    assert edited and all("mlp" in k for k in edited)  # ROME changed its layer's MLP output matrix only
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) == 0.0  # measured: bit for bit


def test_refusals_under_sharding(tmp_path):
    """What cannot train sharded says why at validation (under `accelerate launch` with FSDP2 the same check
    runs before anything loads): LoRAMoE with experts added per stage, alone or composed."""
    from lifelong.configio import ConfigError
    from lifelong.strategies import STRATEGIES, build_strategy
    from lifelong.testing import tiny_run_config
    from lifelong.validation import validate_raw

    per_stage = {"name": "lora_moe", "experts": "per_stage"}
    raw = tiny_run_config(per_stage, output_dir=str(tmp_path))
    assert validate_raw(raw, sharding="none") and validate_raw(raw, sharding="ddp")
    with pytest.raises(ConfigError, match="strategy lora_moe cannot train sharded .FSDP2.: experts: per_stage grows"):
        validate_raw(raw, sharding="fsdp2")
    fixed = tiny_run_config({"name": "lora_moe", "experts": "fixed"}, output_dir=str(tmp_path))
    assert validate_raw(fixed, sharding="fsdp2").strategy[0].name == "lora_moe"
    composed = validate_raw(tiny_run_config([{"name": "replay"}, per_stage], output_dir=str(tmp_path)))
    why = build_strategy(composed.strategy).fsdp_refusal()
    assert why.startswith("LoRAMoE: experts: per_stage grows") and "use experts: fixed" in why
    # everything else declares it, each backed by a test in this file or tests/test_sharded.py
    assert sorted(n for n in STRATEGIES.names() if not STRATEGIES.get(n)().fsdp_refusal()) == sorted(
        set(STRATEGIES.names()) - {"lora_moe"}
    )
