"""The `dnsvr` command line: one entry point, sub-commands registered by each part of the project.

Every module in COMMAND_MODULES has `register(subparsers)`, which adds its sub-commands and sets
`handler(args) -> int` on each; modules import their heavy dependencies inside the handlers so that
`dnsvr --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "dnsvr.training.cli.features",
    "dnsvr.training.cli.similarity",
    "dnsvr.training.cli.train",
    "dnsvr.training.cli.evaluate",
    "dnsvr.serving.cli.triton",
    "dnsvr.serving.cli.store",
    "dnsvr.serving.cli.service",
    "dnsvr.serving.cli.web",
    "dnsvr.export.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dnsvr",
        description="Distill-and-Select video retrieval: features, similarity, export, serving and search.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `dnsvr COMMAND --help` for the options of each command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
