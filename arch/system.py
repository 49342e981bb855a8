"""Systems of several chips (DESIGN §10): a YAML that lists chips by preset or file with counts, an
interconnect between them and how the MoE all-to-all uses it.

A system file is validated exactly as a chip file is (:func:`arch.loader.build` over the dataclass metadata
below): unknown keys, wrong types, ranges and non-finite numbers are refused in one line naming the file,
line, key path and what is allowed. ``experts.replicate_hot: N`` (default 0; ``--replicate-hot`` on ``hetmoe
system run`` and ``system fit`` overrides it) gives each MoE layer's N hottest routed experts one extra copy on
another chip (rules in :mod:`sim.system.layout`). Each chip named in ``chips`` is loaded with :func:`arch.loader.load_chip`
(a preset name, or a path relative to the system file). A chip preset or chip YAML given where a system is
expected is a one-chip system (:func:`load_system`), which the system simulator runs through today's
single-chip path, bit for bit.

Presets live in ``arch/presets/systems/*.yaml``; every number there cites its source in a comment.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import HetmoeError, SpecError
from .loader import _where, build, list_presets, load_chip, preset_path
from .spec import BANDWIDTH_GBPS, TIME_NS, ChipSpec, param
from .yamlsource import Located, load_with_extends

SYSTEM_PRESET_DIR = Path(__file__).resolve().parent / "presets" / "systems"

TOPOLOGIES = ("switch", "ring", "torus2d", "full")
ROLES = ("auto", "analog", "digital")
OVERLAPS = ("none", "microbatch")
ATTENTION_PLACEMENTS = ("digital-chips", "each-chip", "spread")
MAX_CHIPS = 65536


@dataclass(frozen=True)
class ChipEntry:
    hw: str = param("chip preset name or hardware YAML (a path relative to the system file)")
    count: int = param("chips of this kind", lo=1, hi=MAX_CHIPS)
    role: str = param("analog: holds analog experts on its tiles; digital: holds the digital experts and (with "
                      "attention.placement digital-chips) runs attention; auto: analog when the chip has tiles",
                      choices=ROLES, default="auto")


@dataclass(frozen=True)
class InterconnectSpec:
    topology: str = param("switch: every chip has one uplink to and one downlink from a central switch (a message "
                          "crosses 2 links and the switch); ring: bidirectional ring in chip order, shortest way; "
                          "torus2d: dims[0] x dims[1] wrap-around mesh, dimension-order routing (x first); full: a "
                          "direct link per ordered pair of chips", choices=TOPOLOGIES)
    link_bandwidth_gbps: float = param("bandwidth of one link, one direction, Gbit/s", **BANDWIDTH_GBPS)
    link_latency_ns: float = param("latency of one link traversal (SerDes, wire, FEC), ns", lo=0.0, **TIME_NS)
    link_energy_pj_per_bit: float = param("energy per bit per link traversal, pJ", lo=0.0)
    switch_latency_ns: float = param("latency through the switch, ns (topology switch only)", lo=0.0, **TIME_NS,
                                     default=0.0)
    switch_energy_pj_per_bit: float = param("energy per bit through the switch ASIC, pJ (topology switch only)",
                                            lo=0.0, default=0.0)
    dims: list | None = param("torus2d: [x, y] chips per dimension, x * y = the number of chips", default=None)


@dataclass(frozen=True)
class AllToAllSpec:
    dispatch_bits: int = param("bits per element of a dispatched hidden state (DeepSeek-V3 dispatches FP8: 8)",
                               lo=1, hi=32, default=8)
    combine_bits: int = param("bits per element of a combined (weighted partial-sum) hidden state (DeepSeek-V3 "
                              "combines in BF16: 16)", lo=1, hi=32, default=16)
    overlap: str = param("none: a layer's dispatch and combine wait for compute and compute waits for them; "
                         "microbatch: micro-batches run in pairs and the communication of one hides behind the "
                         "compute of the other (DeepSeek-V3's two-micro-batch overlap): per layer the pair takes "
                         "max(compute of both, communication of both)", choices=OVERLAPS, default="none")


@dataclass(frozen=True)
class AttentionSpec:
    placement: str = param("digital-chips: attention, router, shared experts, dense FFNs and lm_head are "
                           "replicated on every digital chip and run data-parallel there (token i of a micro-batch "
                           "on digital chip i mod D); each-chip: replicated on every chip, data-parallel over all; "
                           "spread: each layer's dense modules on one chip (layers spread over the chips), every "
                           "token of that layer attends there", choices=ATTENTION_PLACEMENTS,
                           default="digital-chips")


MAX_REPLICAS = 4096


@dataclass(frozen=True)
class ExpertsSpec:
    replicate_hot: int = param("per MoE layer, the N routed experts with the most tokens in the trace get one extra "
                               "copy each (DeepSeek-V3's redundant experts, vLLM's EPLB): on another chip of their "
                               "group (analog experts on an analog chip, digital experts on a digital chip), the one "
                               "with the fewest routed tokens so far that has room; a token goes to the copy on its "
                               "own attention chip when there is one, else copies alternate by position "
                               "(sim/system/layout.py); 0: none", lo=0, hi=MAX_REPLICAS, default=0)


@dataclass(frozen=True, kw_only=True)
class SystemSpec:
    chips: list[ChipEntry] = param("the chips, each {hw, count[, role]}")
    interconnect: InterconnectSpec = param("the links between chips")
    all_to_all: AllToAllSpec = param("precisions and overlap of the MoE dispatch and combine",
                                     default=AllToAllSpec())
    attention: AttentionSpec = param("where attention and the other dense modules run", default=AttentionSpec())
    experts: ExpertsSpec = param("replicas of the routed experts", default=ExpertsSpec())
    name: str = param("system name", default="")
    description: str = param("free text", default="")
    source: str = param("where the system comes from (file path or preset name)", default="")


@dataclass(frozen=True, eq=False)
class System:
    """A validated system: the spec, one loaded chip per ``chips`` entry and per-chip arrays."""

    spec: SystemSpec
    kinds: tuple[ChipSpec, ...]       # one per chips entry
    kind_of_chip: np.ndarray          # int32 [chips]: index into kinds
    analog: np.ndarray                # bool [chips]: role analog (else digital)
    single_chip: bool = False         # given as a chip, not a system: today's single-chip path

    @property
    def n_chips(self) -> int:
        return int(self.kind_of_chip.size)

    @property
    def name(self) -> str:
        return self.spec.name

    def chip(self, i: int) -> ChipSpec:
        return self.kinds[int(self.kind_of_chip[i])]

    def label(self, i: int) -> str:
        """``kind#index``: the chip's kind name and its index among all chips."""
        return f"{self.chip(i).name}#{i}"

    @property
    def analog_chips(self) -> np.ndarray:
        return np.flatnonzero(self.analog)

    @property
    def digital_chips(self) -> np.ndarray:
        return np.flatnonzero(~self.analog)

    def counts(self) -> dict[str, int]:
        return {f"{self.kinds[k].name} ({'analog' if self.analog[np.argmax(self.kind_of_chip == k)] else 'digital'})":
                int((self.kind_of_chip == k).sum()) for k in range(len(self.kinds))}


def list_system_presets() -> list[str]:
    return sorted(p.stem for p in SYSTEM_PRESET_DIR.glob("*.yaml"))


def system_preset_path(name: str) -> Path | None:
    path = SYSTEM_PRESET_DIR / f"{name}.yaml"
    return path if path.is_file() else None


def load_system(name_or_path: str | Path) -> System:
    """A system preset, a system YAML (a top-level ``chips:`` key), or a chip preset / chip YAML, which is a
    one-chip system."""
    text = str(name_or_path)
    path = system_preset_path(text)
    if path is None:
        if preset_path(text) is not None:
            return one_chip_system(load_chip(text))
        path = Path(text)
        if path.is_dir():
            raise SpecError(text, None, "", "is a folder; expected a system YAML, a chip YAML or a preset name")
        if not path.is_file():
            raise SpecError(text, None, "", f"no such file, and no system or chip preset of that name (system "
                            f"presets: {', '.join(list_system_presets())}; chip presets: {', '.join(list_presets())})")
    data = load_with_extends(path, system_preset_path)
    if "chips" not in data:
        return one_chip_system(load_chip(path))
    source = path.stem if path.parent == SYSTEM_PRESET_DIR else str(path)
    if "name" not in data or data.where["name"][0] != str(path):
        data["name"] = path.stem
        data.where["name"] = (str(path), 1)
    data["source"] = source
    data.where["source"] = (str(path), 1)
    return resolve(data, path.parent)


def load_system_text(text: str, file: str = "<text>", base: Path | None = None) -> System:
    """Validate a system YAML given as text (no ``extends``); chip files resolve against ``base``."""
    from .yamlsource import parse_text

    data = parse_text(text, file)
    if "extends" in data:
        raise SpecError(file, data.where["extends"][1], "extends", "extends needs a file; use load_system")
    return resolve(data, base or Path("."))


def one_chip_system(chip: ChipSpec) -> System:
    """A chip as a system of one: no links (the interconnect numbers are never used)."""
    spec = SystemSpec(chips=(ChipEntry(hw=chip.source or chip.name, count=1),),
                      interconnect=InterconnectSpec(topology="full", link_bandwidth_gbps=1.0, link_latency_ns=0.0,
                                                    link_energy_pj_per_bit=0.0),
                      attention=AttentionSpec(placement="each-chip"), name=chip.name,
                      description=f"one {chip.name} chip", source=chip.source)
    analog = np.array([chip.analog.tile_count > 0], bool)
    return System(spec, (chip,), np.zeros(1, np.int32), analog, single_chip=True)


def resolve(data: Located, base: Path) -> System:
    """Build the spec, load every chip, resolve roles and check the rules between fields."""
    spec = build(SystemSpec, data, "")
    chips_where = data.where.get("chips", (data.file, data.line))
    if not spec.chips:
        raise SpecError(chips_where[0], chips_where[1], "chips", "a system needs at least one chip")
    items = data["chips"]
    kinds, kind_of, analog = [], [], []
    for i, (entry, item) in enumerate(zip(spec.chips, items)):
        file, line = item.where.get("hw", chips_where)
        kinds.append(_load_entry_chip(entry.hw, base, file, line, f"chips[{i}].hw"))
        chip = kinds[-1]
        role = entry.role
        if role == "auto":
            role = "analog" if chip.analog.tile_count > 0 else "digital"
        if role == "analog" and chip.analog.tile_count == 0:
            rf, rl = item.where.get("role", (file, line))
            raise SpecError(rf, rl, f"chips[{i}].role", f"analog, but {chip.name} has no analog tiles; allowed: "
                            "digital or auto for a chip without tiles")
        kind_of += [i] * entry.count
        analog += [role == "analog"] * entry.count
    n = len(kind_of)
    if n > MAX_CHIPS:
        raise SpecError(chips_where[0], chips_where[1], "chips", f"{n:,} chips in all; allowed: at most {MAX_CHIPS:,}")
    system = System(spec, tuple(kinds), np.asarray(kind_of, np.int32), np.asarray(analog, bool))
    _check_interconnect(spec.interconnect, n, data)
    if spec.attention.placement == "digital-chips" and not (~system.analog).any() and n > 1:
        file, line = _where(data, "attention", "placement")
        raise SpecError(file, line, "attention.placement", "digital-chips, but no chip has role digital; allowed: "
                        "each-chip (a replica of the dense modules on every chip) or spread (each layer's dense "
                        "modules on one chip), or add a digital chip")
    return system


def _load_entry_chip(hw: str, base: Path, file: str, line: int | None, key: str) -> ChipSpec:
    candidate = base / hw
    target = hw if preset_path(hw) is not None or not candidate.is_file() else candidate
    if preset_path(hw) is None and not Path(target).is_file():
        raise SpecError(file, line, key, f"{hw!r}: no chip preset or file of that name (relative to {base}); "
                        f"allowed: a chip preset ({', '.join(list_presets())}) or a hardware YAML path")
    return load_chip(target)


def _check_interconnect(ic: InterconnectSpec, n: int, data: Located) -> None:
    def fail(key: str, problem: str) -> None:
        file, line = _where(data, "interconnect", key)
        raise SpecError(file, line, f"interconnect.{key}", problem)

    if ic.topology == "torus2d":
        d = ic.dims
        ok = (d is not None and len(d) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                    for v in d))
        if not ok:
            fail("dims" if d is not None else "topology", f"{list(d) if d is not None else 'no dims'}: torus2d needs "
                 "dims: [x, y], two integers >= 1")
        if d[0] * d[1] != n:
            fail("dims", f"{d[0]} x {d[1]} = {d[0] * d[1]} positions for {n} chips; allowed: x * y = {n}")
    elif ic.dims is not None:
        fail("dims", f"only for topology torus2d (this one is {ic.topology})")
    if ic.topology != "switch":
        for key in ("switch_latency_ns", "switch_energy_pj_per_bit"):
            if getattr(ic, key) and key in (data.get("interconnect") or {}):
                fail(key, f"only for topology switch (this one is {ic.topology}); remove it")


def with_overlap(system: System, overlap: str) -> System:
    """The same system with ``all_to_all.overlap`` replaced (a command-line override)."""
    spec = replace(system.spec, all_to_all=replace(system.spec.all_to_all, overlap=overlap))
    return replace(system, spec=spec)


def with_replicate_hot(system: System, n: int) -> System:
    """The same system with ``experts.replicate_hot`` replaced (a command-line override), range-checked as the
    YAML key is."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_REPLICAS:
        raise HetmoeError(f"--replicate-hot {n!r}: allowed an integer 0 .. {MAX_REPLICAS} (experts.replicate_hot)")
    spec = replace(system.spec, experts=replace(system.spec.experts, replicate_hot=n))
    return replace(system, spec=spec)


def compose(template: System, entries: list[tuple[ChipSpec, int, str]], *, name: str,
            attention: str | None = None) -> System:
    """``template``'s interconnect and all-to-all with other chips (``(chip, count, role)`` with role analog or
    digital), for sizing (``hetmoe system fit``); the result is checked as a loaded system is."""
    chips = tuple(ChipEntry(hw=chip.source or chip.name, count=count, role=role) for chip, count, role in entries)
    spec = replace(template.spec, chips=chips, name=name,
                   attention=AttentionSpec(attention) if attention else template.spec.attention)
    kinds = tuple(chip for chip, _, _ in entries)
    kind_of = np.repeat(np.arange(len(entries), dtype=np.int32), [count for _, count, _ in entries])
    analog = np.repeat(np.array([role == "analog" for _, _, role in entries], bool), [c for _, c, _ in entries])
    system = System(spec, kinds, kind_of, analog)
    if spec.interconnect.topology == "torus2d":
        raise SpecError(template.spec.source, None, "interconnect.topology", "a torus2d template fixes the chip "
                        "count (dims); size with a switch, ring or full template")
    return system
