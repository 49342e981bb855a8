"""Ctrl-C, SIGTERM and kill -9 on a sweep, locally and on Dask: exit 130 with the kept count, no
half-written run folder, no temporary file, and a resume that ends where an uninterrupted sweep does.

The tests cannot race: a point blocks (tests/blocking_points.py) until the test releases it, the signal is
sent only once the other points are finished and the blocked one has started writing, and the blocked
point is released only after the sweep has answered. One subprocess smoke test runs the real command on
real points and accepts either ending a fast machine can give (done, or interrupted), checking the same
invariants in both.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from arch.errors import Interrupted
from sim.cli import main
from sim.sweep import PARTIAL, load_sweep_spec, point_id, run_points
from tests import blocking_points
from tests.blocking_points import wait_for, wait_until
from tests.cli_helpers import write_tiny

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ("all-analog", "all-digital", "maxnn")       # maxnn is the point that blocks


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    return write_tiny(tmp_path_factory.mktemp("tiny"))


def _spec(tmp_path: Path, tiny: tuple[Path, Path]) -> Path:
    chip, model = tiny
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"hw: {chip}\nmodel: {model}\ntokens: 32\nbatch: 8\npolicies: [{', '.join(POLICIES)}]\n"
                    "fractions: [0.25]\nhw_overrides:\n  - {analog.tile.tiers: 16}\n")
    return spec


def _blocked_id(spec: Path) -> str:
    return next(point_id(p) for p in load_sweep_spec(spec) if p["policy"] == "maxnn")


def _finished(out: Path) -> list[Path]:
    return sorted(out.glob("runs/*/result.json"))


def _assert_clean(out: Path) -> None:
    """No staging folder, no temporary file, and every run folder whole (its result.json or error.txt)."""
    assert not (out / PARTIAL).exists(), sorted((out / PARTIAL).rglob("*"))
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    for folder in (out / "runs").iterdir():
        assert (folder / "result.json").is_file() or (folder / "error.txt").is_file(), sorted(folder.iterdir())


def _signal_when_ready(sig: int, gate: Path, out: Path, finished: int) -> threading.Thread:
    """A thread that sends ``sig`` to the main thread (where Python runs signal handlers, and where the
    sweep waits) once ``finished`` points have their result.json and the blocked point is writing."""
    main_thread = threading.main_thread().ident

    def send() -> None:
        try:
            wait_for(gate / "started-maxnn")
            wait_until(lambda: len(_finished(out)) >= finished, f"{finished} finished points in {out}")
        except TimeoutError:
            (gate / "release").touch()                           # let the sweep end; the test then fails
            return
        signal.pthread_kill(main_thread, sig)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_in_a_local_sweep_keeps_finished_points_and_stops_its_workers(tiny, tmp_path, monkeypatch):
    spec, out, gate = _spec(tmp_path, tiny), tmp_path / "out", tmp_path / "gate"
    blocking_points.install(gate, {"maxnn"}, monkeypatch)
    sender = _signal_when_ready(signal.SIGINT, gate, out, finished=2)
    with pytest.raises(Interrupted) as info:
        run_points(load_sweep_spec(spec), out, jobs=2, quiet=True)
    sender.join()
    assert re.fullmatch(rf"2 of 3 points are finished and kept in {re.escape(str(out / 'runs'))}; run the same "
                        r"command again to resume \(.*\)", str(info.value))
    assert len(_finished(out)) == 2 and not (out / "runs" / _blocked_id(spec)).exists()
    _assert_clean(out)
    worker = int((gate / "started-maxnn").read_text())
    with pytest.raises(ProcessLookupError):                      # stopped, so it can finish nothing afterwards
        os.kill(worker, 0)
    # the same command resumes: only the stopped point runs again
    (gate / "release").touch()
    statuses = run_points(load_sweep_spec(spec), out, jobs=2, quiet=True)
    assert sorted(bool(s.get("skipped")) for s in statuses) == [False, True, True]
    assert len(_finished(out)) == 3
    _assert_clean(out)


def test_sigterm_stops_a_local_sweep_as_ctrl_c_does(tiny, tmp_path, monkeypatch, capsys):
    spec, out, gate = _spec(tmp_path, tiny), tmp_path / "out", tmp_path / "gate"
    blocking_points.install(gate, {"maxnn"}, monkeypatch)
    before = signal.getsignal(signal.SIGTERM)
    sender = _signal_when_ready(signal.SIGTERM, gate, out, finished=2)
    rc = main(["sweep", str(spec), "--out", str(out), "--jobs", "2", "--quiet"])
    sender.join()
    err = capsys.readouterr().err
    assert rc == 130
    assert err.count("\n") == 1 and err.startswith("hetmoe: interrupted by SIGTERM; 2 of 3 points are finished "
                                                   f"and kept in {out / 'runs'}; run the same command again")
    assert signal.getsignal(signal.SIGTERM) is before            # the command's handler is put back
    assert len(_finished(out)) == 2 and not (out / "runs" / _blocked_id(spec)).exists()
    _assert_clean(out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupting_a_dask_sweep_exits_130_cancels_its_points_and_leaves_no_temporary(
        sig, tiny, tmp_path, monkeypatch, capsys):
    distributed = pytest.importorskip("dask.distributed", reason="the dask extra is not installed")
    spec, out, gate = _spec(tmp_path, tiny), tmp_path / "out", tmp_path / "gate"
    blocking_points.install(gate, {"maxnn"}, monkeypatch)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        sender = _signal_when_ready(sig, gate, out, finished=2)
        rc = main(["sweep", str(spec), "--out", str(out), "--scheduler", cluster.scheduler_address, "--quiet"])
        sender.join()
        err = capsys.readouterr().err
        assert rc == 130
        by = " by SIGTERM" if sig == signal.SIGTERM else ""
        assert err.count("\n") == 1 and err.startswith(f"hetmoe: interrupted{by}; 2 of 3 points are finished")
        assert re.search(r"; cancelled on the Dask cluster: [123] queued or running points?", err)
        # the blocked point was writing its tables into a staging folder: the sweep removed it
        assert len(_finished(out)) == 2 and not (out / "runs" / _blocked_id(spec)).exists()
        _assert_clean(out)
        # Dask cannot stop a running task: released, the point completes but writes nothing
        (gate / "release").touch()
        wait_for(gate / "ended-maxnn")
    assert len(_finished(out)) == 2 and not (out / "runs" / _blocked_id(spec)).exists()
    _assert_clean(out)


def test_a_point_stopped_while_writing_leaves_no_trace_and_a_stale_attempt_is_replaced_whole(tiny, tmp_path,
                                                                                           monkeypatch):
    import sim.sweep

    spec, out = _spec(tmp_path, tiny), tmp_path / "out"
    points = load_sweep_spec(spec)
    blocked = next(p for p in points if p["policy"] == "maxnn")
    pid = point_id(blocked)
    # what an interrupted worker of the old layout, then a killed one of this layout, left behind
    stale = out / "runs" / pid
    stale.mkdir(parents=True)
    (stale / "summary.csv").write_text("stale\n")
    (stale / "error.txt").write_text("an earlier failure\n")
    leftover = out / PARTIAL / f"{pid}.0123456789ab.deadbeef"
    leftover.mkdir(parents=True)
    (leftover / ".utilisation.csv.x.tmp").write_bytes(b"\0" * 1024)

    import sim.api

    def stopped_while_writing(**kwargs):
        result = real_simulate(**kwargs)

        def write(folder):
            (Path(folder) / "summary.csv").write_text("half\n")
            raise KeyboardInterrupt                              # Ctrl-C in the middle of the files
        object.__setattr__(result, "write", write)    # Result is a frozen dataclass
        return result

    real_simulate = sim.api.simulate
    monkeypatch.setattr(sim.api, "simulate", stopped_while_writing)
    with pytest.raises(KeyboardInterrupt):
        sim.sweep.run_point(blocked, str(out), "feedc0ffee00")
    assert not [p for p in (out / PARTIAL).iterdir() if ".feedc0ffee00." in p.name]
    assert sorted(p.name for p in stale.iterdir()) == ["error.txt", "summary.csv"]     # untouched
    monkeypatch.setattr(sim.api, "simulate", real_simulate)
    statuses = run_points([blocked], out, jobs=1, quiet=True)
    assert statuses[0]["ok"] and not statuses[0].get("skipped")
    assert sorted(p.name for p in stale.iterdir()) == ["energy.csv", "point.json", "result.json", "summary.csv",
                                                       "utilisation.csv"]
    assert (stale / "summary.csv").read_text() != "stale\n"
    _assert_clean(out)


def _hetmoe(*args: object, blocking: str | None = None, **kw) -> subprocess.Popen:
    """``hetmoe ARGS`` in a subprocess; with ``blocking=GATE``, its maxnn points block (tests/blocking_points.py)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    head = ["-m", "tests.blocking_points", blocking, "maxnn"] if blocking else ["-m", "sim.cli"]
    return subprocess.Popen([sys.executable, *head, *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_a_killed_sweep_resumes_to_the_uninterrupted_results(tiny, tmp_path):
    spec, gate = _spec(tmp_path, tiny), tmp_path / "gate"
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _hetmoe("sweep", spec, "--out", killed, "--quiet", "--jobs", 2, blocking=gate, start_new_session=True)
    try:
        wait_for(gate / "started-maxnn")
        wait_until(lambda: len(_finished(killed)) >= 2 or proc.poll() is not None, "two finished points")
        assert proc.poll() is None, "the sweep ended while a point was blocked"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)      # the sweep and its workers, as the OOM killer or a power cut would
        proc.communicate()
    # the killed sweep left two finished points and the third half-written, in its staging folder only
    finished = {p: p.stat().st_mtime_ns for p in _finished(killed)}
    assert len(finished) == 2 and not (killed / "runs" / _blocked_id(spec)).exists()
    [staging] = (killed / PARTIAL).iterdir()
    assert staging.name.startswith(_blocked_id(spec) + ".")
    assert {"summary.csv", "energy.csv"} <= {p.name for p in staging.iterdir()}
    assert not (staging / "result.json").exists()
    said = {}
    for out in (killed, clean):
        proc = _hetmoe("sweep", spec, "--out", out, "--quiet", "--jobs", 2)
        said[out], err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    assert "1 run, 2 already done" in said[killed]
    assert {p: p.stat().st_mtime_ns for p in finished} == finished          # finished points untouched
    a = {p.parent.name: p.read_text() for p in _finished(killed)}
    b = {p.parent.name: p.read_text() for p in _finished(clean)}
    assert len(a) == 3 and a == b
    assert (killed / "summary.csv").read_text() == (clean / "summary.csv").read_text()
    _assert_clean(killed)


def test_ctrl_c_on_the_real_command_smoke(tmp_path):
    """The real command on real points, Ctrl-C once the first point is finished. A fast machine may finish
    every point first: then exit 0 with all six kept; else exit 130 with the count on disk. Same invariants."""
    spec, out = tmp_path / "spec.yaml", tmp_path / "out"
    spec.write_text("tokens: 2048\npolicies: [all-analog, all-digital, maxnn]\nfractions: [0.125, 0.25, 0.5, 0.75]\n")
    proc = _hetmoe("sweep", spec, "--out", out, "--quiet", "--jobs", 2)
    wait_until(lambda: bool(_finished(out)) or proc.poll() is not None, "a finished point", timeout_s=600)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    done = len(_finished(out))
    if proc.returncode == 0:
        assert done == 6, err
    else:
        assert proc.returncode == 130, err
        assert err.count("\n") == 1 and "run the same command again to resume" in err
        kept = int(re.search(r"interrupted; (\d+) of 6 points are finished", err).group(1))
        assert kept == done >= 1                  # the workers are stopped: nothing finishes after the count
    _assert_clean(out)


def test_points_computed_by_other_code_are_named_once(tmp_path, capsys):
    """A Dask worker started before the code changed: its points are kept, but a rerun does not count them
    as finished; the sweep says so once, and an interrupted sweep counts them apart."""
    from sim.provenance import code_fingerprint
    from sim.sweep import _check_code

    warned: list[str] = []
    for pid in ("a", "b"):
        _check_code({"id": pid, "ok": True, "code_fingerprint": "0123456789ab"}, tmp_path, warned)
    _check_code({"id": "c", "ok": True, "code_fingerprint": code_fingerprint()}, tmp_path, warned)
    err = capsys.readouterr().err
    assert err == (f"hetmoe: warning: a worker runs other hetmoe code than this command (code fingerprint "
                   f"0123456789ab, here {code_fingerprint()}): its points are written to {tmp_path / 'runs'} but a "
                   "rerun computes them again; restart the Dask workers after changing the code\n")


def test_a_second_sigterm_does_not_cut_the_cleanup_short(monkeypatch, capsys, tmp_path):
    """``timeout`` sends SIGTERM to the command and then to its process group: the second one arrives
    while the first one's cleanup runs, and must not interrupt it."""
    import sim.api

    cleaned = []

    def simulate(**kwargs):
        try:
            signal.raise_signal(signal.SIGTERM)
        finally:
            signal.raise_signal(signal.SIGTERM)
            cleaned.append(True)

    monkeypatch.setattr(sim.api, "simulate", simulate)
    out = tmp_path / "out"
    assert main(["run", "--tokens", "64", "--out", str(out)]) == 130
    assert cleaned == [True]
    assert capsys.readouterr().err.startswith(f"hetmoe: interrupted by SIGTERM; nothing was written to {out}")


def test_signals_wait_while_an_interrupted_sweep_cleans_up():
    from sim.sweep import _signals_ignored

    seen = []
    record = lambda signum, frame: seen.append(signum)  # noqa: E731
    before = {sig: signal.signal(sig, record) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _signals_ignored():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGTERM)
        assert seen == []
        signal.raise_signal(signal.SIGTERM)                      # the handlers are back afterwards
        assert seen == [signal.SIGTERM]
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
