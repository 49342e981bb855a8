"""The functional side: a forward pass of the real model with each matrix exact, noisy or low-bit.

It reads a Hugging Face checkpoint one layer at a time, applies the noise model of ``arch.noise``
to every analog matrix per crossbar slot, and measures what a placement costs in accuracy. It may
import ``arch``, ``workloads`` and ``sim.placement`` (the same ``Placement`` the cost engine uses);
never the engine, the mapping, reports or the CLI.
"""
