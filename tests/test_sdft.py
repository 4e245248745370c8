"""SDFT: the stage trains on the model's own rewrites where they pass the check, on originals elsewhere."""

from lifelong.config import DataConfig
from lifelong.data import Formatter, load_rows, to_examples
from lifelong.eval.lm import HFLM
from lifelong.strategies.base import StageContext
from lifelong.strategies.sdft import SDFT, SDFTParams, passes
from lifelong.testing import tiny_llama, tiny_tokenizer


def test_check_rules():
    assert passes("contains", "Paris", "I believe it is paris.")
    assert not passes("contains", "Paris", "Lyon")
    assert passes("exact_match", "the Paris", "paris!") and not passes("exact_match", "Paris", "it is Paris")
    assert passes("none", "x", "anything") and not passes("none", "x", "  ")


def test_rewrites_replace_targets_only_where_they_pass(monkeypatch):
    tok = tiny_tokenizer()
    fm = Formatter(tok)
    rows = [{"prompt": f"q{i}?", "response": "yes" if i % 2 else "no"} for i in range(6)]
    cfg = DataConfig(rows=rows)
    examples = to_examples(load_rows(cfg), "prompt_response", cfg, fm, 64)
    seen_contexts = []

    def fake_generate(self, contexts, max_new_tokens=32):
        seen_contexts.extend(tok.decode(c) for c in contexts)
        # even rows: a paraphrase containing the answer; odd rows: a wrong answer
        return [f"I would say {rows[i]['response']}" if i % 2 == 0 else "maybe" for i in range(len(contexts))]

    monkeypatch.setattr(HFLM, "generate", fake_generate)
    s = SDFT(SDFTParams())
    ctx = StageContext(
        stage_index=0, stage_name="s", model=tiny_llama(), tokenizer=tok, examples=examples, formatter=fm
    )
    s.before_stage(ctx)
    assert "Reference answer: no" in seen_contexts[0] and seen_contexts[0].startswith("q0?")
    assert (s.kept, s.rejected) == (3, 3)
    out = [e for b in s.batches(ctx, iter([examples])) for e in b]
    for i, e in enumerate(out):
        target = tok.decode([t for t in e["labels"] if t != -100], skip_special_tokens=True).strip()
        assert target == (f"I would say {rows[i]['response']}" if i % 2 == 0 else rows[i]["response"])
        # the prompt part is unchanged
        assert e["input_ids"][: len(fm.prompt_ids(rows[i]["prompt"]))] == fm.prompt_ids(rows[i]["prompt"])
