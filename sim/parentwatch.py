"""Worker processes end with their parent: a ``kill -9`` of the command must not leave its workers running.

:func:`die_with_parent` is called in a worker when it starts (the process pool's initializer). On Linux
the kernel does it: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` sends the worker SIGKILL when the parent exits.
Elsewhere (or when prctl is unavailable) a daemon thread checks every second whether the parent is
still the process that started the worker. Either way a parent that is already gone when the worker
starts ends the worker at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1
POLL_S = 1.0


def _prctl_pdeathsig(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError, ValueError):
        return False


def _exit_now() -> None:
    os._exit(1)                      # no cleanup: the parent that would collect the result is gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:                  # another user's process of that id: taken as alive
        return True
    return True


def die_with_parent(parent: int | None = None) -> str:
    """End this process when its parent exits. ``parent``: the command's process id, when the worker may have
    been started through another process (a forkserver, which itself ends with the command). Returns how the
    parent is watched: ``pdeathsig`` (by the kernel) or ``thread``."""
    ppid = os.getppid()
    parent = ppid if parent is None else parent
    how = "pdeathsig" if _prctl_pdeathsig(signal.SIGKILL) else "thread"

    def gone() -> bool:
        return os.getppid() != ppid or (parent != ppid and not _alive(parent))

    if gone():                       # the parent died before the watch was set
        _exit_now()
    if how == "thread":
        def watch() -> None:
            stop = threading.Event()
            while not stop.wait(POLL_S):
                if gone():
                    _exit_now()

        threading.Thread(target=watch, name="hetmoe-parent-watch", daemon=True).start()
    return how
