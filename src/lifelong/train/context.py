"""The narrow, typed views that the training loop, stage kinds and strategy hooks get of a run.

Nothing below the runner imports the runner: the loop and the stage kinds see a run through `RunView` and
`StageEnv` (structural protocols the runner satisfies, so a type checker holds them to the listed
attributes), and strategy hooks through a `StageContext` value built for each call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol

if TYPE_CHECKING:
    from rich.console import Console

    from lifelong.config import RunConfig
    from lifelong.data.formats import Formatter


@dataclass
class StageContext:
    """What a strategy hook may look at. The model is the unwrapped module (not the DDP wrapper)."""

    stage_index: int
    stage_name: str
    model: Any
    tokenizer: Any
    examples: list[dict] = field(default_factory=list)
    """The stage's tokenized training examples (`input_ids`, `labels`)."""
    step: int = 0
    num_steps: int = 0
    accelerator: Any = None
    device: Any = None
    task_stage: Optional[int] = None
    """For `eval_model`: the index of the stage that owns the task being scored (None for probes)."""
    task_items: Optional[list] = None
    """For `eval_model`: the task's eval items (inputs only are used by routers; never the answers)."""
    formatter: Any = None
    """The run's prompt formatter (chat template) for strategies that tokenize prompts themselves."""
    resuming: bool = False
    """For `wrap_model`: rebuilding the structure of a checkpoint rather than starting a stage."""
    run_dir: Any = None
    """The run directory (exports such as PEFT adapters go under it; main process only)."""
    engine_steps: bool = False
    """DeepSpeed: the engine reduces, clips and applies the gradients inside the loop's backward call (ZeRO-2
    keeps them in its own partitioned buffers), so no gradient is left for `before_step`, which the loop then
    does not call; a strategy adds its gradient term through `penalty` instead (EWC, L2)."""


class RunView(Protocol):
    """What the training loop reads and writes of a run."""

    cfg: "RunConfig"
    model: Any
    """The stream's current model (the loop replaces it with the strategy-wrapped, trained one)."""
    tokenizer: Any
    formatter: "Formatter"
    accelerator: Any
    strategy: Any
    """The composed strategy (`lifelong.strategies.base.Strategy` interface)."""
    run_dir: Path
    console: "Console"
    quiet: bool
    optimizer_state: Optional[dict]
    """AdamW state carried across a stage boundary (`train.optimizer_state: keep`)."""
    step_offsets: list[int]
    """Global optimizer-step offset of every stage (trackers' x-axis)."""
    cache_keys: dict[int, str]
    """Content hash of each stage's tokenized examples (caches keyed on the data, e.g. curricula)."""

    def log(self, **event: Any) -> None:
        """Append an event to the run's `events.jsonl` (step events may wait for `flush_log`)."""

    def flush_log(self) -> None:
        """Write out the step events `log` batches (before a checkpoint, at a stage's end)."""

    def evaluate_during(self, index: int, step: int, model: Any) -> float:
        """Score `train.eval_tasks` on `model` (the strategy-wrapped model being trained) after `step` optimizer
        steps of stage `index`, record an `eval_step` event, and leave the model's training state as it was
        (`train.eval_every`; every process calls it at the same steps). Returns the seconds it took."""


class StageEnv(RunView, Protocol):
    """What a stage kind may use of a run, besides the loop's view."""

    prepared: list[Any]
    """Every stage's prepared data (e.g. earlier preference pairs for preference replay)."""
    mix_ratios: dict[int, list[float]]
    """Source-mixing ratios each stage used (topic-ratio adaptation reads the previous stage's)."""

    @property
    def results_extra(self) -> Optional[dict]:
        """`results.json`'s free-form section for stage records (mix, edits, averaging sweeps); None before
        the results exist."""

    @property
    def results_matrix(self) -> tuple[list[dict], list[list[Optional[float]]]]:
        """The results' task records and matrix rows so far (topic-ratio adaptation); empty before any."""

    def score_suite(self, row: int) -> dict[str, dict[str, Any]]:
        """Scores of the current model on every eval task as of matrix row `row` (sweeps), each with its 95%
        bootstrap CI over eval examples: `{task: {"score": s, "ci95": [lo, hi] or None}}`."""

    def kept_path(self, name: str) -> Path:
        """Where the end-of-stage weights of stage `name` (or `base`) are kept."""

    def stage_state(self, kind: str) -> Any:
        """The run-wide state object of a stage kind (`StageKind.State`), e.g. the retrieval memory."""
