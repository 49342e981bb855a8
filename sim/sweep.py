"""Independent runs through a ``concurrent.futures`` executor (DESIGN §7).

A point is a dict of :func:`sim.api.simulate` keyword arguments. Each point writes
``OUT/runs/<id>/result.json`` (or ``error.txt``); ``<id>`` is derived from the point's content, so
re-running into the same folder skips finished points: those computed by the same code (see
:mod:`sim.provenance`) from the same inputs (the key of their resolved contents, :mod:`sim.inputs_key`,
stored in each ``result.json``; a point whose inputs changed is computed again). A failing point is
recorded with its error
and never stops the others. Local processes by default; a Dask distributed cluster when a
scheduler address is given (``pip install 'hetmoe[dask]'``).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import itertools
import json
import math
import os
import shutil
import signal
import sys
import threading
import traceback
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from arch.errors import HetmoeError, Interrupted, SpecError
from arch.safeio import dumps_json, read_text, write_json, write_text
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


def _finished(path: Path, key: str | None) -> bool:
    """A point is done when its result exists, was computed by this code (same fingerprint) and from the
    inputs whose key is ``key`` (:mod:`sim.inputs_key`)."""
    return _state(path, key)[0] == "done"


def _state(path: Path, key: str | None) -> tuple[str | None, Any]:
    """``("done", [])`` for a finished point computed from the inputs of ``key``; ``("changed", stored)``
    for one computed by this code from other inputs (``stored``: the input digests its result keeps, for
    :func:`sim.inputs_key.changed`); ``(None, [])`` otherwise (no result, an unreadable one, or one computed
    by other code)."""
    if not path.is_file():
        return None, []
    from .inputs_key import KEY, PARTS
    from .provenance import code_fingerprint
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, []
    if not isinstance(stored, dict) or stored.get("code_fingerprint") != code_fingerprint():
        return None, []
    if key is not None and stored.get(KEY) == key:
        return "done", []
    return "changed", stored.get(PARTS)


# ----------------------------------------------------------------------------- running points

PARTIAL = ".partial"        # OUT/.partial/<id>.<sweep token>.<random>: a point's folder while it is written


_UNSET: Any = object()


def run_point(point: dict[str, Any], out_dir: str, token: str = "local", stop: str | None = None,
              inputs: dict[str, str] | None = _UNSET) -> dict[str, Any]:
    """Run one point in a worker; write its files; return a status dict (never raises for a failing point).

    ``inputs``: the digests of the point's resolved inputs (:func:`sim.inputs_key.point_inputs`, computed
    where the reuse was decided; here when not given), stored with their key in ``result.json``.

    The files (``point.json``, then ``result.json`` with its tables, or ``error.txt``) are written into
    ``OUT/.partial/<id>.<token>.*`` and that folder is renamed to ``OUT/runs/<id>`` only once it is whole,
    so a point stopped while it writes (Ctrl-C, SIGTERM, ``kill -9``) leaves no half-written run folder.
    ``stop`` names the Dask event an interrupted sweep sets: a point still computing on the cluster then
    writes nothing (Dask cannot stop a running task; it can only drop its result)."""
    from workloads.traces.synthetic import SyntheticSpec

    from .api import point_accuracy, simulate
    from .inputs_key import KEY, PARTS, inputs_key, point_inputs

    pid = point_id(point)
    if _stopped(stop):
        return _cancelled(pid)
    if inputs is _UNSET:
        inputs = point_inputs(point)
    kwargs = dict(point)
    trace = kwargs.get("trace")
    if isinstance(trace, dict):
        kwargs["trace"] = SyntheticSpec(**trace)
    tag = kwargs.pop("label", None)
    shown = {k: kwargs.pop(k) for k in ("show_hw", "role") if k in kwargs}
    eval_file = kwargs.pop("eval", None)
    noise_seeds = int(kwargs.pop("noise_seeds", 3))
    result, message = None, ""
    try:
        result = simulate(**kwargs)
        if tag:
            result.data["label"] = tag
        result.data.update(shown)
        result.data[KEY], result.data[PARTS] = inputs_key(inputs), inputs
        if eval_file:
            result.data["accuracy"] = point_accuracy(eval_file=eval_file, noise_seeds=noise_seeds, **kwargs)
    except HetmoeError as exc:
        result, message = None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a failed point must not take the sweep down
        result, message = None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    if _stopped(stop):
        return _cancelled(pid)

    def write(folder: Path) -> None:
        write_text(folder / "point.json", dumps_json(point, indent=2, sort_keys=True, default=str))
        if result is not None:
            result.write(folder)
        else:
            write_text(folder / "error.txt", message + "\n")

    try:
        published = _publish(Path(out_dir), pid, token, write, stop)
    except (OSError, HetmoeError) as exc:
        if _stopped(stop):
            return _cancelled(pid)
        return {"id": pid, "ok": False, "error": f"cannot write {Path(out_dir) / 'runs' / pid}: {exc}"}
    if not published:
        return _cancelled(pid)
    if result is None:
        return {"id": pid, "ok": False, "error": message.splitlines()[0]}
    return {"id": pid, "ok": True, "wall_s": result.wall_s, "code_fingerprint": result.data.get("code_fingerprint")}


def _cancelled(pid: str) -> dict[str, Any]:
    return {"id": pid, "ok": False, "cancelled": True, "error": "cancelled (the sweep was interrupted)"}


def _publish(out: Path, pid: str, token: str, write: Any, stop: str | None) -> bool:
    """Write a point's files into a staging folder, then rename it to ``OUT/runs/<id>`` (replacing an
    earlier failed or stale attempt). False, with nothing published, when the sweep was stopped or the
    staging folder was removed under the writer (the interrupted sweep clears its staging folders)."""
    staging = out / PARTIAL / f"{pid}.{token}.{uuid.uuid4().hex[:8]}"
    old = staging.with_name(staging.name + ".old")
    staging.mkdir(parents=True)          # parents: another worker may just have removed an empty .partial
    try:
        write(staging)
        # point.json is written first: if the folder was cleared and recreated under us, it is missing
        if _stopped(stop) or not (staging / "point.json").is_file():
            return False
        final = out / "runs" / pid
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            os.rename(final, old)        # an earlier failed or stale attempt, replaced whole
        try:
            os.rename(staging, final)
        except OSError as exc:           # another sweep into this folder published the point first
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        return True
    finally:
        for path in (staging, old):
            shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            (out / PARTIAL).rmdir()      # only when empty


def _stopped(event: str | None) -> bool:
    """Whether the interrupted sweep has set the Dask event ``event`` (never, without one)."""
    if not event:
        return False
    try:
        from distributed import Event

        return bool(Event(event).is_set())
    except Exception:  # noqa: BLE001 - no scheduler to ask: the staging checks still hold
        return False


def _clear_partial(out: Path, *, ids: Iterable[str] = (), token: str | None = None) -> None:
    """Remove staging folders: those of the points ``ids`` (left by a killed sweep) or of sweep ``token``."""
    partial = out / PARTIAL
    if not partial.is_dir():
        return
    prefixes = tuple(f"{pid}." for pid in ids)        # a point id holds dots (maxnn-0.125-...): match whole
    for path in partial.iterdir():
        if path.name.startswith(prefixes) or (token is not None and f".{token}." in path.name):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        partial.rmdir()


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
    return ProcessPoolExecutor(max_workers=max(1, jobs), initializer=_worker_signals,
                               initargs=(os.getpid(),)), None


def _worker_signals(parent: int | None = None) -> None:
    """Workers leave Ctrl-C to the parent, which stops them and says what was kept; SIGTERM (the parent's
    stop) ends a worker at once, whatever handler the parent had when it forked; and a worker ends with its
    parent (``kill -9`` of the command leaves no worker running: sim.parentwatch)."""
    from .parentwatch import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent(parent)



def _is_dask(executor: Executor) -> bool:
    return type(executor).__module__.split(".")[0] == "distributed"


def _stop(executor: Executor) -> None:
    """Cancel queued points and stop running ones (a stopped point leaves no result.json, so it reruns).
    Local worker processes are terminated; on Dask every future of the executor is cancelled (a task
    already running there cannot be stopped: it finishes and its result is dropped)."""
    if _is_dask(executor):
        executor.shutdown(wait=False)      # ClientExecutor: client.cancel on every future it submitted
        return
    procs = list((getattr(executor, "_processes", None) or {}).values())   # shutdown() forgets them
    executor.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


def shutdown_executor(executor: Executor, wait: bool = True) -> None:
    """``executor.shutdown`` for a local pool or a Dask ClientExecutor (which has no ``cancel_futures``)."""
    if _is_dask(executor):
        executor.shutdown(wait=wait)
    else:
        executor.shutdown(wait=wait, cancel_futures=True)


def run_points(points: list[dict[str, Any]], out_dir: str | Path, *, jobs: int = 2, scheduler: str | None = None,
               quiet: bool = False, executor: Executor | None = None,
               inputs_cache: Any = None) -> list[dict[str, Any]]:
    """Run every unfinished point; returns one status per point, in input order.

    A point whose ``OUT/runs/<id>/result.json`` was computed by this code from the same inputs (the key
    of :mod:`sim.inputs_key`) is reused (status ``skipped``); one computed from other inputs is computed
    again (status ``recomputed``: the names of the inputs that changed). :func:`reuse_line` says both.
    ``inputs_cache``: a :class:`sim.inputs_key.InputsCache` shared by several calls of one command (the
    input files are then read and hashed once).

    Ctrl-C (or SIGTERM, which the command line turns into the same interrupt) stops the workers, or
    cancels the points on a Dask cluster, removes the staging folders, and raises
    :class:`~arch.errors.Interrupted` saying how many points are finished and kept."""
    if jobs < 1:
        raise HetmoeError(f"--jobs {jobs}: allowed an integer >= 1 (worker processes)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from .inputs_key import InputsCache, changed, inputs_key, point_inputs

    statuses: dict[str, dict[str, Any]] = {}
    todo = []
    cache = inputs_cache if inputs_cache is not None else InputsCache()
    inputs = {point_id(p): point_inputs(p, cache) for p in points}
    keys = {pid: inputs_key(parts) for pid, parts in inputs.items()}
    stale: dict[str, list[str]] = {}
    for p in points:
        pid = point_id(p)
        state, was = _state(out / "runs" / pid / "result.json", keys[pid])
        if state == "done":
            statuses[pid] = {"id": pid, "ok": True, "skipped": True}
        else:
            if state == "changed":
                stale[pid] = changed(was, inputs[pid])
            todo.append(p)
    if todo:
        from .provenance import code_fingerprint

        code_fingerprint()             # read once here: forked workers inherit what the counts compare with
        token = uuid.uuid4().hex[:12]
        _clear_partial(out, ids={point_id(p) for p in todo})      # what a killed sweep left half-written
        client = None
        own = executor is None
        if own:
            executor, client = make_executor(jobs, scheduler)
        dask = _is_dask(executor)
        stop = f"hetmoe-stop-{token}" if dask else None
        interrupted = False
        futures: dict[Any, str] = {}
        warned: list[str] = []
        try:
            for p in todo:
                futures[executor.submit(run_point, p, str(out), token, stop, inputs[point_id(p)])] = point_id(p)
            bar = _progress(len(futures), quiet)
            for fut in as_completed(futures):
                try:
                    status = fut.result()
                except Exception as exc:  # noqa: BLE001 - worker died
                    status = {"id": futures[fut], "ok": False, "error": f"worker failed: {exc}"}
                if status["id"] in stale:
                    status["recomputed"] = stale[status["id"]]
                statuses[status["id"]] = status
                _check_code(status, out, warned)
                bar.update(1)
            bar.close()
        except KeyboardInterrupt:
            interrupted = True
            with _signals_ignored():
                raise _interrupt(out, points, executor, futures, own=own, stop=stop, token=token,
                                 keys=keys) from None
        finally:
            if own and not interrupted:
                executor.shutdown(wait=True)
            if own and client is not None:
                with contextlib.suppress(Exception):
                    client.close()
    return [statuses[point_id(p)] for p in points]


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM are ignored while an interrupted sweep stops its workers and clears its staging
    folders (seconds at most): ``timeout`` sends SIGTERM to the command and then to its whole process
    group, and a second Ctrl-C must not leave the cleanup half done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _check_code(status: dict[str, Any], out: Path, warned: list[str]) -> None:
    """Say once when a worker ran other hetmoe code than this command (a Dask worker started before an
    edit): its points are kept and tabled, but a rerun does not count them as finished."""
    from .provenance import code_fingerprint

    theirs = status.get("code_fingerprint")
    if not status["ok"] or not theirs or theirs == code_fingerprint() or warned:
        return
    warned.append(theirs)
    print(f"hetmoe: warning: a worker runs other hetmoe code than this command (code fingerprint {theirs}, here "
          f"{code_fingerprint()}): its points are written to {out / 'runs'} but a rerun computes them again; restart "
          "the Dask workers after changing the code", file=sys.stderr)


def _interrupt(out: Path, points: list[dict[str, Any]], executor: Executor, futures: dict[Any, str], *,
               own: bool, stop: str | None, token: str, keys: dict[str, str | None]) -> Interrupted:
    """Stop what runs, clear this sweep's staging folders, and say what is kept."""
    pending = sum(1 for f in futures if not f.done())
    if stop:
        with contextlib.suppress(Exception):
            from distributed import Event

            Event(stop, client=getattr(executor, "_client", None)).set()   # a point computing there writes nothing
    for fut in futures:
        fut.cancel()                   # queued points (on Dask: queued and running ones)
    if own:
        _stop(executor)
    _clear_partial(out, token=token)
    # counted on disk once the workers are stopped: a worker may have written its result.json just
    # before the interrupt, without the parent having heard back yet
    states = [_state(out / "runs" / point_id(p) / "result.json", keys.get(point_id(p)))[0] for p in points]
    done = states.count("done")
    other = sum(1 for p in points if (out / "runs" / point_id(p) / "result.json").is_file()) - done - \
        states.count("changed")
    if other:
        done_text = (f"{done} of {len(points)} points are finished (and {other} more computed by other hetmoe code, "
                     "which a rerun computes again: restart the Dask workers after changing the code)")
    else:
        done_text = f"{done} of {len(points)} points are finished"
    dropped = (f"; cancelled on the Dask cluster: {pending} queued or running point{'s' if pending > 1 else ''} "
               "(a point already computing there runs to its end but writes nothing)") if stop and pending else ""
    return Interrupted(f"{done_text} and kept in {out / 'runs'}; run the same "
                       "command again to resume (finished points are reused, the rest are computed)" + dropped)


def reuse_line(statuses: Iterable[dict[str, Any]], out: str | Path) -> str | None:
    """One line saying how many finished points were reused from ``OUT/runs`` and how many were computed
    again because their inputs changed (and which inputs); None when neither happened."""
    statuses = list(statuses)
    reused = sum(1 for s in statuses if s.get("skipped"))
    again = [s for s in statuses if s.get("recomputed")]
    said = []
    if reused:
        said.append(f"reused {reused} finished point{'s' if reused != 1 else ''} from {Path(out) / 'runs'} "
                    "(same inputs, same code)")
    if again:
        names = sorted({n for s in again for n in s["recomputed"]})
        said.append(f"recomputed {len(again)} point{'s' if len(again) != 1 else ''} whose inputs changed "
                    f"({', '.join(names)})")
    return "; ".join(said) if said else None


def check_written(statuses: Iterable[dict[str, Any]], runs: list[dict[str, Any]], out: str | Path,
                  lock: Any = None) -> None:
    """Raise :class:`~sim.outlock.FolderVanished` when points reported finished are not in ``OUT/runs``
    (the folder, or runs in it, were deleted while the command ran) or the folder's lock is gone."""
    from .outlock import FolderVanished

    ok = {s["id"] for s in statuses if s["ok"]}
    found = {r["folder"] for r in runs} & ok
    if len(found) < len(ok) or (lock is not None and not lock.intact()):
        raise FolderVanished(f"{out} was deleted or changed while this command wrote it: {len(found)} of the "
                             f"{len(ok)} finished points are in {Path(out) / 'runs'}; no tables or report written: "
                             "run the command again to compute the missing points")


def _progress(total: int, quiet: bool):
    """A bar on a terminal, a plain line every ~10 s otherwise, nothing with ``--quiet`` (:mod:`sim.progress`)."""
    from .progress import progress

    return progress(total, "sweep", "points", quiet=quiet)


def collect(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished run's result dict under ``OUT/runs``, sorted by run folder name."""
    runs = []
    for path in sorted(Path(out_dir).glob("runs/*/result.json")):
        data = load_result(path)
        data["folder"] = path.parent.name
        runs.append(data)
    add_hw_base(runs)
    return runs


def add_hw_base(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Store on each run ``hw_base``: for every hw override key any of the runs sets, the value its own
    hardware description gives without overrides (what a run that does not set the key ran with), so the
    tables and plots can name it (``sram.capacity_mib=32 (preset)``); a description that no longer loads,
    or a key it does not have, is left out."""
    from .report.axes import flat

    keys = sorted({k for r in runs for k in flat((r.get("config") or {}).get("hw_overrides"))})
    for r in runs:
        c = r.get("config") or {}
        source = str(c.get("hw_source") or c.get("hw"))
        r["hw_base"] = {k: v for k in keys if (v := _chip_value(source, k)) is not None}
    return runs


@functools.lru_cache(maxsize=256)
def _chip_value(source: str, key: str) -> Any:
    try:
        from arch import load_chip

        obj: Any = load_chip(source)
        for part in key.split("."):
            obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    except Exception:  # noqa: BLE001 - a moved or changed description: the tables say "(preset)"
        return None
    return None if hasattr(obj, "__dataclass_fields__") or isinstance(obj, (list, dict)) else obj


def write_tables(out_dir: str | Path, runs: list[dict[str, Any]]) -> None:
    """``summary.csv`` (one row per run, named by its label with every swept value; ``hw`` carries the run's
    overrides; a column per hw override key, the chip's own value where a run does not set it, and per swept
    workload key) and ``results.json``."""
    out = Path(out_dir)
    write_csv(out / "summary.csv", summary_rows(runs))
    write_json(out / "results.json", runs, indent=2, sort_keys=True)


def summary_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run, ordered by workload, design, policy and fraction (as the report's table)."""
    from .report import axes
    from .report.markdown import _sort_key
    from .report.plots import label

    axes.annotate(runs)
    _, workload = axes.swept(runs)
    keys = sorted({k for r in runs for k in axes.flat(r["config"].get("hw_overrides"))})
    rows = []
    for r in sorted(runs, key=_sort_key):
        base = summary_row(r)
        own = axes.flat(r["config"].get("hw_overrides"))
        row = {"label": r.get("label") or label(r)}
        for k, v in base.items():
            if k == "hw" and own:
                v = f"{v} + " + ", ".join(f"{key}={_csv_value(val)}" for key, val in own.items())
            row[k] = v
            if k == "hw":
                row.update({key: _csv_value(axes.override_value(r, key)) for key in keys})
                row.update({key: _csv_value(axes.value(r, key)) for key in workload if key not in base})
        rows.append(row)
    return rows


def _csv_value(v: Any) -> Any:
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


# ----------------------------------------------------------------------------- sweep specs

SPEC_KEYS = {"hw", "model", "traces", "trace", "policies", "fractions", "hw_overrides", "modes", "seed", "batch",
             "tokens", "score", "scope", "checkpoint", "context_tokens", "fill", "eval", "noise_seeds",
             "area_budget_mm2", "utilisation"}
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
        "utilisation": one_of(("full", "summary", "none")),
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
                                 "noise_seeds", "utilisation") if k in spec}
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
