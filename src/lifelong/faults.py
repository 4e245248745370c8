"""A testing hook: kill the process at a named point, deterministically.

`LIFELONG_FAULT=<point>[:<n>]` makes the n-th time (default 1) the process reaches `fault_point(<point>)`
end it with SIGKILL, as a crash or `kill -9` would: no `finally`, no cleanup. The kill-and-resume tests
(tests/test_kill_points.py) use it to land exactly inside a checkpoint write, at a stage boundary, inside a
merge and inside a memory save, which random timing rarely hits. Unset, a point costs one environment
lookup. Points are listed in docs/decisions.md ("Kill points").
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "LIFELONG_FAULT"

_reached: Counter = Counter()
"""Times each armed point was reached in this process (only counted while LIFELONG_FAULT names it)."""


def fault_point(name: str) -> None:
    """SIGKILL this process if LIFELONG_FAULT names this point and it is reached for the configured time."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.rpartition(":") if spec.rsplit(":", 1)[-1].isdigit() else (spec, "", "1")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(nth):
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))  # Windows has no SIGKILL
