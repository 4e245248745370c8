"""lifelong's streaming merge versus mergekit: the same mergekit YAML run through both tools.

    python -m venv /tmp/mkvenv && /tmp/mkvenv/bin/pip install torch==2.13.0 mergekit==0.1.5   # bench only
    python bench/merge_vs_mergekit.py --mergekit /tmp/mkvenv/bin/mergekit-yaml [--layers 30] [--repeat 3]

Four llama checkpoints shaped like SmolLM2-135M (hidden 576, 30 layers, vocab 49152, float32; random weights:
a base and three fine-tunes = base + independent noise) are generated once into --work. Every case is ONE
mergekit YAML, written once and given unchanged to `lifelong merge CONFIG --out OUT` and to
`mergekit-yaml CONFIG OUT`: the table is at the same time a compatibility check.

Each merge runs in its own subprocess, so wall time and peak resident memory (ru_maxrss of the child) are
measured the same way for both tools; runs are paired (lifelong, mergekit, lifelong, mergekit, ...) and the
table shows the medians of the per-pair ratios with their range (these machines drift).

Outputs are compared tensor by tensor. Deterministic methods: the largest absolute difference. Methods that
drop entries at random (dare_*, della*) draw different masks in the two tools (mergekit uses torch's global
generator, lifelong a generator seeded by tensor name), so for them the bench compares what the masks
should preserve: the fraction of entries that differ from the base and the L1 norm of the merged delta,
each as a lifelong / mergekit ratio (median over tensors).

"Tensors held at peak" is (peak RSS - the tool's RSS after its imports) / the largest tensor's bytes: the
docs' claim "about one tensor per input" means it stays near the number of inputs (plus the method's
temporaries), whatever the model size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

RANDOM = {"dare_ties", "dare_linear", "della", "della_linear"}


def cases(ck: dict[str, str], layers: int) -> list[tuple[str, dict[str, Any]]]:
    """(label, mergekit YAML) for every method both tools have; parameters as mergekit's docs show them."""
    base, a, b, c = ck["base"], ck["a"], ck["b"], ck["c"]
    three = [{"model": a, "parameters": {"weight": 0.5}}, {"model": b, "parameters": {"weight": 0.3}}]
    three.append({"model": c, "parameters": {"weight": 0.2}})

    def gta(method: str, extra: dict[str, Any], glob: dict[str, Any]) -> dict[str, Any]:
        return {
            "merge_method": method,
            "base_model": base,
            "models": [{"model": base}]
            + [{"model": m, "parameters": {"weight": w, **extra}} for m, w in ((a, 1.0), (b, 0.7), (c, 0.5))],
            "parameters": glob,
            "dtype": "float32",
        }

    half = layers // 2
    return [
        ("linear", {"merge_method": "linear", "models": three, "dtype": "float32"}),
        ("task_arithmetic", gta("task_arithmetic", {}, {"lambda": 0.8})),
        ("ties", gta("ties", {"density": [1.0, 0.5, 0.3]}, {"normalize": True})),
        ("dare_ties", gta("dare_ties", {"density": 0.5}, {})),
        ("dare_linear", gta("dare_linear", {"density": 0.5}, {})),
        ("breadcrumbs", gta("breadcrumbs", {"density": 0.9, "gamma": 0.01}, {})),
        ("breadcrumbs_ties", gta("breadcrumbs_ties", {"density": 0.9, "gamma": 0.01}, {})),
        ("della", gta("della", {"density": 0.5, "epsilon": 0.1}, {"lambda": 1.0})),
        ("della_linear", gta("della_linear", {"density": 0.5, "epsilon": 0.1}, {"lambda": 1.0})),
        ("sce", gta("sce", {}, {"select_topk": 0.5})),
        (
            "slerp",
            {
                "merge_method": "slerp",
                "base_model": base,
                "slices": [
                    {"sources": [{"model": base, "layer_range": [0, layers]}, {"model": a, "layer_range": [0, layers]}]}
                ],
                "parameters": {
                    "t": [
                        {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                        {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
                        {"value": 0.5},
                    ]
                },
                "dtype": "float32",
            },
        ),
        (
            "nuslerp",
            {
                "merge_method": "nuslerp",
                "models": [{"model": a, "parameters": {"weight": 0.6}}, {"model": b, "parameters": {"weight": 0.4}}],
                "dtype": "float32",
            },
        ),
        ("multislerp", {"merge_method": "multislerp", "models": three, "dtype": "float32"}),
        ("karcher", {"merge_method": "karcher", "models": [{"model": m} for m in (a, b, c)], "dtype": "float32"}),
        (
            "model_stock",
            {
                "merge_method": "model_stock",
                "base_model": base,
                "models": [{"model": m} for m in (a, b, c)],
                "dtype": "float32",
            },
        ),
        (
            "nearswap",
            {
                "merge_method": "nearswap",
                "base_model": base,
                "models": [{"model": base}, {"model": a}],
                "parameters": {"t": 0.005},
                "dtype": "float32",
            },
        ),
        (
            "passthrough",
            {
                "merge_method": "passthrough",
                "slices": [
                    {"sources": [{"model": a, "layer_range": [0, half + 2]}]},
                    {"sources": [{"model": b, "layer_range": [half - 2, layers]}]},
                ],
                "dtype": "float32",
            },
        ),
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
    for name, seed in (("base", 0), ("a", 1), ("b", 2), ("c", 3)):
        d = work / name
        out[name] = str(d)
        if (d / "model.safetensors").exists() or (d / "model.safetensors.index.json").exists():
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


WRAPPER = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "print(r.stderr[-3000:], file=sys.stderr); "
    "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); "
    "sys.exit(r.returncode)"
)


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a command run in a fresh wrapper process."""
    res = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed:\n{res.stderr[-3000:]}")
    wall, rss = res.stdout.strip().splitlines()[-1].split()
    return float(wall), float(rss)


def compare(ours: Path, theirs: Path, base: Path, random: bool) -> dict[str, Any]:
    import torch

    from lifelong.merging.st_io import LazyModel

    lo, lt = LazyModel(ours), LazyModel(theirs)
    lb = LazyModel(base)
    names_o, names_t = set(lo.names()), set(lt.names())
    out: dict[str, Any] = {"only_lifelong": sorted(names_o - names_t), "only_mergekit": sorted(names_t - names_o)}
    worst, frac_r, l1_r = 0.0, [], []
    for n in sorted(names_o & names_t):
        x, y = lo.get(n).float(), lt.get(n).float()
        if x.shape != y.shape:
            out.setdefault("shape_mismatch", []).append(n)
            continue
        worst = max(worst, float((x - y).abs().max()))
        if random and n in lb.where and list(lb.meta(n)[1]) == list(x.shape):
            z = lb.get(n).float()
            fo, ft = float((x != z).float().mean()), float((y != z).float().mean())
            l1o, l1t = float((x - z).abs().sum()), float((y - z).abs().sum())
            if ft > 0 and l1t > 0:
                frac_r.append(fo / ft)
                l1_r.append(l1o / l1t)
            del z
    out["max_abs_diff"] = worst
    if random and frac_r:
        out["changed_fraction_ratio"] = statistics.median(frac_r)
        out["delta_l1_ratio"] = statistics.median(l1_r)
        out["delta_l1_ratio_range"] = [min(l1_r), max(l1_r)]
    del torch
    return out


def largest_tensor_bytes(path: Path) -> int:
    import torch

    from lifelong.merging.st_io import DTYPES, LazyModel

    m = LazyModel(path)
    best = 0
    for n in m.names():
        code, shape = m.meta(n)
        k = 1
        for d in shape:
            k *= d
        best = max(best, k * torch.empty(0, dtype=DTYPES[code]).element_size())
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mergekit", default="/tmp/mkvenv/bin/mergekit-yaml")
    ap.add_argument("--work", default="/tmp/lifelong-merge-bench")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3, help="paired runs per method (medians reported)")
    ap.add_argument("--methods", default="", help="comma-separated subset")
    ap.add_argument("--json", default="", help="also write the rows here")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    ck = make_checkpoints(work, a.layers)
    mk_python = str(Path(a.mergekit).parent / "python")
    base_rss = {
        "lifelong": statistics.median(
            timed([sys.executable, "-c", "import torch, safetensors, transformers, lifelong.merging.engine"])[1]
            for _ in range(3)
        ),
        "mergekit": statistics.median(
            timed([mk_python, "-c", "import torch, safetensors, transformers, mergekit.merge"])[1] for _ in range(3)
        ),
    }
    unit = largest_tensor_bytes(Path(ck["base"])) / 2**20
    wanted = {m for m in a.methods.split(",") if m}
    rows = []
    for label, cfg in cases(ck, a.layers):
        if wanted and label not in wanted:
            continue
        y = work / f"{label}.yaml"
        y.write_text(yaml.safe_dump(cfg, sort_keys=False))
        runs: dict[str, list[tuple[float, float]]] = {"lifelong": [], "mergekit": []}
        outs = {t: work / f"out-{t}-{label}" for t in runs}
        error = None
        for _ in range(a.repeat):
            for tool in ("lifelong", "mergekit"):
                subprocess.run(["rm", "-rf", str(outs[tool])])
                cmd = (
                    [sys.executable, "-m", "lifelong", "merge", str(y), "--out", str(outs[tool])]
                    if tool == "lifelong"
                    else [a.mergekit, str(y), str(outs[tool]), "--lazy-unpickle"]
                )
                try:
                    runs[tool].append(timed(cmd))
                except RuntimeError as e:
                    error = f"{tool}: {str(e)[-600:]}"
                    break
            if error:
                break
        if error:
            print(f"{label}: FAILED {error}", flush=True)
            rows.append({"method": label, "error": error})
            continue
        t_ratio = [o[0] / t[0] for o, t in zip(runs["lifelong"], runs["mergekit"])]
        m_ratio = [o[1] / t[1] for o, t in zip(runs["lifelong"], runs["mergekit"])]
        held = {
            tool: statistics.median((r[1] - base_rss[tool]) / unit for r in runs[tool])
            for tool in ("lifelong", "mergekit")
        }
        row = {
            "method": label,
            "time_ratio": statistics.median(t_ratio),
            "time_ratio_range": [min(t_ratio), max(t_ratio)],
            "rss_ratio": statistics.median(m_ratio),
            "rss_ratio_range": [min(m_ratio), max(m_ratio)],
            "lifelong_s": statistics.median(r[0] for r in runs["lifelong"]),
            "mergekit_s": statistics.median(r[0] for r in runs["mergekit"]),
            "lifelong_mb": statistics.median(r[1] for r in runs["lifelong"]),
            "mergekit_mb": statistics.median(r[1] for r in runs["mergekit"]),
            "tensors_held_lifelong": held["lifelong"],
            "tensors_held_mergekit": held["mergekit"],
            **compare(outs["lifelong"], outs["mergekit"], Path(ck["base"]), label in RANDOM),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        f"\n{a.layers}-layer llama checkpoints (SmolLM2-135M shape), float32, {a.repeat} paired runs; "
        f"largest tensor {unit:.0f} MB; RSS after imports: lifelong {base_rss['lifelong']:.0f} MB, "
        f"mergekit {base_rss['mergekit']:.0f} MB\n"
    )
    head = ["method", "time lifelong / mergekit", "peak RSS lifelong / mergekit", "tensors held at peak", "outputs"]
    print("| " + " | ".join(head) + " |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | failed: {r['error'][:120]} | | | |")
            continue
        if r["method"] in RANDOM:
            nan = float("nan")
            same = (
                f"masks differ (max {r['max_abs_diff']:.1e}); changed fraction ratio "
                f"{r.get('changed_fraction_ratio', nan):.3f}, delta L1 ratio {r.get('delta_l1_ratio', nan):.3f}"
            )
        else:
            same = f"max abs diff {r['max_abs_diff']:.1e}"
        if r["only_lifelong"] or r["only_mergekit"] or r.get("shape_mismatch"):
            bad = r.get("shape_mismatch", [])[:2]
            same += f"; names differ: {r['only_lifelong'][:2]} / {r['only_mergekit'][:2]} {bad}"
        tr, mr = r["time_ratio_range"], r["rss_ratio_range"]
        print(
            f"| {r['method']} | {r['time_ratio']:.2f} [{tr[0]:.2f}, {tr[1]:.2f}] "
            f"({r['lifelong_s']:.1f} s vs {r['mergekit_s']:.1f} s) | {r['rss_ratio']:.2f} [{mr[0]:.2f}, {mr[1]:.2f}] "
            f"({r['lifelong_mb']:.0f} vs {r['mergekit_mb']:.0f} MB) | "
            f"{r['tensors_held_lifelong']:.1f}, {r['tensors_held_mergekit']:.1f} | {same} |"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
