"""Training with Ray Train: spec, plan, run, the per-worker loop, augmentation, metrics."""
