"""Plots, the markdown report and the Chrome-trace timeline export, drawn from result files only.

``plots`` draws every figure from result dictionaries, ``markdown`` writes ``report.md``,
``timeline`` writes trace-event JSON. It may import ``sim.result`` (file reading and number
formatting), ``arch.safeio`` (atomic writes) and matplotlib; never the engine, the mapping, the API or SimPy, so ``hetmoe plot``
redraws everything from a result folder.
"""
