"""`python -m curate` = the `curate` command."""

from curate.cli import main

main()
