"""Where hetmoe keeps its per-user files (score and trace caches, crash logs, numba's compiled kernels).

One rule, :func:`cache_dir`, for every cache and crash log, so that no environment makes a command die
in ``Path.home()`` (a user without a passwd entry) or write to ``/.cache`` (``HOME=""``):

1. ``HETMOE_CACHE_DIR`` when set (tests, shared machines);
2. ``$XDG_CACHE_HOME/hetmoe`` when XDG_CACHE_HOME is an absolute path;
3. ``$HOME/.cache/hetmoe`` when HOME is a non-empty absolute path (HOME unset: the passwd entry's home);
4. ``<temporary folder>/hetmoe-<uid>``, a folder of this user only (mode 0700, checked to be ours and no
   link, as a shared temporary folder can hold anything);
5. none: caches are off, said once in one line on standard error.

A candidate counts only when its folder can be created and written. Imports nothing of this project.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

_notified: set[str] = set()


def notice(key: str, text: str) -> None:
    """Print ``text`` on standard error once per process for ``key``."""
    if key not in _notified:
        _notified.add(key)
        print(f"hetmoe: {text}", file=sys.stderr, flush=True)


def _writable(folder: Path) -> bool:
    """Create ``folder`` (parents too) and check a file can be made in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not folder.is_dir():
            return False
        fd, name = tempfile.mkstemp(prefix=".hetmoe-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
        return True
    except (OSError, ValueError):
        return False


def _home() -> str | None:
    """HOME when it is a non-empty absolute path; HOME unset: the passwd entry's home; else None."""
    home = os.environ.get("HOME")
    if home is None:
        try:
            import pwd

            home = pwd.getpwuid(os.getuid()).pw_dir
        except (ImportError, KeyError, OSError, AttributeError):
            return None
    return home if home and os.path.isabs(home) else None


def _private_temp() -> Path | None:
    """``<temporary folder>/hetmoe-<uid>``, created 0700, when it is a real folder owned by this user."""
    try:
        uid = os.getuid()
    except AttributeError:  # pragma: no cover - Windows
        uid = None
    try:
        base = tempfile.gettempdir()
    except (OSError, FileNotFoundError):
        return None
    folder = Path(base) / (f"hetmoe-{uid}" if uid is not None else f"hetmoe-{os.environ.get('USERNAME', 'user')}")
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or (uid is not None and st.st_uid != uid) or st.st_mode & 0o022:
        return None                       # another user's folder, or a link someone planted: not ours to use
    return folder


def candidates() -> list[tuple[str, Path | None]]:
    """The cache folders in the order they are tried, each with where it came from (for messages)."""
    out: list[tuple[str, Path | None]] = []
    explicit = os.environ.get("HETMOE_CACHE_DIR")
    if explicit:
        out.append(("HETMOE_CACHE_DIR", Path(explicit)))
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        out.append(("XDG_CACHE_HOME", Path(xdg) / "hetmoe"))
    home = _home()
    if home:
        out.append(("HOME", Path(home) / ".cache" / "hetmoe"))
    out.append(("the temporary folder", None))          # resolved lazily: it creates a folder
    return out


def cache_dir(*, quiet: bool = False) -> Path | None:
    """The folder for hetmoe's caches (created), or None when no candidate can be written (said once on
    standard error unless ``quiet``)."""
    for _, folder in candidates():
        if folder is None:
            folder = _private_temp()
            if folder is None:
                continue
        if _writable(folder):
            return folder
    if not quiet:
        notice("cache", "no writable cache folder (HETMOE_CACHE_DIR, XDG_CACHE_HOME, HOME/.cache or the temporary "
                        "folder); caches are off for this run")
    return None


def configure_matplotlib() -> None:
    """Without a usable home directory, matplotlib makes a new temporary cache folder on every run and says
    so in three lines: give it ``<cache_dir>/matplotlib`` instead (an MPLCONFIGDIR the user set is kept)."""
    if os.environ.get("MPLCONFIGDIR") or _home() is not None:
        return
    folder = cache_dir(quiet=True)
    if folder is not None and _writable(folder / "matplotlib"):
        os.environ["MPLCONFIGDIR"] = str(folder / "matplotlib")


# ----------------------------------------------------------------------------- numba's kernel cache

# the modules that compile with numba.njit(cache=True): numba caches beside them (their __pycache__)
_JIT_SOURCES = ("arch/noise.py", "sim/engine/kernel.py", "sim/functional/forward.py")


def _root() -> Path:
    return Path(__file__).resolve().parent.parent


def configure_numba_cache() -> str:
    """Give numba a cache folder this user can write, before numba compiles anything: the install's own
    ``__pycache__`` folders when they are writable (numba's default), else ``<cache_dir>/numba`` (a
    read-only or shared install: each user compiles once, then loads), else no cache at all (each run
    compiles; one line says so). A NUMBA_CACHE_DIR the user set is kept. Returns what was chosen."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return "NUMBA_CACHE_DIR"
    root = _root()
    if all(_writable(root / Path(src).parent / "__pycache__") for src in _JIT_SOURCES):
        return "install"
    folder = cache_dir(quiet=True)
    if folder is not None and _writable(folder / "numba"):
        _set_numba_dir(str(folder / "numba"))
        return str(folder / "numba")
    notice("numba", "no writable folder for compiled kernels (the install's __pycache__, HOME/.cache, the "
                    "temporary folder): they are compiled again on every run (about half a minute)")
    _disable_numba_cache()
    return "none"


def _set_numba_dir(path: str) -> None:
    os.environ["NUMBA_CACHE_DIR"] = path          # worker processes inherit it
    numba = sys.modules.get("numba")
    if numba is not None:                         # already imported: its configuration was read then
        numba.config.CACHE_DIR = path


def _disable_numba_cache() -> None:
    """``cache=True`` without any writable folder makes numba raise at decoration ("no locator
    available"): turn caching into a no-op (each function keeps numba's NullCache)."""
    try:
        from numba.core.dispatcher import Dispatcher
    except ImportError:                          # no numba: the engine runs its plain-Python reference
        return
    Dispatcher.enable_caching = lambda self: None


def tolerate_numba_cache_errors() -> None:
    """A kernel cache that cannot be written (a full disk, ``ulimit -f``) costs the next run a compile, never
    this run: numba's cache saves that fail are dropped with one line (call after numba is imported)."""
    try:
        from numba.core import caching
    except ImportError:
        return
    real = caching.Cache.save_overload
    if getattr(real, "hetmoe_tolerant", False):
        return

    def save_overload(self: object, sig: object, data: object) -> None:
        try:
            real(self, sig, data)
        except OSError as exc:
            notice("numba-save", f"compiled kernels not cached ({exc.strerror or exc}); the next run compiles "
                                 "them again")

    save_overload.hetmoe_tolerant = True  # type: ignore[attr-defined]
    caching.Cache.save_overload = save_overload
