"""Environment, interruption and system-error hardening (issue 30, items 9-11): no home directory, ASCII
locales and consoles, read-only kernel caches, Ctrl-C during start-up, workers outliving a killed parent,
stale temporaries, output locations checked before any work, file modes, refused writes and huge meshes.

Nothing here races a process: a start-up interrupt is sent by an import hook at a fixed point, and a killed
parent's workers are waited for (a condition with a generous timeout, never a guessed sleep)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import arch.safeio as safeio
import arch.userdirs as userdirs
from sim.cli import crash_log
from tests.blocking_points import wait_until
from tests.moe_checkpoints import write_olmoe
from tests.cli_helpers import cli, one_line, write_tiny

ROOT = Path(__file__).resolve().parent.parent


def env_for_subprocess(**changes: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    return write_tiny(tmp_path_factory.mktemp("tiny"))


def run_args(tiny: tuple[Path, Path], out: Path | str, *extra) -> list:
    chip, model = tiny
    return ["run", "--hw", chip, "--model", model, "--tokens", 32, "--batch", 8, "--policy", "maxnn",
            "--set", "analog.tile.tiers=16",
            "--quiet", "--out", out, *extra]


@pytest.fixture
def no_home(monkeypatch, tmp_path):
    """A user without a passwd entry and no HOME: Path.home() raises RuntimeError."""
    import pwd

    def missing(uid: int):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    for var in ("HOME", "HETMOE_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", missing)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with pytest.raises(RuntimeError):
        Path.home()
    return tmp_path / "tmp" / f"hetmoe-{os.getuid()}"


# ----------------------------------------------------------------------------- item 9: environment

def test_cache_folder_order(monkeypatch, tmp_path, capsys):
    for var in ("HETMOE_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    private = tmp_path / "tmp" / f"hetmoe-{os.getuid()}"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert userdirs.cache_dir() == tmp_path / "home" / ".cache" / "hetmoe"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")            # not absolute: ignored
    assert userdirs.cache_dir() == tmp_path / "home" / ".cache" / "hetmoe"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert userdirs.cache_dir() == tmp_path / "xdg" / "hetmoe"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "")                                   # never /.cache at the root
    assert userdirs.cache_dir() == private
    monkeypatch.setenv("HOME", "relative-home")
    assert userdirs.cache_dir() == private
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path / "a-file"))             # a HOME that cannot hold .cache
    assert userdirs.cache_dir() == private
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    monkeypatch.setenv("HETMOE_CACHE_DIR", str(tmp_path / "explicit"))
    assert userdirs.cache_dir() == tmp_path / "explicit"
    assert capsys.readouterr().err == ""


def test_no_writable_cache_folder_is_one_notice(monkeypatch, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    for var in ("HETMOE_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "a-file"))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "a-file"))
    monkeypatch.setattr(userdirs, "_notified", set())
    assert userdirs.cache_dir() is None
    assert userdirs.cache_dir() is None
    one_line(capsys.readouterr().err, "hetmoe: no writable cache folder", "caches are off")


def test_a_foreign_temporary_folder_is_not_used(monkeypatch, tmp_path):
    """<tmp>/hetmoe-<uid> that is a link (planted by another user) is refused."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / f"hetmoe-{os.getuid()}").symlink_to(tmp_path / "elsewhere")
    assert userdirs._private_temp() is None


def test_no_home_stats_and_crash_log(no_home, checkpoint, capsys):
    """stats (which caches scores) and the crash handler work for a user without a home directory."""
    rc, out, err = cli(["stats", checkpoint], capsys)
    assert rc == 0, err
    assert list(no_home.glob("stats-*.npz"))
    log = crash_log(RuntimeError("boom"), ["run"])
    assert Path(log).is_file() and Path(log).parent == no_home / "crash"
    assert "RuntimeError: boom" in Path(log).read_text(encoding="utf-8")


def test_no_home_matplotlib_gets_the_cache_folder(no_home, monkeypatch):
    """Not a new temporary folder (and three lines about it) on every run."""
    monkeypatch.setenv("MPLCONFIGDIR", "placeholder")
    monkeypatch.delenv("MPLCONFIGDIR")
    userdirs.configure_matplotlib()
    assert os.environ["MPLCONFIGDIR"] == str(no_home / "matplotlib")
    monkeypatch.setenv("MPLCONFIGDIR", "/mine")
    userdirs.configure_matplotlib()
    assert os.environ["MPLCONFIGDIR"] == "/mine"


def test_no_home_internal_error_is_one_line(no_home, monkeypatch, capsys):
    import sim.cli.hw

    def broken(args):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(sim.cli.hw, "run_show", broken)
    rc, _, err = cli(["hw", "show", "aimc-3d-moe"], capsys)
    assert rc == 70
    line = one_line(err, "internal error (ZeroDivisionError: planted)")
    assert str(no_home / "crash") in line


def test_no_home_subprocess_run_with_checkpoint(tmp_path, tiny, checkpoint):
    """The whole command without HOME and without a passwd entry: run --checkpoint caches its scores in the
    per-user temporary folder."""
    script = textwrap.dedent("""
        import pwd, sys
        def missing(uid):
            raise KeyError(uid)
        pwd.getpwuid = missing
        from sim.cli import entry
        sys.exit(entry())
    """)
    proc = subprocess.run([sys.executable, "-c", script, "run", "--checkpoint", str(checkpoint), "--tokens", "32",
                           "--hw", "hermes-64", "--policy", "all-digital", "--quiet", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path,
                          env=env_for_subprocess(HOME=None, HETMOE_CACHE_DIR=None, XDG_CACHE_HOME=None,
                                                 TMPDIR=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "o" / "result.json").is_file()
    assert list((tmp_path / f"hetmoe-{os.getuid()}").glob("stats-*.npz"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_olmoe(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture
def numba_env(monkeypatch):
    """NUMBA_CACHE_DIR and numba's configuration put back after the test."""
    import numba
    from numba.core.dispatcher import Dispatcher

    monkeypatch.setenv("NUMBA_CACHE_DIR", "placeholder")
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setattr(numba.config, "CACHE_DIR", numba.config.CACHE_DIR)

    monkeypatch.setattr(Dispatcher, "enable_caching", Dispatcher.enable_caching)
    monkeypatch.setattr(userdirs, "_notified", set())


def _read_only_install(tmp_path: Path) -> Path:
    """An install whose __pycache__ folders cannot be made (a file stands in each one's place, which even
    root cannot write into)."""
    root = tmp_path / "install"
    for src in userdirs._JIT_SOURCES:
        folder = root / Path(src).parent
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__pycache__").write_text("")
    return root


def test_numba_cache_follows_the_install_then_the_user(numba_env, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(userdirs, "_root", lambda: tmp_path / "writable")
    assert userdirs.configure_numba_cache() == "install"
    assert "NUMBA_CACHE_DIR" not in os.environ
    monkeypatch.setattr(userdirs, "_root", lambda: _read_only_install(tmp_path))
    monkeypatch.setenv("HETMOE_CACHE_DIR", str(tmp_path / "cache"))
    assert userdirs.configure_numba_cache() == str(tmp_path / "cache" / "numba")
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "cache" / "numba")
    import numba

    assert numba.config.CACHE_DIR == str(tmp_path / "cache" / "numba")
    assert userdirs.configure_numba_cache() == "NUMBA_CACHE_DIR"      # the user's (or an earlier) choice is kept
    assert capsys.readouterr().err == ""


def test_numba_without_any_cache_folder_compiles_without_one(numba_env, monkeypatch, tmp_path, capsys):
    import numba

    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(userdirs, "_root", lambda: _read_only_install(tmp_path))
    monkeypatch.setattr(userdirs, "cache_dir", lambda quiet=False: None)
    monkeypatch.setenv("HOME", str(tmp_path / "a-file"))             # numba's own user-wide folder fails too
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert userdirs.configure_numba_cache() == "none"
    one_line(capsys.readouterr().err, "no writable folder for compiled kernels", "compiled again on every run")

    def twice(x):
        return 2 * x

    twice.__module__ = "tests.test_hardening_env"
    fn = numba.njit(cache=True)(twice)            # without the fallback: "no locator available"
    assert fn(3) == 6


def test_numba_cache_write_failures_are_not_errors(monkeypatch, capsys):
    from numba.core import caching

    monkeypatch.setattr(caching.Cache, "save_overload", caching.Cache.save_overload)
    monkeypatch.setattr(userdirs, "_notified", set())

    def efbig(self, sig, data):
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(caching.Cache, "save_overload", efbig)
    userdirs.tolerate_numba_cache_errors()
    caching.Cache.save_overload(object(), None, None)
    one_line(capsys.readouterr().err, "compiled kernels not cached (File too large)")


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "ascii"}, {"LC_ALL": "POSIX", "PYTHONUTF8": "0",
                                                                  "LANG": None, "LC_CTYPE": None}])
def test_ascii_consoles_and_locales(env, tmp_path, checkpoint):
    """accuracy and compare under an ASCII console or the POSIX locale: the console shows what it can
    (escapes), every file is UTF-8, nothing crashes."""
    ids = tmp_path / "ids.npy"
    np.save(ids, np.random.default_rng(0).integers(0, 64, (2, 17)))
    e = env_for_subprocess(HETMOE_CACHE_DIR=str(tmp_path / "cache"), **env)
    acc = subprocess.run([sys.executable, "-m", "sim.cli", "accuracy", "--checkpoint", str(checkpoint), "--eval",
                          str(ids), "--hw", "hermes-64", "--noise-seeds", "1", "--quiet", "--out",
                          str(tmp_path / "acc")], capture_output=True, cwd=tmp_path, env=e)
    assert acc.returncode == 0, acc.stderr.decode("ascii", "replace")
    assert b"\\u0394" in acc.stdout or b"\\xb1" in acc.stdout           # escaped, not a UnicodeEncodeError
    cmp = subprocess.run([sys.executable, "-m", "sim.cli", "compare", "--hw", "hermes-64", "--tokens", "64",
                          "--baseline", "none", "--quiet", "--jobs", "1", "--out",
                          str(tmp_path / "cmp")], capture_output=True, cwd=tmp_path, env=e)
    assert cmp.returncode == 0, cmp.stderr.decode("ascii", "replace")
    for proc in (acc, cmp):
        proc.stdout.decode("ascii")                                      # the console got ASCII only
        assert b"Traceback" not in proc.stderr
    texts = [p for p in (tmp_path / "acc").rglob("*") if p.suffix in (".json", ".csv", ".md")]
    texts += [p for p in (tmp_path / "cmp").rglob("*") if p.suffix in (".json", ".csv", ".md")]
    assert any(p.name == "report.md" for p in texts)
    for p in texts:
        p.read_bytes().decode("utf-8")


# ----------------------------------------------------------------------------- item 10: interruptions, outputs

INTERRUPT_DURING_IMPORTS = textwrap.dedent("""
    import os, signal, sys

    SIG = getattr(signal, sys.argv.pop(1))

    class Hook:
        def find_spec(self, name, path=None, target=None):
            if name == "sim.cli.common":                  # the heavy imports of the command modules
                os.kill(os.getpid(), SIG)
            return None

    sys.meta_path.insert(0, Hook())
    from sim.cli import entry
    sys.exit(entry())
""")


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupt_while_starting_is_one_line(sig, tmp_path):
    proc = subprocess.run([sys.executable, "-c", INTERRUPT_DURING_IMPORTS, sig, "hw", "show", "aimc-3d-moe"],
                          capture_output=True, text=True, cwd=tmp_path, env=env_for_subprocess())
    assert proc.returncode == 130, proc.stderr
    line = one_line(proc.stderr, "hetmoe: interrupted", "nothing was written")
    assert ("by SIGTERM" in line) == (sig == "SIGTERM")


def test_the_cli_package_imports_only_the_standard_library():
    """``import sim.cli`` (what the hetmoe executable and python -m sim.cli run first) loads no project
    module and no numpy, so the interrupt handling is in place before the heavy imports."""
    code = "import sys, sim.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('arch', 'workloads', 'numpy', 'numba', 'yaml') or m.startswith('sim.cli.')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env_for_subprocess())
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


WORKER_PARENT = textwrap.dedent("""
    import os, sys
    from sim import parentwatch
    if sys.argv[1] == "thread":
        parentwatch._prctl_pdeathsig = lambda sig: False
        parentwatch.POLL_S = 0.05
    from sim.sweep import make_executor
    executor, _ = make_executor(2, None)
    executor.submit(os.getpid).result()
    print(" ".join(str(pid) for pid in executor._processes), flush=True)
    sys.stdin.read()                                   # until the test kills this process
""")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")                         # a zombie no one reaps has exited


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["pdeathsig", "thread"])
def test_workers_end_with_a_killed_parent(how):
    parent = subprocess.Popen([sys.executable, "-c", WORKER_PARENT, how], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env_for_subprocess())
    try:
        workers = [int(x) for x in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(not _gone(w) for w in workers)
        parent.kill()
        parent.wait()
        wait_until(lambda: all(_gone(w) for w in workers), "workers of the killed parent to end", 30)
    finally:
        parent.kill()
        parent.wait()


def test_parentwatch_uses_the_kernel_on_linux():
    from sim import parentwatch

    if sys.platform.startswith("linux"):
        assert parentwatch._prctl_pdeathsig(0)          # 0: clears it again in this (test) process


def test_a_worker_started_through_another_process_watches_the_command():
    """A worker forked by a forkserver: its parent is not the command; the command's death still ends it."""
    code = "import sys; from sim.parentwatch import die_with_parent; print(die_with_parent(int(sys.argv[1])))"
    alive = subprocess.run([sys.executable, "-c", code, "1"], capture_output=True, text=True,     # init
                           env=env_for_subprocess())
    assert alive.returncode == 0 and alive.stdout.strip() in ("pdeathsig", "thread"), alive.stderr
    dead = subprocess.run([sys.executable, "-c", code, str(_dead_pid())], capture_output=True, text=True,
                          env=env_for_subprocess())
    assert dead.returncode == 1 and dead.stdout == ""


def _temp(folder: Path, name: str, pid: int, host: str = safeio._HOST) -> Path:
    path = folder / f".{name}.~{pid}@{host}.abcd1234.tmp"
    path.write_text("half")
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_are_removed_on_start(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "runs" / "p1").mkdir(parents=True)
    dead = _dead_pid()
    stale = [_temp(out, "summary.png", dead), _temp(out / "runs" / "p1", "result.json", dead),
             _temp(out, "..energy.csv.~1@abcdef.x1y2z3w4.tmp", dead)]
    kept = [_temp(out, "report.md", os.getpid()),                  # a live writer's
            _temp(out, "other.png", dead, host="000000"),          # another host's (a Dask worker's)
            out / "notes.tmp", out / "summary.png"]
    for path in kept[2:]:
        path.write_text("mine")
    rc, _, err = cli(run_args(tiny, out), capsys)
    assert rc == 0, err
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    assert (out / "result.json").is_file()


def test_stale_temporaries_of_a_file_output(tmp_path):
    dead = _dead_pid()
    stale = _temp(tmp_path, "trace.npz", dead)
    other = _temp(tmp_path, "report.md", dead)
    safeio.check_output_location(tmp_path / "trace.npz", "--out", folder=False)
    assert not stale.exists() and other.exists()


def test_outputs_follow_the_umask(tiny, tmp_path, capsys):
    old = os.umask(0o027)
    try:
        assert safeio.file_mode() == 0o640
        safeio.write_text(tmp_path / "a.txt", "x")
        rc, _, err = cli(run_args(tiny, tmp_path / "out", "--trace-events", tmp_path / "events.json"), capsys)
    finally:
        os.umask(old)
    assert rc == 0, err
    files = [tmp_path / "a.txt", tmp_path / "events.json", *(tmp_path / "out").iterdir()]
    assert len(files) == 6
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o640, f
    old = os.umask(0o002)
    try:
        safeio.write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o664


@pytest.mark.parametrize("argv", [
    ["run", "--out", ""],
    ["compare", "--out", ""],
    ["whatif", "--out", ""],
    ["trace", "synth", "--model", "olmoe-1b-7b", "--out", ""],
    ["run", "--out", "__dir__", "--trace-events", ""],
])
def test_an_empty_output_path_is_refused(argv, tmp_path, capsys):
    argv = [str(tmp_path / "o") if a == "__dir__" else a for a in argv]
    rc, _, err = cli(argv, capsys)
    assert rc == 2
    one_line(err, "hetmoe: error: --", "'': an empty path")
    assert not any(tmp_path.iterdir())


@pytest.fixture
def no_work(monkeypatch):
    """Any simulation, noisy pass or trace synthesis fails the test: the output check must come first."""
    import sim.api
    import sim.functional.evaluate

    def forbidden(*args, **kwargs):
        raise AssertionError("computed before the output location was checked")

    monkeypatch.setattr(sim.api, "simulate", forbidden)
    monkeypatch.setattr(sim.api, "resolve_inputs", forbidden)
    for name in ("evaluate", "run_accuracy", "measure"):
        if hasattr(sim.functional.evaluate, name):
            monkeypatch.setattr(sim.functional.evaluate, name, forbidden)


@pytest.mark.parametrize("where,fragment", [
    ("__file__", "exists and is not a folder"),
    ("__file__/sub", "exists and is not a folder; cannot make"),
    ("/proc/hetmoe-cannot-be-here", "/proc/hetmoe-cannot-be-here: cannot be made in /proc: "),
])
@pytest.mark.parametrize("command", ["run", "accuracy", "compare"])
def test_a_bad_out_is_refused_before_computing(command, where, fragment, tmp_path, tiny, checkpoint, no_work,
                                               capsys):
    afile = tmp_path / "a-file"
    afile.write_text("")
    out = where.replace("__file__", str(afile))
    if command == "run":
        argv = run_args(tiny, out)
    elif command == "accuracy":
        argv = ["accuracy", "--checkpoint", checkpoint, "--eval", tmp_path / "missing.npy", "--out", out]
    else:
        argv = ["compare", "--tokens", 32, "--quiet", "--out", out]
    rc, _, err = cli(argv, capsys)
    assert rc == 2
    one_line(err, "hetmoe: error: ", fragment)


@pytest.mark.parametrize("events,fragment", [("__dir__", "is a folder; --trace-events names a file"),
                                             ("__file__/x.json", "exists and is not a folder")])
def test_a_bad_trace_events_is_refused_before_computing(events, fragment, tmp_path, tiny, no_work, capsys):
    (tmp_path / "a-file").write_text("")
    events = events.replace("__dir__", str(tmp_path)).replace("__file__", str(tmp_path / "a-file"))
    rc, _, err = cli(run_args(tiny, tmp_path / "out", "--trace-events", events), capsys)
    assert rc == 2
    one_line(err, fragment)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- item 11: system errors

def test_a_refused_write_names_the_file_and_what_was_kept(tiny, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    real = Path.write_text

    def efbig(self, *args, **kwargs):
        if "result.json" in self.name:
            raise OSError(errno.EFBIG, "File too large")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", efbig)
    rc, _, err = cli(run_args(tiny, out), capsys)
    assert rc == 2
    one_line(err, f"hetmoe: error: {out / 'result.json'}: cannot write: File too large (the file size limit, "
                  "ulimit -f); nothing was written to it")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert not (out / "result.json").exists()


def test_a_refused_write_keeps_the_earlier_file(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    path.write_text("earlier")
    real = Path.write_text

    def enospc(self, *args, **kwargs):
        if self.name.startswith(".report.md."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", enospc)
    with pytest.raises(safeio.OutputError, match="report.md: cannot write: No space left on device .*the earlier "
                                                 "report.md is kept unchanged"):
        safeio.write_text(path, "new")
    assert path.read_text() == "earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_a_file_size_limit_is_exit_2(tmp_path, tiny):
    """ulimit -f: SIGXFSZ is ignored, the write fails with EFBIG, and the command says which file (exit 2)."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    proc = subprocess.run([sys.executable, "-m", "sim.cli", *map(str, run_args(tiny, tmp_path / "out"))],
                          capture_output=True, text=True, cwd=tmp_path, preexec_fn=limit,
                          env=env_for_subprocess(HETMOE_CACHE_DIR=str(tmp_path / "cache")))
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, f"{tmp_path / 'out'}/", "File too large (the file size limit, ulimit -f)")
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("sets,fragment", [
    (["noc.width=4096", "noc.height=4096"], "16,777,216 NoC nodes"),
    (["analog.tile_count=10000000", "noc.tiles_per_node=156250"], "10,000,000 analog tiles"),
])
def test_huge_meshes_and_tile_counts_are_refused_up_front(sets, fragment, tmp_path, capsys):
    argv = ["run", "--tokens", 32, "--quiet", "--max-memory-gib", 4, "--out", tmp_path / "out"]
    for s in sets:
        argv += ["--set", s]
    rc, _, err = cli(argv, capsys)
    assert rc == 2
    line = [x for x in err.strip().splitlines() if "warning" not in x]
    assert len(line) == 1 and "Traceback" not in err, err
    assert fragment in line[0] and "needs about" in line[0] and "more than the limit of 4.0 GiB" in line[0]
    assert not (tmp_path / "out").exists()
