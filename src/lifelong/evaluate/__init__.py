"""Scoring a model without training it (`lifelong eval`, `lifelong.api.evaluate`): eval tasks from a tasks file
(entries in the schema of `eval.probes`) or a run config's whole suite, on a hub id, a local model folder, a
GGUF file, `package:<PyPI package>`, or a stage of a run directory (`RUN_DIR:STAGE`, `RUN_DIR` for its last).

Everything that can fail on input is checked before the model loads: the model's name, the tasks (schema,
scorers, paths, rows, labels; located as `file:line: field: message`), and the output folder. No training
state is built (no accelerator, optimizer, checkpoints); the model is scored in eval mode under
`torch.inference_mode`, by the path a run's matrix takes (`HFLM`, the scorer's `score` and `aggregate`, the
strategy's `eval_model` for a run's stage), so a score equals the run's cell for the same model and tasks.
The output folder is written once, complete: `results.json` (each task's score with a 95% bootstrap CI over
its items, readable by `lifelong.api.open_run`) and `per_example.json` (a run's layout).
"""

from lifelong.evaluate.plan import EvalSettings, ModelSpec, Plan, parse_model, plan
from lifelong.evaluate.scoring import EvalResult, check_out, default_out, evaluate, load, score

__all__ = [
    "EvalResult",
    "EvalSettings",
    "ModelSpec",
    "Plan",
    "check_out",
    "default_out",
    "evaluate",
    "load",
    "parse_model",
    "plan",
    "score",
]
