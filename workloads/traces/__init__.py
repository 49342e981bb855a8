"""Routing traces: the compact array format, readers of real routing logs, synthetic generators.

``format`` holds ``RoutingTrace`` and its ``.npz``/JSONL files; ``readers`` detects and validates
real logs (vLLM schemas, replay arrays) and drops warm-up batches; ``synthetic`` draws seeded traces
and fills unobserved layers. ``readers`` may import ``synthetic``; ``synthetic`` never imports
``readers``. Imports only ``arch.errors``, ``workloads.shapes`` and its own modules.
"""
