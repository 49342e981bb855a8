"""Memory guards: estimate a command's peak memory before it starts, and refuse past a limit.

A run that would not fit is refused with its estimate instead of dying in numpy half-way. The
estimates are linear models fitted to measured peak resident memory (``/usr/bin/time -f %M``,
``hetmoe run --policy all-digital|maxnn``, 4k-262k tokens, prefill and decode, on this project's
CI machine):

- a cost run: ``RUN_BASE_BYTES + RUN_BYTES_PER_ROUTE x tokens x layers x top_k``. Measured slopes
  were 47.4 (OLMoE-1B-7B), 48.5 (Mixtral-8x7B), 47.4 (Qwen3-30B-A3B) and 46.2 (DeepSeekMoE-16B)
  bytes per routed (token, layer, expert) slot: trace arrays, the work plan's per-token tables and
  the engine's per-micro-batch records. 56 B adds about 15 % margin; the base (interpreter, numpy,
  numba, mapping tables) measured 170-190 MiB, taken as 256 MiB.
- reading a JSON-lines routing log: ``READER_BYTES_PER_FILE_BYTE`` x the text's size (Python
  objects per row; measured about 3.5x on the shared Qwen1.5-MoE log); a gzip file's text size is
  the one its trailer records, or ``GZIP_RATIO`` x its size when the trailer has wrapped (> 4 GiB).
- a noisy forward pass: ``FORWARD_WEIGHT_COPIES`` x the checkpoint's weights in float32 (clean
  weights, one noisy copy, workspace).

``benchmarks/bench_memory.py`` re-measures the peaks against these estimates (five model and policy
cases at 16k and 64k tokens: the estimate is 1.2-1.5x the measured peak, never below it).

The limit is ``--max-memory-gib`` (default: ``DEFAULT_SHARE`` of this machine's physical memory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from arch.errors import HetmoeError
from arch.safeio import text_bytes

RUN_BASE_BYTES = 256 * 2**20
RUN_BYTES_PER_ROUTE = 56
READER_BYTES_PER_FILE_BYTE = 6
GZIP_RATIO = 8
FORWARD_WEIGHT_COPIES = 3
DEFAULT_SHARE = 0.75


class ResourceError(HetmoeError):
    """A command would need more memory than the limit allows."""


def size_text(n: float) -> str:
    """Bytes as a readable size: GiB from 1 GiB up, MiB below."""
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def physical_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30          # no sysconf (rare platforms): assume a 16 GiB machine


@dataclass(frozen=True)
class MemoryLimit:
    """The memory a command may use (bytes) and where that number came from (for error messages)."""

    bytes: int
    source: str

    @staticmethod
    def from_gib(gib: float | None) -> "MemoryLimit":
        if gib is None:
            total = physical_memory_bytes()
            return MemoryLimit(int(total * DEFAULT_SHARE), f"the default, {DEFAULT_SHARE:.0%} of this machine's "
                                                           f"{total / 2**30:,.1f} GiB")
        if not gib > 0:
            raise ResourceError(f"--max-memory-gib {gib}: allowed a positive number of GiB")
        return MemoryLimit(int(gib * 2**30), "--max-memory-gib")

    def check(self, need_bytes: int, what: str, how: str, advice: str) -> None:
        """Raise :class:`ResourceError` when ``need_bytes`` exceeds the limit."""
        if need_bytes > self.bytes:
            raise ResourceError(f"{what} needs about {size_text(need_bytes)} of memory ({how}), more than "
                                f"the limit of {size_text(self.bytes)} ({self.source}); {advice}, or raise "
                                "--max-memory-gib")


def run_bytes(tokens: int, layers: int, top_k: int) -> int:
    """Estimated peak memory of one cost run (bytes)."""
    return RUN_BASE_BYTES + RUN_BYTES_PER_ROUTE * tokens * layers * top_k


def check_run(limit: MemoryLimit, tokens: int, layers: int, top_k: int, model: str, processes: int = 1) -> None:
    """Refuse a cost run (or ``processes`` of them side by side) that would not fit in ``limit``."""
    one = run_bytes(tokens, layers, top_k)
    many = f"{processes} runs side by side x " if processes > 1 else ""
    limit.check(processes * one, f"simulating {tokens:,} tokens of {model}",
                f"{many}{RUN_BASE_BYTES // 2**20} MiB + {RUN_BYTES_PER_ROUTE} B x {tokens:,} tokens x {layers} "
                f"layers x top-{top_k}", "lower --tokens" + (" or --jobs" if processes > 1 else ""))


def check_reader(limit: MemoryLimit, path: str) -> None:
    """Refuse reading a JSON-lines log whose rows would not fit in ``limit`` as Python objects."""
    text, how = text_bytes(path, GZIP_RATIO)
    limit.check(READER_BYTES_PER_FILE_BYTE * text, f"reading {path}",
                f"{READER_BYTES_PER_FILE_BYTE} x {size_text(text)} of text, {how}",
                "convert it once to .npz with `hetmoe trace inspect --save` on a larger machine, or cut it")


def check_forward(limit: MemoryLimit, weight_bytes_fp32: int, checkpoint: str) -> None:
    """Refuse a noisy forward pass whose weights would not fit in ``limit``."""
    limit.check(FORWARD_WEIGHT_COPIES * weight_bytes_fp32, f"the forward pass of {checkpoint}",
                f"{FORWARD_WEIGHT_COPIES} x {size_text(weight_bytes_fp32)} of float32 weights",
                "use a smaller checkpoint")
