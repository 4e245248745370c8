"""Naive sequential fine-tuning: train on each stage as it comes (the forgetting baseline)."""

from __future__ import annotations

from lifelong.strategies import STRATEGIES
from lifelong.strategies.base import Strategy


@STRATEGIES.register("naive")
class Naive(Strategy):
    """Sequential fine-tuning with no protection against forgetting; the lower bound to beat."""

    supports_fsdp = True
    supports_deepspeed = True
