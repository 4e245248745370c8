"""Per-architecture module map, defined once per model type (`config.model_type`), never sniffed from
model names. Methods ask for roles (attention projections, MLP output, layer list) instead of names."""

from __future__ import annotations

from typing import Any

ARCH: dict[str, dict[str, Any]] = {
    "llama": {
        "attention": ["q_proj", "v_proj"],
        "mlp": ["gate_proj", "up_proj", "down_proj"],
        "mlp_out": "mlp.down_proj",
        "layers": "model.layers",
    },
    "mistral": {
        "attention": ["q_proj", "v_proj"],
        "mlp": ["gate_proj", "up_proj", "down_proj"],
        "mlp_out": "mlp.down_proj",
        "layers": "model.layers",
    },
    "qwen2": {
        "attention": ["q_proj", "v_proj"],
        "mlp": ["gate_proj", "up_proj", "down_proj"],
        "mlp_out": "mlp.down_proj",
        "layers": "model.layers",
    },
    "gpt2": {
        "attention": ["c_attn"],
        "mlp": ["mlp.c_fc", "mlp.c_proj"],
        "mlp_out": "mlp.c_proj",
        "layers": "transformer.h",
    },
}


def arch_of(model: Any) -> dict[str, Any]:
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in ARCH:
        raise ValueError(
            f"model type {kind!r} has no module map yet (known: {', '.join(sorted(ARCH))}); "
            "add it to lifelong/models/arch.py or name target modules explicitly"
        )
    return ARCH[kind]


def resolve_targets(model: Any, targets: Any) -> Any:
    """`attention` -> the architecture's attention projections; other values pass through (PEFT syntax)."""
    if targets == "attention":
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return list(arch_of(base)["attention"])
    return targets
