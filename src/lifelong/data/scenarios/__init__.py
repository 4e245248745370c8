"""Scenario row formats: one file each, registered by file name (`lifelong ls formats`).

A scenario format (NER, relation extraction, translation, ...) has its own fields, checked row by row with
located errors, and turns each row into what the generic machinery already trains and scores: a prompt (the
format's default prompt, or `data.template` over the row's fields) and a response for training, and an eval
item `{prompt, targets, ...}` carrying whatever else its scorers need (entity spans, the source sentence, the
language pair, the tool schema). Stage kinds and scorers that take the format's `base` take the format too.
"""

from typing import Any

from lifelong.data.scenarios.base import ScenarioFormat
from lifelong.registry import Registry, import_siblings

SCENARIOS: Registry[type[ScenarioFormat]] = Registry("format", group="lifelong.formats")

import_siblings(__name__, __path__)


def scenario(fmt: str) -> ScenarioFormat | None:
    """The scenario format named `fmt` (an instance), or None for a base format."""
    return SCENARIOS.get(fmt)() if fmt in SCENARIOS else None


def base_format(fmt: str) -> str:
    """The base format a scenario format's rows become (`prompt_response`), or `fmt` itself."""
    sf = scenario(fmt)
    return sf.base if sf is not None else fmt


def accepts(formats: Any, fmt: str) -> bool:
    """Whether a stage kind or scorer declaring `formats` takes rows of format `fmt`: named, or the base format
    of the scenario format `fmt` (an instruct stage trains on NER rows; `exact_match` scores translations)."""
    return fmt in formats or base_format(fmt) in formats


__all__ = ["SCENARIOS", "ScenarioFormat", "scenario", "base_format", "accepts"]
