"""Row formats and their tokenization.

Training examples are dicts `{"input_ids": [...], "labels": [...]}` with labels -100 where no loss is
taken (prompt tokens, padding): loss only on response tokens. `text` rows are packed into fixed blocks,
each document after BOS (EOS when the tokenizer has no BOS) and ended by EOS. Eval items are plain dicts
the scorers understand.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

from lifelong.config import DataConfig
from lifelong.data.lengths import Examples, Lengths, cut_text, fit_pair, fit_sequence
from lifelong.data.sources import Rows

REQUIRED = {
    "text": ("text",),
    "prompt_response": ("prompt", "response"),
    "messages": ("messages",),
    "classification": ("text", "label"),
    "choice": ("prompt", "options", "answer"),
    "preference": ("prompt", "chosen", "rejected"),
    "edit": ("prompt", "subject", "target_new"),
}


ORDER = ("edit", "preference", "messages", "choice", "prompt_response", "classification", "text")


def infer_format(rows: Rows, declared: str) -> str:
    """`declared` unless `auto`; else the format of the first row's fields: a scenario format first (their
    fields are the more specific), then the base formats in `ORDER`."""
    from lifelong.data.scenarios import SCENARIOS

    if declared != "auto":
        return declared
    keys = set(rows.rows[0])
    for name, cls in SCENARIOS.items():
        if cls().matches(keys):
            return name
    for fmt in ORDER:
        if set(REQUIRED[fmt]) <= keys:
            return fmt
    near = [f for f in ORDER if set(REQUIRED[f]) & keys]
    hint = ""
    if near:
        best = min(near, key=lambda f: len(set(REQUIRED[f]) - keys))
        hint = f" (closest: {best}, which also needs {', '.join(repr(f) for f in REQUIRED[best] if f not in keys)})"
    where, what = (f"{rows.source} line 1", "columns") if rows.columns is not None else (rows.where[0], "fields")
    raise ValueError(
        f"{where}: cannot infer the format from {what} {sorted(keys)}{hint}; set data.format "
        f"({' | '.join(REQUIRED)}) or rename with data.columns"
    )


def shown(v: Any) -> str:
    """A value as the user wrote it (JSON), shortened."""
    s = json.dumps(v, default=str, ensure_ascii=False)
    return s if len(s) <= 60 else s[:57] + "..."


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _text(r: dict, f: str, where: str, numbers: bool = False) -> None:
    v = r[f]
    if not (isinstance(v, str) and v.strip() or numbers and _is_number(v)):
        raise ValueError(
            f"{where}: field {f!r} must be a non-empty string{' (or a number)' if numbers else ''}, got {shown(v)}"
        )


def _messages(v: Any, where: str, f: str, assistant: bool) -> None:
    if not isinstance(v, list) or not v:
        raise ValueError(f"{where}: field {f!r} must be a non-empty list of {{role, content}}, got {shown(v)}")
    for k, m in enumerate(v):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: {f}[{k}] needs 'role' and 'content' strings, got {shown(m)}")
    if assistant and not any(m["role"] == "assistant" for m in v):
        raise ValueError(f"{where}: field {f!r} has no assistant turn to learn from")


def _label_kind(v: Any) -> Optional[str]:
    if isinstance(v, bool):
        return "boolean"
    if _is_number(v):
        return "number"
    return "string" if isinstance(v, str) and v.strip() else None


def _check_label_kinds(rows: Rows) -> None:
    """Labels of one file are all strings or all numbers (or booleans): a number among string labels is
    almost always a slip (`5` for `"5"`), and the two would silently become one option set."""
    kinds = [_label_kind(r["label"]) for r in rows.rows]
    counts = {k: kinds.count(k) for k in set(kinds)}
    if len(counts) < 2:
        return
    main = max(counts, key=lambda k: (counts[k], k == "string"))
    i = next(i for i, k in enumerate(kinds) if k != main)
    seen = sorted({r["label"] for r, k in zip(rows.rows, kinds) if k == main}, key=str)
    labels = "[" + ", ".join(shown(x) for x in seen[:10]) + (", ...]" if len(seen) > 10 else "]")
    lab, kind = rows.rows[i]["label"], kinds[i]
    fix = f"quote it ({json.dumps(shown(lab))})" if main == "string" else f"write it as a {main}"
    raise ValueError(
        f"{rows.where[i]}: label {shown(lab)} is a {kind} but the labels are {main}s {labels}; "
        f"{fix} or correct the row (one file's labels are all strings or all numbers)"
    )


def check_rows(rows: Rows, fmt: str) -> None:
    """Raise a ValueError naming file, line and field for the first malformed row."""
    from lifelong.data.scenarios import scenario

    sf = scenario(fmt)
    if sf is not None:
        for r, where in zip(rows.rows, rows.where):
            sf.check(r, where)
        return
    need = REQUIRED[fmt]
    gone = [f for f in need if rows.columns is not None and f not in rows.columns]
    if gone:
        raise ValueError(
            f"{rows.source} line 1: no column {gone[0]!r} in the header "
            f"({', '.join(rows.columns or [])}); format {fmt} needs {', '.join(need)}; "
            "rename columns with data.columns"
        )
    for r, where in zip(rows.rows, rows.where):
        for f in need:
            if f not in r or r[f] is None:
                raise ValueError(
                    f"{where}: field {f!r} is missing (format {fmt} needs {', '.join(need)}); "
                    "rename columns with data.columns"
                )
        if fmt == "edit":
            from lifelong.data.edit_requests import parse_request

            parse_request(r, where)
        elif fmt == "messages":
            _messages(r["messages"], where, "messages", True)
        elif fmt == "preference":
            for f in need:
                if isinstance(r[f], list):
                    _messages(r[f], where, f, f != "prompt")
                elif not isinstance(r[f], str) or not r[f].strip():
                    raise ValueError(
                        f"{where}: field {f!r} must be a non-empty string (or chat messages), got {shown(r[f])}"
                    )
            if r["chosen"] == r["rejected"]:
                raise ValueError(f"{where}: 'chosen' and 'rejected' are identical; a pair must differ")
        elif fmt == "choice":
            _text(r, "prompt", where)
            opts, ans = r["options"], r["answer"]
            if (
                not isinstance(opts, list)
                or len(opts) < 2
                or not all(_label_kind(o) in ("string", "number") for o in opts)
            ):
                raise ValueError(f"{where}: field 'options' must be a list of at least 2 strings, got {shown(opts)}")
            if not (
                isinstance(ans, str)
                and ans in [str(o) for o in opts]
                or isinstance(ans, int)
                and not isinstance(ans, bool)
                and 0 <= ans < len(opts)
            ):
                raise ValueError(
                    f"{where}: field 'answer' must be an option or its index (0 to {len(opts) - 1}), got {shown(ans)}"
                )
        elif fmt == "classification":
            _text(r, "text", where)
            if _label_kind(r["label"]) is None:
                raise ValueError(
                    f"{where}: field 'label' must be a non-empty string (or a number), got {shown(r['label'])}"
                )
        else:  # text, prompt_response; a response may be a number (`4`), read as its text
            for f in need:
                _text(r, f, where, numbers=f == "response")
    if fmt == "classification":
        _check_label_kinds(rows)


class Formatter:
    """Turns prompts and responses into token ids, with the chat template where one is used."""

    def __init__(self, tokenizer: Any, chat: str = "auto", system_prompt: Optional[str] = None) -> None:
        self.tok = tokenizer
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if chat == "on" and not has_template:
            raise ValueError("model.chat_template is 'on' but the tokenizer has no chat template")
        self.chat = has_template if chat == "auto" else chat == "on"
        self.system_prompt = system_prompt
        self.eos_id = tokenizer.eos_token_id

    def _msgs(self, prompt: str) -> list[dict[str, str]]:
        m = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return m + [{"role": "user", "content": prompt}]

    def prompt_ids(self, prompt: str) -> list[int]:
        if self.chat:
            text = self.tok.apply_chat_template(self._msgs(prompt), tokenize=False, add_generation_prompt=True)
            return self.tok(text, add_special_tokens=False)["input_ids"]
        return self.tok(prompt)["input_ids"]

    def messages_prompt_ids(self, msgs: list[dict[str, str]]) -> list[int]:
        """The conversation so far, ready for the assistant's next turn."""
        if self.chat:
            text = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            return self.tok(text, add_special_tokens=False)["input_ids"]
        text = "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"
        return self.tok(text)["input_ids"]

    def response_text(self, response: str) -> str:
        """A response as continuation: chat responses start fresh; plain ones after a space."""
        response = str(response)
        if self.chat or response[:1].isspace() or not response:
            return response
        return " " + response

    def response_ids(self, response: str, eos: bool = True) -> list[int]:
        ids = self.tok(self.response_text(response), add_special_tokens=False)["input_ids"]
        return ids + ([self.eos_id] if eos and self.eos_id is not None else [])

    def messages_example(self, msgs: list[dict[str, str]]) -> tuple[list[int], list[int]]:
        """Loss on assistant turns only: render each prefix and label the new assistant tokens."""
        if not self.chat:
            ids: list[int] = []
            labels: list[int] = []
            for m in msgs:
                part = self.tok(f"{m['role']}: {m['content']}\n", add_special_tokens=not ids)["input_ids"]
                ids += part
                labels += part if m["role"] == "assistant" else [-100] * len(part)
            return ids, labels
        ids, labels = [], []
        for k, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            prefix = self.tok.apply_chat_template(msgs[:k], tokenize=False, add_generation_prompt=True)
            full = self.tok.apply_chat_template(msgs[: k + 1], tokenize=False)
            if not full.startswith(prefix):
                raise ValueError(
                    "the chat template does not render conversations prefix-consistently; "
                    "use prompt_response rows instead"
                )
            p_ids = self.tok(prefix, add_special_tokens=False)["input_ids"]
            f_ids = self.tok(full, add_special_tokens=False)["input_ids"]
            new_prompt = p_ids[len(ids) :]
            new_resp = f_ids[len(p_ids) :]
            ids = ids + new_prompt + new_resp
            labels = labels + [-100] * len(new_prompt) + list(new_resp)
        return ids, labels


def _prompt(row: dict, template: Optional[str], field: str) -> str:
    if template:
        try:
            return template.format(**row)
        except KeyError as e:
            raise ValueError(f"data.template refers to field {e} that the row does not have") from None
    return str(row[field])


def label_set(rows: Rows, cfg: DataConfig) -> list[str]:
    return list(cfg.labels) if cfg.labels else sorted({str(r["label"]) for r in rows.rows})


def to_examples(rows: Rows, fmt: str, cfg: DataConfig, fm: Formatter, max_length: int) -> Examples:
    """Tokenize training rows, each fitted into `max_length` by `cfg.truncate` (`data.lengths`); the result
    carries the `Lengths` record of rows cut and dropped. `text` rows are packed (never cut or dropped). Rows
    of a scenario format become prompt/response rows first (`as_base_rows`)."""
    if fmt not in REQUIRED:
        base, rows = as_base_rows(rows, fmt, cfg)
        return to_examples(rows, base, cfg.model_copy(update={"template": None}), fm, max_length)
    if fmt == "text":
        blocks = pack([r["text"] for r in rows.rows], fm, max_length)
        return Examples(blocks, Lengths(rows=len(rows), max_length=max_length, truncate=cfg.truncate))
    out = []
    lengths = Lengths(max_length=max_length, truncate=cfg.truncate)
    bos = fm.tok.bos_token_id
    for r, where in zip(rows.rows, rows.where):
        text: dict[str, str] = {}
        try:
            if fmt == "messages":
                ids, labels = fm.messages_example(r["messages"])
            else:
                if fmt == "classification":
                    prompt, resp = _prompt(r, cfg.template, "text"), str(r["label"])
                    if cfg.labels and resp not in cfg.labels:
                        raise ValueError(f"label {shown(r['label'])} is not in data.labels {cfg.labels}")
                elif fmt == "choice":
                    ans = (
                        r["answer"]
                        if isinstance(r["answer"], int)
                        else [str(o) for o in r["options"]].index(r["answer"])
                    )
                    prompt, resp = _prompt(r, cfg.template, "prompt"), str(r["options"][ans])
                else:
                    prompt, resp = _prompt(r, cfg.template, "prompt"), str(r["response"])
                p, q = fm.prompt_ids(prompt), fm.response_ids(resp)
                ids, labels = p + q, [-100] * len(p) + q
                text = {"prompt_text": prompt, "response_text": resp}  # for strategies that rewrite targets
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        kept, outcome = fit_sequence(ids, labels, max_length, cfg.truncate, bos)
        lengths.note(where, outcome)
        if kept is not None:
            out.append({"input_ids": kept[0], "labels": kept[1], **(text if fmt != "messages" else {})})
    if not out:
        raise ValueError(
            f"{rows.source}: no row fits max_length={max_length} with a response token left (data.truncate: "
            f"{cfg.truncate}; the first is {lengths.first}); raise train.max_length"
            + (" or set data.truncate: left" if cfg.truncate != "left" else "")
        )
    return Examples(out, lengths)


def document_start(tok: Any) -> list[int]:
    """The token every document follows, in packed pre-training blocks and when a document is scored
    (`HFLM.nll`): BOS when the tokenizer has one, else EOS (the separator packing puts between documents),
    else none. One rule for both, so a document's first token is scored from the context it was trained
    after (docs/decisions.md, "Document starts")."""
    for t in (tok.bos_token_id, tok.eos_token_id):
        if t is not None:
            return [int(t)]
    return []


def packed_document(ids: list[int], start: list[int], eos: Optional[int], first: bool) -> list[int]:
    """One document as it enters the packed token stream: the document start (unless it is the EOS that
    ends the previous document already), the document's tokens, EOS."""
    head = start if start and (first or start != [eos]) else []
    return head + ids + ([eos] if eos is not None else [])


def pack(texts: list[str], fm: Formatter, block: int) -> list[dict]:
    """Concatenate documents, each after the document start (`document_start`) and ended by EOS, and cut
    the stream into blocks of `block` tokens."""
    start = document_start(fm.tok)
    stream: list[int] = []
    for k, t in enumerate(texts):
        stream += packed_document(fm.tok(t, add_special_tokens=False)["input_ids"], start, fm.eos_id, k == 0)
    blocks = [stream[i : i + block] for i in range(0, len(stream), block)]
    blocks = [b for b in blocks if len(b) >= 2]
    return [{"input_ids": b, "labels": list(b)} for b in blocks]


def as_base_rows(rows: Rows, fmt: str, cfg: DataConfig, labels: Optional[list[str]] = None) -> tuple[str, Rows]:
    """Rows of the scenario format `fmt` as rows of its base format: `prompt` (the format's default prompt, or
    `data.template` over the row's fields), `response` (its training target) and `targets` (its references),
    plus `_item`, the eval-item fields its scorers read. Each row keeps its origin. The format's label set
    (`ScenarioFormat.labels`) is `data.labels`, else `labels` (the one a stage's eval task shares)."""
    from lifelong.data.scenarios import scenario

    sf = scenario(fmt)
    if sf is None:
        raise ValueError(f"{rows.source}: unknown format {fmt!r}")
    sf.labels = list(cfg.labels) if cfg.labels else (list(labels) if labels else None)
    out = []
    for r, where in zip(rows.rows, rows.where):
        try:
            prompt = _prompt(r, cfg.template, "") if cfg.template else sf.prompt(r)
            out.append({"prompt": prompt, "response": sf.response(r), "targets": sf.targets(r), "_item": sf.item(r)})
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return sf.base, Rows(out, list(rows.where), rows.source, None)


def to_eval_items(rows: Rows, fmt: str, cfg: DataConfig, labels: Optional[list[str]] = None) -> list[dict]:
    """Eval items: `{prompt, options, answer}` (choice), `{prompt, targets}` (generation) or `{text}`; a
    scenario format's items add the fields its scorers read (`ScenarioFormat.item`)."""
    if fmt not in REQUIRED:
        _, base_rows = as_base_rows(rows, fmt, cfg, labels)
        return [{"prompt": r["prompt"], "targets": r["targets"], **r["_item"]} for r in base_rows.rows]
    items = []
    label_opts = (labels or label_set(rows, cfg)) if fmt == "classification" else []
    for r, where in zip(rows.rows, rows.where):
        if fmt == "classification":
            lab = str(r["label"])
            if lab not in label_opts:
                raise ValueError(
                    f"{where}: label {shown(r['label'])} is not in the label set {label_opts}; "
                    "set data.labels to list every label"
                )
            items.append(
                {
                    "prompt": _prompt(r, cfg.template, "text"),
                    "options": label_opts,
                    "answer": label_opts.index(lab),
                    "targets": [lab],
                }
            )
        elif fmt == "choice":
            opts = [str(o) for o in r["options"]]
            ans = r["answer"] if isinstance(r["answer"], int) else opts.index(r["answer"])
            items.append({"prompt": _prompt(r, cfg.template, "prompt"), "options": opts, "answer": ans})
        elif fmt == "prompt_response":
            tgt = r["response"]
            items.append(
                {
                    "prompt": _prompt(r, cfg.template, "prompt"),
                    "targets": [str(t) for t in tgt] if isinstance(tgt, list) else [str(tgt)],
                }
            )
        elif fmt == "preference":
            items.append(
                {
                    "prompt": _prompt(r, cfg.template, "prompt"),
                    "chosen": _pref_text(r["chosen"]),
                    "rejected": _pref_text(r["rejected"]),
                }
            )
        elif fmt == "edit":
            items.append(dict(r))
        elif fmt == "messages":
            msgs = r["messages"]
            last = max(k for k, m in enumerate(msgs) if m["role"] == "assistant")
            items.append({"messages": msgs[:last], "targets": [msgs[last]["content"]]})
        else:
            items.append({"text": str(r["text"])})
    return items


def fit_eval_items(
    items: list[dict], where: list[str], fm: Formatter, limit: int, mode: str, new_tokens: int = 0
) -> tuple[list[dict], Lengths]:
    """Eval items fitted into `limit` tokens (the model's context) by `mode` (`data.truncate`), with the
    `Lengths` record of items cut and dropped; `where[k]` is item k's row. An item's length is what its scorer
    puts through the model: its prompt (chat template included) plus its longest continuation (options, chosen
    and rejected responses) or `new_tokens` generated tokens; a document with its document start. A prompt
    gives way from its start (`left`; a conversation loses its earliest turns first) or its end (`right`); a
    document, every token of which is scored, keeps its start; `drop` leaves the item out, as it does an item
    whose continuation alone is too long. Edit requests are short and scored whole: they are not fitted."""
    out, lengths = [], Lengths(max_length=limit, truncate=mode)
    start = document_start(fm.tok)
    for item, at in zip(items, where):
        kept, outcome = _fit_item(item, fm, limit, mode, new_tokens, start)
        lengths.note(at, outcome)
        if kept is not None:
            out.append(kept)
    return out, lengths


def _fit_item(
    item: dict, fm: Formatter, limit: int, mode: str, new_tokens: int, start: list[int]
) -> tuple[Optional[dict], Optional[str]]:
    if "text" in item and "prompt" not in item:  # a document (perplexity, bits per byte)

        def doc_fits(t: str) -> bool:
            return len(start) + len(fm.tok(t, add_special_tokens=False)["input_ids"]) <= limit

        return _cut_field(item, "text", doc_fits, "start", mode)
    reserve = new_tokens if "targets" in item else 0
    for o in item.get("options", []):
        reserve = max(reserve, len(fm.response_ids(str(o), eos=False)))
    for side in ("chosen", "rejected"):
        if side in item:
            reserve = max(reserve, len(fm.response_ids(item[side])))
    if "messages" in item:
        msgs = list(item["messages"])

        def conv_fits(ms: list[dict]) -> bool:
            return len(fm.messages_prompt_ids(ms)) + reserve <= limit

        if conv_fits(msgs):
            return item, None
        if mode == "drop":
            return None, "dropped"
        first = 1 if msgs[0]["role"] == "system" else 0
        while mode == "left" and len(msgs) - first > 1 and not conv_fits(msgs):
            del msgs[first]  # the earliest turn gives way first
        k = first if mode == "left" else len(msgs) - 1
        text = cut_text(
            msgs[k]["content"],
            lambda c: conv_fits(msgs[:k] + [{**msgs[k], "content": c}] + msgs[k + 1 :]),
            "end" if mode == "left" else "start",
        )
        if text is None:
            return None, "dropped"
        msgs[k] = {**msgs[k], "content": text}
        return {**item, "messages": msgs}, "truncated"
    if "prompt" not in item or not isinstance(item["prompt"], str) or "subject" in item:
        return item, None  # edit requests

    def prompt_fits(p: str) -> bool:
        return len(fm.prompt_ids(p)) + reserve <= limit

    return _cut_field(item, "prompt", prompt_fits, "end" if mode == "left" else "start", mode)


def _cut_field(
    item: dict, field: str, fits: Callable[[str], bool], keep: str, mode: str
) -> tuple[Optional[dict], Optional[str]]:
    if fits(item[field]):
        return item, None
    text = None if mode == "drop" else cut_text(item[field], fits, keep)
    return (None, "dropped") if text is None else ({**item, field: text}, "truncated")


def _pref_text(x: Any) -> str:
    """A preference response: a string, or chat messages whose last assistant turn is the response."""
    if isinstance(x, list):
        return str([m for m in x if m.get("role") == "assistant"][-1]["content"])
    return str(x)


def to_preference_examples(rows: Rows, cfg: DataConfig, fm: Formatter, max_length: int) -> Examples:
    """Pairs as token ids: the chosen sequence (also as `input_ids`/`labels`, so replay and SFT terms see an
    ordinary example) and the rejected one; labels mask the prompt. Each pair is fitted into `max_length` by
    `cfg.truncate` (`data.lengths.fit_pair`: both sides keep the same prompt); the result carries the
    `Lengths` record."""
    out = []
    lengths = Lengths(max_length=max_length, truncate=cfg.truncate)
    for r, where in zip(rows.rows, rows.where):
        prompt = _prompt(r, cfg.template, "prompt") if isinstance(r["prompt"], str) else None
        p = fm.prompt_ids(prompt) if prompt is not None else fm.messages_prompt_ids(r["prompt"])
        qc, qr = fm.response_ids(_pref_text(r["chosen"])), fm.response_ids(_pref_text(r["rejected"]))
        kept, outcome = fit_pair(p, qc, qr, max_length, cfg.truncate, fm.tok.bos_token_id)
        lengths.note(where, outcome)
        if kept is None:
            continue
        p, qc, qr = kept
        ex: dict = {}
        for side, q in (("chosen", qc), ("rejected", qr)):
            ex[f"{side}_ids"] = p + q
            ex[f"{side}_labels"] = [-100] * len(p) + q
        ex["input_ids"], ex["labels"] = ex["chosen_ids"], ex["chosen_labels"]
        out.append(ex)
    if not out:
        raise ValueError(
            f"{rows.source}: no pair fits max_length={max_length} with a response token left on both sides "
            f"(data.truncate: {cfg.truncate}; the first is {lengths.first}); raise train.max_length"
        )
    return Examples(out, lengths)
