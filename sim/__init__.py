"""The simulator: from a placement to priced results, in sub-packages that follow the data path.

Top level: ``placement`` (policies: which matrices are digital), ``mapping`` (analog matrices onto
tiles and the NoC), ``metrics`` (pricing counters), ``result`` (result files), ``api`` (one run from
Python) and ``sweep`` (many runs through an executor). Sub-packages: ``engine`` (work plan,
reservation calendars, the SimPy engine), ``functional`` (the noisy forward pass: what a placement
costs in accuracy), ``report`` (plots, markdown report, timeline export, from result files only) and
``cli`` (the ``hetmoe`` command). Layering, checked by ``tests/test_layout.py``: ``arch`` and
``workloads`` import nothing from ``sim``; ``sim.engine`` and ``sim.functional`` import only
``arch``, ``workloads`` and themselves (plus ``sim.placement`` for the functional side); ``sim.report``
never imports the engine, the mapping or the API; only ``sim.cli`` imports ``sim.cli``.
"""
