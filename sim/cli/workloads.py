"""``hetmoe trace inspect|synth`` and ``hetmoe stats``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from arch.safeio import is_zip
from workloads.checkpoints.stats import SCOPES, VARIANTS, compute_stats
from workloads.traces.format import FILL_RULES
from workloads.traces.readers import read_trace
from workloads.shapes import load_model
from workloads.traces.synthetic import synthesize
from workloads.traces.format import save_jsonl, save_npz

from .common import FMT, add_memory_arg, add_model_arg, add_synthetic_args, memory_limit, print_json, synthetic_spec

def register(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("trace", help="routing traces: inspect and synthesize", formatter_class=FMT)
    ts = tr.add_subparsers(dest="trace_command", required=True, metavar="SUBCOMMAND")
    ins = ts.add_parser("inspect", help="read a routing log and summarise it", formatter_class=FMT,
                        description="Detect the format, validate every row, drop warm-up batches and print the "
                                    "rows read, tokens kept, layers observed and per-layer popularity.")
    ins.add_argument("file", metavar="FILE", help="routing log (JSONL of a known schema) or .npz trace")
    add_model_arg(ins)
    ins.add_argument("--keep-warmup", action="store_true", help="keep start-up/warm-up batches")
    ins.add_argument("--fill", choices=FILL_RULES, help="fill unobserved MoE layers by this rule")
    ins.add_argument("--seed", type=int, default=0, help="seed for --fill (integer)")
    ins.add_argument("--save", metavar="OUT.npz", help="also write the parsed trace as .npz")
    ins.add_argument("--json", action="store_true", help="print JSON")
    add_memory_arg(ins)
    ins.set_defaults(handler=run_inspect)

    syn = ts.add_parser("synth", help="write a seeded synthetic trace", formatter_class=FMT)
    add_model_arg(syn)
    add_synthetic_args(syn, tokens=4096)
    syn.add_argument("--seed", type=int, default=0, help="random seed (integer)")
    syn.add_argument("--out", required=True, metavar="FILE", help="output: .npz or .jsonl (hetmoe formats)")
    add_memory_arg(syn)
    syn.set_defaults(handler=run_synth)

    st = sub.add_parser("stats", help="per-expert MaxNNScore from a local safetensors checkpoint",
                        formatter_class=FMT)
    st.add_argument("checkpoint", metavar="CHECKPOINT_DIR", help="folder with *.safetensors (and index)")
    add_model_arg(st, required=False)
    st.add_argument("--score", choices=VARIANTS, default="gate_rows", help="MaxNNScore variant")
    st.add_argument("--scope", choices=SCOPES, default="layer", help="ranking scope")
    st.add_argument("--no-cache", action="store_true", help="do not read or write the stats cache")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(handler=run_stats)


def inspect_dict(trace, model) -> dict:
    m = trace.meta
    return {"format": m.get("format"), "source": m.get("source"), "model": model.name,
            "rows_read": m.get("rows_read", 0), "warmup_rows_dropped": m.get("warmup_rows_dropped", 0),
            "incomplete_tokens_dropped": m.get("incomplete_tokens_dropped", 0), "tokens": trace.tokens,
            "requests": int(trace.request.max()) + 1, "layers_observed": [int(x) for x in np.flatnonzero(trace.observed)],
            "top_k": trace.top_k, "num_experts": trace.num_experts,
            "weights_normalised": m.get("weights_normalised"), "weights_row_sum_range": m.get("weights_row_sum_range"),
            "warmup_runs_dropped": m.get("warmup_runs_dropped", []), "filled_layers": m.get("filled_layers", []),
            "popularity": trace.summary()}


def run_inspect(args: argparse.Namespace) -> int:

    from ..resources import ReadGuard, check_reader

    model = load_model(args.model)
    limit = memory_limit(args)
    if Path(args.file).is_file() and Path(args.file).suffix != ".npz" and not is_zip(args.file):
        check_reader(limit, args.file)          # the size a gzip trailer records; then counted as it is read
    trace = read_trace(args.file, model, keep_warmup=args.keep_warmup, fill=args.fill, seed=args.seed,
                       guard=ReadGuard(limit))
    info = inspect_dict(trace, model)
    if args.save:
        save_npz(trace, args.save)
    if args.json:
        print_json(info)
        return 0
    print(f"{args.file}")
    for key in ("format", "rows_read", "warmup_rows_dropped", "incomplete_tokens_dropped", "tokens", "requests",
                "top_k", "num_experts", "weights_normalised"):
        print(f"  {key:<26} {info[key]}")
    for run in info["warmup_runs_dropped"]:
        print(f"  {'warm-up run dropped':<26} lines {run['first_line']}-{run['last_line']}: {run['tokens']} tokens "
              f"repeating one route ({run['rows']} rows)")
    obs = info["layers_observed"]
    print(f"  {'layers_observed':<26} {len(obs)} of {model.num_layers}: {_ranges(obs)}")
    print("  layer  max_share  min_share  entropy(normalised)")
    for layer, s in info["popularity"].items():
        print(f"  {layer:>5}  {s['max_share']:9.4f}  {s['min_share']:9.4f}  {s['normalised_entropy']:8.4f}")
    return 0


def _ranges(xs: list[int]) -> str:
    out, i = [], 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ", ".join(out)


def run_synth(args: argparse.Namespace) -> int:
    from ..resources import check_model, check_run

    model = load_model(args.model)
    spec = synthetic_spec(args)
    limit = memory_limit(args)
    check_run(limit, spec.tokens, model.num_layers, model.top_k, model.name)   # before any token is drawn
    check_model(limit, model, tables=False, synthetic=True)                   # the calibration over its experts
    trace = synthesize(spec, model)
    out = Path(args.out)
    (save_jsonl if out.suffix == ".jsonl" else save_npz)(trace, out)
    print(f"wrote {out}: {trace.tokens} tokens, {len(model.moe_layers)} MoE layers, top-{model.top_k}")
    for note in trace.meta.get("warnings", []) + [f"not modelled: {u}" for u in model.unmodelled_routing]:
        print(f"hetmoe: warning: {note}", file=sys.stderr)
    return 0


def run_stats(args: argparse.Namespace) -> int:

    model = load_model(args.model or args.checkpoint)
    stats = compute_stats(args.checkpoint, model, cache=not args.no_cache, progress=not args.json)
    if stats.meta.get("cached"):
        print(f"hetmoe: using cached scores {stats.meta['cache']} (same shards, config and shape; --no-cache "
              "recomputes)", file=sys.stderr)
    score = stats.score(args.score)
    ranks = stats.ranking(args.score, args.scope)
    if args.json:
        print_json({"checkpoint": args.checkpoint, "model": model.name, "score": args.score, "scope": args.scope,
                    "layers": {int(layer): {"scores": score[layer].tolist(), "rank": ranks[layer].tolist(),
                                            "frobenius": stats.frobenius[layer].tolist(),
                                            "router_row_norm": stats.router_row_norm[layer].tolist()}
                               for layer in model.moe_layers}})
        return 0
    print(f"{args.checkpoint}: {model.name}, score {args.score}, ranking per {args.scope}")
    for layer in model.moe_layers:
        order = np.argsort(ranks[layer])
        top = ", ".join(f"E{e}={score[layer, e]:.4g}" for e in order[: min(8, len(order))])
        print(f"  layer {layer:>3}: {top}{' ...' if len(order) > 8 else ''}")
    return 0
