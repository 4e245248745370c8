"""The `lifelong` command: one module per subcommand, each a thin call into the library."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional

COMMANDS = ("run", "validate", "ls", "show")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="lifelong", description="Continual learning of language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name in COMMANDS:
        mod = importlib.import_module(f"lifelong.cli.{name}")
        mod.add_parser(sub)
        modules[name] = mod
    args = parser.parse_args(argv)
    try:
        return int(modules[args.command].main(args) or 0)
    except ValueError as e:  # user input problems: one clear message, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
