"""The configuration (config/), the parent process (pod/), and the training process: data, the
demo, model loading, checkpoints, progress callbacks and the per-rank script (train.py)."""
