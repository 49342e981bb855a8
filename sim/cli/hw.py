"""``hetmoe hw show``: the parsed system and its derived figures."""

from __future__ import annotations

import argparse
import dataclasses

from arch import list_presets, load_chip
from arch.derived import UNITS, derived_figures
from arch.yamlsource import to_plain

from .common import FMT, parse_overrides, print_json


def register(sub: argparse._SubParsersAction) -> None:
    hw = sub.add_parser("hw", help="hardware descriptions",
                        formatter_class=FMT)
    hw_sub = hw.add_subparsers(dest="hw_command", required=True, metavar="SUBCOMMAND")
    show = hw_sub.add_parser(
        "show", help="parse a system and print its derived figures",
        description="Parse a hardware YAML (or preset) and print tiles, analog capacity (weights), peak analog "
                    "TOPS and TOPS/W at the declared precision, peak digital TOPS, SRAM (MiB) and DRAM "
                    "(Gbit/s), NoC diameter (hops) and bisection bandwidth (Gbit/s).",
        formatter_class=FMT)
    show.add_argument("system", metavar="NAME|FILE",
                      help=f"preset name ({', '.join(list_presets())}) or path to a hardware YAML")
    show.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                      help="override a hardware YAML key, e.g. analog.adc.bits=6 (repeatable)")
    show.add_argument("--json", action="store_true", help="print the figures and the parsed spec as JSON")
    show.set_defaults(handler=run_show)
    lst = hw_sub.add_parser("list", help="list the shipped presets")
    lst.set_defaults(handler=lambda args: print("\n".join(list_presets())) or 0)


def run_show(args: argparse.Namespace) -> int:
    chip = load_chip(args.system, parse_overrides(args.set))
    figures = derived_figures(chip)
    if args.json:
        print_json({**figures, "spec": to_plain(_as_dict(chip))})
        return 0
    print(f"{chip.name}: {chip.description}")
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        unit = UNITS.get(key, "")
        if isinstance(value, float) and value == float("inf"):
            text, unit = "unbounded", "(the energies it divides by are zero)"
        else:
            text = f"{value:,.4g}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {text} {unit}".rstrip())
    return 0


def _as_dict(obj: object) -> object:
    if dataclasses.is_dataclass(obj):
        return {f.name: _as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_as_dict(v) for v in obj]
    if hasattr(obj, "items"):
        return {k: _as_dict(v) for k, v in obj.items()}
    return obj
