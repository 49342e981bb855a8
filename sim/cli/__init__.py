"""The ``hetmoe`` command line: load -> build -> run -> write. Errors are one line, exit status 2.

One module per command group (``hw``, ``workloads``, ``run``, ``compare``, ``accuracy``), each with a
``register(subparsers)``; option helpers shared between them live in ``common``, which the command
modules import (they never import each other). Command modules import the API, sweeps and reports
lazily inside their handlers so that ``hetmoe --help`` starts fast.
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

from arch.errors import HetmoeError, Interrupted

from . import accuracy, compare, hw, run, serve, whatif, workloads
from .common import FMT

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
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
    return parser


def _add_debug(sub: argparse._SubParsersAction) -> None:
    """``--debug`` after any (sub)command too; it never overrides one given before the command."""
    for p in set(sub.choices.values()):
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an internal error")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_debug(action)


def _command_modules() -> list:
    return [hw, workloads, run, compare, serve, whatif, accuracy]


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


def _run(args: argparse.Namespace, argv: Sequence[str] | None, received: list[str]) -> int:
    try:
        return int(args.handler(args) or 0)
    except HetmoeError as exc:
        print(f"hetmoe: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except OSError as exc:
        # a path the user named (an --out folder, a file) that the system refuses, or a full disk
        if exc.filename is None and exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            return _internal_error(exc, args, argv)
        where = f"{exc.filename}: " if exc.filename else ""
        why = "exists and is not a folder" if exc.errno == errno.EEXIST else (exc.strerror or str(exc))
        print(f"hetmoe: error: {where}{why}", file=sys.stderr)
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


def entry() -> int:
    """The ``hetmoe`` executable: :func:`main`, then hand every live object to the garbage collector's
    permanent generation (``gc.freeze``) so that the interpreter's exit does not traverse them all
    again: with numba's typing tables loaded that last collection took ~0.1 s of every run."""
    status = main()
    gc.freeze()
    return status


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
    import traceback
    from pathlib import Path

    root = Path(os.environ.get("HETMOE_CACHE_DIR") or Path.home() / ".cache" / "hetmoe") / "crash"
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    text = (f"command: hetmoe {' '.join(argv)}\npython: {platform.python_version()} on {platform.platform()}\n"
            f"cwd: {os.getcwd()}\n\n" + "".join(traceback.format_exception(exc)))
    for folder in (root, Path(os.environ.get("TMPDIR", "/tmp"))):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"hetmoe-crash-{stamp}-{os.getpid()}.log"
            path.write_text(text)
            return str(path)
        except OSError:
            continue
    return "(no writable folder for the log; rerun with --debug)"
