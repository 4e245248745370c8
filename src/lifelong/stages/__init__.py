"""Stage kinds: how one kind of update trains or applies itself. One file per kind, registered by name.

A kind gets the `Run` (model, tokenizer, strategy, accelerator, config) and the stage index, and updates
`run.model`; the runner evaluates and checkpoints around it. New kinds (preference, edit, merge, memory)
plug in by adding a file here, without touching the loop or the runner.
"""

from lifelong.registry import Registry, import_siblings
from lifelong.stages.base import StageKind, TrainableStage

STAGE_KINDS: Registry[type[StageKind]] = Registry("stage kind")

import_siblings(__name__, __path__)

__all__ = ["STAGE_KINDS", "StageKind", "TrainableStage"]
