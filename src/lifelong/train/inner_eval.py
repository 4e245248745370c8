"""Evaluation inside a stage: continual evaluation (De Lange, van de Ven and Tuytelaars 2023, "Continual
evaluation for lifelong learning: identifying the stability gap", ICLR).

Scoring only at stage ends hides what happens in between: right after a boundary, when the learning rate
re-warms, an old task's score can collapse and partly recover within the stage (the *stability gap*). With
`train.eval_every: K` the loop asks the run to score the chosen eval tasks at step 0 of every trainable stage
(the boundary), every K optimizer steps and at the stage's last step; the run records each point as an
`eval_step` event. This module holds what the loop and the run share: when a point is due, which points a
run directory already holds (resume), and how the model's training state survives the scoring.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["TrainingState", "eval_due", "recorded_points"]


def eval_due(step: int, steps: int, every: int) -> bool:
    """Whether the in-stage evaluation scores after `step` of a stage's `steps` optimizer steps (step 0: the
    model as the stage starts)."""
    return every > 0 and (step == 0 or step == steps or step % every == 0)


def recorded_points(run_dir: Path) -> set[tuple[int, int]]:
    """(stage, step) of every `eval_step` event already in the run's `events.jsonl` (a line cut by a kill
    is not a point)."""
    path = Path(run_dir) / "events.jsonl"
    points: set[tuple[int, int]] = set()
    if not path.exists():
        return points
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and e.get("type") == "eval_step":
            points.add((int(e["stage"]), int(e["step"])))
    return points


_PLAIN = (bool, int, float, str, type(None))


class TrainingState:
    """Every parameter's `requires_grad` and every module's plain settings (train/eval mode, and what
    strategies switch to evaluate: active adapters, disabled adapter layers, active soft prompts), captured
    before an in-stage evaluation and put back after it, so training continues exactly as it would have
    without it (the strategy's `eval_model` may re-route the model for a task)."""

    def __init__(self, model: Any) -> None:
        self.grads = [(p, p.requires_grad) for p in model.parameters()]
        self.settings = [
            (m, {k: list(v) if isinstance(v, list) else v for k, v in vars(m).items() if _plain(v)})
            for m in model.modules()
        ]

    def restore(self) -> None:
        for m, saved in self.settings:
            m.__dict__.update({k: list(v) if isinstance(v, list) else v for k, v in saved.items()})
        for p, flag in self.grads:
            p.requires_grad_(flag)


def _plain(v: Any) -> bool:
    """A scalar setting, or a list / tuple of them (e.g. the names of active adapters)."""
    if isinstance(v, (list, tuple)):
        return all(isinstance(x, _PLAIN) for x in v)
    return isinstance(v, _PLAIN)
