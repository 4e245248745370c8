"""Second-moment statistics of keys, C = E[k k^T], where k is the input of a layer's MLP output projection
over the tokens of a text corpus (ROME: C^-1 makes the rank-one update touch the edited key's direction
least-squares-optimally for all other keys; MEMIT: lambda * C is the preserved-memory term).

Computed once and cached on disk (`$LIFELONG_CACHE/edit_stats/`), keyed by the model (a hash of every weight
up to the layer, so a fine-tuned model gets its own statistics), the layer, the corpus contents and the
token budget. Several layers are collected in one pass; the forward pass stops after the deepest one.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from pydantic import Field

from lifelong.config import DataConfig, Strict
from lifelong.data.cache import cache_dir, content_key, tokenizer_fingerprint
from lifelong.editing.common import (
    device_of,
    layers_path,
    mlp_out,
    mlp_out_name,
    n_layers,
    pad_batch,
    pad_id,
    weights_fingerprint,
)


class StatsParams(Strict):
    corpus: DataConfig = Field(
        default_factory=lambda: DataConfig(
            hub="Salesforce/wikitext", subset="wikitext-103-raw-v1", split="train", streaming=True
        )
    )
    """Text the key statistics are collected over (rows with `text`): a file or a hub dataset. Default:
    Wikitext-103 from the hub, as in ROME and MEMIT (needs internet once; cached afterwards)."""
    tokens: int = Field(default=100_000, ge=100)
    """Token positions the statistics average over."""
    seq_len: int = Field(default=128, ge=8)
    """Documents are cut to this many tokens."""
    batch_size: int = Field(default=8, ge=1)


class _Stop(Exception):
    pass


def model_fingerprint(model: Any, upto_layer: int) -> str:
    """Hash of the weights that determine the keys at `upto_layer`: embeddings and layers 0..upto_layer,
    except that layer's MLP output projection (the edited weight does not change its own keys)."""
    prefix = layers_path(model) + "."
    edited = mlp_out_name(model, upto_layer)

    def skip(name: str) -> bool:
        return name == edited or (name.startswith(prefix) and int(name[len(prefix) :].split(".")[0]) > upto_layer)

    return weights_fingerprint(model, skip)


def _texts(corpus: DataConfig) -> Iterator[str]:
    from lifelong.data.sources import iter_rows

    rows = iter_rows(corpus)
    try:
        first = [next(rows)]
    except StopIteration:
        first = []
    except ValueError:
        raise
    except Exception as e:  # network, missing dataset: say what to do instead
        raise ValueError(
            f"cannot read the key-statistics corpus (hub dataset {corpus.hub!r}): "
            f"{type(e).__name__}: {str(e)[:200]}; offline, set `stats.corpus.path` to a local text "
            "file (.txt, or .jsonl with a `text` field)"
        ) from None
    for row, where in itertools.chain(first, rows):  # still one row at a time
        t = row.get("text")
        if t is None:
            raise ValueError(f"{where}: statistics corpus rows need a 'text' field (rename with corpus.columns)")
        if str(t).strip():
            yield str(t)


def _path(key: str) -> Path:
    return cache_dir() / "edit_stats" / f"{key}.safetensors"


def second_moments(
    model: Any, tok: Any, layers: list[int], p: StatsParams, log: Optional[dict] = None
) -> dict[int, torch.Tensor]:
    """C for each layer (d_in x d_in, float32), from the cache or computed in one pass over the corpus.
    `log` (if given) receives `hits`, `computed` and `seconds`."""
    import time

    from safetensors.torch import load_file, save_file

    t0 = time.perf_counter()
    layers = sorted({lay % n_layers(model) for lay in layers})
    corpus_key = content_key(p.corpus.model_dump(exclude={"weight"}), _corpus_mtime(p.corpus))
    keys = {
        lay: content_key(
            "edit-stats-v1",
            model_fingerprint(model, lay),
            tokenizer_fingerprint(tok),
            lay,
            corpus_key,
            p.tokens,
            p.seq_len,
        )
        for lay in layers
    }
    out: dict[int, torch.Tensor] = {}
    for lay, key in keys.items():
        try:
            out[lay] = load_file(str(_path(key)))["mom2"]
        except Exception:  # missing or unreadable: recompute
            pass
    todo = [lay for lay in layers if lay not in out]
    if log is not None:
        log.update(hits=len(layers) - len(todo), computed=len(todo))
    if todo:
        for lay, c in _collect(model, tok, todo, p).items():
            out[lay] = c
            path = _path(keys[lay])
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
                save_file({"mom2": c.contiguous()}, str(tmp), metadata={"layer": str(lay), "tokens": str(p.tokens)})
                os.replace(tmp, path)
            except OSError:
                pass  # a read-only cache only costs time
    if log is not None:
        log["seconds"] = time.perf_counter() - t0
    return out


def _corpus_mtime(corpus: DataConfig) -> Any:
    """Content identity of a file corpus (size and a hash of its bytes); hub corpora are named by id."""
    if corpus.path and Path(corpus.path).is_file():
        h = hashlib.blake2b(digest_size=16)
        with open(corpus.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    return None


def _collect(model: Any, tok: Any, layers: list[int], p: StatsParams) -> dict[int, torch.Tensor]:
    device = device_of(model)
    sums: dict[int, torch.Tensor] = {}
    count = 0
    last = max(layers)
    handles = []

    def make(lay: int) -> Any:
        def hook(m: Any, args: Any) -> None:
            k = args[0].detach().float()
            k = k[mask_now[0].bool()]  # real tokens only
            s = k.T @ k
            sums[lay] = sums[lay] + s if lay in sums else s
            if lay == last:
                raise _Stop

        return hook

    mask_now: list[torch.Tensor] = [torch.zeros(0)]
    for lay in layers:
        handles.append(mlp_out(model, lay).register_forward_pre_hook(make(lay)))
    batch: list[list[int]] = []
    try:
        with torch.no_grad():
            texts = _texts(p.corpus)
            while count < p.tokens:
                doc = next(texts, None)
                if doc is not None:
                    ids = list(tok(doc)["input_ids"])[: p.seq_len]
                    if len(ids) > 1:
                        batch.append(ids[: max(2, min(len(ids), p.tokens - count - sum(map(len, batch))))])
                if batch and (len(batch) == p.batch_size or doc is None or count + sum(map(len, batch)) >= p.tokens):
                    ids_t, mask = pad_batch(batch, pad_id(tok), device)
                    mask_now[0] = mask
                    try:
                        model(input_ids=ids_t, attention_mask=mask)
                    except _Stop:
                        pass
                    count += int(mask.sum())
                    batch = []
                if doc is None:
                    break
    finally:
        for h in handles:
            h.remove()
    if count == 0:
        raise ValueError("the statistics corpus has no text; point `stats.corpus` at a text file or dataset")
    return {lay: s / count for lay, s in sums.items()}
