"""The documents of bigbench_general_knowledge_local (lm-eval's `custom_dataset`): the JSON lines file beside this
file, whatever the working directory."""

from pathlib import Path
from typing import Any


def general_knowledge(**kwargs: Any) -> Any:
    import datasets

    path = Path(__file__).with_name("general_knowledge.jsonl")
    return datasets.DatasetDict({"test": datasets.load_dataset("json", data_files=str(path), split="train")})
