"""Inter-chip links and deterministic routes, as arrays (one row per link, one route per ordered chip pair).

Link numbering (directed links, each with ``link_bandwidth_gbps`` one way):

- ``switch``: link ``c`` is chip c's uplink to the switch, link ``n + c`` the switch's downlink to chip c. A
  message s -> d crosses ``[s, n + d]``: 2 link traversals and the switch once.
- ``ring``: link ``c`` goes c -> c+1 (clockwise), link ``n + c`` goes c -> c-1. A message takes the shorter
  way; a tie (n even, opposite chips) goes clockwise. Hops: ``min((d - s) mod n, (s - d) mod n)``.
- ``torus2d``: chip c sits at ``(c mod X, c div X)``; link ``4 c + k`` leaves chip c in direction k (0: +x,
  1: -x, 2: +y, 3: -y), wrapping around. Dimension-order routing: x first, then y, each the shorter way
  (ties: the + direction). Hops: ring distance in x + ring distance in y.
- ``full``: link ``s n + d`` goes s -> d directly; 1 hop (diagonal ids unused).

Routes are kept in CSR form: ``route_links[route_ptr[p]:route_ptr[p + 1]]`` are the links of pair
``p = s n + d`` in order; ``hops[s, d]`` their number (0 on the diagonal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arch.system import InterconnectSpec


@dataclass(frozen=True, eq=False)
class Topology:
    n_chips: int
    kind: str
    link_count: int
    link_src: np.ndarray      # int32 [links]: sending end (-1: the switch)
    link_dst: np.ndarray      # int32 [links]: receiving end (-1: the switch)
    route_ptr: np.ndarray     # int64 [n * n + 1]
    route_links: np.ndarray   # int32 [sum of hops]
    hops: np.ndarray          # int32 [n, n]: link traversals of each route
    switch_crossings: np.ndarray  # int32 [n, n]: 1 where a route crosses the switch

    def path(self, s: int, d: int) -> list[int]:
        p = s * self.n_chips + d
        return self.route_links[self.route_ptr[p]:self.route_ptr[p + 1]].tolist()

    def link_name(self, i: int) -> str:
        a, b = int(self.link_src[i]), int(self.link_dst[i])
        return f"{'switch' if a < 0 else f'chip{a}'}->{'switch' if b < 0 else f'chip{b}'}"

    def link_bytes(self, pair_bytes: np.ndarray) -> np.ndarray:
        """Bytes on every link for traffic ``pair_bytes`` (``[n, n]``, or ``[m, n, n]`` for m independent
        phases): each pair's bytes added to every link of its route (``np.bincount`` over the route links)."""
        flat = np.asarray(pair_bytes, np.float64).reshape(-1, self.n_chips * self.n_chips)
        m = flat.shape[0]
        lens = np.diff(self.route_ptr)
        rows, pairs = np.nonzero(flat)
        if rows.size == 0:
            out = np.zeros((m, self.link_count))
        else:
            rep = lens[pairs]
            starts = self.route_ptr[pairs]
            # the links of every (phase, pair) with traffic, concatenated: start offsets + 0..len-1
            offs = np.arange(rep.sum()) - np.repeat(np.cumsum(rep) - rep, rep)
            links = self.route_links[np.repeat(starts, rep) + offs]
            key = np.repeat(rows, rep).astype(np.int64) * self.link_count + links
            out = np.bincount(key, weights=np.repeat(flat[rows, pairs], rep),
                              minlength=m * self.link_count).reshape(m, self.link_count)
        return out if np.ndim(pair_bytes) == 3 else out[0]


def build_topology(ic: InterconnectSpec, n: int) -> Topology:
    """Links and routes of ``ic`` over ``n`` chips (rules in the module docstring)."""
    s, d = np.divmod(np.arange(n * n), n)
    routes: list[np.ndarray]
    if ic.topology == "switch":
        src = np.r_[np.arange(n), np.full(n, -1)]
        dst = np.r_[np.full(n, -1), np.arange(n)]
        routes = [np.array([a, n + b]) if a != b else np.zeros(0, int) for a, b in zip(s, d)]
        cross = (s != d).astype(np.int32)
        count = 2 * n
    elif ic.topology == "ring":
        idx = np.arange(n)
        src = np.r_[idx, idx]
        dst = np.r_[(idx + 1) % n, (idx - 1) % n]
        routes = [_ring_path(a, b, n, 0, 1, lambda c, k: c if k == 0 else n + c) for a, b in zip(s, d)]
        cross = np.zeros(n * n, np.int32)
        count = 2 * n
    elif ic.topology == "torus2d":
        X, Y = int(ic.dims[0]), int(ic.dims[1])
        idx = np.arange(n)
        x, y = idx % X, idx // X
        nbr = np.stack([((x + 1) % X) + y * X, ((x - 1) % X) + y * X, x + ((y + 1) % Y) * X,
                        x + ((y - 1) % Y) * X], axis=1)
        src = np.repeat(idx, 4)
        dst = nbr.ravel()
        routes = [_torus_path(int(a), int(b), X, Y) for a, b in zip(s, d)]
        cross = np.zeros(n * n, np.int32)
        count = 4 * n
    elif ic.topology == "full":
        src, dst = s.copy(), d.copy()
        routes = [np.array([a * n + b]) if a != b else np.zeros(0, int) for a, b in zip(s, d)]
        cross = np.zeros(n * n, np.int32)
        count = n * n
    else:  # the loader admits only the four above
        raise ValueError(f"unknown topology {ic.topology!r}")
    lens = np.array([r.size for r in routes], np.int64)
    ptr = np.r_[0, np.cumsum(lens)].astype(np.int64)
    flat = np.concatenate(routes).astype(np.int32) if lens.sum() else np.zeros(0, np.int32)
    return Topology(n, ic.topology, int(count), np.asarray(src, np.int32), np.asarray(dst, np.int32), ptr, flat,
                    lens.reshape(n, n).astype(np.int32), cross.reshape(n, n))


def _ring_path(a: int, b: int, n: int, plus: int, minus: int, link) -> np.ndarray:
    """Links from position a to b on a ring of n positions, the shorter way (tie: +); ``link(pos, k)`` names the
    link leaving ``pos`` in direction k (``plus`` or ``minus``)."""
    fwd = (b - a) % n
    if fwd == 0:
        return np.zeros(0, int)
    if fwd <= n - fwd:
        return np.array([link((a + i) % n, plus) for i in range(fwd)])
    return np.array([link((a - i) % n, minus) for i in range(n - fwd)])


def _torus_path(a: int, b: int, X: int, Y: int) -> np.ndarray:
    ax, ay, bx, by = a % X, a // X, b % X, b // X
    xs = _ring_path(ax, bx, X, 0, 1, lambda c, k: 4 * (c + ay * X) + k)
    ys = _ring_path(ay, by, Y, 2, 3, lambda c, k: 4 * (bx + c * X) + k)
    return np.r_[xs, ys].astype(int)


def phase_time_ns(topo: Topology, ic: InterconnectSpec, pair_bytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed form of one communication phase (or of ``m`` phases at once, ``pair_bytes [m, n, n]``):
    ``max over links (bytes x 8 / link_bandwidth_gbps) + max hops x link_latency_ns`` (+ ``switch_latency_ns``
    when a route crosses the switch), the maxima over the pairs that carry bytes; and the link bytes."""
    pb = np.asarray(pair_bytes, np.float64).reshape(-1, topo.n_chips, topo.n_chips)
    link = topo.link_bytes(pb)
    serial = link.max(axis=1, initial=0.0) * 8.0 / ic.link_bandwidth_gbps
    used = pb > 0
    hops = np.where(used, topo.hops[None], 0).max(axis=(1, 2), initial=0)
    cross = np.where(used, topo.switch_crossings[None], 0).max(axis=(1, 2), initial=0)
    t = serial + hops * ic.link_latency_ns + cross * ic.switch_latency_ns
    return (t, link) if np.ndim(pair_bytes) == 3 else (t[0], link[0])


def phase_energy_pj(topo: Topology, ic: InterconnectSpec, pair_bytes: np.ndarray) -> float:
    """``sum over pairs of bytes x 8 x (hops x link_energy_pj_per_bit + switch crossings x
    switch_energy_pj_per_bit)``, pJ."""
    pb = np.asarray(pair_bytes, np.float64).reshape(-1, topo.n_chips, topo.n_chips).sum(axis=0)
    per_bit = topo.hops * ic.link_energy_pj_per_bit + topo.switch_crossings * ic.switch_energy_pj_per_bit
    return float((pb * 8.0 * per_bit).sum())
