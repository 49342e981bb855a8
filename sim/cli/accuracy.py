"""``hetmoe accuracy``: what each placement costs in accuracy, on a real checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arch import list_presets
from arch.safeio import write_text

from ..placement import POLICIES
from .common import FMT, add_memory_arg, check_checkpoint_memory, fmt_table, parse_overrides, precision_overrides

DEFAULT_POLICIES = ["all-analog", "maxnn", "random", "maxnn-lowest"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "accuracy", help="measure the accuracy each placement keeps (noisy forward pass on a checkpoint)",
        formatter_class=FMT,
        description="Run a local Hugging Face MoE checkpoint over evaluation token ids, clean and with every "
                    "analog matrix of each placement through the noise model of --hw (analog.noise, "
                    "analog.dac.bits, analog.adc.bits, crossbar slots of analog.tile.rows x cols), for "
                    "--noise-seeds seeds with common random numbers. Writes accuracy.json and accuracy.csv "
                    "to --out: cross-entropy (nats, bits/token), its increase over clean, perplexity, KL(clean "
                    "|| noisy), top-1 agreement and routing changes, as mean and std over seeds.")
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="checkpoint folder: config.json and *.safetensors (sharded or not; fp32/fp16/bf16)")
    p.add_argument("--eval", required=True, metavar="FILE",
                   help="token ids: .npy/.npz [sequences, length], JSONL {\"input_ids\": [...]}, or text with "
                        "--tokenizer")
    p.add_argument("--tokenizer", metavar="bytes|FILE",
                   help="tokenise a text --eval file: 'bytes' (byte-level ids 0-255) or a tokenizer.json")
    p.add_argument("--seq-len", type=int, metavar="N",
                   help="tokens per sequence fed to the model (text: window length; ids: cut to N + 1) "
                        "(default: the file's length)")
    p.add_argument("--max-sequences", type=int, metavar="N", help="use N sequences spread evenly over the file (rows floor(i x S / N)); default: all")
    p.add_argument("--hw", default="hermes-64", metavar="NAME|FILE",
                   help=f"hardware preset ({', '.join(list_presets())}) or YAML file; its analog.noise section "
                        "and converter bits drive the noise")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                   help="override a hardware YAML key, e.g. analog.adc.bits=6 (repeatable)")
    p.add_argument("--policy", action="append", metavar="NAME",
                   help=f"placement policy, repeatable: {', '.join(POLICIES)} "
                        f"(default: {' '.join(DEFAULT_POLICIES)})")
    p.add_argument("--fraction", action="append", type=float, metavar="F",
                   help="digital share of routed experts for the budget policies, repeatable, 0..1 "
                        "(default: 0.125 and 0.25)")
    p.add_argument("--score", default="gate_rows", help="MaxNNScore variant (see hetmoe stats)")
    p.add_argument("--scope", default="layer", choices=("layer", "global"), help="ranking scope")
    p.add_argument("--placement-file", metavar="FILE", help="YAML/JSON list for policy 'explicit', or a scores file of hetmoe sensitivity for "
                        "policy 'sensitivity'")
    p.add_argument("--trace", metavar="FILE",
                   help="routing log for policy 'frequency' (default: a seeded synthetic trace, labelled)")
    p.add_argument("--noise-seeds", type=int, default=3, metavar="N", help="noise seeds per placement (count)")
    p.add_argument("--seed", type=int, default=0, help="base seed of the noise draws and the random policy")
    p.add_argument("--digital-weight-bits", type=int, choices=(16, 8, 4), metavar="{4,8,16}",
                   help="digital matrices' weights: 8 or 4 = symmetric per-output-channel integers, 16 = as stored "
                        "(exact) (default: the hardware's precision.digital_weight_bits, as the cost side uses)")
    p.add_argument("--device", choices=("numpy", "cpu", "cuda"), default="numpy",
                   help="array backend: numpy, or torch on cpu/cuda (needs torch)")
    p.add_argument("--batch-sequences", type=int, default=8, metavar="N",
                   help="sequences processed together (bounds activation memory)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_memory_arg(p)
    p.set_defaults(handler=run, interrupt_note="nothing was written to {out} (accuracy.json and its tables are written "
                                             "when every placement is measured); run the command again")

    s = sub.add_parser(
        "sensitivity", formatter_class=FMT,
        help="measure each routed expert's damage when it alone is analog; rank-correlate with the scores",
        description="For every (layer, expert): the damage when only that expert runs through the noise model "
                    "of --hw, mean over --noise-seeds. --method kl: the model's KL(clean || noisy) (nats/token; one "
                    "forward pass per expert and seed); --method loss: the cross-entropy increase from the same "
                    "passes; --method output: the expert's output error relative to its input "
                    "error on the tokens routed to it (cheap). Writes sensitivity.json (the scores file policy "
                    "'sensitivity' reads with --placement-file), sensitivity.csv and sensitivity.png, and prints "
                    "per-layer Spearman correlations with every MaxNNScore variant, the router row norm and the "
                    "routing frequency.")
    for args_, kw in _shared_accuracy_options():
        s.add_argument(*args_, **kw)
    s.add_argument("--method", choices=("kl", "loss", "output"), default="kl", help="damage measure (see above)")
    s.add_argument("--max-tokens", type=int, default=2048, metavar="N",
                   help="--method output: routed tokens per expert used (count)")
    s.add_argument("--noise-seeds", type=int, default=2, metavar="N", help="noise seeds (count)")
    s.add_argument("--seed", type=int, default=0, help="base seed of the noise draws")
    s.add_argument("--device", choices=("numpy", "cpu", "cuda"), default="numpy", help="array backend")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    add_memory_arg(s)
    s.set_defaults(handler=run_sensitivity, interrupt_note="nothing was written to {out} (the scores are written when "
                                                           "every expert is measured); run the command again")


def _shared_accuracy_options() -> list[tuple[tuple[str, ...], dict]]:
    return [(("--checkpoint",), dict(required=True, metavar="DIR", help="checkpoint folder (config.json, "
                                      "*.safetensors)")),
            (("--eval",), dict(required=True, metavar="FILE", help="evaluation token ids or text (see hetmoe "
                                "accuracy --help)")),
            (("--tokenizer",), dict(metavar="bytes|FILE", help="tokenise a text --eval file")),
            (("--seq-len",), dict(type=int, metavar="N", help="tokens per sequence (default: the file's)")),
            (("--max-sequences",), dict(type=int, metavar="N", help="use N sequences spread evenly over the file (rows floor(i x S / N))")),
            (("--hw",), dict(default="hermes-64", metavar="NAME|FILE", help="hardware preset or YAML file")),
            (("--set",), dict(action="append", metavar="KEY.PATH=VALUE", help="override a hardware YAML key "
                               "(repeatable)"))]


def run_sensitivity(args: argparse.Namespace) -> int:
    import json

    from arch import load_chip
    from workloads.checkpoints.stats import compute_stats
    from workloads.evaldata import load_eval

    from ..functional.architecture import read_architecture
    from ..functional.sensitivity import measure
    from ..report.sensitivity import plot_sensitivity, write_csv

    chip = load_chip(args.hw, parse_overrides(args.set))
    arch = read_architecture(args.checkpoint)
    check_checkpoint_memory(args)
    data = load_eval(args.eval, arch.shape.vocab_size, tokenizer=args.tokenizer, seq_len=args.seq_len,
                     max_sequences=args.max_sequences)
    stats = compute_stats(args.checkpoint, arch.shape, progress=not args.quiet)
    result = measure(arch, args.checkpoint, data, chip, stats, method=args.method, noise_seeds=args.noise_seeds,
                     seed=args.seed, device=args.device, max_tokens=args.max_tokens, progress=not args.quiet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "sensitivity.json", json.dumps(result, indent=2) + "\n")
    write_csv(result, out / "sensitivity.csv")
    plot_sensitivity(result, out / "sensitivity.png")
    names = list(result["spearman"])
    rows = [[layer] + [f"{result['spearman'][n][layer]:+.2f}" for n in names] for layer in result["spearman"][names[0]]]
    rows.append(["mean"] + [f"{result['spearman_mean'][n]:+.2f}" for n in names])
    print(f"Spearman correlation of measured sensitivity ({result['method']}: {result['unit']}) with each score, "
          f"per MoE layer:")
    print(fmt_table(["layer"] + names, rows))
    print(f"wrote {out / 'sensitivity.json'} (use: --policy sensitivity --placement-file {out / 'sensitivity.json'}), "
          f"sensitivity.csv, sensitivity.png")
    return 0


def run(args: argparse.Namespace) -> int:
    from arch import load_chip
    from arch.errors import HetmoeError
    from workloads.checkpoints.stats import compute_stats
    from workloads.evaldata import load_eval
    from workloads.traces.readers import read_trace
    from workloads.traces.synthetic import SyntheticSpec, synthesize

    from ..functional.architecture import read_architecture
    from ..functional.evaluate import evaluate, requests, write_accuracy

    for name, value, lo in (("--noise-seeds", args.noise_seeds, 1), ("--batch-sequences", args.batch_sequences, 1)):
        if value < lo:
            raise HetmoeError(f"{name} {value}: allowed >= {lo}")
    policies = args.policy or DEFAULT_POLICIES
    for name in policies:
        if name not in POLICIES:
            raise HetmoeError(f"unknown policy {name!r}; valid policies: {', '.join(POLICIES)}")
    fractions = args.fraction or [0.125, 0.25]
    for f in fractions:
        if not 0.0 <= f <= 1.0:
            raise HetmoeError(f"--fraction {f} outside [0, 1]")
    chip = load_chip(args.hw, precision_overrides(args))
    arch = read_architecture(args.checkpoint)
    check_checkpoint_memory(args)
    data = load_eval(args.eval, arch.shape.vocab_size, tokenizer=args.tokenizer, seq_len=args.seq_len,
                     max_sequences=args.max_sequences)
    stats = compute_stats(args.checkpoint, arch.shape, progress=not args.quiet)
    if stats.meta.get("cached"):
        print(f"hetmoe: using cached scores {stats.meta['cache']}", file=sys.stderr)
    trace = (read_trace(args.trace, arch.shape) if args.trace
             else synthesize(SyntheticSpec(tokens=1024, seed=args.seed), arch.shape))
    result = evaluate(arch, args.checkpoint, data, chip, requests(policies, fractions), stats, trace,
                      noise_seeds=args.noise_seeds, seed=args.seed, score=args.score, scope=args.scope,
                      placement_file=args.placement_file,
                      device=args.device, batch_sequences=args.batch_sequences, progress=not args.quiet,
                      routes_dir=Path(args.out) / "routes")
    js, csv = write_accuracy(result, args.out)
    c = result["clean"]
    print(f"{arch.family} checkpoint {args.checkpoint} on {chip.name}: {data.sequences} sequences, "
          f"{data.predicted_tokens} predicted tokens, {args.noise_seeds} noise seeds")
    print(f"clean: {c['ce_nats']:.5f} nats/token = {c['bits_per_token']:.5f} bits/token, "
          f"perplexity {c['perplexity']:.4f}")
    rows = [[r["label"], f"{r['analog_weight_share']:.3f}",
             f"{r['mean']['delta_bits_per_token']:+.5f} ± {r['std']['delta_bits_per_token']:.5f}",
             f"{r['mean']['rel_perplexity_increase'] * 100:+.3f} %",
             f"{r['mean']['kl_nats']:.5f} ± {r['std']['kl_nats']:.5f}",
             f"{r['mean']['top1_agreement']:.4f}", f"{r['mean']['routes_changed']:.4f}"]
            for r in result["placements"]]
    print(fmt_table(["placement", "analog weights", "Δ bits/token", "Δ perplexity", "KL nats",
                     "top-1 agree", "routes changed"], rows))
    print(f"wrote {js}, {csv} and the routes each placement took (noise seed 0) under {Path(args.out) / 'routes'}/ "
          f"(price them with hetmoe run --trace FILE)")
    return 0
