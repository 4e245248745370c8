"""Memory per GPU of full fine-tuning under each sharding mode, and what each strategy adds (docs/scale.md).

    python bench/scale_table.py                      # the docs' table: 1B, 7B, 70B on 80 GB and 141 GB GPUs
    python bench/scale_table.py --seq 8192 --micro-batch 2 --no-checkpointing --usable 0.85

Every figure is a formula in this file, so the table in docs/scale.md is reproducible and
tests/test_scale_docs.py checks the exact part (parameters, gradients, AdamW state, strategies' copies)
against torch's own tensors on a tiny model. Bytes per parameter:

- one process, plain torch (what `lifelong run` holds without accelerate's sharding): weights w (4 for
  float32, 2 for bfloat16), a gradient of the same dtype per trained parameter, AdamW's exp_avg and exp_avg_sq
  in the parameter's dtype, plus one float32 `step` scalar per trained tensor: `state_bytes`.
- mixed precision (`train.precision: bf16` / accelerate `mixed_precision: bf16`) keeps float32 master weights:
  DDP autocasts fp32 weights (they are the master copy) and caches bf16 casts of them through backward;
  FSDP2 upcasts trained weights to fp32 and gathers bf16 copies layer by layer; DeepSpeed keeps bf16 weights
  and an fp32 master copy inside its optimizer (the ZeRO paper's 2 + 2 + 12 bytes): `per_gpu`.
- activations are a separate term (`activation_bytes`): they scale with tokens per micro-batch, not with P.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional

GB = 1e9
ADAMW_STEP_BYTES = 4
"""torch.optim.AdamW keeps one float32 `step` tensor per parameter tensor (fused or not)."""


@dataclass(frozen=True)
class Arch:
    """A Llama-style decoder: the shapes that memory depends on."""

    name: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    tied: bool

    @property
    def kv_hidden(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def layer_params(self) -> int:
        """q, k, v, o, gate, up, down and the two RMSNorm weights of one decoder layer."""
        h, kv, f = self.hidden, self.kv_hidden, self.intermediate
        return 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h

    def root_params(self) -> int:
        """Parameters outside the decoder layers (embedding, final norm, untied head): FSDP2's root unit."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    def params(self) -> int:
        return self.layers * self.layer_params() + self.root_params()

    def largest_tensor(self) -> int:
        return max(self.vocab * self.hidden, self.hidden * self.intermediate)


MODELS = {
    "1B": Arch("Llama-3.2-1B", 128256, 2048, 16, 32, 8, 8192, tied=True),
    "7B": Arch("Llama-2-7B", 32000, 4096, 32, 32, 32, 11008, tied=False),
    "70B": Arch("Llama-3.1-70B", 128256, 8192, 80, 64, 8, 28672, tied=False),
}
GPUS = {"80 GB": 80 * GB, "141 GB": 141 * GB}
GPUS_PER_NODE = 8
MODES = ("ddp", "fsdp2", "fsdp2_offload", "zero2", "zero3")
DS_BUCKET = 5e8
"""DeepSpeed's default reduce_bucket_size and allgather_bucket_size (elements)."""
DS_MAX_LIVE = 1e9
"""DeepSpeed's default stage3_max_live_parameters (elements)."""


def state_bytes(
    n_params: int, n_trained: int, n_trained_tensors: int, weight_bytes: int = 4, adamw: bool = True
) -> dict[str, int]:
    """Bytes one process holds for a plain (unsharded) model after an optimizer step: every parameter in its
    dtype, a gradient per trained parameter, AdamW's two moments per trained parameter in the parameter's
    dtype and one float32 step scalar per trained tensor. Tied weights count once."""
    return {
        "params": weight_bytes * n_params,
        "grads": weight_bytes * n_trained,
        "optimizer": (2 * weight_bytes * n_trained + ADAMW_STEP_BYTES * n_trained_tensors) if adamw else 0,
    }


def strategy_extra(
    name: str,
    n_params: int,
    n_trained: int,
    weight_bytes: int = 4,
    stages_done: int = 1,
    keep: str = "all",
) -> dict[str, int]:
    """Bytes a strategy keeps beside the model, unsharded (one process or DDP), where: `device` (the model's
    device) or `cpu`. `stages_done`: finished stages (merge_after_stage's task vectors, EWC's folded anchor).
    Under FSDP2 the strategies that declare `supports_fsdp` keep these as shards: divide by N (docs/scale.md).
    Strategies not listed keep no tensor copy of the weights."""
    w, pt, p = weight_bytes, n_trained, n_params
    if name == "ewc":  # float32 Fisher; the anchor in the weights' dtype, float32 once a second stage is folded
        return {"device": 4 * pt + (w if stages_done <= 1 else 4) * pt, "cpu": 0}
    if name == "l2":  # one anchor
        return {"device": w * pt, "cpu": 0}
    if name == "elastic_reset":  # the initial weights and the EMA
        return {"device": 2 * w * pt, "cpu": 0}
    if name in ("lwf", "rho1"):  # a frozen copy of the whole model (the teacher / the reference)
        return {"device": w * p, "cpu": 0}
    if name == "merge_after_stage":  # base, the running stage's start, and the task vectors (or their sum)
        vectors = min(stages_done, 1) if keep == "sum" else stages_done
        return {"device": 0, "cpu": w * pt * (2 + vectors)}
    if name == "preference_average":  # a preference stage with `average`: both ends of the interpolation
        return {"device": 0, "cpu": 2 * w * p}
    if name == "agem":  # the memory gradient and the current gradient, float32, while projecting
        return {"device": 2 * 4 * pt, "cpu": 0}
    return {"device": 0, "cpu": 0}


def fsdp2_shard_numel(shape: tuple[int, ...], world: int, rank: int) -> int:
    """Elements of a parameter of `shape` that FSDP2 process `rank` of `world` holds: its `torch.chunk` part
    of dim 0 (chunks of ceil(d / world) rows, the last ones shorter or empty)."""
    if not shape:
        return 1 if rank == 0 else 0
    d, rest = shape[0], 1
    for s in shape[1:]:
        rest *= s
    size = -(-d // world)
    return max(0, min(d, (rank + 1) * size) - rank * size) * rest


def replay_buffer_bytes(examples: int, tokens_per_example: float) -> float:
    """Python memory of replay's buffer on the CPU: per example two lists (input_ids, labels) of ints, about 8
    bytes per list slot plus 28 per int object above 256 (small ints are shared), so about 72 bytes a token."""
    return examples * tokens_per_example * 2 * (8 + 28)


def activation_bytes(arch: Arch, seq: int, micro_batch: int, checkpointing: bool) -> float:
    """Activations kept for backward in bf16 with SDPA/flash attention (no s x s score matrix), per process.

    Per layer and token, the tensors autograd saves: both RMSNorms' float32 input and bf16 output (2 x 6h),
    q, k, v after RoPE and the attention output (2(h + 2 h_kv) + 2h), the MLP's gate, up, SiLU and product
    (4 x 2f): a_l = 16h + 4 h_kv + 8f bytes. Logits: bf16 output, the float32 upcast for the loss and its
    log-softmax (2 + 4 + 4 = 10 bytes per token per vocabulary entry). With gradient checkpointing each layer
    keeps only its bf16 input (2h per token) and one layer is recomputed at a time."""
    t = seq * micro_batch
    per_layer = t * (16 * arch.hidden + 4 * arch.kv_hidden + 8 * arch.intermediate)
    logits = t * arch.vocab * 10
    if checkpointing:
        return arch.layers * t * 2 * arch.hidden + per_layer + logits
    return arch.layers * per_layer + logits


def per_gpu(mode: str, arch: Arch, n_gpus: int) -> dict[str, float]:
    """Bytes per GPU (and per process on the CPU) for full fine-tuning with bf16 mixed precision and AdamW,
    before activations: `state` (sharded or not), `transient` (gathered weights, buckets, casts at peak),
    `cpu` (offloaded state per process)."""
    p, n = arch.params(), n_gpus
    if mode == "ddp":  # fp32 weights + fp32 grads + DDP's gradient buckets (a copy of the grads) + AdamW
        return {"state": (4 + 4 + 4 + 8) * p, "transient": 2 * p, "cpu": 0}  # bf16 autocast casts of weights
    # FSDP2: the root unit (embedding, head) stays gathered in bf16; two layers gathered (current + prefetch);
    # unsharded bf16 gradients of the root and one layer before their reduce-scatter
    gathered = 2 * (arch.root_params() + 2 * arch.layer_params()) + 2 * (arch.root_params() + arch.layer_params())
    if mode == "fsdp2":  # fp32 sharded weights, fp32 sharded grads, AdamW on the shards
        return {"state": 16 * p / n, "transient": gathered, "cpu": 0}
    if mode == "fsdp2_offload":  # the same state in (pinned) CPU memory; AdamW steps on the CPU
        return {"state": 0, "transient": gathered, "cpu": 16 * p / n}
    if mode == "zero2":  # bf16 weights replicated; bf16 grads, fp32 master + moments partitioned
        return {"state": 2 * p + (2 + 12) * p / n, "transient": 2 * 2 * DS_BUCKET, "cpu": 0}
    if mode == "zero3":  # everything partitioned; live gathered weights up to stage3_max_live_parameters
        live = 2 * max(DS_MAX_LIVE, arch.largest_tensor())
        return {"state": 16 * p / n, "transient": live + 2 * DS_BUCKET, "cpu": 0}
    raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")


def total(mode: str, arch: Arch, n_gpus: int, act: float) -> float:
    m = per_gpu(mode, arch, n_gpus)
    return m["state"] + m["transient"] + act


def min_gpus(mode: str, arch: Arch, capacity: float, act: float, usable: float, limit: int = 1024) -> Optional[int]:
    """Fewest GPUs (a power of two) on which every GPU's total fits in `usable` x capacity; None: none does
    (DDP does not shrink with more GPUs)."""
    n = 1
    while n <= limit:
        if total(mode, arch, n, act) <= usable * capacity:
            return n
        if mode == "ddp":
            return None
        n *= 2
    return None


LABELS = {
    "ddp": "DDP",
    "fsdp2": "FSDP2 full shard",
    "fsdp2_offload": "FSDP2 + CPU offload",
    "zero2": "ZeRO-2",
    "zero3": "ZeRO-3",
}


def table(seq: int = 4096, micro_batch: int = 1, checkpointing: bool = True, usable: float = 0.9) -> str:
    """The docs' table (markdown): per model and GPU size, the fewest GPUs each mode needs and the GB per GPU
    there (state + transient + activations), and the CPU RAM per process under offload."""
    head = "| model (params) | mode | bytes/param (state) |" + "".join(f" {g}: GPUs | {g}: GB/GPU |" for g in GPUS)
    rows = [head, "|" + "---|" * (3 + 2 * len(GPUS))]
    formula = {
        "ddp": "20 (+2 casts)",
        "fsdp2": "16/N",
        "fsdp2_offload": "0 (16/N on CPU)",
        "zero2": "2 + 14/N",
        "zero3": "16/N",
    }
    for key, arch in MODELS.items():
        act = activation_bytes(arch, seq, micro_batch, checkpointing)
        for mode in MODES:
            cells = []
            for cap in GPUS.values():
                n = min_gpus(mode, arch, cap, act, usable)
                if n is None:
                    cells += ["does not fit", "-"]
                    continue
                gb = total(mode, arch, n, act) / GB
                cpu = per_gpu(mode, arch, n)["cpu"] * min(n, GPUS_PER_NODE) / GB  # per node
                cells += [str(n), f"{gb:.1f}" + (f" (+{cpu:.0f} CPU RAM per node)" if cpu else "")]
            rows.append(
                f"| {key} ({arch.params() / 1e9:.2f}B) | {LABELS[mode]} | {formula[mode]} | " + " | ".join(cells) + " |"
            )
    return "\n".join(rows)


def activation_table(seq: int = 4096, micro_batch: int = 1) -> str:
    rows = ["| model | activations, no checkpointing (GB) | with gradient checkpointing (GB) |", "|---|---|---|"]
    for key, arch in MODELS.items():
        a0 = activation_bytes(arch, seq, micro_batch, False) / GB
        a1 = activation_bytes(arch, seq, micro_batch, True) / GB
        rows.append(f"| {key} | {a0:.1f} | {a1:.1f} |")
    return "\n".join(rows)


STRATEGY_ROWS = (
    ("naive, replay (its buffer: CPU, per token), sdft, generative_replay", "naive"),
    ("ewc (Fisher + anchor)", "ewc"),
    ("l2 (anchor)", "l2"),
    ("elastic_reset (initial weights + EMA)", "elastic_reset"),
    ("lwf / rho1 (frozen teacher / reference)", "lwf"),
    ("agem (memory gradient, while projecting)", "agem"),
    ("merge_after_stage, keep: sum (base, start, sum)", "merge_after_stage"),
    ("preference stage with average (both ends)", "preference_average"),
)


def strategy_table(model: str = "7B", n_gpus: int = 8) -> str:
    """GB per GPU (or per process on the CPU) that each strategy adds to full fine-tuning of `model` with fp32
    master weights: unsharded (one process, DDP: every process holds the whole copy) and under FSDP2 over
    `n_gpus` (shards: 1/N each)."""
    arch = MODELS[model]
    p = arch.params()
    rows = [
        f"| strategy | bytes / trained param | {model} unsharded (GB/GPU) | {model} FSDP2 on {n_gpus} GPUs (GB/GPU) |",
        "|---|---|---|---|",
    ]
    for label, name in STRATEGY_ROWS:
        e = strategy_extra(name, p, p, 4, stages_done=2, keep="sum")
        b = e["device"] + e["cpu"]
        where = " CPU" if e["cpu"] else ""
        rows.append(f"| {label} | {b / p:g}{where} | {b / GB:.1f}{where} | {b / n_gpus / GB:.1f} |")
    return "\n".join(rows)


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq", type=int, default=4096, help="tokens per sequence")
    ap.add_argument("--micro-batch", type=int, default=1, help="sequences per GPU per micro-batch")
    ap.add_argument("--no-checkpointing", action="store_true", help="activations without gradient checkpointing")
    ap.add_argument("--usable", type=float, default=0.9, help="share of GPU memory usable (context, fragmentation)")
    a = ap.parse_args(argv)
    print(
        f"Full fine-tuning, AdamW, bf16 mixed precision; {a.micro_batch} x {a.seq} tokens per GPU, gradient "
        f"checkpointing {'off' if a.no_checkpointing else 'on'}, {a.usable:.0%} of each GPU usable.\n"
    )
    print(table(a.seq, a.micro_batch, not a.no_checkpointing, a.usable))
    print()
    print(activation_table(a.seq, a.micro_batch))
    print()
    print(strategy_table())


if __name__ == "__main__":
    main()
