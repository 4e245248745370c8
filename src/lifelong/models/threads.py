"""Torch's intra-op thread count for a loaded model: an explicit choice wins over the size-based default.

Precedence: the config's `torch_threads`, then the `OMP_NUM_THREADS` environment variable, then the default:
one thread for a model under `SMALL_MODEL` parameters (two threads on two busy cores ran tiny models up to 30x
slower), else every core. Before this order, a large model took every core even when the user had set
`OMP_NUM_THREADS=1` to share a loaded machine (issue 16: 10x slower there). `lifelong run`, `lifelong eval`
and the Python API all set threads through `set_torch_threads`.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

SMALL_MODEL = 5_000_000
"""Parameters below which the default is one thread."""


def omp_threads() -> Optional[int]:
    """The thread count `OMP_NUM_THREADS` asks for, or None when it is unset or not a positive whole number.
    OpenMP allows a list (one count per nesting level): the first entry is the outer level, the one torch's
    intra-op pool uses. An unusable value is ignored, as OpenMP runtimes ignore it."""
    raw = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(raw) if raw.isdigit() and int(raw) >= 1 else None


def choose_threads(n_params: int, configured: Optional[int] = None) -> int:
    """Threads for a model of `n_params` parameters: `configured` (the config's `torch_threads`), else
    `OMP_NUM_THREADS`, else 1 under `SMALL_MODEL` parameters and every core above."""
    if configured:
        return int(configured)
    omp = omp_threads()
    if omp is not None:
        return omp
    return 1 if n_params < SMALL_MODEL else (os.cpu_count() or 1)


def set_torch_threads(model: Any, configured: Optional[int] = None) -> int:
    """Set torch's intra-op threads for `model` by `choose_threads`; returns the count set."""
    n = choose_threads(sum(p.numel() for p in model.parameters()), configured)
    torch.set_num_threads(n)
    return n
