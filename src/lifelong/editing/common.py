"""Shared machinery of the locate-then-edit methods (ROME, MEMIT, FT-L, GRACE, MEND): where a layer's MLP
output projection is (from the per-architecture map), hooks that read or change a module at given token
positions, random prefix contexts, keys averaged over prefixes, and the target-value optimization."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from lifelong.data.collate import device_of, pad_batch, pad_id
from lifelong.data.edit_requests import EditRequest, subject_position, target_ids
from lifelong.models.arch import arch_of


# ---- where things are ------------------------------------------------------------------------------
def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def layers_path(model: Any) -> str:
    return arch_of(model)["layers"]


def n_layers(model: Any) -> int:
    return len(_get(model, layers_path(model)))


def layer_module(model: Any, layer: int) -> Any:
    n = n_layers(model)
    if not -n <= layer < n:
        raise ValueError(f"layer {layer} does not exist: the model has {n} layers (0..{n - 1})")
    return _get(model, layers_path(model))[layer]


def mlp_out_name(model: Any, layer: int) -> str:
    """Name of the weight of layer `layer`'s MLP output projection (the ROME/MEMIT edit site)."""
    layer = layer % n_layers(model)
    return f"{layers_path(model)}.{layer}.{arch_of(model)['mlp_out']}.weight"


def mlp_out(model: Any, layer: int) -> Any:
    return _get(layer_module(model, layer), arch_of(model)["mlp_out"])


def transposed(module: Any) -> bool:
    """GPT-2's Conv1D stores (in, out); nn.Linear stores (out, in)."""
    return not isinstance(module, torch.nn.Linear)


def weight_2d(module: Any) -> torch.Tensor:
    """The module's weight as (out, in)."""
    w = module.weight
    return w.T if transposed(module) else w


def to_param_layout(module: Any, delta_out_in: torch.Tensor) -> torch.Tensor:
    return delta_out_in.T.contiguous() if transposed(module) else delta_out_in


def module_of(model: Any, param_name: str) -> Any:
    """The module owning a parameter, e.g. `model.layers.5.mlp.down_proj.weight` -> that projection."""
    return model.get_submodule(param_name.rsplit(".", 1)[0])


def weights_fingerprint(model: Any, skip: Callable[[str], bool], salt: str = "") -> str:
    """Hash of the model type, `salt` and the bytes of every parameter whose name `skip` does not reject:
    the identity of a model's weights, for caches keyed by model (key statistics, trained MEND editors)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{getattr(model.config, 'model_type', '')}|{salt}".encode())
    for name, p in model.named_parameters():
        if not skip(name):
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def default_layer(model: Any) -> int:
    """About 1/6 of the depth: the MLP layer ROME edits in GPT-J and Llama-7B (5 of 28/32)."""
    return round(n_layers(model) / 6)


@contextlib.contextmanager
def frozen(model: Any) -> Iterator[None]:
    """No parameter gradients (editors optimise their own tensors), restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


# ---- batching and hooks ------------------------------------------------------------------------------
def _out(o: Any) -> torch.Tensor:
    return o[0] if isinstance(o, tuple) else o


@contextlib.contextmanager
def capture(module: Any, what: str = "input") -> Iterator[list[torch.Tensor]]:
    """Record the module's input (first positional argument) or output on every forward call."""
    seen: list[torch.Tensor] = []
    if what == "input":
        h = module.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    else:
        h = module.register_forward_hook(lambda m, args, out: seen.append(_out(out)))
    try:
        yield seen
    finally:
        h.remove()


class StopForward(Exception):
    """Raised by `stop_after` once the module of interest has run."""


@contextlib.contextmanager
def stop_after(module: Any) -> Iterator[None]:
    """End a forward pass (with `StopForward`) right after `module` runs: reading a layer's input or output
    needs none of the layers above it (for an early layer of a 30-layer model, most of the cost)."""

    def hook(m: Any, args: Any, out: Any) -> None:
        raise StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def add_at(module: Any, delta: torch.Tensor, rows: Sequence[int], positions: Sequence[int]) -> Iterator[None]:
    """Add `delta` (one vector, or one per row) to the module's output at (row, position) pairs."""
    r = torch.tensor(list(rows))
    c = torch.tensor(list(positions))

    def hook(m: Any, args: Any, out: Any) -> Any:
        h = _out(out)
        h = h.clone()
        h[r, c] = h[r, c] + (delta if delta.dim() == 1 else delta[: len(r)])
        return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# ---- prefixes and keys ---------------------------------------------------------------------------------
STARTS = ("The", "Therefore", "Because", "I", "You")


def context_templates(model: Any, tok: Any, n: int, length: int, seed: int) -> list[str]:
    """`{}` plus `n` short texts the model itself writes (sampled from fixed starts with a fixed seed, so the
    same model gives the same prefixes), each ending in `. {}`: the random prefixes ROME averages over."""
    out = ["{}"]
    if n <= 0:
        return out
    device = device_of(model)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for k in range(n):
            start = encode_plain(tok, STARTS[k % len(STARTS)])
            ids = torch.tensor([start], device=device)
            gen = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_k=5,
                max_new_tokens=length,
                pad_token_id=pad_id(tok),
            )
            text = tok.decode(gen[0], skip_special_tokens=True).replace("{", "").replace("}", "")
            out.append(" ".join(text.split()) + ". {}")
    return out


def encode_plain(tok: Any, text: str) -> list[int]:
    return list(tok(text)["input_ids"])


def edit_prompts(req: EditRequest, templates: list[str]) -> list[str]:
    """The request's prompt behind each prefix, still with `{}` for the subject."""
    return [t.replace("{}", req.prompt) for t in templates]


def at_subject(
    model: Any, tok: Any, module: Any, items: list[tuple[str, str]], what: str = "input", batch_size: int = 32
) -> torch.Tensor:
    """The module's input (key) or output at the subject's last token of each (template, subject)."""
    enc = [subject_position(tok, t, s) for t, s in items]
    out = []
    device = device_of(model)
    with torch.no_grad():
        for b in range(0, len(enc), batch_size):
            chunk = enc[b : b + batch_size]
            ids, mask = pad_batch([e[0] for e in chunk], pad_id(tok), device)
            with capture(module, what) as seen, stop_after(module):
                try:  # the layers after `module` and the output head are not run
                    model(input_ids=ids, attention_mask=mask)
                except StopForward:
                    pass
            h = seen[0]
            out.append(h[torch.arange(len(chunk)), torch.tensor([e[1] for e in chunk])])
    return torch.cat(out).float()


def mean_at_subject(
    model: Any, tok: Any, module: Any, reqs: list[EditRequest], templates: list[str], what: str = "input"
) -> torch.Tensor:
    """Per request, the mean over prefixes of `at_subject` (n_requests, dim)."""
    items = [(p, r.subject) for r in reqs for p in edit_prompts(r, templates)]
    return at_subject(model, tok, module, items, what).view(len(reqs), len(templates), -1).mean(1)


# ---- the target value ------------------------------------------------------------------------------------
def logits_at(model: Any, ids: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> Any:
    """Next-token logits at the (row, position) pairs only: the output head (a fifth of a 135M model's compute
    per token, forward and backward) runs on the positions a loss reads instead of every position. Models whose
    head is more than a linear map of the base model's last hidden state (logit soft-capping) get full logits."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    base = getattr(model, "base_model", None)
    if head is None or base is None or base is model or getattr(model.config, "final_logit_softcapping", None):
        return model(input_ids=ids, attention_mask=mask).logits[rows, cols]
    hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state
    return head(hidden[rows, cols])


def optimize_delta(
    model: Any, tok: Any, req: EditRequest, module: Any, templates: list[str], p: Any
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """ROME's value optimization (Meng et al. 2022, eq. 4): find delta added to `module`'s output at the
    subject's last token, in the edit prompt behind every prefix, that makes `target_new` likely, while
    the next-token distribution after "<subject> is a" keeps close (KL) to the unedited model's and delta
    stays small (weight decay relative to the original output, norm clamped to `clamp_norm_factor` times
    it). Returns (delta, mean original output at those tokens, figures)."""
    device = device_of(model)
    prompts = edit_prompts(req, templates)
    seqs, rows, pos, tgt_spans = [], [], [], []
    for k, t in enumerate(prompts):
        ids, sp = subject_position(tok, t, req.subject, req.where)
        tgt = target_ids(tok, t.replace("{}", req.subject), req.target_new)
        seqs.append(ids + tgt[:-1])
        rows.append(k)
        pos.append(sp)
        tgt_spans.append((len(ids) - 1, tgt))
    kl_items = [subject_position(tok, kp, req.subject, req.where) for kp in p.kl_prompts]
    for ids, sp in kl_items:
        rows.append(len(seqs))
        pos.append(sp)
        seqs.append(ids)
    batch_ids, mask = pad_batch(seqs, pad_id(tok), device)
    n_rw = len(prompts)
    # the positions the losses read: each rewrite prompt's target tokens, then each KL prompt's subject token
    t_rows = torch.tensor([k for k, (_, tgt) in enumerate(tgt_spans) for _ in tgt], device=device)
    t_cols = torch.tensor([start + j for start, tgt in tgt_spans for j in range(len(tgt))], device=device)
    t_ids = torch.tensor([t for _, tgt in tgt_spans for t in tgt], device=device)
    per_prompt = torch.tensor([len(tgt) for _, tgt in tgt_spans], device=device, dtype=torch.float32)
    kl_rows = torch.tensor(rows[n_rw:], dtype=torch.long, device=device)
    kl_pos = torch.tensor(pos[n_rw:], dtype=torch.long, device=device)
    all_rows, all_cols = torch.cat([t_rows, kl_rows]), torch.cat([t_cols, kl_pos])
    with torch.no_grad(), capture(module, "output") as seen:
        logits0 = logits_at(model, batch_ids, mask, all_rows, all_cols)
    h0 = seen[0][torch.tensor(rows[:n_rw]), torch.tensor(pos[:n_rw])].float()
    v0 = h0.mean(0)
    n_t = len(t_rows)
    ref = F.log_softmax(logits0[n_t:].float(), -1) if len(kl_rows) else None
    delta = torch.zeros_like(v0, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=p.v_lr)
    max_norm = p.clamp_norm_factor * v0.norm()
    nll = torch.tensor(0.0)
    steps = 0
    with frozen(model):
        for steps in range(1, p.v_steps + 1):  # noqa: B007 (the count is reported after the loop)
            with add_at(module, delta.to(seen[0].dtype), rows, pos):
                logp = F.log_softmax(logits_at(model, batch_ids, mask, all_rows, all_cols).float(), -1)
            tok_lp = logp[:n_t].gather(1, t_ids[:, None])[:, 0]
            # mean NLL per target token within each prompt, then over prompts
            per = torch.zeros(n_rw, device=device).index_add(0, t_rows, -tok_lp) / per_prompt
            nll = per.mean()
            loss = nll + p.weight_decay * delta.norm() / v0.norm() ** 2  # ROME's form
            if ref is not None and p.kl_factor > 0:
                loss = loss + p.kl_factor * F.kl_div(logp[n_t:], ref, log_target=True, reduction="batchmean")
            if nll.item() < p.stop_loss:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                if delta.norm() > max_norm:
                    delta.mul_(max_norm / delta.norm())
    delta = delta.detach()
    return (
        delta,
        v0,
        {"nll": float(nll.detach()), "steps": steps, "delta_norm": float(delta.norm()), "v0_norm": float(v0.norm())},
    )
