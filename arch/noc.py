"""The NoC as a networkx graph with deterministic routing (DESIGN §2).

Mesh nodes are ``(x, y)`` tuples; routing is dimension order (X first, then Y). Graph
topologies use the hop-count shortest path, ties broken by node name order, so a path never
depends on hash order. Directed links are the unit of contention.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Hashable

import networkx as nx

from .spec import NocSpec

Node = Hashable
Link = tuple[Node, Node]


@dataclass(frozen=True)
class Network:
    """A built NoC: graph, where tiles/SIMD/DRAM sit, and a routing function."""

    spec: NocSpec
    graph: nx.DiGraph
    tile_nodes: tuple[Node, ...]  # fill order of tiles, tiles_per_node each
    simd_node: Node
    dram_node: Node

    def node_of_tile(self, tile: int) -> Node:
        return self.tile_nodes[tile // self.spec.tiles_per_node]

    def path(self, src: Node, dst: Node) -> tuple[Link, ...]:
        """Directed links from ``src`` to ``dst`` (empty when equal)."""
        if src == dst:
            return ()
        if self.spec.topology == "mesh":
            return _xy_path(src, dst)
        nodes = nx.shortest_path(self._sorted_graph, src, dst)
        return tuple(zip(nodes[:-1], nodes[1:]))

    @cached_property
    def _sorted_graph(self) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_nodes_from(sorted(self.graph.nodes, key=str))
        g.add_edges_from(sorted(self.graph.edges, key=str))
        return g

    def link_bandwidth_gbps(self, link: Link) -> float:
        return self.graph.edges[link]["bandwidth_gbps"]

    def link_energy_pj_per_bit(self, link: Link) -> float:
        return self.graph.edges[link]["energy_pj_per_bit"]

    def diameter_hops(self) -> int:
        if self.spec.topology == "mesh":
            return self.spec.width - 1 + self.spec.height - 1
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
        und = self.graph.to_undirected()
        a, b = nx.algorithms.community.kernighan_lin_bisection(und, seed=0)
        return sum(d["bandwidth_gbps"] for u, v, d in self.graph.edges(data=True) if u in a and v in b)


def _xy_path(src: tuple[int, int], dst: tuple[int, int]) -> tuple[Link, ...]:
    links = []
    x, y = src
    step = 1 if dst[0] > x else -1
    while x != dst[0]:
        links.append(((x, y), (x + step, y)))
        x += step
    step = 1 if dst[1] > y else -1
    while y != dst[1]:
        links.append(((x, y), (x, y + step)))
        y += step
    return tuple(links)


def build_network(spec: NocSpec) -> Network:
    """Build the directed graph: every undirected link becomes two directed links."""
    g = nx.DiGraph()
    bw, e = spec.link_bandwidth_gbps, spec.energy_pj_per_bit_per_hop
    if spec.topology == "mesh":
        nodes = [(x, y) for y in range(spec.height) for x in range(spec.width)]
        g.add_nodes_from(nodes)
        for x, y in nodes:
            for nx_, ny_ in ((x + 1, y), (x, y + 1)):
                if nx_ < spec.width and ny_ < spec.height:
                    g.add_edge((x, y), (nx_, ny_), bandwidth_gbps=bw, energy_pj_per_bit=e)
                    g.add_edge((nx_, ny_), (x, y), bandwidth_gbps=bw, energy_pj_per_bit=e)
        simd = tuple(spec.simd_node) if spec.simd_node is not None else (0, 0)
        dram = tuple(spec.dram_node) if spec.dram_node is not None else (0, 0)
        return Network(spec, g, tuple(nodes), simd, dram)
    g.add_nodes_from(spec.nodes)
    for edge in spec.edges:
        attrs = {"bandwidth_gbps": edge.bandwidth_gbps or bw,
                 "energy_pj_per_bit": e if edge.energy_pj_per_bit is None else edge.energy_pj_per_bit}
        g.add_edge(edge.a, edge.b, **attrs)
        g.add_edge(edge.b, edge.a, **attrs)
    return Network(spec, g, tuple(spec.tile_nodes), spec.simd_node, spec.dram_node)
