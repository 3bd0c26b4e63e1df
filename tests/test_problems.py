"""The Problem interface: the diffusion problem behind it is the physics modules' own, a plugin package
installed without an index is found by its entry point, and a faulty plugin is one line naming it and the
method."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffcurate.common.errors import InputError
from diffcurate.solvers.plugins import _LOADED, Guarded, find_problems, get_problem
from diffcurate.solvers.problem import PRESETS, disc_mask, paint
from diffcurate.solvers.registry import solve
from diffcurate.solvers.sampling import sample_configs

ROOT = Path(__file__).resolve().parents[1]
HEAT = ROOT / "examples" / "heat"
TINY = PRESETS["tiny"]


def test_diffusion_behind_the_interface_is_the_physics_modules():
    p, ph = get_problem("diffusion"), TINY.physics
    configs, families = p.sample(ph, "mixed", 5, range(12), TINY.sources)
    legacy, legacy_families = sample_configs("mixed", ph, 5, range(12), TINY.sources)
    assert families == legacy_families
    assert p.sample_ids(ph, configs) == [legacy.sample_id(s, ph) for s in range(12)]
    assert np.array_equal(p.encode(ph, configs)[:, 0], paint(ph, legacy))
    assert np.array_equal(p.strata(ph, configs), legacy.counts)
    y = p.solve(ph, configs)
    assert y.dtype == np.float32 and np.array_equal(y[:, 0], solve(ph, legacy, "fast", dtype="float32"))
    regions = p.regions(ph, configs, y)
    assert (
        np.array_equal(regions["sources"], disc_mask(ph, legacy)) and not (regions["sources"] & regions["field"]).any()
    )
    ref = p.reference_solve(ph, configs)
    assert np.abs(ref - y).max() < 1e-5 and np.abs(p.residual(ph, configs, ref)).max() < 1e-10
    arrays = p.to_arrays(ph, configs)
    assert set(arrays) == set(p.schema(ph)) and p.sample_ids(ph, p.from_arrays(ph, arrays)) == p.sample_ids(ph, configs)
    assert p.stratum == "sources" and set(p.held_out()) <= set(p.samplers())
    assert p.families() == ("uniform", "clustered", "boundary", "overlap", "sparse-values")  # what `mixed` draws


def _heat_module():
    """The example plugin's module, read from examples/ (not installed)."""
    if "heat_example" not in sys.modules:
        spec = importlib.util.spec_from_file_location("heat_example", HEAT / "diffcurate_heat" / "__init__.py")
        sys.modules["heat_example"] = mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    return sys.modules["heat_example"]


def test_the_example_plugin_solves_its_own_physics():
    """The example's sparse solve against its dense reference assembled pixel by pixel, on every sampler."""
    heat = _heat_module().Heat()
    plate = heat.presets()["tiny"].params
    for sampler in heat.samplers():
        configs, _ = Guarded(heat).sample(plate, sampler, 3, range(4), (1, 4))
        y, ref = Guarded(heat).solve(plate, configs), heat.reference_solve(plate, configs)
        assert np.abs(y - ref).max() <= 1e-6 * np.abs(ref).max()  # float32 of the same solution
        assert np.abs(heat.residual(plate, configs, ref)).max() < 1e-10  # the two assemblies agree
        assert (y[heat.encode(plate, configs)[:, :1] > 0] == 0).all()  # the sinks are cold


def _bad(method: str, answer):
    """A heat problem whose `method` answers `answer(self, *args)`."""
    heat = _heat_module().Heat
    return type("Bad", (heat,), {method: lambda self, *a: answer(self, heat, *a)})()


def _raise(*_):
    raise RuntimeError("solver diverged")


BAD = [  # (method broken, how, what the line says)
    ("solve", _raise, "solve raised RuntimeError: solver diverged"),
    ("solve", lambda s, h, p, c, d="cpu": h.solve(s, p, c)[:, :, :-1], "solve returned shape"),
    ("solve", lambda s, h, p, c, d="cpu": h.solve(s, p, c).astype(np.float64), "solve returned dtype float64"),
    ("solve", lambda s, h, p, c, d="cpu": h.solve(s, p, c) * np.nan, "solve returned NaN"),
    ("encode", lambda s, h, p, c: h.encode(s, p, c)[:, :1], "encode returned shape"),
    ("strata", lambda s, h, p, c: h.strata(s, p, c).astype(float), "strata returned float64"),
    ("to_arrays", lambda s, h, p, c: {**h.to_arrays(s, p, c), "heating": np.ones(len(c), np.int64)}, "the schema"),
]


@pytest.mark.parametrize("method, answer, says", BAD, ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(BAD)])
def test_a_faulty_plugin_is_one_line_naming_it_and_the_method(method, answer, says):
    bad = Guarded(_bad(method, answer), "diffcurate-heat")
    plate = bad.presets()["tiny"].params
    with pytest.raises(InputError) as e:
        configs, _ = bad.sample(plate, "scattered", 0, range(3), (1, 4))
        bad.strata(plate, configs)
        bad.encode(plate, configs)
        bad.solve(plate, configs)
    line = str(e.value)
    assert line.startswith("problem 'heat' (diffcurate-heat): ") and says in line and "\n" not in line, line


def test_a_problem_not_installed_is_one_line_naming_its_package():
    with pytest.raises(InputError, match=r"problem 'plasma' \(from the package diffcurate-plasma\) is not installed"):
        get_problem("plasma", package="diffcurate-plasma")


BROKEN = {  # a plugin package whose problem does not load
    "pyproject.toml": '[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n'
    '[project]\nname = "diffcurate-broken"\nversion = "0.0.1"\n'
    '[project.entry-points."diffcurate.problems"]\nbroken = "broken_problem:Broken"\n'
    '[tool.setuptools]\npy-modules = ["broken_problem"]\n',
    "broken_problem.py": 'raise ImportError("needs a library this machine lacks")\n',
}

# a plugin package of faulty heat problems, one per entry point: (the override, what the one line says)
FAULTS = {
    "sample": ("def sample(self, *a):\n        raise RuntimeError('sampler broke')", "sample raised RuntimeError"),
    "schema": (
        "def to_arrays(self, p, c):\n        return {**super().to_arrays(p, c), 'heating': np.ones(len(c), np.int64)}",
        "the schema declares float64",
    ),
    "encode": ("def encode(self, p, c):\n        return super().encode(p, c)[:, :1]", "encode returned shape"),
    "strata": ("def strata(self, p, c):\n        return super().strata(p, c) * 0.5", "strata returned float64"),
    "solve": (
        "def solve(self, p, c, device='cpu'):\n        raise RuntimeError('diverged')",
        "solve raised RuntimeError",
    ),
    "nan": ("def solve(self, p, c, device='cpu'):\n        return super().solve(p, c) * np.nan", "solve returned NaN"),
    "dtype": (
        "def solve(self, p, c, device='cpu'):\n        return super().solve(p, c).astype(np.float64)",
        "solve returned dtype float64",
    ),
}
FAULTY = {
    "pyproject.toml": '[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n'
    '[project]\nname = "diffcurate-faulty"\nversion = "0.0.1"\n[project.entry-points."diffcurate.problems"]\n'
    + "".join(f'faulty-{k} = "faulty_problems:Faulty_{k}"\n' for k in FAULTS)
    + '[tool.setuptools]\npy-modules = ["faulty_problems"]\n',
    "faulty_problems.py": "import numpy as np\nfrom diffcurate_heat import Heat\n"
    + "".join(
        f"\n\nclass Faulty_{k}(Heat):\n    name = 'faulty-{k}'\n\n    {code}\n" for k, (code, _) in FAULTS.items()
    ),
}


def faulty_plugins_are_one_line_and_write_nothing(tmp_path: Path, cli, address: str) -> None:
    """Each faulty plugin, at the command line: `curate run` of a run of it stops with one line naming the plugin
    and the method, exit 2, and its store holds no sample."""
    from diffcurate.curate.store.lmdbstore import Store

    for k, (_, says) in FAULTS.items():
        run = tmp_path / f"faulty-{k}"
        code, _, err = cli("init", run, "--problem", f"faulty-{k}")
        assert code == 0, err
        code, _, err = cli("run", run, "--rounds", "0", "--no-dashboard", "--workers", "1", "--address", address)
        lines = [line for line in err.strip().splitlines() if line.startswith("error")]  # (progress lines aside)
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (k, err)
        assert f"problem 'faulty-{k}' (diffcurate-faulty 0.0.1): " in lines[0] and says in lines[0], (k, err)
        if (run / "store").exists():
            with Store(run / "store", readonly=True) as st:
                assert st.count() == 0, k


def test_a_plugin_installed_without_an_index_is_listed_and_curated(tmp_path, cli, ray_cluster):
    """pip installs the example package, and one whose problem does not load, offline; `curate problems` finds
    both by their entry points (the broken one listed with why, the others unharmed); the heat problem then goes
    through every command a user's problem needs (`curate_heat_end_to_end`); then both are removed."""
    src, broken, faulty = tmp_path / "heat", tmp_path / "broken", tmp_path / "faulty"
    shutil.copytree(HEAT, src)
    for folder, files in ((broken, BROKEN), (faulty, FAULTY)):
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
    pip = [sys.executable, "-m", "pip", "-q"]
    install = [*pip, "install", "--no-index", "--no-deps", "--no-build-isolation"]
    subprocess.run([*install, str(src), str(broken), str(faulty)], check=True)
    try:
        out = subprocess.run(
            [str(Path(sys.executable).with_name("curate")), "problems", "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        listed = json.loads(out)
        assert listed["broken"]["package"] == "diffcurate-broken"
        assert listed["broken"]["error"] == "ImportError: needs a library this machine lacks"
        code = "from diffcurate.solvers.plugins import get_problem; get_problem('broken')"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert "problem 'broken' (diffcurate-broken 0.0.1) does not load: ImportError" in r.stderr, r.stderr
        heat = listed["heat"]
        assert heat["package"] == "diffcurate-heat" and heat["version"] == "0.1.0"
        assert heat["held_out"] == ["edge"] and heat["families"] == ["scattered", "clustered"]
        assert heat["stratum"] == "sinks" and heat["channels"] == {"in": 2, "out": 1}
        assert heat["capabilities"] == ["mutate", "residual", "reference_solve"] and heat["default_preset"] == "tiny"
        curate_heat_end_to_end(tmp_path, cli, ray_cluster)
        faulty_plugins_are_one_line_and_write_nothing(tmp_path, cli, ray_cluster)
    finally:
        subprocess.run(
            [*pip, "uninstall", "-y", "diffcurate-heat", "diffcurate-broken", "diffcurate-faulty"], check=True
        )
        for name in [n for n in _LOADED if n == "heat" or n.startswith("faulty-")]:
            _LOADED.pop(name)
    assert "heat" not in find_problems() and "broken" not in find_problems()


def curate_heat_end_to_end(tmp_path: Path, cli, address: str) -> None:
    """init, one round, status, report, export, import, train, evaluate and predict on the installed heat problem:
    not a line of diffcurate names it."""
    run = tmp_path / "run"
    code, out, err = cli("init", run, "--problem", "heat", "--seed", "3")
    assert code == 0, err
    assert 'problem = "heat"' in (run / "config.toml").read_text() and "size = 16" in (run / "config.toml").read_text()
    code, out, err = cli("run", run, "--rounds", "1", "--no-dashboard", "--address", address)
    assert code == 0, err
    code, out, err = cli("status", run, "--json")
    st = json.loads(out)
    assert code == 0 and st["problem"] == "heat" and st["stratum"] == "sinks" and st["rounds_completed"] == 2
    test = st["rounds"][-1]["test"]
    assert set(test["mae"]) == {"all", "sinks", "plate"} and set(test["mae_by_sources"]["all"]) <= {"1", "2", "3", "4"}
    assert st["rounds"][1]["added"] == 20 and st["acquisition"] == "residual-l1"  # heat has no `correct`
    code, out, err = cli("report", run)
    assert code == 0 and "Problem `heat`" in (run / "report" / "report.md").read_text(), err
    code, out, err = cli("export", "--store", run / "store", "--out", tmp_path / "all.npz")
    assert code == 0, err
    card = json.loads((tmp_path / "all.npz.card.json").read_text())
    assert card["problem"]["name"] == "heat" and card["problem"]["package"] == "diffcurate-heat"
    assert card["physics"] == {"size": 16, "radius": 1} and card["stratum"] == "sinks"
    with np.load(tmp_path / "all.npz") as z:
        n = len(z["ids"])
        assert str(z["problem"]) == "heat" and z["x"].shape == (n, 2, 16, 16) and z["y"].shape == (n, 16, 16)
        assert z["heating"].shape == (n,) and z["centers"].shape[0] == n and int(z["size"]) == 16
    code, out, err = cli("import", "--store", tmp_path / "copy", "--input", tmp_path / "all.npz")
    assert code == 0, err
    code, out, err = cli("info", "--store", tmp_path / "copy", "--json")
    assert code == 0 and json.loads(out)["count"] == n and json.loads(out)["problem"]["name"] == "heat"
    gen = ("generate", "--store", tmp_path / "gen", "--problem", "heat", "--count", "6", "--address", address)
    code, out, err = cli(*gen, "--json")
    assert code == 0 and json.loads(out)["added"] == 6, err  # bulk generation: the problem's pool sampler, preset tiny
    code, out, err = cli("info", "--store", tmp_path / "gen", "--json")
    assert json.loads(out)["problem"]["name"] == "heat" and json.loads(out)["by_sampler"] == {"scattered": 6}
    code, out, err = cli(*gen, "--lattice", "32")
    assert code == 2 and "--lattice set the diffusion problem's parameters" in err, err
    code, out, err = cli("train", tmp_path / "t", "--data", tmp_path / "all.npz", "--epochs", "1", "--no-progress")
    assert code == 0, err
    ckpt = run / "checkpoints" / "round-001.pt"
    code, out, err = cli("evaluate", "--checkpoint", ckpt, "--data", run / "store", "--out", tmp_path / "ev.json")
    assert code == 0 and set(json.loads((tmp_path / "ev.json").read_text())["mae"]) == {"all", "sinks", "plate"}, err
    code, out, err = cli("predict", "--checkpoint", ckpt, "--input", tmp_path / "all.npz", "--out", tmp_path / "p.npz")
    assert code == 0, err
    with np.load(tmp_path / "p.npz") as z:
        assert z["y"].shape == (n, 16, 16) and set(z["path"].tolist()) == {"model"}
    code, out, err = cli(
        "predict",
        "--checkpoint",
        ckpt,
        "--input",
        tmp_path / "all.npz",
        "--out",
        tmp_path / "q.npz",
        "--estimator",
        "residual",
    )
    assert code == 2 and err.count("\n") == 1 and "which problem 'heat' does not offer" in err, err


def test_a_store_of_a_problem_not_installed_is_one_line(tmp_path, cli):
    """A store records its problem; one whose problem is not installed is refused in one line (exit 2) that
    names the problem and its package."""
    from diffcurate.curate.store.env import begin
    from diffcurate.curate.store.lmdbstore import Store

    with Store.create(tmp_path / "s", TINY.physics) as st:
        assert st.problem_record["name"] == "diffusion" and st.problem_record["package"] == "diffcurate"
        with begin(st.env, write=True) as txn:
            record = {"name": "plasma", "package": "diffcurate-plasma", "version": "2.0"}
            txn.put(b"problem", json.dumps(record).encode(), db=st._meta)
    code, _, err = cli("info", "--store", tmp_path / "s")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: problem 'plasma' (from the package diffcurate-plasma) is not installed"), err
