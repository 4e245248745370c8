"""Perplexity-ordered curriculum (easy to hard): a reference model scores every training example by its mean
token loss, and the stage trains in ascending order (the curricula of the continual pre-training tutorial;
Bengio et al. 2009 for curriculum learning). Scores are cached on disk by content hash."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lifelong.data import cache

if TYPE_CHECKING:
    from lifelong.runner import Run


@torch.no_grad()
def example_losses(model: Any, examples: list[dict], pad_id: int, batch_size: int = 16) -> list[float]:
    from lifelong.train.loop import collate

    device = next(model.parameters()).device
    was = model.training
    model.eval()
    out: list[float] = []
    for a in range(0, len(examples), batch_size):
        batch = collate(examples[a:a + batch_size], pad_id, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        tgt = batch["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt.clamp(min=0), reduction="none")
        mask = (tgt != -100).float()
        out += ((nll * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist()
    model.train(was)
    return out


def curriculum_order(run: "Run", index: int, examples: list[dict]) -> list[int]:
    data = run.cfg.stages[index].data
    ref = data.curriculum_reference  # type: ignore[union-attr]
    if ref == "current":  # the model as this stage starts: determined by the config up to here and the seed
        ident = [run.cfg.model.model_dump(mode="json"), [s.model_dump(mode="json") for s in run.cfg.stages[:index]],
                 [s.model_dump(mode="json") for s in run.cfg.strategy], run.cfg.train.model_dump(mode="json"),
                 run.cfg.seed]
    else:
        files = sorted(Path(ref).glob("*.safetensors"))
        ident = [str(Path(ref).resolve()), [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files]]
    key = cache.content_key("curriculum-v1", run.cache_keys.get(index), ident)
    scores = cache.load("curriculum", key)
    if scores is None or len(scores) != len(examples):
        pad = run.tokenizer.pad_token_id if run.tokenizer.pad_token_id is not None else 0
        if ref == "current":
            scores = example_losses(run.model, examples, pad)
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(ref, use_safetensors=True).to(run.accelerator.device)
            scores = example_losses(model, examples, pad)
            del model
        cache.store("curriculum", key, scores)
    order = sorted(range(len(examples)), key=lambda i: (scores[i], i))
    run.log(type="curriculum", stage=index, easiest=float(scores[order[0]]), hardest=float(scores[order[-1]]),
            cache_key=key)
    return order
