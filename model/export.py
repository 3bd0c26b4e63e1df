"""Export a checkpoint as a standalone model that maps x (B, 1, L, L) to y in target units (transform inverted)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch

from diffcurate.common.errors import InputError
from diffcurate.model.checkpoint import load_checkpoint, transform_of
from diffcurate.model.losses import transform_pair
from diffcurate.solvers.plugins import task_of


class Surrogate(torch.nn.Module):
    """The trained net followed by the inverse target transform, so users never see transformed outputs."""

    def __init__(self, net: torch.nn.Module, transform: str = "none"):
        super().__init__()
        self.net = net
        self.transform = transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, L, L) -> (B, 1, L, L)
        return transform_pair(self.transform)[1](self.net(x))


def _torchscript(model: torch.nn.Module, example: torch.Tensor, out: Path) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    traced.save(str(out))


def _onnx(model: torch.nn.Module, example: torch.Tensor, out: Path) -> None:
    if importlib.util.find_spec("onnx") is None:
        raise InputError("--format onnx needs the `onnx` package, which is not installed (pip install onnx)")
    torch.onnx.export(
        model,
        (example,),
        str(out),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
    )


def _torch_export(model: torch.nn.Module, example: torch.Tensor, out: Path) -> None:
    """torch.export's ExportedProgram (.pt2; load with torch.export.load(path).module()), batch size dynamic."""
    example = example.expand(2, *example.shape[1:]).contiguous()  # a batch of 1 would be specialised to 1
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(out))


# torch.export is the default: torch 2.13 deprecates TorchScript (kept for older runtimes)
EXPORTERS: dict[str, Callable[[torch.nn.Module, torch.Tensor, Path], None]] = {
    "export": _torch_export,
    "torchscript": _torchscript,
    "onnx": _onnx,
}


def export_model(checkpoint, fmt: str, out) -> Path:
    if fmt not in EXPORTERS:
        raise InputError(f"unknown export format {fmt!r} (choose from {', '.join(EXPORTERS)})")
    net, meta = load_checkpoint(checkpoint)
    transform = transform_of(meta)
    if meta.get("physics") is not None:  # an example input on the problem's grid
        h, w = task_of(meta.get("problem") or "diffusion", meta["physics"]).grid
    else:
        h = w = 64
    c_in = int(meta["model_config"].get("in_channels", 1))
    model = Surrogate(net, transform).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    EXPORTERS[fmt](model, torch.zeros(1, c_in, h, w), out)  # (1, C_in, H, W)
    return out
