"""One-command GPU check: the quickstart stream (examples/quickstart.yaml) on CUDA with bf16 and SDPA attention.

    python bench/gpu_check.py                     # on a machine with a CUDA GPU; elsewhere: "no CUDA device: skipped"
    python bench/gpu_check.py --peak-tflops 200   # a GPU missing from the table below: its dense bf16 peak
    python bench/gpu_check.py --cpu-reference     # also run the CPU reference in this command (slow), not the file
    python bench/gpu_check.py --write-reference bench/gpu_check_reference.json   # regenerate it (runs on the CPU)

Reports training tokens/s (all stages; evaluation not timed), model FLOPs utilisation against the device's
dense bf16 peak, peak GPU memory (`torch.cuda.max_memory_allocated`), and compares the results matrix with the
CPU run's (bench/gpu_check_reference.json, made with `--write-reference` on 2 CPU cores in float32). The GPU
trains in bf16, so cells differ by some eval examples: each task scores 40 examples (2.5 points each). The same
stream trained in bf16 autocast on the CPU (in the reference file) differs from float32 by 0 points on the
baseline row (no training yet), 3.1 points on average and 15 at most (the forgotten news_topic cell after the
second stage, the most volatile one). The check passes when the baseline row is within 5 points
(`--baseline-tolerance`), the mean |GPU - CPU| within 6 (`--mean-tolerance`) and every cell within 20
(`--tolerance`): a broken GPU path (masks, dtype, attention) moves the baseline row and the mean, bf16 rounding
alone does not. Exit 0 when it passes or when there is no GPU, 1 when it does not.

MFU (PaLM, Chowdhery et al. 2022, appendix B): model FLOPs per trained token = 6 N + 12 L s h (forward and
backward of the N matrix-multiplied parameters, plus attention scores and values over s positions), times
tokens/s, over the peak. N counts the parameters that take part in matrix products: every parameter but an
untied input embedding (a lookup); s is the mean training sequence length.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "quickstart.yaml"
REFERENCE = ROOT / "bench" / "gpu_check_reference.json"

PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    # dense bf16 tensor-core peak (no sparsity) from the vendors' data sheets; the first name contained in
    # torch.cuda.get_device_name() wins, so the more specific names come first
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("H20", 148.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("A40", 149.7),
    ("A30", 165.0),
    ("A10G", 70.0),  # AWS variant of the A10, lower clocks; figure as AWS quotes it (not a vendor data sheet)
    ("A10", 125.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("RTX 6000 Ada", 364.0),
    ("RTX A6000", 154.8),
    ("RTX 4090", 165.2),
    ("RTX 3090", 71.0),
    ("V100", 125.0),  # fp16 (V100 has no bf16 tensor cores)
    ("T4", 65.0),  # fp16 likewise
]


def peak_bf16_flops(device_name: str, override_tflops: Optional[float] = None) -> Optional[float]:
    """The device's dense bf16 peak in FLOP/s: `override_tflops` when given, else from the table by name;
    None for a device the table does not know (MFU is then reported as n/a)."""
    if override_tflops is not None:
        return override_tflops * 1e12
    for name, tflops in PEAK_BF16_TFLOPS:
        if name.lower() in device_name.lower():
            return tflops * 1e12
    return None


def train_flops_per_token(n_params: int, layers: int, seq: float, hidden: int) -> float:
    """Model FLOPs of one trained token (forward + backward): 6 N + 12 L s h."""
    return 6 * n_params + 12 * layers * seq * hidden


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: Optional[float]) -> Optional[float]:
    """Model FLOPs utilisation as a fraction of the peak; None without a peak."""
    if not peak_flops:
        return None
    return tokens_per_s * flops_per_token / peak_flops


def gpu_config(strategy: str = "naive", output_dir: Optional[str] = None) -> Any:
    """The quickstart config as the check runs it: bf16 mixed precision, the given strategy, its own run name."""
    from lifelong.validation import load_config

    overrides = [f"name=gpu-check-{strategy}", "train.precision=bf16", f"strategy.0.name={strategy}"]
    if output_dir:
        overrides.append(f"output_dir={output_dir}")
    return load_config(CONFIG, overrides)


def matmul_params(model: Any) -> int:
    """Parameters taking part in matrix products: all but an untied input embedding."""
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is emb
    return total if tied else total - emb.numel()


def run_stream(strategy: str, out: str) -> dict[str, Any]:
    """Run the quickstart stream on whatever device torch sees; its matrix, speed and memory."""
    import torch

    from lifelong.runner import Run

    cfg = gpu_config(strategy, out)
    if cfg.train.precision == "bf16" and not torch.cuda.is_available():
        cfg.train.precision = "no"  # the CPU reference trains in float32
    run = Run(cfg, quiet=True)
    model = run.model
    if getattr(model.config, "_attn_implementation", None) != "sdpa" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("sdpa")
    attn = getattr(model.config, "_attn_implementation", "unknown")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = run.execute()
    wall = time.perf_counter() - t0
    costs = [res.costs[s.name] for s in cfg.stages if s.name in res.costs]
    tokens = sum(int(c.get("tokens", 0)) for c in costs)
    train_s = sum(float(c.get("wall_s", 0.0)) for c in costs)
    steps = sum(int(c.get("steps", 0)) for c in costs)
    layers = int(model.config.num_hidden_layers)
    return {
        "config": str(CONFIG.relative_to(ROOT)),
        "strategy": strategy,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "precision": cfg.train.precision,
        "attention": attn,
        "rows": res.rows,
        "tasks": [t["name"] for t in res.tasks],
        "matrix": res.matrix,
        "tokens": tokens,
        "train_s": train_s,
        "wall_s": wall,
        "tokens_per_s": tokens / train_s if train_s else 0.0,
        "mean_seq": tokens / max(steps * cfg.train.batch_size, 1),
        "n_matmul_params": matmul_params(model),
        "layers": layers,
        "hidden": int(model.config.hidden_size),
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
    }


def compare(gpu: list[list[Optional[float]]], ref: list[list[Optional[float]]]) -> dict[str, float]:
    """|GPU - CPU| over two matrices of the same shape (points): the largest, the mean, the baseline row's largest."""
    if len(gpu) != len(ref) or any(len(a) != len(b) for a, b in zip(gpu, ref)):
        raise ValueError("the GPU and CPU matrices differ in shape: not the same stream")
    rows = [
        [abs(float(a) - float(b)) for a, b in zip(ra, rb) if a is not None and b is not None]
        for ra, rb in zip(gpu, ref)
    ]
    cells = [d for row in rows for d in row]
    return {"max": max(cells), "mean": sum(cells) / len(cells), "baseline": max(rows[0])}


def verdict(
    diff: dict[str, float], tolerance: float = 20.0, mean_tolerance: float = 6.0, baseline: float = 5.0
) -> bool:
    """Whether the GPU matrix agrees with the CPU one (see the module doc for the three bounds)."""
    return diff["baseline"] <= baseline and diff["mean"] <= mean_tolerance and diff["max"] <= tolerance


def cpu_reference(strategy: str) -> dict[str, Any]:
    """Run the CPU reference in a child process that sees no GPU."""
    import subprocess

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ref.json"
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        cmd = [sys.executable, __file__, "--write-reference", str(path), "--strategy", strategy]
        subprocess.run(cmd, env=env, check=True)
        return json.loads(path.read_text())


def _matrix_text(m: list[list[Optional[float]]], rows: list[str], tasks: list[str]) -> str:
    lines = ["  " + " " * 18 + "".join(f"{t[:16]:>17}" for t in tasks)]
    for r, row in zip(rows, m):
        lines.append(f"  {r[:18]:<18}" + "".join(f"{v:>17.1f}" if v is not None else f"{'-':>17}" for v in row))
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strategy", default="naive", help="quickstart strategy (naive or replay)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, TFLOP/s")
    ap.add_argument("--tolerance", type=float, default=20.0, help="largest allowed |GPU - CPU| per cell, points")
    ap.add_argument("--mean-tolerance", type=float, default=6.0, help="largest allowed mean |GPU - CPU|, points")
    ap.add_argument("--baseline-tolerance", type=float, default=5.0, help="largest |GPU - CPU| before training")
    ap.add_argument("--cpu-reference", action="store_true", help="run the CPU reference now instead of the file")
    ap.add_argument("--write-reference", default=None, help="run on the CPU and write the reference JSON here")
    a = ap.parse_args(argv)
    if a.write_reference:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch initialises CUDA
        with tempfile.TemporaryDirectory() as d:
            ref = run_stream(a.strategy, d)
        Path(a.write_reference).write_text(json.dumps(ref, indent=1) + "\n")
        print(f"CPU reference written to {a.write_reference}: {ref['tokens_per_s']:.0f} tokens/s on the CPU")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: skipped (bench/gpu_check.py runs the quickstart stream on a CUDA GPU; nothing ran)")
        return 0
    with tempfile.TemporaryDirectory() as d:
        got = run_stream(a.strategy, d)
    ref = cpu_reference(a.strategy) if a.cpu_reference else json.loads(REFERENCE.read_text())
    if ref.get("strategy") != a.strategy:
        print(f"the reference file is for strategy {ref.get('strategy')}; use --cpu-reference for {a.strategy}")
        return 1
    peak = peak_bf16_flops(got["device"], a.peak_tflops)
    per_token = train_flops_per_token(got["n_matmul_params"], got["layers"], got["mean_seq"], got["hidden"])
    util = mfu(got["tokens_per_s"], per_token, peak)
    diff = compare(got["matrix"], ref["matrix"])
    ok = verdict(diff, a.tolerance, a.mean_tolerance, a.baseline_tolerance)
    print(f"device          {got['device']} ({got['precision']}, attention {got['attention']})")
    print(f"training        {got['tokens']} tokens in {got['train_s']:.1f} s: {got['tokens_per_s']:.0f} tokens/s")
    print(
        f"model FLOPs     {per_token / 1e9:.2f} GFLOP per token (6N + 12Lsh, N = {got['n_matmul_params'] / 1e6:.0f}M)"
    )
    if util is None or peak is None:
        print("MFU             n/a (device not in the peak table; pass --peak-tflops)")
    else:
        print(f"MFU             {util:.1%} of {peak / 1e12:.0f} TFLOP/s bf16 peak")
    print(f"peak memory     {got['peak_memory_gb']:.2f} GiB (torch.cuda.max_memory_allocated)")
    print("GPU matrix:\n" + _matrix_text(got["matrix"], got["rows"], got["tasks"]))
    print("CPU matrix:\n" + _matrix_text(ref["matrix"], ref["rows"], ref["tasks"]))
    print(
        f"|GPU - CPU|     baseline row {diff['baseline']:.1f} (<= {a.baseline_tolerance:g}), mean {diff['mean']:.1f} "
        f"(<= {a.mean_tolerance:g}), max {diff['max']:.1f} (<= {a.tolerance:g}) points: {'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
