"""The package's shape: one `diffcurate` namespace, acyclic imports between modules and rooms, no upward import."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# lower layers first: a module may import its own layer and those before it, never one after it
LAYERS = ["common", "solvers", "model", "curate"]
FOLDERS = {folder: f"diffcurate.{folder}" for folder in LAYERS}
CURATE = LAYERS.index("curate")
# rooms inside curate/, lower first (progress is a leaf used by every room; __main__ is the entry point)
ROOMS = ["progress", "store", "cluster", "acquisition", "loop", "cli", "__main__"]


def _modules() -> dict[str, Path]:
    out = {}
    for folder, pkg in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


def _imports(path: Path, name: str) -> set[str]:
    """Every diffcurate module this file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("diffcurate.")}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: {i for i in _imports(p, m) if i in mods and i != m} for m, p in mods.items()}


def _layer(m: str) -> int:
    return LAYERS.index(m.split(".")[1])


def _room(m: str) -> str:
    parts = m.split(".")
    return parts[2] if len(parts) > 2 else ""


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_import_cycle_between_modules():
    graph = _graph()
    # a package's __init__ importing its own submodules is not a cycle of the design
    graph = {m: {d for d in ds if not (d.startswith(m + ".") or m.startswith(d + "."))} for m, ds in graph.items()}
    assert _find_cycle(graph) is None, _find_cycle(graph)


def test_layers_only_import_downwards():
    bad = [(m, d) for m, ds in _graph().items() for d in ds if _layer(d) > _layer(m)]
    assert not bad, bad


def test_rooms_of_curate_are_acyclic_and_ordered():
    bad = []
    for m, ds in _graph().items():
        if _layer(m) != CURATE or not _room(m):
            continue
        for d in ds:
            if _layer(d) == CURATE and _room(d) and ROOMS.index(_room(d)) > ROOMS.index(_room(m)):
                bad.append((m, d))
    assert not bad, bad
    rooms = {_room(m) for m in _modules() if _layer(m) == CURATE and _room(m)}
    assert rooms == set(ROOMS), rooms  # a new room is added to ROOMS and to docs/architecture.md


def test_rooms_listed_in_architecture_doc():
    """Every room of curate/ and every module in it is named in docs/architecture.md."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for room in ROOMS:
        if room not in ("progress", "__main__"):
            assert f"`curate/{room}/`" in doc, f"room {room} is not in docs/architecture.md"
    for m, path in _modules().items():
        if _layer(m) == CURATE and m.count(".") == 3 and path.name != "__init__.py":
            assert f"`{path.name}`" in doc, f"{m} is not in docs/architecture.md"


def test_namespace_survives_users_own_model_and_solvers(tmp_path, ray_cluster):
    """A user's folder with its own model.py, solvers/ and curate.py, as the working directory and first on
    sys.path (as `python -m` and notebooks do): the CLI, a tiny run and `import diffcurate.model` all work."""
    (tmp_path / "model.py").write_text("raise SystemExit('the user model.py was imported')\n")
    (tmp_path / "curate.py").write_text("raise SystemExit('the user curate.py was imported')\n")
    (tmp_path / "solvers").mkdir()
    (tmp_path / "solvers" / "__init__.py").write_text("raise SystemExit('the user solvers/ was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    exe = Path(sys.executable).with_name("curate")

    def sh(*args):
        return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    r = sh(sys.executable, "-c", "import diffcurate.model.checkpoint, diffcurate.solvers; print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    r = sh(str(exe), "--help")
    assert r.returncode == 0 and "curate" in r.stdout, r.stderr
    r = sh(str(exe), "init", "run", "--preset", "tiny")
    assert r.returncode == 0, r.stderr
    r = sh(str(exe), "run", "run", "--rounds", "0", "--address", ray_cluster)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "rounds.jsonl").read_text().count("\n") == 1


def test_every_module_below_curate_is_named_in_architecture_doc():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for m, path in _modules().items():
        if _layer(m) < CURATE and path.name != "__init__.py":
            assert f"`{path.name}`" in doc or f"`{path.parent.name}/{path.name}`" in doc, m


def test_readme_layout_table_matches_the_tree():
    """The README's layout table names every top-level folder and room of curate/ with its import name."""
    import re

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([\w/]+)/` \| `?([\w.–-]+)`? \|", section, re.M))
    rooms = {f"curate/{p.name}" for p in (ROOT / "curate").iterdir() if (p / "__init__.py").is_file()}
    assert set(rows) == {"common", "solvers", "model", "bench", "examples", "tools"} | rooms
    for folder, name in rows.items():
        assert (ROOT / folder).is_dir(), folder
        if name != "–":
            assert name == "diffcurate." + folder.replace("/", "."), (folder, name)
