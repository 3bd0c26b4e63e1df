"""Read and write the "Config arrays" layout of docs/formats.md as npz or HDF5 (no pickle, atomic writes).

Layout: the problem's configuration arrays, as its `schema` declares them (diffusion: `centers` int64 (n, K, 2),
`values` float64 (n, K), `counts` int64 (n,)); optionally `x` float32 (n, H, W) for a one-channel input, else
(n, C_in, H, W), `y` (n, H, W) and `ids` str (n,); the problem's name as the 0-d string `problem` (a file without
it is of the diffusion problem) and its parameters as 0-d arrays named as in a run's [physics] table (diffusion:
`lattice`, `radius`, `diffusion`, `decay`, `source_model`). HDF5 uses the same names as root datasets and repeats
the problem and its parameters as root attributes. Strings are numpy unicode arrays so that
`np.load(..., allow_pickle=False)` always works.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from diffcurate.common.errors import InputError
from diffcurate.common.files import atomic_path
from diffcurate.solvers.interface import Task
from diffcurate.solvers.plugins import as_task, get_problem

FORMATS = {".npz": "npz", ".h5": "h5", ".hdf5": "h5"}
PROBLEM_KEY = "problem"
DEFAULT_PROBLEM = "diffusion"  # the problem of files that name none
FIELDS = ("x", "y", "ids")


def format_of(path: str | os.PathLike, fmt: str | None = None) -> str:
    """'npz' or 'h5', from an explicit `fmt` or the file extension."""
    if fmt is not None:
        f = {"npz": "npz", "h5": "h5", "hdf5": "h5"}.get(str(fmt).lower())
        if f is None:
            raise InputError(f"unknown format {fmt!r} (choose npz or h5)")
        return f
    f = FORMATS.get(Path(path).suffix.lower())
    if f is None:
        raise InputError(f"{path}: unknown extension {Path(path).suffix!r} (use .npz, .h5 or .hdf5)")
    return f


def _problem_in(d: dict):
    """The problem a loaded file names (`problem`), or the diffusion problem."""
    name = str(np.asarray(d[PROBLEM_KEY])) if PROBLEM_KEY in d else DEFAULT_PROBLEM
    return get_problem(name)


def _param_types(problem) -> dict:
    """Each parameter's name -> the Python type of its value in the problem's default preset."""
    example = problem.params_to_dict(problem.presets()[problem.default_preset].params)
    return {k: type(v) for k, v in example.items()}


def task_arrays(task: Task) -> dict[str, np.ndarray]:
    """The problem's name and its parameters as the 0-d arrays of the layout."""
    params = {k: np.array(v) if not isinstance(v, str) else np.array(str(v)) for k, v in task.params_dict().items()}
    return {PROBLEM_KEY: np.array(task.name), **params}


def _check_param(d: dict, k: str, want: type, where: str) -> None:
    a = np.asarray(d[k])
    want_str = want is str
    if a.ndim != 0 or (a.dtype.kind in "US") != want_str or (not want_str and a.dtype.kind not in "iufb"):
        kind = "a string" if want_str else "a number"
        raise InputError(f"{where}: physics `{k}` must be {kind} (a 0-d array), got {a.dtype} with shape {a.shape}")


def task_from_arrays(d: dict, where: str = "the arrays") -> Task:
    """The problem and parameters of a loaded file; InputError if a parameter is missing or of the wrong type."""
    problem = _problem_in(d)
    types = _param_types(problem)
    missing = [k for k in types if k not in d]
    if missing:
        raise InputError(f"{where} carry no physics (missing {', '.join(missing)})")
    for k, t in types.items():
        _check_param(d, k, t, where)
    try:
        params = problem.params_from_dict({k: np.asarray(d[k]).item() for k in types})
    except InputError as e:
        raise InputError(f"bad physics in {where}: {e}") from None
    return Task(problem, params)


def _schema(d: dict):
    """(problem, schema) of a loaded file: the schema of its own parameters where it carries them."""
    problem = _problem_in(d)
    try:
        params = task_from_arrays(d).params
    except InputError:
        params = problem.presets()[problem.default_preset].params
    return problem, problem.schema(params)


def validated_samples(d: dict, where: str) -> tuple[Task, object, np.ndarray]:
    """(task, configurations, y) of a loaded file with targets, every row checked: the layout, physics of the
    right types, configurations the problem accepts (`from_arrays`), floating and finite targets on the
    problem's grid. The one check every command that reads solved samples from a file goes through."""
    if "y" not in d:
        raise InputError(f"{where}: no targets `y` (solve the configurations first)")
    task = task_from_arrays(d, where)
    configs = configs_of(task, d, where)
    y = np.asarray(d["y"])
    if not np.issubdtype(y.dtype, np.floating):
        raise InputError(f"{where}: y must be floating point, got {y.dtype}")
    if y.ndim == 4 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape[1:] != task.grid:
        raise InputError(f"{where}: y is {'x'.join(map(str, y.shape[1:]))} but the problem's grid is {task.grid}")
    finite = np.isfinite(y.reshape(len(y), -1)).all(1)
    if not finite.all():
        raise InputError(f"{where}: row {int(np.argmin(finite))} of y is not finite (NaN or inf)")
    return task, configs, y


def configs_of(task: Task, d: dict, where: str):
    """The configurations of a loaded file's schema arrays, checked by the problem."""
    try:
        return task.from_arrays({k: np.asarray(d[k]) for k in task.problem.schema(task.params)})
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


def _kinds(dtype: str) -> tuple[str, str]:
    """(the dtype kinds an array of a schema dtype may have, what to call them)."""
    kind = np.dtype(dtype).kind
    return ("iu", "integers") if kind in "iu" else ("f", "float32 or float64") if kind == "f" else (kind, dtype)


def _check_layout(d: dict, where: str) -> None:
    """Raise InputError naming the first array whose shape or dtype breaks the layout."""
    problem, schema = _schema(d)
    missing = [k for k in schema if k not in d]
    if missing:
        raise InputError(f"{where}: missing arrays {', '.join(missing)} (need {', '.join(schema)})")
    wanted = {**{k: _kinds(spec.dtype) for k, spec in schema.items()}, "x": _kinds("f4"), "y": _kinds("f4")}
    for k, (kinds, want) in wanted.items():  # every dtype first: shapes and lengths are read from them
        a = np.asarray(d[k]) if k in d else None
        if a is not None and (a.dtype.kind not in kinds or (a.dtype.kind == "f" and a.dtype.itemsize < 4)):
            raise InputError(f"{where}: {k} must be {want} (docs/formats.md), got {a.dtype}")
    n, axes = None, {}
    for k, spec in schema.items():
        a = np.asarray(d[k])
        n = len(a) if n is None and a.ndim else n
        shape = tuple(
            axes.setdefault(ax, a.shape[1 + i]) if a.ndim > 1 + i and isinstance(ax, str) else ax
            for i, ax in enumerate(spec.shape)
        )
        if a.ndim != 1 + len(spec.shape) or a.shape != (n, *shape):
            want_shape = ", ".join(["n", *map(str, spec.shape)])
            raise InputError(f"{where}: {k} must have shape ({want_shape}) = {(n, *shape)}, got {a.shape}")
        if spec.length:
            lengths = np.asarray(d[spec.length])
            if n and lengths.size and a.shape[1] < lengths.max():
                raise InputError(
                    f"{where}: {k} holds {spec.shape[0]}={a.shape[1]} slots but {spec.length} ask for {lengths.max()}"
                )
    for k, t in _param_types(problem).items():
        if k in d:
            _check_param(d, k, t, where)
    grid = task_from_arrays(d).grid if all(k in d for k in _param_types(problem)) else None
    for k in ("x", "y"):
        if k in d:
            a = np.asarray(d[k])
            if a.ndim not in (3, 4) or a.shape[0] != n or (grid is None and a.shape[-1] != a.shape[-2]):
                raise InputError(f"{where}: {k} must have shape (n={n}, H, W) or (n={n}, C, H, W), got {a.shape}")
            if grid is not None and a.shape[-2:] != grid:
                raise InputError(f"{where}: {k} is {a.shape[-2]}x{a.shape[-1]} but the problem's grid is {grid}")
    if "ids" in d and np.asarray(d["ids"]).shape != (n,):
        raise InputError(f"{where}: ids must have shape ({n},), got {np.asarray(d['ids']).shape}")


def save_arrays(
    path: str | os.PathLike,
    physics,
    configs,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    ids=None,
    extra: dict | None = None,
    fmt: str | None = None,
) -> Path:
    """Write the layout to `path` atomically (temp file in the same directory, then os.replace). `physics`: a
    `Task` (or a diffusion Physics).

    `extra` adds further arrays (e.g. `path`, `estimate` for predict); it may not reuse a layout name."""
    path = Path(path)
    f = format_of(path, fmt)
    task = as_task(physics)
    schema = task.problem.schema(task.params)
    arrays = task.to_arrays(configs)
    d: dict[str, np.ndarray] = {k: np.asarray(arrays[k], spec.dtype) for k, spec in schema.items()}
    d.update(task_arrays(task))
    if x is not None:
        d["x"] = np.asarray(x, np.float32)  # (n, H, W) or (n, C_in, H, W)
    if y is not None:
        y = np.asarray(y)
        d["y"] = y if y.dtype in (np.float32, np.float64) else y.astype(np.float32)  # (n, H, W)
    if ids is not None:
        d["ids"] = np.asarray([str(i) for i in ids], dtype=str).reshape(-1)  # (n,) unicode
    for k, v in (extra or {}).items():
        if k in d or k in FIELDS:
            raise InputError(f"extra array {k!r} would overwrite a layout array")
        a = np.asarray(v)
        if a.dtype == object:
            raise InputError(f"extra array {k!r} has dtype object; use numbers or str")
        d[k] = a
    _check_layout(d, str(path))
    if not path.parent.is_dir():
        raise InputError(f"{path}: directory {path.parent} does not exist")
    with atomic_path(path) as tmp:
        if f == "npz":
            with tmp.open("wb") as fh:
                np.savez(fh, **d)
        else:
            _write_h5(tmp, d, [PROBLEM_KEY, *task.params_dict()])
    return path


def _write_h5(path: str, d: dict[str, np.ndarray], attrs: list[str]) -> None:
    import h5py

    with h5py.File(path, "w") as h:
        for k, a in d.items():
            if a.dtype.kind == "U":
                h.create_dataset(k, data=a.astype(object), dtype=h5py.string_dtype("utf-8"))
            else:
                h.create_dataset(k, data=a)
        for k in attrs:
            h.attrs[k] = d[k].item()


def _read_h5(path: Path) -> dict[str, np.ndarray]:
    import h5py

    d: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as h:
        for k, ds in h.items():
            if not isinstance(ds, h5py.Dataset):
                continue
            if h5py.check_string_dtype(ds.dtype) is not None:
                v = ds.asstr()[()]
                d[k] = np.array(v, dtype=str) if isinstance(v, str) else np.asarray(v.tolist(), dtype=str)
            else:
                d[k] = ds[()]
        for k, v in h.attrs.items():  # root attributes fill in what the datasets lack
            if k not in d:
                d[k] = np.array(v.decode() if isinstance(v, bytes) else v)
    return d


def load_arrays(path: str | os.PathLike, fmt: str | None = None) -> dict[str, np.ndarray]:
    """All arrays of an npz/HDF5 file in the layout, validated; InputError names what is wrong."""
    path = Path(path)
    f = format_of(path, fmt)
    if path.is_dir():
        raise InputError(f"{path} is a directory, not an {f} file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if f == "npz":
            with np.load(path, allow_pickle=False) as z:
                if not hasattr(z, "files"):  # a bare .npy, or a pickle: np.load gives no archive
                    raise ValueError("not an archive")
                d = {k: z[k] for k in z.files}
        else:
            d = _read_h5(path)
    except InputError:
        raise
    except Exception:  # zip/HDF5/pickle errors all mean "not a readable file of this format"
        what = "an npz file (or it holds pickled objects, which are refused)" if f == "npz" else "an HDF5 file"
        raise InputError(f"{path}: not {what}") from None
    _check_layout(d, str(path))
    problem, schema = _schema(d)
    if not len(np.asarray(d[next(iter(schema))])):
        raise InputError(f"{path} holds no samples")
    return d


def load_configs(path: str | os.PathLike, physics=None):
    """The configurations of a file, checked by its problem with `physics` (a `Task`, or a diffusion Physics)
    or, where not given, with the file's own parameters."""
    d = load_arrays(path)
    task = as_task(physics) if physics is not None else task_from_arrays(d, str(path))
    return configs_of(task, d, str(path))
