"""Adapter-space merging of PEFT LoRA adapters trained on one base (`merge_method: lora`).

Each input is a PEFT LoRA adapter directory; adapter i adds to module m the delta s_i B_i A_i (A_i: r_i x in,
B_i: out x r_i, s_i = lora_alpha / r_i, or lora_alpha / sqrt(r_i) with rslora). The adapters are merged as
factors, module by module, and written as one PEFT adapter (adapter_config.json + adapter_model.safetensors,
loadable with `PeftModel.from_pretrained`); no full weight matrix of the base is ever read or formed. Every
combination writes scaling 1 (lora_alpha = r, per module through `rank_pattern`/`alpha_pattern`), with
c_i = w_i s_i (w_i the model's `weight`):

- `cat`: A = [c_1 A_1; ...; c_n A_n], B = [B_1 ... B_n]: B A = sum_i c_i B_i A_i exactly, rank sum_i r_i.
  (The concatenation used by multi-task LoRA exports, e.g. PEFT's `cat`.)
- `svd`: the exact delta sum_i c_i B_i A_i re-factorised by truncated SVD to `svd_rank` (default: the largest
  input rank): the best rank-k approximation of the exact delta (Eckart-Young). Computed without the
  out x in matrix: QR of the concatenated factors, then the SVD of the small (sum r_i)^2 core.
  B = U sqrt(S), A = sqrt(S) V^T.
- `linear`: A = sum_i sign(c_i) sqrt|c_i| A_i, B = sum_i sqrt|c_i| B_i (PEFT's definition: the square root
  of the weight on each factor, so one adapter of weight 1 comes back exactly). B A then has the cross terms
  B_i A_j: a cheap approximation of the weighted sum, as in PEFT; needs equal ranks.
- `ties`: TIES-Merging (Yadav et al. 2023, arXiv:2306.01708) on each factor separately, as PEFT does: trim
  each A_i (and each B_i) to its `density` fraction of largest magnitudes, elect each entry's sign from the
  trimmed factors (`majority_sign_method`: `total` mass or `frequency`), average with the coefficients above
  the entries that agree (disjoint mean). Needs equal ranks.
- `ties_svd`, `dare_linear_svd`, `dare_ties_svd`: the same on each module's full delta s_i B_i A_i (out x in,
  one module at a time), then truncated SVD to `svd_rank`. DARE (Yu et al. 2023, arXiv:2311.03099) keeps
  each entry with probability `density` and rescales by 1/density; masks are seeded by (seed, module,
  adapter), so a merge is reproducible and independent of module order.

Refused, with the reason: inputs that are not LoRA adapter dirs; DoRA, LoRA biases, `modules_to_save`,
trainable tokens or convolution LoRA; adapters trained on different bases or whose modules have different
shapes; `linear`/`ties` over adapters targeting different modules or with different ranks (the factor
spaces must correspond). The exact combinations (`cat`, `*svd`) accept different modules (a module absent
from an adapter adds nothing) and different ranks.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext

COMBINATIONS = ("cat", "svd", "linear", "ties", "ties_svd", "dare_linear_svd", "dare_ties_svd")
FACTOR_SPACE = ("linear", "ties")
"""Combinations computed on the factors themselves: need equal ranks and the same modules."""
SUFFIXES = {".lora_A.weight": "A", ".lora_B.weight": "B", ".lora_embedding_A": "A", ".lora_embedding_B": "B"}
PREFIX = "base_model.model."
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


class LoraMergeParams(Strict):
    combination_type: Literal["cat", "svd", "linear", "ties", "ties_svd", "dare_linear_svd", "dare_ties_svd"] = "cat"
    """How the adapters are combined (PEFT's `add_weighted_adapter` names): `cat` (exact, rank sum r_i),
    `svd` (exact delta truncated to svd_rank), `linear` / `ties` (on the factors, equal ranks), `ties_svd`,
    `dare_linear_svd`, `dare_ties_svd` (on each module's delta, then truncated SVD)."""
    density: Optional[float] = Field(default=None, gt=0, le=1)
    """Fraction of entries kept: by magnitude (ties, ties_svd) or at random with rescaling 1/density (dare_*).
    Required by those combinations."""
    majority_sign_method: Literal["total", "frequency"] = "total"
    """TIES sign election: by summed values (`total`, the paper's mass) or by summed signs (`frequency`)."""
    svd_rank: Optional[int] = Field(default=None, ge=1)
    """Rank of the *svd combinations' output (default: the largest input rank)."""

    def problem(self) -> Optional[tuple[str, str]]:
        """(parameter, why) when these parameters do not go together, else None. Not a model validator: the
        engine validates each parameter on its own (per tensor scope); the merge checks the combination."""
        c = self.combination_type
        if ("ties" in c or "dare" in c) and self.density is None:
            return "density", f"combination_type {c} needs density (the fraction of entries kept, 0 < density <= 1)"
        if self.density is not None and not ("ties" in c or "dare" in c):
            return "density", f"density has no effect with combination_type {c}; remove it"
        if self.svd_rank is not None and not c.endswith("svd"):
            return "svd_rank", f"svd_rank has no effect with combination_type {c} (only *svd combinations truncate)"
        return None


@MERGE_METHODS.register("lora")
class LoraAdapters(MergeMethod):
    """LoRA adapters merged as adapters into one PEFT adapter (cat, svd, linear, ties, ties_svd, dare_*_svd)."""

    Params = LoraMergeParams
    model_params: ClassVar[dict[str, Any]] = {"weight": 1.0}
    adapter_space: ClassVar[bool] = True
    """The engine hands the whole config to `merge_adapters` instead of streaming full tensors."""

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        raise ValueError(
            f"tensor {ctx.name!r}: merge_method lora merges PEFT LoRA adapter directories as adapters "
            "(lifelong.merging.adapters.merge_adapters), not full tensors; list adapter dirs under models:"
        )


# ---- the factor arithmetic (pure functions, float32) ---------------------------------------------------
def magnitude_trim(t: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the k = floor(density * numel) entries of largest magnitude (PEFT's count), zero the rest."""
    if density >= 1:
        return t
    k = int(density * t.numel())
    out = torch.zeros_like(t).reshape(-1)
    if k > 0:
        idx = t.abs().reshape(-1).topk(k).indices
        out[idx] = t.reshape(-1)[idx]
    return out.reshape(t.shape)


def dare_drop(t: torch.Tensor, density: float, gen: torch.Generator) -> torch.Tensor:
    """Keep each entry with probability `density`, rescaled by 1/density (unbiased)."""
    if density >= 1:
        return t
    keep = torch.rand(t.shape, generator=gen) < density
    return torch.where(keep, t / density, torch.zeros_like(t))


def ties_combine(tensors: list[torch.Tensor], coefs: list[float], sign_method: str) -> torch.Tensor:
    """Sign election over the (already trimmed) tensors, then the disjoint mean of coef_i * tensor_i over
    the entries whose sign agrees with the elected one (zeros never agree). The election uses the unweighted
    tensors and a zero total counts as positive, as PEFT's `ties` does."""
    stack = torch.stack(tensors)
    sign = stack.sign()
    votes = stack.sum(0) if sign_method == "total" else sign.sum(0)
    elected = torch.where(votes >= 0, 1.0, -1.0)
    agree = sign == elected
    c = torch.tensor(coefs, dtype=stack.dtype).reshape(-1, *([1] * (stack.dim() - 1)))
    return (stack * c * agree).sum(0) / agree.sum(0).clamp(min=1)


def sqrt_split(coefs: list[float]) -> tuple[list[float], list[float]]:
    """Per adapter, the coefficients of A and of B whose product is c: sign(c) sqrt|c| and sqrt|c|."""
    return [math.copysign(math.sqrt(abs(c)), c) for c in coefs], [math.sqrt(abs(c)) for c in coefs]


def linear_factors(
    As: list[torch.Tensor], Bs: list[torch.Tensor], coefs: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    ca, cb = sqrt_split(coefs)
    return sum(c * a for c, a in zip(ca, As)), sum(c * b for c, b in zip(cb, Bs))  # type: ignore[return-value]


def ties_factors(
    As: list[torch.Tensor], Bs: list[torch.Tensor], coefs: list[float], density: float, sign_method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    ca, cb = sqrt_split(coefs)
    A = ties_combine([magnitude_trim(a, density) for a in As], ca, sign_method)
    B = ties_combine([magnitude_trim(b, density) for b in Bs], cb, sign_method)
    return A, B


def cat_factors(
    As: list[torch.Tensor], Bs: list[torch.Tensor], coefs: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([c * a for c, a in zip(coefs, As)], 0), torch.cat(Bs, 1)


def split_svd(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A = sqrt(S_k) Vh_k, B = U_k sqrt(S_k) (the scale shared by the factors)."""
    r = S[:k].clamp(min=0).sqrt()
    return r[:, None] * Vh[:k], U[:, :k] * r[None, :]


def product_svd(B: torch.Tensor, A: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-k truncated SVD of B A (B: out x R, A: R x in) without forming it: B = Qb Rb, A^T = Qa Ra, so
    B A = Qb (Rb Ra^T) Qa^T and the SVD of the small core gives the singular vectors of the product."""
    Qb, Rb = torch.linalg.qr(B.double())
    Qa, Ra = torch.linalg.qr(A.double().T)
    Uc, S, Vhc = torch.linalg.svd(Rb @ Ra.T, full_matrices=False)
    a, b = split_svd(Qb @ Uc, S, Vhc @ Qa.T, k)
    return a.float(), b.float()


def dense_svd(delta: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    return split_svd(U, S, Vh, k)


def combine_module(
    As: list[Optional[torch.Tensor]],
    Bs: list[Optional[torch.Tensor]],
    weights: list[float],
    scalings: list[float],
    p: LoraMergeParams,
    k: int,
    seed: int = 0,
    module: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One module's merged factors (A: r x in, B: out x r) with scaling 1. `As[i]`/`Bs[i]` are None when
    adapter i does not target the module; `k` is the output rank of the *svd combinations."""
    idx = [i for i, a in enumerate(As) if a is not None]
    A_ = [As[i].float() for i in idx]  # type: ignore[union-attr]
    B_ = [Bs[i].float() for i in idx]  # type: ignore[union-attr]
    coefs = [weights[i] * scalings[i] for i in idx]
    c = p.combination_type
    if c == "cat":
        return cat_factors(A_, B_, coefs)
    if c == "linear":
        return linear_factors(A_, B_, coefs)
    if c == "ties":
        return ties_factors(A_, B_, coefs, p.density or 1.0, p.majority_sign_method)
    if c == "svd":
        A, B = cat_factors(A_, B_, coefs)
        return product_svd(B, A, k)
    deltas = [scalings[i] * (Bs[i].float() @ As[i].float()) for i in idx]  # type: ignore[union-attr]
    if c.startswith("dare"):
        gens = [torch.Generator().manual_seed(stable_seed(seed, module, i)) for i in idx]
        deltas = [dare_drop(d, p.density or 1.0, g) for d, g in zip(deltas, gens)]
    else:
        deltas = [magnitude_trim(d, p.density or 1.0) for d in deltas]
    w = [weights[i] for i in idx]
    if "ties" in c:
        merged = ties_combine(deltas, w, p.majority_sign_method)
    else:
        merged = sum(wi * d for wi, d in zip(w, deltas))  # type: ignore[assignment]
    return dense_svd(merged, k)


def stable_seed(seed: int, module: str, i: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{module}/{i}".encode()).digest()[:8], "little") >> 1


# ---- reading adapters ----------------------------------------------------------------------------------
def pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's `rank_pattern`/`alpha_pattern` lookup: the first key matching the end of the module name at a
    dot boundary (as a regular expression)."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


class Adapter:
    """A PEFT LoRA adapter directory: its config, and its factors read one module at a time."""

    def __init__(self, path: str | Path, label: str) -> None:
        self.path, self.label = Path(path), label
        cfg_file = self.path / "adapter_config.json"
        if not cfg_file.exists():
            raise ValueError(
                f"{label}: {self.path} is not a PEFT adapter directory (no adapter_config.json); merge_method "
                "lora merges LoRA adapters as adapters; merge full models with linear, ties, ..."
            )
        self.config: dict[str, Any] = json.loads(cfg_file.read_text())
        c = self.config
        why = None
        if c.get("peft_type", "LORA") != "LORA":
            why = f"it is a {c.get('peft_type')} adapter, not LoRA"
        elif c.get("use_dora"):
            why = "it is DoRA (use_dora: true): its magnitude vector rescales W + BA, so deltas do not add"
        elif c.get("bias", "none") != "none" or c.get("lora_bias"):
            why = f"it trains biases (bias: {c.get('bias')}, lora_bias: {c.get('lora_bias')}), which are not factors"
        elif c.get("modules_to_save"):
            why = f"it saves full modules (modules_to_save: {c['modules_to_save']}), which are not factors"
        elif c.get("trainable_token_indices") or c.get("target_parameters"):
            why = "it trains token embeddings or parameters directly (trainable_token_indices / target_parameters)"
        elif c.get("layer_replication"):
            why = "it replicates layers (layer_replication)"
        if why:
            raise ValueError(f"{label}: {self.path}: cannot merge in adapter space: {why}")
        st, binf = self.path / "adapter_model.safetensors", self.path / "adapter_model.bin"
        self._tensors: Optional[dict[str, torch.Tensor]] = None
        if st.exists():
            from safetensors import safe_open

            self.file = st
            with safe_open(str(st), framework="pt") as f:
                keys = list(f.keys())
                shapes = {k: list(f.get_slice(k).get_shape()) for k in keys}
                dtypes = {k: f.get_slice(k).get_dtype() for k in keys}
        elif binf.exists():
            self.file = binf
            self._tensors = torch.load(str(binf), map_location="cpu", weights_only=True)
            keys = list(self._tensors)
            shapes = {k: list(v.shape) for k, v in self._tensors.items()}
            from lifelong.merging.st_io import CODES

            dtypes = {k: CODES[v.dtype] for k, v in self._tensors.items()}
        else:
            raise ValueError(f"{label}: {self.path} has adapter_config.json but no adapter_model.safetensors")
        self.dtype = dtypes[keys[0]] if keys else "F32"
        self.keys: dict[str, dict[str, str]] = {}  # module -> {"A": key, "B": key}
        self.shapes = shapes
        for k in keys:
            suffix = next((s for s in SUFFIXES if k.endswith(s)), None)
            if suffix is None:
                raise ValueError(
                    f"{label}: {self.file}: tensor {k!r} is not a LoRA factor (lora_A / lora_B); adapters with "
                    "other trained tensors cannot be merged in adapter space"
                )
            module = k[: -len(suffix)]
            module = module[len(PREFIX) :] if module.startswith(PREFIX) else module
            self.keys.setdefault(module, {})[SUFFIXES[suffix]] = k
        for m, kk in self.keys.items():
            if set(kk) != {"A", "B"}:
                raise ValueError(f"{label}: module {m!r} has only one of its two LoRA factors (lora_A, lora_B)")
            a, b = shapes[kk["A"]], shapes[kk["B"]]
            if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
                raise ValueError(
                    f"{label}: module {m!r}: factors of shapes {a} and {b} are not a linear LoRA pair "
                    "(convolution LoRA is not supported in adapter space)"
                )
        if not self.keys:
            raise ValueError(f"{label}: {self.file} holds no LoRA factors")

    def rank(self, m: str) -> int:
        return self.shapes[self.keys[m]["A"]][0]

    def dims(self, m: str) -> tuple[int, int]:
        """(out, in) of the module's delta B A."""
        return self.shapes[self.keys[m]["B"]][0], self.shapes[self.keys[m]["A"]][1]

    def scaling(self, m: str) -> float:
        alpha = float(pattern_value(self.config.get("alpha_pattern") or {}, m, self.config.get("lora_alpha", 8)))
        r = self.rank(m)
        return alpha / math.sqrt(r) if self.config.get("use_rslora") else alpha / r

    def factors(self, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        kk = self.keys[m]
        if self._tensors is not None:
            return self._tensors[kk["A"]], self._tensors[kk["B"]]
        from safetensors import safe_open

        with safe_open(str(self.file), framework="pt") as f:
            return f.get_tensor(kk["A"]), f.get_tensor(kk["B"])

    def key(self, m: str, which: str) -> str:
        return self.keys[m][which]

    def declared_base(self) -> Optional[str]:
        return self.config.get("base_model_name_or_path") or None


def _same_place(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a == b


def check_adapters(adapters: list[Adapter], combination: str, base_model: Optional[str]) -> list[str]:
    """The output's modules (adapter 0's order, then new ones), after refusing incompatible inputs."""
    declared = [(a, a.declared_base()) for a in adapters if a.declared_base()]
    for a, d in declared[1:]:
        if not _same_place(d, declared[0][1]):  # type: ignore[arg-type]
            raise ValueError(
                f"{a.label} was trained on base {d!r} but {declared[0][0].label} on {declared[0][1]!r}: adapters "
                "merged in adapter space must share one base (each delta is relative to its own base); merge "
                "full models instead, or fix base_model_name_or_path if both are the same model"
            )
    if base_model and declared and Path(declared[0][1]).exists() and not _same_place(base_model, declared[0][1]):  # type: ignore[arg-type]
        raise ValueError(
            f"base_model {base_model!r} is not the base {declared[0][1]!r} that {declared[0][0].label} was trained on"
        )
    if len({bool(a.config.get("fan_in_fan_out")) for a in adapters}) > 1:
        raise ValueError("the adapters differ in fan_in_fan_out: they were not trained on one architecture")
    modules = list(adapters[0].keys)
    for a in adapters[1:]:
        modules += [m for m in a.keys if m not in adapters[0].keys and m not in modules]
    for m in modules:
        have = [a for a in adapters if m in a.keys]
        if combination in FACTOR_SPACE:
            if len(have) < len(adapters):
                lacking = next(a for a in adapters if m not in a.keys)
                raise ValueError(
                    f"module {m!r} has LoRA factors in {have[0].label} but not in {lacking.label}: combination_type "
                    f"{combination} averages factors and needs adapters on the same modules; use cat or svd "
                    "(a module absent from an adapter then adds nothing)"
                )
            ranks = {a.label: a.rank(m) for a in have}
            if len(set(ranks.values())) > 1:
                raise ValueError(
                    f"module {m!r}: ranks {ranks} differ: combination_type {combination} averages factors and "
                    "needs equal ranks; use cat (exact, rank sum r_i) or svd (exact delta truncated to svd_rank)"
                )
        dims = {a.label: a.dims(m) for a in have}
        if len(set(dims.values())) > 1:
            raise ValueError(
                f"module {m!r}: deltas of shapes (out, in) {dims} differ: the adapters were trained on different bases"
            )
    if base_model and (Path(base_model) / "config.json").exists():
        _check_against_base(adapters, modules, Path(base_model))
    return modules


def _check_against_base(adapters: list[Adapter], modules: list[str], base: Path) -> None:
    from lifelong.merging.st_io import LazyModel

    try:
        lm = LazyModel(base)
    except ValueError:
        return  # not a local safetensors model: nothing to check against
    names = set(lm.names())
    for m in modules:
        a = next(x for x in adapters if m in x.keys)
        out, inn = a.dims(m)
        w = f"{m}.weight"
        if w not in names:
            raise ValueError(f"{a.label}: module {m!r} has no weight {w!r} in base_model {base}: not its base")
        n = math.prod(lm.meta(w)[1])
        if n != out * inn:
            raise ValueError(
                f"{a.label}: module {m!r}: its delta is {out} x {inn} but {w!r} of base_model {base} has shape "
                f"{lm.meta(w)[1]}: not its base"
            )


# ---- the merge -----------------------------------------------------------------------------------------
def merge_lora(
    adapters: list[str | Path],
    out_dir: str | Path,
    weights: Optional[list[float]] = None,
    combination_type: str = "cat",
    density: Optional[float] = None,
    majority_sign_method: str = "total",
    svd_rank: Optional[int] = None,
    base_model: Optional[str] = None,
    dtype: Optional[str] = None,
    seed: int = 0,
    quiet: bool = True,
    console: Optional[Any] = None,
) -> Path:
    """Merge PEFT LoRA adapter dirs as adapters into a new PEFT adapter dir `out_dir` (see the module's
    docstring for the combinations). `weights[i]` scales adapter i's delta (default 1)."""
    params = LoraMergeParams(
        combination_type=combination_type,  # type: ignore[arg-type]
        density=density,
        majority_sign_method=majority_sign_method,  # type: ignore[arg-type]
        svd_rank=svd_rank,
    )
    labels = [f"models[{i}] {p}" for i, p in enumerate(adapters)]
    return _merge(
        [str(a) for a in adapters],
        labels,
        weights or [1.0] * len(adapters),
        params,
        out_dir,
        base_model,
        dtype,
        seed,
        quiet,
        console,
    )


def merge_adapters(cfg: Any, out_dir: str | Path, quiet: bool = False, console: Optional[Any] = None) -> Path:
    """The engine's entry for `merge_method: lora` (a `MergeConfig`): every `models:` entry must be a PEFT
    LoRA adapter dir; `parameters:` holds the combination (LoraMergeParams); per model only `weight`."""
    where = getattr(cfg, "_where", None)

    def fail(loc: tuple, message: str) -> ValueError:
        from lifelong.configio import ConfigError, Locator

        if where is not None:
            return ConfigError(Locator(where[0], where[1])(loc, message))
        return ValueError(f"{'.'.join(str(x) for x in loc)}: {message}")

    for field in ("slices", "overrides", "tokenizer_source", "tokenizer", "chat_template"):
        if getattr(cfg, field, None):
            raise fail((field,), "not supported by merge_method lora (adapters are merged as factors); remove it")
    params = LoraMergeParams(**(cfg.parameters or {}))
    why = params.problem()
    if why:
        raise fail(("parameters", why[0]), why[1])
    paths, labels, weights = [], [], []
    base = cfg.base_model
    for i, e in enumerate(cfg.models):
        if base and e.model == base:
            continue  # mergekit's convention: the base listed under models is the base, not an input
        p = dict(e.parameters or {})
        w = p.pop("weight", 1.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise fail(
                ("models", i, "parameters", "weight"), f"merge_method lora takes one number per adapter, got {w!r}"
            )
        if p:
            raise fail(
                ("models", i, "parameters", next(iter(p))),
                "merge_method lora takes only `weight` per model; put density, majority_sign_method, svd_rank "
                "under the global parameters:",
            )
        paths.append(str(e.model))
        labels.append(f"models[{i}] {e.model}")
        weights.append(float(w))
    if not paths:
        raise fail(("models",), "no adapter to merge (models: lists only the base)")
    return _merge(
        paths,
        labels,
        weights,
        params,
        out_dir,
        base,
        getattr(cfg, "out_dtype", None) or getattr(cfg, "dtype", None),
        getattr(cfg, "seed", 0),
        quiet,
        console,
    )


def _merge(
    paths: list[str],
    labels: list[str],
    weights: list[float],
    params: LoraMergeParams,
    out_dir: str | Path,
    base_model: Optional[str],
    dtype: Optional[str],
    seed: int,
    quiet: bool,
    console: Optional[Any],
) -> Path:
    from peft import LoraConfig

    from lifelong.merging.st_io import CODES, DTYPES, StreamingWriter, finalize
    from lifelong.progress import progress

    why = params.problem()
    if why:
        raise ValueError(f"parameters.{why[0]}: {why[1]}")
    if len(weights) != len(paths):
        raise ValueError(f"{len(weights)} weights for {len(paths)} adapters")
    out = Path(out_dir)
    if out.exists():
        raise ValueError(f"{out} already exists; choose another --out (merges never overwrite)")
    adapters = [Adapter(p, lab) for p, lab in zip(paths, labels)]
    c = params.combination_type
    modules = check_adapters(adapters, c, base_model)
    default_k = params.svd_rank or max(a.rank(m) for a in adapters for m in a.keys)
    ranks: dict[str, int] = {}
    for m in modules:
        have = [a for a in adapters if m in a.keys]
        out_f, in_f = have[0].dims(m)
        if c == "cat":
            ranks[m] = sum(a.rank(m) for a in have)
        elif c in FACTOR_SPACE:
            ranks[m] = have[0].rank(m)
        else:  # truncated SVD: at most min(out, in), and sum r_i for the exact product
            ranks[m] = min(default_k, out_f, in_f, sum(a.rank(m) for a in have) if c == "svd" else default_k)
    code = CODES[getattr(torch, dtype)] if dtype else adapters[0].dtype
    plan = []
    for m in modules:
        a0 = next(a for a in adapters if m in a.keys)
        out_f, in_f = a0.dims(m)
        plan += [(a0.key(m, "A"), code, [ranks[m], in_f]), (a0.key(m, "B"), code, [out_f, ranks[m]])]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    try:
        writer = StreamingWriter(tmp, plan, 1 << 62)
        with progress(len(modules), f"merge lora ({c})", quiet, console, unit="modules") as bar:
            for m in modules:
                fs = [a.factors(m) if m in a.keys else (None, None) for a in adapters]
                scal = [a.scaling(m) if m in a.keys else 0.0 for a in adapters]
                A, B = combine_module([f[0] for f in fs], [f[1] for f in fs], weights, scal, params, ranks[m], seed, m)
                a0 = next(a for a in adapters if m in a.keys)
                if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
                    raise ValueError(f"module {m!r}: the merge produced NaN or infinite factors (nothing was written)")
                writer.write(a0.key(m, "A"), A.to(DTYPES[code]).contiguous())
                writer.write(a0.key(m, "B"), B.to(DTYPES[code]).contiguous())
                bar.advance()
        writer.close()
        os.replace(tmp / "model.safetensors", tmp / "adapter_model.safetensors")
        r, rank_pattern = lora_ranks(ranks)
        first = adapters[0].config
        LoraConfig(
            r=r,
            lora_alpha=r,
            rank_pattern=rank_pattern,
            alpha_pattern=dict(rank_pattern),
            target_modules=list(modules),
            base_model_name_or_path=base_model or adapters[0].declared_base(),
            task_type=first.get("task_type"),
            fan_in_fan_out=bool(first.get("fan_in_fan_out")),
            lora_dropout=0.0,
            bias="none",
            inference_mode=True,
        ).save_pretrained(str(tmp))
        for f in TOKENIZER_FILES:
            if (adapters[0].path / f).exists():
                shutil.copy2(adapters[0].path / f, tmp / f)
        finalize(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def lora_ranks(ranks: dict[str, int]) -> tuple[int, dict[str, int]]:
    """The config's `r` (the most common module rank) and the `rank_pattern` for the other modules (keys:
    full module names, which PEFT matches exactly)."""
    r = Counter(ranks.values()).most_common(1)[0][0] if ranks else 1
    return r, {m: k for m, k in ranks.items() if k != r}
