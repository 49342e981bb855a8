"""Read YAML while remembering where every mapping key came from (file and line).

Mappings are returned as :class:`Located` dicts whose ``where[key]`` is ``(file, line)``.
``extends:`` chains are resolved here and merged key by key, so that every value still
knows the file and line that set it. Nothing is written; ``yaml.safe_load`` semantics only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import SpecError
from .safeio import read_text


class Located(dict):
    """A mapping whose ``where[key]`` holds the (file, line) that supplied ``key``."""

    def __init__(self, file: str, line: int) -> None:
        super().__init__()
        self.file = file
        self.line = line
        self.where: dict[str, tuple[str, int]] = {}


_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")

# anchors and aliases (&a / *a) may be used, but a document may not expand to more nodes than this
# (a "billion laughs" file of a few hundred bytes would otherwise expand to 10^9 nodes downstream)
MAX_YAML_NODES = 1_000_000


def _expanded_size(root: yaml.Node, file: str) -> int:
    """Nodes in the document with every alias expanded; refuses recursive aliases and huge expansions."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise SpecError(file, node.start_mark.line + 1, "", "recursive YAML alias (a node contains itself)")
        open_nodes.add(key)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(size(k) + size(v) for k, v in node.value)
        open_nodes.discard(key)
        if n > MAX_YAML_NODES:
            raise SpecError(file, node.start_mark.line + 1, "",
                            f"YAML aliases expand to more than {MAX_YAML_NODES:,} values; write the data out")
        sizes[key] = n
        return n

    return size(root)


def _bounded_loader(file: str) -> type[yaml.SafeLoader]:
    """A SafeLoader that checks the composed document's expanded size before constructing anything."""

    class _Bounded(yaml.SafeLoader):
        def compose_document(self) -> yaml.Node:
            node = super().compose_document()
            _expanded_size(node, file)
            return node

    # YAML 1.1 reads 1e9 and 1.0e9 as strings (it wants 1.0e+9); take the YAML 1.2 forms as numbers too
    _Bounded.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))
    return _Bounded


def _yaml_load(text: str, loader: type[yaml.SafeLoader], file: str) -> Any:
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError(file, line, "", f"YAML syntax error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise SpecError(file, None, "", f"YAML syntax error: {exc}") from None
    except RecursionError:
        raise SpecError(file, None, "", "YAML nested too deeply") from None


def load_plain(text: str, file: str) -> Any:
    """``yaml.safe_load`` with the bounded-alias and YAML-1.2-float rules; errors are :class:`SpecError`."""
    return _yaml_load(text, _bounded_loader(file), file)


def nested_overrides(items: list[str], what: str, example: str) -> dict[str, Any]:
    """``KEY.PATH=VALUE`` pairs (VALUE parsed as YAML by :func:`load_plain`) into the nested overrides dict of
    ``arch.load_chip``; ``what`` names the option in errors (``--set``), ``example`` shows the form."""
    from .errors import HetmoeError

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise HetmoeError(f"{what} {item!r}: expected KEY.PATH=VALUE, {example}")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = load_plain(value, f"{what} {key.strip()}")
    return out


def _loader_for(file: str) -> type[yaml.SafeLoader]:
    class _Loader(_bounded_loader(file)):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Located:
        out = Located(file, node.start_mark.line + 1)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise SpecError(file, line, str(key), "keys must be strings")
            if key in out:
                raise SpecError(file, line, key, "duplicate key")
            out[key] = loader.construct_object(value_node, deep=True)
            out.where[key] = (file, line)
        return out

    _Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return _Loader


def parse_text(text: str, file: str) -> Located:
    """Parse one YAML document into a :class:`Located` mapping, or raise :class:`SpecError`."""
    data = _yaml_load(text, _loader_for(file), file)
    if data is None:
        raise SpecError(file, 1, "", "the file is empty; expected a mapping of sections")
    if not isinstance(data, Located):
        raise SpecError(file, 1, "", f"expected a mapping of sections, got {type(data).__name__}")
    return data


def merge(base: Located, override: Located) -> Located:
    """Deep-merge ``override`` onto ``base``; mappings merge key by key, anything else replaces."""
    out = Located(override.file, override.line)
    for key, value in base.items():
        out[key] = value
        out.where[key] = base.where[key]
    for key, value in override.items():
        if isinstance(value, Located) and isinstance(out.get(key), Located):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
        out.where[key] = override.where[key]
    return out


def load_with_extends(
    path: Path, resolve_name: Callable[[str], Path | None], _chain: tuple[str, ...] = ()
) -> Located:
    """Load ``path`` and resolve its ``extends:`` (a preset name or a path relative to the file)."""
    file = str(path)
    if file in _chain:
        cycle = " -> ".join([*_chain, file])
        raise SpecError(file, None, "extends", f"cycle of extends: {cycle}")
    text = read_text(path, "hardware YAML")
    data = parse_text(text, file)
    parent_name = data.pop("extends", None)
    line = data.where.pop("extends", (file, None))[1]
    if parent_name is None:
        return data
    if not isinstance(parent_name, str):
        raise SpecError(file, line, "extends", f"must be a preset name or a file path, got {parent_name!r}")
    candidate = (path.parent / parent_name)
    parent = candidate if candidate.suffix in (".yaml", ".yml") and candidate.is_file() else resolve_name(parent_name)
    if parent is None:
        raise SpecError(file, line, "extends", f"no preset or file named {parent_name!r}")
    return merge(load_with_extends(parent, resolve_name, (*_chain, file)), data)


def to_plain(value: Any) -> Any:
    """Strip location information: Located -> dict, recursively."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    return value
