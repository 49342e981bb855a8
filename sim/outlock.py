"""One command at a time per output folder: ``OUT/.lock``, held with ``flock`` for the command's life.

``hetmoe compare``, ``whatif``, ``sweep`` and ``plot`` write a folder's points, tables, trace and report
in several steps; two of them writing one folder at once would mix their inputs and results. The first
takes an exclusive, non-blocking ``flock`` on ``OUT/.lock`` (which says its process id and command); a
second is refused with one line naming that process. The kernel releases the lock when its holder ends,
however it ends (``kill -9`` included), so a lock file left behind by a process that is gone is taken
over without a word. Forked worker processes do not keep the lock: it lives exactly as long as the
command that took it.

The lock also tells whether the folder was deleted (or replaced) while the command ran
(:meth:`FolderLock.intact`): the commands then say so instead of counting points that are gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

from arch.errors import HetmoeError

LOCK_NAME = ".lock"
_HELD: dict[int, "FolderLock"] = {}          # fd -> lock, closed in forked children


class FolderBusy(HetmoeError):
    """Another live hetmoe command is writing the output folder."""


class FolderVanished(HetmoeError):
    """The output folder was deleted or replaced while a command wrote it."""


def _close_in_child() -> None:
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)          # the child's copy only: the parent's lock stays
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


def this_command() -> str:
    """``hetmoe ARGS`` of this process, on one line."""
    args = sys.argv[1:]
    return " ".join(["hetmoe", *(shlex.quote(a) for a in args)]).replace("\n", " ")[:500]


class FolderLock:
    """An exclusive lock on ``folder/.lock``; see :func:`lock_folder`."""

    def __init__(self, folder: Path, fd: int, ident: tuple[int, int]) -> None:
        self.folder, self.path, self.fd, self.ident = folder, folder / LOCK_NAME, fd, ident

    def intact(self) -> bool:
        """Whether ``folder/.lock`` is still the file this lock holds (False: the folder was deleted,
        or replaced, since the lock was taken)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.ident

    def release(self) -> None:
        if self.fd < 0:
            return
        if self.intact():
            with contextlib.suppress(OSError):
                os.unlink(self.path)       # still holding the lock: no one else can have it yet
        _HELD.pop(self.fd, None)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1


def acquire(folder: str | Path, command: str | None = None) -> FolderLock:
    """Take the lock of ``folder`` (created if missing) or raise :class:`FolderBusy` naming its holder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)   # never through a link
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in UNSUPPORTED:
                _say_unlocked(folder, exc)            # go on unlocked: refusing every run there helps no one
            else:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise FolderBusy(f"{folder} is being written by another hetmoe command ({holder}); wait for it "
                                 "to end, or write to another folder") from None
        # the previous holder may have removed the file between our open and our lock: take the file that is there
        st = os.fstat(fd)
        ident = (st.st_dev, st.st_ino)
        lock = FolderLock(folder, fd, ident)
        if lock.intact():
            _HELD[fd] = lock
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}: {command or this_command()}\n".encode())
            return lock
        os.close(fd)
    raise FolderBusy(f"{folder}: could not take {path}: other hetmoe commands keep replacing it")


UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def _say_unlocked(folder: Path, exc: OSError) -> None:
    print(f"hetmoe: warning: cannot lock {folder} ({exc.strerror or exc}: its file system does not support "
          "flock); nothing stops another command from writing it at the same time", file=sys.stderr)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 600, 0).decode(errors="replace").strip().splitlines()
    except OSError:
        text = []
    return text[0] if text and text[0].startswith("pid ") else "its process id is not written yet"


@contextlib.contextmanager
def lock_folder(folder: str | Path, command: str | None = None) -> Iterator[FolderLock]:
    """Hold the lock of ``folder`` while the block runs (see the module's description)."""
    lock = acquire(folder, command)
    try:
        yield lock
    finally:
        lock.release()
