"""Knowledge editing: one file per method, registered by name; every method returns an `EditResult` whose
`undo` restores the model bit for bit.

    from lifelong.editing import edit, load_requests, evaluate_edits
    result = edit(model, tok, load_requests("edits.jsonl"), method="rome", layer=5)
    table = evaluate_edits(model, tok, result.requests, pre=pre_scores)
    result.undo(model)
"""

from typing import Any

from lifelong.data.edit_requests import EditRequest, load_requests, parse_request
from lifelong.editing.base import Editor, EditResult
from lifelong.registry import Registry, import_siblings

EDITORS: Registry[type[Editor]] = Registry("editing method")


def build_editor(method: str, params: dict | None = None) -> Editor:
    cls = EDITORS.get(method)
    return cls(cls.Params(**(params or {})))


def edit(model: Any, tok: Any, requests: list[EditRequest], method: str = "rome", **params: Any) -> EditResult:
    """Apply `requests` to `model` in place with a registered method; returns what changed."""
    return build_editor(method, params).edit(model, tok, requests)


import_siblings(__name__, __path__)

__all__ = ["EDITORS", "EditRequest", "EditResult", "Editor", "build_editor", "edit", "load_requests", "parse_request"]
