"""Lazy safetensors reading (one tensor at a time) and a streaming writer.

The writer knows every output tensor's name, dtype and shape before any data (they equal the inputs'), so
it writes each shard's header first and then appends tensors one by one: memory stays at one tensor, never
a shard. File format per the safetensors specification: 8-byte little-endian header length, a JSON header
(dtype, shape, data_offsets per tensor), padded with spaces to a multiple of 8, then the raw bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import safe_open

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
CODES = {v: k for k, v in DTYPES.items()}


class LazyModel:
    """The tensors of a model directory (single file or sharded with an index), read on demand."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        index = self.path / "model.safetensors.index.json"
        if index.exists():
            wm = json.loads(index.read_text())["weight_map"]
            self.where = {k: self.path / v for k, v in wm.items()}
        elif (self.path / "model.safetensors").exists():
            with safe_open(str(self.path / "model.safetensors"), framework="pt") as f:
                self.where = {k: self.path / "model.safetensors" for k in f.keys()}
        else:
            raise ValueError(
                f"{self.path}: no model.safetensors or model.safetensors.index.json "
                "(save with save_pretrained(safe_serialization=True))"
            )
        self._open: dict[Path, Any] = {}
        self._meta: dict[str, tuple[str, list[int]]] = {}

    def _file(self, name: str) -> Any:
        p = self.where[name]
        if p not in self._open:
            self._open[p] = safe_open(str(p), framework="pt")
        return self._open[p]

    def names(self) -> list[str]:
        return list(self.where)

    def meta(self, name: str) -> tuple[str, list[int]]:
        if name not in self._meta:
            sl = self._file(name).get_slice(name)
            self._meta[name] = (sl.get_dtype(), list(sl.get_shape()))
        return self._meta[name]

    def get(self, name: str) -> torch.Tensor:
        # open, take the tensor, close: a file kept open stays memory-mapped, and every page ever read would
        # count in the process's resident memory until the end of the merge. The tensor returned is backed by
        # its own private (copy-on-write) mapping, released when it is freed, so no copy is needed: a copy
        # held both (measured: one 108 MB embedding read peaked at 220 MB with .clone(), 112 MB without)
        with safe_open(str(self.where[name]), framework="pt") as f:
            return f.get_tensor(name)


def parse_size(size: str | int) -> int:
    if isinstance(size, int):
        return size
    s = size.strip().upper()
    for unit, mult in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * mult)
    return int(s)


class StreamingWriter:
    """Writes tensors, in the planned order, into shards of at most `max_shard_bytes` (one tensor may
    exceed it alone)."""

    def __init__(self, out_dir: Path, plan: list[tuple[str, str, list[int]]], max_shard_bytes: int) -> None:
        self.out = Path(out_dir)
        self.plan = plan
        sizes = [self._nbytes(d, s) for _, d, s in plan]
        shards: list[list[int]] = [[]]
        acc = 0
        for i, n in enumerate(sizes):
            if shards[-1] and acc + n > max_shard_bytes:
                shards.append([])
                acc = 0
            shards[-1].append(i)
            acc += n
        self.total = sum(sizes)
        self.files = (
            ["model.safetensors"]
            if len(shards) == 1
            else [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
        )
        self.shard_of = {plan[i][0]: k for k, idxs in enumerate(shards) for i in idxs}
        self.shards = shards
        self.sizes = sizes
        self.pos = 0
        self.fh: Optional[Any] = None
        self.current = -1

    @staticmethod
    def _nbytes(dtype: str, shape: list[int]) -> int:
        n = 1
        for d in shape:
            n *= d
        return n * torch.empty(0, dtype=DTYPES[dtype]).element_size()

    def _open_shard(self, k: int) -> None:
        if self.fh is not None:
            self.fh.close()
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        off = 0
        for i in self.shards[k]:
            name, dtype, shape = self.plan[i]
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + self.sizes[i]]}
            off += self.sizes[i]
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.fh = open(self.out / self.files[k], "wb")
        self.fh.write(len(raw).to_bytes(8, "little"))
        self.fh.write(raw)
        self.current = k

    def write(self, name: str, tensor: torch.Tensor) -> None:
        exp_name, dtype, shape = self.plan[self.pos]
        if name != exp_name or list(tensor.shape) != shape or CODES[tensor.dtype] != dtype:
            raise RuntimeError(
                f"writer expected {exp_name} {dtype} {shape}, got {name} {tensor.dtype} {list(tensor.shape)}"
            )
        k = self.shard_of[name]
        if k != self.current:
            self._open_shard(k)
        # the raw bytes through the buffer protocol: `.tobytes()` would copy the whole tensor once more
        assert self.fh is not None
        self.fh.write(memoryview(tensor.contiguous().cpu().reshape(-1).view(torch.uint8).numpy()))  # type: ignore[arg-type]
        self.pos += 1

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
        if len(self.files) > 1:
            index = {
                "metadata": {"total_size": self.total},
                "weight_map": {n: self.files[self.shard_of[n]] for n, _, _ in self.plan},
            }
            (self.out / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when it does not exist; a located ValueError when it is not JSON."""
    if not Path(path).exists():
        return None
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def copy_model_files(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """Config, generation config and tokenizer files of a model directory (no weights; not the names in
    `skip`)."""
    for f in Path(src).iterdir():
        if (
            f.is_file()
            and not f.name.startswith(".")
            and f.suffix not in (".safetensors", ".bin", ".pt", ".pth", ".gguf")
            and f.name not in ("model.safetensors.index.json", "adapter_config.json")
            and f.name not in skip
        ):
            shutil.copy2(f, dst / f.name)


def finalize(tmp: Path, out: Path) -> None:
    if out.exists():
        raise ValueError(f"{out} already exists; choose another --out (merges never overwrite)")
    os.replace(tmp, out)
