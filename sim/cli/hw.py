"""``hetmoe hw show``: the parsed system and its derived figures."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from arch import list_presets, load_chip
from arch.derived import UNITS, derived_figures
from arch.safeio import atomic_path
from arch.yamlsource import to_plain

from .common import FMT, add_model_arg, parse_overrides, print_json


def register(sub: argparse._SubParsersAction) -> None:
    hw = sub.add_parser("hw", help="hardware descriptions",
                        formatter_class=FMT)
    hw_sub = hw.add_subparsers(dest="hw_command", required=True, metavar="SUBCOMMAND")
    show = hw_sub.add_parser(
        "show", help="parse a system and print its derived figures",
        description="Parse a hardware YAML (or preset) and print tiles, analog capacity (weights), peak analog "
                    "TOPS and TOPS/W at the declared precision, peak digital TOPS, SRAM (MiB) and DRAM "
                    "(Gbit/s), NoC diameter (hops) and bisection bandwidth (Gbit/s), and, when the system has "
                    "an area: section, footprint and total silicon (mm^2), TOPS/mm^2 and the area breakdown "
                    "by component.",
        formatter_class=FMT)
    show.add_argument("system", metavar="NAME|FILE",
                      help=f"preset name ({', '.join(list_presets())}) or path to a hardware YAML")
    show.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                      help="override a hardware YAML key, e.g. analog.adc.bits=6 (repeatable)")
    show.add_argument("--json", action="store_true", help="print the figures and the parsed spec as JSON")
    show.set_defaults(handler=run_show)
    fit = hw_sub.add_parser(
        "fit", help="write a system sized so a model's analog matrices fit", formatter_class=FMT,
        description="Size --from for --model under a placement: scale the tile count (or the tiers) so the analog "
                    "matrices fit exactly, grow the NoC mesh to hold the tiles, and write a YAML that extends "
                    "--from with the new numbers and how they were derived. The placement needs a trace and "
                    "scores: the seeded synthetic ones unless --trace/--checkpoint are given.")
    add_model_arg(fit)
    fit.add_argument("--from", dest="base", default="aimc-3d-moe", metavar="NAME|FILE",
                     help="the system to size (preset or YAML)")
    fit.add_argument("--policy", default="all-analog", metavar="NAME",
                     help="placement whose analog matrices must fit (all-analog sizes for every placement)")
    fit.add_argument("--fraction", type=float, default=0.125, help="digital share of routed experts (0..1)")
    fit.add_argument("--scale", choices=("tiles", "tiers"), default="tiles",
                     help="grow the tile count at the given tiers, or the tiers at the given tile count")
    fit.add_argument("--trace", default="synthetic", metavar="FILE|synthetic", help="routing trace (frequency policy)")
    fit.add_argument("--checkpoint", metavar="DIR", help="checkpoint for MaxNNScore (default: synthetic scores)")
    fit.add_argument("--seed", type=int, default=0, help="seed of synthetic trace and scores")
    fit.add_argument("--out", required=True, metavar="FILE", help="hardware YAML to write (with --system: system YAML)")
    g = fit.add_argument_group("a system of several chips instead of one die (the same as hetmoe system fit)")
    g.add_argument("--system", action="store_true",
                   help="size the number of --from chips (each as it is) that hold the analog matrices, beside "
                        "--digital chips, and write a system YAML")
    from .system import add_system_fit_args
    add_system_fit_args(g, "--system: ")
    fit.set_defaults(handler=run_fit)
    lst = hw_sub.add_parser("list", help="list the shipped presets")
    lst.set_defaults(handler=lambda args: print("\n".join(list_presets())) or 0)


def run_show(args: argparse.Namespace) -> int:
    chip = load_chip(args.system, parse_overrides(args.set))
    figures = derived_figures(chip)
    if args.json:
        print_json({**figures, "spec": to_plain(_as_dict(chip))})
        return 0
    print(f"{chip.name}: {chip.description}")
    breakdown = figures.pop("area_breakdown_mm2", None)
    duty = figures.pop("adc_duty", None)
    reticle = figures.pop("reticle_warning", None)
    if not chip.analog.tile_count:             # a digital-only chip: no tile, converter or MVM lines
        figures = {k: v for k, v in figures.items() if k not in ANALOG_FIGURES}
    figures = {k: v for k, v in figures.items() if v is not None}
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        if key == "area_modelled":
            if not value:
                print(f"  {'area':<{width}}  not modelled (add an area: section; see hetmoe hw show aimc-3d-moe)")
            continue
        unit = UNITS.get(key, "")
        if isinstance(value, float) and value == float("inf"):
            text, unit = "unbounded", "(the energies it divides by are zero)"
        elif isinstance(value, float) and value != value:
            text, unit = "n/a", "(no analog tiles, or no area to divide by)"
        else:
            text = f"{value:,.4g}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {text} {unit}".rstrip())
    if duty:
        print(f"  ADC idle: each converter converts in {duty['conversion_ns']:.4g} ns where the cited design "
              f"(area.adc_reference_conversion_ns) takes {duty['reference_ns']:.4g} ns, so it idles "
              f"{duty['idle']:.0%} of the time; one converter shared by {duty['share']} columns would keep this "
              f"pass time: --set analog.adc.per_tile={duty['per_tile']} "
              f"--set analog.adc.conversion_ns={duty['cited_ns']:.4g}")
    if reticle:
        print(f"  warning: {reticle}")
    if breakdown:
        print(area_table(breakdown, figures["footprint_mm2"]))
    return 0


ANALOG_FIGURES = ("tile_rows", "tile_cols", "tiers", "crossbar_slots", "analog_capacity_weights", "input_passes",
                  "adc_bits", "adc_energy_pj_per_conversion", "adc_conversion_ns", "adc_scaling", "mvm_latency_ns",
                  "mvm_energy_pj", "peak_analog_tops", "analog_tops_per_w", "tile_static_power_mw",
                  "dac_energy_pj_per_conversion", "tile_footprint_mm2", "tile_silicon_mm2", "area_stacking")


def run_fit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from arch.errors import HetmoeError

    if args.system:
        if args.scale != "tiles":
            raise HetmoeError("hw fit --system counts whole chips as they are: --scale does not apply")
        from .system import fit_system_cmd

        args.chip = args.base
        return fit_system_cmd(args)
    if args.digital or args.replicate_hot is not None:
        raise HetmoeError("--digital and --replicate-hot size a system: add --system")

    from ..api import resolve_inputs
    from ..fit import fit_chip, fit_yaml
    from ..placement import PlacementContext, place
    from ..report.plots import placement_label

    chip, model, trace, stats = resolve_inputs(args.base, args.model, args.trace, seed=args.seed,
                                               checkpoint=args.checkpoint)
    placement = place(args.policy, PlacementContext(model, trace, stats, args.fraction, "gate_rows", "layer",
                                                    args.seed, None))
    try:
        fit = fit_chip(chip, model, placement, args.scale)
    except ValueError as exc:
        raise HetmoeError(f"hw fit: {exc}") from None
    out = Path(args.out)
    label = placement_label(args.policy, args.fraction)
    base = chip.source if chip.source and not Path(chip.source).is_file() else str(Path(chip.source).resolve())
    # never leave a file the loader rejects: load the YAML from a temporary beside --out, rename only if it loads
    with atomic_path(out) as tmp:
        tmp.write_text(fit_yaml(fit, base, model.name, label, args.scale, out.stem), encoding="utf-8")
        try:
            fitted = load_chip(tmp)
        except HetmoeError as exc:
            raise HetmoeError(f"hw fit: the sized system would not load, so {out} was not written: "
                              f"{str(exc).replace(str(tmp), str(out))}") from None
    figures = derived_figures(fitted)
    area = (f"; footprint {figures['footprint_mm2']:,.1f} mm^2, silicon {figures['silicon_mm2']:,.1f} mm^2"
            if figures.get("area_modelled") else "")
    print(f"{model.name} ({label}) needs {fit.slots_needed:,} crossbar slots: {fit.tile_count:,} tiles x "
          f"{fit.tiers} tiers on a {fit.width}x{fit.height} mesh{area}")
    print(f"wrote {out} (extends {base})")
    warn_reticle(fitted)
    return 0


def warn_reticle(chip) -> None:
    """One stderr line when ``chip``'s footprint exceeds one reticle (:func:`arch.area.reticle_warning`);
    hw fit, run and compare call it once per chip they use."""
    from arch.area import chip_reticle_warning

    note = chip_reticle_warning(chip)
    if note:
        print(f"hetmoe: warning: {chip.name}: {note}", file=sys.stderr)


def area_table(breakdown: dict, footprint_mm2: float) -> str:
    """The area breakdown as an aligned text table (mm^2 and share of the footprint)."""
    rows = [f"  area breakdown {'count':>14} {'footprint mm^2':>15} {'share':>7} {'silicon mm^2':>13}"]
    for name, p in breakdown.items():
        share = 100 * p["footprint_mm2"] / footprint_mm2 if footprint_mm2 else 0.0
        rows.append(f"    {name:<20} {p['count']:>10,.4g} {p['footprint_mm2']:>15,.4g} {share:>6.1f}% "
                    f"{p['silicon_mm2']:>13,.4g}")
    return "\n".join(rows)


def _as_dict(obj: object) -> object:
    if dataclasses.is_dataclass(obj):
        return {f.name: _as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_as_dict(v) for v in obj]
    if hasattr(obj, "items"):
        return {k: _as_dict(v) for k, v in obj.items()}
    return obj
