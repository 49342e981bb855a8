"""Workloads: model shapes, routing traces, synthetic traces, checkpoint statistics."""
