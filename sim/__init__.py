"""Placement policies, mapping, the SimPy engine, metrics, command line, plots and reports."""
