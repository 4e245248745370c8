"""r-ROME (Gupta, Baskaran, Anumanchipalli 2024, "Rebuilding ROME: Resolving Model Collapse during
Sequential Model Editing"): ROME with one key throughout the update.

ROME's implementation (and `rome.py`) writes the update with the prefix-averaged key k* in the numerator and
the plain edit prompt's key k in the denominator, delta (C^-1 k*)^T / (k^T C^-1 k*). When k is nearly
C^-1-orthogonal to k* the denominator is small and the update explodes: the "disabling edits" that collapse
a sequentially edited model. r-ROME uses k* on both sides, the paper's closed form

    W' = W + (v* - W k*) (C^-1 k*)^T / (k*^T C^-1 k*),    so W' k* = v* exactly,

with v* = W k* + delta: the value optimisation (`common.optimize_delta`) adds delta to the projection's
output at the subject behind each prefix, and W k* is the mean of those outputs (the projection is linear),
so v* - W k* = delta. (The authors' code takes v*'s base from the plain prompt's output instead, mixing the
two again in the numerator; we follow the equation.) Everything else (layer, prefixes, value optimisation,
C, its ridge and the second key at the start of a text, `start_key`) is ROME's, from `rome.py`: r-ROME is
`Rome` with the exactness at k* instead of k.
"""

from __future__ import annotations

from lifelong.editing import EDITORS
from lifelong.editing.rome import Rome, RomeParams


class RRomeParams(RomeParams):
    """ROME's parameters (the update differs, not its inputs)."""


@EDITORS.register("r_rome")
class RRome(Rome):
    """r-ROME: ROME's rank-one update with the averaged key k* in numerator and denominator, so W' k* = v*
    exactly and no edit can blow up through a small denominator (Gupta et al. 2024)."""

    Params = RRomeParams
    exact_at_average = True
