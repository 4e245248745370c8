import json

import pytest

from lifelong.config import DataConfig
from lifelong.data import Formatter, Rows, check_rows, infer_format, load_rows, to_eval_items, to_examples
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
    cfg = DataConfig(
        rows=[{"text": "great", "label": "pos"}, {"text": "awful", "label": "neg"}],
        template="Review: {text}\nSentiment:",
    )
    rows = load_rows(cfg)
    items = to_eval_items(rows, "classification", cfg)
    assert items[0] == {
        "prompt": "Review: great\nSentiment:",
        "options": ["neg", "pos"],
        "answer": 1,
        "targets": ["pos"],
    }
    ex = to_examples(rows, "classification", cfg, fm, 64)
    assert fm.tok.decode([t for t in ex[1]["labels"] if t != -100], skip_special_tokens=True) == " neg"


def test_packing_starts_documents_with_bos_and_ends_them_with_eos(fm):
    cfg = DataConfig(rows=[{"text": "abc"}, {"text": "defgh"}])
    ex = to_examples(load_rows(cfg), "text", cfg, fm, 4)
    eos, bos = fm.tok.eos_token_id, fm.tok.bos_token_id
    flat = [t for e in ex for t in e["input_ids"]]
    assert len(ex[0]["input_ids"]) == 4 and flat.count(eos) == 2 and flat.count(bos) == 2
    assert fm.tok.decode(flat) == f"{fm.tok.bos_token}abc{fm.tok.eos_token}{fm.tok.bos_token}defgh{fm.tok.eos_token}"
    assert all(e["labels"] == e["input_ids"] for e in ex)


def test_chat_messages_loss_only_on_assistant_turns():
    tok = tiny_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    fm = Formatter(tok, "auto")
    assert fm.chat
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "ok"},
    ]
    cfg = DataConfig(rows=[{"messages": msgs}])
    ex = to_examples(load_rows(cfg), "messages", cfg, fm, 128)[0]
    learned = tok.decode([t for t in ex["labels"] if t != -100])
    assert learned == "yo<eos>ok<eos>"
    assert tok.decode(ex["input_ids"]) == "<user>hi<eos><assistant>yo<eos><user>bye<eos><assistant>ok<eos>"


def test_messages_without_assistant_turn_is_rejected():
    rows = load_rows(DataConfig(rows=[{"messages": [{"role": "user", "content": "hi"}]}]))
    with pytest.raises(ValueError, match="inline row 0: field 'messages' has no assistant turn"):
        check_rows(rows, "messages")


# ---- labels: one type per file; numbers only as a whole file (issue 13) --------------------------------
def _rows(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_all_number_labels_are_a_label_set_of_their_text(tmp_path, fm):
    p = _rows(tmp_path, [{"text": "good", "label": 1}, {"text": "bad", "label": 0}, {"text": "ok", "label": 1}])
    for cfg in (DataConfig(path=str(p)), DataConfig(path=str(p), labels=["0", "1"])):
        rows = load_rows(cfg)
        check_rows(rows, "classification")
        items = to_eval_items(rows, "classification", cfg)
        assert items[0]["options"] == ["0", "1"] and [it["answer"] for it in items] == [1, 0, 1]
        ex = to_examples(rows, "classification", cfg, fm, 64)
        assert fm.tok.decode([t for t in ex[1]["labels"] if t != -100], skip_special_tokens=True) == " 0"
    # an eval file with the same labels written as text (a CSV) scores against the numeric training set
    (tmp_path / "e.csv").write_text("text,label\nfine,1\nawful,0\n")
    ev = load_rows(DataConfig(path=str(tmp_path / "e.csv")))
    check_rows(ev, "classification")
    assert [it["answer"] for it in to_eval_items(ev, "classification", DataConfig(rows=[{}]), ["0", "1"])] == [1, 0]


def test_a_number_among_string_labels_names_the_row_and_the_label_set(tmp_path):
    p = _rows(tmp_path, [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}, {"text": "c", "label": 5}])
    with pytest.raises(ValueError) as e:
        check_rows(load_rows(DataConfig(path=str(p))), "classification")
    assert str(e.value) == (
        f'{p} line 3: label 5 is a number but the labels are strings ["neg", "pos"]; quote it '
        '("5") or correct the row (one file\'s labels are all strings or all numbers)'
    )
    # the majority decides which row broke the file: here the one string among numbers
    p = _rows(tmp_path, [{"text": "a", "label": "1"}, {"text": "b", "label": 0}, {"text": "c", "label": 1}])
    with pytest.raises(
        ValueError,
        match=r'd\.jsonl line 1: label "1" is a string but the labels are numbers '
        r"\[0, 1\]; write it as a number",
    ):
        check_rows(load_rows(DataConfig(path=str(p))), "classification")
    p = _rows(tmp_path, [{"text": "a", "label": "pos"}, {"text": "b", "label": True}])
    with pytest.raises(ValueError, match=r'line 2: label true is a boolean but the labels are strings \["pos"\]'):
        check_rows(load_rows(DataConfig(path=str(p))), "classification")


def test_labels_outside_the_label_set_name_the_row(tmp_path, fm):
    p = _rows(tmp_path, [{"text": "a", "label": "pos"}, {"text": "b", "label": "maybe"}])
    cfg = DataConfig(path=str(p), labels=["neg", "pos"])
    rows = load_rows(cfg)
    check_rows(rows, "classification")
    with pytest.raises(ValueError, match=r"d\.jsonl line 2: label \"maybe\" is not in data\.labels \['neg', 'pos'\]"):
        to_examples(rows, "classification", cfg, fm, 64)
    with pytest.raises(ValueError, match=r"d\.jsonl line 2: label \"maybe\" is not in the label set \['neg', 'pos'\]"):
        to_eval_items(rows, "classification", DataConfig(path=str(p)), ["neg", "pos"])


# ---- bytes and lines ---------------------------------------------------------------------------------
def test_not_utf8_far_into_a_streamed_file_names_its_line_and_byte_column(tmp_path):
    from lifelong.data.sources import iter_rows

    p = tmp_path / "big.jsonl"
    good = "".join(json.dumps({"text": f"row {i} ünïcode"}) + "\n" for i in range(3000))  # past any read buffer
    p.write_bytes(good.encode() + '{"text": "café '.encode() + b"\xe9" + b' au lait"}\n' + good.encode())
    col = len('{"text": "café '.encode()) + 1
    msg = f"{p}:3001: not UTF-8 (byte 0xe9 at column {col}); save the file as UTF-8"
    with pytest.raises(ValueError) as e:
        list(iter_rows(DataConfig(path=str(p))))
    assert str(e.value) == msg
    with pytest.raises(ValueError) as e:
        load_rows(DataConfig(path=str(p)))
    assert str(e.value) == msg


def test_byte_order_marks_and_crlf_lines_are_read(tmp_path):
    bom = b"\xef\xbb\xbf"
    (tmp_path / "d.jsonl").write_bytes(
        bom + b'{"prompt": "a", "response": "b"}\r\n{"prompt": "c", "response": "d"}\r\n'
    )
    (tmp_path / "d.csv").write_bytes(bom + b"text,label\r\ngood,pos\r\n")
    (tmp_path / "d.json").write_bytes(bom + b'[{"text": "x"}]')
    (tmp_path / "d.txt").write_bytes(bom + b"one\r\ntwo\r\n\r\nthree\r\n")
    assert load_rows(DataConfig(path=str(tmp_path / "d.jsonl"))).rows[1] == {"prompt": "c", "response": "d"}
    assert load_rows(DataConfig(path=str(tmp_path / "d.csv"))).rows == [{"text": "good", "label": "pos"}]
    assert load_rows(DataConfig(path=str(tmp_path / "d.json"))).rows == [{"text": "x"}]
    assert [r["text"] for r in load_rows(DataConfig(path=str(tmp_path / "d.txt"))).rows] == ["one\ntwo", "three"]


def test_json_list_items_are_located_by_line(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps([{"prompt": "a", "response": "b"}, {"prompt": "c"}], indent=2))
    rows = load_rows(DataConfig(path=str(p)))
    assert rows.where == [f"{p} line 2 (item 0)", f"{p} line 6 (item 1)"]
    with pytest.raises(ValueError, match=r"d\.json line 6 \(item 1\): field 'response' is missing"):
        check_rows(rows, "prompt_response")


def test_a_csv_without_a_needed_column_is_named_at_its_header(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("sentence,label\nok,pos\n")
    with pytest.raises(ValueError, match=r"d\.csv line 1: no column 'text' in the header \(sentence, label\)"):
        check_rows(load_rows(DataConfig(path=str(p))), "classification")
    check_rows(load_rows(DataConfig(path=str(p), columns={"sentence": "text"})), "classification")


@pytest.mark.parametrize(
    "row,msg",
    [
        ({"prompt": "p", "response": True}, r"field 'response' must be a non-empty string \(or a number\), got true"),
        ({"prompt": 5, "response": "r"}, "field 'prompt' must be a non-empty string, got 5"),
        ({"prompt": "p", "options": ["a", None], "answer": 0}, "field 'options' must be a list of at least 2 strings"),
        ({"prompt": "p", "options": ["a", "b"], "answer": True}, "field 'answer' must be an option or its index"),
        (
            {"prompt": "p", "chosen": [{"role": "assistant"}], "rejected": "r"},
            r"chosen\[0\] needs 'role' and 'content'",
        ),
        (
            {"prompt": "p", "chosen": [{"role": "user", "content": "x"}], "rejected": "r"},
            "field 'chosen' has no assistant",
        ),
    ],
)
def test_wrong_typed_fields_are_named(row, msg):
    rows = load_rows(DataConfig(rows=[row]))
    with pytest.raises(ValueError, match=rf"inline row 0: {msg}"):
        check_rows(rows, infer_format(rows, "auto"))


def test_numbers_as_responses_and_options_still_work(fm):
    cfg = DataConfig(rows=[{"prompt": "2+2?", "response": 4}, {"prompt": "1+1?", "options": [1, 2], "answer": "2"}])
    rows = load_rows(cfg)
    check_rows(Rows(rows.rows[:1], rows.where[:1]), "prompt_response")
    check_rows(Rows(rows.rows[1:], rows.where[1:]), "choice")
    assert to_eval_items(Rows(rows.rows[1:], rows.where[1:]), "choice", cfg)[0]["answer"] == 1
    ex = to_examples(Rows(rows.rows[1:], rows.where[1:]), "choice", cfg, fm, 64)
    assert fm.tok.decode([t for t in ex[0]["labels"] if t != -100], skip_special_tokens=True) == " 2"
