"""Read and write the "Config arrays" layout of docs/formats.md as npz or HDF5 (no pickle, atomic writes).

Layout: `centers` int64 (n, K, 2), `values` float64 (n, K), `counts` int64 (n,); optionally `x` float32 and
`y` (n, L, L), `ids` str (n,), and the physics as 0-d arrays `lattice`, `radius`, `diffusion`, `decay`,
`source_model` (str). HDF5 uses the same names as root datasets and repeats the physics as root attributes.
Strings are numpy unicode arrays so that `np.load(..., allow_pickle=False)` always works.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from diffcurate.common.errors import InputError
from diffcurate.common.files import atomic_path
from diffcurate.solvers.problem import Configs, Physics

PHYSICS_KEYS = ("lattice", "radius", "diffusion", "decay", "source_model")
CONFIG_KEYS = ("centers", "values", "counts")
CORE_KEYS = (*CONFIG_KEYS, "x", "y", "ids", *PHYSICS_KEYS)
FORMATS = {".npz": "npz", ".h5": "h5", ".hdf5": "h5"}
STRING_KEYS = ("ids", "source_model")
# the dtype kinds each array may have; integers of any width and float32 convert exactly to the layout's int64
# and float64, while strings, objects, bools and float16 (a lossy target) are refused
DTYPES = {"centers": "iu", "counts": "iu", "values": "f", "x": "f", "y": "f"}


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


def physics_arrays(physics: Physics) -> dict[str, np.ndarray]:
    """The physics as the 0-d arrays of the layout."""
    return {
        "lattice": np.array(physics.lattice, np.int64),
        "radius": np.array(physics.radius, np.int64),
        "diffusion": np.array(physics.diffusion, np.float64),
        "decay": np.array(physics.decay, np.float64),
        "source_model": np.array(str(physics.source_model)),
    }


def _check_physics_key(d: dict, k: str, where: str) -> None:
    a = np.asarray(d[k])
    want_str = k == "source_model"
    if a.ndim != 0 or (a.dtype.kind in "US") != want_str or (not want_str and a.dtype.kind not in "iuf"):
        kind = "a string" if want_str else "a number"
        raise InputError(f"{where}: physics `{k}` must be {kind} (a 0-d array), got {a.dtype} with shape {a.shape}")


def physics_from_arrays(d: dict) -> Physics:
    """Physics from the 0-d arrays of a loaded file; InputError if any is missing or of the wrong type."""
    missing = [k for k in PHYSICS_KEYS if k not in d]
    if missing:
        raise InputError(f"the arrays carry no physics (missing {', '.join(missing)})")
    vals = {}
    for k in PHYSICS_KEYS:
        _check_physics_key(d, k, "the arrays")
        vals[k] = np.asarray(d[k]).item()
    try:
        return Physics.from_dict(vals)
    except (TypeError, ValueError) as e:
        raise InputError(f"bad physics in the arrays: {e}") from None


def validated_samples(d: dict, where: str) -> tuple[Physics, Configs, np.ndarray]:
    """(physics, configs, y) of a loaded file with targets, every row checked: the layout, physics of the right
    types, discs inside the lattice, 1 <= counts <= K, floating and finite targets. The one check every command
    that reads solved samples from a file goes through."""
    if "y" not in d:
        raise InputError(f"{where}: no targets `y` (solve the configurations first)")
    try:
        physics = physics_from_arrays(d)
        configs = Configs(d["centers"], d["values"], d["counts"]).validate(physics)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None
    y = np.asarray(d["y"])
    if not np.issubdtype(y.dtype, np.floating):
        raise InputError(f"{where}: y must be floating point, got {y.dtype}")
    if y.shape[1:] != (physics.lattice, physics.lattice):
        raise InputError(f"{where}: y is {y.shape[1]}x{y.shape[2]} but lattice is {physics.lattice}")
    finite = np.isfinite(y.reshape(len(y), -1)).all(1)
    if not finite.all():
        raise InputError(f"{where}: row {int(np.argmin(finite))} of y is not finite (NaN or inf)")
    return physics, configs, y


def _check_layout(d: dict, where: str) -> None:
    """Raise InputError naming the first array whose shape or dtype breaks the layout."""
    missing = [k for k in CONFIG_KEYS if k not in d]
    if missing:
        raise InputError(f"{where}: missing arrays {', '.join(missing)} (need centers, values, counts)")
    for k, kinds in DTYPES.items():
        a = np.asarray(d[k]) if k in d else None
        if a is not None and (a.dtype.kind not in kinds or (a.dtype.kind == "f" and a.dtype.itemsize < 4)):
            want = "integers" if kinds == "iu" else "float32 or float64"
            raise InputError(f"{where}: {k} must be {want} (docs/formats.md), got {a.dtype}")
    try:
        cfg = Configs(d["centers"], d["values"], d["counts"])
    except InputError as e:
        raise InputError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:  # strings, compound or object dtypes
        raise InputError(f"{where}: centers, values and counts must be numeric arrays ({e})") from None
    n = len(cfg)
    if n and cfg.centers.shape[1] < cfg.counts.max():
        raise InputError(f"{where}: centers hold K={cfg.centers.shape[1]} slots but counts ask for {cfg.counts.max()}")
    for k in PHYSICS_KEYS:
        if k in d:
            _check_physics_key(d, k, where)
    lattice = int(np.asarray(d["lattice"]).item()) if "lattice" in d else None
    for k in ("x", "y"):
        if k in d:
            a = np.asarray(d[k])
            if a.ndim != 3 or a.shape[0] != n or a.shape[1] != a.shape[2]:
                raise InputError(f"{where}: {k} must have shape (n={n}, L, L), got {a.shape}")
            if lattice is not None and a.shape[1] != lattice:
                raise InputError(f"{where}: {k} is {a.shape[1]}x{a.shape[2]} but lattice is {lattice}")
    if "ids" in d and np.asarray(d["ids"]).shape != (n,):
        raise InputError(f"{where}: ids must have shape ({n},), got {np.asarray(d['ids']).shape}")


def save_arrays(
    path: str | os.PathLike,
    physics: Physics,
    configs: Configs,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    ids=None,
    extra: dict | None = None,
    fmt: str | None = None,
) -> Path:
    """Write the layout to `path` atomically (temp file in the same directory, then os.replace).

    `extra` adds further arrays (e.g. `path`, `estimate` for predict); it may not reuse a layout name."""
    path = Path(path)
    f = format_of(path, fmt)
    d: dict[str, np.ndarray] = {
        "centers": configs.centers.astype(np.int64),  # (n, K, 2)
        "values": configs.values.astype(np.float64),  # (n, K)
        "counts": configs.counts.astype(np.int64),  # (n,)
        **physics_arrays(physics),
    }
    if x is not None:
        d["x"] = np.asarray(x, np.float32)  # (n, L, L)
    if y is not None:
        y = np.asarray(y)
        d["y"] = y if y.dtype in (np.float32, np.float64) else y.astype(np.float32)  # (n, L, L)
    if ids is not None:
        d["ids"] = np.asarray([str(i) for i in ids], dtype=str).reshape(-1)  # (n,) unicode
    for k, v in (extra or {}).items():
        if k in CORE_KEYS:
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
            _write_h5(tmp, d)
    return path


def _write_h5(path: str, d: dict[str, np.ndarray]) -> None:
    import h5py

    with h5py.File(path, "w") as h:
        for k, a in d.items():
            if a.dtype.kind == "U":
                h.create_dataset(k, data=a.astype(object), dtype=h5py.string_dtype("utf-8"))
            else:
                h.create_dataset(k, data=a)
        for k in PHYSICS_KEYS:
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
        for k in PHYSICS_KEYS:  # root attributes fill in what the datasets lack
            if k not in d and k in h.attrs:
                v = h.attrs[k]
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
    if not len(d["counts"]):
        raise InputError(f"{path} holds no samples")
    return d


def load_configs(path: str | os.PathLike) -> Configs:
    d = load_arrays(path)
    return Configs(d["centers"], d["values"], d["counts"])
