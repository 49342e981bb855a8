"""A sweep names its own axes: two SRAM sizes x two modes give four designs-and-workloads, and every output
(console table, summary.csv, report, plots, Answer) names each by its swept values; lines join points only
along the digital fraction; titles never say "prefill" for a mixed-mode sweep."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_engine import TINY, TWO_NODE

SRAM = "memory.sram.capacity_mib"


def hetmoe(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sim.cli", *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"hetmoe {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """maxnn at 12.5 % and 25 % x SRAM {preset 1 MiB, 0 MiB} x {prefill, decode}: eight points, seconds."""
    root = tmp_path_factory.mktemp("axes")
    # 16 tiers: the model fits; DRAM bytes dearer than SRAM ones, so the two SRAM sizes differ in energy
    chip = TWO_NODE.replace("    tiers: 2\n", "    tiers: 16\n")
    (root / "chip.yaml").write_text(chip.replace("energy_pj_per_bit: 0.125, latency", "energy_pj_per_bit: 1.0, latency"))
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text(json.dumps({**TINY, "num_experts": 8, "num_experts_per_tok": 2}))
    spec = root / "sweep.yaml"
    spec.write_text(f"hw: {root / 'chip.yaml'}\nmodel: {root / 'model' / 'config.json'}\ntokens: 32\nbatch: 8\n"
                    f"policies: [maxnn]\nfractions: [0.125, 0.25]\nhw_overrides:\n  - {{}}\n  - {{{SRAM}: 0}}\n"
                    "modes: [prefill, decode]\n")
    out = root / "out"
    proc = hetmoe("sweep", spec, "--out", out, "--jobs", "2", "--quiet")
    return out, proc


def _runs(out: Path) -> list[dict]:
    from sim.sweep import collect

    return collect(out)


def _strip_fraction(text: str) -> str:
    return re.sub(r"\b\d+(\.\d+)?%", "", text)


def test_summary_csv_has_a_distinct_label_and_a_column_per_swept_key(swept):
    out, _ = swept
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 8
    assert len({r["label"] for r in rows}) == 8
    # two SRAM sizes x two modes: four distinct labels once the swept fraction is set aside
    assert len({_strip_fraction(r["label"]) for r in rows}) == 4
    assert {"mode", SRAM, "hw"} <= set(rows[0])
    assert {(r[SRAM], r["mode"]) for r in rows} == {("1.0", "prefill"), ("1.0", "decode"), ("0", "prefill"),
                                                    ("0", "decode")}
    by_sram = {r[SRAM]: r["hw"] for r in rows}
    assert by_sram["1.0"] != by_sram["0"] and f"{SRAM}=0" in by_sram["0"]
    for r in rows:
        assert r["mode"] in r["label"]
        assert ("sram.capacity_mib=0" in r["label"]) == (r[SRAM] == "0")
        assert ("(preset)" in r["label"]) == (r[SRAM] == "1.0")


def test_console_table_names_each_swept_key(swept):
    _, proc = swept
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("placement"))
    assert "mode" in header and "sram.capacity_mib" in header
    rows = [line for line in lines if line.startswith("maxnn")]
    assert len(rows) == 8
    assert len({" ".join(line.split()[:5]) for line in rows}) == 8       # placement, mode, SRAM: all distinct
    assert sum("decode" in line for line in rows) == 4 and sum("(preset)" in line for line in rows) == 4


def test_report_names_every_point_and_quotes_the_point_it_marks(swept):
    out, _ = swept
    report = (out / "report.md").read_text()
    table = report[report.index("## Placements"):report.index("## Energy per token")]
    rows = [line for line in table.splitlines() if line.startswith("| maxnn")]
    assert len(rows) == 8 and len({row.split("|")[1].replace(" ★", "").strip() for row in rows}) == 8
    # a front per mode: each mode has its own starred point
    starred = [row for row in rows if "★" in row]
    assert any("prefill" in row for row in starred) and any("decode" in row for row in starred)
    # the Answer quotes the efficiency of a run of the design and mode of a point it marks
    answer = report[report.index("## Answer"):report.index("## Assumptions")]
    assert "prefill:" in answer and "decode:" in answer
    quoted = re.search(r"On \S+ \[(.*?)\], maxnn 12.5 % reaches ([\d,.]+) tokens/s/W", answer)
    assert quoted, answer
    where, tpw = quoted.group(1), quoted.group(2)
    from sim.report import axes
    from sim.report.plots import label
    from sim.result import fmt_number

    runs = axes.annotate(_runs(out))
    same = [r for r in runs if r["placement"]["fraction"] == 0.125 and label(r).endswith(where)]
    assert len(same) == 1 and fmt_number(same[0]["metrics"]["tokens_per_s_per_w"]) == tpw
    marked = [row.split("|")[1].replace(" ★", "").strip() for row in starred]
    assert any(m.endswith(where) for m in marked), (where, marked)
    assert "- **Run** (prefill runs)" in report and "- **Run** (decode runs)" in report


def test_plots_name_the_swept_values_and_join_only_fractions(swept):
    from sim.report.plots import (plot_energy_breakdown, plot_exposure_efficiency, plot_throughput_energy,
                                  plot_tile_heatmap)

    out, _ = swept
    runs = _runs(out)
    getters = {plot_throughput_energy: lambda m: (m["energy_per_token_uj"], m["throughput_tokens_per_s"]),
               plot_exposure_efficiency: lambda m: (100 * m["analog_exposure_macs"], m["tokens_per_s_per_w"])}
    for plot, xy in getters.items():
        fig = plot(runs)
        title = fig._suptitle.get_text()
        assert "prefill" not in title and "decode" not in title, title
        assert sorted(ax.get_title() for ax in fig.axes) == ["decode", "prefill"]
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert any("sram.capacity_mib=0" in t for t in legend) and any("(preset)" in t for t in legend), legend
        assert "sram.capacity_mib" in fig.legends[0].get_title().get_text()
        for ax in fig.axes:
            for line in ax.lines:
                if line.get_label().startswith(("_", "Pareto")):
                    continue
                drawn = sorted(tuple(map(float, p)) for p in line.get_xydata())
                # the runs drawn on this line: exactly one design and one mode, its two fractions
                members = [r for r in runs if tuple(map(float, xy(r["metrics"]))) in drawn]
                assert len(members) == len(drawn) == 2, line.get_label()
                assert {r["config"]["mode"] for r in members} == {ax.get_title()}
                assert len({json.dumps(r["config"]["hw_overrides"], sort_keys=True) for r in members}) == 1
                assert (members[0]["config"]["hw_overrides"] != {}) == ("sram.capacity_mib=0" in line.get_label())
    bars = plot_energy_breakdown(runs)
    ticks = [t.get_text() for t in bars.axes[0].get_yticklabels()]
    assert len(set(ticks)) == 8 and sum("decode" in t for t in ticks) == 4
    assert "prefill" not in bars._suptitle.get_text()
    heat = plot_tile_heatmap(runs)
    titles = [ax.get_title().replace("\n", " ") for ax in heat.axes if ax.get_images()]
    assert titles and all("prefill" in t or "decode" in t for t in titles)
    assert len({id(im.norm) for ax in heat.axes for im in ax.get_images()}) == 2      # one scale per mode


def test_swept_keys_and_labels_from_result_dicts():
    """The naming rules on hand-made results: a key that follows the mode (batch) is the mode's; an override
    a run does not set reads its chip's value; a baseline is named by its chip alone."""
    from sim.report import axes
    from sim.report.plots import label
    from sim.sweep import add_hw_base

    def run(mode, over, batch, role=None, hw="aimc-3d-moe"):
        return {"config": {"hw": hw, "hw_source": hw, "hw_overrides": over, "mode": mode, "batch": batch,
                           "model": "m", "trace": "t", "seed": 0, "max_inflight": 4, "context_tokens": 512},
                "metrics": {"tokens": 64}, "placement": {"policy": "maxnn", "fraction": 0.125}, "trace": {},
                **({"role": role, "show_hw": True} if role else {})}

    runs = [run("prefill", {}, 64), run("decode", {}, 32),
            run("prefill", {"memory": {"sram": {"capacity_mib": 512}}}, 64),
            run("decode", {"memory": {"sram": {"capacity_mib": 512}}}, 32),
            run("prefill", {}, 64, role="baseline", hw="a100-gpu")]
    assert axes.swept(runs) == ([SRAM], ["mode"])
    axes.annotate(runs)
    assert label(runs[0]) == "maxnn 12.5%, sram.capacity_mib (preset), prefill"   # the preset's value unknown
    add_hw_base(runs)                  # what collect() does: read it from the run's hardware description
    axes.annotate(runs)
    names = [label(r) for r in runs]
    assert names[:4] == ["maxnn 12.5%, sram.capacity_mib=32 (preset), prefill",
                         "maxnn 12.5%, sram.capacity_mib=32 (preset), decode",
                         "maxnn 12.5%, sram.capacity_mib=512, prefill", "maxnn 12.5%, sram.capacity_mib=512, decode"]
    assert names[4] == "a100-gpu: maxnn 12.5%"
    runs[1]["config"]["batch"] = 16                       # now batch varies within decode: an axis of its own
    assert axes.swept(runs)[1] == ["mode", "batch"]


def test_log_axis_ticks_stay_legible_within_a_decade():
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    from sim.report.plots import log_ticks

    fig, ax = plt.subplots()
    ax.plot([2200, 3800], [2900, 4400])
    ax.set_xscale("log")
    ax.set_yscale("log")
    log_ticks(ax)
    fig.canvas.draw()
    for axis in (ax.xaxis, ax.yaxis):
        assert isinstance(axis.get_minor_formatter(), NullFormatter)
        shown = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
        assert 2 <= len(shown) <= 6 and all("^" not in t and "$" not in t for t in shown), shown
        boxes = sorted((t.get_window_extent() for t in axis.get_ticklabels() if t.get_text()),
                       key=lambda b: b.x0 if axis is ax.xaxis else b.y0)
        assert all((a.x1 <= b.x0) if axis is ax.xaxis else (a.y1 <= b.y0) for a, b in zip(boxes, boxes[1:]))
    plt.close(fig)


def test_sweep_help_documents_every_spec_key():
    from sim.sweep import SPEC_KEYS

    text = " ".join(hetmoe("sweep", "--help").stdout.split())
    for key in SPEC_KEYS:
        assert re.search(rf"\b{key}\b", text), key
