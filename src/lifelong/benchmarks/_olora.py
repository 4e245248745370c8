"""The CL_Benchmark release of O-LoRA (Wang et al. 2023, github.com/cmnfriend/O-LoRA, `CL_Benchmark/`), shared by
`standard_cl` and `long_sequence`: its folder layout, its instructions (`configs/instruction_config.json`) and the
prompt its data loader and collator build, so a stage's prompts are theirs character for character.

Layout: `CL_Benchmark/<category>/<dataset>/{train,dev,test}.json` (a JSON list of `{"sentence", "label"}`) and
`labels.json` (the label words, in the order the prompt lists them). The prompt of a row (`src/uie_dataset_lora.py`
and `src/uie_collator.py`, with the scripts' `--add_task_name True --add_dataset_name True`):

    Task:<category>\\nDataset:<dataset>\\n<instruction>Option: <labels joined by ", "> \\n<sentence>\\nAnswer:

COPA has no instruction and no option line (`Task:COPA\\nDataset:COPA\\n<sentence>\\nAnswer:`); its sentence holds
the question and both alternatives. The target is the label word; O-LoRA generates and scores exact match after
lower-casing and removing punctuation (`src/compute_metrics.py`), reported as accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from lifelong.benchmarks.base import Benchmark, BenchmarkError, BenchmarkParams, offline, read_json, sample, write_rows

INSTRUCTIONS: dict[str, str] = {
    "NLI": 'What is the logical relationship between the "sentence 1" and the "sentence 2"? '
    "Choose one from the option.\n",
    "QQP": 'Whether the "first sentence" and the "second sentence" have the same meaning? '
    "Choose one from the option.\n",
    "SC": "What is the sentiment of the following paragraph? Choose one from the option.\n",
    "TC": "What is the topic of the following paragraph? Choose one from the option.\n",
    "BoolQA": "According to the following passage, is the question true or false? Choose one from the option.\n",
    "MultiRC": "According to the following passage and question, is the candidate answer true or false? "
    "Choose one from the option.\n",
    "WiC": "Given a word and two sentences, whether the word is used with the same sense in both sentence? "
    "Choose one from the option.\n",
}
"""`configs/instruction_config.json` of O-LoRA: the zero-shot instruction of each task category (COPA has none)."""

TASKS: dict[str, tuple[str, str]] = {
    "agnews": ("TC", "agnews"),
    "amazon": ("SC", "amazon"),
    "yelp": ("SC", "yelp"),
    "dbpedia": ("TC", "dbpedia"),
    "yahoo": ("TC", "yahoo"),
    "MNLI": ("NLI", "MNLI"),
    "CB": ("NLI", "CB"),
    "RTE": ("NLI", "RTE"),
    "QQP": ("QQP", "QQP"),
    "IMDB": ("SC", "IMDB"),
    "SST-2": ("SC", "SST-2"),
    "BoolQA": ("BoolQA", "BoolQA"),
    "COPA": ("COPA", "COPA"),
    "MultiRC": ("MultiRC", "MultiRC"),
    "WiC": ("WiC", "WiC"),
}
"""Task name (as in O-LoRA's scripts) -> (category folder, dataset folder) under `CL_Benchmark/`."""

SOURCES: dict[str, str] = {
    "agnews": "AG News (Zhang et al. 2015; hub fancyzhx/ag_news)",
    "amazon": "Amazon reviews full (Zhang et al. 2015)",
    "yelp": "Yelp reviews full (Zhang et al. 2015; hub Yelp/yelp_review_full)",
    "dbpedia": "DBpedia ontology (Zhang et al. 2015; hub fancyzhx/dbpedia_14)",
    "yahoo": "Yahoo Answers topics (Zhang et al. 2015; hub community-datasets/yahoo_answers_topics)",
    "MNLI": "GLUE MNLI (hub nyu-mll/glue, mnli)",
    "CB": "SuperGLUE CB (hub aps/super_glue, cb)",
    "RTE": "SuperGLUE RTE (hub aps/super_glue, rte)",
    "QQP": "GLUE QQP (hub nyu-mll/glue, qqp)",
    "IMDB": "IMDB (Maas et al. 2011; hub stanfordnlp/imdb)",
    "SST-2": "GLUE SST-2 (hub nyu-mll/glue, sst2)",
    "BoolQA": "SuperGLUE BoolQ (hub aps/super_glue, boolq)",
    "COPA": "SuperGLUE COPA (hub aps/super_glue, copa)",
    "MultiRC": "SuperGLUE MultiRC (hub aps/super_glue, multirc)",
    "WiC": "SuperGLUE WiC (hub aps/super_glue, wic)",
}
"""The original dataset of each task (O-LoRA's files are these, converted to sentence + label word)."""


def prompt_template(task: str, labels: list[str], task_prefix: bool = True) -> str:
    """The O-LoRA prompt of `task` as a `data.template` over the row field `text` (the row's sentence)."""
    category, dataset = TASKS[task]
    prefix = f"Task:{category}\nDataset:{dataset}\n" if task_prefix else ""
    if category == "COPA":
        body = prefix
    else:
        body = prefix + INSTRUCTIONS[category] + "Option: " + ", ".join(labels) + " \n"
    return body.replace("{", "{{").replace("}", "}}") + "{text}\nAnswer:"


def prompt(task: str, labels: list[str], sentence: str, task_prefix: bool = True) -> str:
    """The prompt string of one row (what the template gives for it)."""
    return prompt_template(task, labels, task_prefix).format(text=sentence)


class OLoRAParams(BenchmarkParams):
    scorer: Literal["exact_match", "choice"] = "exact_match"
    """`exact_match`: greedy generation compared with the label word after normalisation, as O-LoRA scores
    (accuracy); `choice`: the label word of highest log-likelihood among the task's label words."""
    max_new_tokens: int = Field(default=16, ge=1, le=512)
    """Generation budget of `exact_match` (the longest label word is a few tokens; O-LoRA allows 50)."""
    task_prefix: bool = True
    """Start prompts with `Task:<category>\\nDataset:<dataset>\\n`, as O-LoRA's scripts do
    (`--add_task_name True --add_dataset_name True`)."""


class OLoRABenchmark(Benchmark):
    """Base of the benchmarks over O-LoRA's CL_Benchmark folder."""

    Params = OLoRAParams
    name = "olora"

    def expand(self, params: Any, base_dir: Path) -> list[dict]:
        tasks = self.task_list(params)
        root = self._root(params, base_dir, tasks)
        stages = []
        for task in tasks:
            category, dataset = TASKS[task]
            folder = root / category / dataset
            labels = read_json(folder / "labels.json")
            if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
                raise BenchmarkError("path", f"{folder / 'labels.json'}: expected a JSON list of label words")
            split_rows = {}
            for split, n in (("train", params.train_per_task), ("test", params.eval_per_task)):
                rows = self._rows(folder / f"{split}.json", labels)
                picked = sample(rows, n, params.seed, f"{task}/{split}")
                split_rows[split] = write_rows(self.name, f"{task}.{split}", picked)
            template = prompt_template(task, labels, params.task_prefix)
            common = {"format": "classification", "labels": labels, "template": template}
            eval_cfg: dict[str, Any] = {"path": split_rows["test"], **common, "name": task, "scorer": params.scorer}
            if params.scorer == "exact_match":
                eval_cfg["params"] = {"max_new_tokens": params.max_new_tokens}
            stages.append(
                {"name": task, "kind": "instruct", "data": {"path": split_rows["train"], **common}, "eval": eval_cfg}
            )
        return stages

    @staticmethod
    def _rows(path: Path, labels: list[str]) -> list[dict]:
        data = read_json(path)
        if not isinstance(data, list):
            raise BenchmarkError("path", f"{path}: expected a JSON list of {{sentence, label}} rows")
        out, dropped = [], []
        for k, r in enumerate(data):
            if not (isinstance(r, dict) and isinstance(r.get("sentence"), str) and isinstance(r.get("label"), str)):
                raise BenchmarkError("path", f"{path}: row {k} is not a {{sentence, label}} object of strings")
            if r["label"] in labels:
                out.append({"text": r["sentence"], "label": r["label"]})
            else:
                dropped.append((k, r["label"]))
        if not out:
            raise BenchmarkError("path", f"{path}: no row with a label of labels.json {labels}")
        if dropped:  # MNLI's test.json: 131 rows labelled "-" (no annotator majority), which O-LoRA keeps
            import warnings

            k, label = dropped[0]
            warnings.warn(
                f"{path}: {len(dropped)} of {len(data)} rows have a label not in labels.json {labels} (the first: row "
                f"{k}, {label!r}) and are left out",
                stacklevel=2,
            )
        return out

    def _root(self, params: Any, base_dir: Path, tasks: list[str]) -> Path:
        """The CL_Benchmark folder: `path` (the folder itself or a checkout holding it), or a snapshot of the
        hub dataset repository `hub` in the same layout (only the listed tasks' files are downloaded)."""
        if (params.path is None) == (params.hub is None):
            raise BenchmarkError(
                "path", "give `path` (a local CL_Benchmark folder) or `hub` (a dataset repo in its layout), one of them"
            )
        if params.path is not None:
            root = self.local_root(params, base_dir)
        else:
            root = self._snapshot(params.hub, tasks)
        if (root / "CL_Benchmark").is_dir():
            root = root / "CL_Benchmark"
        missing = [t for t in tasks if not (root / TASKS[t][0] / TASKS[t][1]).is_dir()]
        if missing:
            c, d = TASKS[missing[0]]
            raise BenchmarkError(
                "hub" if params.path is None else "path",
                f"{root} has no {c}/{d}/ (task {missing[0]}); the folder must hold O-LoRA's CL_Benchmark layout "
                "(<category>/<dataset>/{train,test}.json, labels.json)",
            )
        return root

    @staticmethod
    def _snapshot(repo: str, tasks: list[str]) -> Path:
        if offline():
            raise BenchmarkError("hub", f"cannot download {repo}: the hub is offline (HF_HUB_OFFLINE); use `path`")
        import huggingface_hub

        patterns = []
        for t in tasks:
            c, d = TASKS[t]
            patterns += [f"{c}/{d}/*", f"CL_Benchmark/{c}/{d}/*"]
        try:
            local = huggingface_hub.snapshot_download(repo_id=repo, repo_type="dataset", allow_patterns=patterns)
        except Exception as e:  # network, auth, missing repo: one line naming the repo
            raise BenchmarkError(
                "hub", f"cannot download dataset {repo} from the hub ({type(e).__name__}: {e})"
            ) from None
        return Path(local)
