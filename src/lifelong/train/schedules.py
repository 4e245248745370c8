"""Learning-rate schedules, with the behaviour at stage boundaries explicit.

Per stage (the schedule restarts at every boundary: re-warming and re-decaying, Gupta et al. 2023; Ibrahim
et al. 2024): `constant`, `linear`, `cosine` (eta_min = min_lr_ratio * eta_max, 0.1 by default) and `wsd`
(warmup-stable-decay, Hagele et al. 2024: warmup, constant at eta_max, then a decay over the last
`decay_fraction` of the stage with shape linear, 1-sqrt or exponential).

Across stages: `infinite` (Ibrahim et al. 2024, "Simple and Scalable Strategies to Continually Pre-train
Large Language Models"): in the first stage, linear warmup, then a cosine cooldown over `cooldown_steps`
from eta_max to the constant eta_const = constant_lr_ratio * eta_max; every later stage runs at eta_const and
never re-warms; a stage with `anneal: true` decays from eta_const to eta_min over its last `decay_fraction`.
"""

from __future__ import annotations

import math
from typing import Callable

from lifelong.config import TrainConfig


def warmup_of(tc: TrainConfig, total: int) -> int:
    w = int(round(tc.warmup_fraction * total)) if tc.warmup_fraction is not None else tc.warmup_steps
    return min(w, max(total - 1, 0))


def decay(shape: str, progress: float, start: float, end: float) -> float:
    """Value at `progress` in [0, 1] of a decay from `start` to `end`."""
    progress = min(max(progress, 0.0), 1.0)
    if shape == "linear":
        f = 1 - progress
    elif shape == "1-sqrt":
        f = 1 - math.sqrt(progress)
    else:  # exponential: geometric interpolation between start and end
        if start <= 0 or end <= 0:
            f = 1 - progress
        else:
            return start * (end / start) ** progress
    return end + (start - end) * f


def lr_multiplier(tc: TrainConfig, total_steps: int, stage_index: int = 0) -> Callable[[int], float]:
    """Multiplier of `tc.lr` at optimizer step `s` of a stage (0-based; the scheduler steps after each
    update, so step s is taken with multiplier f(s))."""
    warm = warmup_of(tc, total_steps)
    floor = tc.min_lr_ratio

    if tc.schedule == "infinite":
        const = tc.constant_lr_ratio
        n_anneal = max(1, int(round(tc.decay_fraction * total_steps))) if tc.anneal else 0
        anneal_from = total_steps - n_anneal

        def inf(s: int) -> float:
            if tc.anneal and s >= anneal_from:
                return decay(tc.decay_shape, (s - anneal_from + 1) / n_anneal, const, floor)
            if stage_index > 0:
                return const  # never re-warmed
            if s < warm:
                return (s + 1) / (warm + 1)
            if s < warm + tc.cooldown_steps:
                p = (s - warm + 1) / tc.cooldown_steps
                return const + (1 - const) * 0.5 * (1 + math.cos(math.pi * p))
            return const

        return inf

    def f(s: int) -> float:
        if s < warm:
            return (s + 1) / (warm + 1)
        if tc.schedule == "constant":
            return 1.0
        if tc.schedule == "wsd":
            n_decay = max(1, int(round(tc.decay_fraction * total_steps)))
            start = total_steps - n_decay
            return 1.0 if s < start else decay(tc.decay_shape, (s - start + 1) / n_decay, 1.0, floor)
        span = max(total_steps - warm, 1)
        progress = min(max((s - warm) / span, 0.0), 1.0)
        if tc.schedule == "linear":
            return floor + (1 - floor) * (1 - progress)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f
