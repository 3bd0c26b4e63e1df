"""The curation loop: the run directory and config, the round runner, report, estimators and guarded predict."""
