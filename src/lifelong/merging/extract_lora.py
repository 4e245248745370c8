"""Extract a LoRA adapter from a fine-tuned model: truncated SVD of each linear layer's delta (`lifelong
extract-lora`).

For every selected linear weight (streamed one tensor at a time from the two checkpoints), the delta
D = W_tuned - W_base (out x in) is factorised by SVD, D = U S V^T, and truncated to rank k:
B = U_k sqrt(S_k), A = sqrt(S_k) V_k^T, written with scaling 1 (lora_alpha = r). By Eckart-Young, B A is
the best rank-k approximation of D in Frobenius norm, with relative error sqrt(1 - sum_{i<=k} s_i^2 /
sum_i s_i^2). The rank is fixed (`rank`, at most min(out, in)) or, with `energy`, the smallest k that keeps
that fraction of sum_i s_i^2 in each module (then `rank` caps it); modules whose rank differs from the
config's `r` go to PEFT's `rank_pattern` / `alpha_pattern`. For a fixed rank far below a large module's
size (min(out, in) > `lowrank_above`), a randomised SVD (Halko et al. 2011, `torch.svd_lowrank`, seeded)
replaces the full one. Modules whose delta is exactly zero get no factors.

Deltas outside linear weights (norms, embeddings, biases, the output head unless selected) cannot be written
as LoRA factors: they are listed in the report and left out, or, for modules named by `save_modules`, saved
whole from the tuned model through PEFT's `modules_to_save`. The output is a PEFT adapter directory
(adapter_config.json, adapter_model.safetensors, the tuned model's tokenizer) plus extract_report.json:
per module its rank, the energy kept and the relative Frobenius error of the written (dtype-cast) factors.

`compare_logits` loads base + adapter and the tuned model and reports, over a few texts, the largest
absolute logit difference and the mean KL(tuned || base + adapter) per token, next to KL(tuned || base)
(the whole fine-tune's effect) for scale.
"""

from __future__ import annotations

import fnmatch
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

from lifelong.merging.adapters import PREFIX, TOKENIZER_FILES, lora_ranks

DEFAULT_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Question: what is the capital of France? Answer: Paris.",
    "def add(a, b):\n    return a + b\n",
    "In 1905, Einstein published four papers that changed physics.",
)
"""Texts `compare_logits` runs when none are given."""


def module_kinds(model_dir: Path) -> tuple[dict[str, str], Optional[str]]:
    """Module name -> "linear" | "conv1d" | "embedding" | type name, from the config alone (a model built on
    the meta device: no weights), and the name of the output embeddings (the LM head)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    config = AutoConfig.from_pretrained(str(model_dir))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings()
    kinds, head_name = {}, None
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            kinds[name] = "linear"
        elif isinstance(mod, Conv1D):
            kinds[name] = "conv1d"
        elif isinstance(mod, torch.nn.Embedding):
            kinds[name] = "embedding"
        else:
            kinds[name] = type(mod).__name__
        if mod is head:
            head_name = name
    return kinds, head_name


def choose_rank(s: torch.Tensor, total: float, rank: Optional[int], energy: Optional[float]) -> int:
    """The kept rank: `rank` (capped by the number of singular values), or the smallest k whose singular
    values keep `energy` of `total` = sum of all s_i^2 (then capped by `rank`)."""
    if energy is None:
        return min(int(rank or 1), s.numel())
    cum = torch.cumsum(s.double() ** 2, 0)
    k = int((cum < energy * total * (1 - 1e-9)).sum()) + 1
    k = min(k, s.numel())
    return min(k, rank) if rank else k


def factorise(
    delta: torch.Tensor, rank: Optional[int], energy: Optional[float], lowrank_above: int = 4096
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(A, B, energy kept) of a delta out x in: B A its rank-k truncated SVD, the scale shared by A and B."""
    d = delta.float()
    total = float(d.double().pow(2).sum())
    small = min(d.shape)
    if energy is None and rank is not None and small > lowrank_above and 4 * rank < small:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            U, S, V = torch.svd_lowrank(d, q=min(rank + 10, small), niter=4)
        Vh = V.T
    else:
        U, S, Vh = torch.linalg.svd(d, full_matrices=False)
    k = choose_rank(S, total, rank, energy)
    root = S[:k].clamp(min=0).sqrt()
    kept = float((S[:k].double() ** 2).sum()) / total if total > 0 else 1.0
    return root[:, None] * Vh[:k], U[:, :k] * root[None, :], min(kept, 1.0)


def extract_lora(
    base: str | Path,
    tuned: str | Path,
    out_dir: str | Path,
    rank: Optional[int] = None,
    energy: Optional[float] = None,
    modules: Optional[list[str]] = None,
    save_modules: Optional[list[str]] = None,
    dtype: Optional[str] = None,
    lowrank_above: int = 4096,
    quiet: bool = True,
    console: Optional[Any] = None,
) -> dict[str, Any]:
    """Write the LoRA adapter of `tuned` - `base` to the new directory `out_dir`; returns the report (also
    written to extract_report.json). `modules`: globs over module names choosing the linear layers (default:
    every linear layer but the output head); `save_modules`: globs of modules saved whole (modules_to_save).
    Without `rank` and `energy`, rank 16."""
    from peft import LoraConfig
    from safetensors.torch import load_file, save_file

    from lifelong.merging.st_io import CODES, DTYPES, LazyModel, StreamingWriter, finalize
    from lifelong.progress import progress

    if energy is not None and not 0 < energy <= 1:
        raise ValueError(f"--energy {energy}: the fraction of sum sigma^2 kept must be in (0, 1]")
    if rank is not None and rank < 1:
        raise ValueError(f"--rank {rank}: must be at least 1")
    if rank is None and energy is None:
        rank = 16
    base, tuned, out = Path(base), Path(tuned), Path(out_dir)
    if out.exists():
        raise ValueError(f"{out} already exists; choose another --out (extraction never overwrites)")
    lb, lt = LazyModel(base), LazyModel(tuned)
    names = lb.names()
    have = set(lt.names())
    for n in names:
        if n not in have:
            raise ValueError(f"tuned {tuned}: tensor {n!r} of base {base} is missing: not a fine-tune of that base")
        if lb.meta(n)[1] != lt.meta(n)[1]:
            raise ValueError(
                f"tensor {n!r}: shape {lb.meta(n)[1]} in base but {lt.meta(n)[1]} in tuned (a resized vocabulary "
                "or another architecture): a LoRA adapter cannot change shapes"
            )
    extra = sorted(have - set(names))
    if extra:
        raise ValueError(f"tuned {tuned}: tensor {extra[0]!r} is not in base {base} ({len(extra)} extra)")
    kinds, head = module_kinds(tuned)
    linear = {m for m, k in kinds.items() if k in ("linear", "conv1d") and f"{m}.weight" in have}

    def picked(m: str, globs: Optional[list[str]]) -> bool:
        return any(fnmatch.fnmatchcase(m, g) for g in globs or [])

    saved_modules = sorted({n.rsplit(".", 1)[0] for n in names if picked(n.rsplit(".", 1)[0], save_modules)})
    for g in save_modules or []:
        if not any(fnmatch.fnmatchcase(m, g) for m in saved_modules):
            raise ValueError(
                f"--save-modules {g!r} matches no module with weights (e.g. {names[0].rsplit('.', 1)[0]!r})"
            )
    targets = [m for m in sorted(linear) if m not in saved_modules and (picked(m, modules) if modules else m != head)]
    for g in modules or []:
        if not any(fnmatch.fnmatchcase(m, g) for m in linear):
            example = next(iter(sorted(linear)), "?")
            raise ValueError(f"--modules {g!r} matches no linear layer (their names look like {example!r})")
    target_weights = {f"{m}.weight": m for m in targets}
    report: dict[str, Any] = {
        "base": str(base),
        "tuned": str(tuned),
        "rank": rank,
        "energy": energy,
        "modules": {},
        "unchanged_modules": [],
        "saved_whole": saved_modules,
        "left_out": [],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    work = Path(tempfile.mkdtemp(prefix="lifelong-extract-"))
    try:
        plan: list[tuple[str, str, list[int]]] = []
        sources: list[tuple[str, Path, str, str]] = []  # (output key, file, key in file, dtype code)
        ranks: dict[str, int] = {}
        fan_in_fan_out = False
        with progress(len(names), "extract lora", quiet, console, unit="tensors") as bar:
            for n in names:
                bar.advance()
                if not DTYPES[lb.meta(n)[0]].is_floating_point:
                    continue
                module = n.rsplit(".", 1)[0]
                code = CODES[getattr(torch, dtype)] if dtype else lt.meta(n)[0]
                if module in saved_modules:
                    plan.append((PREFIX + n, code, lt.meta(n)[1]))
                    sources.append((PREFIX + n, tuned, n, code))
                    continue
                tb, tt = lb.get(n).float(), lt.get(n).float()
                delta = tt - tb
                changed = bool(delta.abs().max() > 0) if delta.numel() else False
                if n not in target_weights:
                    if changed:
                        rel = float(delta.norm() / tb.norm()) if float(tb.norm()) > 0 else math.inf
                        kind = kinds.get(module, "?")
                        report["left_out"].append({"tensor": n, "module_kind": kind, "relative_change": rel})
                    continue
                if not changed:
                    report["unchanged_modules"].append(module)
                    continue
                conv = kinds[module] == "conv1d"  # transformers' Conv1D stores W as in x out
                fan_in_fan_out |= conv
                M = delta.T if conv else delta
                del tb, tt, delta
                A, B, kept = factorise(M, rank, energy, lowrank_above)
                A, B = A.to(DTYPES[code]).contiguous(), B.to(DTYPES[code]).contiguous()
                err = float((M - B.float() @ A.float()).norm() / M.norm())
                ranks[module] = A.shape[0]
                report["modules"][module] = {
                    "shape": list(M.shape),
                    "rank": A.shape[0],
                    "energy_kept": kept,
                    "relative_error": err,
                }
                f = work / f"{len(ranks)}.safetensors"
                save_file({"A": A, "B": B}, str(f))
                for which, t in (("A", A), ("B", B)):
                    key = f"{PREFIX}{module}.lora_{which}.weight"
                    plan.append((key, code, list(t.shape)))
                    sources.append((key, f, which, code))
                del A, B, M
        if not ranks:
            raise ValueError(
                f"no selected linear layer differs between {base} and {tuned}: nothing to extract"
                + (
                    f" ({len(report['left_out'])} other tensors differ; see --save-modules)"
                    if report["left_out"]
                    else ""
                )
            )
        writer = StreamingWriter(tmp, plan, 1 << 62)
        for key, f, k, code in sources:  # one tensor at a time
            writer.write(key, (lt.get(k) if f == tuned else load_file(str(f))[k]).to(DTYPES[code]))
        writer.close()
        (tmp / "model.safetensors").rename(tmp / "adapter_model.safetensors")
        r, rank_pattern = lora_ranks(ranks)
        LoraConfig(
            r=r,
            lora_alpha=r,
            rank_pattern=rank_pattern,
            alpha_pattern=dict(rank_pattern),
            target_modules=sorted(ranks),
            modules_to_save=saved_modules or None,
            base_model_name_or_path=str(base),
            task_type="CAUSAL_LM",
            fan_in_fan_out=fan_in_fan_out,
            lora_dropout=0.0,
            bias="none",
            inference_mode=True,
        ).save_pretrained(str(tmp))
        src = tuned if any((tuned / f).exists() for f in TOKENIZER_FILES) else base
        for fname in TOKENIZER_FILES:
            if (src / fname).exists():
                shutil.copy2(src / fname, tmp / fname)
        report["r"] = r
        report["rank_pattern"] = rank_pattern
        (tmp / "extract_report.json").write_text(json.dumps(report, indent=1))
        finalize(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


@torch.no_grad()
def compare_logits(
    base: str | Path,
    tuned: str | Path,
    adapter: str | Path,
    texts: Optional[list[str]] = None,
    max_length: int = 256,
) -> dict[str, Any]:
    """Base + adapter against the tuned model on `texts` (default `DEFAULT_TEXTS`), in float32: the largest
    absolute logit difference, the mean per-token KL(tuned || base + adapter), and KL(tuned || base) (what
    the whole fine-tune changes) for scale."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = list(texts or DEFAULT_TEXTS)
    tok_dir = adapter if (Path(adapter) / "tokenizer_config.json").exists() else tuned
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    ref = AutoModelForCausalLM.from_pretrained(str(tuned), dtype=torch.float32).eval()
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32), str(adapter)
    ).eval()
    max_diff, kl, kl_base, n = 0.0, 0.0, 0.0, 0
    for text in texts:
        ids = tok(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
        if ids.numel() == 0:
            continue
        lt = ref(input_ids=ids).logits[0].double()
        la = model(input_ids=ids).logits[0].double()
        with model.disable_adapter():
            lb = model(input_ids=ids).logits[0].double()
        max_diff = max(max_diff, float((lt - la).abs().max()))
        pt = lt.log_softmax(-1)
        kl += float((pt.exp() * (pt - la.log_softmax(-1))).sum())
        kl_base += float((pt.exp() * (pt - lb.log_softmax(-1))).sum())
        n += ids.shape[1]
    if n == 0:
        raise ValueError("compare_logits: the texts tokenize to nothing; give non-empty texts")
    return {
        "texts": len(texts),
        "tokens": n,
        "max_abs_logit_diff": max_diff,
        "mean_kl": kl / n,
        "mean_kl_base": kl_base / n,
    }
