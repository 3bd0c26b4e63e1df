"""The bench scripts' command lines: one typed `--name` option per default, parsed with the script's docstring."""

from __future__ import annotations

import argparse


def options(doc: str, **defaults) -> argparse.Namespace:
    """Parse sys.argv into the given defaults' names; each option takes its default's type."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in defaults.items():
        ap.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    return ap.parse_args()
