"""Tiny models built from configs and an in-process character tokenizer (`model.tiny`, tests, smoke runs).

Nothing here touches the network. The tokenizer is character level over printable ASCII, so any short
English text tokenizes, and it is rebuilt identically in every process (resume and distributed tests).
"""

from __future__ import annotations

import string
from typing import Any

CHARS = string.printable[:95]  # digits, letters, punctuation, space
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def tiny_tokenizer() -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + [c for c in CHARS if c not in SPECIALS])}
    vocab["\n"] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    return tok


def tiny_config(kind: str = "llama", vocab_size: int = 100, **overrides: Any) -> Any:
    if kind == "llama":
        from transformers import LlamaConfig

        base: dict[str, Any] = dict(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
            tie_word_embeddings=True,
        )
        return LlamaConfig(**{**base, **overrides})
    if kind == "gpt2":
        from transformers import GPT2Config

        base = dict(
            vocab_size=vocab_size,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=512,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        return GPT2Config(**{**base, **overrides})
    raise ValueError(f"unknown tiny model kind {kind!r}; use llama or gpt2")


def tiny_model(kind: str = "llama", seed: int = 0, **overrides: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(kind, vocab_size=len(tiny_tokenizer()), **overrides)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg)
    return model


def tiny_llama(seed: int = 0, **overrides: Any) -> Any:
    return tiny_model("llama", seed, **overrides)


def tiny_gpt2(seed: int = 0, **overrides: Any) -> Any:
    return tiny_model("gpt2", seed, **overrides)
