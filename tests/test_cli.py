"""The CLI edge: `solve`, `presets`, `samplers` and the store commands; bad input is one line, exit 2, no output."""

from __future__ import annotations

import json

import lmdb
import numpy as np
import pytest

from diffcurate.curate.cluster.generate import generate
from diffcurate.curate.store.arrays import load_arrays, save_arrays
from diffcurate.solvers.problem import PRESETS, Configs
from diffcurate.solvers.registry import solve

TINY = PRESETS["tiny"].physics


def test_solve_count_and_input_round_trip(cli, tmp_path):
    out = tmp_path / "a.npz"
    code, _, err = cli("solve", "--out", out, "--count", "12", "--seed", "3", "--preset", "tiny", "--dtype", "float64")
    assert code == 0, err
    d = load_arrays(out)
    assert d["x"].shape == d["y"].shape == (12, 32, 32) and d["y"].dtype == np.float64
    assert int(d["lattice"]) == 32 and str(d["source_model"]) == "fixed"
    cfg = Configs(d["centers"], d["values"], d["counts"])
    assert np.abs(solve(TINY, cfg, "reference") - d["y"]).max() < 1e-8
    # --input: the configurations of a file, the physics from the options
    out2 = tmp_path / "b.h5"
    code, _, err = cli("solve", "--out", out2, "--input", out, "--preset", "tiny", "--solver", "reference")
    assert code == 0, err
    assert np.abs(load_arrays(out2)["y"] - d["y"]).max() < 1e-6  # float32 output by default


def _bad_input(tmp_path, centers, values, counts):
    path = tmp_path / "bad.npz"
    np.savez(path, centers=np.array(centers), values=np.array(values), counts=np.array(counts))
    return path


@pytest.mark.parametrize(
    "case,msg",
    [
        (([[[1, 10]]], [[1.0]], [1]), "not fully inside"),
        (([[[10, 10]]], [[1.0]], [0]), "at least 1"),
        (([[[10, 10]]], [[1.5]], [1]), "[0, 1]"),
        (([[[10, 10]]], [[1.0, 0.2]], [1]), "shape"),
    ],
)
def test_solve_bad_input_file(cli, tmp_path, case, msg):
    out = tmp_path / "out.npz"
    code, stdout, err = cli("solve", "--out", out, "--input", _bad_input(tmp_path, *case), "--preset", "tiny")
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--count", "4", "--preset", "huge"], "unknown preset"),
        (["--input", "/nonexistent.npz"], "no such file"),
        (["--count", "4", "--input", "x.npz"], "either --input"),
        (["--count", "4", "--solver", "magic"], "unknown solver"),
        (["--count", "4", "--dtype", "float16"], "unknown dtype"),
        (["--count", "4", "--device", "tpu"], "unknown device"),
        (["--count", "4", "--sources", "5-2"], "--sources"),
        (["--count", "4", "--radius", "40"], "does not fit"),
    ],
)
def test_solve_bad_options(cli, tmp_path, args, msg):
    out = tmp_path / "out.npz"
    code, _, err = cli("solve", "--out", out, "--preset", "tiny", *args)
    assert code == 2 and msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "args, msg",
    [
        (["generate", "--store", "s", "--count", "3", "--no-such-flag"], "No such option: --no-such-flag"),
        (["generate", "--store", "s", "--count", "abc"], "Invalid value for '--count'"),
        (["generate", "--count", "3"], "Missing option '--store'"),
        (["no-such-command"], "No such command"),
    ],
)
def test_usage_errors_are_one_line(cli, tmp_path, args, msg):
    """typer's own (vendored) click errors are not click.ClickException: they once escaped as a traceback."""
    code, _, err = cli(*[str(tmp_path / "s") if a == "s" else a for a in args])
    assert code == 2 and msg in err and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("error: ") and "--help" in err
    assert not (tmp_path / "s").exists()


def test_bare_curate_shows_help_without_an_error_line(cli):
    code, out, err = cli()
    assert code == 2 and "error" not in err and "Traceback" not in err


def test_solve_refuses_to_overwrite_and_unknown_extension(cli, tmp_path):
    out = tmp_path / "a.npz"
    out.write_text("keep me")
    code, _, err = cli("solve", "--out", out, "--count", "2", "--preset", "tiny")
    assert code == 2 and "exists" in err and out.read_text() == "keep me"
    code, _, err = cli("solve", "--out", tmp_path / "a.txt", "--count", "2", "--preset", "tiny")
    assert code == 2 and not (tmp_path / "a.txt").exists()


def test_presets_and_samplers_list_everything(cli):
    import diffcurate.curate.progress as progress

    with progress.console.capture() as cap:
        code, _, _ = cli("presets")
    assert code == 0 and all(n in cap.get() for n in ("paper", "small", "tiny", "512", "64", "32"))
    with progress.console.capture() as cap:
        cli("samplers")
    assert all(n in cap.get() for n in ("uniform", "clustered", "boundary", "overlap", "sparse-values", "mixed"))


def test_cli_and_store_side_import_without_torch():
    """The CLI's start-up, the store, generation's driver and the generator actors need no torch or scipy
    (importing them costs ~2 s: `curate --help` takes about 3 s with them, 0.3 s without)."""
    import subprocess
    import sys

    code = (
        "import sys; import diffcurate.curate.cli.app; "
        "import diffcurate.curate.cluster.generate, diffcurate.curate.cluster.actors, diffcurate.curate.store.export; "
        "import diffcurate.curate.store.lmdbstore, diffcurate.solvers.sampling, diffcurate.solvers; "
        "print(sorted(m for m in ('torch', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # and the package still hands out its solvers on demand
    import diffcurate.solvers as solvers

    assert {"fast", "reference"} <= set(solvers.SOLVERS)


def test_store_commands(cli, ray_cluster, tmp_path):
    store = tmp_path / "s"
    generate(store, TINY, 30, seed=1, sources=(1, 10), show_progress=False)
    code, out, _ = cli("info", "--store", store, "--json")
    info = json.loads(out)
    assert code == 0 and info["count"] == 30 and info["by_split"] == {"train": 30}
    assert set(info) >= {
        "physics",
        "schema_version",
        "count",
        "by_split",
        "by_stratum",
        "by_round",
        "by_sampler",
        "bytes",
    }
    code, out, _ = cli("verify", "--store", store, "--resolve", "5", "--json")
    assert code == 0 and json.loads(out)["resolved"] == 5 and json.loads(out)["problems"] == []
    exp = tmp_path / "e.npz"
    assert cli("export", "--store", store, "--out", exp)[0] == 0
    card = json.loads((tmp_path / "e.npz.card.json").read_text())
    assert [(h["kind"], h["count"], h["added"]) for h in card["store_history"]] == [("generate", 30, 30)]
    assert "How the store was filled" in (tmp_path / "e.npz.card.md").read_text()
    code, _, err = cli("export", "--store", store, "--out", exp)
    assert code == 2 and "--force" in err
    code, _, _ = cli("import", "--store", tmp_path / "s2", "--input", exp)
    info2 = json.loads(cli("info", "--store", tmp_path / "s2", "--json")[1])
    assert code == 0 and info2["count"] == 30
    assert [(h["kind"], h["added"], h["command"].split()[:2]) for h in info2["history"]] == [
        ("import", 30, ["curate", "import"])
    ]
    # other physics refused by import
    other = tmp_path / "other.npz"
    d = load_arrays(exp)
    save_arrays(
        other,
        PRESETS["small"].physics,
        Configs(d["centers"] + 10, d["values"], d["counts"]),
        y=np.zeros((30, 64, 64), np.float32),
    )
    code, _, err = cli("import", "--store", store, "--input", other)
    assert code == 2 and "physics" in err
    # a corrupted record: verify exits 1
    env = lmdb.open(str(store), max_dbs=4)
    db = env.open_db(b"samples")
    with env.begin(write=True) as txn:
        key, val = next(iter(txn.cursor(db=db)))
        bad = bytearray(val)
        bad[len(bad) // 2] ^= 0xFF
        txn.put(key, bytes(bad), db=db)
    env.close()
    code, out, err = cli("verify", "--store", store, "--json")
    assert code == 1 and len(json.loads(out)["problems"]) >= 1


def test_a_config_without_its_tables_is_one_line(cli, tmp_path):
    """A run config missing [physics] (or the other required tables) is named in one line, exit 2, no run made."""
    bad = tmp_path / "bad.toml"
    bad.write_text('preset = "tiny"\nsources = [1, 3]\n')
    code, _, err = cli("init", tmp_path / "r", "--config", bad)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "missing [physics]" in err, err
    assert not (tmp_path / "r").exists()


def test_a_config_naming_min_steps_at_the_top_reads_as_round_steps(tmp_path):
    """config.toml files written before the run's floor was named `round_steps` load unchanged in meaning, and the
    trainer's own `train.min_steps` (the plateau floor) is left as it is."""
    from diffcurate.curate.loop.config import RunConfig, default_config
    from diffcurate.curate.loop.rundir import round_train_config

    d = default_config("tiny").to_dict()
    d["train"]["min_steps"] = 7
    d.pop("round_steps")
    cfg = RunConfig.from_dict({**d, "min_steps": 640})
    assert cfg.round_steps == 640 and cfg.train.min_steps == 7
    # 640 steps at batch 16 on 64 samples: 160 epochs, above the preset's 10
    assert round_train_config(cfg, 0, 64).epochs == 160
    assert "min_steps" not in cfg.to_dict() and cfg.to_dict()["round_steps"] == 640
    # and the strata as `sources`, and a strategy by its earlier name
    d["sources"] = d.pop("strata")
    old = RunConfig.from_dict({**d, "acquisition": {**d["acquisition"], "strategy": "uniform-per-count"}})
    assert old.strata == cfg.strata and old.acquisition.strategy == "uniform-per-stratum"


def test_a_round_started_before_round_steps_and_problem_were_named_continues(tmp_path):
    """A round folder's started record written with `min_steps` at the top and no `problem` key (as runs made
    before those names have it) counts as started under the same config; a real difference is still named."""
    from diffcurate.common.files import atomic_json
    from diffcurate.curate.loop.config import default_config
    from diffcurate.curate.loop.health import result_fields, stale_rounds
    from diffcurate.curate.loop.rundir import RunPaths, init_run

    cfg = default_config("tiny")
    init_run(tmp_path / "r", cfg)
    old = result_fields(cfg)
    old["min_steps"] = old.pop("round_steps")
    del old["problem"]
    started = RunPaths(tmp_path / "r").round(0).started
    started.parent.mkdir(parents=True)
    atomic_json(started, old)
    assert stale_rounds(tmp_path / "r", cfg) == []
    old["sources"] = old.pop("strata")  # the strata's earlier name, and a strategy's
    cfg.acquisition.strategy = "uniform-per-stratum"
    atomic_json(started, {**old, "acquisition.strategy": "uniform-per-count"})
    assert stale_rounds(tmp_path / "r", cfg) == []
    atomic_json(started, {**old, "min_steps": 500})
    (line,) = stale_rounds(tmp_path / "r", cfg)
    assert "round_steps 500 then, 0 now" in line
