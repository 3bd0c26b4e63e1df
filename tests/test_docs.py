"""The reference pages are generated from the code (tools/docs.py) and must be current; the names the CLI lists
without importing torch match the registries."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.docs import PAGES  # noqa: E402


def test_cli_and_config_pages_are_current():
    for name, make in PAGES.items():
        assert (ROOT / "docs" / name).read_text() == make(), f"docs/{name} is stale: run .venv/bin/python tools/docs.py"


def test_every_config_field_is_documented():
    from dataclasses import fields

    from diffcurate.curate.loop.config import AcquisitionConfig, DataConfig, RayConfig, RunConfig
    from diffcurate.model.nets import EDCNNConfig, UNetConfig
    from diffcurate.model.train import TrainConfig

    page = (ROOT / "docs" / "config.md").read_text()
    for cls in (RunConfig, DataConfig, AcquisitionConfig, RayConfig, TrainConfig, EDCNNConfig, UNetConfig):
        for f in fields(cls):
            if cls is RunConfig and f.name in ("data", "acquisition", "ray"):
                assert f"## [{f.name}]" in page
                continue
            row = next((line for line in page.splitlines() if line.startswith(f"| `{f.name}` |")), None)
            assert row is not None and not row.endswith("|  |"), f"{cls.__name__}.{f.name} has no meaning in config.md"


def test_estimator_names_in_help_match_the_registry():
    from diffcurate.curate.cli.estimate import ESTIMATOR_NAMES
    from diffcurate.model.estimators import ESTIMATORS

    assert set(ESTIMATOR_NAMES) == set(ESTIMATORS)
