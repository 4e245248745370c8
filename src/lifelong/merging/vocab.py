"""Vocabulary alignment for merges of models whose tokenizers differ (mergekit's `tokenizer_source`).

Models whose tokenizers map tokens to different ids cannot be merged row by row: row 7 of one embedding
is not row 7 of the other. Without `tokenizer_source` such a merge is refused, naming the two models,
their vocabulary sizes and the first token that differs. With it, every vocabulary-indexed tensor
(embeddings, output heads, output biases) of every input is permuted to one output vocabulary before the
merge method sees it, the way mergekit 0.1.5 does (`mergekit/tokenizer/build.py`, `embed.py`):

- `base`: the output vocabulary is the base model's (the first model's without `base_model`), with the
  tokens whose id is at or past its embedding rows removed.
- `union`: the base's vocabulary, then every token of the other models that the base lacks, appended in
  model order (each model's tokens by ascending id; mergekit appends them in hash-map order, so its ids
  for the appended tokens vary from run to run: compare by token), then the models' added/special tokens.
- `model:<path>` (or mergekit's bare path): that model's tokenizer as is.

Each input's row for a token is its own row when it has the token. When it lacks it, the row is filled
as mergekit fills it: the row of the only model that has the token; else the base's row when the base is
an input and has it; else the mean of the rows of the inputs that have it; zero when none has it. With
`pad_to_multiple_of`, the rows past the vocabulary hold the mean of each input's vocabulary rows.
Embedding rows past a tokenizer's length (padding) carry no token: with a tokenizer_source they are
dropped (the output has exactly as many rows as the output vocabulary, as in mergekit), without one a
padded model merges only with models padded alike.

API used by the engine:

    plan = plan_vocab(source, base_dir, model_dirs)   # None when every tokenizer has the same vocabulary
    plan.size                                         # rows of the output vocabulary
    plan.align(tensors, axis, labels)                 # per-model tensors permuted to the output vocabulary
    plan.save_tokenizer(out_dir)                      # the output tokenizer files (and config vocab_size)
    vocab_axis(name, shape, vocab_sizes)              # the vocabulary axis of a tensor, or None
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
)
"""Files that make a directory's tokenizer (any one present: the model has a tokenizer)."""

HINT = (
    "set `tokenizer_source: base | union | model:<path>` in the merge config to align the vocabularies "
    "(base: the base model's tokens; union: every model's tokens; model:<path>: that model's tokenizer)"
)

# Module names of vocabulary-indexed tensors (mergekit's architecture definitions mark these with
# `vocabulary_axis: 0`): input embeddings, output heads and their biases.
_VOCAB_MODULES = {
    "embed_tokens",
    "lm_head",
    "wte",
    "embed_out",
    "embed_in",
    "word_embeddings",
    "tok_embeddings",
    "output_layer",
    "vocab_projector",
}
_VOCAB_NAMES = {"output.weight", "shared.weight", "cls.predictions.bias", "cls.predictions.decoder.weight"}


def vocab_axis(name: str, shape: list[int], vocab_sizes: set[int]) -> Optional[int]:
    """The axis of tensor `name` indexed by token ids, or None. A tensor is vocabulary-indexed when its name
    is an embedding or output head (`embed_tokens`, `lm_head`, `wte`, `embed_out`, `embed_in`,
    `word_embeddings`, `tok_embeddings`, `output_layer`, `vocab_projector`, a top-level `output.weight` /
    `shared.weight`, `backbone.embeddings.weight`, BERT's `cls.predictions`) and an axis has a size in
    `vocab_sizes` (the inputs' embedding rows): axis 0 when it fits (every architecture mergekit knows),
    else the first axis that does. Position, token-type and other embeddings are not vocabulary-indexed."""
    parts = name.split(".")
    modules = parts[:-1] if parts and parts[-1] in ("weight", "bias") else parts
    hit = bool(set(modules) & _VOCAB_MODULES) or name in _VOCAB_NAMES or name.endswith(".shared.weight")
    hit = hit or (bool(modules) and modules[-1] == "embeddings" and parts[-1] == "weight")
    if not hit or not shape:
        return None
    for axis, size in enumerate(shape):
        if size in vocab_sizes:
            return axis
    return None


@dataclass
class _Input:
    label: str
    """The directory as given (str of the Path)."""
    path: Path
    rows: int
    """Embedding rows (config vocab_size; else the embedding tensor's rows)."""
    tokenizer: Any = None
    vocab: Optional[dict[str, int]] = None
    """token -> id, None when the directory has no tokenizer files."""


def _key(p: Path | str) -> str:
    return str(Path(p).expanduser().resolve())


def _embedding_rows(d: Path) -> int:
    cfg_file = d / "config.json"
    if cfg_file.exists():
        cfg = json.loads(cfg_file.read_text())
        for c in (cfg, cfg.get("text_config") or {}):
            if isinstance(c.get("vocab_size"), int):
                return int(c["vocab_size"])
    from safetensors import safe_open

    for f in sorted(d.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for n in st.keys():
                shape = list(st.get_slice(n).get_shape())
                if len(shape) == 2 and vocab_axis(n, shape, {shape[0]}) == 0:
                    return shape[0]
    raise ValueError(f"{d}: no vocab_size in config.json and no embedding tensor found; is it a model directory?")


def _load_tokenizer(d: Path) -> Any:
    if not any((d / f).exists() for f in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(d), trust_remote_code=False)
    except Exception as err:  # noqa: BLE001 - any loader failure is reported with the directory
        raise ValueError(
            f"{d}: its tokenizer files do not load with AutoTokenizer (trust_remote_code is never used): "
            f"{type(err).__name__}: {err}"
        ) from None


def _first_difference(a: _Input, b: _Input) -> Optional[str]:
    """Why a and b cannot be merged row by row, or None."""
    if a.vocab is not None and b.vocab is not None and a.vocab != b.vocab:
        assert a.tokenizer is not None and b.tokenizer is not None
        why = ""
        for tok, i in sorted(a.vocab.items(), key=lambda kv: kv[1]):
            j = b.vocab.get(tok)
            if j != i:
                why = f"token {tok!r} has id {i} in {a.label} but " + (
                    f"id {j} in {b.label}" if j is not None else f"is not in {b.label}"
                )
                break
        if not why:
            tok, j = min(((t, j) for t, j in b.vocab.items() if t not in a.vocab), key=lambda kv: kv[1])
            why = f"token {tok!r} (id {j} in {b.label}) is not in {a.label}"
        return (
            f"models {a.label} and {b.label} have different vocabularies ({a.label}: {len(a.vocab)} tokens, "
            f"{a.rows} embedding rows; {b.label}: {len(b.vocab)} tokens, {b.rows} embedding rows): {why}"
        )
    if a.rows != b.rows:
        same = " with the same tokenizer vocabulary" if a.vocab is not None and b.vocab is not None else ""
        return (
            f"models {a.label} and {b.label} have different vocabulary sizes{same}: {a.label} has "
            f"{a.rows} embedding rows, {b.label} has {b.rows}"
        )
    return None


def _stripped(tok: Any, rows: int, label: str) -> Any:
    """The tokenizer without the tokens whose id is at or past the embedding rows (mergekit's
    `get_stripped_tokenizer`); the tokenizer itself when it has none."""
    drop = {t for t, i in tok.get_vocab().items() if i >= rows}
    if not drop:
        return tok
    from transformers import AutoTokenizer

    if not getattr(tok, "is_fast", False):
        raise ValueError(
            f"{label}: its tokenizer has tokens past its {rows} embedding rows and is not a fast tokenizer"
        )
    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        spec_file, cfg_file = Path(d) / "tokenizer.json", Path(d) / "tokenizer_config.json"
        spec = json.loads(spec_file.read_text())
        kind = spec["model"]["type"]
        if kind not in ("BPE", "WordLevel", "WordPiece"):
            raise ValueError(
                f"{label}: its {kind} tokenizer has {len(drop)} tokens past its {rows} embedding rows; only "
                "BPE, WordLevel and WordPiece tokenizers can be stripped of them"
            )
        spec["added_tokens"] = [e for e in spec.get("added_tokens", []) if e["id"] < rows]
        spec["model"]["vocab"] = {t: i for t, i in spec["model"]["vocab"].items() if t not in drop}
        if kind == "BPE":
            spec["model"]["merges"] = [
                m for m in spec["model"]["merges"] if not set(m.split(" ") if isinstance(m, str) else m) & drop
            ]
        spec_file.write_text(json.dumps(spec))
        if cfg_file.exists():
            cfg = json.loads(cfg_file.read_text())
            if isinstance(cfg.get("added_tokens_decoder"), dict):
                cfg["added_tokens_decoder"] = {i: v for i, v in cfg["added_tokens_decoder"].items() if int(i) < rows}
            cfg_file.write_text(json.dumps(cfg))
        return AutoTokenizer.from_pretrained(d, trust_remote_code=False)


def _copy(tok: Any) -> Any:
    """An independent copy of a tokenizer (saved and reloaded)."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        return AutoTokenizer.from_pretrained(d, trust_remote_code=False)


def _union(ref: _Input, ref_tok: Any, others: list[_Input]) -> Any:
    """The base's tokenizer plus every token of the others it lacks (mergekit's `build_union_tokenizer`):
    plain tokens first (model order, ascending id), then the added/special tokens (first settings win)."""
    new_plain: dict[str, None] = {}
    added: dict[str, Any] = {}
    for m in [ref] + others:
        if m.vocab is None:
            continue
        special = {info.content for info in m.tokenizer.added_tokens_decoder.values()}
        for tok, i in sorted(m.vocab.items(), key=lambda kv: kv[1]):
            if i < m.rows and tok not in special:
                new_plain.setdefault(tok)
        for i, info in sorted(m.tokenizer.added_tokens_decoder.items()):
            if i < m.rows:
                added.setdefault(info.content, info)
    out = _copy(ref_tok)
    have = out.get_vocab()
    plain = [t for t in new_plain if t not in added and t not in have]
    if plain:
        out.add_tokens(plain)
    if added:
        out.add_tokens(list(added.values()))
    return out


@dataclass
class VocabPlan:
    """How every input's vocabulary-indexed tensors map to the output vocabulary."""

    source: str
    """"base", "union" or "model:<path>"."""
    tokenizer: Any
    """The output tokenizer."""
    vocab: dict[str, int]
    """Output token -> id."""
    size: int
    """Rows of the output vocabulary (len of the output vocabulary, padded to `pad_to_multiple_of`)."""
    inputs: dict[str, _Input]
    """Resolved directory -> input."""
    base_key: Optional[str]
    perms: dict[str, torch.Tensor] = field(default_factory=dict)
    """Resolved directory -> for each output id below `n_tokens`, that input's row, or -1 (lacks it)."""
    n_tokens: int = 0
    """Rows carrying a token (the rest, up to `size`, is padding)."""

    @property
    def vocab_sizes(self) -> set[int]:
        """Every input's embedding rows (pass to `vocab_axis`)."""
        return {m.rows for m in self.inputs.values()}

    def rows_of(self, label: str | Path) -> int:
        """Embedding rows of the input `label`."""
        return self._input(label).rows

    def _input(self, label: str | Path) -> _Input:
        k = _key(label)
        if k not in self.inputs:
            known = ", ".join(m.label for m in self.inputs.values())
            raise ValueError(f"vocabulary alignment: {label} is not one of the planned inputs ({known})")
        return self.inputs[k]

    def align(self, tensors: list[torch.Tensor], axis: int, labels: list[str]) -> list[torch.Tensor]:
        """Each input's same-named tensor permuted to the output vocabulary along `axis`.

        `tensors[i]` is the tensor of the input directory `labels[i]`; a label is one of the directories
        given to `plan_vocab` (as `str(path)`; compared by resolved path), in the engine's order: the
        models in `model_dirs` order, then the base last if given. A directory listed twice (the base
        also under `models:`) is one input: its tensors must be equal and count once for the fill. Only
        the inputs given take part in the fill (mergekit fills from the tensors gathered for that weight).
        Returns one tensor per input, in the same order, with `size` rows along `axis` and every other
        dimension unchanged, in the inputs' promoted dtype."""
        if len(tensors) != len(labels) or not tensors:
            raise ValueError(f"vocabulary alignment: {len(tensors)} tensors for {len(labels)} labels")
        keys: list[str] = []
        views: dict[str, torch.Tensor] = {}
        dtype = tensors[0].dtype
        for t, label in zip(tensors, labels):
            m = self._input(label)
            k = _key(m.path)
            if axis < 0 or axis >= t.ndim:
                raise ValueError(f"vocabulary alignment: axis {axis} out of range for {label}'s shape {list(t.shape)}")
            if t.shape[axis] != m.rows:
                raise ValueError(
                    f"vocabulary alignment: {label}'s tensor has {t.shape[axis]} rows along axis {axis}, "
                    f"but its embedding has {m.rows} (config vocab_size)"
                )
            dtype = torch.promote_types(dtype, t.dtype)
            if k not in views:
                keys.append(k)
                views[k] = t.movedim(axis, 0)
        rest = views[keys[0]].shape[1:]
        for k in keys:
            if views[k].shape[1:] != rest:
                raise ValueError(
                    f"vocabulary alignment: non-vocabulary dimensions differ: {self.inputs[k].label} has "
                    f"{list(views[k].shape[1:])}, {self.inputs[keys[0]].label} has {list(rest)}"
                )
        n = self.n_tokens
        own = {k: views[k].to(dtype).index_select(0, self.perms[k].clamp(min=0)) for k in keys}
        present = {k: self.perms[k] >= 0 for k in keys}
        count = torch.stack([present[k] for k in keys]).sum(0)
        lacking = (count < len(keys)).nonzero().squeeze(1)  # output ids some input lacks
        fill = torch.zeros((len(lacking), *rest), dtype=dtype)
        if len(lacking):
            # the only holder's row (a mean of one), else the base's row when the base is an input and has
            # the token, else the mean of the holders' rows (summed from zero in input order, as mergekit
            # does); zero when nobody has it
            for k in keys:
                fill = fill + torch.where(_expand(present[k][lacking], rest), own[k][lacking], 0)
            fill = fill / _expand(count[lacking].clamp(min=1).to(dtype), rest)
            b = self.base_key
            if b is not None and b in views:
                use_base = present[b][lacking] & (count[lacking] >= 2)
                fill = torch.where(_expand(use_base, rest), own[b][lacking], fill)
        by_key: dict[str, torch.Tensor] = {}
        for k in keys:
            out = torch.empty((self.size, *rest), dtype=dtype)
            out[:n] = own[k]
            lack = ~present[k][lacking]
            out[lacking[lack]] = fill[lack]
            if self.size > n:  # pad_to_multiple_of: the mean of the vocabulary rows
                out[n:] = out[: len(self.vocab)].mean(0)
            by_key[k] = out.movedim(0, axis)
        return [by_key[_key(self._input(label).path)] for label in labels]

    def save_tokenizer(self, out_dir: str | Path) -> None:
        """Write the output tokenizer into `out_dir` (replacing any tokenizer files there, e.g. the base's
        copied with its config) and, when `out_dir/config.json` exists, set its `vocab_size` (and
        `text_config.vocab_size` if present) to `size`, as mergekit does: call it after the config is
        written. The saved tokenizer loads with `AutoTokenizer.from_pretrained(out_dir)`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for f in TOKENIZER_FILES:
            (out / f).unlink(missing_ok=True)
        self.tokenizer.save_pretrained(str(out))
        cfg_file = out / "config.json"
        if cfg_file.exists():
            cfg = json.loads(cfg_file.read_text())
            if "vocab_size" in cfg or "text_config" not in cfg:
                cfg["vocab_size"] = self.size
            if isinstance(cfg.get("text_config"), dict) and "vocab_size" in cfg["text_config"]:
                cfg["text_config"]["vocab_size"] = self.size
            cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _expand(mask: torch.Tensor, rest: torch.Size) -> torch.Tensor:
    return mask.reshape(mask.shape + (1,) * len(rest))


def _parse_source(source: str) -> str:
    s = source.strip()
    if s in ("base", "union"):
        return s
    path = s[len("model:") :] if s.startswith("model:") else s
    if not Path(path).expanduser().is_dir():
        raise ValueError(
            f"tokenizer_source {source!r}: not `base`, `union` nor an existing model directory "
            "(`model:<path>` or a path)"
        )
    return "model:" + _key(path)


def plan_vocab(
    source: Optional[str],
    base_dir: Optional[Path],
    model_dirs: list[Path],
    *,
    pad_to_multiple_of: Optional[int] = None,
) -> Optional[VocabPlan]:
    """The vocabulary alignment of a merge, or None when no alignment is needed.

    Loads each input's tokenizer (AutoTokenizer, never trust_remote_code; a directory without tokenizer
    files is compared by its embedding rows only, and aligned as having the reference's vocabulary, as
    mergekit assumes). The reference is the base, else the first model. Returns None when every tokenizer
    maps the same tokens to the same ids and every embedding has the same rows (and, with a `source`,
    those rows are exactly the vocabulary, so aligning would change nothing). Otherwise, without a
    `source`: ValueError naming the two models, their sizes and the first token whose id differs (or
    that one lacks), and how to set `tokenizer_source`. `source`: "base", "union", "model:<path>" (or
    mergekit's bare path). `pad_to_multiple_of`: mergekit's `tokenizer.pad_to_multiple_of`."""
    if not model_dirs:
        raise ValueError("vocabulary alignment: no models")
    if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
        raise ValueError(f"tokenizer pad_to_multiple_of: {pad_to_multiple_of} must be a positive integer")
    kind = _parse_source(source) if source is not None else None
    inputs: dict[str, _Input] = {}
    for d in list(model_dirs) + ([base_dir] if base_dir is not None else []):
        k = _key(d)
        if k not in inputs:
            p = Path(d)
            tok = _load_tokenizer(p)
            inputs[k] = _Input(str(d), p, _embedding_rows(p), tok, tok.get_vocab() if tok is not None else None)
    ref_key = _key(base_dir) if base_dir is not None else _key(model_dirs[0])
    ref = inputs[ref_key]
    others = [m for k, m in inputs.items() if k != ref_key]

    why = None
    for m in others:
        why = _first_difference(ref, m)
        if why:
            break
    if why is None:  # the reference without a tokenizer: compare the others among themselves
        with_vocab = [m for m in inputs.values() if m.vocab is not None]
        for m in with_vocab[1:]:
            why = _first_difference(with_vocab[0], m)
            if why:
                break
    if why is None and kind is None:
        return None
    if kind is None:
        raise ValueError(f"{why}; {HINT}")

    if ref.vocab is None:
        role = "base" if base_dir is not None else "first model"
        raise ValueError(
            f"tokenizer_source {source!r}: the {role} {ref.label} has no tokenizer files "
            f"({', '.join(TOKENIZER_FILES[:2])}, ...); the output vocabulary is built from it"
        )
    ref_tok = _stripped(ref.tokenizer, ref.rows, ref.label)
    ref_vocab = ref_tok.get_vocab()
    if kind == "base":
        out_tok = ref_tok
    elif kind == "union":
        out_tok = _union(ref, ref_tok, others)
    else:
        src = Path(kind[len("model:") :])
        out_tok = inputs[_key(src)].tokenizer if _key(src) in inputs else _load_tokenizer(src)
        if out_tok is None:
            raise ValueError(f"tokenizer_source {source!r}: {src} has no tokenizer files")
    vocab = out_tok.get_vocab()
    n_tokens = max(len(vocab), max(vocab.values()) + 1)
    size = n_tokens
    if pad_to_multiple_of and size % pad_to_multiple_of:
        size += pad_to_multiple_of - size % pad_to_multiple_of
    perms = {}
    for k, m in inputs.items():
        mv = ref_vocab if m.vocab is None else (ref_vocab if k == ref_key else m.vocab)
        rows = [-1] * n_tokens
        for tok, new in vocab.items():
            old = mv.get(tok)
            if old is not None and old < m.rows:  # a token id past the embedding: lacking (mergekit: padding)
                rows[new] = old
        perms[k] = torch.tensor(rows, dtype=torch.long)
    if why is None and size == ref.rows and all(torch.equal(p, torch.arange(size)) for p in perms.values()):
        return None  # same vocabulary, no padding rows dropped or added: aligning would change nothing
    return VocabPlan(
        source=kind,
        tokenizer=out_tok,
        vocab=vocab,
        size=size,
        inputs=inputs,
        base_key=_key(base_dir) if base_dir is not None else None,
        perms=perms,
        n_tokens=n_tokens,
    )
