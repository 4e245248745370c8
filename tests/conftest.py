import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def tiny_cfg(tmp_path):
    """A function building a validated tiny run config writing under tmp_path."""
    from lifelong.testing import tiny_run_config
    from lifelong.validation import validate_raw

    def make(strategy="naive", **kw):
        raw = tiny_run_config(strategy, output_dir=str(tmp_path / "runs"), **kw)
        return validate_raw(raw)

    return make


@pytest.fixture(scope="session")
def fact_setup(tmp_path_factory):
    """A tiny llama trained once per session on synthetic facts (`lifelong.testing.tiny_facts`), saved with
    its word-level tokenizer, and a corpus for key statistics. Returns a namespace; `load()` gives a fresh
    copy of the model, so tests may edit it freely."""
    import types

    from transformers import AutoModelForCausalLM

    from lifelong.testing import fact_corpus, tiny_fact_model, tiny_facts

    root = tmp_path_factory.mktemp("facts")
    facts, tok = tiny_facts()
    tiny_fact_model(facts, tok).save_pretrained(str(root / "model"))
    tok.save_pretrained(str(root / "model"))
    corpus = fact_corpus(facts, root / "corpus.jsonl")

    def load():
        return AutoModelForCausalLM.from_pretrained(str(root / "model")).eval()

    return types.SimpleNamespace(
        facts=facts,
        tok=tok,
        path=str(root / "model"),
        corpus=corpus,
        load=load,
        stats={"corpus": {"path": corpus}, "tokens": 20000},
    )
