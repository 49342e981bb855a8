"""Long runs say what they do: progress lines off a terminal (fake clock), time and size estimates, the
--utilisation switch, and the quiet corrections (warm-up rows, filled layers, closed calendar gaps) said out loud."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from arch import load_chip
from arch.progress import LineProgress, NoProgress, interval_s, progress
from sim import estimate
from sim.api import simulate, utilisation_stats
from sim.cli import main
from sim.result import corrections
from tests.test_workloads_traces import QWEN, _qwen_rows
from workloads.shapes import load_model
from workloads.traces.readers import read_trace
from workloads.traces.synthetic import SyntheticSpec

# a chip above the full/summary threshold is still quick: 1,024 tiles x 84 tiers on a 32 x 32 mesh (5,001
# resources, full by default); 64 x 64 (20,233 resources) is summary by default
BIG = {"analog": {"tile_count": 1024, "tile": {"tiers": 84}}, "noc": {"width": 32, "height": 32}}
HUGE = {"analog": {"tile_count": 4096, "tile": {"tiers": 21}}, "noc": {"width": 64, "height": 64}}


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# ----------------------------------------------------------------------------- progress lines

def test_plain_lines_at_most_once_per_interval_and_none_for_short_runs():
    clock, out = Clock(), io.StringIO()
    bar = progress(4096, "engine", "layers", stream=out, clock=clock, interval=10, terminal=False)
    assert isinstance(bar, LineProgress)
    for _ in range(100):                 # a short run: 100 layers within the first interval
        clock.t += 0.05
        bar.update(1)
    assert out.getvalue() == ""
    clock.t = 112.0                      # 12 s after the start: one line
    bar.update(1134)
    lines = out.getvalue().splitlines()
    assert lines == ["hetmoe: engine 1,234/4,096 layers (30 %), 12 s elapsed, about 28 s left"]
    clock.t = 115.0                      # 3 s later: no new line
    bar.update(10)
    assert len(out.getvalue().splitlines()) == 1
    clock.t = 122.0
    bar.update(10)
    assert len(out.getvalue().splitlines()) == 2
    bar.close()


def test_quiet_says_nothing_and_a_terminal_gets_a_bar(monkeypatch):
    assert isinstance(progress(10, "x", "y", quiet=True), NoProgress)
    bar = progress(10, "x", "y", stream=io.StringIO(), terminal=True)
    assert type(bar).__name__ == "tqdm"
    bar.close()
    monkeypatch.setenv("HETMOE_PROGRESS_INTERVAL_S", "2.5")
    assert interval_s() == 2.5
    monkeypatch.setenv("HETMOE_PROGRESS_INTERVAL_S", "nonsense")
    assert interval_s() == 10.0


def test_engine_progress_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    """The engine's progress (api): lines on a non-terminal standard error, driven by a clock that jumps."""
    import arch.progress as ap
    ticks = iter(range(0, 10_000, 7))
    monkeypatch.setattr(ap, "CLOCK", lambda: float(next(ticks)))
    monkeypatch.setenv("HETMOE_PROGRESS_INTERVAL_S", "10")
    simulate("hermes-64", "olmoe-1b-7b", SyntheticSpec(tokens=256), hw_overrides=BIG, progress=True,
             utilisation="none")
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("hetmoe: engine ")]
    assert lines and all(" layers (" in x and "elapsed" in x for x in lines)
    simulate("hermes-64", "olmoe-1b-7b", SyntheticSpec(tokens=256), hw_overrides=BIG, progress=False,
             utilisation="none")
    assert "hetmoe: engine" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- estimates

@pytest.mark.parametrize("hw,over,detail", [("aimc-3d-moe", {}, "full"), ("hermes-64", BIG, "full"),
                                            ("hermes-64", BIG, "summary")])
def test_size_estimate_within_2x_of_what_a_run_writes(tmp_path, hw, over, detail):
    chip = load_chip(hw, over)
    result = simulate(hw, "olmoe-1b-7b", SyntheticSpec(tokens=128), hw_overrides=over, utilisation=detail)
    result.write(tmp_path)
    guess = estimate.run_bytes(chip, detail)
    for name, b in guess.items():
        actual = (tmp_path / name).stat().st_size
        assert actual / 2 <= b <= 2 * actual, (name, b, actual)


def test_default_detail_and_the_announcement():
    small, huge = load_chip("aimc-3d-moe"), load_chip("hermes-64", HUGE)
    assert sum(estimate.resource_counts(small).values()) == 2345 and estimate.default_detail(small) == "full"
    assert sum(estimate.resource_counts(huge).values()) == 20233 and estimate.default_detail(huge) == "summary"
    assert estimate.plan_line([{"chip": small, "detail": "full", "seconds": 2.0}]) is None
    # a fitted chip like the issue's: 845 x 844 mesh, 712,656 tiles, 16 compare runs
    fitted = load_chip("hermes-64", {"analog": {"tile_count": 712_656}, "noc": {"width": 845, "height": 844}})
    runs = [{"chip": fitted, "detail": "full", "seconds": 150.0}] * 16
    line = estimate.plan_line(runs, jobs=2, collected=True)
    assert line.startswith("hetmoe: about 20 min and ") and "16 runs x " in line
    assert "--utilisation summary keeps it to" in line
    assert estimate.run_seconds(fitted, 32, 1) > estimate.run_seconds(small, 32, 1)


# ----------------------------------------------------------------------------- the --utilisation switch

@pytest.fixture(scope="module")
def three_details(tmp_path_factory):
    out = {}
    for detail in ("full", "summary", "none"):
        folder = tmp_path_factory.mktemp(detail)
        r = simulate("aimc-3d-moe", "olmoe-1b-7b", SyntheticSpec(tokens=128), utilisation=detail)
        r.write(folder)
        out[detail] = (r, folder)
    return out


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_full_writes_a_row_per_resource(three_details):
    r, folder = three_details["full"]
    rows = _csv(folder / "utilisation.csv")
    assert len(rows) == sum(estimate.resource_counts(load_chip("aimc-3d-moe")).values())
    saved = json.loads((folder / "result.json").read_text())
    assert saved["utilisation_detail"] == "full" and saved["tile_utilisation_by_node"]


def test_summary_statistics_match_the_per_resource_rows(three_details):
    full_rows = _csv(three_details["full"][1] / "utilisation.csv")
    r, folder = three_details["summary"]
    saved = json.loads((folder / "result.json").read_text())
    assert saved["utilisation_detail"] == "summary" and "tile_utilisation_by_node" not in saved
    table = {row["kind"]: row for row in _csv(folder / "utilisation.csv")}
    assert set(table) == {"tile", "local_digital", "simd", "dram", "noc_link"}
    for kind, row in table.items():
        v = np.array([float(x["utilisation"]) for x in full_rows if x["kind"] == kind])
        want = {"count": v.size, "idle": int((v == 0).sum()), "mean": v.mean(), "min": v.min(),
                "p50": np.percentile(v, 50), "p90": np.percentile(v, 90), "p99": np.percentile(v, 99),
                "max": v.max()}
        for key, value in want.items():
            assert float(row[key]) == pytest.approx(value, rel=1e-9, abs=1e-15), (kind, key)
            assert saved["utilisation_stats"][kind][key] == pytest.approx(value, rel=1e-9, abs=1e-15)
    # the headline figures are those of the full run
    assert saved["utilisation"] == pytest.approx(three_details["full"][0].data["utilisation"])


def test_none_keeps_the_headline_figures_only(three_details, tmp_path):
    r, folder = three_details["none"]
    assert not (folder / "utilisation.csv").exists()
    saved = json.loads((folder / "result.json").read_text())
    assert saved["utilisation_detail"] == "none"
    assert not {"utilisation_rows", "utilisation_stats", "tile_utilisation_by_node"} & set(saved)
    assert saved["utilisation"] == pytest.approx(three_details["full"][0].data["utilisation"])
    assert saved["bottleneck"]["binding_resource"] == three_details["full"][0].data["bottleneck"]["binding_resource"]
    # a stale utilisation.csv of an earlier full run in the same folder is removed
    three_details["full"][0].write(tmp_path)
    r.write(tmp_path)
    assert not (tmp_path / "utilisation.csv").exists()


def test_heat_map_says_when_rows_were_not_kept(three_details, tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from sim.report.plots import plot_tile_heatmap
    from sim.result import load_result

    data = load_result(three_details["summary"][1])
    fig = plot_tile_heatmap([data], None)
    fig = fig if isinstance(fig, Figure) else fig[0] if isinstance(fig, tuple) else fig
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("per-tile utilisation was not kept (--utilisation summary)" in t for t in texts)


def test_utilisation_stats_count_idle_resources():
    rows = [{"kind": "tile", "utilisation": u} for u in (0.0, 0.0, 0.5, 1.0)]
    s = utilisation_stats(rows)["tile"]
    assert s["count"] == 4 and s["idle"] == 2 and s["mean"] == 0.375 and s["max"] == 1.0


def test_sweep_spec_takes_a_utilisation_key(tmp_path):
    from sim.sweep import load_sweep_spec

    spec = tmp_path / "s.yaml"
    spec.write_text("policies: [maxnn]\nutilisation: summary\ntokens: 64\n")
    assert all(p["utilisation"] == "summary" for p in load_sweep_spec(spec))
    spec.write_text("policies: [maxnn]\nutilisation: some\n")
    with pytest.raises(Exception, match="utilisation"):
        load_sweep_spec(spec)


# ----------------------------------------------------------------------------- quiet corrections

REAL = [([1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1]), ([4, 3, 2, 1], [0.5, 0.2, 0.2, 0.1]),
        ([7, 8, 9, 10], [0.3, 0.3, 0.2, 0.1]), ([11, 12, 13, 14], [0.4, 0.3, 0.2, 0.1])]


def _warm_log(tmp_path: Path) -> Path:
    dummy = [([1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1])] * 6                 # one batch, one route: a group
    uniform = [([5, 6, 7, 8], [0.25] * 4), ([9, 10, 11, 12], [0.25] * 4)]   # uniform weights: a group
    repeated = [([20, 21, 22, 23], [0.4, 0.3, 0.2, 0.1])] * 16        # 16 repeats inside a real batch: a run
    path = tmp_path / "log.jsonl"
    path.write_text(_qwen_rows([dummy, uniform, REAL * 3 + repeated + REAL * 3]))
    return path


def test_warmup_list_adds_up_to_the_rows_dropped(tmp_path):
    trace = read_trace(_warm_log(tmp_path), load_model(QWEN))
    parts = trace.meta["warmup_runs_dropped"]
    assert trace.meta["warmup_rows_dropped"] == 6 + 2 + 16
    assert sum(p["rows"] for p in parts) == trace.meta["warmup_rows_dropped"]
    assert [(p["rule"], p["rows"]) for p in parts] == [("group", 6), ("group", 2), ("run", 16)]
    assert parts[0]["first_line"] == 2 and parts[0]["last_line"] == 7
    assert trace.tokens == 24


def test_run_says_dropped_rows_and_filled_layers(tmp_path, capsys):
    log = _warm_log(tmp_path)
    rc = main(["run", "--hw", "aimc-3d-moe", "--model", QWEN, "--trace", str(log), "--fill", "replicate",
               "--policy", "all-digital", "--batch", "8", "--set", "memory.dram.capacity_gib=16",
               "--out", str(tmp_path / "out")])
    assert rc == 0
    err = capsys.readouterr().err
    assert "hetmoe: note: dropped 24 warm-up rows of 48 read (50.0 %) from the trace: 2 whole warm-up batches " \
           "(8 rows) and 1 run of repeated routes (16 rows)" in err
    assert "hetmoe: note: 23 of 24 MoE layers were not in the trace and were filled by --fill replicate (96 % of " \
           "the routed-expert work priced)" in err
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert sum(p["rows"] for p in saved["trace"]["warmup_runs_dropped"]) == saved["trace"]["warmup_rows_dropped"]
    # the report says the same
    from sim.report.markdown import _correction_lines
    lines = _correction_lines([saved])
    assert any("Dropped 24 warm-up rows" in x for x in lines) and any("23 of 24 MoE layers" in x for x in lines)


def test_closed_calendar_gaps_are_said_with_their_share():
    data = {"engine": {"calendar_gaps_closed": 103_600_000, "bookings": 1_190_000_000}}
    (line,) = corrections(data)
    assert line.startswith("the engine closed 103,600,000 calendar gaps in 1,190,000,000 bookings (8.7 %)")
    assert "upper bound" in line
    assert corrections({"engine": {"calendar_gaps_closed": 0, "bookings": 10}}) == []
