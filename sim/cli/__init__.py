"""The ``hetmoe`` command line: load -> build -> run -> write. Errors are one line, exit status 2.

One module per command group (``hw``, ``workloads``, ``run``, ``compare``, ``accuracy``), each with a
``register(subparsers)``; option helpers shared between them live in ``common``, which the command
modules import (they never import each other). Command modules import the API, sweeps and reports
lazily inside their handlers so that ``hetmoe --help`` starts fast.

This module itself imports only the standard library: :func:`entry` (the ``hetmoe`` executable and
``python -m sim.cli``) first makes Ctrl-C and SIGTERM end the command with one line and exit status 130,
ignores SIGXFSZ (a file size limit then fails the write with EFBIG, reported in one line), and lets the
console degrade instead of crash under an ASCII locale; only then does it import the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    from .common import FMT

    parser = argparse.ArgumentParser(
        prog="hetmoe",
        description="Simulate Mixture-of-Experts inference on heterogeneous analog-digital chips.",
        epilog="Exit status: 0 done; 1 some runs of a compare or sweep failed (the others are kept); 2 bad "
               "input (one line naming the file, line and field); 70 internal error (one line, the traceback "
               "in a log file; --debug shows it); 130 interrupted by Ctrl-C or SIGTERM (one line saying what was "
               "kept).",
        formatter_class=FMT)
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an internal error instead of writing it to a log file")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules():
        module.register(sub)
    _add_debug(sub)
    _mark_outputs(sub)
    return parser


# options that name what a command writes: checked (and stale temporaries in them removed) before the command
# computes anything, so that a bad location never costs the work (metavar DIR: a folder, else a file)
OUTPUT_OPTIONS = ("--out", "--trace-events")


def _mark_outputs(sub: argparse._SubParsersAction) -> None:
    for p in set(sub.choices.values()):
        found = [(a.dest, opt, "DIR" if a.metavar == "DIR" else "FILE") for a in p._actions
                 for opt in a.option_strings if opt in OUTPUT_OPTIONS]
        if found:
            p.set_defaults(output_options=found)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _mark_outputs(action)


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse an output location that cannot be written (an empty path, a file where a folder belongs, a
    folder that cannot be made or written) before any work; remove temporaries a killed run left there."""
    from arch.safeio import check_output_location

    for dest, option, kind in getattr(args, "output_options", ()):
        value = getattr(args, dest, None)
        if value is not None:
            check_output_location(value, option, folder=kind == "DIR")


def _add_debug(sub: argparse._SubParsersAction) -> None:
    """``--debug`` after any (sub)command too; it never overrides one given before the command."""
    for p in set(sub.choices.values()):
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an internal error")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_debug(action)


def _command_modules() -> list:
    from . import accuracy, compare, hw, run, serve, whatif, workloads
    from . import system  # noqa: I001 - hetmoe system (issue 31), registered last

    return [hw, workloads, run, compare, serve, whatif, accuracy, system]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Exit status: 0 done, 1 some runs failed, 2 bad input (one line naming the file,
    line and field), 70 an internal error (one line; the traceback goes to a log file, or to the
    terminal with ``--debug``), 130 interrupted by Ctrl-C or SIGTERM (one line saying what was kept and
    how to resume)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    received: list[str] = []
    with _sigterm_as_ctrl_c(received):
        return _run(args, argv, received)


# errors of the system rather than of hetmoe: a full disk, a quota, a file size limit (ulimit -f), a
# read-only file system, a refused permission, an I/O error, too many open files, a name too long
SYSTEM_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES", "EPERM", "EIO",
                                                       "EMFILE", "ENFILE", "ENAMETOOLONG", "ENOMEM", "ESTALE")
                          if hasattr(errno, n))


def _run(args: argparse.Namespace, argv: Sequence[str] | None, received: list[str]) -> int:
    from arch.errors import HetmoeError, Interrupted

    try:
        _prepare(args)
        return int(args.handler(args) or 0)
    except HetmoeError as exc:
        print(f"hetmoe: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except OSError as exc:
        # a path the user named (an --out folder, a file) that the system refuses, or a full disk
        if exc.filename is None and exc.errno not in SYSTEM_ERRNOS:
            return _internal_error(exc, args, argv)
        where = f"{exc.filename}: " if exc.filename else ""
        why = "exists and is not a folder" if exc.errno == errno.EEXIST else (exc.strerror or str(exc))
        hint = " (the file size limit, ulimit -f)" if exc.errno == errno.EFBIG else ""
        print(f"hetmoe: error: {where}{why}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        note = str(exc) if isinstance(exc, Interrupted) and str(exc) else _format_note(args)
        by = f" by {received[0]}" if received else ""
        print(f"hetmoe: interrupted{by}; {note}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place every other exception ends
        return _internal_error(exc, args, argv)


@contextlib.contextmanager
def _sigterm_as_ctrl_c(received: list[str]) -> Iterator[None]:
    """SIGTERM (what ``timeout``, ``kill`` and batch schedulers send) stops a command as Ctrl-C does: the
    same cleanup, the same one line saying what was kept, exit status 130. A second SIGTERM does not
    interrupt that cleanup. The earlier handler is put back afterwards (``main`` may be called from
    Python, e.g. by the tests)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum).name)
        if len(received) == 1:         # timeout sends it twice: to the command, then to its process group
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _prepare(args: argparse.Namespace) -> None:
    """Before a command computes: its output locations checked, and numba (and matplotlib, without a home
    directory) given a cache folder this user can write, before either is imported (workers inherit it)."""
    check_outputs(args)
    from arch.userdirs import configure_matplotlib, configure_numba_cache

    configure_numba_cache()
    configure_matplotlib()


def entry() -> int:
    """The ``hetmoe`` executable: :func:`main`, then hand every live object to the garbage collector's
    permanent generation (``gc.freeze``) so that the interpreter's exit does not traverse them all
    again: with numba's typing tables loaded that last collection took ~0.1 s of every run.

    Before anything else is imported: SIGTERM ends the command as Ctrl-C does (an interrupt during the
    imports or the argument set-up is one line and exit 130, never a traceback), SIGXFSZ is ignored (a
    file size limit fails the write with EFBIG, which is reported in one line), and the console replaces
    what its encoding cannot show (``PYTHONIOENCODING=ascii``, ``LC_ALL=POSIX``) instead of failing."""
    received: list[str] = []
    try:
        _early_setup(received)
        status = main()
    except KeyboardInterrupt:
        by = f" by {received[0]}" if received else ""
        print(f"hetmoe: interrupted{by} while starting; nothing was written", file=sys.stderr)
        return 130
    with contextlib.suppress(KeyboardInterrupt):      # the command has answered: a late Ctrl-C changes nothing
        gc.freeze()
    return status


def _early_setup(received: list[str]) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="backslashreplace")
    if threading.current_thread() is not threading.main_thread():
        return
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def handler(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum).name)
        if len(received) == 1:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _internal_error(exc: BaseException, args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """One line on the terminal, the traceback in a log file (or raised again with ``--debug``)."""
    if getattr(args, "debug", False):
        raise exc
    log = crash_log(exc, list(sys.argv[1:] if argv is None else argv))
    what = "out of memory" if isinstance(exc, MemoryError) else f"internal error ({type(exc).__name__}: " \
        f"{(str(exc).splitlines() or [''])[0][:200]})"
    hint = " (lower --tokens or --jobs, or set --max-memory-gib below this machine's memory)" \
        if isinstance(exc, MemoryError) else ""
    print(f"hetmoe: {what}{hint}. This is a bug if your input was valid: please report it with the command and "
          f"the traceback in {log} (rerun with --debug to see it here)", file=sys.stderr)
    return 70


def _format_note(args: argparse.Namespace) -> str:
    note = getattr(args, "interrupt_note", None) or "nothing was written"
    try:
        return note.format(**vars(args))
    except (KeyError, IndexError, ValueError):
        return note


def crash_log(exc: BaseException, argv: list[str]) -> str:
    """Write the traceback of ``exc`` with the command line to a log file; return its path."""
    import datetime
    import os
    import platform
    import tempfile
    import traceback
    from pathlib import Path

    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    try:
        cwd = os.getcwd()
    except OSError:                          # the working folder was deleted
        cwd = "(deleted)"
    text = (f"command: hetmoe {' '.join(argv)}\npython: {platform.python_version()} on {platform.platform()}\n"
            f"cwd: {cwd}\n\n" + "".join(traceback.format_exception(exc)))
    folders = []
    try:
        from arch.userdirs import cache_dir

        root = cache_dir(quiet=True)
        if root is not None:
            folders.append(root / "crash")
    except Exception:  # noqa: BLE001 - the crash handler never raises
        pass
    with contextlib.suppress(Exception):
        folders.append(Path(tempfile.gettempdir()))
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"hetmoe-crash-{stamp}-{os.getpid()}.log"
            path.write_text(text, encoding="utf-8", errors="backslashreplace")
            return str(path)
        except OSError:
            continue
    return "(no writable folder for the log; rerun with --debug)"
