"""Self-Distillation Fine-Tuning (Yang et al. 2024, "Self-Distillation Bridges Distribution Gap in Language
Model Fine-Tuning", ACL).

Fine-tuning on responses written by someone else pulls the model away from its own distribution and erodes
what it could do. SDFT closes the gap: before a stage, the current model rewrites every target response in
its own words, given the request and the original response (the paper's distillation template), and the
stage trains on the rewrites. A rewrite that fails the configured check keeps the original response
(`contains`: the normalised original answer must appear in the normalised rewrite, the paper's answer
check generalised; `none`: always use the rewrite).

With several processes every one generates every rewrite (the same greedy decoding of the same model, so a
sharded model's forward passes run on the same steps everywhere), and the main process's rewrites are then
broadcast so the stage trains on one set.
"""

from __future__ import annotations

from typing import Any, Iterator, Literal

from pydantic import Field

from lifelong.config import Strict
from lifelong.eval.scorers.exact_match import normalize
from lifelong.strategies import STRATEGIES
from lifelong.strategies._frozen import reshard
from lifelong.strategies.base import StageContext, Strategy

TEMPLATE = (
    "{prompt}\n\nReference answer: {response}\n\n"
    "Answer the request above in your own words, keeping the reference answer's content."
)


class SDFTParams(Strict):
    template: str = TEMPLATE
    """Distillation prompt with `{prompt}` and `{response}` (the original request and response)."""
    check: Literal["contains", "exact_match", "none"] = "contains"
    """When a rewrite is kept: it contains the original answer, equals it, or always."""
    max_new_tokens: int = Field(default=128, ge=1, le=65536)
    """Longest rewrite in tokens."""
    batch_size: int = Field(default=16, ge=1)
    """Rewrites generated per batch."""


def passes(check: str, original: str, rewrite: str) -> bool:
    if not rewrite.strip():
        return False
    if check == "none":
        return True
    a, b = normalize(original), normalize(rewrite)
    return a == b if check == "exact_match" else bool(a) and a in b


@STRATEGIES.register("sdft")
class SDFT(Strategy):
    """Self-distillation fine-tuning: train on the model's own rewrites of the target responses."""

    Params = SDFTParams
    supports_fsdp = True

    def __init__(self, params: SDFTParams | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.rewrites: list[dict | None] = []  # per stage example: the rewritten example, or None (original)
        self.kept = self.rejected = 0

    def before_stage(self, ctx: StageContext) -> None:
        from lifelong.eval.lm import HFLM

        p: SDFTParams = self.params  # type: ignore[assignment]
        fm = ctx.formatter
        todo = [i for i, e in enumerate(ctx.examples) if "prompt_text" in e]
        self.rewrites = [None] * len(ctx.examples)
        self.kept = self.rejected = 0
        if fm is None or not todo:
            return
        was = ctx.model.training
        ctx.model.eval()
        lm = HFLM(ctx.model, fm, batch_size=p.batch_size)
        contexts = [
            fm.prompt_ids(
                p.template.format(prompt=ctx.examples[i]["prompt_text"], response=ctx.examples[i]["response_text"])
            )
            for i in todo
        ]
        outs = lm.generate(contexts, max_new_tokens=p.max_new_tokens)
        reshard(ctx.model)
        ctx.model.train(was)
        acc = ctx.accelerator
        if acc is not None and acc.num_processes > 1:  # one set of rewrites: the main process's
            from accelerate.utils import broadcast_object_list

            outs = broadcast_object_list([outs])[0]
        for i, text in zip(todo, outs):
            e = ctx.examples[i]
            text = text.strip()
            if passes(p.check, e["response_text"], text):
                prompt = fm.prompt_ids(e["prompt_text"])
                resp = fm.response_ids(text)
                self.rewrites[i] = {
                    "input_ids": prompt + resp,
                    "labels": [-100] * len(prompt) + resp,
                    "response_text": text,
                }
                self.kept += 1
            else:
                self.rejected += 1

    def batches(self, ctx: StageContext, it: Iterator[list[dict]]) -> Iterator[list[dict]]:
        index = {id(e): i for i, e in enumerate(ctx.examples)}
        for batch in it:
            out = []
            for e in batch:
                i = index.get(id(e))
                r = self.rewrites[i] if i is not None and i < len(self.rewrites) else None
                out.append(r if r is not None else e)
            yield out

    def cost(self) -> dict[str, Any]:
        return {"sdft_rewrites_kept": self.kept, "sdft_rewrites_rejected": self.rejected}

    def state_dict(self) -> dict[str, Any]:
        return {
            "rewrites": [r if r is not None else {} for r in self.rewrites],
            "kept": self.kept,
            "rejected": self.rejected,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rewrites = [dict(r) if r else None for r in state.get("rewrites", [])]
        self.kept, self.rejected = int(state.get("kept", 0)), int(state.get("rejected", 0))
