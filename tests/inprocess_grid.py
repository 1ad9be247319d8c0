"""The in-process grid moved to ``simulations/local_grid.py``; this name stays for the tests that import it."""

from simulations.local_grid import LocalGrid, server_identity, wire

__all__ = ["LocalGrid", "server_identity", "wire"]
