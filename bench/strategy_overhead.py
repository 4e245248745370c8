"""Per-step overhead of strategies relative to naive, measured in one process on the same model, stream and
batches: the median optimizer-step time of the *second* stage (where penalties, replay and teachers are
active), each strategy run twice in interleaved order (naive, a, b, ..., naive, a, b, ...) so machine-speed
drift hits all alike.

    python bench/strategy_overhead.py [--hidden 256] [--layers 4] [--steps 20] [--threads 1]

Targets (issue 3): replay and l2 within 1.15x, ewc within 1.2x, lwf within 2.2x of naive.

    python bench/strategy_overhead.py --ewc [--rounds 3] [--ewc-stages 12] [--steps 20]

Issue 16 item 5: offline EWC's state, the per-stage layout it had before (one Fisher and one anchor per
finished stage, re-implemented here as `ewc_per_stage`) against the closed form it keeps now (one Fisher sum
and one anchor, `lifelong.strategies.ewc`). Prints the state bytes after 1, 4 and 12 stages (measured on the
tiny llama of the tests and on this bench's model; counted from the parameter count for SmolLM2-135M's shape
on the meta device, nothing loaded or trained), and the median optimizer-step time of the 2nd and the last
stage of a `--ewc-stages` stream, naive / per-stage / closed form run in paired rounds (A B C C B A ...):
medians over rounds with their range, and the per-round ratios' median and range (the order reverses every
round, so a drift in machine speed hits every variant alike).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

SPECS = {
    "naive": {},
    "replay": {"buffer_size": 200, "fraction": 0.25},
    "l2": {"weight": 0.01},
    "ewc": {"weight": 1000.0, "normalize": True, "fisher_samples": 32},
    "lwf": {"weight": 1.0},
    "agem": {"memory_size": 200, "sample_size": 16},
    "merge_after_stage": {"weight": 0.5},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ewc", action="store_true", help="EWC state: per-stage layout against the closed form")
    ap.add_argument("--ewc-stages", type=int, default=12)
    a = ap.parse_args()
    if a.ewc:
        ewc_state(a)
        return

    from lifelong.runner import Run
    from lifelong.testing import tiny_run_config
    from lifelong.validation import validate_raw

    tmp = Path(tempfile.mkdtemp(prefix="lifelong-overhead-"))
    times: dict[str, list[float]] = {k: [] for k in SPECS}
    for rnd in range(a.rounds):
        for name, params in SPECS.items():
            raw = tiny_run_config(
                {"name": name, **params}, n_stages=2, steps=a.steps, name=f"{name}-{rnd}", output_dir=str(tmp)
            )
            raw["torch_threads"] = a.threads
            raw["train"].update(batch_size=16, max_length=64)
            raw["eval"].update(bootstrap=0, max_examples=4)
            raw["model"]["tiny_config"] = {
                "hidden_size": a.hidden,
                "intermediate_size": 4 * a.hidden,
                "num_hidden_layers": a.layers,
                "num_attention_heads": 8,
                "num_key_value_heads": 8,
            }
            run = Run(validate_raw(raw), quiet=True)
            run.execute()
            ev = [json.loads(x) for x in (run.run_dir / "events.jsonl").read_text().splitlines() if x.strip()]
            st = [e for e in ev if e.get("type") == "step" and e["stage"] == 1]
            times[name] += [b["time"] - p["time"] for p, b in zip(st, st[1:])]
    ref = statistics.median(times["naive"])
    n_params = sum(p.numel() for p in run.model.parameters())
    print(
        f"model {n_params / 1e6:.2f}M params, batch 16, {a.steps} steps per stage, {a.threads} thread(s); "
        f"median step of stage 2, {a.rounds} interleaved rounds"
    )
    print(f"{'strategy':20s} {'step ms':>9s} {'vs naive':>9s}")
    for name in SPECS:
        m = statistics.median(times[name])
        print(f"{name:20s} {1000 * m:9.1f} {m / ref:8.2f}x")
    shutil.rmtree(tmp, ignore_errors=True)


# ---- issue 16 item 5: EWC state, per-stage layout against the closed form ------------------------------

from lifelong.testing import SMOLLM2_135M_SHAPE  # noqa: E402

SMOLLM2_135M = {k: v for k, v in SMOLLM2_135M_SHAPE.items() if k != "model_type"}  # LlamaConfig kwargs
EWC_SPEC = {"weight": 1000.0, "normalize": True, "fisher_samples": 32}


def per_stage_ewc() -> type:
    """The offline EWC state as it was before the closed form: one (F_k, theta_k) per finished stage, the
    gradient lambda * sum_k F_k (theta - theta_k) added term by term (the reference of this comparison)."""
    import torch

    from lifelong.strategies._anchors import snapshot, trainable
    from lifelong.strategies.ewc import EWC

    class PerStageEWC(EWC):
        def __init__(self, params: Any = None, seed: int = 0) -> None:
            super().__init__(params, seed)
            self.terms: list[dict[str, dict[str, torch.Tensor]]] = []

        def after_stage(self, ctx: Any) -> None:
            self.terms.append({"fisher": self.fisher(ctx), "anchor": snapshot(ctx.model)})
            self.stages += 1
            self._version += 1

        @torch.no_grad()
        def before_step(self, ctx: Any) -> None:
            lam = self.params.weight
            key = (id(ctx.model), self._version)
            if getattr(self, "_terms_key", None) != key:
                named = trainable(ctx.model)
                self._term_lists = [
                    (
                        [named[n] for n in named if n in t["fisher"]],
                        [t["fisher"][n].to(named[n].device, named[n].dtype) for n in named if n in t["fisher"]],
                        [t["anchor"][n].to(named[n].device) for n in named if n in t["fisher"]],
                    )
                    for t in self.terms
                ]
                self._terms_key = key
            for params, fishers, anchors in self._term_lists:
                live = [i for i, p in enumerate(params) if p.grad is not None]
                diff = torch._foreach_sub([params[i].detach() for i in live], [anchors[i] for i in live])
                torch._foreach_mul_(diff, [fishers[i] for i in live])
                torch._foreach_add_([params[i].grad for i in live], diff, alpha=lam)

        def state_dict(self) -> dict[str, Any]:
            return {"terms": self.terms}

    return PerStageEWC


def tensor_bytes(x: Any) -> int:
    import torch

    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, dict):
        return sum(tensor_bytes(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return sum(tensor_bytes(v) for v in x)
    return 0


def measured_sizes(model: Any, stages: list[int]) -> dict[str, dict[int, int]]:
    """State bytes of both layouts after each of `stages` stages, `after_stage` on `model` (moved between)."""
    import torch

    from lifelong.strategies.base import StageContext
    from lifelong.strategies.ewc import EWC, EWCParams
    from lifelong.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    ex = [{"input_ids": [5 + i, 6 + i, 7 + i], "labels": [-100, 6 + i, 7 + i]} for i in range(4)]
    out: dict[str, dict[int, int]] = {}
    for name, cls in (("per-stage", per_stage_ewc()), ("closed form", EWC)):
        s, sizes = cls(EWCParams(fisher_samples=4)), {}
        gen = torch.Generator().manual_seed(0)
        for k in range(max(stages)):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1e-3 * torch.randn(p.shape, generator=gen))
            s.after_stage(StageContext(stage_index=k, stage_name=f"s{k}", model=model, tokenizer=tok, examples=ex))
            if k + 1 in stages:
                sizes[k + 1] = tensor_bytes(s.state_dict())
        out[name] = sizes
    return out


def ewc_state(a: argparse.Namespace) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lifelong.runner import Run
    from lifelong.strategies import STRATEGIES
    from lifelong.strategies._anchors import trainable
    from lifelong.testing import tiny_llama, tiny_run_config
    from lifelong.validation import validate_raw

    torch.set_num_threads(a.threads)
    counts = sorted({1, 4, a.ewc_stages})
    bench_shape = {
        "hidden_size": a.hidden,
        "intermediate_size": 4 * a.hidden,
        "num_hidden_layers": a.layers,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
    }
    print(f"EWC state bytes after {counts} stages (float32 weights; state_dict tensors)")
    print(f"{'model':34s} {'params':>11s} {'layout':12s} " + " ".join(f"{f'{k} stage(s)':>13s}" for k in counts))
    for label, model in (
        ("tiny llama (tests)", tiny_llama()),
        (f"bench llama (hidden {a.hidden})", tiny_llama(**bench_shape)),
    ):
        n = sum(p.numel() for p in trainable(model).values())
        for layout, sizes in measured_sizes(model, counts).items():
            cells = " ".join(f"{sizes[k] / 2**20:10.3f} MiB" for k in counts)
            print(f"{label:34s} {n:11,d} {layout:12s} {cells}")
            assert sizes[1] == 8 * n  # F and theta*, float32: the count below is the measured rule
    with torch.device("meta"):
        smol = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
    n = sum(p.numel() for p in trainable(smol).values())  # tied embeddings counted once, as the state holds them
    for layout, per in (("per-stage", lambda k: 8 * n * k), ("closed form", lambda k: 8 * n)):
        cells = " ".join(f"{per(k) / 2**20:10.1f} MiB" for k in counts)
        print(f"{'SmolLM2-135M shape (counted)':34s} {n:11,d} {layout:12s} {cells}")
    print(
        "  (bfloat16 weights: per-stage 6 bytes per parameter per stage, float32 F + bf16 anchor; closed form 6"
        " after one stage, 8 from the second on: the folded anchor is float32)"
    )

    STRATEGIES.register("ewc_per_stage")(per_stage_ewc())
    tmp = Path(tempfile.mkdtemp(prefix="lifelong-ewc-state-"))
    last = a.ewc_stages - 1
    variants = {
        "naive": "naive",
        "per-stage": {"name": "ewc_per_stage", **EWC_SPEC},
        "closed": {"name": "ewc", **EWC_SPEC},
    }
    times: dict[str, dict[int, list[float]]] = {v: {1: [], last: []} for v in variants}
    matrices: dict[str, Any] = {}
    try:
        for rnd in range(a.rounds):
            order = list(variants.items())
            for v, spec in order if rnd % 2 == 0 else order[::-1]:  # A B C, C B A, ...: drift cancels
                raw = tiny_run_config(
                    spec, n_stages=a.ewc_stages, steps=a.steps, name=f"{v}-{rnd}", output_dir=str(tmp)
                )
                raw["torch_threads"] = a.threads
                raw["train"].update(batch_size=16, max_length=64)
                raw["eval"].update(bootstrap=0, max_examples=4)
                raw["model"]["tiny_config"] = bench_shape
                for i, st in enumerate(raw["stages"]):
                    if i not in (1, last):
                        st["train"] = {"max_steps": 2}  # only the timed stages run all their steps
                run = Run(validate_raw(raw), quiet=True)
                res = run.execute()
                matrices.setdefault(v, res.matrix)
                ev = [json.loads(x) for x in (run.run_dir / "events.jsonl").read_text().splitlines() if x.strip()]
                for stage in (1, last):
                    st = [e for e in ev if e.get("type") == "step" and e["stage"] == stage]
                    times[v][stage].append(statistics.median(b["time"] - p["time"] for p, b in zip(st, st[1:])))
                shutil.rmtree(run.run_dir, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def spread(xs: list[float], scale: float = 1.0, fmt: str = "{:.1f}") -> str:
        m = statistics.median(xs)
        return f"{fmt.format(scale * m)} [{fmt.format(scale * min(xs))}, {fmt.format(scale * max(xs))}]"

    print(
        f"\nstep time, {a.ewc_stages}-stage stream, {sum(p.numel() for p in run.model.parameters()) / 1e6:.2f}M "
        f"params, batch 16, {a.steps} steps in stages 2 and {a.ewc_stages}, {a.threads} thread(s), "
        f"{a.rounds} paired rounds: median of per-round medians [min, max]"
    )
    for stage in (1, last):
        cells = "  ".join(f"{v} {spread(times[v][stage], 1000)} ms" for v in variants)
        print(f"stage {stage + 1:2d}: {cells}")
        ratios = {
            "per-stage / closed": [p / c for p, c in zip(times["per-stage"][stage], times["closed"][stage])],
            "per-stage / naive": [p / n for p, n in zip(times["per-stage"][stage], times["naive"][stage])],
            "closed / naive": [c / n for c, n in zip(times["closed"][stage], times["naive"][stage])],
        }
        print("          " + "  ".join(f"{k} {spread(r, fmt='{:.2f}')}x" for k, r in ratios.items()))
    same = matrices["per-stage"] == matrices["closed"]
    diff = max(
        abs(x - y) for rp, rc in zip(matrices["per-stage"], matrices["closed"]) for x, y in zip(rp, rc) if x is not None
    )
    print(f"results matrices of per-stage and closed form: {'identical' if same else f'max |difference| {diff:.3g}'}")


if __name__ == "__main__":
    main()
