"""The timing engine: work plan, reservation calendars, glue-operation counts, the SimPy engine.

``workplan`` turns a routing trace into per-(micro-batch, layer) work; ``calendar`` holds the
integer-picosecond reservation calendars of tiles, SIMD cores, links and DRAM channels; ``ops``
counts the vector operations of norms, softmax, activations and combines; ``simulator`` runs the
pipeline and returns counters and records. It may import ``arch``, ``workloads`` and its own
modules; it reads a ``sim.mapping.Mapping`` (type hints only) and never imports the API, reports or CLI.
"""
