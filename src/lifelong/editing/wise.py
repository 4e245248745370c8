"""WISE (Wang et al., NeurIPS 2024, "WISE: Rethinking the Knowledge Memory for Lifelong Model Editing of Large
Language Models"): edits go into side memories, copies of one late layer's MLP value matrix (the output
projection, `common.mlp_out`), and a router decides per input whether the main memory (the unchanged
weight) or a side memory answers. No base weight changes.

Implemented, following the paper and the authors' defaults:
- **Side memory.** A side memory is W_side = W + D (D kept as the difference, float32). Its activation score
  on an input is Delta_act(x) = ||A(x) (W_side - W)|| = ||A(x) D^T||, A(x) the projection's input at a token.
- **Editing** trains only D (SGD, `lr`, at most `steps` steps, D clamped elementwise to `norm_constraint`):
  the target NLL (teacher forced, the edit prompt alone and behind `n_prefixes` model-written prefixes) plus
  the routing margin loss  ReLU(s_out - alpha) + ReLU(beta - s_in) + ReLU(s_out - s_in + gamma)  (each term the
  mean of its violated entries, the last over all pairs, as the authors' code), which pushes the scores of
  edit inputs (s_in) above beta and of irrelevant inputs (s_out) below alpha, with a gap gamma.
- **Routing.** At inference a side memory is used when its score exceeds its threshold, fixed from its edits:
  `act_ratio` times the least score of its edits' inputs (recomputed whenever the memory changes); with
  several side memories, the one with the highest score among those above their thresholds answers, else
  the main memory does, bit for bit.
- **Knowledge sharding.** A side memory takes `memory_size` edits in shards of `shard_size` edits; each shard
  starts from W (D = 0) and is trained under its own random gradient mask of density `mask_ratio` (rho;
  Bernoulli, so two shards overlap on about rho^2 of the entries, as in the paper; `disjoint_masks` draws
  non-overlapping ones). When the memory is full its shards are merged into one D with TIES (trim to
  `merge_density` by magnitude, elect the sign by mass, disjoint mean: `lifelong.merging.ties`) and the next
  edit starts a new side memory (WISE-Retrieve). Shards not merged yet are routed like memories.

Choices where a token-level causal model needs one (recorded in docs/editing.md):
- The router decides per token position, causally: a position uses a side memory when that memory's score
  at this or any earlier position of the sequence exceeded its threshold (the running maximum; the
  authors' code routes a whole query by its mean score). So teacher-forced scoring, right-padded batches and
  generation with a KV cache (the running maximum is carried across cached steps) agree, and a prompt never
  triggered stays on the main memory at every position, bit for bit.
- In-scope positions (pushed above beta) are the subject's last token of the edit inputs; out-of-scope ones
  (pushed below alpha) are every other position of the edit inputs (the authors' `deact_mask`) and every
  position of the irrelevant inputs. The NLL is trained with the side memory from the subject's last token
  on, as the router will use it. The authors mark all subject tokens; with a causal router a subject's
  first token (say "E" of "Eiffel") would trigger the memory for every text starting the same way.
- Irrelevant inputs: `n_irrelevant` texts the model writes itself (seeded) plus `irrelevant`, instead of a
  dataset's locality prompt per edit; texts (and prefixes) naming a subject already edited are left out,
  since pushing them below alpha would unroute that edit. No weight decay on D (the authors' SGD decays the
  whole copied weight by 1e-5 per step, which moves entries outside the mask).
- The score is the paper's ||A(x) D^T||; the authors' code applies the MLP activation function to both
  outputs before taking the norm.
- A side memory's threshold is recomputed from its stored keys (the edits' in-scope projection inputs)
  whenever its D changes, including after the merge (the authors keep the least of the shards' minima,
  measured before the merge changed D). `replay` adds the authors' optional replay, on the stored keys.

The margins are absolute (the paper's 5 / 20 / 10 were set for 7B models; GPT-J used 15 / 40 / 20): scale them
with the norm of the projection's output on your model. Each EditResult's `restore` puts the memories back
as they were before its edit (undo newest first); `keep_undo: false` saves the rho fraction of the
matrix per edit that needs, for long runs. `state_dict` / `load_state_dict` carry every side memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from lifelong.config import Strict
from lifelong.data.edit_requests import EditRequest, subject_position, target_ids
from lifelong.editing import EDITORS
from lifelong.editing.base import Editor, EditResult
from lifelong.editing.common import (
    capture,
    context_templates,
    device_of,
    frozen,
    mlp_out,
    n_layers,
    pad_batch,
    pad_id,
    weight_2d,
)
from lifelong.merging.ties import elect_and_merge, trim_topk


class WiseParams(Strict):
    layer: Optional[int] = None
    """Layer whose MLP output projection gets side memories (default: 27/32 of the depth, the paper's layer
    27 of LLaMA-2-7B; 25 of 30 for SmolLM2)."""
    steps: int = Field(default=70, ge=1)
    """Most SGD steps per edit (the paper's n_iter)."""
    lr: float = Field(default=1.0, gt=0)
    """SGD learning rate on the side memory (the paper's edit_lr)."""
    alpha: float = Field(default=5.0, ge=0)
    """Irrelevant inputs' activation score is pushed below alpha."""
    beta: float = Field(default=20.0, gt=0)
    """Edit inputs' activation score is pushed above beta."""
    gamma: float = Field(default=10.0, ge=0)
    """Least gap between an edit input's score and an irrelevant input's score."""
    act_ratio: float = Field(default=0.88, gt=0, le=1)
    """Routing threshold of a side memory: act_ratio times the least score of its edits' inputs."""
    norm_constraint: float = Field(default=1.0, gt=0)
    """Largest |W_side - W| of any entry (the paper's norm_constraint)."""
    mask_ratio: float = Field(default=0.2, gt=0, le=1)
    """rho: density of each shard's random gradient mask."""
    disjoint_masks: bool = False
    """Shards of one side memory get non-overlapping masks (the paper's masks are independent Bernoulli)."""
    shard_size: int = Field(default=500, ge=1)
    """Edits per shard (the paper's save_freq)."""
    memory_size: int = Field(default=1000, ge=1)
    """Edits per side memory, a multiple of shard_size (the paper's merge_freq); then a new memory starts."""
    merge_density: float = Field(default=0.53, gt=0, le=1)
    """TIES trim density when the shards of a side memory are merged."""
    n_prefixes: int = Field(default=10, ge=0)
    """Model-written prefixes the edit prompt is also trained behind (the authors' code: 10)."""
    prefix_length: int = Field(default=10, ge=1)
    """Tokens per prefix."""
    n_irrelevant: int = Field(default=20, ge=0)
    """Model-written texts used as irrelevant inputs (their scores are pushed below alpha)."""
    irrelevant_length: int = Field(default=20, ge=1)
    """Tokens per model-written irrelevant text."""
    irrelevant: list[str] = Field(default_factory=list)
    """More irrelevant inputs (e.g. prompts of facts that must not change)."""
    stop_loss: float = Field(default=0.02, ge=0)
    """Stop an edit's training once NLL + margin loss is below this."""
    replay: bool = False
    """Also keep the earlier edits of this side memory above beta and push other memories' edit keys below
    alpha (the paper's optional replay, appendix B.3, here on the stored keys: no extra forward passes)."""
    keep_undo: bool = True
    """Keep what undo needs (the shard's previous masked entries: rho x the matrix per edit)."""
    seed: int = 0
    """Seeds prefixes, irrelevant texts and masks."""

    @model_validator(mode="after")
    def _check(self) -> "WiseParams":
        if self.memory_size % self.shard_size:
            fix = self.shard_size * max(1, self.memory_size // self.shard_size)
            raise ValueError(
                f"memory_size ({self.memory_size}) must be a multiple of shard_size ({self.shard_size}): a side "
                f"memory merges whole shards; e.g. memory_size: {fix}"
            )
        k = self.memory_size // self.shard_size
        if self.disjoint_masks and k * self.mask_ratio > 1 + 1e-9:
            raise ValueError(
                f"disjoint_masks: {k} shards of density mask_ratio={self.mask_ratio} do not fit in one matrix "
                f"(k * rho = {k * self.mask_ratio:.2f} > 1); lower mask_ratio to at most {1 / k:.3g} or use fewer "
                "shards"
            )
        return self


@dataclass(frozen=True)
class Entry:
    """One routable side memory (a shard still filling, a full shard not yet merged, or a merged memory)."""

    delta: torch.Tensor
    """W_side - W as (out, in), float32."""
    keys: torch.Tensor
    """Projection inputs at its edits' in-scope positions (n, in): what its threshold is computed from."""
    threshold: float
    edits: int
    memory: int
    """Index of the side memory it belongs to."""
    mask: Optional[torch.Tensor] = None
    """The shard's gradient mask (bool, (out, in)); None once merged."""
    subjects: tuple[str, ...] = ()
    """Subjects of its edits (irrelevant texts naming one are not pushed below alpha)."""


def scores(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Activation score ||x D^T|| of each row of x (any leading shape)."""
    return torch.sqrt((x.float() @ delta.T).pow(2).sum(-1) + 1e-12)


def threshold_of(keys: torch.Tensor, delta: torch.Tensor, act_ratio: float) -> float:
    return act_ratio * float(scores(keys, delta).min()) if len(keys) else float("inf")


def violated_mean(v: torch.Tensor) -> torch.Tensor:
    """Mean of the positive entries (0 when none), the authors' form of each margin term."""
    pos = v[v > 0]
    return pos.mean() if pos.numel() else v.new_zeros(())


def margin_loss(s_in: torch.Tensor, s_out: torch.Tensor, p: WiseParams) -> torch.Tensor:
    return (
        violated_mean(s_out - p.alpha)
        + violated_mean(p.beta - s_in)
        + violated_mean(s_out[:, None] - s_in[None, :] + p.gamma)
    )


def shard_mask(shape: tuple[int, ...], rho: float, seed: int, memory: int, shard: int, disjoint: bool) -> torch.Tensor:
    """The gradient mask of shard `shard` of side memory `memory`: Bernoulli(rho) per entry, or (disjoint)
    the shard's own slice of a random permutation of the entries, round(rho * numel) of them."""
    n = math.prod(shape)
    if disjoint:
        g = torch.Generator().manual_seed(seed * 1_000_003 + memory)
        perm = torch.randperm(n, generator=g)
        m = int(round(rho * n))
        mask = torch.zeros(n, dtype=torch.bool)
        mask[perm[shard * m : (shard + 1) * m]] = True
        return mask.view(shape)
    g = torch.Generator().manual_seed(seed * 1_000_003 + 7_919 * memory + shard + 1)
    return (torch.rand(shape, generator=g) < rho).view(shape)


class SideMemory:
    """The side memories of one projection, the router (a forward hook on the projection) and, on the model,
    a pre-hook reading the attention mask and cache length so the running maximum follows cached steps."""

    def __init__(self, model: Any, layer: int) -> None:
        self.model = model
        self.layer = layer
        self.module = mlp_out(model, layer)
        self.entries: list[Entry] = []
        self.version = 0
        self.training: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # (D, route mask (B, T)) while editing
        self.call: Optional[dict] = None
        self.carry: Optional[tuple[int, torch.Tensor]] = None  # (next cache length, running max (J, B))
        self.last = torch.zeros(
            0, 0, dtype=torch.long
        )  # side memory used per (row, position) of the last call, -1: main
        self.handles: list[Any] = []

    # ---- hooks ----------------------------------------------------------------------------------------
    def attach(self) -> None:
        if self.handles:
            return
        self.handles = [
            self.model.register_forward_pre_hook(self._enter, with_kwargs=True),
            self.model.register_forward_hook(self._leave),
            self.module.register_forward_hook(self._route),
        ]

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        self.carry = self.call = None

    def _enter(self, module: Any, args: Any, kwargs: dict) -> None:
        past = kwargs.get("past_key_values")
        n_past = 0
        if past is not None:
            get = getattr(past, "get_seq_length", None)
            n_past = int(get()) if get is not None else int(past[0][0].shape[-2])
        self.call = {"mask": kwargs.get("attention_mask"), "past": n_past}

    def _leave(self, module: Any, args: Any, out: Any) -> None:
        self.call = None

    def _route(self, module: Any, args: Any, out: Any) -> Any:
        h = out[0] if isinstance(out, tuple) else out
        x = args[0]
        if self.training is not None:
            delta, where = self.training
            new = h + (x.to(delta.dtype) @ delta.T).to(h.dtype) * where[..., None].to(h.dtype)
        else:
            new = self.routed(x, h)
            if new is None:
                return out
        return (new,) + tuple(out[1:]) if isinstance(out, tuple) else new

    def routed(self, x: torch.Tensor, h: torch.Tensor) -> Optional[torch.Tensor]:
        """The projection's output with each position routed (None: every position stays on the main memory)."""
        b, t = x.shape[0], x.shape[1]
        self.last = torch.full((b, t), -1, dtype=torch.long)
        if not self.entries:
            return None
        deltas = torch.stack([e.delta for e in self.entries]).to(x.device)  # (J, out, in)
        diff = torch.einsum("bti,joi->jbto", x.float(), deltas)
        s = torch.sqrt(diff.pow(2).sum(-1) + 1e-12)  # (J, B, T)
        call = self.call or {"mask": None, "past": 0}
        mask = call["mask"]
        if mask is not None and mask.dim() == 2 and mask.shape[0] == b and mask.shape[-1] >= t:
            s = s.masked_fill(~mask[:, -t:].bool()[None], float("-inf"))
        run = torch.cummax(s, dim=-1).values
        if self.carry is not None and call["past"] > 0 and self.carry[0] == call["past"]:
            prev = self.carry[1]
            if prev.shape == run.shape[:2]:
                run = torch.maximum(run, prev[..., None])
        self.carry = (call["past"] + t, run[..., -1].detach())
        thr = torch.tensor([e.threshold for e in self.entries], device=x.device)[:, None, None]
        live = run >= thr
        if not bool(live.any()):
            return None
        best = torch.where(live, run, torch.full_like(run, float("-inf"))).argmax(0)  # (B, T)
        use = live.any(0)
        self.last = torch.where(use, best, torch.full_like(best, -1)).cpu()
        pick = diff.gather(0, best[None, ..., None].expand(1, b, t, diff.shape[-1]))[0]
        return torch.where(use[..., None], h + pick.to(h.dtype), h)

    # ---- state ----------------------------------------------------------------------------------------
    def state(self) -> list[dict]:
        out = []
        for e in self.entries:
            d = {
                "delta": e.delta,
                "keys": e.keys,
                "threshold": e.threshold,
                "edits": e.edits,
                "memory": e.memory,
                "subjects": list(e.subjects),
            }
            if e.mask is not None:
                d["mask"] = e.mask
            out.append(d)
        return out


@EDITORS.register("wise")
class Wise(Editor):
    """WISE: edits trained into side memories (copies of one late MLP value matrix) with a router on the
    activation score; knowledge sharding with random gradient masks merged by TIES; no base weight changes."""

    Params = WiseParams
    changes_weights = False

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.memory: Optional[SideMemory] = None
        self.templates: Optional[list[str]] = None
        self.irrelevant_texts: Optional[list[str]] = None
        self.n_edits = 0  # edits stored (shard / memory bookkeeping)
        self._acts: dict[str, torch.Tensor] = {}

    # ---- setup --------------------------------------------------------------------------------------------
    def layer_of(self, model: Any) -> int:
        p: WiseParams = self.params  # type: ignore[assignment]
        n = n_layers(model)
        return (p.layer if p.layer is not None else int(n * 27 / 32)) % n

    def bind(self, model: Any) -> SideMemory:
        layer = self.layer_of(model)
        if self.memory is not None and (self.memory.model is not model or self.memory.layer != layer):
            if self.memory.entries:
                raise ValueError(
                    "this wise editor holds side memories of another model (or layer); undo its edits first or "
                    "use a new editor for this model"
                )
            self.memory.detach()
            self.memory = None
        if self.memory is None:
            self.memory = SideMemory(model, layer)
            self._acts = {}
        return self.memory

    def texts(self, model: Any, tok: Any) -> tuple[list[str], list[str]]:
        """Prefix templates and model-written irrelevant texts, drawn once (before any side memory exists)."""
        p: WiseParams = self.params  # type: ignore[assignment]
        if self.templates is None:
            self.templates = context_templates(model, tok, p.n_prefixes, p.prefix_length, p.seed)
        if self.irrelevant_texts is None:
            gen = context_templates(model, tok, p.n_irrelevant, p.irrelevant_length, p.seed + 1)[1:]
            self.irrelevant_texts = [t[: -len(". {}")] for t in gen]
        return self.templates, self.irrelevant_texts

    # ---- editing --------------------------------------------------------------------------------------------
    def apply(self, model: Any, tok: Any, requests: list[EditRequest]) -> EditResult:
        p: WiseParams = self.params  # type: ignore[assignment]
        (req,) = requests
        mem = self.bind(model)
        templates, irrelevant = self.texts(model, tok)
        device = device_of(model)
        w = weight_2d(mem.module)
        k = p.memory_size // p.shard_size
        memory_index, shard_index = divmod(self.n_edits // p.shard_size, k)
        new_shard = self.n_edits % p.shard_size == 0
        old_entries, old_n_edits = list(mem.entries), self.n_edits
        if new_shard:
            mask = shard_mask(tuple(w.shape), p.mask_ratio, p.seed, memory_index, shard_index, p.disjoint_masks)
            mask = mask.to(w.device)
            zero = w.new_zeros(w.shape, dtype=torch.float32)
            base = Entry(zero, w.new_zeros(0, w.shape[1], dtype=torch.float32), float("inf"), 0, memory_index, mask)
        else:
            base = old_entries[-1]
        assert base.mask is not None
        edited = {req.subject.lower()} | {x.lower() for e in old_entries for x in e.subjects}
        names = lambda t: any(x in t.lower() for x in edited)  # noqa: E731
        # a prefix naming an edited subject would put an in-scope key among the out-of-scope positions
        ids, attn, route, is_in, tgts = self.edit_inputs(tok, req, [t for t in templates if not names(t)], device)
        with torch.no_grad(), capture(mem.module, "input") as seen:
            model(input_ids=ids, attention_mask=attn)
        acts = seen[0].float()
        a_new = a_in = acts[is_in]
        irr = [t for t in list(irrelevant) + list(p.irrelevant) if not names(t)]
        a_out = torch.cat([acts[attn.bool() & ~is_in], self.activations(model, tok, irr)])
        if p.replay:  # the authors' replay (appendix B.3), on stored keys instead of re-run inputs
            a_in = torch.cat([a_in, base.keys])
            others = [e.keys for e in old_entries if e.memory != base.memory]
            a_out = torch.cat([a_out] + others)
        mem.attach()
        try:
            delta, figures = self.train(model, mem, base, ids, attn, route, tgts, a_in, a_out)
        except BaseException:
            if not mem.entries:
                mem.detach()
            raise
        keys = torch.cat([base.keys, a_new])
        post = replace(base, delta=delta, keys=keys, edits=base.edits + 1, subjects=base.subjects + (req.subject,),
                       threshold=threshold_of(keys, delta, p.act_ratio))  # fmt: skip
        mem.entries = (old_entries if new_shard else old_entries[:-1]) + [post]
        self.n_edits += 1
        merged = self.n_edits % p.memory_size == 0
        if merged:
            self.merge(mem, memory_index)
        mem.version += 1
        with torch.no_grad():
            s_in, s_out = scores(a_new, delta), scores(a_out, delta)
        routed = self.routed_nll(model, tok, req)
        info = {
            "layer": mem.layer,
            "memory": memory_index,
            "shard": shard_index,
            **figures,
            "nll_routed": routed,
            "score_in_min": float(s_in.min()),
            "score_out_max": float(s_out.max()) if len(s_out) else 0.0,
            "threshold": post.threshold,
            "side_memories": len(mem.entries),
            "merged": merged,
        }
        result = EditResult("wise", [req], info=info)
        result.note_convergence(req, routed, math.log(2), "target NLL per token through the router")
        result.restore.append(self.undoer(mem, old_entries, old_n_edits, base, post if merged else None, new_shard))
        return result

    def undoer(
        self, mem: SideMemory, old: list[Entry], n_edits: int, base: Entry, post: Optional[Entry], new_shard: bool
    ) -> Any:
        """The restore callback of one edit. It keeps the entries before the edit except the shard it trained,
        of which only the masked entries' previous values are kept (the rest of D is unchanged by the edit)."""
        p: WiseParams = self.params  # type: ignore[assignment]
        version = mem.version
        light = old if new_shard else old[:-1]
        vals = base.delta[base.mask].clone() if (p.keep_undo and not new_shard) else None
        n_keys = len(base.keys)

        def restore() -> None:
            if mem.version != version:
                raise ValueError("undo wise edits newest first: a later edit changed the same side memories")
            entries = list(light)
            if not new_shard:
                if vals is None:
                    raise ValueError("this wise edit kept nothing to undo with (keep_undo: false)")
                cur = post if post is not None else mem.entries[-1]
                assert cur.mask is not None
                prev = cur.delta.clone()
                prev[cur.mask] = vals
                keys = cur.keys[:n_keys]
                thr = threshold_of(keys, prev, p.act_ratio)
                entries.append(Entry(prev, keys, thr, cur.edits - 1, cur.memory, cur.mask, cur.subjects[:-1]))
            mem.entries = entries
            self.n_edits = n_edits
            mem.version -= 1
            if not mem.entries:
                mem.detach()

        return restore

    def edit_inputs(self, tok: Any, req: EditRequest, templates: list[str], device: Any) -> tuple:
        """The edit prompt behind each prefix with the target (teacher forced): ids, attention mask, where the
        side memory acts (from the subject's last token on), the in-scope positions (that token) and per
        row (index of the last prompt token, target ids)."""
        seqs: list[list[int]] = []
        subj: list[int] = []
        tgts: list[tuple[int, list[int]]] = []
        for t in templates:
            text = t.replace("{}", req.prompt)
            prompt_ids, sp = subject_position(tok, text, req.subject, req.where)
            tgt = target_ids(tok, text.replace("{}", req.subject), req.target_new)
            seqs.append(prompt_ids + tgt[:-1])
            subj.append(sp)
            tgts.append((len(prompt_ids) - 1, tgt))
        ids, attn = pad_batch(seqs, pad_id(tok), device)
        pos = torch.arange(ids.shape[1], device=device)[None]
        at = torch.tensor(subj, device=device)[:, None]
        return ids, attn, (pos >= at) & attn.bool(), (pos == at).expand_as(ids), tgts

    def train(
        self,
        model: Any,
        mem: SideMemory,
        base: Entry,
        ids: torch.Tensor,
        attn: torch.Tensor,
        route: torch.Tensor,
        tgts: list,
        a_in: torch.Tensor,
        a_out: torch.Tensor,
    ) -> tuple[torch.Tensor, dict]:
        """SGD on the shard's D under its gradient mask: target NLL + routing margin loss."""
        p: WiseParams = self.params  # type: ignore[assignment]
        assert base.mask is not None
        gmask = base.mask.to(torch.float32)
        delta = base.delta.clone().requires_grad_(True)
        opt = torch.optim.SGD([delta], lr=p.lr)
        nll = margin = torch.zeros(())
        step = 0
        with frozen(model):
            for step in range(p.steps + 1):  # noqa: B007 (reported)
                mem.training = (delta, route)
                try:
                    logp = F.log_softmax(model(input_ids=ids, attention_mask=attn).logits.float(), -1)
                finally:
                    mem.training = None
                per = []
                for r, (start, tgt) in enumerate(tgts):
                    tt = torch.tensor(tgt, device=ids.device)
                    per.append(-logp[r, start : start + len(tgt)].gather(1, tt[:, None]).mean())
                nll = torch.stack(per).mean()
                margin = margin_loss(scores(a_in, delta), scores(a_out, delta), p)
                loss = nll + margin
                if loss.item() < p.stop_loss or step == p.steps:
                    break
                opt.zero_grad()
                loss.backward()
                assert delta.grad is not None
                delta.grad.mul_(gmask)
                opt.step()
                with torch.no_grad():
                    delta.clamp_(-p.norm_constraint, p.norm_constraint)
        return delta.detach(), {"steps": step, "nll": float(nll.detach()), "margin_loss": float(margin.detach())}

    @torch.no_grad()
    def activations(self, model: Any, tok: Any, texts: list[str]) -> torch.Tensor:
        """The projection's inputs at every real token of `texts` (n_tokens, in), cached per text. They depend
        only on the layers below and this layer's attention, never on a side memory."""
        assert self.memory is not None
        todo = [t for t in dict.fromkeys(texts) if t not in self._acts]
        if todo:
            ids, mask = pad_batch([list(tok(t)["input_ids"]) for t in todo], pad_id(tok), device_of(model))
            with capture(self.memory.module, "input") as seen:
                model(input_ids=ids, attention_mask=mask)
            for r, t in enumerate(todo):
                self._acts[t] = seen[0][r][mask[r].bool()].float()
        w = weight_2d(self.memory.module)
        parts = [self._acts[t] for t in texts]
        return torch.cat(parts) if parts else w.new_zeros(0, w.shape[1], dtype=torch.float32)

    @torch.no_grad()
    def route(self, model: Any, tok: Any, text: str) -> list[int]:
        """Which memory answers at each token of `text`: the index of a side memory in `side_memories`, or -1
        for the main memory."""
        if self.memory is None or not self.memory.entries:
            return [-1] * len(tok(text)["input_ids"])
        model(input_ids=torch.tensor([list(tok(text)["input_ids"])], device=device_of(model)))
        return self.memory.last[0].tolist()

    @property
    def side_memories(self) -> list[Entry]:
        return list(self.memory.entries) if self.memory is not None else []

    # ---- resume ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every side memory (D, mask, keys, threshold, counts), the edit count that places the next edit in its
        shard, and the prefixes and irrelevant texts drawn at the first edit."""
        if self.memory is None or not self.memory.entries:
            return {}
        return {
            "layer": self.memory.layer,
            "n_edits": self.n_edits,
            "templates": list(self.templates or []),
            "irrelevant_texts": list(self.irrelevant_texts or []),
            "entries": [
                {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in e.items()} for e in self.memory.state()
            ],
        }

    def load_state_dict(self, state: dict[str, Any], model: Any) -> None:
        if not state:
            return
        missing = {"layer", "n_edits", "templates", "irrelevant_texts", "entries"} - set(state)
        if missing:
            raise ValueError(f"wise state: missing {sorted(missing)}; pass what Wise.state_dict() returned")
        if state["layer"] != self.layer_of(model):
            raise ValueError(
                f"wise state: its side memories are at layer {state['layer']}, but this editor edits layer "
                f"{self.layer_of(model)}; set layer: {state['layer']}"
            )
        if self.memory is not None:
            self.memory.detach()
        self.memory = None
        mem = self.bind(model)
        device = device_of(model)
        mem.entries = [
            Entry(
                e["delta"].to(device, torch.float32),
                e["keys"].to(device, torch.float32),
                float(e["threshold"]),
                int(e["edits"]),
                int(e["memory"]),
                e["mask"].to(device) if "mask" in e else None,
                tuple(e["subjects"]),
            )
            for e in state["entries"]
        ]
        self.n_edits = int(state["n_edits"])
        self.templates = list(state["templates"])
        self.irrelevant_texts = list(state["irrelevant_texts"])
        if mem.entries:
            mem.attach()

    def merge(self, mem: SideMemory, memory_index: int) -> None:
        """TIES-merge the shards of side memory `memory_index` into one side memory."""
        p: WiseParams = self.params  # type: ignore[assignment]
        shards = [e for e in mem.entries if e.memory == memory_index]
        others = [e for e in mem.entries if e.memory != memory_index]
        taus = [trim_topk(e.delta, p.merge_density) for e in shards]
        delta = elect_and_merge(taus, "mass")
        keys = torch.cat([e.keys for e in shards])
        thr = threshold_of(keys, delta, p.act_ratio)
        subjects = tuple(x for e in shards for x in e.subjects)
        merged = Entry(delta, keys, thr, sum(e.edits for e in shards), memory_index, None, subjects)
        mem.entries = others + [merged]

    @torch.no_grad()
    def routed_nll(self, model: Any, tok: Any, req: EditRequest) -> float:
        from lifelong.data.edit_requests import encode

        prompt = encode(tok, req.text)
        tgt = target_ids(tok, req.text, req.target_new)
        ids = torch.tensor([prompt + tgt[:-1]], device=device_of(model))
        logp = F.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        t = torch.tensor(tgt, device=ids.device)
        return float(-logp[len(prompt) - 1 : len(prompt) - 1 + len(tgt)].gather(1, t[:, None]).mean())
