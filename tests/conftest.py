import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def tiny_cfg(tmp_path):
    """A function building a validated tiny run config writing under tmp_path."""
    from lifelong.config import validate_raw
    from lifelong.testing import tiny_run_config

    def make(strategy="naive", **kw):
        raw = tiny_run_config(strategy, output_dir=str(tmp_path / "runs"), **kw)
        return validate_raw(raw)

    return make
