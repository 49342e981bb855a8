"""The ``hetmoe`` command line: load -> build -> run -> write. Errors are one line, exit status 2.

One module per command group (``hw``, ``workloads``, ``run``, ``compare``, ``accuracy``), each with a
``register(subparsers)``; option helpers shared between them live in ``common``, which the command
modules import (they never import each other). Command modules import the API, sweeps and reports
lazily inside their handlers so that ``hetmoe --help`` starts fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from arch.errors import HetmoeError

from . import accuracy, compare, hw, run, whatif, workloads
from .common import FMT

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hetmoe",
        description="Simulate Mixture-of-Experts inference on heterogeneous analog-digital chips.",
        formatter_class=FMT)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules():
        module.register(sub)
    return parser


def _command_modules() -> list:
    return [hw, workloads, run, compare, whatif, accuracy]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except HetmoeError as exc:
        print(f"hetmoe: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("hetmoe: interrupted", file=sys.stderr)
        return 130


