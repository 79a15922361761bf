"""Predictions during training: which samples (sampler), the model's answers (generator), how good
(scorer), when (callback), and where they go (writers)."""
