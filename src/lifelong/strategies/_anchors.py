"""Shared helpers of weight-space regularizers: snapshots of trainable parameters and their state."""

from __future__ import annotations

from typing import Any

import torch


def trainable(model: Any) -> dict[str, torch.nn.Parameter]:
    """Trainable parameters by name, each tensor once (tied weights appear under their first name)."""
    out: dict[str, torch.nn.Parameter] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            out[name] = p
            seen.add(id(p))
    return out


def snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainable(model).items()}
