"""Batched inference in eval mode: inputs x -> fields in target units (the training transform inverted)."""

from __future__ import annotations

import numpy as np
import torch

from diffcurate.model.losses import transform_pair


def _batches(x: np.ndarray, device: torch.device, batch_size: int):
    """(offset, (B, C_in, H, W) float32 tensor on `device`) over x (n, C_in, H, W), or (n, H, W): one channel."""
    for a in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[a : a + batch_size], dtype=torch.float32, device=device)
        yield a, xb[:, None] if x.ndim == 3 else xb


def predict(model: torch.nn.Module, x: np.ndarray, transform: str = "none", device="cpu", batch_size: int = 64):
    """x (n, C_in, H, W) float32 -> (n, C_out, H, W) float32 predictions; x (n, H, W) (one input channel) ->
    (n, H, W), the one output channel."""
    inverse = transform_pair(transform)[1]
    model.eval()
    parts = []
    with torch.no_grad():
        for _, xb in _batches(x, torch.device(device), batch_size):
            parts.append(inverse(model(xb).float()).cpu().numpy())  # (B, C_out, H, W)
    out = np.concatenate(parts) if parts else np.zeros((0, 1, *x.shape[-2:]), np.float32)
    return out[:, 0] if x.ndim == 3 else out


def embed(model: torch.nn.Module, x: np.ndarray, device="cpu", batch_size: int = 64) -> np.ndarray:
    """x (n, C_in, H, W) or (n, H, W) float32 -> (n, D) float32 bottleneck features (`model.embed`), in eval
    mode."""
    model.eval()
    with torch.no_grad():
        parts = [model.embed(xb).float().cpu().numpy() for _, xb in _batches(x, torch.device(device), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
