"""Acquisition: the ranker's strategy and score registries, diversity, peers and hard-case mining."""
