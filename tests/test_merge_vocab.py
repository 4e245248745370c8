"""Vocabulary alignment of merges (mergekit's `tokenizer_source`): the refusal, base / union / model:<path>
modes and their fill rules, padded embeddings, the saved tokenizer and model, and parity with mergekit.

The tiny models have word-level tokenizers built here: A and B share 24 words under different ids, A alone
has 2 words and B alone 3. Every expected row is looked up by token in each model's own tokenizer, never
through the plan."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from lifelong.merging.vocab import plan_vocab, vocab_axis

torch.set_num_threads(1)

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
SHARED = [f"w{i}" for i in range(24)]
A_ONLY = ["apple", "apricot"]
B_ONLY = ["banana", "cherry", "blueberry"]
B_WORDS = random.Random(0).sample(SHARED, len(SHARED)) + B_ONLY  # same words, other ids
MERGEKIT = Path("/tmp/mkvenv/bin/mergekit-yaml")
EMB = ("model.embed_tokens.weight", "lm_head.weight")


def make_tokenizer(words: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(SPECIALS + words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def save_model(path: Path, words: list[str], seed: int, rows: Optional[int] = None, tokenizer: bool = True) -> Path:
    """A tiny untied llama (embed_tokens and lm_head) with `rows` embedding rows (default: the vocabulary)."""
    from transformers import AutoModelForCausalLM

    from lifelong.testing import tiny_config

    tok = make_tokenizer(words)
    cfg = tiny_config("llama", vocab_size=rows or len(tok), tie_word_embeddings=False, num_hidden_layers=1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(path)
    if tokenizer:
        tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vocab")
    return {
        "a": save_model(d / "a", SHARED + A_ONLY, 1),
        "a2": save_model(d / "a2", SHARED + A_ONLY, 2),  # A's tokenizer, other weights
        "base": save_model(d / "base", SHARED + A_ONLY, 3),
        "b": save_model(d / "b", B_WORDS, 4),
    }


def own_vocab(d: Path) -> dict[str, int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(d)).get_vocab()


def merge_with_plan(plan, dirs: list[Path], combine: Callable, out: Path, config_from: Path) -> dict:
    """Stream-free reference driver: align every vocabulary tensor, combine, write a loadable model."""
    states = [load_file(str(d / "model.safetensors")) for d in dirs]
    merged = {}
    for n in states[0]:
        ts = [s[n] for s in states]
        ax = vocab_axis(n, list(ts[0].shape), plan.vocab_sizes)
        if ax is not None:
            ts = plan.align(ts, ax, [str(d) for d in dirs])
        merged[n] = combine(ts).contiguous()
    out.mkdir(parents=True)
    shutil.copy(config_from / "config.json", out / "config.json")
    save_file(merged, str(out / "model.safetensors"), metadata={"format": "pt"})
    plan.save_tokenizer(out)
    return merged


def mean(ts):
    return sum(ts[1:], ts[0]) / len(ts)


# ---- vocab_axis -------------------------------------------------------------------------------------------
def test_vocab_axis_only_for_embedding_names_with_a_vocabulary_size():
    sizes = {30, 31}
    assert vocab_axis("model.embed_tokens.weight", [30, 64], sizes) == 0
    assert vocab_axis("lm_head.weight", [31, 64], sizes) == 0
    assert vocab_axis("lm_head.bias", [31], sizes) == 0
    assert vocab_axis("transformer.wte.weight", [30, 64], sizes) == 0
    assert vocab_axis("gpt_neox.embed_out.weight", [30, 64], sizes) == 0
    assert vocab_axis("output.weight", [30, 64], sizes) == 0
    assert vocab_axis("lm_head.weight", [64, 31], sizes) == 1  # a transposed head
    assert vocab_axis("model.embed_tokens.weight", [32, 64], sizes) is None  # not an input's vocabulary size
    assert vocab_axis("model.layers.0.mlp.down_proj.weight", [30, 64], sizes) is None  # not an embedding
    assert vocab_axis("transformer.wpe.weight", [30, 64], sizes) is None  # positions
    assert vocab_axis("bert.embeddings.position_embeddings.weight", [30, 64], sizes) is None
    assert vocab_axis("encoder.layer.0.attention.output.dense.weight", [30, 64], sizes) is None


# ---- when no plan is needed, and the refusal ---------------------------------------------------------------
def test_same_vocabulary_needs_no_alignment(models, tmp_path):
    assert plan_vocab(None, None, [models["a"], models["a2"]]) is None
    assert plan_vocab("union", models["base"], [models["a"], models["a2"]]) is None  # nothing would change
    bare = save_model(tmp_path / "bare", SHARED + A_ONLY, 5, tokenizer=False)  # rows compared only
    assert plan_vocab(None, models["base"], [bare, models["a"]]) is None
    short = save_model(tmp_path / "short", SHARED, 6, tokenizer=False)
    with pytest.raises(ValueError, match=rf"{short}.* 28\b") as err:
        plan_vocab(None, None, [models["a"], short])
    assert "30 embedding rows" in str(err.value) and "tokenizer_source" in str(err.value)


def test_refusal_names_both_models_their_sizes_and_the_first_differing_token(models, tmp_path):
    a, b = models["a"], models["b"]
    va, vb = own_vocab(a), own_vocab(b)
    tok = next(t for t, i in sorted(va.items(), key=lambda kv: kv[1]) if vb.get(t) != i)
    with pytest.raises(ValueError) as err:
        plan_vocab(None, None, [a, b])
    msg = str(err.value)
    for part in (str(a), str(b), "30 tokens", "31 tokens", f"{tok!r} has id {va[tok]}", f"id {vb[tok]} in {b}"):
        assert part in msg, (part, msg)
    assert "tokenizer_source: base | union | model:<path>" in msg
    # a token one model lacks (same ids otherwise)
    c = save_model(tmp_path / "c", SHARED + ["apple", "zebra"], 7)
    with pytest.raises(ValueError, match=rf"'apricot' has id 29 in {a} but is not in {c}"):
        plan_vocab(None, None, [a, c])
    # with a base, the base is the reference
    with pytest.raises(ValueError, match=rf"models {b} and {a} "):
        plan_vocab(None, b, [a])
    with pytest.raises(ValueError, match="tokenizer_source 'unoin': not `base`, `union` nor an existing"):
        plan_vocab("unoin", None, [a, b])


# ---- base mode --------------------------------------------------------------------------------------------
def test_base_mode_merges_each_token_from_its_own_row_in_every_model(models, tmp_path):
    a, b = models["a"], models["b"]
    plan = plan_vocab("base", None, [a, b])  # no base_model: the first model's vocabulary
    va, vb = own_vocab(a), own_vocab(b)
    assert plan.vocab == va and plan.size == len(va) == 30
    merged = merge_with_plan(plan, [a, b], mean, tmp_path / "out", a)
    sa, sb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert sum(va[t] != vb[t] for t in SHARED) >= 20  # the shared words do sit at other ids
    for n in EMB:
        assert merged[n].shape[0] == 30
        for t in SHARED + SPECIALS:
            assert torch.allclose(merged[n][va[t]], (sa[n][va[t]] + sb[n][vb[t]]) / 2, atol=1e-7), (n, t)
        for t in A_ONLY:  # B lacks it: its row is A's (the only holder), so the mean is A's row
            assert torch.equal(merged[n][va[t]], sa[n][va[t]])
    assert torch.equal(merged["model.norm.weight"], (sa["model.norm.weight"] + sb["model.norm.weight"]) / 2)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(tmp_path / "out")).get_vocab() == va
    assert json.loads((tmp_path / "out" / "config.json").read_text())["vocab_size"] == 30


# ---- the fill rules ----------------------------------------------------------------------------------------
def test_fill_rules_only_holder_then_base_then_mean_then_zero(models, tmp_path):
    base, a, a2, b = models["base"], models["a"], models["a2"], models["b"]
    n = "model.embed_tokens.weight"
    st = {k: load_file(str(d / "model.safetensors"))[n] for k, d in models.items()}
    va, vb = own_vocab(a), own_vocab(b)

    plan = plan_vocab("union", base, [a, b])
    xa, xb, xbase = plan.align([st["a"], st["b"], st["base"]], 0, [str(a), str(b), str(base)])
    v = plan.vocab
    for t in A_ONLY:  # held by base and a: b takes the base's row, not the mean of the two
        assert torch.equal(xb[v[t]], st["base"][va[t]])
        assert not torch.allclose(xb[v[t]], (st["base"][va[t]] + st["a"][va[t]]) / 2)
    for t in B_ONLY:  # only b has it: everybody takes b's row
        assert torch.equal(xa[v[t]], st["b"][vb[t]]) and torch.equal(xbase[v[t]], st["b"][vb[t]])
    for t in SHARED:  # everybody has it: own rows
        assert torch.equal(xa[v[t]], st["a"][va[t]]) and torch.equal(xb[v[t]], st["b"][vb[t]])

    bare = save_model(tmp_path / "bare", SHARED + A_ONLY, 12, tokenizer=False)  # e.g. a merged-in adapter
    plan = plan_vocab("union", base, [bare, b])  # aligned as having the base's vocabulary (as mergekit)
    sbare = load_file(str(bare / "model.safetensors"))[n]
    xbare, _ = plan.align([sbare, st["b"]], 0, [str(bare), str(b)])
    assert torch.equal(xbare[: len(va)], sbare) and torch.equal(xbare[plan.vocab["cherry"]], st["b"][vb["cherry"]])

    plan = plan_vocab("union", None, [a, a2, b])  # no base: the mean of the holders
    xa, xa2, xb = plan.align([st["a"], st["a2"], st["b"]], 0, [str(a), str(a2), str(b)])
    for t in A_ONLY:
        assert torch.allclose(xb[plan.vocab[t]], (st["a"][va[t]] + st["a2"][va[t]]) / 2, atol=1e-7)

    d = save_model(tmp_path / "d", SHARED[:10] + ["durian", "apple"], 8)  # not an input: model:<path>
    plan = plan_vocab(f"model:{d}", None, [a, b])
    assert plan.vocab == own_vocab(d) and plan.size == 16
    xa, xb = plan.align([st["a"], st["b"]], 0, [str(a), str(b)])
    assert not xa[plan.vocab["durian"]].any() and not xb[plan.vocab["durian"]].any()  # nobody has it: zero
    assert torch.equal(xb[plan.vocab["apple"]], st["a"][va["apple"]])
    assert torch.equal(xb[plan.vocab["w3"]], st["b"][vb["w3"]])


def test_pad_to_multiple_of_fills_with_the_mean_row(models):
    a, b = models["a"], models["b"]
    n = "lm_head.weight"
    plan = plan_vocab("union", None, [a, b], pad_to_multiple_of=8)
    assert len(plan.vocab) == 33 and plan.size == 40
    xa, xb = plan.align([load_file(str(d / "model.safetensors"))[n] for d in (a, b)], 0, [str(a), str(b)])
    for x in (xa, xb):
        assert x.shape == (40, 64)
        assert torch.allclose(x[33:], x[:33].mean(0).expand(7, 64))


def test_padded_and_short_embeddings(models, tmp_path):
    a = models["a"]
    padded = save_model(tmp_path / "padded", SHARED + A_ONLY, 9, rows=35)  # 5 rows carry no token
    with pytest.raises(ValueError, match="different vocabulary sizes with the same tokenizer vocabulary"):
        plan_vocab(None, None, [a, padded])
    plan = plan_vocab("base", None, [padded, a])  # mergekit drops the padding rows
    assert plan.size == 30
    w = load_file(str(padded / "model.safetensors"))["model.embed_tokens.weight"]
    wa = load_file(str(a / "model.safetensors"))["model.embed_tokens.weight"]
    xp, xa = plan.align([w, wa], 0, [str(padded), str(a)])
    assert torch.equal(xp, w[:30]) and torch.equal(xa, wa)
    # an embedding shorter than its tokenizer: the tokens past its rows are not the model's
    short = save_model(tmp_path / "short", SHARED + A_ONLY, 10, rows=29)  # 'apricot' (id 29) has no row
    plan = plan_vocab("base", None, [short, a])
    assert plan.size == 29 and "apricot" not in plan.vocab
    plan.save_tokenizer(tmp_path / "tok")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert tok("w1 apricot").input_ids == [plan.vocab["w1"], plan.vocab["<unk>"]]


def test_align_rejects_unknown_inputs_and_wrong_rows(models):
    a, b = models["a"], models["b"]
    plan = plan_vocab("union", None, [a, b])
    w = load_file(str(a / "model.safetensors"))["lm_head.weight"]
    with pytest.raises(ValueError, match="is not one of the planned inputs"):
        plan.align([w], 0, [str(models["a2"])])
    with pytest.raises(ValueError, match=rf"{b}'s tensor has 30 rows along axis 0, but its embedding has 31"):
        plan.align([w, w], 0, [str(a), str(b)])


# ---- union: the saved model and tokenizer ---------------------------------------------------------------
def test_union_model_loads_and_its_logits_are_the_merge_by_token(models, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lifelong.testing import tiny_config

    a, b = models["a"], models["b"]
    out = tmp_path / "u"
    plan = plan_vocab("union", None, [a, b])
    merge_with_plan(plan, [a, b], mean, out, a)
    va, vb = own_vocab(a), own_vocab(b)
    tok = AutoTokenizer.from_pretrained(str(out))
    union = tok.get_vocab()
    assert {t: union[t] for t in va} == va  # the base's (first model's) ids are kept
    assert sorted(union[t] for t in B_ONLY) == [30, 31, 32]  # B's own words appended
    ids = tok("w3 banana apple w17 cherry").input_ids
    assert ids == [union[t] for t in ["w3", "banana", "apple", "w17", "cherry"]]

    # the expected merge, built row by row from each model's own ids
    sa, sb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    expected = {n: (sa[n] + sb[n]) / 2 for n in sa if n not in EMB}
    for n in EMB:
        rows = torch.empty(len(union), 64)
        for t, u in union.items():
            ra = sa[n][va[t]] if t in va else sb[n][vb[t]]
            rb = sb[n][vb[t]] if t in vb else sa[n][va[t]]
            rows[u] = (ra + rb) / 2
        expected[n] = rows
    ref = AutoModelForCausalLM.from_config(
        tiny_config("llama", vocab_size=33, tie_word_embeddings=False, num_hidden_layers=1)
    )
    ref.load_state_dict(expected)
    model = AutoModelForCausalLM.from_pretrained(str(out))
    x = torch.tensor([ids])
    with torch.no_grad():
        got, want = model(x).logits, ref.eval()(x).logits
    assert got.shape == (1, 5, 33)
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
    # the logit of a shared word is the merged head row for that word, whatever its id in A or B
    w5 = union["w5"]
    assert torch.allclose(got[0, :, w5], want[0, :, w5], atol=1e-5) and va["w5"] != vb["w5"]


# ---- through the engine and the CLI ----------------------------------------------------------------------
def merge_config(source, base, dirs, weights, method, **extra):
    from lifelong.merging.engine import MergeConfig

    cfg = {
        "merge_method": method,
        "models": [{"model": str(d), "parameters": {"weight": w}} for d, w in zip(dirs, weights)],
        "dtype": "float32",
        **extra,
    }
    if source is not None:
        cfg["tokenizer_source"] = source
    if base is not None:
        cfg["base_model"] = str(base)
    return cfg, MergeConfig.model_validate(cfg)


def task_arithmetic(weights):
    return lambda ts: ts[-1] + sum(w * (t - ts[-1]) for w, t in zip(weights, ts[:-1]))


def test_merge_models_refuses_then_aligns_like_the_plan(models, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lifelong.merging.engine import merge_models

    base, a, b = models["base"], models["a"], models["b"]
    _, cfg = merge_config(None, base, [a, b], [0.7, 0.5], "task_arithmetic")
    with pytest.raises(ValueError, match=rf"tokenizer_source.*models {base} and {b} have different vocabularies"):
        merge_models(cfg, tmp_path / "refused", quiet=True)
    assert not (tmp_path / "refused").exists()
    _, cfg = merge_config("union", base, [a, b], [0.7, 0.5], "task_arithmetic")
    out = merge_models(cfg, tmp_path / "e", quiet=True)
    want = merge_with_plan(
        plan_vocab("union", base, [a, b]), [a, b, base], task_arithmetic([0.7, 0.5]), tmp_path / "ref", base
    )
    got = load_file(str(Path(out) / "model.safetensors"))
    assert set(got) == set(want) and all(torch.allclose(got[n], want[n], atol=1e-6) for n in want)
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(str(tmp_path / "ref")).get_vocab()
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.config.vocab_size == 33 and model.get_input_embeddings().weight.shape == (33, 64)
    # a word only b has: a's and the base's rows are b's, so the merge keeps b's row
    vb = own_vocab(b)
    for n in EMB:
        assert torch.allclose(
            got[n][tok.get_vocab()["cherry"]], load_file(str(b / "model.safetensors"))[n][vb["cherry"]]
        )


def test_cli_merge_with_mergekit_tokenizer_block(models, tmp_path, capsys):
    from transformers import AutoTokenizer

    from lifelong.cli import main

    a, b = models["a"], models["b"]
    cfg, _ = merge_config(None, a, [a, b], [1.0, 1.0], "linear")
    y = tmp_path / "merge.yaml"
    y.write_text(yaml.safe_dump(cfg))
    assert main(["merge", str(y), "--out", str(tmp_path / "no")]) == 2
    assert "tokenizer_source: base | union | model:<path>" in capsys.readouterr().err
    y.write_text(yaml.safe_dump({**cfg, "tokenizer": {"source": "base"}}))
    assert main(["merge", str(y), "--out", str(tmp_path / "m")]) == 0
    assert AutoTokenizer.from_pretrained(str(tmp_path / "m")).get_vocab() == own_vocab(a)
    got = load_file(str(tmp_path / "m" / "model.safetensors"))["lm_head.weight"]
    sa, sb = (load_file(str(d / "model.safetensors"))["lm_head.weight"] for d in (a, b))
    va, vb = own_vocab(a), own_vocab(b)
    assert got.shape == (30, 64)
    assert torch.allclose(got[va["w9"]], (sa[va["w9"]] + sb[vb["w9"]]) / 2, atol=1e-7)


# ---- parity with mergekit (skipped without it) ---------------------------------------------------------
CASES = {  # source, base, models, weights, method, pad_to_multiple_of
    "union-linear": ("union", None, ["a", "b"], [1.0, 1.0], "linear", None),
    # mergekit without base_model takes the base vocabulary from an arbitrary model (a set's first):
    # name the base, listed under models as mergekit configs do
    "base-linear": ("base", "a", ["a", "b"], [0.3, 0.7], "linear", None),
    "union-linear-3-no-base": ("union", None, ["a", "a2", "b"], [1.0, 2.0, 1.0], "linear", None),
    "union-task_arithmetic": ("union", "base", ["a", "b"], [0.7, 0.5], "task_arithmetic", None),
    "base-task_arithmetic-padded-base": ("base", "padded", ["a", "b"], [1.0, 1.0], "task_arithmetic", None),
    "union-linear-pad8": ("union", None, ["a", "b"], [1.0, 1.0], "linear", 8),
}


def run_mergekit(cfg: dict, out: Path) -> None:
    path = out.parent / f"{out.name}.yml"
    path.write_text(yaml.safe_dump(cfg))
    subprocess.run(
        [str(MERGEKIT), str(path), str(out), "--lazy-unpickle", "--no-cuda", "--allow-crimes"],
        check=True,
        capture_output=True,
        timeout=300,
    )


@pytest.mark.slow  # one mergekit subprocess each (5-13 s)
@pytest.mark.skipif(not MERGEKIT.exists(), reason="mergekit is not installed at /tmp/mkvenv")
@pytest.mark.parametrize("case", list(CASES))
def test_matches_mergekit(models, tmp_path, case):
    from transformers import AutoTokenizer

    source, base_name, names, weights, method, pad = CASES[case]
    if "padded" in (base_name, *names) and "padded" not in models:
        models["padded"] = save_model(models["a"].parent / "padded", SHARED + A_ONLY, 11, rows=35)
    dirs = [models[k] for k in names]
    base = models[base_name] if base_name else None
    cfg = {
        "merge_method": method,
        "models": [{"model": str(d), "parameters": {"weight": w}} for d, w in zip(dirs, weights)],
        "dtype": "float32",
    }
    cfg.update({"tokenizer": {"source": source, "pad_to_multiple_of": pad}} if pad else {"tokenizer_source": source})
    if base is not None:
        cfg["base_model"] = str(base)
    run_mergekit(cfg, tmp_path / "mk")

    plan = plan_vocab(source, base, dirs, pad_to_multiple_of=pad)
    if pad:  # the engine does not take tokenizer.pad_to_multiple_of: the plan through the reference driver
        combine = lambda ts: sum(w * t for w, t in zip(weights, ts)) / sum(weights)  # noqa: E731
        ours = merge_with_plan(plan, dirs + ([base] if base else []), combine, tmp_path / "ours", base or dirs[0])
    else:
        from lifelong.merging.engine import MergeConfig, merge_models

        merge_models(MergeConfig.model_validate(cfg), tmp_path / "ours", quiet=True)
        ours = load_file(str(tmp_path / "ours" / "model.safetensors"))
    theirs = load_file(str(tmp_path / "mk" / "model.safetensors"))
    mk_vocab = AutoTokenizer.from_pretrained(str(tmp_path / "mk")).get_vocab()
    assert set(mk_vocab) == set(plan.vocab) == set(AutoTokenizer.from_pretrained(str(tmp_path / "ours")).get_vocab())
    if source == "base":
        assert mk_vocab == plan.vocab
    by_token = [mk_vocab[t] for t, _ in sorted(plan.vocab.items(), key=lambda kv: kv[1])]
    by_token = torch.tensor(by_token + list(range(len(by_token), plan.size)))  # then the padding rows
    assert set(theirs) == set(ours)
    worst = 0.0
    for n, t in ours.items():
        other = theirs[n][by_token] if n in EMB else theirs[n]  # mergekit's union ids vary run to run
        assert t.shape == other.shape, n
        worst = max(worst, float((t - other).abs().max()))
    assert worst <= 1e-6, worst
    mk_cfg = json.loads((tmp_path / "mk" / "config.json").read_text())
    assert mk_cfg["vocab_size"] == json.loads((tmp_path / "ours" / "config.json").read_text())["vocab_size"]
    print(f"{case}: max abs diff vs mergekit {worst:.2e}")
