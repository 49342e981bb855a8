"""Load and validate a hardware YAML into a :class:`arch.spec.ChipSpec`.

Validation is generic over the dataclass metadata in :mod:`arch.spec`: unknown keys (listing
the recognised ones), missing required keys, wrong types and out-of-range values all raise
:class:`arch.errors.SpecError` naming file, line, key path, value and what is allowed.
Cross-field rules (a mesh large enough for its tiles, a precision the SIMD core prices, ...)
follow in :func:`_check_consistency`. The loader never writes files.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, get_type_hints

from .errors import SpecError
from .spec import MAX_STEP_NS, SPAN_TEXT, ChipSpec, NocSpec
from .yamlsource import Located, load_with_extends, merge, parse_text

PRESET_DIR = Path(__file__).resolve().parent / "presets"


def list_presets() -> list[str]:
    """Names of the shipped hardware presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path | None:
    path = PRESET_DIR / f"{name}.yaml"
    return path if path.is_file() else None


def load_chip(name_or_path: str | Path, overrides: dict | None = None) -> ChipSpec:
    """Load a preset by name or a YAML file by path, apply ``overrides`` (a nested dict), validate."""
    text = str(name_or_path)
    path = preset_path(text)
    if path is None:
        path = Path(text)
        if path.is_dir():
            raise SpecError(text, None, "", "is a folder; expected a hardware YAML file or a preset name")
        if not path.is_file():
            raise SpecError(text, None, "", f"no such file, and no preset of that name "
                            f"(presets: {', '.join(list_presets())})")
    data = load_with_extends(path, preset_path)
    if overrides:
        data = merge(data, _locate(overrides, "<override>"))
    source = path.stem if path.parent == PRESET_DIR else str(path)
    # a variant is named by its own name: key or, failing that, its file stem, never by the preset it extends
    if "name" not in data or data.where["name"][0] != str(path):
        data["name"] = path.stem
        data.where["name"] = (str(path), 1)
    data["source"] = source
    data.where["source"] = (str(path), 1)
    chip = build(ChipSpec, data, "")
    _check_consistency(chip, data)
    return chip


def load_chip_text(text: str, file: str = "<text>") -> ChipSpec:
    """Validate a YAML document given as text (no ``extends``); used by tests and notebooks."""
    data = parse_text(text, file)
    if "extends" in data:
        raise SpecError(file, data.where["extends"][1], "extends", "extends needs a file; use load_chip")
    chip = build(ChipSpec, data, "")
    _check_consistency(chip, data)
    return chip


def _locate(value: Any, file: str, prefix: str = "") -> Any:
    """Overrides as located data; each value is located at its command-line flag, ``--set KEY.PATH=VALUE``,
    so a validation error names the flag rather than a line of the preset it overrides."""
    if isinstance(value, dict):
        out = Located(file, None)
        for k, v in value.items():
            key = f"{prefix}{k}"
            out[k] = _locate(v, file, key + ".")
            out.where[k] = (f"--set {key}" if isinstance(v, dict) else f"--set {key}={_show(v)}", None)
        return out
    return value


def _show(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


# ----------------------------------------------------------------------------- generic build

# an integer key without its own upper bound: at most 2^53, the largest integer float64 arithmetic holds exactly
# (rates and sizes are multiplied in float64, indices kept in int64)
INT_MAX = 2 ** 53


def _describe(meta: dict) -> str:
    if meta.get("choices"):
        return "one of " + ", ".join(meta["choices"])
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and hi is not None:
        text = f"in {'(' if meta.get('lo_open') else '['}{lo:g}, {hi:g}]"
    elif lo is not None:
        text = f"> {lo:g}" if meta.get("lo_open") else f">= {lo:g}"
    elif hi is not None:
        text = f"<= {hi:g}"
    else:
        text = "any value"
    return f"{text} ({meta['note']})" if meta.get("note") else text


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_scalar(value: Any, tp: Any, meta: dict, where: tuple[str, int | None], path: str) -> Any:
    """One value of a field: its type, then (numbers) finiteness, sign and range, each refusal naming file, line,
    key path, value and the allowed range (with why the range is what it is, where the field says)."""
    file, line = where
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(file, line, path, f"{value!r} is not a boolean (true/false)")
        return value
    if tp is int:
        if meta.get("hi") is None:
            meta = {**meta, "hi": INT_MAX, "note": meta.get("note") or "at most 2^53, the largest integer "
                    "float64 arithmetic holds exactly"}
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(file, line, path, f"{value!r} is not an integer; allowed: an integer {_describe(meta)}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            desc = _describe(meta)
            raise SpecError(file, line, path, f"{value!r} is not a number; allowed: "
                            + ("any finite number" if desc.startswith("any value") else f"a finite number {desc}"))
        try:
            value = float(value)
        except OverflowError:           # an integer literal beyond float64 (10**400)
            raise SpecError(file, line, path, f"an integer of {len(str(abs(value)))} digits is beyond float64; "
                            f"allowed: a finite number {_describe(meta)}") from None
        if not math.isfinite(value):
            # one rule for every number of the schema: NaN and infinities are never a quantity
            shown = "NaN" if math.isnan(value) else f"{value!r}"
            desc = _describe(meta)
            allowed = "any finite number" if desc.startswith("any value") else f"a finite number {desc}"
            raise SpecError(file, line, path, f"{shown} is not allowed; allowed: {allowed}")
    elif tp is str:
        if not isinstance(value, str):
            raise SpecError(file, line, path, f"{value!r} is not a string")
        if meta.get("choices") and value not in meta["choices"]:
            raise SpecError(file, line, path, f"{value!r} is not allowed; {_describe(meta)}")
        return value
    if tp in (int, float):
        if meta.get("positive") and value <= 0:
            raise SpecError(file, line, path, f"{value!r} is not > 0; allowed: {_describe(meta)}")
        lo, hi = meta.get("lo"), meta.get("hi")
        bad = (lo is not None and (value <= lo if meta.get("lo_open") else value < lo)) or \
              (hi is not None and value > hi)
        if bad:
            raise SpecError(file, line, path, f"{value!r} is outside the allowed range: {_describe(meta)}")
    return value


def _options(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(tp) if a is not type(None))
    return (tp,)


def _build_value(tp: Any, value: Any, meta: dict, where: tuple[str, int | None], path: str) -> Any:
    options = _options(tp)
    if value is None:
        if type(None) in typing.get_args(tp):
            return None
        raise SpecError(where[0], where[1], path, "a value is required here")
    for opt in options:
        if dataclasses.is_dataclass(opt):
            if not isinstance(value, Located):
                raise SpecError(where[0], where[1], path, f"expected a mapping (section), got {value!r}")
            return build(opt, value, path, where)
    origin = [typing.get_origin(o) or o for o in options]
    if list in origin and isinstance(value, list):
        opt = options[origin.index(list)]
        args = typing.get_args(opt)
        if args and dataclasses.is_dataclass(args[0]):
            items = []
            for i, item in enumerate(value):
                if not isinstance(item, Located):
                    raise SpecError(where[0], where[1], f"{path}[{i}]", f"expected a mapping, got {item!r}")
                items.append(build(args[0], item, f"{path}[{i}]"))
            return tuple(items)
        return tuple(value)
    if dict in origin and isinstance(value, Located):
        out = {}
        for key, item in value.items():
            out[key] = _check_scalar(item, float, meta.get("items") or {"lo": 0.0}, value.where[key],
                                     f"{path}.{key}")
        return types.MappingProxyType(out)
    scalar = [o for o in options if o in (int, float, str, bool)]
    if not scalar:
        allowed = " or ".join(_type_name(o) for o in options)
        raise SpecError(where[0], where[1], path, f"{value!r} has the wrong type; expected {allowed}")
    if str in scalar and isinstance(value, str):
        return _check_scalar(value, str, meta, where, path)
    return _check_scalar(value, scalar[0], meta, where, path)


def build(cls: type, data: Located, prefix: str, where: tuple[str, int | None] | None = None) -> Any:
    """Build dataclass ``cls`` from ``data``; every problem names file, line and key path."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            file, line = data.where[key]
            known = ", ".join(sorted(fields))
            raise SpecError(file, line, _join(prefix, key), f"unknown key; recognised keys here: {known}")
    kwargs = {}
    for name, f in fields.items():
        path = _join(prefix, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                file, line = where or (data.file, data.line)
                raise SpecError(file, line, path,
                                f"missing required key ({f.metadata.get('doc', '')})")
            continue
        kwargs[name] = _build_value(hints[name], data[name], dict(f.metadata), data.where[name], path)
    return cls(**kwargs)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


# ----------------------------------------------------------------------------- cross-field rules

def _where(data: Located, *keys: str) -> tuple[str, int | None]:
    node, where = data, (data.file, data.line)
    for key in keys:
        if not isinstance(node, Located) or key not in node:
            break
        where = node.where[key]
        node = node[key]
    return where


def _check_consistency(chip: ChipSpec, data: Located) -> None:
    def fail(keys: tuple[str, ...], problem: str) -> None:
        file, line = _where(data, *keys)
        raise SpecError(file, line, ".".join(keys), problem)

    a, p = chip.analog, chip.precision
    if a.dac.per_tile > a.tile.rows:
        fail(("analog", "dac", "per_tile"), f"{a.dac.per_tile} DACs for {a.tile.rows} rows; allowed: <= rows")
    if a.adc.per_tile > a.tile.cols * a.tile.columns_per_weight:
        fail(("analog", "adc", "per_tile"), f"{a.adc.per_tile} ADCs for "
             f"{a.tile.cols * a.tile.columns_per_weight} physical columns; allowed: <= cols * columns_per_weight")
    if p.digital_mac not in chip.digital.simd.energy_pj_per_mac:
        known = ", ".join(chip.digital.simd.energy_pj_per_mac)
        fail(("precision", "digital_mac"), f"{p.digital_mac!r} has no energy in "
             f"digital.simd.energy_pj_per_mac; allowed: {known}")
    if a.tile.stacking == "planar" and a.tile.tiers > 1:
        fail(("analog", "tile", "stacking"), f"planar with {a.tile.tiers} tiers; allowed: monolithic or bonded "
             "for tiers > 1")
    d = chip.digital
    node = (d.energy_reference_nm, d.energy_reference_vdd_v, d.process_nm, d.vdd_v)
    if any(v is not None for v in node) and d.energy_reference_nm is not None:
        names = ("energy_reference_nm", "energy_reference_vdd_v", "process_nm", "vdd_v")
        for name, v in zip(names, node):
            if v is None:
                fail(("digital", name), "node scaling needs energy_reference_nm, energy_reference_vdd_v, "
                     "process_nm and vdd_v together (or none of them)")
    if a.tile_count > 0:
        _check_mvm_time(chip, fail)
    _check_noc(chip.noc, a.tile_count, data, fail)
    if chip.area is not None and a.tile_count > 0:
        for key in ("crossbar_um2_per_device", "dac_um2", "adc_um2"):
            if getattr(chip.area, key) is None:
                fail(("area",), f"missing required key area.{key} (the system has {a.tile_count} analog tiles)")


def _check_mvm_time(chip: ChipSpec, fail: Any) -> None:
    """One MVM of a full tile (arch.costs.mvm_latency_ns: passes x (row groups x (input + integration) +
    conversions)) must fit the engine's clock like any single time: at most MAX_STEP_NS; the key whose term is
    largest is named."""
    from . import costs

    a, bits = chip.analog, chip.precision.activation_bits
    t = costs.mvm_latency_ns(a, bits, a.tile.rows, a.tile.cols)
    if t <= MAX_STEP_NS:
        return
    passes = costs.input_passes(a, bits)
    groups = math.ceil(a.tile.rows / a.dac.per_tile)
    t_in = ((2 ** (min(bits, a.dac.bits) - 1) - 1) if a.dac.encoding == "pwm" else 1) * a.dac.step_ns
    t_conv = costs.conversion_ns(a, a.tile.cols)
    terms = {("analog", "dac", "step_ns"): passes * groups * t_in,
             ("analog", "tile", "integration_ns"): passes * groups * a.tile.integration_ns,
             ("analog", "adc", "conversion_ns"): passes * t_conv}
    key = max(terms, key=lambda k: terms[k])
    fail(key, f"one MVM of a full {a.tile.rows}x{a.tile.cols} tile takes {t:.4g} ns ({passes} input passes x "
         f"({groups} row groups x (input {t_in:.4g} + integration {a.tile.integration_ns:.4g}) + conversions "
         f"{t_conv:.4g}) ns); allowed: at most {MAX_STEP_NS:g} ns per MVM ({SPAN_TEXT})")


def _check_noc(noc: NocSpec, tile_count: int, data: Located, fail: Any) -> None:
    if noc.topology == "mesh":
        for key in ("width", "height"):
            if getattr(noc, key) is None:
                fail(("noc", key), "a mesh needs width and height")
        for key in ("nodes", "edges", "tile_nodes"):
            if getattr(noc, key) is not None:
                fail(("noc", key), "only for topology: graph")
        capacity = noc.width * noc.height * noc.tiles_per_node
        if tile_count > capacity:
            fail(("noc", "width"), f"a {noc.width}x{noc.height} mesh with {noc.tiles_per_node} tiles per node "
                 f"holds {capacity} tiles, but analog.tile_count is {tile_count}; allowed: tile_count <= "
                 "width * height * tiles_per_node")
        for key in ("simd_node", "dram_node"):
            value = getattr(noc, key)
            if value is None:
                continue
            ok = (isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value)
                  and 0 <= value[0] < noc.width and 0 <= value[1] < noc.height)
            if not ok:
                fail(("noc", key), f"{list(value) if isinstance(value, tuple) else value!r} is not a node "
                     f"of the mesh; allowed: [x, y] with 0 <= x < {noc.width}, 0 <= y < {noc.height}")
        return
    if not noc.nodes or not noc.edges:
        fail(("noc", "nodes" if not noc.nodes else "edges"), "topology: graph needs nodes and edges")
    names = set(map(str, noc.nodes))
    if len(names) != len(noc.nodes):
        fail(("noc", "nodes"), "node names must be unique")
    for i, edge in enumerate(noc.edges):
        for end in (edge.a, edge.b):
            if end not in names:
                fail(("noc", "edges"), f"edge {i} names unknown node {end!r}; allowed: {sorted(names)}")
    for key in ("simd_node", "dram_node"):
        value = getattr(noc, key)
        if value is None or value not in names:
            fail(("noc", key), f"{value!r} is not a node; allowed: {sorted(names)}")
    import networkx as nx

    und = nx.Graph()
    und.add_nodes_from(names)
    und.add_edges_from((e.a, e.b) for e in noc.edges)
    if not nx.is_connected(und):
        parts = [sorted(c) for c in nx.connected_components(und)]
        fail(("noc", "edges"), f"the graph is not connected; components: {parts}")
    tile_nodes = noc.tile_nodes or ()
    if not tile_nodes:
        fail(("noc", "tile_nodes"), "topology: graph needs tile_nodes")
    for node in tile_nodes:
        if node not in names:
            fail(("noc", "tile_nodes"), f"{node!r} is not a node; allowed: {sorted(names)}")
    if tile_count > len(tile_nodes) * noc.tiles_per_node:
        fail(("noc", "tile_nodes"), f"{len(tile_nodes)} tile nodes x {noc.tiles_per_node} tiles per node hold "
             f"{len(tile_nodes) * noc.tiles_per_node} tiles, but analog.tile_count is {tile_count}")
