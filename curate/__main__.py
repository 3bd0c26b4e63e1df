"""`python -m diffcurate.curate` = the `curate` command."""

from diffcurate.curate.cli.app import main

main()
