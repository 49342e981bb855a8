"""What tells the runs of a folder apart besides their placement: the swept axes of a sweep.

A run is a placement (policy, fraction, score: :func:`sim.report.plots.placement_label`) on a **design**
(the chip and each ``hw_overrides`` key) under a **workload** (mode, model, trace, tokens, batch, context,
seed, ...). Within a folder, the design and workload keys whose values differ between runs are its swept
axes; every output names them per run (labels, ``summary.csv`` columns, legends), draws lines only along
the placement fraction, colours by design and puts each workload in its own panel (a Pareto front is drawn
and quoted per workload: a prefill point never dominates a decode one). A baseline run (``role:
baseline``, compare's ``--baseline``) takes no part: it is named by its chip.

Values of an override key a run does not set are its hardware description's, which
:func:`sim.sweep.collect` stores on each run as ``hw_base`` (``(preset)`` is shown without them).
"""

from __future__ import annotations

import json
from typing import Any

# workload keys, in the order they are named; each reads the run's config (tokens: its metrics)
WORKLOAD = ("mode", "model", "trace", "tokens", "batch", "context_tokens", "max_inflight", "seed", "checkpoint",
            "scope", "fill")
PRESET = "(preset)"


def flat(nested: dict[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """``{"memory": {"sram": {"capacity_mib": 512}}}`` -> ``{"memory.sram.capacity_mib": 512}``."""
    out: dict[str, Any] = {}
    for key, value in (nested or {}).items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat(value, path + "."))
        else:
            out[path] = value
    return out


def _plain(value: Any) -> Any:
    """A hashable, comparable stand-in for a value (lists and dicts as JSON text)."""
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (list, dict)) else value


def base_value(run: dict[str, Any], key: str) -> Any:
    """The value of override ``key`` (``memory.sram.capacity_mib``) in the run's hardware description without
    overrides: from ``hw_base``, which :func:`sim.sweep.collect` reads from the description (this package
    never loads one); :data:`PRESET` when it is not there."""
    return (run.get("hw_base") or {}).get(key, PRESET)


def _config_value(run: dict[str, Any], key: str) -> Any:
    c = run.get("config") or {}
    if key == "tokens":
        return (run.get("metrics") or {}).get("tokens", (run.get("trace") or {}).get("tokens"))
    if key == "trace":
        # compare --noisy-routing prices each placement on its own routes: the trace it was placed on is the axis
        return c.get("placement_trace") or c.get("trace")
    if key == "context_tokens" and c.get("mode") == "prefill":
        return None                   # prefill runs ignore the decode context
    if key == "max_inflight" and c.get("mode") != "prefill":
        return None
    return c.get(key)


def _main(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r.get("role") != "baseline"]


def swept(runs: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(design keys, workload keys) whose values differ between the folder's runs (baselines aside), in
    the order they are named: ``hw``, then override keys sorted, then :data:`WORKLOAD`'s order."""
    main = _main(runs)
    if len(main) < 2:
        return [], []
    design = []
    if len({r["config"]["hw"] for r in main}) > 1:
        design.append("hw")
    keys = sorted({k for r in main for k in flat(r["config"].get("hw_overrides"))})
    for key in keys:
        if len({_plain(override_value(r, key)) for r in main}) > 1:
            design.append(key)
    # a key that follows the mode (sweeps default batch to 64 prefill tokens, 32 decode sequences) is the
    # mode's, not an axis of its own: it counts only when it varies among runs of one mode
    by_mode: dict[Any, list[dict[str, Any]]] = {}
    for r in main:
        by_mode.setdefault(r["config"].get("mode"), []).append(r)
    workload = [k for k in WORKLOAD
                if (len({_plain(_config_value(r, k)) for r in main}) > 1 if k == "mode" else
                    any(len({_plain(_config_value(r, k)) for r in rs}) > 1 for rs in by_mode.values()))]
    return design, workload


def override_value(run: dict[str, Any], key: str) -> Any:
    """The run's value of override ``key``: its own, else its hardware description's."""
    own = flat(run["config"].get("hw_overrides"))
    return own[key] if key in own else base_value(run, key)


def value(run: dict[str, Any], key: str) -> Any:
    """The run's value of a design or workload key."""
    if key == "hw":
        return run["config"]["hw"]
    if key in WORKLOAD:
        return _config_value(run, key)
    return override_value(run, key)


def short_names(keys: list[str]) -> dict[str, str]:
    """Each override key by its last two parts (``sram.capacity_mib``), longer where two would clash."""
    out = {}
    for key in keys:
        parts = key.split(".")
        n = min(2, len(parts))
        while n < len(parts) and sum(1 for k in keys if k.split(".")[-n:] == parts[-n:]) > 1:
            n += 1
        out[key] = ".".join(parts[-n:])
    return out


def _show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, str) and ("/" in v or "\\" in v) and not v.startswith("synthetic"):
        from pathlib import PurePath

        return PurePath(v).name
    return str(v)


def words(key: str, v: Any, short: str | None = None, explicit: bool = True) -> str:
    """One swept value in words: ``decode``, ``batch 32``, ``sram.capacity_mib=512``, ``sram.capacity_mib=32
    (preset)`` (``explicit`` False: the run does not set the key, its chip's own value)."""
    if key == "mode":
        return str(v)
    if key == "hw":
        return str(v)
    if key in WORKLOAD:
        return f"{key.replace('_', ' ')} {_show(v)}"
    name = short or key
    if v == PRESET:
        return f"{name} {PRESET}"
    return f"{name}={_show(v)}" + ("" if explicit else f" {PRESET}")


def annotate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Store on each run ``swept``: {key: words} for the folder's swept design and workload keys (empty for
    a baseline and when nothing but the placement varies); returns ``runs``. Idempotent: recomputed from
    the runs given, so every output of one list names the same axes."""
    design, workload = swept(runs)
    names = short_names([k for k in design if k != "hw"])
    for r in runs:
        if r.get("role") == "baseline":
            r["swept"] = {}
            continue
        own = flat(r["config"].get("hw_overrides"))
        r["swept"] = {k: words(k, value(r, k), names.get(k), explicit=(k in own or k == "hw"))
                      for k in design + workload}
    return runs


def design_key(run: dict[str, Any]) -> tuple:
    """The run's design values (chip, override keys) among the folder's swept ones (``annotate`` first)."""
    s = run.get("swept") or {}
    return tuple((k, v) for k, v in s.items() if k not in WORKLOAD)


def workload_key(run: dict[str, Any]) -> tuple:
    """The run's workload values among the folder's swept ones (``annotate`` first): its panel."""
    s = run.get("swept") or {}
    return tuple((k, v) for k, v in s.items() if k in WORKLOAD)


def design_text(run: dict[str, Any]) -> str:
    """``sram.capacity_mib=512`` (chip first when several): the run's design among the swept ones."""
    return ", ".join(v for _, v in design_key(run))


def workload_text(run: dict[str, Any]) -> str:
    return ", ".join(v for _, v in workload_key(run))


def _rank(key: str, v: Any) -> tuple:
    """A sort key for one value: prefill before decode, numbers as numbers (``batch 8`` before ``batch 64``)."""
    if key == "mode":
        return ({"prefill": 0, "decode": 1}.get(str(v), 9), 0.0, str(v))
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, str(v))


def sort_value(run: dict[str, Any]) -> tuple:
    """Order runs by workload, then design."""
    s = run.get("swept") or {}
    order = [k for k in s if k in WORKLOAD] + [k for k in s if k not in WORKLOAD]
    return tuple(_rank(k, value(run, k)) for k in order)


def designs(runs: list[dict[str, Any]]) -> list[tuple]:
    """The distinct :func:`design_key` of the runs (baselines aside), ordered by value (``annotate`` first)."""
    seen: dict[tuple, dict[str, Any]] = {}
    for r in runs:
        if r.get("role") != "baseline":
            seen.setdefault(design_key(r), r)
    return sorted(seen, key=lambda d: tuple(_rank(k, value(seen[d], k)) for k, _ in d))


def facets(runs: list[dict[str, Any]]) -> list[list[int]]:
    """Indices of ``runs`` per workload panel, panels in :func:`sort_value` order; a baseline joins the
    panel of its own mode (or the first)."""
    groups: dict[tuple, list[int]] = {}
    main = [i for i, r in enumerate(runs) if r.get("role") != "baseline"]
    for i in main:
        groups.setdefault(workload_key(runs[i]), []).append(i)
    if not groups:
        return [list(range(len(runs)))] if runs else []
    ordered = sorted(groups.values(), key=lambda idx: sort_value({**runs[idx[0]], "swept": dict(
        workload_key(runs[idx[0]]))}))
    for i, r in enumerate(runs):
        if r.get("role") == "baseline":
            mode = r["config"].get("mode")
            home = next((g for g in ordered if runs[g[0]]["config"].get("mode") == mode), ordered[0])
            home.append(i)
    return ordered


def join_labels(labels) -> str:
    """Labels in a sentence: ", " between them, "; " when a label holds a comma itself (swept values)."""
    labels = list(labels)
    return ("; " if any(", " in text for text in labels) else ", ").join(labels)
