"""Option helpers shared by the command modules (which import this module, never each other)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from arch import list_presets, load_chip
from arch.errors import HetmoeError
from arch.yamlsource import load_plain
from workloads.checkpoints.stats import SCOPES, VARIANTS
from workloads.shapes import list_model_presets
from workloads.traces.format import FILL_RULES
from workloads.traces.synthetic import POPULARITY, SyntheticSpec

from ..engine.workplan import MODES


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only when there is one to show: "(required)" for required options, nothing for
    unset (None) or off (False) ones, and nothing when the help text already words its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required and action.option_strings:
            return text if "required" in text else f"{text} (required)"
        if action.default in (None, False, argparse.SUPPRESS) or "default:" in text:
            return text
        return super()._get_help_string(action)


FMT = HelpFormatter

# what Ctrl-C keeps in commands that run points into OUT/runs (sim.sweep)
RESUME_NOTE = ("finished runs are kept in {out}/runs; run the same command again to resume (finished points are "
               "reused, the rest are computed)")


def add_model_arg(p: argparse.ArgumentParser, required: bool = True, default: str | None = None) -> None:
    where = "required" if required else "default: the --checkpoint's config.json, else olmoe-1b-7b"
    p.add_argument("--model", required=required, default=default, metavar="NAME|CONFIG",
                   help=f"model preset ({', '.join(list_model_presets())}), a config.json, or a folder holding "
                        f"one ({where})")


def add_synthetic_args(p: argparse.ArgumentParser, tokens: int) -> None:
    g = p.add_argument_group("synthetic trace")
    g.add_argument("--tokens", type=int, default=tokens, help="tokens to generate (count)")
    g.add_argument("--requests", type=int, default=8, help="requests the tokens are split into (count)")
    g.add_argument("--popularity", choices=POPULARITY, default="zipf", help="per-layer expert popularity law")
    g.add_argument("--zipf-s", type=float, default=1.0,
                   help="Zipf exponent (dimensionless, >= 0); an expert's share cannot exceed 1/k (it is in a token's "
                        "top-k at most once), so the head is capped: for OLMoE at s = 1 the top share 0.211 -> 0.125, "
                        "and at s >= 1.5 several experts are in every token's top-k (the trace metadata says how many)")
    g.add_argument("--dirichlet-alpha", type=float, default=1.0, help="Dirichlet concentration (> 0)")
    g.add_argument("--locality", type=float, default=0.0,
                   help="probability a token reuses the previous token's experts (0..1)")
    g.add_argument("--layer-correlation", type=float, default=0.0,
                   help="probability a token's experts follow its previous-layer experts (0..1); it maps experts "
                        "rank to rank, which keeps Zipf marginals but distorts counts and Dirichlet marginals "
                        "(total-variation distance up to about 0.1)")
    g.add_argument("--counts", metavar="FILE", help="per-expert selection counts (popularity 'counts')")
    g.add_argument("--counts-model", help="model key inside the counts file (default: first)")
    g.add_argument("--counts-domain", help="domain key inside the counts file (default: first)")


def synthetic_spec(args: argparse.Namespace) -> SyntheticSpec:
    return SyntheticSpec(tokens=args.tokens, requests=args.requests, popularity=args.popularity,
                         zipf_s=args.zipf_s, dirichlet_alpha=args.dirichlet_alpha, locality=args.locality,
                         layer_correlation=args.layer_correlation, seed=args.seed, counts_file=args.counts,
                         counts_model=args.counts_model, counts_domain=args.counts_domain)


def print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


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
        node[parts[-1]] = load_plain(value, f"--set {key.strip()}")
    return out


def add_common_run_args(p: argparse.ArgumentParser, *, default_tokens: int, multi_hw: bool = False) -> None:
    if multi_hw:
        p.add_argument("--hw", action="append", metavar="NAME|FILE",
                       help=f"hardware preset ({', '.join(list_presets())}) or YAML file; repeat to compare chips "
                            "side by side (default: aimc-3d-moe)")
    else:
        p.add_argument("--hw", default="aimc-3d-moe", metavar="NAME|FILE",
                       help=f"hardware preset ({', '.join(list_presets())}) or YAML file")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                   help="override a hardware YAML key, e.g. analog.tile.tiers=8 (repeatable)")
    add_model_arg(p, required=False, default=None)
    p.add_argument("--trace", default="synthetic", metavar="FILE|synthetic",
                   help="routing log / .npz trace, or 'synthetic' for a seeded synthetic trace")
    p.add_argument("--fill", choices=FILL_RULES, help="fill MoE layers the log did not observe by this rule")
    p.add_argument("--mode", choices=MODES, default="prefill", help="prefill micro-batches or decode steps")
    p.add_argument("--batch", type=int, default=None,
                   help="tokens per micro-batch (prefill, default 64) or concurrent sequences (decode, default 32)")
    p.add_argument("--context-tokens", type=int, default=512,
                   help="decode: KV-cache length before the first decoded token (tokens)")
    p.add_argument("--max-inflight", type=int, default=4, help="prefill: micro-batches in the pipeline at once")
    p.add_argument("--digital-weight-bits", type=int, choices=sorted(WEIGHT_MACS), metavar="{4,8,16}",
                   help="weights of digital matrices: 4 or 8 = symmetric per-channel integers (int4/int8 MAC "
                        "energy and rate, bytes in SRAM and DRAM), 16 = fp16; the accuracy side quantises the same "
                        "way (default: the hardware's precision.digital_weight_bits and digital_mac)")
    p.add_argument("--score", choices=VARIANTS, default="gate_rows", help="MaxNNScore variant")
    p.add_argument("--scope", choices=SCOPES, default="layer", help="ranking scope of the budget policies")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="safetensors checkpoint for MaxNNScore (default: seeded synthetic scores, labelled)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic trace, scores and random policy")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_memory_arg(p)
    add_synthetic_args(p, tokens=default_tokens)


WEIGHT_MACS = {4: "int4", 8: "int8", 16: "fp16"}


def add_memory_arg(p: argparse.ArgumentParser) -> None:
    from ..resources import DEFAULT_SHARE, physical_memory_bytes

    p.add_argument("--max-memory-gib", type=float, metavar="GIB",
                   help="refuse to start when the estimated peak memory exceeds this (GiB) (default: "
                        f"{DEFAULT_SHARE:.0%}% of this machine's memory, "
                        f"{DEFAULT_SHARE * physical_memory_bytes() / 2**30:,.1f} GiB)")


def check_checkpoint_memory(args: argparse.Namespace) -> None:
    """Refuse a forward pass over ``args.checkpoint`` whose float32 weights would not fit in the limit."""
    import math

    from workloads.checkpoints.tensors import index_checkpoint

    from ..resources import check_forward

    refs = index_checkpoint(Path(args.checkpoint))
    check_forward(memory_limit(args), 4 * sum(math.prod(r.shape) for r in refs.values()), str(args.checkpoint))


def memory_limit(args: argparse.Namespace):
    """The :class:`sim.resources.MemoryLimit` of ``--max-memory-gib``."""
    from ..resources import MemoryLimit

    return MemoryLimit.from_gib(args.max_memory_gib)


def check_budget(value: float | None, where: str = "--area-budget-mm2") -> float | None:
    """A valid area budget (mm^2) or None; a clear error otherwise."""
    from ..report.budget import problem

    bad = problem(value)
    if bad:
        raise HetmoeError(f"{where} {bad}")
    return None if value is None else float(value)


def add_budget_arg(p: argparse.ArgumentParser, default_note: str = "") -> None:
    p.add_argument("--area-budget-mm2", type=float, metavar="MM2",
                   help="silicon footprint budget (mm^2): designs over it are marked infeasible in tables and "
                        "plots and never chosen as a best point " + default_note)


def precision_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--set`` overrides plus ``--digital-weight-bits`` as precision.digital_weight_bits/digital_mac."""
    over = parse_overrides(args.set)
    bits = getattr(args, "digital_weight_bits", None)
    if bits is not None:
        over.setdefault("precision", {}).update({"digital_weight_bits": bits, "digital_mac": WEIGHT_MACS[bits]})
    return over


def run_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    batch = args.batch if args.batch is not None else (64 if args.mode == "prefill" else 32)
    trace = synthetic_spec(args) if args.trace == "synthetic" else args.trace
    model = args.model or (str(Path(args.checkpoint)) if args.checkpoint else "olmoe-1b-7b")
    return dict(hw=args.hw, model=model, trace=trace, mode=args.mode, batch=batch, seed=args.seed,
                context_tokens=args.context_tokens, max_inflight=args.max_inflight, fill=args.fill,
                checkpoint=args.checkpoint, score=args.score, scope=args.scope,
                hw_overrides=precision_overrides(args))


def fmt_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain text table, columns padded to their widest cell."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def baseline_point(kw: dict, system: str) -> dict:
    """The all-digital run on a digital-only ``system`` (same model, trace, mode and weight precision)."""
    base = load_chip(system)
    if base.analog.tile_count:
        raise HetmoeError(f"--baseline {system}: it has {base.analog.tile_count:,} analog tiles; a baseline must be "
                          "a digital-only system (no analog section, or analog.tile_count: 0), e.g. a100-gpu")
    precision = {"precision": kw["hw_overrides"]["precision"]} if "precision" in kw["hw_overrides"] else {}
    return {**kw, "hw": system, "hw_overrides": precision, "policy": "all-digital", "fraction": 1.0,
            "show_hw": True, "role": "baseline"}
