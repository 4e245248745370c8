"""lifelong's streaming merge versus mergekit on the same checkpoints, methods and parameters.

    python -m venv /tmp/mkvenv && /tmp/mkvenv/bin/pip install torch==2.13.0 mergekit==0.1.5   # bench only
    python bench/merge_vs_mergekit.py --mergekit /tmp/mkvenv/bin/mergekit-yaml [--layers 30]

Three llama checkpoints shaped like SmolLM2-135M (hidden 576, 30 layers, vocab 49152; random weights, two
of them the base plus independent noise) are generated once into --work. Each merge runs in its own
subprocess, so time and peak resident memory (ru_maxrss of the child) are measured the same way for both
tools; printed as ratios lifelong / mergekit, with the largest absolute difference between the two outputs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

CASES = [
    ("linear", {}, {}, {}),
    ("task_arithmetic", {"lambda": 1.0}, {"lambda": 1.0}, {}),
    ("ties", {"density": 0.5}, {"normalize": True, "lambda": 1.0}, {"density": 0.5}),
]


def make_checkpoints(work: Path, layers: int) -> dict[str, str]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = {}
    cfg = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=layers,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    )
    for name, seed in (("base", 0), ("a", 1), ("b", 2)):
        d = work / name
        out[name] = str(d)
        if (d / "model.safetensors").exists():
            continue
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg)
        if name != "base":
            g = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01 * torch.randn(p.shape, generator=g))
        model.save_pretrained(d, max_shard_size="200MB")
    return out


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a command run in a fresh wrapper process."""
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:]); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); "
        "sys.exit(r.returncode)"
    )
    res = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{cmd[0]} failed:\n{res.stderr[-3000:]}")
    wall, rss = res.stdout.strip().splitlines()[-1].split()
    return float(wall), float(rss)


def max_diff(a: Path, b: Path) -> float:
    from lifelong.merging.st_io import LazyModel

    la, lb = LazyModel(a), LazyModel(b)
    worst = 0.0
    for n in la.names():
        if n in lb.where:
            worst = max(worst, float((la.get(n).float() - lb.get(n).float()).abs().max()))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mergekit", default="mergekit-yaml")
    ap.add_argument("--work", default="/tmp/lifelong-merge-bench")
    ap.add_argument("--layers", type=int, default=30)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    ck = make_checkpoints(work, a.layers)
    rows = []
    for method, ours_p, mk_p, mk_model_p in CASES:
        for tool in ("lifelong", "mergekit"):
            out = work / f"out-{tool}-{method}"
            subprocess.run(["rm", "-rf", str(out)])
            if tool == "lifelong":
                cfg = {
                    "merge_method": method,
                    "base_model": ck["base"],
                    "parameters": ours_p,
                    "models": [{"model": ck["a"]}, {"model": ck["b"]}],
                    "dtype": "float32",
                }
                if method == "linear":
                    cfg.pop("base_model")
                y = work / f"{tool}-{method}.yaml"
                y.write_text(yaml.safe_dump(cfg))
                cmd = [sys.executable, "-m", "lifelong", "merge", str(y), "--out", str(out)]
            else:
                cfg = {
                    "merge_method": method,
                    "base_model": ck["base"],
                    "parameters": mk_p,
                    "dtype": "float32",
                    "models": [
                        {"model": ck["a"], "parameters": {"weight": 1.0, **mk_model_p}},
                        {"model": ck["b"], "parameters": {"weight": 1.0, **mk_model_p}},
                    ],
                }
                if method == "linear":
                    cfg.pop("base_model")
                y = work / f"{tool}-{method}.yaml"
                y.write_text(yaml.safe_dump(cfg))
                cmd = [a.mergekit, str(y), str(out), "--lazy-unpickle", "--copy-tokenizer"]
            wall, rss = timed(cmd)
            rows.append((method, tool, wall, rss, out))
    print(f"checkpoints: 3 x llama {a.layers} layers (SmolLM2-135M shape), float32")
    print(f"{'method':16s} {'time ratio':>10s} {'peak RSS ratio':>14s} {'max |diff|':>11s}   (lifelong / mergekit)")
    for method, *_ in CASES:
        ours = next(r for r in rows if r[0] == method and r[1] == "lifelong")
        theirs = next(r for r in rows if r[0] == method and r[1] == "mergekit")
        print(
            f"{method:16s} {ours[2] / theirs[2]:10.2f} {ours[3] / theirs[3]:14.2f} {max_diff(ours[4], theirs[4]):11.2e}"
            f"   ({ours[2]:.1f}s {ours[3]:.0f}MB vs {theirs[2]:.1f}s {theirs[3]:.0f}MB)"
        )


if __name__ == "__main__":
    main()
