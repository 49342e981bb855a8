"""``hetmoe system``: systems of several chips (run, show, fit, list). Rules in :mod:`sim.system`."""

from __future__ import annotations

import argparse

from ..placement import POLICIES
from .common import FMT, add_model_arg, add_scoring_args, add_synthetic_args, print_json, synthetic_spec

LAYOUT_HELP = ("expert layout over the chips: contiguous (vLLM's linear), round-robin (vLLM's round_robin) or "
               "load-aware (longest processing time on the trace's tokens per expert); several comma-separated, or "
               "'all', to compare them in one report")


REPLICATE_HELP = ("override the system's experts.replicate_hot: per MoE layer, one extra copy of each of the N "
                  "experts with the most routed tokens, on another chip of their group (0: none)")


def add_system_fit_args(g: argparse.ArgumentParser | argparse._ArgumentGroup, prefix: str = "") -> None:
    """The options of sizing a system (``system fit``, and ``hw fit --system`` with ``prefix`` "--system: ")."""
    g.add_argument("--digital", action="append", default=[], metavar="CHIP:COUNT",
                   help=f"{prefix}digital chips beside the analog ones, e.g. a100-gpu:8 (repeatable)")
    g.add_argument("--layout", default="contiguous", metavar="NAME",
                   help=f"{prefix}expert layout (contiguous, round-robin, load-aware)")
    g.add_argument("--replicate-hot", type=int, default=None, metavar="N",
                   help=prefix + REPLICATE_HELP + "; the copies must fit too, and the written YAML states N")
    g.add_argument("--template", default="aimc-rack", metavar="FILE|PRESET",
                   help=f"{prefix}system whose interconnect and all-to-all the fitted system extends")
    g.add_argument("--tokens", type=int, default=1024,
                   help=f"{prefix}tokens of the synthetic trace (load-aware counts)")


def register(sub: argparse._SubParsersAction) -> None:
    from arch.system import OVERLAPS, list_system_presets

    p = sub.add_parser("system", help="systems of several chips: expert parallelism and the all-to-all",
                       formatter_class=FMT)
    s = p.add_subparsers(dest="system_command", required=True, metavar="SUBCOMMAND")
    presets = ", ".join(list_system_presets())
    run = s.add_parser(
        "run", help="simulate a model on a system of chips; write result.json, report.md and plots",
        formatter_class=FMT,
        description="Place --model's experts over the chips of --system (the --policy decides digital vs analog, "
                    "--layout which chip), book the dispatch and combine all-to-all on the interconnect and price "
                    "every chip and link (a layer-synchronous model, sim/system/simulate.py). A chip preset or chip "
                    "YAML given as --system is a one-chip system: today's single-chip engine runs, unchanged.")
    run.add_argument("--system", required=True, metavar="FILE|PRESET",
                     help=f"system preset ({presets}), system YAML, or a chip preset/YAML (one chip)")
    add_model_arg(run)
    run.add_argument("--policy", default="maxnn", metavar="NAME", help=f"placement policy: {', '.join(POLICIES)}")
    run.add_argument("--fraction", type=float, default=0.125, help="digital share of routed experts (0..1)")
    run.add_argument("--placement-file", metavar="FILE", help="file for policies explicit and sensitivity")
    run.add_argument("--layout", default="contiguous", metavar="NAME[,NAME]", help=LAYOUT_HELP)
    run.add_argument("--overlap", choices=OVERLAPS, help="override the system's all_to_all.overlap")
    run.add_argument("--replicate-hot", type=int, default=None, metavar="N", help=REPLICATE_HELP)
    run.add_argument("--trace", default="synthetic", metavar="FILE|synthetic", help="routing trace")
    run.add_argument("--mode", choices=("prefill", "decode"), default="prefill", help="prefill or decode")
    run.add_argument("--batch", type=int, default=None, help="tokens per micro-batch (prefill, default 64) or "
                                                            "sequences (decode, default 32)")
    run.add_argument("--context-tokens", type=int, default=512, metavar="N",
                     help="decode: KV length before the first token (tokens)")
    add_synthetic_args(run, tokens=4096)
    add_scoring_args(run, seed_help="seed of the synthetic trace, scores and random placement")
    run.add_argument("--out", required=True, metavar="DIR", help="output folder")
    run.set_defaults(handler=run_system, interrupt_note="nothing was written to {out}; run the command again")

    show = s.add_parser("show", help="parse a system and print its chips, links and capacity", formatter_class=FMT)
    show.add_argument("--system", required=True, metavar="FILE|PRESET", help=f"system preset ({presets}) or YAML")
    show.add_argument("--json", action="store_true", help="print as JSON")
    show.set_defaults(handler=show_system)

    fit = s.add_parser(
        "fit", help="the smallest number of analog chips that holds a model; write a system YAML",
        formatter_class=FMT,
        description="Count the crossbar slots of every analog matrix of --model under --policy, divide by one "
                    "--chip's tiles x tiers (the lower bound), and grow the count until every chip holds its share "
                    "under --layout; write a system YAML (extending --template for the interconnect) only if it "
                    "loads. Without --digital the dense modules spread over the analog chips (attention spread).")
    add_model_arg(fit)
    fit.add_argument("--chip", default="aimc-3d-moe", metavar="NAME|FILE", help="the analog chip")
    fit.add_argument("--policy", default="all-analog", metavar="NAME", help="placement whose analog matrices must fit")
    fit.add_argument("--fraction", type=float, default=0.125, help="digital share of routed experts (0..1)")
    fit.add_argument("--trace", default="synthetic", metavar="FILE|synthetic", help="routing trace (load-aware, "
                                                                                   "frequency)")
    add_system_fit_args(fit)
    fit.add_argument("--checkpoint", metavar="DIR", help="checkpoint for MaxNNScore (default: synthetic scores)")
    fit.add_argument("--seed", type=int, default=0, help="seed of synthetic trace and scores")
    fit.add_argument("--out", required=True, metavar="FILE", help="system YAML to write")
    fit.set_defaults(handler=fit_system_cmd)

    lst = s.add_parser("list", help="list the shipped system presets")
    lst.set_defaults(handler=lambda args: print("\n".join(list_system_presets())) or 0)


def _layouts(text: str) -> list[str]:
    from ..system.layout import LAYOUTS, layout_name

    names = list(LAYOUTS) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    return list(dict.fromkeys(layout_name(n) for n in names)) or [layout_name(text)]


def run_system(args: argparse.Namespace) -> int:
    from pathlib import Path

    from arch.errors import HetmoeError
    from arch.safeio import write_json
    from arch.system import load_system, with_overlap, with_replicate_hot

    from ..result import fmt_number
    from ..system.plots import write_report
    from ..system.simulate import simulate_system

    layouts = _layouts(args.layout)
    if args.tokens < 1:
        raise HetmoeError(f"--tokens {args.tokens}: allowed an integer >= 1")
    system = load_system(args.system)
    if args.overlap:
        system = with_overlap(system, args.overlap)
    if args.replicate_hot is not None:
        system = with_replicate_hot(system, args.replicate_hot)
    batch = args.batch if args.batch is not None else (64 if args.mode == "prefill" else 32)
    trace = synthetic_spec(args) if args.trace == "synthetic" else args.trace
    model = args.model
    from ..api import resolve_inputs

    _, shape, tr, st = resolve_inputs(system.chip(0), model, trace, seed=args.seed, checkpoint=args.checkpoint)
    runs = []
    for layout in layouts[:1] if system.single_chip else layouts:
        r = simulate_system(system, shape, tr, args.policy, fraction=args.fraction, layout=layout, score=args.score,
                            scope=args.scope, mode=args.mode, batch=batch, seed=args.seed,
                            context_tokens=args.context_tokens, stats=st, placement_file=args.placement_file)
        runs.append(r)
        m = r.metrics
        print(f"{system.name} ({system.n_chips} chips), {args.policy}, layout {layout}: {m['tokens']} tokens in "
              f"{m['makespan_s'] * 1e3:.3f} ms simulated ({r.wall_s:.2f} s wall)")
        keys = [("throughput_tokens_per_s", "tokens/s"), ("energy_per_token_uj", "uJ/token"),
                ("tokens_per_s_per_w", "tokens/s/W"), ("average_power_w", "W")]
        if not system.single_chip:
            keys += [("all_to_all_dispatch_bytes_per_token", "B/token"), ("all_to_all_combine_bytes_per_token",
                     "B/token"), ("all_to_all_time_share", "of makespan"),
                     ("all_to_all_exposed_time_share", "of makespan"), ("all_to_all_energy_share", "of energy"),
                     ("busiest_chip_utilisation", m["busiest_chip"]), ("busiest_link_utilisation", m["busiest_link"])]
        for key, unit in keys:
            print(f"  {key:<38} {fmt_number(m[key])} {unit}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slim = [{k: v for k, v in r.data.items() if k != "utilisation_rows"} for r in runs]
    write_json(out / "result.json", {"kind": "hetmoe-system-results", "runs": slim}, why={}, indent=2,
               sort_keys=False, default=str)
    written = write_report(out / "result.json", out)
    print(f"wrote {out}/result.json, " + ", ".join(p.name for p in written))
    return 0


def show_system(args: argparse.Namespace) -> int:
    from arch.system import load_system

    from ..system.topology import build_topology

    system = load_system(args.system)
    ic = system.spec.interconnect
    topo = build_topology(ic, system.n_chips)
    slots = sum(system.chip(c).analog.tile_count * system.chip(c).analog.tile.tiers for c in system.analog_chips)
    info = {"name": system.name, "description": system.spec.description, "source": system.spec.source,
            "chips": system.n_chips, "counts": system.counts(), "single_chip": system.single_chip,
            "topology": ic.topology, "dims": list(ic.dims) if ic.dims else None, "links": topo.link_count,
            "link_bandwidth_gbps": ic.link_bandwidth_gbps, "link_latency_ns": ic.link_latency_ns,
            "link_energy_pj_per_bit": ic.link_energy_pj_per_bit, "switch_latency_ns": ic.switch_latency_ns,
            "switch_energy_pj_per_bit": ic.switch_energy_pj_per_bit,
            "max_hops": int(topo.hops.max()), "mean_hops": float(topo.hops.sum() / max(1, system.n_chips ** 2 -
                                                                                        system.n_chips)),
            "dispatch_bits": system.spec.all_to_all.dispatch_bits, "combine_bits": system.spec.all_to_all.combine_bits,
            "overlap": system.spec.all_to_all.overlap, "attention": system.spec.attention.placement,
            "analog_crossbar_slots": int(slots),
            "analog_capacity_weights": int(sum(system.chip(c).analog.tile_count * system.chip(c).analog.tile.tiers
                                               * system.chip(c).analog.tile.rows * system.chip(c).analog.tile.cols
                                               for c in system.analog_chips))}
    if args.json:
        print_json(info)
        return 0
    print(f"{system.name}: {system.spec.description}")
    width = max(len(k) for k in info)
    for k, v in info.items():
        if k in ("name", "description"):
            continue
        print(f"  {k:<{width}}  {v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"  {k:<{width}}  {v}")
    return 0


def fit_system_cmd(args: argparse.Namespace) -> int:
    from pathlib import Path

    from arch import load_chip
    from arch.errors import HetmoeError
    from arch.safeio import atomic_path
    from arch.system import load_system, with_replicate_hot
    from workloads.traces.synthetic import SyntheticSpec

    from ..api import resolve_inputs
    from ..engine.workplan import build_plan
    from ..placement import PlacementContext, place
    from ..system.fit import fit_system, fit_yaml
    from ..system.layout import layout_name

    layout = layout_name(args.layout)
    chip = load_chip(args.chip)
    if chip.analog.tile_count == 0:
        raise HetmoeError(f"--chip {args.chip}: {chip.name} has no analog tiles; name an analog chip")
    digital = []
    for item in args.digital:
        name, _, count = item.rpartition(":")
        if not name or not count.isdigit() or int(count) < 1:
            raise HetmoeError(f"--digital {item!r}: expected CHIP:COUNT with COUNT >= 1, e.g. a100-gpu:8")
        digital.append((name, int(count)))
    digital_chips = [(load_chip(n), c) for n, c in digital]
    template = load_system(args.template)
    if template.single_chip:
        raise HetmoeError(f"--template {args.template}: a chip, not a system; name a system preset or YAML for the "
                          "interconnect")
    if args.replicate_hot is not None:
        template = with_replicate_hot(template, args.replicate_hot)
    trace = SyntheticSpec(tokens=args.tokens, seed=args.seed) if args.trace == "synthetic" else args.trace
    _, model, tr, st = resolve_inputs(chip, args.model, trace, seed=args.seed, checkpoint=args.checkpoint)
    placement = place(args.policy, PlacementContext(model, tr, st, args.fraction, "gate_rows", "layer", args.seed,
                                                    None))
    expert_tokens = build_plan(tr, model, "prefill", 64).counts.sum(axis=0)
    out = Path(args.out)
    fit = fit_system(template, chip, digital_chips, model, placement, layout, expert_tokens, out.stem)
    label = args.policy if args.policy in ("all-analog", "all-digital") else f"{args.policy} {100 * args.fraction:g}%"
    tmpl = template.spec.source if not Path(template.spec.source).is_file() else str(Path(template.spec.source).resolve())
    chip_ref = chip.source if not Path(chip.source).is_file() else str(Path(chip.source).resolve())
    dig_ref = [(d.source if not Path(d.source).is_file() else str(Path(d.source).resolve()), n)
               for d, (_, n) in zip([d for d, _ in digital_chips], digital)]
    text = fit_yaml(fit, tmpl, chip_ref, dig_ref, model.name, label, out.stem, args.replicate_hot)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
        try:
            fitted = load_system(tmp)
        except HetmoeError as exc:
            raise HetmoeError(f"system fit: the sized system would not load, so {out} was not written: "
                              f"{str(exc).replace(str(tmp), str(out))}") from None
    n_hot = template.spec.experts.replicate_hot
    print(f"{model.name} ({label}) needs {fit.analog_slots:,} crossbar slots on analog chips; one {chip.name} has "
          f"{fit.slots_per_chip:,}: at least {fit.lower_bound} chips, {fit.analog_chips} hold every chip's share "
          f"(layout {layout}{f', replicate_hot {n_hot}' if n_hot else ''}); with {', '.join(f'{n} x {d}' for d, n in digital) or 'no digital chips'}: "
          f"{fitted.n_chips} chips")
    print(f"wrote {out} (extends {tmpl})")
    return 0
