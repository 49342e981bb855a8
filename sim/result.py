"""The result of one run: a plain JSON-able dict plus writers for JSON and tidy CSV.

Plots and reports read these files only (they never import the engine).
"""

from __future__ import annotations

import contextlib
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arch.safeio import InputError, atomic_open, atomic_path, dumps_json, read_json, write_text


@dataclass(frozen=True, eq=False)
class Result:
    data: dict[str, Any]
    wall_s: float = 0.0      # host time of the run; kept out of result.json so equal seeds give equal files

    @property
    def metrics(self) -> dict[str, Any]:
        return self.data["metrics"]

    def to_json(self) -> str:
        """The result without per-resource rows (those go to utilisation.csv), as strict JSON: a figure that is
        undefined for this run (NaN, e.g. steady-state figures of a run too short for a steady window) or infinite
        is written as ``null``, with the reason under ``null_why`` (:func:`sim.metrics.null_reasons`)."""
        from .metrics import null_reasons

        slim = {k: v for k, v in self.data.items() if k not in ("utilisation_rows", "null_why")}
        return dumps_json(slim, why=null_reasons(self.data), indent=2, sort_keys=True)

    @property
    def files(self) -> list[str]:
        """The files :meth:`write` writes: no ``utilisation.csv`` with ``--utilisation none``."""
        detail = self.data.get("utilisation_detail", "full")
        return ["result.json", "summary.csv", "energy.csv"] + ([] if detail == "none" else ["utilisation.csv"])

    def write(self, out_dir: str | Path) -> Path:
        """Write ``result.json``, ``summary.csv``, ``energy.csv`` and ``utilisation.csv``: one row per resource
        (``utilisation_detail`` full), one row of statistics per resource kind (summary), or none at all (none:
        an earlier ``utilisation.csv`` in the folder is removed, so no stale table sits beside the result)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        names = self.files
        # every file goes to a temporary beside it first; only when all are written are they renamed into
        # place, result.json last (its presence marks a finished run), so an interrupt leaves the folder as it was
        with contextlib.ExitStack() as stack:
            tmp = {name: stack.enter_context(atomic_path(out / name))
                   for name in ("result.json", *[n for n in names if n != "result.json"])}
            write_csv(tmp["summary.csv"], [summary_row(self.data)])
            write_csv(tmp["energy.csv"], energy_rows(self.data))
            if "utilisation.csv" in tmp:
                write_csv(tmp["utilisation.csv"], utilisation_table(self.data))
            else:
                (out / "utilisation.csv").unlink(missing_ok=True)
            write_text(tmp["result.json"], self.to_json() + "\n")
        return out


def corrections(d: dict[str, Any]) -> list[str]:
    """One sentence per quiet correction the run made, with the size of its effect: warm-up rows the trace reader
    dropped, MoE layers filled by ``--fill``, and calendar gaps the engine closed. The console prints them after a
    run and the report lists them (the same words)."""
    e = d.get("engine") or {}
    closed, bookings = int(e.get("calendar_gaps_closed") or 0), int(e.get("bookings") or 0)
    return trace_corrections(d) + ([gap_correction(closed, bookings)] if closed else [])


def gap_correction(closed: int, bookings: int, runs: tuple[int, int] | None = None,
                   worst: tuple[int, int] | None = None) -> str:
    """The sentence for ``closed`` calendar gaps in ``bookings`` (over ``runs`` = (runs that closed any, runs),
    the ``worst`` run's own counts)."""
    where = ""
    if runs is not None and runs[1] > 1:
        where = f" over {runs[0]} of {runs[1]} runs"
        if worst is not None:
            where += f" (at most {_share(worst[0] / max(1, worst[1]))} in one run)"
    return (f"the engine closed {closed:,} calendar gaps in {bookings:,} bookings "
            f"({_share(closed / bookings if bookings else float('nan'))}){where}: a resource's calendar was full, so "
            "its earliest idle gap was merged away and no later operation could back-fill it "
            "(sim/engine/kernel.py). Closing a gap can only delay operations, so the makespan is an upper bound and "
            "throughput a lower bound; the code does not bound how large the delay is (engine.calendar_capacity in "
            "result.json gives the intervals each calendar row holds)")


def trace_corrections(d: dict[str, Any]) -> list[str]:
    """The trace's corrections of :func:`corrections`: warm-up rows dropped and layers filled."""
    out = []
    tr = d.get("trace") or {}
    dropped = int(tr.get("warmup_rows_dropped") or 0)
    if dropped:
        parts = tr.get("warmup_runs_dropped") or []
        groups = [p for p in parts if p.get("rule", "run") == "group"]
        runs = [p for p in parts if p.get("rule", "run") == "run"]
        read = tr.get("rows_read")
        share = f" of {int(read):,} read ({100 * dropped / read:.1f} %)" if read else ""
        what = []
        if groups:
            what.append(f"{len(groups)} whole warm-up batch{'es' if len(groups) != 1 else ''} "
                        f"({sum(p['rows'] for p in groups):,} rows)")
        if runs:
            what.append(f"{len(runs)} run{'s' if len(runs) != 1 else ''} of repeated routes "
                        f"({sum(p['rows'] for p in runs):,} rows)")
        out.append(f"dropped {dropped:,} warm-up rows{share} from the trace"
                   + (f": {' and '.join(what)}" if what else "")
                   + f"; the run prices the {int(tr.get('tokens', 0)):,} tokens left (each dropped stretch is listed "
                     "under trace.warmup_runs_dropped in result.json; `hetmoe trace inspect FILE "
                     "--keep-warmup` reads the log with them kept)")
    filled = tr.get("filled_layers") or []
    if filled:
        moe = (d.get("model_summary") or {}).get("moe_layers") or 0
        rule = tr.get("fill_rule") or (d.get("config") or {}).get("fill") or "a fill rule"
        how = ("copied from the nearest observed layer, experts relabelled" if rule == "replicate" else
               "drawn from the pooled popularity of the observed layers" if rule == "synthetic" else "filled")
        of = f" of {moe}" if moe else ""
        share = f" ({100 * len(filled) / moe:.0f} % of the routed-expert work priced)" if moe else ""
        shown = ", ".join(map(str, filled[:6])) + (" ..." if len(filled) > 6 else "")
        out.append(f"{len(filled)}{of} MoE layers were not in the trace and were filled by --fill {rule}{share}: "
                   f"their routes are {how}, not observed (layers {shown})")
    return out


def _share(x: float) -> str:
    if x != x:
        return "n/a"
    if x >= 1e-3:
        return f"{100 * x:.2g} %"
    return f"{x * 1e6:.2g} per million bookings"


def utilisation_table(d: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``utilisation.csv``: one per resource (full), or one per resource kind with its statistics
    (summary: ``kind, count, idle, mean, min, p50, p90, p99, max``, utilisation as a fraction 0..1)."""
    if d.get("utilisation_detail", "full") == "summary":
        return [{"run": d["run_id"], "kind": kind, **stats} for kind, stats in d.get("utilisation_stats", {}).items()]
    return [{"run": d["run_id"], **r} for r in d.get("utilisation_rows", [])]


def fmt_number(x: float | None, digits: int = 4) -> str:
    """Readable number: thousands separators from 10,000 up, ``digits`` significant digits below; ``n/a`` for
    an undefined figure (NaN, or None: a ``null`` of a result.json)."""
    if x is None or x != x:  # NaN
        return "n/a"
    if abs(x) >= 1e4:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def summary_row(d: dict[str, Any]) -> dict[str, Any]:
    p = d["placement"]
    return {"run": d["run_id"], "policy": p["policy"], "digital_fraction": p.get("fraction", ""),
            "digital_expert_share": p["digital_expert_share"], "mode": d["config"]["mode"],
            "hw": d["config"]["hw"], **d["metrics"],
            **({"area_budget_mm2": d["area_budget"]["budget_mm2"], "area_feasible": d["area_budget"]["feasible"]}
               if "area_budget" in d else {})}


def energy_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"run": d["run_id"], "domain": dom, "component": comp, "energy_pj": v}
            for dom, comps in d["energy_pj"].items() for comp, v in comps.items()]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        write_text(path, "")
        return
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_open(path) as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def load_result(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "result.json"
    data = read_json(path, "result.json", allow_nan=True)       # NaN: result files written before strict JSON
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a hetmoe result (expected a JSON object)")
    return restore_nulls(data)


def restore_nulls(data: dict[str, Any]) -> dict[str, Any]:
    """A loaded result as the run held it: each value its JSON wrote as ``null`` because it was not a finite number
    (listed under ``null_why``), and every ``null`` metric, is NaN again, so the readers (report, tables, plots)
    print ``n/a`` for it as for any undefined figure. ``null_why`` stays, for the reasons."""
    nulled: set[str] = set((data.get("null_why") or {}) if isinstance(data.get("null_why"), dict) else ())
    metrics = data.get("metrics")
    if isinstance(metrics, dict):
        for k, v in metrics.items():
            if v is None:
                metrics[k] = float("nan")
    if not nulled:
        return data

    def walk(node: Any, path: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in list(items):
            sub = (f"{path}.{k}" if path else str(k)) if isinstance(node, dict) else f"{path}[{k}]"
            if v is None and sub in nulled:
                node[k] = float("nan")
            elif isinstance(v, (dict, list)) and sub != "null_why":
                walk(v, sub)

    walk(data, "")
    return data
