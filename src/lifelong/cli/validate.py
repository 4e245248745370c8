"""`lifelong validate CONFIG [key=value ...]`: check a config strictly, and read its eval data rows for what the
run would fail on once the model is loaded (`lifelong.validation.check_data`); load no model or tokenizer."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a config file and print the resolved config")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument(
        "--sharding",
        choices=("none", "fsdp2", "deepspeed"),
        help="check the config as a run sharded this way (what `accelerate launch` with an FSDP2 or DeepSpeed "
        "config would refuse); default: as this process was launched",
    )


def main(args: argparse.Namespace) -> int:
    import yaml

    from lifelong.validation import load_config

    cfg = load_config(args.config, args.overrides, read_data=True, sharding=args.sharding)
    print(yaml.safe_dump(cfg.model_dump(mode="json", exclude_defaults=True), sort_keys=False), end="")
    how = f", sharded with {args.sharding}" if args.sharding not in (None, "none") else ""
    names = " + ".join(s.name for s in cfg.strategy)
    print(f"# {args.config}: valid{how} ({len(cfg.stages)} stages, strategy {names})")
    return 0
