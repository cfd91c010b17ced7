"""Figures of runs: image grids, traversals, reports."""
