"""Array backends: numpy (default, always present) or torch on CPU/CUDA through ``array_api_compat``.

Every random draw is made on the host by :class:`arch.noise.NormalStream` and moved to the backend,
so a given seed gives the same noise on every backend (results agree within float tolerance). On
numpy the stream itself is handed to the noise model, whose compiled kernels draw from it inline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from arch.errors import HetmoeError
from arch.noise import NormalStream, as_stream

DEVICES = ("numpy", "cpu", "cuda")


@dataclass(frozen=True)
class Backend:
    """``xp``: the array namespace; ``device``: where arrays live (None for numpy)."""

    name: str
    xp: Any
    device: Any

    def asarray(self, a: np.ndarray) -> Any:
        a = np.ascontiguousarray(a, np.float32) if a.dtype.kind == "f" else np.ascontiguousarray(a)
        if self.device is None:
            return a
        return self.xp.asarray(a, device=self.device)

    def numpy(self, a: Any) -> np.ndarray:
        if isinstance(a, np.ndarray):
            return a
        return a.detach().cpu().numpy()

    def normal(self, rng: np.random.Generator | NormalStream) -> Callable[[tuple[int, ...]], Any]:
        """``normal(shape)``: standard normal float32 draws from ``rng`` (a stream, or a numpy generator
        that seeds one), on this backend; on numpy, the stream itself."""
        stream = as_stream(rng)
        if self.device is None:
            return stream
        return lambda shape: self.asarray(stream(tuple(int(s) for s in shape)))


def backend(device: str = "numpy") -> Backend:
    """``numpy`` (default), or ``cpu``/``cuda`` for torch (needs torch installed)."""
    if device not in DEVICES:
        raise HetmoeError(f"--device {device!r}; allowed: {', '.join(DEVICES)}")
    if device == "numpy":
        import array_api_compat.numpy as xp

        return Backend("numpy", xp, None)
    try:
        import array_api_compat.torch as xp
        import torch
    except ImportError:
        raise HetmoeError(f"--device {device} needs torch (pip install 'hetmoe[torch]'); "
                          "--device numpy needs nothing more") from None
    if device == "cuda" and not torch.cuda.is_available():
        raise HetmoeError("--device cuda: torch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False   # keep float32 products float32, as numpy computes them
    return Backend(f"torch-{device}", xp, torch.device(device))
