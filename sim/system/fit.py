"""Size a system for a model (``hetmoe system fit``): the smallest number of analog chips that holds every
analog matrix of a placement, beside given digital chips, and the system YAML that says so.

The count starts at the lower bound ``ceil(analog crossbar slots / slots per chip)`` (every analog matrix's
``arch.costs.crossbar_slots``, the chip's ``tile_count x tiers``) and grows until every chip of the layout
holds its share (:func:`sim.system.layout.fit_analog_count`: whole matrices per chip, and experts that must
sit on the chip of their layer's split, can cost more than the bound). The copies of hot experts that the
system's ``experts.replicate_hot`` asks for are not in the bound but must fit too; the written YAML states N
when ``--replicate-hot`` gave it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arch.spec import ChipSpec
from arch.system import System, compose
from workloads.shapes import ModelShape

from .layout import SystemLayout, fit_analog_count


@dataclass(frozen=True, eq=False)
class SystemFit:
    analog_chips: int
    lower_bound: int
    analog_slots: int            # crossbar slots of every analog matrix (no padding)
    slots_per_chip: int
    system: System
    layout: SystemLayout


def fit_system(template: System, chip: ChipSpec, digital: list[tuple[ChipSpec, int]], model: ModelShape,
               placement, layout: str, expert_tokens: np.ndarray, name: str) -> SystemFit:
    """The fitted system: ``K x chip`` (analog) + ``digital``, ``template``'s interconnect. With no digital chips
    the dense modules are spread over the analog chips (attention.placement spread)."""
    attention = None if digital else "spread"

    def system_of(k: int) -> System:
        return compose(template, [(chip, k, "analog"), *[(d, n, "digital") for d, n in digital]], name=name,
                       attention=attention)

    k, lower, lay = fit_analog_count(system_of, model, placement, layout, expert_tokens)
    t = lay.table
    from .layout import matrix_slots

    slots = matrix_slots(t, chip.analog.tile.rows, chip.analog.tile.cols)
    return SystemFit(k, lower, int(slots[~t.digital].sum()), chip.analog.tile_count * chip.analog.tile.tiers,
                     system_of(k), lay)


def fit_yaml(fit: SystemFit, template: str, chip: str, digital: list[tuple[str, int]], model: str, label: str,
             name: str, replicate_hot: int | None = None) -> str:
    """A system YAML extending ``template`` with the fitted chips, each number with its derivation."""
    lines = [
        f"# Written by `hetmoe system fit`: {model} under {label} on {chip} analog chips: the analog matrices need",
        f"# {fit.analog_slots:,} crossbar slots; one {chip} has {fit.slots_per_chip:,} (tiles x tiers), so at least",
        f"# ceil({fit.analog_slots:,} / {fit.slots_per_chip:,}) = {fit.lower_bound} chips; {fit.analog_chips} hold "
        "every chip's share",
        "# of whole matrices. Interconnect and all-to-all as the template's, with its sources.",
        f"extends: {template}",
        f"name: {name}",
        f"description: {fit.analog_chips} {chip} sized for {model} ({label})"
        + "".join(f" + {n} {d}" for d, n in digital),
        "chips:",
        f"  - hw: {chip}",
        f"    count: {fit.analog_chips}{' ' * max(1, 22 - len(str(fit.analog_chips)))}# der: the fit above",
        "    role: analog",
    ]
    for d, n in digital:
        lines += [f"  - hw: {d}", f"    count: {n}{' ' * max(1, 22 - len(str(n)))}# given: --digital {d}:{n}",
                  "    role: digital"]
    if not digital:
        lines += ["attention:", "  placement: spread                 # der: no digital chip; each layer's dense "
                  "modules on one analog chip"]
    if replicate_hot is not None:
        lines += ["experts:", f"  replicate_hot: {replicate_hot}{' ' * max(1, 18 - len(str(replicate_hot)))}# given: "
                  f"--replicate-hot {replicate_hot}; the fit counts these copies' slots"]
    return "\n".join(lines) + "\n"
