"""The torch device of a command, a trainer or an actor: "auto" is a GPU when torch sees one."""

from __future__ import annotations

import torch

from diffcurate.common.errors import InputError


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but torch sees no CUDA device")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r} (choose auto, cpu or cuda)")
    return torch.device(device)
