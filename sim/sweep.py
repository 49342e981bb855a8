"""Independent runs through a ``concurrent.futures`` executor (DESIGN §7).

A point is a dict of :func:`sim.api.simulate` keyword arguments. Each point writes
``OUT/runs/<id>/result.json`` (or ``error.txt``); ``<id>`` is derived from the point's content, so
re-running into the same folder skips finished points (those computed by the same code: see
:mod:`sim.provenance`). A failing point is recorded with its error
and never stops the others. Local processes by default; a Dask distributed cluster when a
scheduler address is given (``pip install 'hetmoe[dask]'``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sys
import traceback
from collections.abc import Iterable
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from arch.errors import HetmoeError, Interrupted, SpecError
from arch.safeio import read_text, write_text
from arch.yamlsource import Located, parse_text, to_plain

from .result import load_result, summary_row, write_csv

NO_FRACTION = {"all-analog", "all-digital", "explicit"}


def point_id(point: dict[str, Any]) -> str:
    text = json.dumps(point, sort_keys=True, default=str)
    label = f"{point.get('policy', 'run')}"
    if point.get("policy") not in NO_FRACTION:
        label += f"-{float(point.get('fraction', 0.125)):.3f}"
    if point.get("mode", "prefill") != "prefill":
        label += f"-{point['mode']}"
    return f"{label}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _finished(path: Path) -> bool:
    """A point is done when its result exists and was computed by this code (same fingerprint)."""
    if not path.is_file():
        return False
    from .provenance import code_fingerprint
    try:
        stored = json.loads(path.read_text()).get("code_fingerprint")
    except (OSError, json.JSONDecodeError):
        return False
    return stored == code_fingerprint()


def run_point(point: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Run one point in a worker; write its files; return a status dict (never raises)."""
    from workloads.traces.synthetic import SyntheticSpec

    from .api import point_accuracy, simulate

    pid = point_id(point)
    folder = Path(out_dir) / "runs" / pid
    folder.mkdir(parents=True, exist_ok=True)
    kwargs = dict(point)
    trace = kwargs.get("trace")
    if isinstance(trace, dict):
        kwargs["trace"] = SyntheticSpec(**trace)
    tag = kwargs.pop("label", None)
    shown = {k: kwargs.pop(k) for k in ("show_hw", "role") if k in kwargs}
    eval_file = kwargs.pop("eval", None)
    noise_seeds = int(kwargs.pop("noise_seeds", 3))
    try:
        result = simulate(**kwargs)
        if tag:
            result.data["label"] = tag
        result.data.update(shown)
        if eval_file:
            result.data["accuracy"] = point_accuracy(eval_file=eval_file, noise_seeds=noise_seeds, **kwargs)
        write_text(folder / "point.json", json.dumps(point, indent=2, sort_keys=True, default=str))
        (folder / "error.txt").unlink(missing_ok=True)
        result.write(folder)          # result.json last: it marks the point finished
        return {"id": pid, "ok": True, "wall_s": result.wall_s}
    except HetmoeError as exc:
        message = str(exc)
    except Exception as exc:  # noqa: BLE001 - a failed point must not take the sweep down
        message = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    write_text(folder / "error.txt", message + "\n")
    write_text(folder / "point.json", json.dumps(point, indent=2, sort_keys=True, default=str))
    return {"id": pid, "ok": False, "error": message.splitlines()[0]}


def make_executor(jobs: int, scheduler: str | None) -> tuple[Executor, Any]:
    if scheduler:
        try:
            from dask.distributed import Client
        except ImportError:
            raise HetmoeError("--scheduler needs Dask: pip install 'hetmoe[dask]'") from None
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise HetmoeError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        return client.get_executor(), client
    return ProcessPoolExecutor(max_workers=max(1, jobs), initializer=_ignore_sigint), None


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which stops them and says what was kept."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop(executor: Executor) -> None:
    """Cancel queued points and stop running ones (a stopped point leaves no result.json, so it reruns)."""
    procs = list((getattr(executor, "_processes", None) or {}).values())   # shutdown() forgets them
    executor.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(timeout=5)


def run_points(points: list[dict[str, Any]], out_dir: str | Path, *, jobs: int = 2, scheduler: str | None = None,
               quiet: bool = False, executor: Executor | None = None) -> list[dict[str, Any]]:
    """Run every unfinished point; returns one status per point, in input order."""
    if jobs < 1:
        raise HetmoeError(f"--jobs {jobs}: allowed an integer >= 1 (worker processes)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    statuses: dict[str, dict[str, Any]] = {}
    todo = []
    for p in points:
        pid = point_id(p)
        if _finished(out / "runs" / pid / "result.json"):
            statuses[pid] = {"id": pid, "ok": True, "skipped": True}
        else:
            todo.append(p)
    if todo:
        client = None
        own = executor is None
        if own:
            executor, client = make_executor(jobs, scheduler)
        interrupted = False
        try:
            futures = {executor.submit(run_point, p, str(out)): point_id(p) for p in todo}
            bar = _progress(len(futures), quiet)
            for fut in as_completed(futures):
                try:
                    status = fut.result()
                except Exception as exc:  # noqa: BLE001 - worker died
                    status = {"id": futures[fut], "ok": False, "error": f"worker failed: {exc}"}
                statuses[status["id"]] = status
                bar.update(1)
            bar.close()
        except KeyboardInterrupt:
            interrupted = True
            if own:
                _stop(executor)
            # counted on disk once the workers are stopped: a worker may have written its result.json just
            # before the interrupt, without the parent having heard back yet
            done = sum(1 for p in points if _finished(out / "runs" / point_id(p) / "result.json"))
            raise Interrupted(f"{done} of {len(points)} points are finished and kept in {out / 'runs'}; run the same "
                              "command again to resume (finished points are reused, the rest are computed)") from None
        finally:
            if own and not interrupted:
                executor.shutdown(wait=True)
            if own and client is not None:
                client.close()
    return [statuses[point_id(p)] for p in points]


def _progress(total: int, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="runs", unit="run", disable=quiet or not sys.stderr.isatty())


def collect(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished run's result dict under ``OUT/runs``, sorted by run folder name."""
    runs = []
    for path in sorted(Path(out_dir).glob("runs/*/result.json")):
        data = load_result(path)
        data["folder"] = path.parent.name
        runs.append(data)
    return runs


def write_tables(out_dir: str | Path, runs: list[dict[str, Any]]) -> None:
    out = Path(out_dir)
    rows = [{"label": r.get("label", r["folder"]), **summary_row(r)} for r in runs]
    write_csv(out / "summary.csv", rows)
    write_text(out / "results.json", json.dumps(runs, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- sweep specs

SPEC_KEYS = {"hw", "model", "traces", "trace", "policies", "fractions", "hw_overrides", "modes", "seed", "batch",
             "tokens", "score", "scope", "checkpoint", "context_tokens", "fill", "eval", "noise_seeds",
             "area_budget_mm2"}
OPTION_KEYS = {"area_budget_mm2"}      # apply to the folder's tables and plots, not to the points


def sweep_options(path: str | Path) -> dict[str, Any]:
    """The keys of a sweep YAML that apply to its results rather than to its points (``area_budget_mm2``)."""
    spec = _read_spec(Path(path))
    value = spec.get("area_budget_mm2")
    return {"area_budget_mm2": None if value is None else float(value)}


def _read_spec(path: Path) -> Located:
    spec = parse_text(read_text(path, "sweep spec YAML"), str(path))
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise SpecError(str(path), spec.where[unknown[0]][1], unknown[0],
                        f"unknown key; recognised: {', '.join(sorted(SPEC_KEYS))}")
    for key, check in _rules().items():
        if key in spec:
            value = to_plain(spec[key])
            bad = check(value)
            if bad:
                raise SpecError(str(path), spec.where[key][1], key, f"{value!r:.80}: {bad}")
    if "eval" in spec and "checkpoint" not in spec:
        raise SpecError(str(path), spec.where["eval"][1], "eval", "accuracy points need checkpoint")
    return spec


def _is_int(v: Any, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _rule_list(ok: Any, allowed: str) -> Any:
    return lambda v: None if isinstance(v, list) and v and all(ok(x) for x in v) else f"allowed a list of {allowed}"


def _rules() -> dict[str, Any]:
    from workloads.checkpoints.stats import SCOPES, VARIANTS
    from workloads.traces.format import FILL_RULES

    from .engine.workplan import MODES
    from .placement import POLICIES

    text = lambda v: None if isinstance(v, str) and v else "allowed a non-empty string"  # noqa: E731
    count = lambda lo: (lambda v: None if _is_int(v, lo) else f"allowed an integer >= {lo}")  # noqa: E731
    one_of = lambda names: (lambda v: None if isinstance(v, str) and v in names  # noqa: E731
                            else f"allowed: {', '.join(names)}")
    return {
        "hw": text, "model": text, "trace": text, "checkpoint": text, "eval": text,
        "traces": _rule_list(lambda x: isinstance(x, str) and x, "file paths or 'synthetic'"),
        "tokens": count(1), "seed": count(0), "batch": count(1), "context_tokens": count(0), "noise_seeds": count(1),
        "policies": _rule_list(lambda x: isinstance(x, str) and x in POLICIES, f"policies ({', '.join(POLICIES)})"),
        "fractions": _rule_list(lambda x: _is_num(x) and 0 <= x <= 1, "numbers in 0..1"),
        "modes": _rule_list(lambda x: isinstance(x, str) and x in MODES, f"modes ({', '.join(MODES)})"),
        "hw_overrides": _rule_list(lambda x: isinstance(x, dict) and all(isinstance(k, str) for k in x),
                                   "mappings {KEY.PATH: value}"),
        "score": one_of(VARIANTS), "scope": one_of(SCOPES), "fill": one_of(FILL_RULES),
        "area_budget_mm2": lambda v: None if v is None or (_is_num(v) and v > 0) else "allowed a finite area > 0 (mm^2)",
    }


def load_sweep_spec(path: str | Path) -> list[dict[str, Any]]:
    """Expand a sweep YAML into points: policies x fractions x hw_overrides x traces x modes."""
    path = Path(path)
    spec = to_plain(_read_spec(path))
    tokens = int(spec.get("tokens", 4096))
    seed = int(spec.get("seed", 0))
    traces = spec.get("traces", [spec.get("trace", "synthetic")])
    traces = [{"tokens": tokens, "requests": 8, "seed": seed} if t == "synthetic" else t for t in traces]
    overrides = spec.get("hw_overrides") or [{}]
    base = {k: spec[k] for k in ("hw", "model", "score", "scope", "checkpoint", "context_tokens", "fill", "eval",
                                 "noise_seeds") if k in spec}
    base.setdefault("hw", "aimc-3d-moe")
    base.setdefault("model", spec.get("checkpoint") or "olmoe-1b-7b")
    points = []
    for policy, frac, over, trace, mode in itertools.product(
            spec.get("policies", ["maxnn"]), spec.get("fractions", [0.125]), overrides, traces,
            spec.get("modes", ["prefill"])):
        if policy in NO_FRACTION and frac != spec.get("fractions", [0.125])[0]:
            continue
        batch = spec.get("batch", 64 if mode == "prefill" else 32)
        points.append({**base, "policy": policy, "fraction": float(frac), "hw_overrides": _nest(over),
                       "trace": trace, "mode": mode, "seed": seed, "batch": int(batch)})
    return points


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def status_lines(statuses: Iterable[dict[str, Any]]) -> list[str]:
    return [f"FAILED {s['id']}: {s['error']}" for s in statuses if not s["ok"]]
