"""CLI command groups; each module registers its commands on curate.cli.app."""
