"""Data-parallel training's part in the trainer: which rows of a global batch a rank trains on, the global
batch's loss, BatchNorm over the global batch, and rank 0's decisions on every rank. With one process (`Shard()`)
every method is the identity, so the trainer's loop has no data-parallel branch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffcurate.model.losses import LossSpec, loss_parts, loss_value


@dataclass(frozen=True)
class Shard:
    """This process's part in data-parallel training (torch.distributed set up by the caller, as Ray Train does).

    Every rank runs the same loop over the same global batches (the shuffle order is a function of seed and
    epoch) and trains on rows rank::world of each; the loss is the whole batch's (`loss_parts` summed over the
    ranks), BatchNorm normalises over the global batch (`SyncBatchNorm2d`) and DDP averages the gradients, so the
    steps are those of one process with the same global batch up to floating point. Rank 0 validates, decides
    the stop and writes the files; the others follow its decisions."""

    rank: int = 0
    world: int = 1

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def rows(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows (rank::world) of a global batch; empty for a rank beyond a last batch smaller than
        the world, which still runs the step (DDP's gradient exchange needs every rank) with zero gradients and
        no BatchNorm rows."""
        if self.world == 1:
            return x, y
        return x[self.rank :: self.world], y[self.rank :: self.world]

    def loss(self, spec: LossSpec, pred, target, y) -> tuple[torch.Tensor, float]:
        """(the loss to differentiate, the global batch's loss). With several ranks: world x this rank's part of
        the global batch's loss, since DDP averages the gradients over the ranks, which makes them the
        gradients of the global loss. The numerators and denominators are summed over the ranks in one
        all-reduce of two numbers, so every rank knows the global loss."""
        if self.world == 1:
            loss = loss_value(spec, pred, target, y)
            return loss, float(loss.detach())
        import torch.distributed as dist

        num, den = loss_parts(spec, pred, target, y)
        parts = torch.stack([num.detach(), den.detach()]).double()
        dist.all_reduce(parts)
        return num * self.world / parts[1].to(num.dtype), float(parts[0] / parts[1])

    def agree(self, record: dict) -> dict:
        """Rank 0's epoch record (its validation) on every rank, so that they all decide alike."""
        if self.world == 1:
            return record
        import torch.distributed as dist

        box = [record]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, model: torch.nn.Module, dev: torch.device) -> torch.nn.Module | None:
        """What the training step calls: None (the model itself) with one process, else the model with its
        BatchNorms over the global batch in DDP, which broadcasts rank 0's initial weights."""
        if self.world == 1:
            return None
        from torch.nn.parallel import DistributedDataParallel

        ids = [dev.index] if dev.type == "cuda" else None
        return DistributedDataParallel(sync_batchnorm(model), device_ids=ids)


class _SumOverRanks(torch.autograd.Function):
    """x summed over the ranks; its gradient is the upstream gradients summed over the ranks, since every rank's
    loss depends on the sum."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SyncBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm over the global batch of data-parallel training, on CPUs (gloo) as on GPUs: the ranks add up
    their per-channel sums and sums of squares (an all-reduce that autograd differentiates), so that statistics,
    outputs and gradients are those of one process with the whole batch. torch's SyncBatchNorm runs on GPUs
    only. Without it each rank would normalise over its share alone, and the training would depend on N."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, C, H, W)
        import torch.distributed as dist

        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xd = x.double()  # sums in float64: the variance is E[x^2] - E[x]^2, which float32 would cancel away
        count = torch.full((1,), xd.numel() / c, dtype=xd.dtype, device=xd.device)
        stats = _SumOverRanks.apply(torch.cat([xd.sum((0, 2, 3)), (xd * xd).sum((0, 2, 3)), count]))  # (2C + 1,)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)  # biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * n / (n - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
                self.num_batches_tracked += 1
        mean, var = mean.to(x.dtype), var.to(x.dtype)
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def sync_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """The model with every BatchNorm2d made a `SyncBatchNorm2d` in place: the same module objects, parameters
    (which the optimiser holds) and buffers, so checkpoints keep their keys and load into the plain model."""
    for m in model.modules():
        if type(m) is torch.nn.BatchNorm2d:
            m.__class__ = SyncBatchNorm2d
    return model
