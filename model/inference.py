"""Batched inference in eval mode: inputs x -> fields in target units (the training transform inverted)."""

from __future__ import annotations

import numpy as np
import torch

from diffcurate.model.losses import transform_pair


def _batches(x: np.ndarray, device: torch.device, batch_size: int):
    """(offset, (B, 1, L, L) float32 tensor on `device`) over x (n, L, L)."""
    for a in range(0, len(x), batch_size):
        yield a, torch.as_tensor(x[a : a + batch_size], dtype=torch.float32, device=device)[:, None]


def predict(model: torch.nn.Module, x: np.ndarray, transform: str = "none", device="cpu", batch_size: int = 64):
    """x (n, L, L) float32 -> (n, L, L) float32 predictions."""
    inverse = transform_pair(transform)[1]
    model.eval()
    out = np.empty(x.shape, np.float32)
    with torch.no_grad():
        for a, xb in _batches(x, torch.device(device), batch_size):
            out[a : a + len(xb)] = inverse(model(xb).float())[:, 0].cpu().numpy()
    return out


def embed(model: torch.nn.Module, x: np.ndarray, device="cpu", batch_size: int = 64) -> np.ndarray:
    """x (n, L, L) float32 -> (n, D) float32 bottleneck features (`model.embed`), in eval mode."""
    model.eval()
    with torch.no_grad():
        parts = [model.embed(xb).float().cpu().numpy() for _, xb in _batches(x, torch.device(device), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
