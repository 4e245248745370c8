"""The merge-method interface: a pure function of the same-named tensor of every input model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional

import torch
from pydantic import BaseModel

from lifelong.config import Strict


class NoParams(Strict):
    """A method without parameters."""


def zero_sum(weights: list[float]) -> Optional[str]:
    """The reason a division by sum(weights) is impossible, or None."""
    if math.isclose(sum(weights), 0.0, abs_tol=1e-12):
        return (
            f"the weights {weights} sum to 0, so their normalised average divides by zero; give weights "
            "with a non-zero sum"
        )
    return None


@dataclass
class TensorContext:
    name: str
    """The tensor's name (DARE seeds its masks from it, so the order of tensors does not matter)."""
    seed: int = 0
    threshold: Optional[list[float]] = None
    """Per-model magnitude thresholds computed over all tensors (TIES with global trim)."""
    model_params: list[dict[str, Any]] = field(default_factory=list)
    """One dict per input tensor (same order as `tensors`): that model's parameters resolved for this tensor
    (mergekit's per-model `parameters:` after `filter:` and gradient lists, falling back to the slice's and
    the config's global `parameters:` for the names in the method's `model_params`); `weight` is always set.
    Empty when a method is called outside the engine: read it with `ctx.model_param(i, name, default)`."""
    t: float = 0.0
    """Position of this tensor's layer in its slice, 0..1 (mergekit's gradient position; 0 outside layers)."""

    def model_param(self, i: int, name: str, default: Any) -> Any:
        """Model i's resolved parameter `name` for this tensor, or `default`."""
        if i < len(self.model_params) and name in self.model_params[i]:
            return self.model_params[i][name]
        return default


class MergeMethod:
    Params: ClassVar[type[BaseModel]] = NoParams
    uses_base: ClassVar[bool] = False
    """Works on deltas against a base model (the YAML's `base_model` is required)."""
    n_models: ClassVar[Optional[int]] = None
    """Exact number of input models the method takes, not counting the base (None: any)."""
    model_params: ClassVar[dict[str, Any]] = {"weight": 1.0}
    """Per-model parameters and their defaults (mergekit's "input parameters", e.g. weight, density,
    epsilon, gamma). A name listed here may be given per model or in the global `parameters:` (then it is
    every model's default); any other name in `parameters:` is a global parameter validated by `Params`."""
    base_in_models: ClassVar[Literal["base", "input"]] = "base"
    """When `base_model` is also listed under `models:` (as mergekit configs do): "base" passes it only as
    `base` (task-vector methods, SLERP: mergekit drops it from the inputs); "input" also merges it as one
    of `tensors` with its weight (linear)."""

    def __init__(self, params: Optional[BaseModel] = None) -> None:
        self.params = params if params is not None else self.Params()

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        """Merged tensor (float32 in, float32 out; the driver casts to the output dtype). `tensors` are the
        input models (without the base, unless `base_in_models == "input"` and it is listed); `weights[i]`
        is model i's resolved `weight`; `base` is the base model's tensor when `base_model` is set. The
        engine builds one method instance per distinct set of resolved global parameters, so `self.params`
        already holds this tensor's values (gradients and filters applied)."""
        raise NotImplementedError

    def check_weights(self, weights: list[float]) -> Optional[str]:
        """Why these per-model weights cannot be merged (e.g. a normalised average of weights summing to
        zero divides by zero), or None. Checked before any tensor is read."""
        return None

    adapter_space: ClassVar[bool] = False
    """Merges PEFT LoRA adapters as adapters: the engine hands the whole config to
    `lifelong.merging.adapters.merge_adapters` instead of streaming full tensors."""

    @classmethod
    def check_inputs(cls, n_models: int, has_base: bool) -> Optional[str]:
        """Why this many input models (without the base) and this base presence cannot be merged, or None.
        Checked per slice before any tensor is read."""
        return None

    def require_inputs(self, tensors: list[torch.Tensor], base: Optional[torch.Tensor], ctx: TensorContext) -> None:
        """`check_inputs` again inside `merge`, for callers outside the engine (which checks per slice before
        reading anything): a ValueError naming the tensor."""
        why = self.check_inputs(len(tensors), base is not None)
        if why:
            raise ValueError(f"tensor {ctx.name!r}: {why}")

    @classmethod
    def check_model_params(cls, params: dict[str, Any]) -> Optional[str]:
        """Why one model's resolved per-model parameters cannot be used, or None (checked per tensor while
        planning, so the error names the tensor, the model and the setting)."""
        return None

    def global_fractions(self, model_params: list[dict[str, Any]]) -> Optional[list[float]]:
        """Per model, the fraction of all its delta entries to keep over the whole model (TIES `trim:
        global`), or None (the default: no whole-model trim); the driver then passes each model's magnitude
        threshold in `ctx.threshold`."""
        return None
