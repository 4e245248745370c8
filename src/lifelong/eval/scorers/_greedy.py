"""Greedy generation for the generation scorers (translation, QA): one batched `lm.generate` call over the items'
prompts (or chat messages), each answer optionally cut to its first line."""

from __future__ import annotations

from typing import Any

SCENARIOS_EXTRA = "pip install 'lifelong[scenarios]'"


def generations(lm: Any, items: list[dict], max_new_tokens: int) -> list[str]:
    """The raw greedy continuation of each item's prompt (or of its `messages`, ready for the assistant)."""
    ctxs = [
        lm.fm.messages_prompt_ids(it["messages"]) if "messages" in it else lm.fm.prompt_ids(it["prompt"])
        for it in items
    ]
    return list(lm.generate(ctxs, max_new_tokens=max_new_tokens))


def answer_text(raw: str, first_line: bool) -> str:
    """What is scored of a generation: its first non-empty line stripped, or all of it stripped."""
    text = raw.strip()
    return text.split("\n")[0].strip() if first_line else text


def need(module: str, what: str) -> Any:
    """Import `module` or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"the {what} scorer needs {module.split('.')[0]}: {SCENARIOS_EXTRA} ({e})") from None
