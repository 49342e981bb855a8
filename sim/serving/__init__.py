"""Serving under load (DESIGN §9): the iteration scheduler, request-level metrics and the SLO search.

``scheduler`` is a SimPy process that decides each iteration's tokens from the waiting queue, the
running sequences and the KV-cache occupancy, as vLLM's scheduler does, and hands the micro-batch to
an executor (the engine's :class:`sim.engine.iteration.IterationRunner`, or a fixed-time one in tests):
it knows no physics, and the engine knows no queue. ``metrics`` turns the per-request records into
TTFT, TPOT, end-to-end latency, queueing delay, throughput, SLO attainment and goodput over a measured
window. ``search`` finds the highest request rate a design sustains under a TTFT/TPOT SLO. The package
imports ``arch`` and ``workloads`` only (``search`` runs whatever function it is given).
"""
