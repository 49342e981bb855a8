"""Every figure of a results folder, drawn from its files: the cost plots, and with ``accuracy.json``
the accuracy–efficiency plot and ``tradeoff.csv``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import axes, tradeoff
from .plots import PLOTS, _subtitle, caveats

ACCURACY_PLOT = "accuracy_vs_efficiency.png"


def draw_all(runs: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    axes.annotate(runs)               # every figure names the folder's swept axes the same way
    paths = []
    for name, fn in PLOTS.items():
        fn(runs, out / name)
        paths.append(out / name)
    accuracy = tradeoff.load_accuracy(out, runs)
    rows = tradeoff.join(runs, accuracy) if accuracy else []
    if rows:
        tradeoff.plot_accuracy_efficiency(rows, accuracy, _subtitle(runs), out / ACCURACY_PLOT, caveats(runs))
        tradeoff.write_csv(rows, out / "tradeoff.csv", accuracy)
        paths.append(out / ACCURACY_PLOT)
    return paths
