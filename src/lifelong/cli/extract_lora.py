"""`lifelong extract-lora --base B --tuned T --out DIR [--rank R | --energy 0.9] [--modules GLOB ...]`: the
LoRA adapter of a fine-tune, by truncated SVD of each linear layer's delta (lifelong.merging.extract_lora)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract-lora", help="extract a PEFT LoRA adapter from a fine-tuned model (truncated SVD of its deltas)"
    )
    p.add_argument("--base", required=True, help="the base model directory (safetensors)")
    p.add_argument("--tuned", required=True, help="the fine-tuned model directory (same architecture)")
    p.add_argument("--out", required=True, help="a new folder for the PEFT adapter and extract_report.json")
    p.add_argument("--rank", type=int, default=None, help="rank per module (default 16; with --energy: the cap)")
    p.add_argument(
        "--energy", type=float, default=None, help="per module, the smallest rank keeping this fraction of sum sigma^2"
    )
    p.add_argument(
        "--modules",
        nargs="+",
        default=None,
        metavar="GLOB",
        help="linear layers to extract (default: all but the output head)",
    )
    p.add_argument(
        "--save-modules",
        nargs="+",
        default=None,
        metavar="GLOB",
        help="modules saved whole (PEFT modules_to_save), e.g. '*norm*'",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="factor dtype (default: the tuned model's)",
    )
    p.add_argument(
        "--compare", action="store_true", help="then compare base + adapter with the tuned model on a few texts' logits"
    )
    p.add_argument(
        "--texts", default=None, help="with --compare: a text file, one text per line (default: built-in texts)"
    )


def main(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lifelong.fileio import ensure_writable_dir
    from lifelong.merging.extract_lora import compare_logits, extract_lora

    ensure_writable_dir(Path(args.out).resolve().parent, f"the folder of --out {args.out}:", create=False)
    texts = None
    if args.texts:
        p = Path(args.texts)
        if not p.is_file():
            raise ValueError(f"--texts {args.texts}: no such file")
        texts = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise ValueError(f"--texts {args.texts}: no non-empty line")
    rep = extract_lora(
        args.base,
        args.tuned,
        args.out,
        args.rank,
        args.energy,
        args.modules,
        args.save_modules,
        args.dtype,
        quiet=False,
    )
    mods = rep["modules"].values()
    ranks = [m["rank"] for m in mods]
    print(
        f"{args.out}: {len(ranks)} modules, rank {min(ranks)}-{max(ranks)}, energy kept "
        f"{min(m['energy_kept'] for m in mods):.4f}-{max(m['energy_kept'] for m in mods):.4f}, "
        f"relative error <= {max(m['relative_error'] for m in mods):.3g}"
    )
    if rep["saved_whole"]:
        print(f"saved whole (modules_to_save): {', '.join(rep['saved_whole'])}")
    if rep["left_out"]:
        names = ", ".join(x["tensor"] for x in rep["left_out"][:8]) + (" ..." if len(rep["left_out"]) > 8 else "")
        print(f"left out ({len(rep['left_out'])} changed tensors outside linear weights; see --save-modules): {names}")
    if args.compare:
        cmp = compare_logits(args.base, args.tuned, args.out, texts)
        report_file = Path(args.out) / "extract_report.json"
        full = json.loads(report_file.read_text())
        full["logits"] = cmp
        report_file.write_text(json.dumps(full, indent=1))
        print(
            f"logits on {cmp['texts']} texts ({cmp['tokens']} tokens): max |diff| {cmp['max_abs_logit_diff']:.4g}, "
            f"mean KL(tuned || base+adapter) {cmp['mean_kl']:.4g} (base alone: {cmp['mean_kl_base']:.4g})"
        )
    return 0
