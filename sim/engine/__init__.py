"""The timing engine: work plan, glue-operation counts, the stage scheduler, the SimPy engine.

``workplan`` turns a routing trace into per-(micro-batch, layer) work; ``ops`` counts the vector
operations of norms, softmax, activations and combines; ``kernel`` lays out one stage of one
micro-batch on the integer-picosecond reservation calendars of tiles, local digital units, SIMD
cores, links and DRAM channels (``kernels`` loads it compiled or as its plain-Python reference);
``simulator`` builds the kernel's tables and runs the pipeline between stages on SimPy. It may import
``arch``, ``workloads`` and its own modules; it reads a ``sim.mapping.Mapping`` (type hints only) and
never imports the API, reports or CLI.
"""
