"""Option helpers shared by the command modules (which import this module, never each other)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from arch import list_presets, load_chip
from arch.errors import HetmoeError
from arch.yamlsource import nested_overrides
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
    from arch.safeio import dumps_json

    sys.stdout.write(dumps_json(data, why={}, indent=2, sort_keys=False, default=str))
    sys.stdout.write("\n")


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``KEY.PATH=VALUE`` pairs (VALUE parsed as YAML) into a nested dict."""
    return nested_overrides(items or [], "--set", "e.g. analog.tile.tiers=8")


def add_scoring_args(p: argparse.ArgumentParser, *, seed_help: str) -> None:
    """MaxNNScore variant and scope, the checkpoint it is read from, the seed and --quiet."""
    p.add_argument("--score", choices=VARIANTS, default="gate_rows", help="MaxNNScore variant")
    p.add_argument("--scope", choices=SCOPES, default="layer", help="ranking scope of the budget policies")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="safetensors checkpoint for MaxNNScore (default: seeded synthetic scores, labelled)")
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--quiet", action="store_true",
                   help="no progress output: no bar on a terminal, no progress line (one every ~10 s, "
                        "HETMOE_PROGRESS_INTERVAL_S seconds) when standard error is not one, no time and size "
                        "estimate")


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
    add_scoring_args(p, seed_help="seed of the synthetic trace, scores and random policy")
    add_memory_arg(p)
    add_synthetic_args(p, tokens=default_tokens)


WEIGHT_MACS = {4: "int4", 8: "int8", 16: "fp16"}


def add_utilisation_arg(p: argparse.ArgumentParser) -> None:
    from ..estimate import SUMMARY_ABOVE

    p.add_argument("--utilisation", choices=("full", "summary", "none"), metavar="full|summary|none",
                   help="per-resource utilisation kept per run: full = one row per tile, local digital unit, SIMD "
                        "core, DRAM channel and NoC link in utilisation.csv (~60-90 bytes each) plus the per-node "
                        "tile means of the heat map in result.json; summary = one row per resource kind (count, "
                        "idle count, mean, min, p50, p90, p99, max; fractions 0..1), ~1 KB; none = no "
                        "utilisation.csv (result.json keeps the per-kind means, maxima and the bottleneck) (default: "
                        f"summary on chips of more than {SUMMARY_ABOVE:,} resources, full below; the expected wall "
                        "time and output are said before a run when above 1 min or 100 MB)")


def add_memory_arg(p: argparse.ArgumentParser) -> None:
    from ..resources import DEFAULT_SHARE, physical_memory_bytes

    p.add_argument("--max-memory-gib", type=float, metavar="GIB",
                   help="refuse to start when the estimated peak memory exceeds this (GiB) (default: "
                        f"{DEFAULT_SHARE:.0%}% of this machine's memory, "
                        f"{DEFAULT_SHARE * physical_memory_bytes() / 2**30:,.1f} GiB)")


def check_checkpoint_memory(args: argparse.Namespace, copies: int = 1) -> None:
    """Refuse a forward pass over ``args.checkpoint`` whose float32 weights, held by ``copies`` processes,
    would not fit in the limit."""
    import math

    from workloads.checkpoints.tensors import index_checkpoint

    from ..resources import check_forward

    refs = index_checkpoint(Path(args.checkpoint))
    check_forward(memory_limit(args), 4 * copies * sum(math.prod(r.shape) for r in refs.values()),
                  str(args.checkpoint) + (f" in {copies} worker processes" if copies > 1 else ""))


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
    kw = dict(hw=args.hw, model=model, trace=trace, mode=args.mode, batch=batch, seed=args.seed,
              context_tokens=args.context_tokens, max_inflight=args.max_inflight, fill=args.fill,
              checkpoint=args.checkpoint, score=args.score, scope=args.scope,
              hw_overrides=precision_overrides(args))
    if getattr(args, "utilisation", None):       # only when given: a point's id and inputs key stay as before
        kw["utilisation"] = args.utilisation
    return kw


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


# ------------------------------------------------------------------------------------ serving (serve, compare)
def add_serving_args(p: argparse.ArgumentParser, slo_only: bool = False) -> None:
    """Request stream, scheduler and SLO options of ``hetmoe serve`` (and ``compare``'s serving mode)."""
    from workloads.requests import ARRIVALS

    r = p.add_argument_group("requests (serving)")
    r.add_argument("--requests", dest="serve_requests", type=int, default=200, metavar="N",
                   help="requests in the stream (count); the first and last --warmup-fraction are warm-up and drain")
    r.add_argument("--arrival", choices=ARRIVALS, default="poisson",
                   help="arrival process: poisson, gamma (bursty, --cv), fixed interval, or closed (all at t = 0)")
    r.add_argument("--rate", metavar="R[,R...]",
                   help="request rates to run (requests/s; comma-separated); not needed with an SLO, which searches "
                        "the rate")
    r.add_argument("--cv", type=float, default=2.0, help="gamma arrivals: coefficient of variation of the gaps (dimensionless, > 0)")
    r.add_argument("--arrivals", metavar="FILE",
                   help="arrivals file (CSV or JSON lines: arrival_s or TIMESTAMP, prompt_tokens or ContextTokens, "
                        "output_tokens or GeneratedTokens, e.g. the Azure LLM inference traces); replaces --arrival, "
                        "--rate and the length options")
    r.add_argument("--prompt-tokens", default="256", metavar="N|uniform:LO:HI|lognormal:MEAN:P99",
                   help="prompt length distribution (tokens)")
    r.add_argument("--output-tokens", default="64", metavar="N|uniform:LO:HI|lognormal:MEAN:P99",
                   help="output length distribution (tokens, >= 1)")
    r.add_argument("--warmup-fraction", type=float, default=0.1,
                   help="share of requests (by arrival) left out at each end as warm-up and drain (0..1, below 0.5)")
    s = p.add_argument_group("scheduler (vLLM's names)")
    s.add_argument("--max-num-batched-tokens", type=int, default=512, metavar="TOKENS",
                   help="token budget of one iteration: decodes plus prefill chunks (tokens)")
    s.add_argument("--max-num-seqs", type=int, default=256, metavar="N", help="requests running at once (count)")
    s.add_argument("--block-size", type=int, default=16, metavar="TOKENS", help="KV-cache block (tokens)")
    s.add_argument("--kv-capacity-tokens", type=int, metavar="TOKENS",
                   help="KV-cache capacity (tokens) (default: memory.dram.capacity_gib less the digital weights "
                        "held in DRAM)")
    s.add_argument("--serve-inflight", default="auto", metavar="auto|N[,N...]",
                   help="iterations in the pipeline at once; auto: 1 and 4 on chips with analog tiles (each design "
                        "keeps the better), 1 on digital-only chips (one iteration at a time, as vLLM on one GPU)")
    o = p.add_argument_group("service-level objective")
    o.add_argument("--slo-ttft-ms", type=float, metavar="MS", help="p99 time to first token bound (ms)")
    o.add_argument("--slo-tpot-ms", type=float, metavar="MS", help="p99 time per output token bound (ms)")
    o.add_argument("--max-rates", type=int, default=8, metavar="N", help="rates tried per design in the SLO search (count)")
    if not slo_only:
        p.add_argument("--jobs", type=int, default=2, help="local worker processes")
        p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run on a Dask distributed cluster")
        add_common_serving_inputs(p)


def add_common_serving_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                   help="override a hardware YAML key, e.g. memory.dram.capacity_gib=16 (repeatable)")
    add_model_arg(p, required=False, default="olmoe-1b-7b")
    p.add_argument("--trace", default="synthetic", metavar="FILE|synthetic",
                   help="routing log / .npz trace whose tokens give every request token its routes, reused in "
                        "order (synthetic: a seeded trace as long as the stream, at most 131,072 tokens)")
    p.add_argument("--fill", choices=FILL_RULES, help="fill MoE layers the log did not observe by this rule")
    add_scoring_args(p, seed_help="seed of arrivals, lengths, the synthetic trace and scores")


def _depths(spec: str, chip: Any) -> list[int]:
    if spec == "auto":
        return [1, 4] if chip.analog.tile_count else [1]
    try:
        out = [int(x) for x in spec.split(",")]
    except ValueError:
        raise HetmoeError(f"--serve-inflight {spec!r}: allowed auto or integers >= 1, comma-separated") from None
    if not out or min(out) < 1:
        raise HetmoeError(f"--serve-inflight {spec!r}: allowed auto or integers >= 1, comma-separated")
    return out


def run_serving(args: argparse.Namespace, chips: list[str], policies: list[str], fractions: list[float]) -> int:
    """Serve one request stream on every (chip, policy, fraction) and the baseline; write the study and report."""
    import math

    from workloads.requests import ArrivalSpec, parse_length, read_requests, synthesize_requests

    from ..placement import POLICIES, place
    from ..report.serving import write_serving_report
    from ..serve import fixed_rates, merge_depths, search_designs, write_study
    from ..serving.scheduler import SchedulerConfig
    from ..sweep import _stop, make_executor, shutdown_executor

    slo = (args.slo_ttft_ms, args.slo_tpot_ms)
    for name, v in zip(("--slo-ttft-ms", "--slo-tpot-ms"), slo):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise HetmoeError(f"{name} {v}: allowed a number > 0 (ms)")
    searching = any(v is not None for v in slo) and not args.arrivals and args.arrival != "closed"
    rates: list[float] = []
    if args.rate:
        try:
            rates = [float(x) for x in args.rate.split(",")]
        except ValueError:
            raise HetmoeError(f"--rate {args.rate!r}: allowed numbers > 0 (requests/s), comma-separated") from None
    if args.arrivals and args.rate:
        raise HetmoeError("--arrivals gives the arrival times: it takes no --rate (an SLO is checked, not searched)")
    if rates and any(not (math.isfinite(r) and r > 0) for r in rates):
        raise HetmoeError(f"--rate {args.rate!r}: allowed numbers > 0 (requests/s), comma-separated")
    if not (searching or rates or args.arrivals or args.arrival == "closed"):
        raise HetmoeError("say what load to serve: --rate R[,R...] (requests/s), an SLO to search under "
                          "(--slo-ttft-ms / --slo-tpot-ms), --arrivals FILE, or --arrival closed")
    if args.max_rates < 1:
        raise HetmoeError(f"--max-rates {args.max_rates}: allowed an integer >= 1")
    for p in policies:
        if p not in POLICIES:
            place(p, None)
    if not 0.0 <= args.fraction <= 1.0:
        raise HetmoeError(f"--fraction {args.fraction}: allowed [0, 1]")
    if args.arrivals:
        stream = read_requests(args.arrivals)
    else:
        first = rates[0] if rates else 1.0
        stream = synthesize_requests(args.serve_requests, ArrivalSpec(args.arrival, first, args.cv),
                                     parse_length(args.prompt_tokens, "--prompt-tokens"),
                                     parse_length(args.output_tokens, "--output-tokens"), seed=args.seed)
    over = parse_overrides(args.set)
    cfg = SchedulerConfig(args.max_num_batched_tokens, args.max_num_seqs, args.block_size)
    base = dict(model=args.model, trace=None if args.trace == "synthetic" else args.trace, seed=args.seed,
                stream=stream, score=args.score, scope=args.scope, checkpoint=args.checkpoint, fill=args.fill,
                warmup_fraction=args.warmup_fraction, slo_ttft_ms=slo[0], slo_tpot_ms=slo[1],
                kv_capacity_tokens=args.kv_capacity_tokens)
    designs = []
    notes = []
    systems = [(c, over, policies, False) for c in chips]
    if args.baseline and args.baseline.lower() != "none":
        systems.append((args.baseline, {"precision": over["precision"]} if "precision" in over else {},
                        ["all-digital"], True))
    for name, hw_over, pols, is_base in systems:
        chip = load_chip(name, hw_over)
        if is_base and chip.analog.tile_count:
            raise HetmoeError(f"--baseline {name}: it has {chip.analog.tile_count:,} analog tiles; a baseline must "
                              "be a digital-only system, e.g. a100-gpu")
        for pol in pols:
            if not chip.analog.tile_count and pol != "all-digital":
                notes.append(f"{chip.name} has no analog tiles: policy {pol} skipped there")
                continue
            for f in (fractions if pol not in ("all-analog", "all-digital") else [fractions[0]]):
                for depth in _depths(args.serve_inflight, chip):
                    designs.append({**base, "hw": name, "hw_overrides": hw_over, "policy": pol, "fraction": f,
                                    "scheduler": SchedulerConfig(cfg.max_num_batched_tokens, cfg.max_num_seqs,
                                                                 cfg.block_size, None, depth)})
    if not designs:
        raise HetmoeError("no design to serve: " + "; ".join(notes))
    if not searching and not rates:
        rates = [float("nan")]
    total = len(designs) * (1 + args.max_rates) if searching else len(designs) * len(rates)
    bar = None
    if not args.quiet:
        from ..progress import progress
        bar = progress(total, "serving", "runs")
    executor, client = make_executor(args.jobs, args.scheduler)
    try:
        if searching:
            k = max(2, args.jobs if not args.scheduler else 4)
            found = merge_depths(search_designs(designs, ArrivalSpec(args.arrival, 1.0, args.cv), executor,
                                                max_rates=args.max_rates, k=k, bar=bar))
        else:
            arrivals = ([None] if args.arrivals or args.arrival == "closed" else
                        [ArrivalSpec(args.arrival, r, args.cv) for r in rates])
            found = fixed_rates(designs, arrivals, executor, bar)
    except KeyboardInterrupt:
        _stop(executor)
        raise
    finally:
        if bar is not None:
            bar.close()
        shutdown_executor(executor)
        if client is not None:
            client.close()
    out = write_study(args.out, found, stream, searching=searching, slo=slo, notes=notes,
                      command="hetmoe " + " ".join(sys.argv[1:]))
    report = write_serving_report(out)
    print(report["table"])
    print(f"\nwrote {out}/report.md, serving.json, serving.csv and plots")
    return 0
