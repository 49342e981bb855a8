"""``hetmoe run``: one simulation, written as result.json + CSV."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from arch import list_presets
from arch.errors import HetmoeError
from workloads.checkpoint import SCOPES, VARIANTS
from workloads.readers import FILL_RULES

from .cli_workloads import FMT, add_model_arg, add_synthetic_args, synthetic_spec
from .placement import POLICIES
from .result import fmt_number
from .workplan import MODES


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``KEY.PATH=VALUE`` pairs (VALUE parsed as YAML) into a nested dict."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise HetmoeError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. analog.tile.tiers=8")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def add_common_run_args(p: argparse.ArgumentParser, *, default_tokens: int) -> None:
    p.add_argument("--hw", default="aimc-3d-moe", metavar="NAME|FILE",
                   help=f"hardware preset ({', '.join(list_presets())}) or YAML file")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                   help="override a hardware YAML key, e.g. analog.tile.tiers=8 (repeatable)")
    add_model_arg(p, required=False, default="olmoe-1b-7b")
    p.add_argument("--trace", default="synthetic", metavar="FILE|synthetic",
                   help="routing log / .npz trace, or 'synthetic' for a seeded synthetic trace")
    p.add_argument("--fill", choices=FILL_RULES, help="fill MoE layers the log did not observe by this rule")
    p.add_argument("--mode", choices=MODES, default="prefill", help="prefill micro-batches or decode steps")
    p.add_argument("--batch", type=int, default=None,
                   help="tokens per micro-batch (prefill, default 64) or concurrent sequences (decode, default 32)")
    p.add_argument("--context-tokens", type=int, default=512,
                   help="decode: KV-cache length before the first decoded token (tokens)")
    p.add_argument("--max-inflight", type=int, default=4, help="prefill: micro-batches in the pipeline at once")
    p.add_argument("--score", choices=VARIANTS, default="gate_rows", help="MaxNNScore variant")
    p.add_argument("--scope", choices=SCOPES, default="layer", help="ranking scope of the budget policies")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="safetensors checkpoint for MaxNNScore (default: seeded synthetic scores, labelled)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic trace, scores and random policy")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_synthetic_args(p, tokens=default_tokens)


def run_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    batch = args.batch if args.batch is not None else (64 if args.mode == "prefill" else 32)
    trace = synthetic_spec(args) if args.trace == "synthetic" else args.trace
    return dict(hw=args.hw, model=args.model, trace=trace, mode=args.mode, batch=batch, seed=args.seed,
                context_tokens=args.context_tokens, max_inflight=args.max_inflight, fill=args.fill,
                checkpoint=args.checkpoint, score=args.score, scope=args.scope,
                hw_overrides=parse_overrides(args.set))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="simulate one placement and write result.json + CSV", formatter_class=FMT,
                       description="Simulate MoE inference of --model on --hw with one placement policy; "
                                   "write result.json, summary.csv, energy.csv and utilisation.csv to --out.")
    add_common_run_args(p, default_tokens=4096)
    p.add_argument("--policy", default="maxnn", metavar="NAME", help=f"placement policy: {', '.join(POLICIES)}")
    p.add_argument("--fraction", type=float, default=0.125,
                   help="digital share of routed experts for the budget policies (0..1)")
    p.add_argument("--placement-file", metavar="FILE", help="YAML/JSON list for policy 'explicit'")
    p.add_argument("--trace-events", metavar="FILE", help="also write a Chrome trace-event JSON (Perfetto)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .api import simulate

    result = simulate(policy=args.policy, fraction=args.fraction, placement_file=args.placement_file,
                      trace_events=args.trace_events, **run_kwargs(args))
    result.write(args.out)
    m = result.metrics
    p = result.data["placement"]
    print(f"{p['policy']}: {m['tokens']} tokens in {m['makespan_s'] * 1e3:.3f} ms simulated "
          f"({result.wall_s:.2f} s wall)")
    for key, unit, scale in (("throughput_tokens_per_s", "tokens/s", 1), ("energy_per_token_uj", "uJ/token", 1),
                             ("tokens_per_s_per_w", "tokens/s/W", 1), ("average_power_w", "W", 1),
                             ("latency_p50_us", "us", 1), ("latency_p99_us", "us", 1),
                             ("analog_exposure_macs", "share", 1)):
        print(f"  {key:<28} {fmt_number(m[key] * scale)} {unit}")
    print(f"wrote {args.out}/result.json, summary.csv, energy.csv, utilisation.csv")
    return 0
