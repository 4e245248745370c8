"""Teacher-forced scores of target continuations: the log-probability and token accuracy of a target after a
prompt (knowledge-edit metrics and the edit scorer)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from lifelong.data.collate import device_of, pad_batch, pad_id
from lifelong.data.edit_requests import encode, target_ids

Prompt = Optional[Callable[[str], str]]
"""Rewrites a prompt before it is scored (in-context editing prepends retrieved facts)."""


def score_targets(
    model: Any, tok: Any, pairs: Sequence[tuple[str, str]], prompt_fn: Prompt = None, batch_size: int = 32
) -> list[dict]:
    """Per (prompt, target): mean log-prob per target token, token accuracy and argmax ids (teacher forced).
    `prompt_fn` rewrites prompts first (in-context editing); targets are tokenized against the original."""
    enc = []
    for prompt, target in pairs:
        shown = prompt_fn(prompt) if prompt_fn else prompt
        enc.append((encode(tok, shown), target_ids(tok, prompt, target)))
    out: list[dict] = [{}] * len(enc)
    device = device_of(model)
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i][0]) - len(enc[i][1]))
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        ids, mask = pad_batch([enc[i][0] + enc[i][1][:-1] for i in idx], pad_id(tok), device)
        logp = F.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        for r, i in enumerate(idx):
            ctx, tgt = enc[i]
            lp = logp[r, len(ctx) - 1 : len(ctx) - 1 + len(tgt)]
            t = torch.tensor(tgt, device=device)
            preds = lp.argmax(-1)
            out[i] = {
                "logp": float(lp.gather(1, t[:, None]).mean()),
                "acc": float((preds == t).float().mean()),
                "preds": preds.tolist(),
            }
    return out
