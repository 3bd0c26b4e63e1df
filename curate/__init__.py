"""diffcurate curation: CLI, run config, store, Ray actors, loop."""
