"""The result of one run: a plain JSON-able dict plus writers for JSON and tidy CSV.

Plots and reports read these files only (they never import the engine).
"""

from __future__ import annotations

import contextlib
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arch.safeio import InputError, atomic_open, atomic_path, read_json, write_text


@dataclass(frozen=True, eq=False)
class Result:
    data: dict[str, Any]
    wall_s: float = 0.0      # host time of the run; kept out of result.json so equal seeds give equal files

    @property
    def metrics(self) -> dict[str, Any]:
        return self.data["metrics"]

    def to_json(self) -> str:
        """The result without per-resource rows (those go to utilisation.csv)."""
        slim = {k: v for k, v in self.data.items() if k != "utilisation_rows"}
        return json.dumps(slim, indent=2, sort_keys=True)

    def write(self, out_dir: str | Path) -> Path:
        """Write ``result.json``, ``summary.csv``, ``energy.csv`` and ``utilisation.csv``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        # every file goes to a temporary beside it first; only when all four are written are they renamed into
        # place, result.json last (its presence marks a finished run), so an interrupt leaves the folder as it was
        with contextlib.ExitStack() as stack:
            tmp = {name: stack.enter_context(atomic_path(out / name))
                   for name in ("result.json", "utilisation.csv", "energy.csv", "summary.csv")}
            write_csv(tmp["summary.csv"], [summary_row(self.data)])
            write_csv(tmp["energy.csv"], energy_rows(self.data))
            write_csv(tmp["utilisation.csv"],
                      [{"run": self.data["run_id"], **r} for r in self.data["utilisation_rows"]])
            write_text(tmp["result.json"], self.to_json() + "\n")
        return out


def fmt_number(x: float, digits: int = 4) -> str:
    """Readable number: thousands separators from 10,000 up, ``digits`` significant digits below."""
    if x != x:  # NaN
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
    data = read_json(path, "result.json", allow_nan=True)
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a hetmoe result (expected a JSON object)")
    return data
