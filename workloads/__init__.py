"""Workloads: what the chip runs.

``shapes`` (model shapes from HF configs and presets), ``traces/`` (routing-trace formats, readers,
synthetic traces), ``checkpoints/`` (safetensors reading, per-expert statistics) and ``evaldata``
(token ids for accuracy evaluation). Imports only ``arch.errors`` from outside; never ``sim``.
"""
