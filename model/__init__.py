"""diffcurate surrogate models, losses, metrics and training."""
