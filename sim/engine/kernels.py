"""Load the stage scheduler (:mod:`sim.engine.kernel`) compiled or as plain Python.

``load()`` gives the compiled kernels: a second copy of ``kernel.py`` whose functions are wrapped
in ``numba.njit(cache=True)`` (compiled on first use, then read from numba's on-disk cache, so a
new process starts in well under a second). They are compiled without numba's reference-counting
runtime (``_nrt=False``): the kernels never allocate, and counting references to the array arguments
of every call (an atomic increment and decrement per array, on every call that passes them) took
about half of the engine's time (all-analog OLMoE at 12,800 tokens: decode 2.0 s -> 0.89 s).
``load(compiled=False)`` gives the module itself: the same source run by the interpreter, the
reference the tests hold the compiled code to. The
environment variable ``HETMOE_ENGINE=python`` makes runs use the reference (slow; for debugging).
Without numba installed the reference is used, with a warning.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from types import ModuleType

from . import kernel as reference


@lru_cache(maxsize=None)
def _compiled() -> ModuleType:
    from arch.userdirs import configure_numba_cache, tolerate_numba_cache_errors

    configure_numba_cache()          # a cache folder this user can write (a read-only install: a per-user one)
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency
        warnings.warn("numba is not installed: the engine runs its plain-Python reference (slow)", stacklevel=3)
        return reference
    tolerate_numba_cache_errors()    # a cache write the system refuses (ulimit -f, a full disk) is not an error
    spec = importlib.util.spec_from_file_location("sim.engine._kernel_jit", reference.__file__)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    for name, fn in list(vars(mod).items()):
        if inspect.isfunction(fn) and fn.__module__ == mod.__name__:
            inline = "always" if name in mod.INLINE else "never"
            setattr(mod, name, numba.njit(cache=True, inline=inline, _nrt=False)(fn))
    return mod


def load(compiled: bool = True) -> ModuleType:
    """The kernel namespace: compiled (default) or the plain-Python reference."""
    if not compiled or os.environ.get("HETMOE_ENGINE") == "python":
        return reference
    return _compiled()


COMPILE_NOTICE = ("hetmoe: compiling the engine's kernels; this happens once per install and takes about half a minute "
                  "(later runs load them from numba's on-disk cache)")


@contextmanager
def compile_notice(kernels: ModuleType, notify: Callable[[], None] | None = None) -> Iterator[None]:
    """Inside the block, the first time numba compiles (rather than loads from its cache) one of
    ``kernels``, call ``notify`` once (default: print :data:`COMPILE_NOTICE` on standard error), so
    that the one-off wait of a new install is explained. Does nothing for the plain-Python reference."""
    if kernels is reference:
        yield
        return
    from numba.core import event

    def default() -> None:
        print(COMPILE_NOTICE, file=sys.stderr, flush=True)

    class Once(event.Listener):
        told = False

        def on_start(self, ev: event.Event) -> None:
            if not self.told:
                self.told = True
                (notify or default)()

        def on_end(self, ev: event.Event) -> None:
            pass

    with event.install_listener("numba:compile", Once()):
        yield
