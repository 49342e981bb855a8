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
- the chip's network and tiles, added to a cost run: ``NODE_BYTES`` per NoC node (node names, four
  directed links each with their bandwidth, energy and reservation calendars) and ``TILE_BYTES`` per
  analog tile (mapping tables). Measured with ``hetmoe run --tokens 64``: meshes of 256², 512² and
  1,024² nodes peaked at 0.39, 1.0 and 3.4 GiB (3.3 KiB per node), 0.2 and 1 million tiles at 0.28 and
  0.69 GiB (526 B per tile, whatever the tiers); 4 KiB and 640 B add about 20 % margin. A 4,096 x 4,096
  mesh (64 GiB) or 10^7 tiles (6 GiB) is refused up front instead of ending in an out-of-memory error.

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
NODE_BYTES = 4096
TILE_BYTES = 640
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


def chip_size(chip: object) -> tuple[int, int]:
    """(NoC nodes, analog tiles) of a :class:`arch.ChipSpec`."""
    noc = chip.noc
    if noc.topology == "mesh":
        nodes = int(noc.width or 1) * int(noc.height or 1)
    else:
        nodes = len(noc.nodes or ())
    return nodes, int(chip.analog.tile_count or 0)


def run_bytes(tokens: int, layers: int, top_k: int, chip: object | None = None) -> int:
    """Estimated peak memory of one cost run (bytes); with ``chip``, its network and tiles too."""
    nodes, tiles = chip_size(chip) if chip is not None else (0, 0)
    return RUN_BASE_BYTES + RUN_BYTES_PER_ROUTE * tokens * layers * top_k + NODE_BYTES * nodes + TILE_BYTES * tiles


def check_run(limit: MemoryLimit, tokens: int, layers: int, top_k: int, model: str, processes: int = 1,
              chip: object | None = None) -> None:
    """Refuse a cost run (or ``processes`` of them side by side) that would not fit in ``limit``; with
    ``chip``, its NoC nodes and analog tiles are counted too."""
    one = run_bytes(tokens, layers, top_k, chip)
    many = f"{processes} runs side by side x " if processes > 1 else ""
    what, extra, advice = f"simulating {tokens:,} tokens of {model}", "", "lower --tokens"
    if chip is not None:
        nodes, tiles = chip_size(chip)
        extra = f" + {NODE_BYTES // 1024} KiB x {nodes:,} NoC nodes + {TILE_BYTES} B x {tiles:,} analog tiles"
        if NODE_BYTES * nodes + TILE_BYTES * tiles > RUN_BYTES_PER_ROUTE * tokens * layers * top_k:
            what = f"simulating {getattr(chip, 'name', 'the chip')} ({nodes:,} NoC nodes, {tiles:,} analog tiles)"
            advice = "use a smaller noc.width x noc.height or analog.tile_count"
    limit.check(processes * one, what,
                f"{many}{RUN_BASE_BYTES // 2**20} MiB + {RUN_BYTES_PER_ROUTE} B x {tokens:,} tokens x {layers} "
                f"layers x top-{top_k}{extra}", advice + (" or --jobs" if processes > 1 else ""))


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


# ----------------------------------------------------------------------------- the model's own tables, reading

# A cost run keeps a record, mapping entries and placement tables per weight-static matrix: measured 2.6 KiB
# per matrix (hetmoe run --tokens 64 of an 8-layer, 4,096-expert config: 98,345 matrices, +253 MB over the
# base). 4 KiB adds margin. Experts and layers set the count (3 per routed expert per MoE layer); the
# vocabulary is one lm_head matrix here (measured: a 10^7 vocabulary adds nothing to a cost run; the forward
# pass counts it in its float32 weights, check_forward).
MODEL_BYTES_PER_MATRIX = 4096
# A synthetic trace calibrates each layer's expert weights on 8,000 drawn tokens: keys (float32) and their
# sort order (int64) over every expert: measured 75-89 KiB per expert (2,048-8,192 experts); 128 KiB adds margin.
SYNTH_BYTES_PER_EXPERT = 128 * 1024
READ_ADVICE = "convert it once to .npz with `hetmoe trace inspect --save` on a larger machine, or cut it"


def matrix_count(shape: object) -> int:
    """Weight-static matrices of a :class:`workloads.shapes.ModelShape`, counted without enumerating them."""
    layers, moe = int(shape.num_layers), len(shape.moe_layers)
    shared = (3 + int(bool(shape.shared_expert_gate))) if shape.shared_expert_width else 0
    per_moe = 1 + shared + 3 * int(shape.num_experts)
    return layers * len(shape.attention_shapes()) + moe * per_moe + (layers - moe) * 3 + 1


def check_model(limit: MemoryLimit, shape: object, processes: int = 1, *, tables: bool = True,
                synthetic: bool = False) -> None:
    """Refuse a model whose size alone would not fit in ``limit``, before anything is built: its per-matrix
    tables (``tables``: layers x experts) and, for a ``synthetic`` trace, the calibration over its experts
    (a cost run's base and trace are :func:`check_run`'s)."""
    n, experts = matrix_count(shape), int(shape.num_experts)
    parts = ([(MODEL_BYTES_PER_MATRIX * n, f"{MODEL_BYTES_PER_MATRIX // 1024} KiB x {n:,} weight matrices")]
             if tables else [])
    if synthetic:
        parts.append((SYNTH_BYTES_PER_EXPERT * experts,
                      f"{SYNTH_BYTES_PER_EXPERT // 1024} KiB x {experts:,} experts to calibrate a synthetic trace"))
    many = f"{processes} runs side by side x " if processes > 1 else ""
    limit.check(processes * sum(b for b, _ in parts),
                f"the model {shape.name} ({shape.num_layers:,} layers, {experts:,} experts)",
                many + " + ".join(h for _, h in parts) + ", besides the trace",
                "use a config with fewer layers or experts" + (" or lower --jobs" if processes > 1 else ""))


@dataclass(frozen=True)
class ReadGuard:
    """The memory one trace file may take while it is read (for :func:`workloads.traces.readers.read_trace`):
    JSON text is counted as it is decompressed, so a gzip file whose trailer understates its size (several
    members, a gzip inside a gzip) stops at the limit; ``.npz`` arrays are bounded by their declared sizes and
    again as they are read."""

    limit: MemoryLimit

    @property
    def array_bytes(self) -> int:
        return self.limit.bytes

    def text(self, path: object, text: int) -> None:
        """Refuse once ``text`` bytes read so far would not fit as Python objects."""
        self.limit.check(READER_BYTES_PER_FILE_BYTE * text, f"reading {path}",
                         f"{READER_BYTES_PER_FILE_BYTE} x more than {size_text(text)} of text, counted as it was "
                         "decompressed", READ_ADVICE)

    def arrays(self, path: object, nbytes: int, how: str) -> None:
        """Refuse ``.npz`` arrays of ``nbytes`` (``how`` says where the number comes from)."""
        self.limit.check(nbytes, f"reading {path}", how, "cut the trace (hetmoe trace inspect --save of a shorter log)")
