"""Generative (pseudo) replay in the spirit of LAMOL (Sun, Ho and Lee 2020, "LAMOL: LAnguage MOdeling for
Lifelong Language Learning", ICLR): the model itself is the memory. No example of an earlier stage is stored.

While a stage trains, the model also learns to *generate* its examples: a share `lm_fraction` of each batch
is added as generation copies, `G_k prompt SEP response` with the language-modelling loss on every token
after the stage's generation prefix G_k (LAMOL's LM loss with weight lambda, realized as a share of the
batch). Before stage k, the model samples `pseudo_per_stage` sequences from each earlier stage's prefix G_j
(top-k sampling, LAMOL uses k = 20), splits each at SEP into a prompt and a response, and these
pseudo-examples replace a share `fraction` of every batch (a running budget, as in `replay`); they are also
used for generation copies, so the ability to generate old stages is itself kept. Malformed samples
(no separator, empty parts, no end of sequence) are dropped and counted.

With several processes every process samples (a sharded model's forward passes are collectives, so decoding
runs with transformers' `synced_gpus` until every process has finished), and the main process's samples and
counts are broadcast, so every process replays the same pseudo-examples.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies._frozen import reshard
from lifelong.strategies.base import StageContext, Strategy
from lifelong.train.sharding import is_sharded

SEP_TEXT = "\n__ans__\n"


class GenReplayParams(Strict):
    fraction: float = Field(default=0.2, ge=0, lt=1)
    """Share of the examples trained on that are pseudo-examples of earlier stages."""
    lm_fraction: float = Field(default=0.25, ge=0, le=1)
    """Generation copies added per batch, as a share of the batch (LAMOL's LM-loss weight lambda)."""
    pseudo_per_stage: int = Field(default=64, ge=1)
    """Pseudo-examples sampled from each earlier stage before a new stage."""
    top_k: int = Field(default=20, ge=1)
    """Top-k sampling of pseudo-examples."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature."""
    max_new_tokens: int = Field(default=128, ge=4, le=65536)
    """Longest pseudo-example in tokens."""


def _find(seq: list[int], sub: list[int]) -> int:
    for i in range(len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    return -1


@STRATEGIES.register("generative_replay")
class GenerativeReplay(Strategy):
    """LAMOL-style pseudo replay: the model learns to generate each stage's data and replays its own
    samples of earlier stages; no old data is stored."""

    Params = GenReplayParams
    supports_fsdp = True

    def __init__(self, params: GenReplayParams | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.pseudo: list[dict] = []
        self.dropped = 0
        self.credit = self.lm_credit = 0.0
        self.rng = np.random.default_rng([seed, 27644437])

    def _prefix(self, tok: Any, stage: int) -> list[int]:
        return tok(f"__gen{stage}__", add_special_tokens=False)["input_ids"]

    def _gen_copy(self, tok: Any, ex: dict, stage: int) -> dict:
        n_prompt = next((i for i, lab in enumerate(ex["labels"]) if lab != -100), len(ex["labels"]))
        sep = tok(SEP_TEXT, add_special_tokens=False)["input_ids"]
        g = self._prefix(tok, stage)
        ids = g + ex["input_ids"][:n_prompt] + sep + ex["input_ids"][n_prompt:]
        return {"input_ids": ids, "labels": [-100] * len(g) + ids[len(g) :]}

    @torch.no_grad()
    def sample(self, ctx: StageContext, stage: int, n: int) -> list[dict]:
        p: GenReplayParams = self.params  # type: ignore[assignment]
        tok, model = ctx.tokenizer, ctx.model
        device = next(model.parameters()).device
        sep = tok(SEP_TEXT, add_special_tokens=False)["input_ids"]
        eos = tok.eos_token_id
        g = self._prefix(tok, stage)
        was = model.training
        model.eval()
        sync = {"synced_gpus": True} if is_sharded(model) else {}
        out = []
        for start in range(0, n, 32):
            k = min(32, n - start)
            ids = torch.tensor([g] * k, device=device)
            gen = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_k=p.top_k,
                temperature=p.temperature,
                max_new_tokens=p.max_new_tokens,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos,
                eos_token_id=eos,
                **sync,
            )
            for row in gen[:, len(g) :].tolist():
                if eos not in row:
                    self.dropped += 1
                    continue
                row = row[: row.index(eos) + 1]
                cut = _find(row, sep)
                prompt, resp = (row[:cut], row[cut + len(sep) :]) if cut >= 0 else ([], [])
                if not prompt or len(resp) < 2:
                    self.dropped += 1
                    continue
                out.append({"input_ids": prompt + resp, "labels": [-100] * len(prompt) + resp, "stage": stage})
        reshard(model)
        model.train(was)
        return out

    def before_stage(self, ctx: StageContext) -> None:
        p: GenReplayParams = self.params  # type: ignore[assignment]
        self.pseudo = []
        if p.fraction > 0:
            for j in range(ctx.stage_index):
                self.pseudo += self.sample(ctx, j, p.pseudo_per_stage)
        acc = ctx.accelerator
        if acc is not None and acc.num_processes > 1 and ctx.stage_index > 0 and p.fraction > 0:
            from accelerate.utils import broadcast_object_list  # the main process's samples everywhere

            self.pseudo, self.dropped = broadcast_object_list([self.pseudo, self.dropped])

    def batches(self, ctx: StageContext, it: Iterator[list[dict]]) -> Iterator[list[dict]]:
        p: GenReplayParams = self.params  # type: ignore[assignment]
        for batch in it:
            b = len(batch)
            batch = [dict(e, stage=ctx.stage_index) for e in batch]
            if self.pseudo and p.fraction > 0:
                self.credit += p.fraction * b
                r = min(math.floor(self.credit + 1e-9), b)
                self.credit -= r
                picks = [self.pseudo[int(i)] for i in self.rng.integers(len(self.pseudo), size=r)]
                batch = batch[: b - r] + picks
            self.lm_credit += p.lm_fraction * b
            m = min(math.floor(self.lm_credit + 1e-9), b)
            self.lm_credit -= m
            copies = (
                [
                    self._gen_copy(ctx.tokenizer, batch[int(i)], batch[int(i)]["stage"])
                    for i in self.rng.choice(b, size=m, replace=False)
                ]
                if m
                else []
            )
            yield [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in batch] + copies

    def cost(self) -> dict[str, Any]:
        return {"pseudo_examples": len(self.pseudo), "pseudo_dropped": self.dropped, "stored_examples": 0}

    def state_dict(self) -> dict[str, Any]:
        return {
            "pseudo": self.pseudo,
            "dropped": self.dropped,
            "credit": self.credit,
            "lm_credit": self.lm_credit,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.pseudo = [dict(e) for e in state["pseudo"]]
        self.dropped, self.credit, self.lm_credit = (
            int(state["dropped"]),
            float(state["credit"]),
            float(state["lm_credit"]),
        )
        self.rng.bit_generator.state = state["rng"]
