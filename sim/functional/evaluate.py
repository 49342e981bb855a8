"""What each placement costs in accuracy: the evaluation behind ``hetmoe accuracy``.

Metrics per variant (over every predicted token of the evaluation set, natural logs):
- ``ce_nats``: next-token cross-entropy; ``bits_per_token`` = ce / ln 2; ``perplexity`` = exp(ce);
- ``delta_ce_nats`` / ``delta_bits_per_token``: increase over the clean model on the same tokens;
  ``rel_perplexity_increase`` = exp(delta_ce) - 1;
- ``kl_nats``: mean KL(clean || noisy) of the next-token distributions;
- ``top1_agreement``: share of positions whose arg-max token equals the clean model's;
- ``routes_changed``: share of (token, MoE layer) pairs whose top-k expert set differs from the clean run.
Each placement reports mean and sample standard deviation (ddof = 1) over the noise seeds.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from math import exp, log
from pathlib import Path
from typing import Any

import numpy as np

from arch.noise import slot_physics
from arch.safeio import write_json, write_text
from arch.spec import ChipSpec
from workloads.checkpoints.stats import ExpertStats
from workloads.evaldata import EvalData
from workloads.traces.format import RoutingTrace, save_npz

from ..placement import Placement, PlacementContext, place
from .architecture import Architecture
from .backend import backend
from .forward import ForwardRun, Tally, Variant

METRICS = ("ce_nats", "bits_per_token", "perplexity", "delta_ce_nats", "delta_bits_per_token",
           "rel_perplexity_increase", "kl_nats", "top1_agreement", "routes_changed")
FIXED = ("all-analog", "all-digital", "explicit")


@dataclass(frozen=True)
class PlacementRequest:
    policy: str
    fraction: float = 0.125
    score: str | None = None          # MaxNNScore variant (None: the run's --score)

    @property
    def label(self) -> str:
        if self.policy in FIXED:
            return self.policy
        tag = f"[{self.score}]" if self.score and self.score != "gate_rows" and \
            self.policy in ("maxnn", "maxnn-lowest") else ""
        return f"{self.policy}{tag} {self.fraction * 100:g}%"


def requests(policies: list[str], fractions: list[float]) -> list[PlacementRequest]:
    """Every policy at every fraction (fixed policies once), in the order given."""
    out: list[PlacementRequest] = []
    for p in policies:
        for f in ([0.0] if p in FIXED else fractions):
            if PlacementRequest(p, f) not in out:
                out.append(PlacementRequest(p, f))
    return out


def tally_metrics(t: Tally, clean: Tally) -> dict[str, float]:
    ce = t.ce_nats / t.tokens
    ce0 = clean.ce_nats / clean.tokens
    return {"ce_nats": ce, "bits_per_token": ce / log(2), "perplexity": exp(ce),
            "delta_ce_nats": ce - ce0, "delta_bits_per_token": (ce - ce0) / log(2),
            "rel_perplexity_increase": exp(ce - ce0) - 1.0, "kl_nats": t.kl_nats / t.tokens,
            "top1_agreement": t.agree / t.tokens,
            "routes_changed": t.routes_changed / t.routed_tokens if t.routed_tokens else 0.0}


def evaluate(arch: Architecture, checkpoint: str | Path, data: EvalData, chip: ChipSpec,
             wanted: list[PlacementRequest], stats: ExpertStats, trace: RoutingTrace, *, noise_seeds: int = 3,
             seed: int = 0, score: str = "gate_rows", scope: str = "layer", placement_file: str | None = None,
             device: str = "numpy", batch_sequences: int = 8,
             progress: bool = False, routes_dir: str | Path | None = None, jobs: int = 1) -> dict[str, Any]:
    """Run the clean model and every placement under ``noise_seeds`` seeds; return the result dict.

    ``jobs`` > 1 splits the noise seeds over that many worker processes (:func:`forward_seeds`); the numbers
    are the same as in one process (each seed's draws depend only on the seed and the matrix).

    With ``routes_dir``, the routes the clean model took and those each placement took under noise
    seed 0 are written there as hetmoe traces (``clean.npz``, ``<label>.npz``), so that ``hetmoe run
    --trace`` prices the load that noise actually produces."""
    shape = arch.shape
    placements: list[Placement] = [
        place(r.policy, PlacementContext(shape, trace, stats, r.fraction, r.score or score, scope, seed,
                                         placement_file))
        for r in wanted]
    # placements with the same digital set (e.g. every policy at fraction 0) run once
    keys = [(p.digital_experts.tobytes(), tuple(sorted(p.digital_modules))) for p in placements]
    unique = list(dict.fromkeys(keys))
    slot = [unique.index(k) for k in keys]
    be = backend(device)
    digital_weight_bits = chip.precision.digital_weight_bits     # the cost side's weight precision
    job = _ForwardJob(arch, str(checkpoint), slot_physics(chip), [placements[keys.index(k)] for k in unique],
                      device, seed, digital_weight_bits, batch_sequences, data.ids)
    tallies, routes, quant_error_ratio = forward_seeds(job, list(range(noise_seeds)), jobs, progress)
    clean = tallies[Variant(None, None)]
    clean_trace = routes[Variant(None, None)]
    clean_trace.meta["source"] = f"clean routes of {checkpoint} on {data.source}"
    routes_files: dict[str, str] = {}
    if routes_dir is not None:
        Path(routes_dir).mkdir(parents=True, exist_ok=True)
        save_npz(clean_trace, Path(routes_dir) / "clean.npz")
        routes_files["clean"] = f"{Path(routes_dir).name}/clean.npz"
    ce0 = clean.ce_nats / clean.tokens
    rows = []
    for p, (req, placement) in enumerate(zip(wanted, placements)):
        per_seed = [tally_metrics(tallies[Variant(slot[p], k)], clean) for k in range(noise_seeds)]
        arr = {m: np.array([s[m] for s in per_seed]) for m in METRICS}
        layers = {}
        for k in range(noise_seeds):
            t = tallies[Variant(slot[p], k)]
            for layer, n in t.per_layer_changed.items():
                layers.setdefault(layer, []).append(n / data.predicted_tokens)
        noisy = [routes[Variant(slot[p], k)] for k in range(noise_seeds)]
        for k, t in enumerate(noisy):
            t.meta["source"] = f"{req.label} routes, noise seed {k}"
        if routes_dir is not None:
            path = Path(routes_dir) / f"{req.label.replace(' ', '-').replace('%', 'pct')}.npz"
            save_npz(noisy[0], path)
            routes_files[req.label] = f"{path.parent.name}/{path.name}"
        analog = [m for m in shape.matrices if not placement.is_digital(m)]
        rows.append({
            "label": req.label, "policy": req.policy, "fraction": req.fraction,
            "digital_expert_share": placement.summary(shape)["digital_expert_share"],
            "digital_experts_per_layer": placement.summary(shape)["digital_experts_per_layer"],
            "analog_matrices": len(analog),
            "analog_weight_share": sum(m.params for m in analog) / sum(m.params for m in shape.matrices),
            "mean": {m: float(arr[m].mean()) for m in METRICS},
            "std": {m: float(arr[m].std(ddof=1)) if noise_seeds > 1 else 0.0 for m in METRICS},
            "per_seed": {m: arr[m].tolist() for m in METRICS},
            "routes_changed_per_layer": {str(k): float(np.mean(v)) for k, v in sorted(layers.items())},
            "load_imbalance_per_layer": {str(layer): {"clean": imbalance(clean_trace, layer),
                                                      "noisy": float(np.mean([imbalance(t, layer) for t in noisy]))}
                                         for layer in shape.moe_layers},
            "notes": list(placement.notes),
        })
    return {
        **accuracy_meta(arch, checkpoint, chip, seed, noise_seeds, be.name, digital_weight_bits),
        "eval": {"source": data.source, "selection": data.selection, "sequences": data.sequences, "length": int(data.ids.shape[1]),
                 "predicted_tokens": data.predicted_tokens},
        "scores": {"source": stats.source, "synthetic": stats.synthetic, "variant": score, "scope": scope},
        "trace": trace.meta.get("source"),
        "digital_quantisation": {"bits": digital_weight_bits, "max_weight_error_over_bound": quant_error_ratio,
                                 "bound": "|W - Q(W)| <= max|W[i, :]| / (2 (2^(bits-1) - 1)) per output row i"},
        "clean": {"ce_nats": ce0, "bits_per_token": ce0 / log(2), "perplexity": exp(ce0), "tokens": clean.tokens},
        "placements": rows,
        "routes_files": routes_files,      # relative to the folder holding accuracy.json
    }


@dataclass(frozen=True)
class _ForwardJob:
    """What a worker needs to run the forward pass for some noise seeds (picklable: no backend module)."""

    arch: Architecture
    checkpoint: str
    phys: Any
    placements: list[Placement]
    device: str
    seed: int
    digital_weight_bits: int
    batch_sequences: int
    ids: np.ndarray


def _forward_group(job: _ForwardJob, seeds: list[int], progress: bool = False
                   ) -> tuple[dict[Variant, Tally], dict[Variant, RoutingTrace], float]:
    """The clean pass and every placement under ``seeds``: tallies and routes keyed by Variant(p, i), i the
    position in ``seeds``."""
    run = ForwardRun(job.arch, Path(job.checkpoint), job.phys, job.placements, seeds, backend(job.device),
                     seed=job.seed, digital_weight_bits=job.digital_weight_bits,
                     batch_sequences=job.batch_sequences, progress=progress)
    tallies = run.run(job.ids)
    routes = {v: run.trace(v, "") for v in tallies}
    return tallies, routes, run.quant_error_ratio


def forward_seeds(job: _ForwardJob, seeds: list[int], jobs: int = 1, progress: bool = False
                  ) -> tuple[dict[Variant, Tally], dict[Variant, RoutingTrace], float]:
    """:func:`_forward_group` over ``seeds``, split into ``jobs`` contiguous groups run in worker processes
    when ``jobs`` > 1 (each repeats the clean pass, one variant in 1 + placements x seeds); the tallies and
    routes come back keyed by each seed's position in ``seeds``, as one process gives them."""
    jobs = max(1, min(int(jobs), len(seeds)))
    if jobs == 1:
        return _forward_group(job, seeds, progress)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    bounds = [round(i * len(seeds) / jobs) for i in range(jobs + 1)]
    groups = [seeds[bounds[i]:bounds[i + 1]] for i in range(jobs)]
    if progress:
        print(f"hetmoe: {len(seeds)} noise seeds on {jobs} worker processes ({', '.join(str(len(g)) for g in groups)})",
              file=sys.stderr)
    tallies: dict[Variant, Tally] = {}
    routes: dict[Variant, RoutingTrace] = {}
    ratio = 0.0
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_forward_group, job, g) for g in groups]
        for start, future in zip(bounds, futures):
            t, r, q = future.result()
            ratio = max(ratio, q)
            for v in t:
                key = v if v.placement is None else Variant(v.placement, start + v.noise_seed)
                if v.placement is not None or start == 0:
                    tallies[key], routes[key] = t[v], r[v]
    return tallies, routes, ratio


def accuracy_meta(arch: Any, checkpoint: str | Path, chip: Any, seed: int, noise_seeds: int, device: str,
                  digital_weight_bits: int) -> dict[str, Any]:
    """What every accuracy result states about its model, chip noise, converters and seeds (with or without
    an ``--eval`` file)."""
    return {
        "kind": "accuracy",
        "checkpoint": str(checkpoint), "family": arch.family, "model": arch.shape.summary(),
        "hw": chip.name, "hw_source": chip.source,
        "noise": asdict(chip.analog.noise),
        "converters": {"dac_bits": chip.analog.dac.bits, "input_bits": slot_physics(chip).dac_bits,
                       "dac_encoding": chip.analog.dac.encoding, "adc_bits": chip.analog.adc.bits,
                       "tile_rows": chip.analog.tile.rows, "tile_cols": chip.analog.tile.cols},
        "seed": seed, "noise_seeds": noise_seeds, "device": device, "digital_weight_bits": digital_weight_bits,
    }


def imbalance(trace: RoutingTrace, layer: int) -> float:
    """Expert load imbalance at ``layer``: the busiest expert's selections over the mean (1 = even)."""
    p = trace.popularity(layer)
    return float(p.max() / p.mean()) if p.sum() else 0.0


def write_accuracy(result: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """``accuracy.json`` and ``accuracy.csv`` (one row per placement, units in the column names),
    each written to a temporary file and renamed, so an interrupted write never leaves half a file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js = out / "accuracy.json"
    write_json(js, result, why={}, indent=2)
    cols = ["label", "policy", "fraction", "digital_expert_share", "analog_weight_share"]
    lines = [",".join(cols + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")])]
    for r in result["placements"]:
        vals = [r["label"], r["policy"], f"{r['fraction']:g}", f"{r['digital_expert_share']:.6g}",
                f"{r['analog_weight_share']:.6g}"]
        vals += [f"{r[s][m]:.8g}" for m in METRICS for s in ("mean", "std")]
        lines.append(",".join(vals))
    csv = out / "accuracy.csv"
    write_text(csv, "\n".join(lines) + "\n")
    return js, csv

