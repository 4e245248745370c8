import json

import pytest

from lifelong.config import DataConfig
from lifelong.data import Formatter, check_rows, infer_format, load_rows, to_examples, to_eval_items
from lifelong.testing import tiny_tokenizer


@pytest.fixture
def fm():
    return Formatter(tiny_tokenizer(), "auto")


def test_jsonl_malformed_line_is_named(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": \n')
    with pytest.raises(ValueError, match=r"d\.jsonl line 2: not valid JSON"):
        load_rows(DataConfig(path=str(p)))


def test_missing_field_names_file_line_and_field(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "c"}\n')
    rows = load_rows(DataConfig(path=str(p)))
    with pytest.raises(ValueError, match=r"d\.jsonl line 3: field 'response' is missing"):
        check_rows(rows, "prompt_response")


def test_csv_parquet_json_and_saved_dataset(tmp_path):
    import datasets

    rows = [{"text": "good day", "label": "pos"}, {"text": "bad day", "label": "neg"}]
    (tmp_path / "d.csv").write_text("text,label\ngood day,pos\nbad day,neg\n")
    (tmp_path / "d.json").write_text(json.dumps(rows))
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    for name in ("d.csv", "d.json", "d.parquet", "saved"):
        got = load_rows(DataConfig(path=str(tmp_path / name)))
        assert [dict(r) for r in got.rows] == rows, name
        assert infer_format(got, "auto") == "classification"
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nok,pos\ntoo,many,values\n")
    with pytest.raises(ValueError, match=r"bad\.csv line 3"):
        load_rows(DataConfig(path=str(bad)))


def test_column_renaming_and_max_examples():
    cfg = DataConfig(rows=[{"q": "a", "a": "b"}] * 5, columns={"q": "prompt", "a": "response"}, max_examples=2)
    rows = load_rows(cfg)
    assert len(rows) == 2 and infer_format(rows, "auto") == "prompt_response"


def test_loss_only_on_response_tokens(fm):
    cfg = DataConfig(rows=[{"prompt": "Q: 2+2?", "response": "4"}])
    rows = load_rows(cfg)
    ex = to_examples(rows, "prompt_response", cfg, fm, 64)[0]
    tok = fm.tok
    prompt_len = len(tok("Q: 2+2?")["input_ids"])
    assert ex["labels"][:prompt_len] == [-100] * prompt_len
    assert tok.decode([t for t in ex["labels"] if t != -100], skip_special_tokens=True) == " 4"
    assert ex["labels"][-1] == tok.eos_token_id


def test_classification_labels_become_options_and_template(fm):
    cfg = DataConfig(rows=[{"text": "great", "label": "pos"}, {"text": "awful", "label": "neg"}],
                     template="Review: {text}\nSentiment:")
    rows = load_rows(cfg)
    items = to_eval_items(rows, "classification", cfg)
    assert items[0] == {"prompt": "Review: great\nSentiment:", "options": ["neg", "pos"], "answer": 1,
                        "targets": ["pos"]}
    ex = to_examples(rows, "classification", cfg, fm, 64)
    assert fm.tok.decode([t for t in ex[1]["labels"] if t != -100], skip_special_tokens=True) == " neg"


def test_packing_separates_documents_with_eos(fm):
    cfg = DataConfig(rows=[{"text": "abc"}, {"text": "defgh"}])
    ex = to_examples(load_rows(cfg), "text", cfg, fm, 4)
    eos = fm.tok.eos_token_id
    flat = [t for e in ex for t in e["input_ids"]]
    assert len(ex[0]["input_ids"]) == 4 and flat.count(eos) == 2
    assert fm.tok.decode(flat[:4]) == "abc" + fm.tok.eos_token
    assert all(e["labels"] == e["input_ids"] for e in ex)


def test_chat_messages_loss_only_on_assistant_turns():
    tok = tiny_tokenizer()
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    fm = Formatter(tok, "auto")
    assert fm.chat
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "bye"}, {"role": "assistant", "content": "ok"}]
    cfg = DataConfig(rows=[{"messages": msgs}])
    ex = to_examples(load_rows(cfg), "messages", cfg, fm, 128)[0]
    learned = tok.decode([t for t in ex["labels"] if t != -100])
    assert learned == "yo<eos>ok<eos>"
    assert tok.decode(ex["input_ids"]) == "<user>hi<eos><assistant>yo<eos><user>bye<eos><assistant>ok<eos>"


def test_messages_without_assistant_turn_is_rejected():
    rows = load_rows(DataConfig(rows=[{"messages": [{"role": "user", "content": "hi"}]}]))
    with pytest.raises(ValueError, match="inline row 0: field 'messages' has no assistant turn"):
        check_rows(rows, "messages")
