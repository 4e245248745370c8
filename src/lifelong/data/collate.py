"""Batching tokenized examples into padded tensors (training, curricula, strategies' own forward passes)."""

from __future__ import annotations

from itertools import chain
from typing import Any, Sequence

import torch


def collate(examples: list[dict], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; labels -100 on padding.

    One tensor is built per field from the concatenated tokens and scattered under the mask (row-major order,
    so each example lands in its row): a third of the time of filling row by row, which showed in the
    training loop's profile (docs/performance.md)."""
    lengths = [len(e["input_ids"]) for e in examples]
    for r, (e, k) in enumerate(zip(examples, lengths)):
        if len(e["labels"]) != k:
            raise ValueError(f"example {r}: {len(e['labels'])} labels for {k} input_ids; give one label per token")
    width = max(lengths)
    valid = torch.arange(width) < torch.tensor(lengths).unsqueeze(1)  # (n, width)
    ids = torch.full(valid.shape, pad_id, dtype=torch.long)
    labels = torch.full(valid.shape, -100, dtype=torch.long)
    ids[valid] = torch.tensor(list(chain.from_iterable(e["input_ids"] for e in examples)), dtype=torch.long)
    labels[valid] = torch.tensor(list(chain.from_iterable(e["labels"] for e in examples)), dtype=torch.long)
    mask = valid.long()
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def pad_batch(seqs: Sequence[list[int]], pad: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask of token sequences."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = 1
    return ids.to(device), mask.to(device)


def pad_id(tok: Any) -> int:
    """The tokenizer's padding id (its end-of-sequence id, or 0, when it has none)."""
    return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


def device_of(model: Any) -> torch.device:
    """The device of a model's first parameter."""
    return next(model.parameters()).device
