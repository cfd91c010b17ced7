"""Evaluation: disentanglement, reconstruction and sample metrics."""
