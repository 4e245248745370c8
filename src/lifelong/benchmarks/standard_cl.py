"""The Standard CL Benchmark of the LLM continual-instruction-tuning papers (O-LoRA, Wang et al. 2023,
"Orthogonal Subspace Learning for Language Model Continual Learning", and its successors): text classification
over AG News, Amazon reviews, Yelp reviews, DBpedia and Yahoo Answers (de Masson d'Autume et al. 2019), with the
three task orders of O-LoRA's `scripts/order_{1,2,3}.sh` over four of them (Yelp is left out there, as in
O-LoRA's Table 1; `tasks:` adds it), O-LoRA's instructions and label words, accuracy per task."""

from __future__ import annotations

from lifelong.benchmarks import BENCHMARKS
from lifelong.benchmarks._olora import OLoRABenchmark


@BENCHMARKS.register("standard_cl")
class StandardCL(OLoRABenchmark):
    """AG News, Amazon, Yelp, DBpedia, Yahoo (O-LoRA's CL_Benchmark), orders 1-3; accuracy by exact match of the
    generated label word (or `scorer: choice`)."""

    name = "standard_cl"
    tasks = ["agnews", "amazon", "yelp", "dbpedia", "yahoo"]
    orders = {
        1: ["dbpedia", "amazon", "yahoo", "agnews"],
        2: ["dbpedia", "amazon", "agnews", "yahoo"],
        3: ["yahoo", "amazon", "agnews", "dbpedia"],
    }
