"""Expert sensitivity against the scores, from a ``sensitivity.json`` file alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from arch.safeio import write_text

from .plots import _style, save_figure  # noqa: E402


def _arr(rows: list) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in rows], float)


def write_csv(result: dict[str, Any], path: Path) -> None:
    sens, std = _arr(result["sensitivity"]), _arr(result["sensitivity_std"])
    scores = {k: _arr(v) for k, v in result["scores"].items()}
    unit = {"kl": "kl_nats_per_token", "loss": "delta_ce_nats_per_token"}.get(result["method"],
                                                                               "error_over_input_norm")
    lines = [",".join(["layer", "expert", f"sensitivity_{unit}_mean", f"sensitivity_{unit}_std", *scores])]
    for layer in result["moe_layers"]:
        for e in range(result["experts"]):
            vals = [sens[layer, e], std[layer, e]] + [scores[k][layer, e] for k in scores]
            lines.append(",".join([str(layer), str(e)] + [f"{v:.8g}" for v in vals]))
    write_text(path, "\n".join(lines) + "\n")


def plot_sensitivity(result: dict[str, Any], path: Path, score: str = "maxnn_gate_rows") -> None:
    """Measured sensitivity against MaxNNScore, one colour per MoE layer, Spearman rho in the legend."""
    sens, std, key = _arr(result["sensitivity"]), _arr(result["sensitivity_std"]), _arr(result["scores"][score])
    layers = result["moe_layers"]
    fig, ax = plt.subplots(figsize=(7.5, 5.2), dpi=150)
    cmap = plt.get_cmap("viridis", max(len(layers), 2))
    for i, layer in enumerate(layers):
        rho = result["spearman"][score][str(layer)]
        ax.errorbar(key[layer], sens[layer], yerr=std[layer], fmt="o", ms=5, capsize=2, color=cmap(i),
                    label=f"layer {layer} (ρ = {rho:+.2f})", alpha=0.85)
    unit = result["unit"]
    ax.set_xlabel(f"score: {score.replace('maxnn_', 'MaxNNScore ')}")
    ax.set_ylabel(f"measured sensitivity: {unit}\n(only this expert analog; mean ± std over seeds)")
    ax.set_title(f"Expert sensitivity vs score — {Path(result['checkpoint']).name} on {result['hw']}\n"
                 f"mean Spearman ρ = {result['spearman_mean'][score]:+.2f}", fontsize=10)
    _style(ax)
    ax.legend(fontsize=7, frameon=False, ncol=2 if len(layers) > 8 else 1)
    fig.tight_layout()
    save_figure(fig, path)
