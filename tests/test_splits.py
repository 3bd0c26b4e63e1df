"""The test split of a config is the same for every run seed and disjoint from everything a run trains on, even
where configurations recur (one source: a configuration is just a position), and pools redraw instead of
shrinking."""

from __future__ import annotations

import json

import numpy as np

from diffcurate.curate.loop.config import default_config
from diffcurate.curate.loop.rundir import RunPaths, init_run
from diffcurate.curate.loop.runner import Runner
from diffcurate.curate.loop.steps import GENERATE, INITIAL
from diffcurate.curate.store.lmdbstore import Store


def one_source_config(seed: int):
    """Tiny preset with a single source: the boundary family has ~4 x 28 positions, so 60 test samples per family
    and 60 initial + 30 val draws collide with the test split for any seed."""
    cfg = default_config("tiny")
    cfg.strata = [1, 1]
    cfg.seed = seed
    cfg.data.initial, cfg.data.val, cfg.data.pool = 60, 30, 200
    cfg.data.test_per_cell = 60
    cfg.ray.dashboard = False
    cfg.ray.workers = 1
    return cfg


def _splits(root) -> dict[str, set[str]]:
    with Store(RunPaths(root).store, readonly=True) as st:
        return {s: set(st.ids(s)) for s in ("train", "val", "test")}


def test_test_split_is_fixed_and_disjoint_under_forced_collisions(ray_cluster, tmp_path):
    seen, redrawn, pools = [], [], []
    for seed in (10, 11):
        root = tmp_path / f"seed{seed}"
        cfg = one_source_config(seed)
        init_run(root, cfg)
        runner = Runner(root, cfg, log=lambda _: None, show_progress=False)
        try:
            INITIAL.run(runner.ctx, 0)  # each step of a round is a function of its own
            GENERATE.run(runner.ctx, 1)
            made = json.loads(RunPaths(root).round(0).meta.read_text())
        finally:
            runner.close()
        splits = _splits(root)
        seen.append(splits)
        redrawn.append(made["redrawn"])
        with np.load(RunPaths(root).round(1).pool) as z:
            pools.append((z["ids"].tolist(), int(z["redrawn"])))
        # exact sizes: a train or val draw that equals a test configuration was redrawn, not dropped
        assert len(splits["train"]) == cfg.data.initial and len(splits["val"]) == cfg.data.val
        assert not splits["train"] & splits["test"] and not splits["val"] & splits["test"]
        assert not splits["train"] & splits["val"]
    # the collisions were real (else the test proves nothing) ...
    assert all(r["train"] + r["val"] > 0 for r in redrawn), redrawn
    assert all(r["test"] == 0 for r in redrawn)
    # ... and the test split is one set for both seeds
    assert seen[0]["test"] == seen[1]["test"] and len(seen[0]["test"]) > 100
    for (ids, n_redrawn), splits in zip(pools, seen, strict=True):
        held = splits["train"] | splits["val"] | splits["test"]
        assert len(ids) == 200 and not set(ids) & held and n_redrawn > 0
