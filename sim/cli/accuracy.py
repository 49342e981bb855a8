"""``hetmoe accuracy``: what each placement costs in accuracy, on a real checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from arch import list_presets
from arch.safeio import write_json, write_text

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
                    "|| noisy), top-1 agreement and routing changes, as mean and std over seeds. With --tasks, "
                    "each placement x noise seed also runs EleutherAI's lm-evaluation-harness tasks (needs "
                    "pip install 'hetmoe[lmeval]'): per task metric mean and std over the seeds and the paired "
                    "difference from all-digital on the same seeds, in accuracy.json and accuracy_tasks.csv.")
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="checkpoint folder: config.json and *.safetensors (sharded or not; fp32/fp16/bf16)")
    p.add_argument("--eval", metavar="FILE",
                   help="token ids: .npy/.npz [sequences, length], JSONL {\"input_ids\": [...]}, or text with "
                        "--tokenizer (--eval, --tasks or both)")
    p.add_argument("--tokenizer", metavar="bytes|FILE",
                   help="tokenise a text --eval file and the --tasks texts: 'bytes' (byte-level ids 0-255) or a "
                        "tokenizer.json (default for --tasks: the checkpoint's tokenizer.json, else bytes)")
    add_task_args(p)
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
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="--eval: split the noise seeds over N worker processes (count; each holds its own copy of the "
                        "weights of one layer at a time and repeats the clean pass; the numbers are the same as with 1)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_memory_arg(p)
    p.set_defaults(handler=run, interrupt_note="nothing was written to {out} (accuracy.json and its tables are written "
                                             "when every placement is measured); run the command again")

    le = sub.add_parser(
        "lm-eval", formatter_class=FMT,
        help="lm-eval's own command line with hetmoe's model registered: hetmoe lm-eval run --model hetmoe ...",
        description="Runs lm-eval's command line (the same options) after registering the model 'hetmoe', for "
                    "lm-eval releases that do not load models of other packages themselves. Example: hetmoe "
                    "lm-eval run --model hetmoe --model_args checkpoint=DIR,hw=hermes-64,policy=maxnn,"
                    "fraction=0.125,noise_seed=0 --tasks hellaswag. The model_args are listed in the docs of "
                    "sim/functional/lmeval.py and the README. Needs pip install 'hetmoe[lmeval]'.")
    le.add_argument("lm_eval_args", nargs=argparse.REMAINDER, metavar="run ...",
                    help="lm-eval's arguments, starting with its subcommand (run, ls, validate)")
    le.set_defaults(handler=run_lm_eval)

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
    write_json(out / "sensitivity.json", result, indent=2)
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
    from ..functional.evaluate import accuracy_meta, evaluate, requests, write_accuracy

    for name, value, lo in (("--noise-seeds", args.noise_seeds, 1), ("--batch-sequences", args.batch_sequences, 1),
                            ("--jobs", args.jobs, 1)):
        if value < lo:
            raise HetmoeError(f"{name} {value}: allowed >= {lo}")
    tasks, tm = check_task_args(args)
    if not args.eval and not tasks:
        raise HetmoeError("give --eval FILE (perplexity on token ids), --tasks T1,T2 (lm-eval benchmark tasks) or both")
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
    check_checkpoint_memory(args, min(args.jobs, args.noise_seeds) if args.eval else 1)
    data = (load_eval(args.eval, arch.shape.vocab_size, tokenizer=args.tokenizer, seq_len=args.seq_len,
                      max_sequences=args.max_sequences) if args.eval else None)
    stats = compute_stats(args.checkpoint, arch.shape, progress=not args.quiet)
    if stats.meta.get("cached"):
        print(f"hetmoe: using cached scores {stats.meta['cache']}", file=sys.stderr)
    trace = (read_trace(args.trace, arch.shape) if args.trace
             else synthesize(SyntheticSpec(tokens=1024, seed=args.seed), arch.shape))
    wanted = requests(policies, fractions)
    out = Path(args.out)
    if data is not None:
        result = evaluate(arch, args.checkpoint, data, chip, wanted, stats, trace,
                          noise_seeds=args.noise_seeds, seed=args.seed, score=args.score, scope=args.scope,
                          placement_file=args.placement_file,
                          device=args.device, batch_sequences=args.batch_sequences, progress=not args.quiet,
                          routes_dir=out / "routes", jobs=args.jobs)
    else:
        result = accuracy_meta(arch, args.checkpoint, chip, args.seed, args.noise_seeds, args.device,
                               chip.precision.digital_weight_bits)
    if tasks:
        result["tasks"] = run_tasks(args, tasks, tm, chip, wanted, stats, trace)
    print(f"{arch.family} checkpoint {args.checkpoint} on {chip.name}: {args.noise_seeds} noise seeds"
          + (f"; {data.sequences} sequences, {data.predicted_tokens} predicted tokens" if data is not None else ""))
    written = []
    if data is not None:
        js, csv = write_accuracy(result, out)
        written += [str(js), str(csv)]
        c = result["clean"]
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
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "accuracy.json", result, why={}, indent=2)
        written.append(str(out / "accuracy.json"))
    if tasks:
        print(_tasks_table(result["tasks"]))
        write_text(out / "accuracy_tasks.csv", _tasks_csv(result["tasks"]))
        written.append(str(out / "accuracy_tasks.csv"))
    routes = (f" and the routes each placement took (noise seed 0) under {out / 'routes'}/ (price them with hetmoe run "
              f"--trace FILE)") if data is not None else ""
    print(f"wrote {', '.join(written)}{routes}")
    return 0


def add_task_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The lm-eval options shared by ``hetmoe accuracy`` and ``hetmoe compare``."""
    p.add_argument("--tasks", metavar="T1,T2",
                   help="lm-eval tasks, comma-separated (hellaswag,arc_easy,piqa,winogrande,mmlu, or local ones "
                        "with --include-path); log-likelihood tasks only")
    p.add_argument("--include-path", metavar="DIR", help="folder of extra lm-eval task YAMLs (local tasks)")
    p.add_argument("--limit", type=float, metavar="N",
                   help="lm-eval examples per task: a count, or a share when below 1 (default: all)")
    p.add_argument("--num-fewshot", type=int, metavar="N",
                   help="lm-eval few-shot examples per prompt (count; default: the task's)")
    p.add_argument("--chunk-tokens", type=int, metavar="N",
                   help="--tasks: tokens per forward call (rows x longest row); the noise draws depend on it, so keep "
                        "it fixed when comparing runs (default: 2048)")


def check_task_args(args: argparse.Namespace) -> tuple[list[str], Any]:
    """The task list and lm-eval's task manager, every task checked (known, log-likelihood) before any pass."""
    from arch.errors import HetmoeError

    tasks = [t.strip() for t in (args.tasks or "").split(",") if t.strip()]
    if args.limit is not None and not args.limit > 0:
        raise HetmoeError(f"--limit {args.limit:g}: allowed > 0")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise HetmoeError(f"--num-fewshot {args.num_fewshot}: allowed >= 0")
    if args.chunk_tokens is not None and args.chunk_tokens < 1:
        raise HetmoeError(f"--chunk-tokens {args.chunk_tokens}: allowed >= 1")
    if not tasks:
        if args.tasks is not None:
            raise HetmoeError(f"--tasks {args.tasks!r}: name at least one task")
        return [], None
    require_lmeval("--tasks")
    import logging

    from ..functional.lmeval import check_tasks, task_manager

    logging.getLogger("lm_eval").setLevel(logging.ERROR if args.quiet else logging.WARNING)
    tm = task_manager(tasks, args.include_path)      # unknown and generation tasks: refused before any pass
    check_tasks(tasks, tm)
    return tasks, tm


LMEVAL_MISSING = "needs lm-eval, an optional extra: pip install 'hetmoe[lmeval]'"


def require_lmeval(what: str) -> None:
    """One line and exit status 2 when lm-eval (or tokenizers) is not installed."""
    import importlib.util

    from arch.errors import HetmoeError

    if importlib.util.find_spec("lm_eval") is None:
        raise HetmoeError(f"{what} {LMEVAL_MISSING}")


def run_tasks(args: argparse.Namespace, tasks: list[str], tm, chip, wanted: list, stats, trace) -> dict:
    """Every placement x noise seed (and all-digital, the reference of the paired differences) through lm-eval."""
    from ..functional.evaluate import PlacementRequest
    from ..functional.lmeval import DEFAULT_CHUNK_TOKENS, HetmoeModel, evaluate_tasks, finite

    ref = next((i for i, r in enumerate(wanted) if r.policy == "all-digital"), None)
    if ref is None:
        wanted, ref = [PlacementRequest("all-digital", 0.0)] + list(wanted), 0
    model = HetmoeModel(args.checkpoint, chip, wanted, list(range(args.noise_seeds)), seed=args.seed, score=args.score,
                        scope=args.scope, placement_file=getattr(args, "placement_file", None), device=args.device,
                        batch_sequences=getattr(args, "batch_sequences", 8), chunk_tokens=args.chunk_tokens or DEFAULT_CHUNK_TOKENS,
                        tokenizer=args.tokenizer, progress=not args.quiet, stats=stats, routes=trace)
    limit = None if args.limit is None else (int(args.limit) if args.limit >= 1 else args.limit)
    return finite(evaluate_tasks(model, tasks, include_path=args.include_path, limit=limit,
                                 num_fewshot=args.num_fewshot, reference=ref, tm=tm))


def _pm(v, e) -> str:
    return "n/a" if v is None else (f"{v:.4f}" if e is None else f"{v:.4f} ± {e:.4f}")


def _tasks_table(t: dict) -> str:
    seeds = len(t["noise_seeds"])
    head = (f"lm-eval {t['lm_eval_version']} tasks ({', '.join(t['tasks'])}): mean ± std over {seeds} noise seeds; "
            f"Δ = paired difference from {t['reference']} on the same seeds, mean ± standard error")
    rows = []
    for task, metric in t["metrics"]:
        rows.append(["clean (exact weights)", task, metric, _pm(t["clean"][task][metric], None), ""])
        for r in t["placements"]:
            d = r["delta"].get(task, {}).get(metric)
            delta = "" if d is None or r["label"] == t["reference"] else \
                (f"{d['mean']:+.4f}" + (f" ± {d['se']:.4f}" if d["se"] is not None else "") if d["mean"] is not None
                 else "n/a")
            rows.append([r["label"], task, metric, _pm(r["mean"][task][metric], r["std"][task][metric]), delta])
    return head + "\n" + fmt_table(["placement", "task", "metric", "value", f"Δ vs {t['reference']}"], rows)


def _tasks_csv(t: dict) -> str:
    cols = ["label", "policy", "fraction", "task", "metric", "mean", "std", "delta_mean", "delta_std", "delta_se",
            "examples_stderr", "noise_seeds", "per_seed"]

    def f(v) -> str:
        return "" if v is None else f"{v:.8g}"

    lines = [",".join(cols)]
    for task, metric in t["metrics"]:
        lines.append(",".join(["clean", "clean", "", task, metric, f(t["clean"][task][metric]), "", "", "", "",
                               f(t["clean_examples_stderr"].get(task, {}).get(metric)), "0", ""]))
        for r in t["placements"]:
            d = r["delta"].get(task, {}).get(metric) or {}
            lines.append(",".join([r["label"], r["policy"], f"{r['fraction']:g}", task, metric,
                                   f(r["mean"][task][metric]), f(r["std"][task][metric]), f(d.get("mean")),
                                   f(d.get("std")), f(d.get("se")),
                                   f(r["examples_stderr"].get(task, {}).get(metric)), str(len(t["noise_seeds"])),
                                   " ".join(f(v) for v in r["per_seed"][task][metric])]))
    return "\n".join(lines) + "\n"


def run_lm_eval(args: argparse.Namespace) -> int:
    """lm-eval's command line with the model ``hetmoe`` registered (lm-eval releases without plugin loading)."""
    require_lmeval("hetmoe lm-eval")
    from lm_eval.__main__ import cli_evaluate

    from ..functional import lmeval  # noqa: F401 - registers the model 'hetmoe'

    import logging

    import lm_eval.utils

    argv = list(args.lm_eval_args or [])
    saved = sys.argv
    # lm-eval's command line installs a stream handler on its logger once per process: undo it afterwards
    log = logging.getLogger("lm_eval")
    saved_log = (list(log.handlers), log.level, log.propagate, getattr(lm_eval.utils, "_LOGGING_CONFIGURED", None))
    sys.argv = ["lm-eval", *(argv or ["--help"])]
    try:
        cli_evaluate()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
        log.handlers[:] = saved_log[0]
        log.setLevel(saved_log[1])
        log.propagate = saved_log[2]
        if saved_log[3] is not None:
            lm_eval.utils._LOGGING_CONFIGURED = saved_log[3]
    return 0
