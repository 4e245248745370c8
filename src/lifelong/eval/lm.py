"""The LM interface scorers use: batched `loglikelihood`, `generate` and per-text `nll`.

`loglikelihood` scores continuations of a context; requests that share a context (the options of one
multiple-choice question) are scored with the context run once: its key/value cache is computed for the
context and re-used for all continuations, so a shared prompt is never recomputed.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from lifelong.data.formats import Formatter, document_start


class HFLM:
    def __init__(self, model: Any, formatter: Formatter, batch_size: int = 16, max_length: int = 1024) -> None:
        self.model = model
        self.fm = formatter
        self.tok = formatter.tok
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = next(model.parameters()).device
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0

    # ---- log-likelihood -------------------------------------------------------------------------
    @torch.no_grad()
    def loglikelihood(self, requests: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """For each (context ids, continuation ids): sum log p(continuation | context) and whether the
        continuation is the greedy one. Requests are batched as full sequences, longest first."""
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            seqs = [(requests[i][0] + requests[i][1])[-self.max_length :] for i in idx]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, s in enumerate(seqs):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            logp = F.log_softmax(logits.float(), dim=-1)
            for r, i in enumerate(idx):
                n_cont, n = len(requests[i][1]), len(seqs[r])
                cont = torch.tensor(seqs[r][n - n_cont :], device=self.device)
                lp = logp[r, n - n_cont - 1 : n - 1]  # position t predicts token t+1
                out[i] = (float(lp.gather(1, cont[:, None]).sum()), bool((lp.argmax(-1) == cont).all()))
        return out

    @torch.no_grad()
    def choice_loglikelihood(self, context: list[int], conts: list[list[int]]) -> list[float]:
        """Log-likelihood of several continuations of one context, with the context computed once."""
        ctx = context[-(self.max_length - max(len(c) for c in conts)) :]
        ids = torch.tensor([ctx], device=self.device)
        out = self.model(input_ids=ids, use_cache=True)
        first = F.log_softmax(out.logits[0, -1].float(), dim=-1)  # predicts each continuation's 1st token
        cache = out.past_key_values
        k = len(conts)
        width = max(len(c) for c in conts)
        scores = [float(first[c[0]]) for c in conts]
        if width > 1:
            cache.batch_repeat_interleave(k)
            rest = torch.full((k, width - 1), self.pad_id, dtype=torch.long)
            for r, c in enumerate(conts):
                rest[r, : len(c) - 1] = torch.tensor(c[:-1]) if len(c) > 1 else rest[r, :0]
            mask = torch.ones((k, len(ctx) + width - 1), dtype=torch.long)
            for r, c in enumerate(conts):
                mask[r, len(ctx) + len(c) - 1 :] = 0
            pos = torch.arange(len(ctx), len(ctx) + width - 1)[None].expand(k, -1)
            logits = self.model(
                input_ids=rest.to(self.device),
                attention_mask=mask.to(self.device),
                past_key_values=cache,
                position_ids=pos.to(self.device),
                use_cache=True,
            ).logits
            logp = F.log_softmax(logits.float(), dim=-1)
            for r, c in enumerate(conts):
                if len(c) > 1:
                    tgt = torch.tensor(c[1:], device=self.device)
                    scores[r] += float(logp[r, : len(c) - 1].gather(1, tgt[:, None]).sum())
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
        """Summed negative log-likelihood and number of scored tokens of each text (`document`)."""
        reqs = [self.document(t) for t in texts]
        return [(-lp, len(r[1])) for (lp, _), r in zip(self.loglikelihood(reqs), reqs)]

    # ---- generation -----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, contexts: Sequence[list[int]], max_new_tokens: int = 32) -> list[str]:
        """Greedy continuation of each context (token ids), left-padded in batches; stops at EOS."""
        out: list[str] = [""] * len(contexts)
        order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            seqs = [contexts[i][-(self.max_length - max_new_tokens) :] for i in idx]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, s in enumerate(seqs):
                ids[r, width - len(s) :] = torch.tensor(s)
                mask[r, width - len(s) :] = 1
            gen = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.pad_id,
                eos_token_id=self.tok.eos_token_id,
            )
            for r, i in enumerate(idx):
                out[i] = self.tok.decode(gen[r, width:], skip_special_tokens=True)
        return out
