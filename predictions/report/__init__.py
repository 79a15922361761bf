"""Predictions read back: the closing summary, a job's history across rounds (terminal and HTML),
where its rows come from, and `diagnose`."""
