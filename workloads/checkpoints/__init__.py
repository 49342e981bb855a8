"""Local safetensors checkpoints: tensor reading and per-expert statistics.

``tensors`` parses headers, indexes shards and reads one tensor at a time; ``stats`` computes the
MaxNNScore variants and router norms per (layer, expert) and caches them. Imports only
``arch.errors``, ``workloads.shapes`` and its own modules.
"""
