"""Area budgets: a design whose footprint exceeds ``--area-budget-mm2`` is infeasible (DESIGN §6).

Feasibility is a property of a results folder, not of a run: the budget is saved beside the runs
(``OUT/area_budget.json``) and applied when tables, plots and reports are drawn, so changing it never
re-runs a point. Infeasible designs are marked in every table and plot and are never chosen as a best
point or put on a Pareto front.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from arch.safeio import InputError, read_json, write_json

BUDGET_FILE = "area_budget.json"


def problem(budget: object) -> str | None:
    """Why ``budget`` is not a usable area budget (None when it is, or when no budget is given)."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        return f"{budget!r}: allowed a finite area > 0 (mm^2)"
    return None


def save(out_dir: str | Path, budget: float | None) -> None:
    """Record the budget for this folder (``None`` removes it)."""
    path = Path(out_dir) / BUDGET_FILE
    if budget is None:
        path.unlink(missing_ok=True)
    else:
        write_json(path, {"area_budget_mm2": budget, "applies_to": "footprint_mm2"})


def load(out_dir: str | Path) -> float | None:
    path = Path(out_dir) / BUDGET_FILE
    if not path.is_file():
        return None
    data = read_json(path, "area budget")
    value = data.get("area_budget_mm2") if isinstance(data, dict) else "missing"
    bad = problem(value)
    if bad:
        raise InputError(f"{path}: area_budget_mm2 {bad}")
    return None if value is None else float(value)


def footprint_mm2(run: dict[str, Any]) -> float:
    return run["metrics"].get("chip_footprint_mm2", float("nan"))


def annotate(runs: list[dict[str, Any]], budget: float | None) -> None:
    """Set ``run["area_budget"] = {budget_mm2, footprint_mm2, feasible}`` on each run (or remove it).
    A run whose system has no area model cannot be checked and is marked infeasible, said so."""
    for r in runs:
        if budget is None:
            r.pop("area_budget", None)
            continue
        fp = footprint_mm2(r)
        r["area_budget"] = {"budget_mm2": budget, "footprint_mm2": fp,
                            "feasible": bool(fp == fp and fp <= budget),
                            "reason": ("no area model in the hardware description" if fp != fp else
                                       "" if fp <= budget else f"footprint {fp:,.1f} mm^2 > budget {budget:,.1f}")}


def feasible(run: dict[str, Any]) -> bool:
    return run.get("area_budget", {}).get("feasible", True)


def summary(runs: list[dict[str, Any]]) -> str | None:
    """One line when a budget applies: how many designs meet it, or that none does and the smallest footprint."""
    marked = [r for r in runs if "area_budget" in r]
    if not marked:
        return None
    budget = marked[0]["area_budget"]["budget_mm2"]
    ok = [r for r in marked if r["area_budget"]["feasible"]]
    if ok:
        return (f"Area budget {budget:,.1f} mm^2 (footprint): {len(ok)} of {len(marked)} runs within it"
                + ("." if len(ok) == len(marked) else "; the others are marked over budget and never chosen."))
    sizes = [footprint_mm2(r) for r in marked if footprint_mm2(r) == footprint_mm2(r)]
    smallest = f"; the smallest footprint is {min(sizes):,.1f} mm^2" if sizes else "; no run has an area model"
    return f"No design meets the area budget of {budget:,.1f} mm^2{smallest}."
