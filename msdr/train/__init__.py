"""Training: the shared loop, checkpoints, logs and the per-stage jobs."""
