"""Size a chip for a model: the tile count (or tiers) that holds a placement's analog matrices, and a NoC
mesh grown to hold the tiles (``hetmoe hw fit``). Pure: returns the numbers and the YAML text."""

from __future__ import annotations

from dataclasses import dataclass, fields
from math import ceil, sqrt

import numpy as np

from arch.spec import AnalogSpec, ChipSpec, NocSpec, TileSpec
from workloads.shapes import ModelShape

from .mapping import slots_needed
from .placement import Placement


@dataclass(frozen=True)
class Fit:
    slots_needed: int          # crossbar slots the mapping places (alignment padding included)
    padding_slots: int
    tile_count: int
    tiers: int
    width: int                 # mesh columns
    height: int                # mesh rows
    simd_node: tuple[int, int]
    dram_node: tuple[int, int]

    @property
    def slots(self) -> int:
        return self.tile_count * self.tiers


def spec_max(cls: type, name: str) -> int:
    """The upper bound the loader allows for field ``name`` of spec class ``cls`` (its ``hi`` metadata)."""
    return int(next(f for f in fields(cls) if f.name == name).metadata["hi"])


def fit_chip(chip: ChipSpec, model: ModelShape, placement: Placement, scale: str = "tiles") -> Fit:
    """``scale="tiles"``: ``tile_count = ceil(slots / tiers)`` at the given tiers; ``"tiers"``: ``tiers =
    ceil(slots / tile_count)`` at the given tiles. The mesh (``topology: mesh`` only) becomes the smallest
    near-square ``w x h`` with ``w * h * tiles_per_node >= tile_count`` (``w = ceil(sqrt(nodes))``,
    ``h = ceil(nodes / w)``); the SIMD and DRAM nodes keep their places when they still lie on the mesh,
    else move to the centre and to [0, 0]. A fit past a range the loader allows (``analog.tile.tiers``,
    ``analog.tile_count``, ``noc.width``/``height``) is a ``ValueError`` that says what would fit instead."""
    a = chip.analog
    if a.tile_count == 0 and scale == "tiers":
        raise ValueError("the system has no analog tiles to stack tiers on; fit by tiles")
    digital = np.array([placement.is_digital(m) for m in model.matrices], bool)
    needed, pad = slots_needed(model, digital, a.tile.rows, a.tile.cols)
    needed = max(needed, 1)
    max_tiers, max_tiles = spec_max(TileSpec, "tiers"), spec_max(AnalogSpec, "tile_count")
    if scale == "tiers":
        tiles, tiers = a.tile_count, ceil(needed / a.tile_count)
        if tiers > max_tiers:
            raise ValueError(
                f"{model.name} needs {needed:,} crossbar slots: at {chip.name}'s {tiles:,} tiles that is {tiers:,} "
                f"tiers per tile, above the {max_tiers:,} analog.tile.tiers allows; fit by tiles (--scale tiles), "
                f"or start from a system of at least {ceil(needed / max_tiers):,} tiles; nothing written")
    else:
        tiles, tiers = ceil(needed / a.tile.tiers), a.tile.tiers
        if tiles > max_tiles:
            raise ValueError(
                f"{model.name} needs {needed:,} crossbar slots: at {tiers} tiers that is {tiles:,} tiles, above the "
                f"{max_tiles:,} analog.tile_count allows; fit by tiers (--scale tiers) or start from a system with "
                f"at least {ceil(needed / max_tiles):,} tiers; nothing written")
    noc = chip.noc
    if noc.topology != "mesh":
        raise ValueError("hw fit grows mesh NoCs only; edit a graph NoC's tile_nodes by hand")
    nodes = ceil(tiles / noc.tiles_per_node)
    w = ceil(sqrt(nodes))
    h = ceil(nodes / w)
    side = min(spec_max(NocSpec, "width"), spec_max(NocSpec, "height"))
    if max(w, h) > side:
        raise ValueError(
            f"{tiles:,} tiles at {noc.tiles_per_node} per node need a {w:,} x {h:,} mesh, above the {side:,} nodes "
            f"per side noc.width and noc.height allow; start from a system with more noc.tiles_per_node (at least "
            f"{ceil(tiles / side**2):,}) or more tiers; nothing written")

    def on_mesh(node, fallback):
        return tuple(node) if node is not None and node[0] < w and node[1] < h else fallback

    return Fit(needed, pad, tiles, tiers, w, h, on_mesh(noc.simd_node, (w // 2, h // 2)),
               on_mesh(noc.dram_node, (0, 0)))


def fit_yaml(fit: Fit, base: str, model: str, placement_label: str, scale: str, name: str) -> str:
    """A hardware YAML that ``extends`` ``base`` with the fitted numbers, each with its derivation."""
    how = (f"tile_count = ceil({fit.slots_needed:,} slots / {fit.tiers} tiers)" if scale == "tiles" else
           f"tiers = ceil({fit.slots_needed:,} slots / {fit.tile_count:,} tiles)")
    return "\n".join([
        f"# Written by `hetmoe hw fit`: {base} sized so that the analog matrices of {model} under",
        f"# {placement_label} fit: {fit.slots_needed:,} crossbar slots (incl. {fit.padding_slots:,} alignment slots);",
        f"# {how}; the mesh grown to hold the tiles ({fit.width} x {fit.height} nodes). Every other number",
        f"# is {base}'s, with its sources. Area and static power grow with the tiles (hetmoe hw show).",
        f"extends: {base}",
        f"name: {name}",
        f"description: {base} sized for {model} ({placement_label})",
        "analog:",
        f"  tile_count: {fit.tile_count}{' ' * max(1, 21 - len(str(fit.tile_count)))}# der: {how if scale == 'tiles' else 'as ' + base}",
        "  tile:",
        f"    tiers: {fit.tiers}{' ' * max(1, 24 - len(str(fit.tiers)))}# der: {how if scale == 'tiers' else 'as ' + base}",
        "noc:",
        f"  width: {fit.width}{' ' * max(1, 26 - len(str(fit.width)))}# der: ceil(sqrt(ceil(tiles / tiles_per_node)))",
        f"  height: {fit.height}{' ' * max(1, 25 - len(str(fit.height)))}# der: ceil(nodes / width)",
        f"  simd_node: [{fit.simd_node[0]}, {fit.simd_node[1]}]{' ' * 12}# der: {base}'s when on the mesh, else the centre",
        f"  dram_node: [{fit.dram_node[0]}, {fit.dram_node[1]}]{' ' * 12}# der: {base}'s when on the mesh, else [0, 0]",
        ""])
