"""The `curate` command line: the app, shared options, one module per command group."""
