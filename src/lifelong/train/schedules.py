"""Per-stage learning-rate multipliers: linear warmup, then constant, linear or cosine decay.

Every stage re-warms and re-decays (the schedule restarts at each stage boundary).
"""
from __future__ import annotations

import math
from typing import Callable

from lifelong.config import TrainConfig


def lr_multiplier(tc: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of `tc.lr` for optimizer step `s` (0-based; the scheduler is stepped after each update)."""
    warm = min(tc.warmup_steps, max(total_steps - 1, 0))
    floor = tc.min_lr_ratio

    def f(s: int) -> float:
        if s < warm:
            return (s + 1) / (warm + 1)
        if tc.schedule == "constant":
            return 1.0
        span = max(total_steps - warm, 1)
        progress = min(max((s - warm) / span, 0.0), 1.0)
        if tc.schedule == "linear":
            return floor + (1 - floor) * (1 - progress)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f
