"""Configuration, data, model loading and the per-rank training script."""
