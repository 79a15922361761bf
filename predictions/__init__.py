"""Predictions during training: when (callback), which samples (sampler), the round split over the
ranks (rounds), the model's answers (generator), how good (scorer, metrics); where rows go
(store/) and how they are read back (report/)."""
