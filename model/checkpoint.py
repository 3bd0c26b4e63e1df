"""Checkpoints as plain data (no pickle): state_dict + model config + train config + physics + metrics.

`torch.load(path, weights_only=True)` reads them; `load_checkpoint` rebuilds the network from the stored config
and refuses a checkpoint made for other physics than the caller's data.
"""

from __future__ import annotations

import hashlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from diffcurate.common.errors import CheckError, InputError
from diffcurate.common.files import atomic_path
from diffcurate.model.nets import build_model, config_to_dict
from diffcurate.solvers.plugins import as_task, task_of

FORMAT = "diffcurate.model/1"
KNOWN_FORMATS = (FORMAT,)  # checkpoints without a tag are read as format 1 (written before tags were checked)


def transform_of(meta: dict) -> str:
    """The target transform a checkpoint's model was trained with ("none" for files without a train config)."""
    return (meta.get("train_config") or {}).get("transform", "none")


def preset_of(physics) -> str | None:
    """The problem's preset with these parameters, if any (for messages and defaults); `physics`: a `Task`
    (or a diffusion Physics)."""
    task = as_task(physics)
    return task.preset() if task is not None else None


@dataclass(frozen=True)
class Blob:
    """A checkpoint file's bytes, as the driver read them, for a process that cannot read the driver's disk (an
    actor on another node): `read_checkpoint` takes it like a path, and its messages name `name`. `key` tells
    one version of a file from the next (path, size and mtime), for caches."""

    name: str
    key: str
    data: bytes

    @classmethod
    def of(cls, path) -> Blob:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"checkpoint not found: {path}")
        st = path.stat()
        return cls(str(path), f"{path}:{st.st_size}:{st.st_mtime_ns}", path.read_bytes())


CHECKSUM = "checksum"
_UNVERIFIED: set[str] = set()  # files without a checksum already warned about in this process


def tensor_digest(obj) -> str:
    """sha256 over every tensor of a checkpoint (key, dtype, shape, bytes, in key order): a flipped byte in a
    weight, an optimiser moment or an RNG state changes it, which torch.load does not notice."""
    h = hashlib.sha256()

    def walk(x, where: str) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().to("cpu").contiguous().reshape(-1)
            h.update(f"{where}:{t.dtype}{tuple(x.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                if k != CHECKSUM:
                    walk(x[k], f"{where}/{k}")
        elif isinstance(x, list | tuple):
            for i, v in enumerate(x):
                walk(v, f"{where}/{i}")

    walk(obj, "")
    return h.hexdigest()


def atomic_save(obj: dict, path: Path) -> None:
    """Write next to the target then rename: a kill mid-write leaves the previous file intact. The file carries
    the `tensor_digest` of its contents, checked by every read."""
    with atomic_path(path, make_parent=True) as tmp:
        torch.save({**obj, CHECKSUM: tensor_digest(obj)}, tmp)


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_checkpoint(
    path,
    model: torch.nn.Module,
    model_config,
    train_config=None,
    physics=None,
    metrics: dict | None = None,
    **extra,
) -> Path:
    """Save weights with everything needed to rebuild and check them (`physics`: the data's `Task`, or a
    diffusion Physics: the problem's name and parameters are recorded). Extra keys must be plain data."""
    task = as_task(physics)
    mc = model_config if isinstance(model_config, dict) else config_to_dict(model_config)
    tc = train_config if isinstance(train_config, dict) or train_config is None else train_config.to_dict()
    obj = {
        "format": FORMAT,
        "state_dict": cpu_state(model),
        "model_config": mc,
        "train_config": tc or {},
        "physics": task.params_dict() if task is not None else None,
        "problem": task.name if task is not None else None,
        "preset": task.preset() if task is not None else None,
        "metrics": metrics or {},
        **extra,
    }
    atomic_save(obj, Path(path))
    return Path(path)


def read_checkpoint(path) -> dict:
    """The raw checkpoint dict from a path or a `Blob`; InputError when missing or not one of ours."""
    if isinstance(path, Blob):
        source, path = io.BytesIO(path.data), Path(path.name)
    else:
        path = source = Path(path)
        if not path.is_file():
            raise InputError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, pickle with foreign globals, not a torch file
        raise InputError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(obj, dict) or "state_dict" not in obj or "model_config" not in obj:
        raise InputError(f"{path}: not a diffcurate model checkpoint (no state_dict/model_config)")
    fmt = obj.get("format", FORMAT)
    if fmt not in KNOWN_FORMATS:
        raise InputError(
            f"{path}: checkpoint format {fmt!r} is not one this version reads ({', '.join(KNOWN_FORMATS)})"
        )
    if not isinstance(obj["model_config"], dict) or not isinstance(obj["state_dict"], dict):
        raise InputError(f"{path}: not a diffcurate model checkpoint (model_config and state_dict must be tables)")
    want = obj.pop(CHECKSUM, None)
    if want is None:
        if str(path) not in _UNVERIFIED:
            _UNVERIFIED.add(str(path))
            print(f"warning: {path} carries no checksum (an older file); loaded unverified", file=sys.stderr)
    elif tensor_digest(obj) != want:
        raise CheckError(f"{path}: checksum mismatch, the checkpoint is damaged; restore it or train it again")
    return obj


def check_physics(meta: dict, physics, path="checkpoint") -> None:
    """InputError unless a checkpoint was trained for the problem and parameters of `physics` (a `Task`, or a
    diffusion Physics); a checkpoint that names no problem is of the diffusion problem."""
    task = as_task(physics)
    if task is None or meta.get("physics") is None:
        return
    name = meta.get("problem") or "diffusion"
    if name != task.name:
        raise InputError(f"{path} was trained for problem {name!r}, not for {task.name!r}")
    stored = task_of(name, meta["physics"])
    if stored.fingerprint() != task.fingerprint():
        raise InputError(
            f"{path} was trained for physics {stored.preset() or stored.params_dict()} ({stored.fingerprint()}), "
            f"not for the requested {task.preset() or task.params_dict()} ({task.fingerprint()})"
        )


def load_checkpoint(path, physics=None, device: str | torch.device = "cpu"):
    """(model in eval mode on `device`, meta dict without the state_dict); `path` may be a `Blob`."""
    obj = read_checkpoint(path)
    path = path.name if isinstance(path, Blob) else path
    check_physics(obj, physics, path)
    model = build_model(obj["model_config"])
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        raise InputError(f"{path}: weights do not match the stored model config ({str(e).splitlines()[0]})") from None
    meta = {k: v for k, v in obj.items() if k != "state_dict"}
    return model.to(device).eval(), meta
