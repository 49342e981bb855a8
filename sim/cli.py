"""The ``hetmoe`` command line: load -> build -> run -> write. Errors are one line, exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from arch.errors import HetmoeError

from . import cli_hw

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hetmoe",
        description="Simulate Mixture-of-Experts inference on heterogeneous analog-digital chips.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules():
        module.register(sub)
    return parser


def _command_modules() -> list:
    from . import cli_workloads

    mods = [cli_hw, cli_workloads]
    from . import cli_compare, cli_run
    mods += [cli_run, cli_compare]
    return mods


def print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
