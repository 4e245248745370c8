"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", section 2): where in
the network a model recalls a fact, and so which MLP layer ROME / MEMIT should edit.

For each fact (a prompt with the subject, the true object o) the model gets right:
- clean run: P_clean(o), the probability of o's first token after the prompt, and every hidden state;
- corrupted runs: Gaussian noise added to the subject tokens' input embeddings (std = `noise` x the
  standard deviation of the embeddings of the facts' subject tokens, 3 as the paper), `samples` seeded
  noise draws, P_corrupted(o) averaged over them;
- restored runs: the corrupted runs with one clean state copied back in, at (layer, position):
  `hidden` = the layer's output (the residual stream), `mlp` / `attn` = the MLP / attention outputs of a
  window of `window` layers around the layer (the paper's w = 10: layers l - w//2 .. l + w - w//2 - 1,
  clipped to the model). The same noise draws serve every restoration (as the authors' code), so effects
  differ only by what was restored.
- indirect effect IE = P_restored(o) - P_corrupted(o); total effect TE = P_clean(o) - P_corrupted(o).

Averages over facts are taken per position group, as the paper's figure 2: first subject token, middle
subject tokens, last subject token, first subsequent token, further tokens, last token (a token may be in
two groups, e.g. a one-token subject is its first and last token; groups pool their tokens over facts).
Only facts whose object the model already produces greedily are used (the paper filters likewise).

Restorations are batched: one forward pass runs many (layer, position, noise sample) rows at once, and
only the last position's logits are computed. Positions before the subject are never corrupted, so
restoring them changes nothing; the figure's groups start at the first subject token and so does the
default `scope`. Results are cached on disk under `$LIFELONG_CACHE/trace/`, keyed by the weights, the
tokenizer, the facts and the settings: a model is traced once.

    from lifelong.editing.trace import trace, pick_layer, traced_layer
    out = trace(model, tok, facts)                      # every kind, every position group
    layer = pick_layer(model, tok, facts)               # ROME's layer
    layers = pick_layers(model, tok, facts, n=5)        # MEMIT's layers
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from lifelong.data import cache
from lifelong.data.edit_requests import EditRequest, encode, parse_request, subject_position, target_ids
from lifelong.editing.common import layer_module, mlp_out, n_layers, weights_fingerprint

KINDS = ("hidden", "mlp", "attn")
GROUPS = (
    "first subject token",
    "middle subject tokens",
    "last subject token",
    "first subsequent token",
    "further tokens",
    "last token",
)
LAST_SUBJECT = GROUPS.index("last subject token")
SCOPES = ("groups", "all", "last_subject")
"""Positions restored: `groups` every position from the first subject token on (what the figure uses),
`all` every position (those before the subject too), `last_subject` only the last subject token (what
picking a layer needs: one position instead of about ten)."""
FACTS_FILE = Path(__file__).parent / "data" / "trace_facts.jsonl"
VERSION = "trace-v1"


# ---- facts -----------------------------------------------------------------------------------------
@dataclass
class Fact:
    prompt: str
    subject: str
    target: str
    id: Optional[str] = None
    where: str = "<fact>"

    @property
    def text(self) -> str:
        return self.prompt.replace("{}", self.subject)

    def key(self) -> list:
        return [self.prompt, self.subject, self.target]


_STAND_IN = "\u2400"  # parse_request needs a target_new; tracing does not use it


def parse_fact(row: Any, where: str) -> Fact:
    """A fact from a row of the edit request format; `target_true` (the object the model should know) is
    required, `target_new` is not used. Errors name `where` and the field."""
    if isinstance(row, EditRequest):
        if row.target_true is None:
            raise ValueError(_no_true(row.where))
        return Fact(row.prompt, row.subject, row.target_true, row.id, row.where)
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a fact must be a JSON object in the edit request format, got {row!r}")
    if row.get("target_true") is None:
        raise ValueError(_no_true(where))
    req = parse_request(row if row.get("target_new") is not None else {**row, "target_new": _STAND_IN}, where)
    return Fact(req.prompt, req.subject, req.target_true or "", req.id, where)


def _no_true(where: str) -> str:
    return (
        f"{where}: field 'target_true' is missing; causal tracing measures the probability of the true "
        'object, so every fact needs it (e.g. "target_true": "Paris"; target_new is not needed)'
    )


def load_facts(source: Any = None) -> list[Fact]:
    """Facts from a jsonl/csv path, a list of rows or EditRequests, or (None) the shipped common facts."""
    if source is None:
        source = FACTS_FILE
    if isinstance(source, (str, Path)):
        from lifelong.config import DataConfig
        from lifelong.data.sources import load_rows

        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{path}: no such facts file")
        rows = load_rows(DataConfig(path=str(path)))
        if not rows.rows:
            raise ValueError(f"{rows.source}: no facts")
        return [parse_fact(r, w) for r, w in zip(rows.rows, rows.where)]
    if isinstance(source, Fact):
        return [source]
    facts = [r if isinstance(r, Fact) else parse_fact(r, f"fact {i}") for i, r in enumerate(source)]
    if not facts:
        raise ValueError("no facts to trace")
    return facts


# ---- model parts ---------------------------------------------------------------------------------------
def attn_module(model: Any, layer: int) -> Any:
    """The attention block of a layer: the parent of its first attention projection in the module map."""
    from lifelong.models.arch import arch_of

    proj = arch_of(model)["attention"][0]
    block = layer_module(model, layer)
    for name, _ in block.named_modules():
        if name == proj or name.endswith("." + proj):
            parent = name.rsplit(".", 1)[0] if "." in name else ""
            return block.get_submodule(parent) if parent else block
    raise ValueError(f"no attention projection {proj!r} in layer {layer}")


def modules_of(model: Any, kind: str) -> list[Any]:
    """Per layer, the module whose output a restoration of `kind` copies."""
    get: Callable[[Any, int], Any] = {"hidden": layer_module, "mlp": mlp_out, "attn": attn_module}[kind]
    return [get(model, lay) for lay in range(n_layers(model))]


def window_layers(layer: int, window: int, total: int) -> list[int]:
    """The layers restored together for the window centred on `layer` (the paper's convention)."""
    return list(range(max(0, layer - window // 2), min(total, layer + window - window // 2)))


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _replace_first(out: Any, h: torch.Tensor) -> Any:
    return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h


@contextlib.contextmanager
def _hooks(pairs: list[tuple[Any, Callable]]) -> Iterator[None]:
    handles = [m.register_forward_hook(fn) for m, fn in pairs]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# ---- one fact ---------------------------------------------------------------------------------------------
@dataclass
class _Prepared:
    fact: Fact
    ids: list[int]
    start: int  # first subject token
    last: int  # last subject token
    target: list[int]


def _prepare(tok: Any, fact: Fact) -> _Prepared:
    ids, last = subject_position(tok, fact.prompt, fact.subject, fact.where)
    before = fact.prompt.split("{}", 1)[0]
    head = encode(tok, before.rstrip())
    start = len(head) if ids[: len(head)] == head else next(i for i, (a, b) in enumerate(zip(ids, head)) if a != b)
    return _Prepared(fact, ids, min(start, last), last, target_ids(tok, fact.text, fact.target))


def _logits_kw(model: Any) -> dict:
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def _known(model: Any, tok: Any, p: _Prepared) -> tuple[bool, float, str]:
    """Whether greedy decoding after the prompt produces the object (every target token the argmax under
    teacher forcing), P(first object token), and what the model predicts first."""
    dev = next(model.parameters()).device
    x = torch.tensor([p.ids + p.target[:-1]], device=dev)
    with torch.no_grad():
        logits = model(input_ids=x).logits[0, len(p.ids) - 1 :].float()
    pred = logits.argmax(-1).tolist()
    prob = float(torch.softmax(logits[0], -1)[p.target[0]])
    return pred == p.target, prob, tok.decode([pred[0]])


def _noise_std(model: Any, prepared: list[_Prepared]) -> float:
    """Standard deviation of the input embeddings of the facts' subject tokens (the paper's reference)."""
    emb = model.get_input_embeddings()
    ids = torch.tensor([t for p in prepared for t in p.ids[p.start : p.last + 1]], device=emb.weight.device)
    with torch.no_grad():
        return float(emb(ids).float().std())


def _generator(seed: int, fact: Fact) -> torch.Generator:
    return torch.Generator().manual_seed(int(cache.content_key(seed, fact.key())[:12], 16))


def _positions(p: _Prepared, scope: str) -> list[int]:
    if scope == "last_subject":
        return [p.last]
    return list(range(0 if scope == "all" else p.start, len(p.ids)))


def _trace_fact(
    model: Any,
    p: _Prepared,
    kinds: Sequence[str],
    noise: float,
    samples: int,
    window: int,
    seed: int,
    scope: str,
    batch_size: int,
    advance: Callable[[int], None],
) -> dict:
    """Clean, corrupted and restored runs of one fact: per kind, the indirect effect at every traced
    (position, layer).

    A restoration that starts at layer a leaves layers 0..a-1 as in the plain corrupted run, so those
    layers are not run again: each batch (rows sorted by their first restored layer) takes their outputs
    from the corrupted run of the same noise draw and computes only the layers from its first restoration
    on (30-50% less work; the result is the same up to float rounding)."""
    dev = next(model.parameters()).device
    L = n_layers(model)
    T = len(p.ids)
    emb = model.get_input_embeddings()
    blocks = [layer_module(model, j) for j in range(L)]
    mods = {k: modules_of(model, k) for k in kinds}
    clean: dict[str, list[torch.Tensor]] = {k: [] for k in kinds}
    kw = _logits_kw(model)
    x1 = torch.tensor([p.ids], device=dev)

    def first_row(store: list[torch.Tensor]) -> Callable:
        return lambda m, a, out: store.append(_first(out)[0].detach())

    with torch.no_grad(), _hooks([(m, first_row(clean[k])) for k in kinds for m in mods[k]]):
        logits = model(input_ids=x1, **kw).logits[0, -1].float()
    p_clean = float(torch.softmax(logits, -1)[p.target[0]])

    draws = torch.randn(samples, p.last - p.start + 1, emb.weight.shape[1], generator=_generator(seed, p.fact))
    draws = (draws * noise).to(device=dev, dtype=emb.weight.dtype)
    which: list[torch.Tensor] = [torch.arange(samples, device=dev)]  # the noise draw of every row

    def corrupt(m: Any, a: Any, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, p.start : p.last + 1] += draws[which[0]]
        return out

    def prob(x: torch.Tensor, hooks: list[tuple[Any, Callable]]) -> torch.Tensor:
        with torch.no_grad(), _hooks([(emb, corrupt)] + hooks):
            out = model(input_ids=x, attention_mask=torch.ones_like(x), **kw).logits[:, -1].float()
        return torch.softmax(out, -1)[:, p.target[0]].cpu()

    # the plain corrupted runs, keeping every layer's output for the restored runs to start from
    corrupted: list[Any] = []
    p_corr_rows = prob(x1.expand(samples, T), [(b, lambda m, a, out: corrupted.append(out)) for b in blocks])
    p_corr = float(p_corr_rows.mean())
    advance(samples)

    positions = _positions(p, scope)
    specs = [(k, t, lay) for k in kinds for t in positions for lay in range(L)]

    def restored(spec: tuple[str, int, int]) -> list[int]:
        return [spec[2]] if spec[0] == "hidden" else window_layers(spec[2], window, L)

    rows = sorted(((i, s) for i in range(len(specs)) for s in range(samples)), key=lambda r: restored(specs[r[0]])[0])
    sums = torch.zeros(len(specs))
    for chunk in _chunks(rows, [restored(specs[i])[0] for i, _ in rows], batch_size):
        which[0] = torch.tensor([s for _, s in chunk], device=dev)
        put: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
        for r, (i, _) in enumerate(chunk):
            for lay in restored(specs[i]):
                at = put.setdefault((specs[i][0], lay), ([], []))
                at[0].append(r)
                at[1].append(specs[i][1])
        skip = min(restored(specs[i])[0] for i, _ in chunk)
        hooks = [(mods[k][lay], _put_back(clean[k][lay], r, t, dev)) for (k, lay), (r, t) in put.items()]
        with _skipped(blocks[:skip], corrupted, which[0]):
            pr = prob(x1.expand(len(chunk), T), hooks)
        sums.index_add_(0, torch.tensor([i for i, _ in chunk]), pr)
        advance(len(chunk))
    eff = (sums / samples - p_corr).view(len(kinds), len(positions), L)
    return {
        "p_clean": p_clean,
        "p_corrupted": p_corr,
        "positions": positions,
        "effects": {k: eff[j].tolist() for j, k in enumerate(kinds)},
    }


def _chunks(rows: list, starts: list[int], batch_size: int) -> Iterator[list]:
    """Consecutive runs of `rows` (sorted by `starts`, their first restored layer) of at most `batch_size`,
    cut where the start changes once a run has `batch_size // 8` rows: batches stay large and few layers
    are run that a row did not need."""
    cur: list = []
    for row, start, prev in zip(rows, starts, [-1, *starts[:-1]]):
        if cur and (len(cur) >= batch_size or (start != prev and len(cur) >= max(1, batch_size // 8))):
            yield cur
            cur = []
        cur.append(row)
    if cur:
        yield cur


def _put_back(value: torch.Tensor, rows: list[int], positions: list[int], dev: Any) -> Callable:
    """A forward hook copying the clean state `value[t]` into the output at each (row, t)."""
    r = torch.tensor(rows, device=dev)
    t = torch.tensor(positions, device=dev)
    v = value[t]

    def hook(m: Any, a: Any, out: Any) -> Any:
        h = _first(out).clone()
        h[r, t] = v.to(h.dtype)
        return _replace_first(out, h)

    return hook


@contextlib.contextmanager
def _skipped(blocks: list[Any], corrupted: list[Any], which: torch.Tensor) -> Iterator[None]:
    """Layers `blocks` (the first ones) return their output from the plain corrupted run of each row's
    noise draw instead of computing it."""
    saved = []

    def stand_in(out: Any) -> Callable:
        def pick(v: Any) -> Any:
            return v[which] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == len(corrupted_n) else v

        return lambda *a, **k: tuple(pick(v) for v in out) if isinstance(out, tuple) else pick(out)

    corrupted_n = _first(corrupted[0]) if corrupted else torch.empty(0)
    for j, b in enumerate(blocks):
        saved.append((b, b.__dict__.get("forward")))
        b.forward = stand_in(corrupted[j])
    try:
        yield
    finally:
        for b, f in saved:
            if f is None:
                del b.forward
            else:
                b.forward = f


# ---- averaging ---------------------------------------------------------------------------------------------
def group_positions(start: int, last: int, n_tokens: int) -> list[list[int]]:
    """Token indices of each of the paper's six position groups for one prompt."""
    end = n_tokens - 1
    return [
        [start],
        list(range(start + 1, last)),
        [last],
        [last + 1] if last + 1 <= end else [],
        list(range(last + 2, end)),
        [end],
    ]


def average(per_fact: list[dict], L: int) -> tuple[list[Optional[list[float]]], list[int]]:
    """Per group, the mean effect at every layer over all (fact, token) pairs in the group (None when no
    fact has a traced token in it), and how many pairs each mean pools."""
    sums = [[0.0] * L for _ in GROUPS]
    counts = [0] * len(GROUPS)
    for f in per_fact:
        at = {t: row for t, row in zip(f["positions"], f["effects"])}
        for g, toks in enumerate(group_positions(f["subject_range"][0], f["subject_range"][1], len(f["tokens"]))):
            for t in toks:
                if t in at:
                    counts[g] += 1
                    sums[g] = [a + b for a, b in zip(sums[g], at[t])]
    return [[v / c for v in s] if c else None for s, c in zip(sums, counts)], counts


def _argmax(values: Sequence[float], allowed: Optional[range] = None) -> int:
    idx = list(allowed if allowed is not None else range(len(values)))
    return max(idx, key=lambda i: (values[i], -i))


# ---- the trace ---------------------------------------------------------------------------------------------
def _key(fp: str, tokfp: str, facts: list[Fact], kind: str, s: dict, scope: str) -> str:
    window = s["window"] if kind != "hidden" else None
    return cache.content_key(
        VERSION, fp, tokfp, [f.key() for f in facts], kind, s["samples"], s["noise"], window, s["seed"], scope
    )


def trace(
    model: Any,
    tok: Any,
    facts: Any = None,
    kinds: Sequence[str] = KINDS,
    *,
    samples: int = 10,
    noise: float = 3.0,
    window: int = 10,
    seed: int = 0,
    scope: str = "groups",
    batch_size: int = 256,
    use_cache: bool = True,
    progress: Optional[Callable[[int, int], None]] = None,
) -> dict:
    """Causal traces of `facts` (None: the shipped common facts) for each kind in `kinds`.

    Returns `{"settings", "noise_std", "layers", "kinds": {kind: result}}`; a kind's result holds
    `indirect_effect` (position group x layer: the average indirect effect, None for a group no fact has),
    `counts` (tokens pooled per group), `p_clean`, `p_corrupted`, `total_effect` (averages over the facts
    used), `facts_used`, `facts_skipped` (with what the model predicts instead), `picked_layer` (the peak of
    the last subject token's row) and `per_fact` (tokens, subject range, traced positions, effects).
    `noise` is the multiple of the subject embeddings' standard deviation; `window` the layers restored
    together for `mlp` and `attn`. `progress(done, total)` is called as forward rows finish."""
    facts = load_facts(facts)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown trace kind {bad[0] if bad else ''!r} (kinds: {', '.join(KINDS)})")
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r} (scopes: {', '.join(SCOPES)})")
    if samples < 1 or window < 1 or noise <= 0:
        raise ValueError("samples and window must be >= 1 and noise > 0")
    L = n_layers(model)
    settings = {"samples": int(samples), "noise": float(noise), "window": int(window), "seed": int(seed)}
    fp = weights_fingerprint(model, lambda name: False) if use_cache else ""
    tokfp = cache.tokenizer_fingerprint(tok) if use_cache else ""
    supersets = {"groups": ["groups", "all"], "all": ["all"], "last_subject": ["last_subject", "groups", "all"]}
    results: dict[str, dict] = {}
    noise_std = None
    for k in kinds:
        for sc in supersets[scope] if use_cache else []:
            hit = cache.load("trace", _key(fp, tokfp, facts, k, settings, sc))
            if hit is not None:
                results[k] = hit["result"]
                noise_std = hit["noise_std"]
                break
    todo = [k for k in kinds if k not in results]
    if todo:
        was_training = model.training
        model.eval()
        try:
            fresh, noise_std = _compute(model, tok, facts, todo, settings, scope, batch_size, progress)
        finally:
            model.train(was_training)
        for k in todo:
            results[k] = fresh[k]
            if use_cache:
                cache.store(
                    "trace", _key(fp, tokfp, facts, k, settings, scope), {"result": fresh[k], "noise_std": noise_std}
                )
    return {
        "settings": dict(settings, scope=scope),
        "noise_std": noise_std,
        "layers": L,
        "groups": list(GROUPS),
        "kinds": {k: results[k] for k in kinds},
    }


def _compute(
    model: Any,
    tok: Any,
    facts: list[Fact],
    kinds: list[str],
    s: dict,
    scope: str,
    batch_size: int,
    progress: Optional[Callable[[int, int], None]],
) -> tuple[dict[str, dict], float]:
    L = n_layers(model)
    prepared = [_prepare(tok, f) for f in facts]
    std = _noise_std(model, prepared)
    used, skipped = [], []
    for p in prepared:
        ok, prob, pred = _known(model, tok, p)
        if ok:
            used.append(p)
        else:
            skipped.append(
                {"id": p.fact.id, "where": p.fact.where, "text": p.fact.text, "target": p.fact.target}
                | {"predicted": pred, "p_target": prob}
            )
    if not used:
        shown = "; ".join(f"{d['text']!r} -> {d['predicted']!r} (not {d['target']!r})" for d in skipped[:3])
        raise ValueError(
            f"the model gets none of the {len(facts)} facts right ({shown}{'; ...' if len(skipped) > 3 else ''}); "
            "causal tracing needs facts whose object the model already predicts: give facts it knows"
        )
    total = sum((1 + len(kinds) * len(_positions(p, scope)) * L) * s["samples"] for p in used)
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    traces = [
        _trace_fact(model, p, kinds, s["noise"] * std, s["samples"], s["window"], s["seed"], scope, batch_size, advance)
        for p in used
    ]
    out = {}
    for k in kinds:
        per_fact = [
            {
                "id": p.fact.id,
                "text": p.fact.text,
                "subject": p.fact.subject,
                "target": p.fact.target,
                "tokens": [tok.decode([i]) for i in p.ids],
                "subject_range": [p.start, p.last],
                "p_clean": t["p_clean"],
                "p_corrupted": t["p_corrupted"],
                "positions": t["positions"],
                "effects": t["effects"][k],
            }
            for p, t in zip(used, traces)
        ]
        ie, counts = average(per_fact, L)
        p_clean = sum(f["p_clean"] for f in per_fact) / len(per_fact)
        p_corr = sum(f["p_corrupted"] for f in per_fact) / len(per_fact)
        last = ie[LAST_SUBJECT]
        out[k] = {
            "kind": k,
            "window": s["window"] if k != "hidden" else 1,
            "indirect_effect": ie,
            "counts": counts,
            "p_clean": p_clean,
            "p_corrupted": p_corr,
            "total_effect": p_clean - p_corr,
            "facts_used": len(used),
            "facts_skipped": skipped,
            "picked_layer": _argmax(last) if last is not None else None,
            "per_fact": per_fact,
        }
    return out, std


# ---- picking layers ------------------------------------------------------------------------------------------
def pick_layer(model: Any, tok: Any, facts: Any = None, kind: str = "mlp", **settings: Any) -> int:
    """The layer where the average indirect effect of `kind` (default: the MLP, restored over a window of
    `window` layers, 10 as the paper) at the last subject token peaks: ROME's criterion for the layer to edit
    (Meng et al. 2022, section 2-3: the decisive MLP states sit at the last subject token in middle layers).
    Only the last subject token is traced (a full trace in the cache is reused). Ties go to the earlier
    layer."""
    res = trace(model, tok, facts, [kind], scope="last_subject", **settings)["kinds"][kind]
    return int(res["picked_layer"])


def pick_layers(model: Any, tok: Any, facts: Any = None, n: int = 5, kind: str = "mlp", **settings: Any) -> list[int]:
    """`n` consecutive layers for MEMIT: the window of `n` MLP layers whose joint restoration at the last
    subject token has the largest average indirect effect, i.e. the MLP trace with `window = n`, at its peak
    centre c, gives layers c - n//2 .. c + n - n//2 - 1 (only windows of exactly `n` layers compete).

    Centred, not ending at the peak: MEMIT (Meng et al. 2023, section 4) spreads the update over the
    "critical" MLP layers that together mediate recall at the last subject token; a trace that restores n
    layers at once measures exactly that set, and its peak window is the n layers that carry the most of
    the fact. The published ranges are not one rule (GPT-J: 3-8 around ROME's layer 5; GPT-2 XL: 13-17
    ending at ROME's 17), so the set is read off the trace rather than placed by a fixed offset."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    L = n_layers(model)
    if n > L:
        raise ValueError(f"cannot pick {n} layers: the model has {L}")
    settings = dict(settings, window=n)
    res = trace(model, tok, facts, [kind], scope="last_subject", **settings)["kinds"][kind]
    return layers_from_trace(res, n, L)


def layers_from_trace(res: dict, n: int, n_layers_: int) -> list[int]:
    """The `n` consecutive layers centred on the peak of a trace result taken with `window = n`."""
    if not 1 <= n <= n_layers_:
        raise ValueError(f"cannot pick {n} layers: the model has {n_layers_}")
    row = res["indirect_effect"][LAST_SUBJECT]
    centre = _argmax(row, range(n // 2, n_layers_ - n + n // 2 + 1))
    return window_layers(centre, n, n_layers_)


def traced_layer(model: Any, tok: Any, kind: str = "mlp", facts: Any = None) -> int:
    """ROME's layer for this model by causal tracing (`pick_layer` with the paper's settings), over the
    shipped common facts when `facts` is None; cached on disk, so it runs once per model."""
    return pick_layer(model, tok, facts, kind=kind)


def traced_layers(model: Any, tok: Any, n: int, facts: Any = None) -> list[int]:
    """MEMIT's `n` layers for this model by causal tracing (`pick_layers`), over the shipped common facts
    when `facts` is None; cached on disk."""
    return pick_layers(model, tok, facts, n=n)


__all__ = [
    "GROUPS",
    "KINDS",
    "Fact",
    "average",
    "group_positions",
    "load_facts",
    "pick_layer",
    "pick_layers",
    "trace",
    "traced_layer",
    "traced_layers",
    "window_layers",
]
