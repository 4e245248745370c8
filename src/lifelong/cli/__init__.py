"""The `lifelong` command: one module per subcommand, each a thin call into the library."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional

COMMANDS = (
    "run",
    "validate",
    "eval",
    "ls",
    "show",
    "runs",
    "report",
    "compare",
    "merge",
    "edit",
    "edit-bench",
    "export",
    "trace",
    "extract-lora",
)


HARD_EXIT = False  # set by a finished multi-process `lifelong run` (cli/run.py `_close_process_group`)


def entry() -> None:
    """The console script and `python -m lifelong`: `main`, then exit with its code. After a multi-process
    run has closed its process group, the exit skips interpreter teardown (`os._exit`, after flushing the
    standard streams and logging), so a library thread torn down at shutdown cannot abort a finished run."""
    code = main()
    if HARD_EXIT:
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="lifelong", description="Continual learning of language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name in COMMANDS:
        mod = importlib.import_module(f"lifelong.cli.{name.replace('-', '_')}")
        mod.add_parser(sub)
        modules[name] = mod
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # `key=value` overrides may follow flags: `run cfg.yaml --resume train.lr=1e-4`
        if hasattr(args, "overrides") and all("=" in u and not u.startswith("-") for u in unknown):
            args.overrides = list(args.overrides) + unknown
        else:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(modules[args.command].main(args) or 0)
    except ValueError as e:  # user input problems: one clear message, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `lifelong ls config | head`: the reader left; stop quietly like other tools
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by a closed pipe


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    entry()
