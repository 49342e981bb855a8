"""The stage scheduler: one call lays out one stage of one micro-batch at one layer (DESIGN §5).

Everything here is plain Python over numpy arrays, written in the subset numba compiles. The
engine loads this file twice through :func:`sim.engine.kernels.load`: compiled (``numba.njit``,
cached on disk) for runs, and as plain Python (the reference implementation the tests compare
the compiled one against). Nothing here keeps state between calls except the arrays it is given,
and nothing here allocates: the compiled copy is built without numba's reference-counting runtime
(see :mod:`sim.engine.kernels`), so an allocation would fail to compile. Besides the action
counters, the kernel adds up the bytes each DRAM channel delivered and the bits each NoC link carried
(delivered utilisation, :func:`sim.api.utilisation`).

Time is integer picoseconds. Every resource is a reservation calendar (a row of sorted, disjoint
busy intervals): an operation ready at ``t`` that needs it for ``d`` takes the earliest gap
``[s, s + d)`` with ``s >= t``. A row holds at most its capacity of live intervals; when full it
drops intervals that ended before the stage's start, and if still full merges its two earliest
intervals (closing the gap between them, so later operations cannot back-fill it). Bookings are
made in a fixed order, so schedules are deterministic.

Tie-breaks (written down because schedules depend on them): slots are booked in slot order (row
block major), each on its own tile when its node's input has arrived; of several DRAM channels
the one whose stream can start first, lowest number on ties; routed experts in expert
order; column blocks in order.

Per-slot analog schedule and spread reductions:

- the input slice of every row block goes from where it is to each node holding slots of that
  row block (one message per node, carrying the rows its slots need);
- each slot books its tile for ``t_mvm + (n - 1) * II`` once its node's input has arrived; slots
  on one tile (different tiers) therefore serialise, slots on different tiles run in parallel;
- column block ``c`` is reduced at its *site*, the node of its row-block-0 slot: a node holding
  ``k > 1`` slots of the block first adds them on its local digital unit (``(k - 1) n w`` adds),
  sends its partial sum (``n w`` partial-sum words) to the site, and the site adds the ``m`` partial
  sums it gets (``(m - 1) n w`` adds); ``w`` is the block's width. Every add is booked on the local
  digital unit of its node (one calendar per node). Without local digital units every slot sends
  its partial sums to the SIMD node, which adds them all in one vector operation.
- the block's output leaves from its site: back to the SIMD node (one message per site), or, in a
  SwiGLU chain, the up projection's block joins the gate's block at the gate's site, the
  activation runs on that site's unit, and the activation's columns go to the down projection's
  nodes that need them as input rows.

Weight streams (a digital operation whose weights are not SRAM-resident, and attention's KV-cache
read). The stream of ``B`` bytes holds a DRAM channel and every link of the DRAM route for
``B / bandwidth`` (bandwidth: min(DRAM channel, the route's slowest link)) from a common start ``t``:

- with prefetch (``memory.sram.prefetch``, weights that fit one half of the staging buffer): ``t`` is
  the earliest time, not before the stage starts nor before the operation two streams back has
  ended (its half of the buffer is free again when it ends), at which a channel and the route are
  free;
- otherwise (prefetch off, weights larger than a half, the KV cache): the earliest ``t >= ready``
  (the operation's input ready) at which a channel and the route are free.

Its last byte is on chip at ``arrive = t + latency + B / bandwidth + route hops``. The SIMD gang is
booked for exactly the operation's compute time ``c`` (its on-chip duration: MACs, vector ops, SRAM
traffic) in the earliest free gap starting at ``s >= max(ready, arrive - c)``: compute consumes the
weights as they stream and finishes no earlier than the last byte, and the gang is never held while
the operation waits for its weights (another operation can use it meanwhile). The operation ends at
``s + c``; on an idle chip that is ``max(c, latency + B / bandwidth + hops)`` after ``ready``, the
overlapped GEMM time.
"""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------- codes
# counters (float64 array)
C_ADC, C_DAC, C_CELLS, C_MACS, C_VEC, C_LD, C_SRAM, C_DRAM = 0, 1, 2, 3, 4, 5, 6, 7
C_BITHOPS, C_NOC_PJ, C_ROUTER_BITS, C_EXP_MACS_A, C_EXP_MACS_D, C_EXP_WBYTES = 8, 9, 10, 11, 12, 13
N_COUNTERS = 14
# module codes (workloads.shapes names, in this order)
MOD_ATTENTION, MOD_ROUTER, MOD_SHARED, MOD_EXPERT, MOD_DENSE, MOD_LM_HEAD, MOD_OTHER = 0, 1, 2, 3, 4, 5, 6
# Constants passed as arguments are numpy scalars, not Python literals: numba compiles a called
# function once per distinct literal argument, so literal labels and roles multiplied the compile
# time of ``xfer``, ``analog_run``, ``simd_op`` and ``route_book`` (7, 3, 3 and 6 copies).
# timeline labels below zero (>= 0: a matrix index)
L_NORM, L_RESIDUAL, L_ROUTER_SOFTMAX, L_COMBINE_VEC, L_SWIGLU, L_ATTN_CORE = (np.int64(c) for c in range(-1, -7, -1))
L_DISPATCH, L_PARTIALS, L_ACTIVATION, L_OUTPUT, L_REDUCE, L_UP_OUT, L_INPUT, L_CHAIN = (np.int64(c)
                                                                                     for c in range(-7, -15, -1))
# timeline aux codes (-1: none; 1 on a matrix label: the whole SwiGLU chain), output-block roles of
# analog_run (gate, up, and the matrix whose output leaves), and simd_op's prefetch flag
AUX_NONE, AUX_CHAIN = np.int64(-1), np.int64(1)
ROLE_GATE, ROLE_UP, ROLE_OUT = np.int64(0), np.int64(1), np.int64(2)
PREFETCH, NO_PREFETCH = np.bool_(True), np.bool_(False)
LABELS = {L_NORM: "rmsnorm", L_RESIDUAL: "residual", L_ROUTER_SOFTMAX: "router softmax/top-k",
          L_COMBINE_VEC: "combine", L_SWIGLU: "swiglu", L_ATTN_CORE: "attn.core", L_DISPATCH: "dispatch",
          L_PARTIALS: "partials", L_ACTIVATION: "activation", L_OUTPUT: "out", L_REDUCE: "reduce",
          L_UP_OUT: "up out", L_INPUT: "in", L_CHAIN: "chain"}
# glue-operation counts (sim.engine.ops, repeated as literals so the compiled code sees constants)
NORM_OPS, RESIDUAL_OPS, SOFTMAX_OPS, TOPK_OPS, SWIGLU_OPS, COMBINE_OPS, ADD_OPS = 4, 1, 3, 1, 5, 2, 1
# small helpers the compiler inlines into their callers (a call that passes the state costs more than they do)
PRUNE_AT = 32
INLINE = ("ps", "sat_ps", "cal_fit", "cal_book", "first_after", "first_after_end", "record", "take", "block_width",
          "dram_ns", "vec", "ld_op")


# The clock's limits (arch.spec.SPAN_PS, OP_PS; checked equal in sim.engine.simulator): a run may simulate at most
# 2^62 ps and one duration is at most 2^60 ps, so a time plus a few durations never wraps int64. A duration past
# OP_PS (or NaN) saturates to it, and a booking that would end past SPAN_PS sets S[S_OVERFLOW]; the engine then
# stops the run with one line (sim.engine.simulator.SpanError).
SPAN_PS = np.int64(2 ** 62)
OP_PS = np.int64(2 ** 60)
OP_PS_F = float(2 ** 60)
S_OVERFLOW = 10                # in the state's int64 scratch S (S[0:8] misc, S[8:10] prefetch, S[10] this)


def ps(ns):
    """Nanoseconds -> integer picoseconds, rounded half up (saturating at ``OP_PS``)."""
    return sat_ps(ns * 1000.0 + 0.5)


def sat_ps(x):
    """A duration in ps (float, already rounded up by 0.5) as int64, ``OP_PS`` when it is larger or NaN (a float
    past int64 has no integer value: converting it is undefined)."""
    if x < OP_PS_F:
        return np.int64(x)
    return OP_PS


# ---------------------------------------------------------------------------------------- calendars
def cal_fit(cal, ivl, r, t, d):
    """Earliest start ``>= t`` at which resource ``r`` is free for ``d`` ps. ``cal[r]``: (offset, capacity,
    live intervals, busy ps); ``ivl[offset + i]``: (start, end) of live interval i, sorted."""
    n = cal[r, 2]
    if n == 0 or d <= 0:
        return t
    o = cal[r, 0]
    if t >= ivl[o + n - 1, 1]:
        return t
    i = first_after_end(ivl, o, n, t)
    while i < n and ivl[o + i, 0] < t + d:
        if ivl[o + i, 1] > t:
            t = ivl[o + i, 1]
        i += 1
    return t


def cal_book(cal, ivl, misc, r, s, d, now):
    """Mark ``[s, s + d)`` busy on ``r`` (free by construction: the caller fitted it first). A booking
    after the row's last interval (most of them) extends it or appends here; the rest go to
    :func:`cal_insert`. This part is inlined into its callers, so the common case costs no call."""
    if d <= 0:
        return
    if s < 0 or d > SPAN_PS or s > SPAN_PS - d:
        misc[S_OVERFLOW] = 1             # past the clock's span (or wrapped): the engine stops the run
    cal[r, 3] += d
    misc[0] += 1                         # bookings
    o, n = cal[r, 0], cal[r, 2]
    if n == 0 or s >= ivl[o + n - 1, 1]:
        if n > 0 and ivl[o + n - 1, 1] == s:
            ivl[o + n - 1, 1] = s + d
            return
        if n < PRUNE_AT and n < cal[r, 1]:
            ivl[o + n, 0] = s
            ivl[o + n, 1] = s + d
            cal[r, 2] = n + 1
            return
    cal_insert(cal, ivl, misc, r, s, d, now)


def cal_insert(cal, ivl, misc, r, s, d, now):
    """The general case of :func:`cal_book`: insert ``[s, s + d)`` among the row's intervals, merging
    with its neighbours; a row of ``PRUNE_AT`` or more live intervals first drops those that ended
    before ``now`` (the stage's start)."""
    o, n, e = cal[r, 0], cal[r, 2], s + d
    i = first_after(ivl, o, n, s)
    if i > 0 and ivl[o + i - 1, 1] == s:
        if i < n and ivl[o + i, 0] == e:             # bridges two intervals
            ivl[o + i - 1, 1] = ivl[o + i, 1]
            for j in range(i, n - 1):
                ivl[o + j, 0] = ivl[o + j + 1, 0]
                ivl[o + j, 1] = ivl[o + j + 1, 1]
            cal[r, 2] = n - 1
        else:
            ivl[o + i - 1, 1] = e
        return
    if i < n and ivl[o + i, 0] == e:
        ivl[o + i, 0] = s
        return
    if n >= PRUNE_AT or n == cal[r, 1]:
        k = first_after_end(ivl, o, n, now)          # intervals [0, k) ended before the stage began
        if k == 0 and n == cal[r, 1]:                # full and nothing to drop: close the earliest gap
            ivl[o, 1] = ivl[o + 1, 1]
            k = 1
            misc[1] += 1                             # gaps closed
            for j in range(2, n):
                ivl[o + j - 1, 0] = ivl[o + j, 0]
                ivl[o + j - 1, 1] = ivl[o + j, 1]
        elif k > 0:
            for j in range(k, n):
                ivl[o + j - k, 0] = ivl[o + j, 0]
                ivl[o + j - k, 1] = ivl[o + j, 1]
        if k > 0:
            n -= k
            cal[r, 2] = n
            i = first_after(ivl, o, n, s)
            if i > 0 and ivl[o + i - 1, 1] >= s:     # lies inside the interval that closed its gap
                if e > ivl[o + i - 1, 1]:
                    ivl[o + i - 1, 1] = e
                return
    for j in range(n, i, -1):
        ivl[o + j, 0] = ivl[o + j - 1, 0]
        ivl[o + j, 1] = ivl[o + j - 1, 1]
    ivl[o + i, 0] = s
    ivl[o + i, 1] = e
    cal[r, 2] = n + 1


def first_after(ivl, o, n, s):
    """Index of the first of the ``n`` intervals at ``o`` that starts after ``s`` (binary search)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if ivl[o + mid, 0] <= s:
            lo = mid + 1
        else:
            hi = mid
    return lo


def first_after_end(ivl, o, n, t):
    """Index of the first of the ``n`` intervals at ``o`` that ends after ``t`` (binary search)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if ivl[o + mid, 1] <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo


def record(rec, misc, r, s, e, label, aux):
    """A timeline row: resource, start, end (ps), label, aux, and the micro-batch and layer the caller set
    in ``misc[6]``, ``misc[7]`` before the stage (the Chrome trace's arguments)."""
    if rec.shape[0] == 0 or e <= s:
        return
    k = misc[2]
    if k < rec.shape[0]:
        rec[k, 0], rec[k, 1], rec[k, 2], rec[k, 3], rec[k, 4] = r, s, e, label, aux
        rec[k, 5], rec[k, 6] = misc[6], misc[7]
    misc[2] = k + 1


def take(st, r, ready, d, now, label, aux):
    """Book ``d`` ps on one resource at the earliest fit from ``ready``; returns the end."""
    s = cal_fit(st.cal, st.ivl, r, ready, d)
    cal_book(st.cal, st.ivl, st.S, r, s, d, now)
    record(st.rec, st.S, r, s, s + d, label, aux)
    return s + d


# ---------------------------------------------------------------------------------------- NoC
def path_links(tb, src, dst, out, base):
    """Write the link numbers from node ``src`` to ``dst`` into ``out[base:]``; return how many."""
    if tb.P[0].mesh_w > 0:
        W, H = tb.P[0].mesh_w, tb.P[0].mesh_h
        east, west, north = 0, (W - 1) * H, 2 * (W - 1) * H
        south = north + W * (H - 1)
        x, y, tx, ty = src % W, src // W, dst % W, dst // W
        k = 0
        while x != tx:
            if tx > x:
                out[base + k] = east + y * (W - 1) + x
                x += 1
            else:
                out[base + k] = west + y * (W - 1) + x - 1
                x -= 1
            k += 1
        while y != ty:
            if ty > y:
                out[base + k] = north + y * W + x
                y += 1
            else:
                out[base + k] = south + (y - 1) * W + x
                y -= 1
            k += 1
        return k
    p = tb.I[tb.P[0].pair_path + src * tb.P[0].N + dst]
    k = 0
    for j in range(tb.I[tb.P[0].path_ptr + p], tb.I[tb.P[0].path_ptr + p + 1]):
        out[base + k] = tb.I[tb.P[0].path_links + j]
        k += 1
    return k


def xfer(tb, st, src, dst, nbytes, ready, now, label, aux):
    """NoC message: links held ``bytes / bottleneck bandwidth`` from a common start; arrives
    ``hops x router latency`` after its last bit leaves. Returns the arrival time."""
    if src == dst or nbytes <= 0.0:
        return ready
    S, p0 = st.S, tb.P[0].o_path
    h = path_links(tb, src, dst, S, p0)
    bw = tb.F[tb.P[0].link_bw + S[p0]]
    e_bit = 0.0
    for j in range(h):
        if tb.F[tb.P[0].link_bw + S[p0 + j]] < bw:
            bw = tb.F[tb.P[0].link_bw + S[p0 + j]]
        e_bit += tb.F[tb.P[0].link_pj + S[p0 + j]]
    ser = sat_ps(nbytes * 8000.0 / bw + 0.5)
    t = ready
    while True:
        t0 = t
        for j in range(h):
            t = cal_fit(st.cal, st.ivl, tb.P[0].r_link0 + S[p0 + j], t, ser)
        if t == t0:
            break
    bits = nbytes * 8.0
    for j in range(h):
        cal_book(st.cal, st.ivl, S, tb.P[0].r_link0 + S[p0 + j], t, ser, now)
        record(st.rec, S, tb.P[0].r_link0 + S[p0 + j], t, t + ser, label, aux)
        st.C[tb.P[0].o_link_bits + S[p0 + j]] += bits
    st.C[C_BITHOPS] += bits * h
    st.C[C_ROUTER_BITS] += bits * (h + 1)
    st.C[C_NOC_PJ] += bits * e_bit
    return t + ser + sat_ps(h * tb.P[0].router_ps + 0.5)


# ---------------------------------------------------------------------------------------- digital
def dram_ns(tb, nbytes):
    """Stream time of ``nbytes`` from DRAM to the SIMD node: latency + bytes / min(DRAM, path) + hops."""
    return tb.P[0].dram_lat_ns + nbytes * 8.0 / tb.P[0].dram_stream_gbps + tb.P[0].dram_hops_ns


def route_fit(tb, st, ch, t, d):
    """Earliest common start ``>= t`` on DRAM channel ``ch`` and the DRAM route's links for ``d``."""
    while True:
        t0 = t
        t = cal_fit(st.cal, st.ivl, tb.P[0].r_dram0 + ch, t, d)
        for j in range(tb.P[0].dram_route_n):
            t = cal_fit(st.cal, st.ivl, tb.P[0].r_link0 + tb.I[tb.P[0].dram_route + j], t, d)
        if t == t0:
            return t


def route_book(tb, st, ch, s, d, nbytes, now, label, aux):
    cal_book(st.cal, st.ivl, st.S, tb.P[0].r_dram0 + ch, s, d, now)
    record(st.rec, st.S, tb.P[0].r_dram0 + ch, s, s + d, label, aux)
    h = tb.P[0].dram_route_n
    for j in range(h):
        cal_book(st.cal, st.ivl, st.S, tb.P[0].r_link0 + tb.I[tb.P[0].dram_route + j], s, d, now)
        record(st.rec, st.S, tb.P[0].r_link0 + tb.I[tb.P[0].dram_route + j], s, s + d, label, aux)
        st.C[tb.P[0].o_link_bits + tb.I[tb.P[0].dram_route + j]] += nbytes * 8.0
    st.C[C_DRAM] += nbytes
    st.C[tb.P[0].o_dram_bytes + ch] += nbytes
    if h > 0:
        bits = nbytes * 8.0
        st.C[C_BITHOPS] += bits * h
        st.C[C_ROUTER_BITS] += bits * (h + 1)
        st.C[C_NOC_PJ] += bits * tb.P[0].dram_route_pj


def simd_op(tb, st, ready, compute, dram_bytes, prefetchable, now, label, aux):
    """A gang operation on all SIMD cores for ``compute`` ps once its input is ready at ``ready``.
    Its weights (``dram_bytes``, if any) stream from DRAM on a channel and the DRAM route (see the
    module docstring): the SIMD is booked for exactly ``compute`` in the earliest free gap starting
    at ``s >= max(ready, arrive - compute)`` (``arrive``: the last byte on chip), never for the wait."""
    rs = tb.P[0].r_simd
    if dram_bytes <= 0.0:
        return take(st, rs, ready, compute, now, label, aux)
    d = ps(dram_bytes * 8.0 / tb.P[0].dram_stream_gbps)
    staged = prefetchable and tb.P[0].prefetch != 0 and dram_bytes <= tb.P[0].staging_half_bytes
    if staged:
        floor = now if now > st.S[8 + 1] else st.S[8 + 1]      # the half this stream fills is free again
    else:
        floor = ready
    best, best_ch = np.int64(-1), np.int64(0)
    for ch in range(tb.P[0].n_dram):
        t = route_fit(tb, st, ch, floor, d)
        if best < 0 or t < best:
            best, best_ch = t, ch
    route_book(tb, st, best_ch, best, d, dram_bytes, now, label, aux)
    arrive = best + ps(dram_ns(tb, dram_bytes))
    lo = arrive - compute
    if lo < ready:
        lo = ready
    end = take(st, rs, lo, compute, now, label, aux)
    if staged:
        st.S[8 + 1] = st.S[8 + 0]                               # the op ends: its half is free again
        st.S[8 + 0] = end
    return end


def vec(tb, st, ready, n_ops, now, label, aux):
    st.C[C_VEC] += n_ops
    return take(st, tb.P[0].r_simd, ready, ps(n_ops / tb.P[0].vec_rate), now, label, aux)


def gemm_cost(tb, st, mi, n):
    """Count a digital GEMM's actions; write (duration on chip, DRAM bytes) to ``st.C[o_fbuf:o_fbuf + 2]``.
    On chip: MACs at the SIMD rate or activations (and SRAM-resident weights) at the SRAM bandwidth,
    whichever is slower; weights streamed from DRAM are :func:`simd_op`'s concern."""
    out, o = st.C, tb.P[0].o_fbuf
    params = tb.I[tb.P[0].m_params + mi]
    macs = n * params
    wbytes = params * tb.P[0].wbits / 8.0
    act = n * (tb.I[tb.P[0].m_in + mi] + tb.I[tb.P[0].m_out + mi]) * tb.P[0].act_bytes
    t_mac = macs / tb.P[0].mac_rate
    t_act = act * 8.0 / tb.P[0].sram_gbps
    st.C[C_MACS] += macs
    st.C[C_SRAM] += act
    if tb.I[tb.P[0].m_module + mi] == MOD_EXPERT:
        st.C[C_EXP_MACS_D] += macs
        st.C[C_EXP_WBYTES] += wbytes
    if tb.I[tb.P[0].m_resident + mi]:
        st.C[C_SRAM] += wbytes
        t_w = wbytes * 8.0 / tb.P[0].sram_gbps
        out[o], out[o + 1] = ps(max(t_mac, t_w, t_act)), 0.0
        return
    out[o], out[o + 1] = ps(max(t_mac, t_act)), wbytes


def gemm(tb, st, ready, mi, n, now):
    gemm_cost(tb, st, mi, n)
    o = tb.P[0].o_fbuf
    return simd_op(tb, st, ready, np.int64(st.C[o]), st.C[o + 1], PREFETCH, now, mi, AUX_NONE)


def digital_chain(tb, st, ready, g, u, d, n, now):
    """Gate, up, activation and down back to back on the SIMD gang: one booking."""
    dram, comp = 0.0, np.int64(0)
    for mi in (g, u, d):
        gemm_cost(tb, st, mi, n)
        o = tb.P[0].o_fbuf
        comp += np.int64(st.C[o])
        dram += st.C[o + 1]
    act_ops = n * tb.I[tb.P[0].m_out + g] * SWIGLU_OPS
    st.C[C_VEC] += act_ops
    a = ps(act_ops / tb.P[0].vec_rate)
    return simd_op(tb, st, ready, comp + a, dram, PREFETCH, now, g, AUX_CHAIN)


# ---------------------------------------------------------------------------------------- analog
def ld_op(tb, st, node, ready, n_ops, now, label, aux):
    st.C[C_LD] += n_ops
    return take(st, tb.P[0].r_ld0 + node, ready, ps(n_ops / tb.P[0].ld_rate), now, label, aux)


def block_width(total, size, c):
    w = total - c * size
    return size if w > size else w


def analog_run(tb, st, mi, n, role, now):
    """Slots of matrix ``mi`` on ``n`` vectors, inputs at their nodes at ``st.mn_ready``; writes each
    column block's (ready time, node) to ``st.out_t[role]``, ``st.out_node[role]``."""
    k = n - 1
    s0, s1 = tb.I[tb.P[0].s_ptr + mi], tb.I[tb.P[0].s_ptr + mi + 1]
    m0 = tb.I[tb.P[0].mn_ptr + mi]
    e0, e1 = tb.I[tb.P[0].cbn_ptr + mi], tb.I[tb.P[0].cbn_ptr + mi + 1]
    for e in range(e1 - e0):
        st.S[tb.P[0].o_cbn_t + e] = 0
    for s in range(s0, s1):
        d = tb.I[tb.P[0].s_mvm + s] + k * tb.I[tb.P[0].s_ii + s]
        end = take(st, tb.I[tb.P[0].s_tile + s], st.S[tb.P[0].o_mn_ready + tb.I[tb.P[0].s_mn + s] - m0], d, now, mi, AUX_NONE)
        e = tb.I[tb.P[0].s_cbn + s] - e0
        if end > st.S[tb.P[0].o_cbn_t + e]:
            st.S[tb.P[0].o_cbn_t + e] = end
    st.C[C_DAC] += n * tb.F[tb.P[0].m_dac + mi]
    st.C[C_ADC] += n * tb.F[tb.P[0].m_adc + mi]
    st.C[C_CELLS] += n * tb.F[tb.P[0].m_cells + mi]
    if tb.I[tb.P[0].m_module + mi] == MOD_EXPERT:
        st.C[C_EXP_MACS_A] += n * tb.I[tb.P[0].m_params + mi]
    ncb, out_f, cols = tb.I[tb.P[0].m_cb + mi], tb.I[tb.P[0].m_out + mi], tb.P[0].cols
    if tb.P[0].ld_rate > 0.0:
        for c in range(ncb):
            st.S[tb.P[0].o_out_t + role * tb.P[0].max_cb + c] = 0
        for e in range(e1 - e0):
            c, node, kk = tb.I[tb.P[0].cbn_cb + e0 + e], tb.I[tb.P[0].cbn_node + e0 + e], tb.I[tb.P[0].cbn_k + e0 + e]
            w = block_width(out_f, cols, c)
            t = st.S[tb.P[0].o_cbn_t + e]
            if kk > 1:
                t = ld_op(tb, st, node, t, (kk - 1) * n * w * ADD_OPS, now, mi, AUX_NONE)
            site = tb.I[tb.P[0].cb_site + tb.I[tb.P[0].cb_ptr + mi] + c]
            t = xfer(tb, st, node, site, n * w * tb.P[0].psum_bytes, t, now, L_PARTIALS, mi)
            if t > st.S[tb.P[0].o_out_t + role * tb.P[0].max_cb + c]:
                st.S[tb.P[0].o_out_t + role * tb.P[0].max_cb + c] = t
        for c in range(ncb):
            site = tb.I[tb.P[0].cb_site + tb.I[tb.P[0].cb_ptr + mi] + c]
            m = tb.I[tb.P[0].cb_nodes + tb.I[tb.P[0].cb_ptr + mi] + c]
            t = st.S[tb.P[0].o_out_t + role * tb.P[0].max_cb + c]
            if m > 1:
                t = ld_op(tb, st, site, t, (m - 1) * n * block_width(out_f, cols, c) * ADD_OPS, now, mi, AUX_NONE)
            st.S[tb.P[0].o_out_t + role * tb.P[0].max_cb + c] = t
            st.S[tb.P[0].o_out_node + role * tb.P[0].max_cb + c] = site
        return
    t_all = np.int64(0)
    for e in range(e1 - e0):
        c, node, kk = tb.I[tb.P[0].cbn_cb + e0 + e], tb.I[tb.P[0].cbn_node + e0 + e], tb.I[tb.P[0].cbn_k + e0 + e]
        w = block_width(out_f, cols, c)
        t = xfer(tb, st, node, tb.P[0].simd_node, kk * n * w * tb.P[0].psum_bytes, st.S[tb.P[0].o_cbn_t + e], now, L_PARTIALS, mi)
        if t > t_all:
            t_all = t
    if tb.I[tb.P[0].m_rb + mi] > 1:
        t_all = vec(tb, st, t_all, n * out_f * (tb.I[tb.P[0].m_rb + mi] - 1) * ADD_OPS, now, L_REDUCE, mi)
    for c in range(ncb):
        st.S[tb.P[0].o_out_t + role * tb.P[0].max_cb + c] = t_all
        st.S[tb.P[0].o_out_node + role * tb.P[0].max_cb + c] = tb.P[0].simd_node


def feed_from(tb, st, mi, n, node, ready, now, label):
    """Send matrix ``mi``'s input (all at ``node`` at ``ready``) to every node holding its slots."""
    m0, m1 = tb.I[tb.P[0].mn_ptr + mi], tb.I[tb.P[0].mn_ptr + mi + 1]
    for j in range(m0, m1):
        st.S[tb.P[0].o_mn_ready + j - m0] = xfer(tb, st, node, tb.I[tb.P[0].mn_node + j], n * tb.I[tb.P[0].mn_rows + j] * tb.P[0].act_bytes, ready, now,
                                   label, mi)


def gather_to_simd(tb, st, mi, n, role):
    """Queue every column block's output of ``mi`` for the SIMD node, one message per node (``flush_to_simd``)."""
    for c in range(tb.I[tb.P[0].m_cb + mi]):
        node = st.S[tb.P[0].o_out_node + role * tb.P[0].max_cb + c]
        if st.C[tb.P[0].o_agg_b + node] == 0.0:
            st.S[tb.P[0].o_agg_list + st.S[3]] = node
            st.S[3] += 1
            st.S[tb.P[0].o_agg_t + node] = 0
        st.C[tb.P[0].o_agg_b + node] += n * block_width(tb.I[tb.P[0].m_out + mi], tb.P[0].cols, c) * tb.P[0].act_bytes
        if st.S[tb.P[0].o_out_t + role * tb.P[0].max_cb + c] > st.S[tb.P[0].o_agg_t + node]:
            st.S[tb.P[0].o_agg_t + node] = st.S[tb.P[0].o_out_t + role * tb.P[0].max_cb + c]


def flush_to_simd(tb, st, ready, now, label, aux):
    end = ready
    for i in range(st.S[3]):
        node = st.S[tb.P[0].o_agg_list + i]
        t = xfer(tb, st, node, tb.P[0].simd_node, st.C[tb.P[0].o_agg_b + node], st.S[tb.P[0].o_agg_t + node], now, label, aux)
        if t > end:
            end = t
        st.C[tb.P[0].o_agg_b + node] = 0.0
    st.S[3] = 0
    return end


def matrix_op(tb, st, ready, mi, n, now):
    """Any matrix with its input at the SIMD node; returns when the output is back there."""
    if not tb.I[tb.P[0].m_analog + mi]:
        return gemm(tb, st, ready, mi, n, now)
    feed_from(tb, st, mi, n, tb.P[0].simd_node, ready, now, L_INPUT)
    analog_run(tb, st, mi, n, ROLE_OUT, now)
    gather_to_simd(tb, st, mi, n, ROLE_OUT)
    return flush_to_simd(tb, st, ready, now, L_OUTPUT, mi)


def set_chain_inputs(tb, st, mi):
    """Inputs of gate or up at their nodes: the dispatch arrival of each node's dispatch entry."""
    m0, m1 = tb.I[tb.P[0].mn_ptr + mi], tb.I[tb.P[0].mn_ptr + mi + 1]
    for j in range(m0, m1):
        st.S[tb.P[0].o_mn_ready + j - m0] = st.S[tb.P[0].o_disp_t + tb.I[tb.P[0].mn_disp + j]]


def analog_chain(tb, st, g, u, d, n, now):
    """Analog gate|up -> activation -> down; gate and up inputs set from ``st.disp_t``. Down's
    column-block outputs end in ``st.out_t[2]`` / ``st.out_node[2]``."""
    set_chain_inputs(tb, st, g)
    analog_run(tb, st, g, n, ROLE_GATE, now)
    set_chain_inputs(tb, st, u)
    analog_run(tb, st, u, n, ROLE_UP, now)
    width, cols = tb.I[tb.P[0].m_out + g], tb.P[0].cols
    ncb = tb.I[tb.P[0].m_cb + g]
    if tb.P[0].ld_rate > 0.0:
        for c in range(ncb):
            w = block_width(width, cols, c)
            site = st.S[tb.P[0].o_out_node + 0 * tb.P[0].max_cb + c]
            tu = xfer(tb, st, st.S[tb.P[0].o_out_node + 1 * tb.P[0].max_cb + c], site, n * w * tb.P[0].act_bytes, st.S[tb.P[0].o_out_t + 1 * tb.P[0].max_cb + c], now, L_UP_OUT, u)
            t = st.S[tb.P[0].o_out_t + 0 * tb.P[0].max_cb + c] if st.S[tb.P[0].o_out_t + 0 * tb.P[0].max_cb + c] > tu else tu
            st.S[tb.P[0].o_out_t + 0 * tb.P[0].max_cb + c] = ld_op(tb, st, site, t, n * w * SWIGLU_OPS, now, L_SWIGLU, g)
    else:
        t = np.int64(0)
        for c in range(ncb):
            t = max(t, st.S[tb.P[0].o_out_t + 0 * tb.P[0].max_cb + c], st.S[tb.P[0].o_out_t + 1 * tb.P[0].max_cb + c])
        t = vec(tb, st, t, n * width * SWIGLU_OPS, now, L_SWIGLU, g)
        for c in range(ncb):
            st.S[tb.P[0].o_out_t + 0 * tb.P[0].max_cb + c] = t
            st.S[tb.P[0].o_out_node + 0 * tb.P[0].max_cb + c] = tb.P[0].simd_node
    # the activation's column block c holds down's input rows [c * cols, ...): send each down node its rows
    m0, m1 = tb.I[tb.P[0].mn_ptr + d], tb.I[tb.P[0].mn_ptr + d + 1]
    rows = tb.P[0].rows
    for j in range(m0, m1):
        node = tb.I[tb.P[0].mn_node + j]
        t_in = np.int64(0)
        for c in range(ncb):
            lo = c * cols
            hi = min(lo + cols, width)
            ov = 0
            for q in range(tb.I[tb.P[0].mnr_ptr + j], tb.I[tb.P[0].mnr_ptr + j + 1]):
                rb = tb.I[tb.P[0].mnr_rb + q]
                a = max(lo, rb * rows)
                b = min(hi, min((rb + 1) * rows, width))
                if b > a:
                    ov += b - a
            if ov > 0:
                t = xfer(tb, st, st.S[tb.P[0].o_out_node + 0 * tb.P[0].max_cb + c], node, n * ov * tb.P[0].act_bytes, st.S[tb.P[0].o_out_t + 0 * tb.P[0].max_cb + c], now, L_ACTIVATION, d)
                if t > t_in:
                    t_in = t
        st.S[tb.P[0].o_mn_ready + j - m0] = t_in
    analog_run(tb, st, d, n, ROLE_OUT, now)


def ffn_chain(tb, st, ready, g, u, d, n, now):
    """SwiGLU FFN (shared expert or dense FFN) on ``n`` tokens from and back to the SIMD node."""
    if not tb.I[tb.P[0].m_analog + g]:
        return digital_chain(tb, st, ready, g, u, d, n, now)
    grp = tb.I[tb.P[0].mn_group + tb.I[tb.P[0].mn_ptr + g]]
    for q in range(tb.I[tb.P[0].gp_ptr + grp], tb.I[tb.P[0].gp_ptr + grp + 1]):
        st.S[tb.P[0].o_disp_t + q] = xfer(tb, st, tb.P[0].simd_node, tb.I[tb.P[0].gp_node + q], n * tb.I[tb.P[0].gp_rows + q] * tb.P[0].act_bytes, ready, now,
                            L_DISPATCH, g)
    analog_chain(tb, st, g, u, d, n, now)
    gather_to_simd(tb, st, d, n, ROLE_OUT)
    return flush_to_simd(tb, st, ready, now, L_OUTPUT, d)


def routed_experts(tb, st, pl, ready, b, layer, now):
    """Every active routed expert of micro-batch ``b`` at ``layer``, in expert order. Analog experts:
    one dispatch message per node carrying each token once with the rows that node's slots need, and
    one combine message per node holding output blocks. Digital experts run on the SIMD gang."""
    E = tb.P[0].E
    grp = tb.I[tb.P[0].l_group + layer]
    end = ready
    if grp >= 0:
        q0, q1 = tb.I[tb.P[0].gp_ptr + grp], tb.I[tb.P[0].gp_ptr + grp + 1]
        for q in range(q0, q1):
            st.S[tb.P[0].o_disp_n + q] = 0
            st.S[tb.P[0].o_disp_stamp + q] = -1
        a, z = pl.mb_start[b], pl.mb_start[b + 1]
        K = pl.experts.shape[2]
        for i in range(a, z):
            for kk in range(K):
                e = pl.experts[i, layer, kk]
                if e < 0:
                    continue
                for p in range(tb.I[tb.P[0].ex_ptr + layer * E + e], tb.I[tb.P[0].ex_ptr + layer * E + e + 1]):
                    q = tb.I[tb.P[0].ex_q + p]
                    if st.S[tb.P[0].o_disp_stamp + q] != i:
                        st.S[tb.P[0].o_disp_stamp + q] = i
                        st.S[tb.P[0].o_disp_n + q] += 1
        for q in range(q0, q1):
            if st.S[tb.P[0].o_disp_n + q] > 0:
                st.S[tb.P[0].o_disp_t + q] = xfer(tb, st, tb.P[0].simd_node, tb.I[tb.P[0].gp_node + q], st.S[tb.P[0].o_disp_n + q] * tb.I[tb.P[0].gp_rows + q] * tb.P[0].act_bytes,
                                    ready, now, L_DISPATCH, layer)
    for e in range(E):
        n = np.int64(pl.counts[b, layer, e])
        if n == 0:
            continue
        g, u, d = tb.I[tb.P[0].ex_g + layer * tb.P[0].E + e], tb.I[tb.P[0].ex_u + layer * tb.P[0].E + e], tb.I[tb.P[0].ex_d + layer * tb.P[0].E + e]
        if tb.I[tb.P[0].m_analog + g]:
            analog_chain(tb, st, g, u, d, n, now)
            gather_to_simd(tb, st, d, n, ROLE_OUT)
        else:
            t = digital_chain(tb, st, ready, g, u, d, n, now)
            if t > end:
                end = t
    return flush_to_simd(tb, st, end, now, L_COMBINE_VEC, layer)


# ---------------------------------------------------------------------------------------- stages
def attention_stage(tb, st, pl, ready, b, layer, n, now):
    H = tb.P[0].H
    t = vec(tb, st, ready, n * H * NORM_OPS, now, L_NORM, layer)
    a0, a1 = tb.I[tb.P[0].la_ptr + layer], tb.I[tb.P[0].la_ptr + layer + 1]
    first = t
    for j in range(a0, a1):
        if tb.I[tb.P[0].la_first + j]:
            x = matrix_op(tb, st, t, tb.I[tb.P[0].la_mat + j], n, now)
            if x > first:
                first = x
    t = first
    second = t
    for j in range(a0, a1):
        if not tb.I[tb.P[0].la_first + j]:
            x = matrix_op(tb, st, t, tb.I[tb.P[0].la_mat + j], n, now)
            if x > second:
                second = x
    t = second
    ctx = pl.context_sum[b]
    macs = tb.P[0].attn_macs_per_ctx * ctx
    soft = tb.P[0].num_heads * ctx * SOFTMAX_OPS
    kv = tb.P[0].kv_per_token * (pl.kv_prior[b] + n) * tb.P[0].act_bytes
    st.C[C_MACS] += macs
    st.C[C_VEC] += soft
    t = simd_op(tb, st, t, ps(macs / tb.P[0].mac_rate + soft / tb.P[0].vec_rate), kv, NO_PREFETCH, now,
                L_ATTN_CORE, layer)
    t = matrix_op(tb, st, t, tb.I[tb.P[0].l_oproj + layer], n, now)
    return vec(tb, st, t, n * H * RESIDUAL_OPS, now, L_RESIDUAL, layer)


def ffn_stage(tb, st, pl, ready, b, layer, n, now):
    H, E = tb.P[0].H, tb.P[0].E
    t = vec(tb, st, ready, n * H * NORM_OPS, now, L_NORM, layer)
    if tb.I[tb.P[0].l_router + layer] < 0:
        st.S[4] = t
        t = ffn_chain(tb, st, t, tb.I[tb.P[0].l_dense + layer * 3 + 0], tb.I[tb.P[0].l_dense + layer * 3 + 1], tb.I[tb.P[0].l_dense + layer * 3 + 2], n, now)
        st.S[5] = t
        return vec(tb, st, t, n * H * RESIDUAL_OPS, now, L_RESIDUAL, layer)
    tr = matrix_op(tb, st, t, tb.I[tb.P[0].l_router + layer], n, now)
    tr = vec(tb, st, tr, n * E * (SOFTMAX_OPS + TOPK_OPS), now, L_ROUTER_SOFTMAX, layer)
    st.S[4] = tr
    end = tr
    if tb.I[tb.P[0].l_shared + layer * 4 + 0] >= 0:
        x = ffn_chain(tb, st, t, tb.I[tb.P[0].l_shared + layer * 4 + 0], tb.I[tb.P[0].l_shared + layer * 4 + 1], tb.I[tb.P[0].l_shared + layer * 4 + 2], n, now)
        end = max(end, x)
        if tb.I[tb.P[0].l_shared + layer * 4 + 3] >= 0:
            end = max(end, matrix_op(tb, st, t, tb.I[tb.P[0].l_shared + layer * 4 + 3], n, now))
    end = max(end, routed_experts(tb, st, pl, tr, b, layer, now))
    st.S[5] = end
    combine = n * tb.P[0].top_k * H * COMBINE_OPS + n * H * RESIDUAL_OPS
    return vec(tb, st, end, combine, now, L_COMBINE_VEC, layer)


def lm_head_stage(tb, st, ready, n, now):
    return matrix_op(tb, st, ready, tb.P[0].lm_head, n, now)
