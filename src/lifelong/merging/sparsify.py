"""The task-vector family's shared parts: sparsifiers, the L1 rescale, sign consensus and the combine step.

Conventions are mergekit 0.1.5's (its "generalized task arithmetic"), so a mergekit config gives the same
model:
- Every input's task vector tau_i = theta_i - theta_base is sparsified on its own, unweighted:
  `magnitude` keeps exactly k = max(1, int(density * n)) entries of largest |tau| (TIES, arXiv 2306.01708);
  `random` keeps each entry with probability `density` (DARE, arXiv 2311.03099); `magnitude_outliers` drops the
  int(gamma * n) largest and then the smallest entries so that int(density * n) remain (Model Breadcrumbs,
  arXiv 2312.06795); `della_magprune` keeps each entry with a probability rising linearly with its magnitude
  rank in its row, from density - epsilon to density + epsilon (DELLA, arXiv 2406.11617).
- With `rescale` the survivors are scaled so the tensor keeps its L1 norm (sum |tau| before / after; not the
  papers' 1/p, which only holds in expectation); norms below 1e-7 are left alone.
- The sparsified vectors are multiplied by their weights; with sign consensus (TIES' election) an entry's
  sign is that of the summed weighted values (`sum`; zero counts as +) or of the summed signs (`count`), and
  only agreeing non-zero entries are merged; `normalize` divides by the sum of the agreeing weights (by the
  sum of all weights without consensus), a zero divisor (|sum| < 1e-8 without consensus) counting as 1;
  `lambda` scales the result, which is added to the base.
- Ties in magnitude at the k-th place are broken as torch's (unstable) sort orders them, as mergekit's argsort
  does, so `ties` and `breadcrumbs` equal mergekit's output (bit for bit on float32 inputs with the same
  thread count; the L1 sums may differ in the last bit across thread counts). When no tie straddles the k-th
  place the kept set is unique and is found by selection (kthvalue), without a sort.
- Random masks come from a generator seeded by (seed, tensor name, model index): reproducible and independent
  of the order tensors are processed in (mergekit draws from torch's global generator instead, so random
  methods agree with mergekit in distribution; with the same mask imposed they agree bit for bit). Every
  sparsifier takes `mask=` to impose a keep mask.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Literal, Optional, Union

import torch
from pydantic import ConfigDict, Field

from lifelong.config import Strict
from lifelong.merging.base import MergeMethod, TensorContext

CHUNK = 1 << 20
"""Elements per chunk of the combine step (bounds its temporaries to a few chunk-sized tensors)."""
RESCALE_EPS = 1e-7
"""L1 norms below this are not rescaled (mergekit's tolerance)."""

Sparsifier = Literal["magnitude", "random", "magnitude_outliers", "della_magprune"]
Consensus = Literal["sum", "count"]


# ---- seeded masks --------------------------------------------------------------------------------------
def seeded_generator(seed: int, name: str, index: int) -> torch.Generator:
    """A generator seeded by (seed, tensor name, model index): the same mask whatever the tensor order."""
    digest = hashlib.sha256(f"{seed}|{name}|{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def random_keep_mask(
    shape: torch.Size, keep: Union[float, torch.Tensor], seed: int, name: str, index: int
) -> torch.Tensor:
    """Boolean mask keeping each entry with probability `keep` (a number, or a tensor of per-entry
    probabilities of `shape`): u < keep with u uniform from the seeded generator."""
    u = torch.rand(shape, generator=seeded_generator(seed, name, index))
    return u < keep


# ---- rescale --------------------------------------------------------------------------------------------
def apply_mask(tensor: torch.Tensor, mask: torch.Tensor, rescale: bool) -> torch.Tensor:
    """tensor * mask; with `rescale`, times ||tensor||_1 / ||tensor * mask||_1 so the L1 norm is kept
    (unless either norm is below 1e-7). Dropped entries are (signed) zeros, as a float multiplication gives."""
    before = tensor.abs().sum() if rescale else None
    masked = tensor * mask
    if before is None:
        return masked
    after = masked.abs().sum()
    if before < RESCALE_EPS or after < RESCALE_EPS:
        return masked
    return masked.mul_(before / after)


# ---- magnitude ranks ------------------------------------------------------------------------------------
def _flat_abs(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().abs().reshape(-1).float()


def rank_range_mask(tensor: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Boolean mask of the entries whose rank by ascending |value| is in [lo, hi), ranks as torch's unstable
    ascending sort gives them (ties broken as that sort breaks them)."""
    w = _flat_abs(tensor)
    n = w.numel()
    lo, hi = max(0, lo), min(n, hi)
    if hi <= lo:
        return torch.zeros(tensor.shape, dtype=torch.bool)
    if lo == 0 and hi == n:
        return torch.ones(tensor.shape, dtype=torch.bool)
    # no tie straddles either end (checked one end at a time, the sort as soon as one does): a unique set
    b = w.kthvalue(hi).values if hi < n else None
    if b is None or int((w <= b).sum()) == hi:
        a = w.kthvalue(lo + 1).values if lo > 0 else None
        if a is None or int((w < a).sum()) == lo:
            keep = torch.ones(n, dtype=torch.bool) if a is None else w >= a
            if b is not None:
                keep &= w <= b
            return keep.view(tensor.shape)
    order = torch.sort(w, descending=False).indices
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[lo:hi]] = True
    return mask.view(tensor.shape)


def topk_mask(tensor: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k entries of largest |value|, ties at the k-th place broken as torch's unstable
    descending argsort breaks them (mergekit's ordering)."""
    w = _flat_abs(tensor)
    n = w.numel()
    if k <= 0:
        return torch.zeros(tensor.shape, dtype=torch.bool)
    if k >= n:
        return torch.ones(tensor.shape, dtype=torch.bool)
    th = w.kthvalue(n - k + 1).values  # the k-th largest
    if int((w >= th).sum()) == k:  # nothing tied with it outside the top k: the top k is unique
        return (w >= th).view(tensor.shape)
    order = torch.argsort(w, descending=True)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[:k]] = True
    return mask.view(tensor.shape)


# ---- sparsifiers ----------------------------------------------------------------------------------------
def magnitude_k(density: float, n: int) -> int:
    """Entries kept by `magnitude`: max(1, int(density * n)) (at least one in a non-empty tensor)."""
    return max(1, int(density * n))


def magnitude(
    tensor: torch.Tensor, density: float, rescale: bool = False, mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """TIES' trim: keep exactly k = max(1, int(density * n)) entries of largest magnitude (all with
    density >= 1, none with density <= 0)."""
    if density >= 1:
        return tensor
    if density <= 0 or tensor.numel() == 0:
        return torch.zeros_like(tensor)
    if mask is None:
        mask = topk_mask(tensor, magnitude_k(density, tensor.numel()))
    return apply_mask(tensor, mask, rescale)


def outlier_ranks(density: float, gamma: float, n: int) -> tuple[int, int]:
    """Ascending-magnitude rank range [lo, hi) kept by `magnitude_outliers`: int(density * n) entries above
    the smallest n - int(density * n) - int(gamma * n) (the outlier cut shrinks when both do not fit)."""
    target = int(density * n)
    lo = max(0, n - target - int(gamma * n))
    return lo, lo + target


def magnitude_outliers(
    tensor: torch.Tensor,
    density: float,
    gamma: float = 0.01,
    rescale: bool = False,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Model Breadcrumbs: drop the `gamma` fraction of largest-magnitude entries (outliers) and the small
    tail, keeping int(density * n) entries."""
    if density >= 1:
        return tensor
    if mask is None:
        mask = rank_range_mask(tensor, *outlier_ranks(density, gamma, tensor.numel()))
    return apply_mask(tensor, mask, rescale)


def bernoulli(
    tensor: torch.Tensor,
    density: float,
    rescale: bool = True,
    mask: Optional[torch.Tensor] = None,
    seed: int = 0,
    name: str = "",
    index: int = 0,
) -> torch.Tensor:
    """DARE's drop: keep each entry with probability `density` (mask from the (seed, name, index) generator
    unless given)."""
    if density >= 1:
        return tensor
    if mask is None:
        mask = random_keep_mask(tensor.shape, density, seed, name, index)
    return apply_mask(tensor, mask, rescale)


def check_della(density: float, epsilon: float) -> Optional[str]:
    """Why (density, epsilon) cannot define DELLA's keep probabilities, or None."""
    if 0 < density < 1 and not (0 < density - epsilon and density + epsilon < 1):
        return (
            f"DELLA keeps entries with probabilities from density - epsilon to density + epsilon, which must lie "
            f"in (0, 1): density={density}, epsilon={epsilon}; lower epsilon or move density away from 0 and 1"
        )
    return None


def della_probs(tensor: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """DELLA's MagPrune keep probabilities: along each row (dim 1; a 0-/1-d tensor is one row), the entry of
    magnitude rank r (1 = smallest, ties broken by torch's unstable argsort) of a row of c entries keeps
    with p = density - epsilon + 2 epsilon (r - 1) / (c - 1), so the row's mean is `density` (a row of one
    entry: p = density). Float32, in the tensor's shape."""
    rows = tensor.reshape(1, -1) if tensor.dim() < 2 else tensor
    mags = rows.detach().abs().float()
    c = mags.shape[1]
    if c < 2:
        return torch.full(tensor.shape, float(density))
    order = torch.argsort(mags, dim=1)
    steps = [1] * mags.dim()
    steps[1] = c
    rank = torch.empty(mags.shape, dtype=torch.float32)  # rank - 1 of every entry: the inverse permutation
    rank.scatter_(1, order, torch.arange(c, dtype=torch.float32).view(steps).expand_as(mags).contiguous())
    probs = (rank / (c - 1)).clamp_(0, 1).mul_(2 * epsilon).add_(density - epsilon)
    return probs.view(tensor.shape)


def della_magprune(
    tensor: torch.Tensor,
    density: float,
    epsilon: float = 0.15,
    rescale: bool = True,
    mask: Optional[torch.Tensor] = None,
    seed: int = 0,
    name: str = "",
    index: int = 0,
) -> torch.Tensor:
    """DELLA: keep each entry with its magnitude-ranked probability (`della_probs`), then (with `rescale`)
    restore the tensor's L1 norm."""
    if density >= 1:
        return tensor
    if density <= 0:
        return torch.zeros_like(tensor)
    why = check_della(density, epsilon)
    if why:
        raise ValueError(why)
    if mask is None:
        mask = random_keep_mask(tensor.shape, della_probs(tensor, density, epsilon), seed, name, index)
    return apply_mask(tensor, mask, rescale)


# ---- sign consensus and the combine step ----------------------------------------------------------------
def consensus_mask(stack: torch.Tensor, method: Consensus = "sum") -> torch.Tensor:
    """For weighted task vectors stacked on dim 0: True where an entry's sign equals the elected sign, the
    sign of the column's sum (`sum`, TIES' mass) or of its summed signs (`count`), a zero sum electing +.
    Zero entries never agree."""
    sign = stack.sign()
    total = stack.sum(0) if method == "sum" else sign.sum(0)
    elected = (total >= 0).to(stack.dtype) * 2 - 1
    return sign == elected


def combine(
    deltas: list[torch.Tensor],
    weights: list[float],
    base: torch.Tensor,
    consensus: Optional[Consensus] = None,
    normalize: bool = False,
    lambda_: float = 1.0,
    divide: Literal["weight", "count"] = "weight",
    raw: bool = False,
) -> torch.Tensor:
    """base + lambda * (sum_i w_i delta_i [over agreeing entries]) [/ divisor], computed chunk by chunk.

    Divisor with consensus: the sum of the agreeing entries' weights (`divide: weight`) or their number
    (`divide: count`), 0 counting as 1; without consensus: the sum of the weights, |sum| < 1e-8 counting as 1.
    Weights are float32, the weighted deltas are summed over the models in order (float32).

    `raw`: `deltas` are the models' tensors themselves and delta_i = theta_i - base is taken chunk by chunk
    (the same float32 subtraction), so no task vector is ever held whole: for methods that do not sparsify,
    this saves one tensor-sized allocation per model and its page faults (a fifth of task arithmetic's time
    on SmolLM2-shaped checkpoints)."""
    w = torch.tensor(weights, dtype=torch.float32)
    total_w = w.sum(0, keepdim=True)
    if total_w.abs() < 1e-8:
        total_w.fill_(1.0)
    col = w.view(-1, 1)
    out = torch.empty(base.shape, dtype=torch.float32)
    flat_out, flat_base = out.view(-1), base.reshape(-1)
    flat = [d.reshape(-1) for d in deltas]
    width = min(CHUNK, flat_base.numel())
    buf = torch.empty((len(flat), width), dtype=torch.float32)
    for a in range(0, flat_base.numel(), CHUNK):
        n = min(CHUNK, flat_base.numel() - a)
        if n == width:  # one reused buffer for the stacked chunk: no allocation per chunk
            stack = buf
            for i, f in enumerate(flat):
                if raw:
                    torch.sub(f[a : a + n], flat_base[a : a + n], out=buf[i])
                else:
                    buf[i].copy_(f[a : a + n])
        elif raw:  # the last, shorter chunk
            stack = torch.stack([f[a : a + n] - flat_base[a : a + n] for f in flat])
        else:
            stack = torch.stack([f[a : a + n] for f in flat])
        stack.mul_(col)
        if consensus is not None:
            agree = consensus_mask(stack, consensus)
            mixed = (stack * agree).sum(0)
            if normalize:
                if divide == "weight":
                    div = (col * agree).sum(0)
                    div[div == 0] = 1
                else:
                    div = agree.sum(0).clamp_(min=1).to(torch.float32)
                mixed.div_(div)
        else:
            mixed = stack.sum(0)
            if normalize:
                mixed.div_(total_w)
        if lambda_ != 1:
            mixed.mul_(lambda_)
        torch.add(flat_base[a : a + CHUNK], mixed, out=flat_out[a : a + CHUNK])
    return out


# ---- the methods' common class ---------------------------------------------------------------------------
class TaskVectorParams(Strict):
    """Global parameters of mergekit's task-vector methods (each method sets its own defaults)."""

    model_config = ConfigDict(populate_by_name=True)
    normalize: bool = False
    """Divide the merged task vector by the sum of the (agreeing) weights."""
    rescale: bool = False
    """After sparsifying, scale each task vector back to its L1 norm."""
    lambda_: float = Field(default=1.0, alias="lambda")
    """Scaling of the merged task vector (`lambda` in the YAML)."""
    int8_mask: bool = False
    """mergekit's memory option for the sign masks; accepted, no effect on the result."""


def check_fraction(name: str, value: Any) -> Optional[str]:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        return f"{name}={value!r} is not a fraction in [0, 1]"
    return None


class TaskVectorMethod(MergeMethod):
    """mergekit's generalized task arithmetic: sparsify each task vector, weight, [elect signs], sum,
    [normalize], scale by lambda, add to the base. Subclasses set `sparsifier`, `consensus`, the `Params`
    defaults and `model_params`."""

    Params = TaskVectorParams
    uses_base = True
    model_params: ClassVar[dict[str, Any]] = {"weight": 1.0, "density": 1.0}
    sparsifier: ClassVar[Optional[Sparsifier]] = None
    consensus: ClassVar[Optional[Consensus]] = None

    @classmethod
    def check_model_params(cls, params: dict[str, Any]) -> Optional[str]:
        """Why one model's resolved per-model parameters cannot be used, or None."""
        for name in ("density", "gamma"):
            if name in cls.model_params and name in params:
                why = check_fraction(name, params[name])
                if why:
                    return why
        if "epsilon" in cls.model_params:
            eps = params.get("epsilon", cls.model_params["epsilon"])
            why = check_fraction("epsilon", eps)
            if why:
                return why
            return check_della(float(params.get("density", cls.model_params["density"])), float(eps))
        return None

    def resolved(self, ctx: TensorContext, i: int) -> dict[str, Any]:
        """Model i's per-model parameters for this tensor (defaults from `model_params`), checked."""
        params = {name: ctx.model_param(i, name, default) for name, default in self.model_params.items()}
        why = self.check_model_params(params)
        if why:
            raise ValueError(
                f"tensor {ctx.name!r}, input model {i} (in the order of `models:`, base excluded): {why}; fix "
                "that model's `parameters:` (or the global `parameters:`)"
            )
        return params

    def sparsify(
        self, i: int, delta: torch.Tensor, weight: float, ctx: TensorContext, mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """Model i's sparsified (unweighted) task vector (`weight`: its weight, for rules that need it)."""
        if self.sparsifier is None:
            return delta
        rescale = bool(self.params.rescale)  # type: ignore[attr-defined]
        q = self.resolved(ctx, i)
        density = float(q["density"])
        if self.sparsifier == "magnitude":
            return magnitude(delta, density, rescale, mask)
        if self.sparsifier == "random":
            return bernoulli(delta, density, rescale, mask, ctx.seed, ctx.name, i)
        if self.sparsifier == "magnitude_outliers":
            return magnitude_outliers(delta, density, float(q["gamma"]), rescale, mask)
        return della_magprune(delta, density, float(q["epsilon"]), rescale, mask, ctx.seed, ctx.name, i)

    def consensus_rule(self) -> Optional[Consensus]:
        return self.consensus

    def divide_rule(self) -> Literal["weight", "count"]:
        return "weight"

    def merge(
        self,
        tensors: list[torch.Tensor],
        weights: list[float],
        base: Optional[torch.Tensor],
        ctx: TensorContext,
        masks: Optional[list[Optional[torch.Tensor]]] = None,
    ) -> torch.Tensor:
        """`masks[i]`, if given, is imposed as model i's keep mask (instead of the sparsifier's own)."""
        assert base is not None
        if not tensors:
            return base.clone()
        p: TaskVectorParams = self.params  # type: ignore[assignment]
        if masks is None and self.keeps_whole(ctx, len(tensors)):  # no sparsifying: deltas taken per chunk
            return combine(
                tensors,
                list(weights),
                base,
                self.consensus_rule(),
                p.normalize,
                p.lambda_,
                self.divide_rule(),
                raw=True,
            )
        deltas = [
            self.sparsify(i, t - base, weights[i], ctx, masks[i] if masks is not None else None)
            for i, t in enumerate(tensors)
        ]
        return combine(deltas, list(weights), base, self.consensus_rule(), p.normalize, p.lambda_, self.divide_rule())

    def keeps_whole(self, ctx: TensorContext, n: int) -> bool:
        """True when sparsifying leaves every task vector as it is: no sparsifier, or a magnitude / random one
        at density >= 1 (both return the vector unchanged there, rescale included, as mergekit's do)."""
        if self.sparsifier is None:
            return True
        if self.sparsifier not in ("magnitude", "random"):
            return False
        return all(float(self.resolved(ctx, i)["density"]) >= 1 for i in range(n))


# ---- lifelong's earlier rules (kept under explicit options: ties' trim_rule: threshold / trim: global,
# and the `dare` method's combine: ties) ----------------------------------------------------------------
def threshold_k(density: float, n: int) -> int:
    """k of the threshold rule: max(1, round(density * n))."""
    return max(1, int(round(density * n)))


def topk_threshold(tau: torch.Tensor, density: float) -> float:
    """Magnitude of the k-th largest entry, k = max(1, round(density * n)) (0 with density >= 1)."""
    if density >= 1 or tau.numel() == 0:
        return 0.0
    k = threshold_k(density, tau.numel())
    return float(tau.abs().flatten().kthvalue(tau.numel() - k + 1).values)


def trim_topk(tau: torch.Tensor, density: float) -> torch.Tensor:
    """Keep every entry with |tau| >= the k-th largest magnitude (entries tied with it are all kept, so
    more than k may survive)."""
    if density >= 1:
        return tau
    return torch.where(tau.abs() >= topk_threshold(tau, density), tau, torch.zeros_like(tau))


def elect_and_merge(taus: list[torch.Tensor], rule: str) -> torch.Tensor:
    """lifelong's earlier disjoint mean: elected sign = sign of the summed values (`mass`) or of the summed
    signs (`frequency`), 0 electing nothing; the mean of the agreeing non-zero entries, by count."""
    stack = torch.stack(taus)
    sign = torch.sign(stack.sum(0)) if rule == "mass" else torch.sign(torch.sign(stack).sum(0))
    agree = (torch.sign(stack) == sign) & (stack != 0)
    return (stack * agree).sum(0) / agree.sum(0).clamp(min=1)
