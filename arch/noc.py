"""The NoC (DESIGN §2): nodes, directed links and deterministic routing.

Nodes are numbered ``0 .. node_count - 1``. Mesh node ``(x, y)`` is number ``y * width + x``;
routing is dimension order (X first, then Y) and is computed arithmetically, so a mesh of 300,000
nodes is built in milliseconds without a graph object. Graph topologies (``noc.nodes`` and
``noc.edges``) use the hop-count shortest path, ties broken by node name order, so a path never
depends on hash order. Directed links are the unit of contention; link ``i`` goes from
``link_src[i]`` to ``link_dst[i]``.

Mesh link numbering (``W = width``, ``H = height``): east links ``(x, y) -> (x + 1, y)`` first,
``y * (W - 1) + x``; then west ``(x + 1, y) -> (x, y)`` in the same order; then north
``(x, y) -> (x, y + 1)``, ``y * W + x``; then south ``(x, y + 1) -> (x, y)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Hashable

import numpy as np

from .spec import NocSpec

Node = Hashable
Link = tuple[Node, Node]


@dataclass(frozen=True, eq=False)
class Network:
    """A built NoC: node names, directed links with their bandwidth and energy, where tiles/SIMD/DRAM sit."""

    spec: NocSpec
    node_names: tuple[Node, ...]          # name of node i: (x, y) on a mesh, the YAML name on a graph
    link_src: np.ndarray                  # int64 [links]
    link_dst: np.ndarray                  # int64 [links]
    link_bandwidth: np.ndarray            # float64 [links], Gbit/s
    link_energy: np.ndarray               # float64 [links], pJ per bit
    tile_node_ids: np.ndarray             # int64 [nodes hosting tiles], fill order
    simd_id: int
    dram_id: int
    _index: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ names
    @property
    def node_count(self) -> int:
        return len(self.node_names)

    @property
    def link_count(self) -> int:
        return int(self.link_src.size)

    @property
    def simd_node(self) -> Node:
        return self.node_names[self.simd_id]

    @property
    def dram_node(self) -> Node:
        return self.node_names[self.dram_id]

    @property
    def tile_nodes(self) -> tuple[Node, ...]:
        return tuple(self.node_names[i] for i in self.tile_node_ids)

    def node_id(self, node: Node) -> int:
        if self.spec.topology == "mesh":
            x, y = node
            return int(y) * self.spec.width + int(x)
        if not self._index:
            self._index.update({n: i for i, n in enumerate(self.node_names)})
        return self._index[node]

    def tile_node_id(self, tiles: np.ndarray | int) -> np.ndarray | int:
        """Node number of each tile (vectorised)."""
        return self.tile_node_ids[np.asarray(tiles) // self.spec.tiles_per_node]

    def node_of_tile(self, tile: int) -> Node:
        return self.node_names[int(self.tile_node_id(tile))]

    def link_name(self, i: int) -> str:
        return f"{self.node_names[self.link_src[i]]}->{self.node_names[self.link_dst[i]]}"

    # ------------------------------------------------------------------ routing
    def path_ids(self, src: int, dst: int) -> np.ndarray:
        """Directed link numbers from node ``src`` to node ``dst`` (empty when equal)."""
        if src == dst:
            return np.zeros(0, np.int64)
        if self.spec.topology == "mesh":
            return mesh_path(self.spec.width, self.spec.height, src, dst)
        import networkx as nx
        nodes = nx.shortest_path(self._sorted_graph, self.node_names[src], self.node_names[dst])
        return np.array([self._link_of[(a, b)] for a, b in zip(nodes[:-1], nodes[1:])], np.int64)

    def path(self, src: Node, dst: Node) -> tuple[Link, ...]:
        """Directed links from ``src`` to ``dst`` as node-name pairs (empty when equal)."""
        ids = self.path_ids(self.node_id(src), self.node_id(dst))
        return tuple((self.node_names[self.link_src[i]], self.node_names[self.link_dst[i]]) for i in ids)

    @cached_property
    def _link_of(self) -> dict[tuple[Node, Node], int]:
        return {(self.node_names[a], self.node_names[b]): i for i, (a, b) in enumerate(zip(self.link_src, self.link_dst))}

    @cached_property
    def _sorted_graph(self) -> Any:
        import networkx as nx
        g = nx.DiGraph()
        g.add_nodes_from(sorted(self.node_names, key=str))
        g.add_edges_from(sorted(self._link_of, key=str))
        return g

    @cached_property
    def graph(self) -> Any:
        """The links as a networkx DiGraph (built on first use; meshes never need it for a run)."""
        import networkx as nx
        g = nx.DiGraph()
        g.add_nodes_from(self.node_names)
        for i in range(self.link_count):
            g.add_edge(self.node_names[self.link_src[i]], self.node_names[self.link_dst[i]],
                       bandwidth_gbps=float(self.link_bandwidth[i]), energy_pj_per_bit=float(self.link_energy[i]))
        return g

    def link_bandwidth_gbps(self, link: Link) -> float:
        return float(self.link_bandwidth[self._link_of[link]])

    def link_energy_pj_per_bit(self, link: Link) -> float:
        return float(self.link_energy[self._link_of[link]])

    # ------------------------------------------------------------------ figures
    def diameter_hops(self) -> int:
        if self.spec.topology == "mesh":
            return self.spec.width - 1 + self.spec.height - 1
        import networkx as nx
        return nx.diameter(self.graph.to_undirected())

    def bisection_bandwidth_gbps(self) -> float:
        """Bandwidth across the narrowest balanced cut, one direction, Gbit/s.

        Mesh: ``min(width, height)`` links cut. Graph: the Kernighan-Lin bisection (seed 0), an
        upper bound on the true minimum.
        """
        if self.spec.topology == "mesh":
            w, h = self.spec.width, self.spec.height
            cut = min(w, h) if max(w, h) > 1 else 0
            return cut * self.spec.link_bandwidth_gbps
        import networkx as nx
        und = self.graph.to_undirected()
        a, b = nx.algorithms.community.kernighan_lin_bisection(und, seed=0)
        return sum(d["bandwidth_gbps"] for u, v, d in self.graph.edges(data=True) if u in a and v in b)


def mesh_path(width: int, height: int, src: int, dst: int) -> np.ndarray:
    """Link numbers of the X-then-Y route from node ``src`` to node ``dst`` (numbering in the module doc)."""
    W, H = width, height
    east, west, north = 0, (W - 1) * H, 2 * (W - 1) * H
    south = north + W * (H - 1)
    x, y = src % W, src // W
    tx, ty = dst % W, dst // W
    out = []
    while x != tx:
        if tx > x:
            out.append(east + y * (W - 1) + x)
            x += 1
        else:
            out.append(west + y * (W - 1) + x - 1)
            x -= 1
    while y != ty:
        if ty > y:
            out.append(north + y * W + x)
            y += 1
        else:
            out.append(south + (y - 1) * W + x)
            y -= 1
    return np.array(out, np.int64)


def _mesh_links(W: int, H: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.meshgrid(np.arange(W - 1), np.arange(H), indexing="xy")
    a_h = (y * W + x).ravel()
    x, y = np.meshgrid(np.arange(W), np.arange(H - 1), indexing="xy")
    a_v = (y * W + x).ravel()
    src = np.concatenate([a_h, a_h + 1, a_v, a_v + W]).astype(np.int64)
    dst = np.concatenate([a_h + 1, a_h, a_v + W, a_v]).astype(np.int64)
    return src, dst


def build_network(spec: NocSpec) -> Network:
    """Nodes and directed links: every undirected link becomes two directed links."""
    bw, e = spec.link_bandwidth_gbps, spec.energy_pj_per_bit_per_hop
    if spec.topology == "mesh":
        W, H = spec.width, spec.height
        names = tuple((x, y) for y in range(H) for x in range(W))
        src, dst = _mesh_links(W, H)
        simd = tuple(spec.simd_node) if spec.simd_node is not None else (0, 0)
        dram = tuple(spec.dram_node) if spec.dram_node is not None else (0, 0)
        return Network(spec, names, src, dst, np.full(src.size, float(bw)), np.full(src.size, float(e)),
                       np.arange(W * H, dtype=np.int64), simd[1] * W + simd[0], dram[1] * W + dram[0])
    names = tuple(spec.nodes)
    index = {n: i for i, n in enumerate(names)}
    src, dst, bws, es = [], [], [], []
    for edge in spec.edges:
        b = edge.bandwidth_gbps or bw
        en = e if edge.energy_pj_per_bit is None else edge.energy_pj_per_bit
        for u, v in ((edge.a, edge.b), (edge.b, edge.a)):
            src.append(index[u])
            dst.append(index[v])
            bws.append(b)
            es.append(en)
    return Network(spec, names, np.array(src, np.int64), np.array(dst, np.int64), np.array(bws, float),
                   np.array(es, float), np.array([index[n] for n in spec.tile_nodes], np.int64),
                   index[spec.simd_node], index[spec.dram_node])
