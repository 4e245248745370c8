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
"""

from __future__ import annotations

import os
import socket

import pytest
import torch

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
