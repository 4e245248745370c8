"""The 15-task long-sequence benchmark (Razdaibiedina et al. 2023, "Progressive Prompts: Continual Learning for
Language Models"; in O-LoRA's CL_Benchmark): the five Standard CL datasets, four GLUE tasks (MNLI, QQP, RTE, SST-2),
five SuperGLUE tasks (WiC, CB, COPA, BoolQ, MultiRC) and IMDB, with the three published orders 4-6 (Progressive
Prompts' Table; O-LoRA's `scripts/long.sh` runs order 6), O-LoRA's instructions and label words, accuracy per
task."""

from __future__ import annotations

from lifelong.benchmarks import BENCHMARKS
from lifelong.benchmarks._olora import OLoRABenchmark


@BENCHMARKS.register("long_sequence")
class LongSequence(OLoRABenchmark):
    """15 classification tasks (O-LoRA's CL_Benchmark), orders 4-6; accuracy by exact match of the generated
    label word (or `scorer: choice`)."""

    name = "long_sequence"
    orders = {
        4: [
            "MNLI",
            "CB",
            "WiC",
            "COPA",
            "QQP",
            "BoolQA",
            "RTE",
            "IMDB",
            "yelp",
            "amazon",
            "SST-2",
            "dbpedia",
            "agnews",
            "MultiRC",
            "yahoo",
        ],
        5: [
            "MultiRC",
            "BoolQA",
            "WiC",
            "MNLI",
            "CB",
            "COPA",
            "QQP",
            "RTE",
            "IMDB",
            "SST-2",
            "dbpedia",
            "agnews",
            "yelp",
            "amazon",
            "yahoo",
        ],
        6: [
            "yelp",
            "amazon",
            "MNLI",
            "CB",
            "COPA",
            "QQP",
            "RTE",
            "IMDB",
            "SST-2",
            "dbpedia",
            "agnews",
            "yahoo",
            "MultiRC",
            "BoolQA",
            "WiC",
        ],
    }
    tasks = list(orders[4])  # every task of the benchmark, in the order of order 4
