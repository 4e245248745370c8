"""Perplexity-ordered curriculum (easy to hard): a reference model scores every training example by its mean
token loss, and the stage trains in ascending order (the curricula of the continual pre-training tutorial;
Bengio et al. 2009 for curriculum learning). Scores are cached on disk by content hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from lifelong.data import cache
from lifelong.data.collate import collate


@torch.no_grad()
def example_losses(model: Any, examples: list[dict], pad_id: int, batch_size: int = 16) -> list[float]:
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    out: list[float] = []
    for a in range(0, len(examples), batch_size):
        batch = collate(examples[a : a + batch_size], pad_id, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        tgt = batch["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt.clamp(min=0), reduction="none")
        mask = (tgt != -100).float()
        out += ((nll * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist()
    model.train(was)
    return out


def curriculum_order(
    data: Any,
    examples: list[dict],
    *,
    model: Any,
    pad_id: int,
    device: Any,
    data_key: Optional[str],
    reference_ident: Any,
) -> tuple[list[int], dict]:
    """Training order, easiest first, and what to log of it. `data` is the stage's `DataConfig`; the
    reference is `model` (the model as the stage starts, identified in the cache by `reference_ident`, e.g.
    the config up to this stage and the seed) or a model directory (`data.curriculum_reference`)."""
    ref = data.curriculum_reference
    if ref == "current":
        ident = reference_ident
    else:
        files = sorted(Path(ref).glob("*.safetensors"))
        ident = [str(Path(ref).resolve()), [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files]]
    key = cache.content_key("curriculum-v1", data_key, ident)
    scores = cache.load("curriculum", key)
    if scores is None or len(scores) != len(examples):
        if ref == "current":
            scores = example_losses(model, examples, pad_id)
        else:
            from transformers import AutoModelForCausalLM

            other = AutoModelForCausalLM.from_pretrained(ref, use_safetensors=True).to(device)
            scores = example_losses(other, examples, pad_id)
            del other
        cache.store("curriculum", key, scores)
    order = sorted(range(len(examples)), key=lambda i: (scores[i], i))
    return order, {"easiest": float(scores[order[0]]), "hardest": float(scores[order[-1]]), "cache_key": key}
