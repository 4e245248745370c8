"""Batching tokenized examples into padded tensors (training, curricula, strategies' own forward passes)."""

from __future__ import annotations

from typing import Any, Sequence

import torch


def collate(examples: list[dict], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; labels -100 on padding."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for r, e in enumerate(examples):
        k = len(e["input_ids"])
        ids[r, :k] = torch.tensor(e["input_ids"])
        labels[r, :k] = torch.tensor(e["labels"])
        mask[r, :k] = 1
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
