"""The LM interface scorers use: `loglikelihood`, `choice_loglikelihoods`, `nll` and `generate`, batched across
items (`batch_size` sequences per forward pass, from `eval.batch_size`).

Batching never changes a score beyond float rounding (docs/eval.md, "Batched scoring"):
- Full sequences (`loglikelihood`, `nll`) are sorted by length and right-padded: real tokens keep positions
  0..n-1 and a causal model never attends forward, so the padding after them changes none of their logits.
- Options sharing a prompt (`choice_loglikelihoods`): the prompts of up to `batch_size` items run in one
  right-padded forward that keeps their key/value cache; each option's first token is scored from its prompt's
  last position, and the options' remaining tokens run from the cache (rows picked per option), with explicit
  positions (prompt length + t) and a mask that hides the prompt padding. An item takes this path when it
  computes fewer token positions than its full sequences (`shares_prompt`), else its sequences go through
  `loglikelihood`.
- Greedy generation (`generate`): left-padded batches through the model's `generate` with its KV cache, each
  row cut at its first end-of-sequence token, so a batch gives the texts each context gives alone.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from lifelong.data.formats import Formatter, document_start


def shares_prompt(n_ctx: int, n_conts: Sequence[int]) -> bool:
    """The cost rule: score an item's options from one run of its prompt (n_ctx positions, then the options'
    tokens after the first, padded to the longest: k * (max - 1)) when that is fewer token positions than
    running each option's full sequence (sum of n_ctx + n_j). True for any item with two or more options
    and a prompt longer than the options' spread; false for a single continuation (perplexity)."""
    k = len(n_conts)
    return k > 1 and n_ctx > 0 and n_ctx + k * (max(n_conts) - 1) < sum(n_ctx + n for n in n_conts)


def _paddable(cache: Any) -> bool:
    """Whether a key/value cache reads right padding through the attention mask alone (attention layers);
    a recurrent or linear-attention state would absorb the padding between a prompt and its options."""
    from transformers.cache_utils import DynamicLayer, LinearAttentionCacheLayerMixin

    layers = list(getattr(cache, "layers", None) or [])
    return bool(layers) and all(
        isinstance(la, DynamicLayer) and not isinstance(la, LinearAttentionCacheLayerMixin) for la in layers
    )


class HFLM:
    def __init__(self, model: Any, formatter: Formatter, batch_size: int = 16, max_length: int = 1024) -> None:
        self.model = model
        self.fm = formatter
        self.tok = formatter.tok
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = next(model.parameters()).device
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        self.keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        """The model projects only chosen positions onto the vocabulary (transformers' `logits_to_keep`);
        wrappers that do not name it (PEFT, soft prompts) get full logits, and we pick the positions."""

    # ---- log-likelihood -------------------------------------------------------------------------
    @torch.no_grad()
    def loglikelihood(self, requests: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """For each (context ids, continuation ids): sum log p(continuation | context) and whether the
        continuation is the greedy one. Full sequences, longest first, right-padded in batches."""
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            seqs = [(requests[i][0] + requests[i][1])[-self.max_length :] for i in idx]
            # the first token of a sequence has no prediction; position t predicts token t + 1
            n_conts = [min(len(requests[i][1]), len(s) - 1) for i, s in zip(idx, seqs)]
            keep = [list(range(len(s) - n - 1, len(s) - 1)) for s, n in zip(seqs, n_conts)]
            logits, _ = self._forward_padded(seqs, keep)
            for r, i in enumerate(idx):
                cont = torch.tensor(seqs[r][len(seqs[r]) - n_conts[r] :], device=self.device)
                lp = F.log_softmax(logits[r, : n_conts[r]].float(), dim=-1)
                out[i] = (float(lp.gather(1, cont[:, None]).sum()), bool((lp.argmax(-1) == cont).all()))
        return out

    def _forward_padded(self, seqs: list[list[int]], keep: list[list[int]], cache: bool = False) -> tuple[Any, Any]:
        """Right-padded sequences through the model: logits at the positions `keep[r]` of each row (b, p,
        vocab; shorter lists padded with their last position) and the key/value cache when `cache`. The
        vocabulary projection runs on those positions only where the model takes `logits_to_keep`."""
        width, p = max(len(s) for s in seqs), max(len(k) for k in keep)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, : len(s)] = 1
        pos = torch.tensor([k + k[-1:] * (p - len(k)) for k in keep], dtype=torch.long, device=self.device)
        kw: dict[str, Any] = {"logits_to_keep": pos} if self.keeps_logits else {}
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=cache, **kw)
        logits = out.logits
        if logits.shape[1] != p or not self.keeps_logits:  # all positions came back: pick ours
            logits = torch.take_along_dim(logits, pos[..., None], dim=1)
        return logits, out.past_key_values if cache else None

    @torch.no_grad()
    def choice_loglikelihoods(self, requests: Sequence[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
        """Log-likelihood of every continuation of each (context, continuations) item: items whose prompt
        pays to share (`shares_prompt`) run it once per item in batches of `batch_size` prompts; the rest
        go through `loglikelihood` as full sequences. Prompts are cut from the left so that the longest
        continuation fits `max_length`."""
        reqs = []
        for ctx, conts in requests:
            if not conts or any(not c for c in conts):
                raise ValueError("every option must have at least one token (an option's text is empty)")
            reqs.append((ctx[-max(self.max_length - max(len(c) for c in conts), 1) :], conts))
        out: list[list[float]] = [[] for _ in reqs]
        shared = [i for i, (ctx, conts) in enumerate(reqs) if shares_prompt(len(ctx), [len(c) for c in conts])]
        flat = sorted(set(range(len(reqs))) - set(shared))
        pairs = [(i, c) for i in flat for c in reqs[i][1]]
        for (i, _), (lp, _) in zip(pairs, self.loglikelihood([(reqs[i][0], c) for i, c in pairs])):
            out[i].append(lp)
        shared.sort(key=lambda i: -len(reqs[i][0]))  # similar prompt lengths share a batch
        for b in range(0, len(shared), self.batch_size):
            idx = shared[b : b + self.batch_size]
            for i, scores in zip(idx, self._shared_prompts([reqs[i] for i in idx])):
                out[i] = scores
        return out

    @torch.no_grad()
    def choice_loglikelihood(self, context: list[int], conts: list[list[int]]) -> list[float]:
        """Log-likelihood of several continuations of one context (`choice_loglikelihoods` of one item)."""
        return self.choice_loglikelihoods([(context, conts)])[0]

    def _shared_prompts(self, reqs: list[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
        """Options of a batch of prompts: the prompts in one right-padded forward with its cache, the options'
        tokens after the first from that cache, `batch_size` option rows per forward."""
        lens = [len(ctx) for ctx, _ in reqs]
        logits, cache = self._forward_padded([ctx for ctx, _ in reqs], [[n - 1] for n in lens], cache=True)
        width = max(lens)
        if len(set(lens)) > 1 and not _paddable(cache):  # the padding would enter a recurrent state
            return [s for r in reqs for s in self._shared_prompts([r])]
        last = F.log_softmax(logits[:, 0].float(), dim=-1)  # each prompt's last position
        scores = [[float(last[b, c[0]]) for c in conts] for b, (_, conts) in enumerate(reqs)]
        rest = [(b, j) for b, (_, conts) in enumerate(reqs) for j, c in enumerate(conts) if len(c) > 1]
        for k in range(0, len(rest), self.batch_size):
            chunk = rest[k : k + self.batch_size]
            conts = [reqs[b][1][j] for b, j in chunk]
            n = max(len(c) for c in conts) - 1
            ids = torch.full((len(chunk), n), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width + n), dtype=torch.long)  # [prompt cache | new tokens]
            pos = torch.zeros((len(chunk), n), dtype=torch.long)
            for r, ((b, _), c) in enumerate(zip(chunk, conts)):
                ids[r, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
                mask[r, : lens[b]] = 1  # the prompt, not its padding
                mask[r, width : width + len(c) - 1] = 1
                pos[r] = lens[b] + torch.arange(n)  # positions continue the prompt's own, not the padded width
            sub = cache if k + self.batch_size >= len(rest) else copy.deepcopy(cache)  # a forward appends to it
            sub.reorder_cache(torch.tensor([b for b, _ in chunk], device=self.device))
            logits = self.model(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                past_key_values=sub,
                position_ids=pos.to(self.device),
                use_cache=True,
            ).logits
            for r, ((b, j), c) in enumerate(zip(chunk, conts)):
                lp = F.log_softmax(logits[r, : len(c) - 1].float(), dim=-1)
                tgt = torch.tensor(c[1:], device=self.device)
                scores[b][j] += float(lp.gather(1, tgt[:, None]).sum())
        return scores

    # ---- perplexity -----------------------------------------------------------------------------
    def document(self, text: str) -> tuple[list[int], list[int]]:
        """A document as it is scored: (context, scored tokens). The context is the document start that
        pre-training packing puts before every document (`document_start`: BOS, else EOS), so the first
        token is scored from the context it was trained after; the first `max_length - 1` tokens are scored.
        A tokenizer with neither BOS nor EOS leaves the first token as context, unscored."""
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        start = document_start(self.tok)
        if not start:
            return ids[:1], ids[1 : self.max_length]
        return start, ids[: self.max_length - len(start)]

    @torch.no_grad()
    def nll(self, texts: Sequence[str]) -> list[tuple[float, int]]:
        """Summed negative log-likelihood and number of scored tokens of each text (`document`), batched
        across texts by `loglikelihood`."""
        reqs = [self.document(t) for t in texts]
        return [(-lp, len(r[1])) for (lp, _), r in zip(self.loglikelihood(reqs), reqs)]

    # ---- generation -----------------------------------------------------------------------------
    def _stop_ids(self) -> set[int]:
        """Tokens that end a generation: the tokenizer's EOS and the model's generation-config EOS ids."""
        ids = {self.tok.eos_token_id}
        gen = getattr(self.model, "generation_config", None)
        extra = getattr(gen, "eos_token_id", None)
        ids |= set(extra) if isinstance(extra, (list, tuple)) else {extra}
        return {int(i) for i in ids if i is not None}

    @torch.no_grad()
    def generate(self, contexts: Sequence[list[int]], max_new_tokens: int = 32) -> list[str]:
        """Greedy continuation of each context (token ids): longest first, left-padded in batches of
        `batch_size`, decoded with the model's KV cache; each row ends at its first stop token (`_stop_ids`),
        so what a finished row is padded with afterwards never reaches its text."""
        out: list[str] = [""] * len(contexts)
        stops = self._stop_ids()
        order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            seqs = [contexts[i][-(self.max_length - max_new_tokens) :] for i in idx]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, s in enumerate(seqs):
                ids[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                mask[r, width - len(s) :] = 1
            gen = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                use_cache=True,
                pad_token_id=self.pad_id,
                eos_token_id=sorted(stops) or None,
            )
            for r, i in enumerate(idx):
                new = gen[r, width:].tolist()
                cut = next((t for t, tok in enumerate(new) if tok in stops), len(new))
                out[i] = self.tok.decode(new[:cut], skip_special_tokens=True)
        return out
