"""Training: datasets, sampling, models (APR, AlignedReID), losses and the trainer (PyTorch)."""
