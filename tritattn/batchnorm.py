"""What ``nn.BatchNorm2d.forward`` does besides normalising, for the pipelines whose kernels
normalise (CBAM's spatial BatchNorm, a prologue's producer BatchNorm): count the batch, refuse
a single value per channel in training, move the running statistics towards the batch's; the
count for the radix twins' BatchNorms taken as their calls too (tritattn/layer_calls.py).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def count_batch(bn: nn.modules.batchnorm._BatchNorm, shape: torch.Size) -> float:
    """In training, as ``nn.BatchNorm2d.forward``: raise its error for one value per channel
    (``shape`` [B, C, H, W]: B·H·W = 1), add 1 to ``num_batches_tracked``; returns the factor the
    running statistics move by (momentum, or 1 / num_batches_tracked for momentum=None — a host
    read, as eager's)."""
    B, C, H, W = shape
    if B * H * W == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {torch.Size(shape)}")
    tracked = bn.num_batches_tracked  # read once: a Module.__getattr__ each (≈ 0.7 µs)
    if tracked is None or not bn.track_running_stats:
        return bn.momentum if bn.momentum is not None else 0.0
    tracked.add_(1)
    return bn.momentum if bn.momentum is not None else 1.0 / float(tracked)


def update_running_stats(running_mean: Tensor, running_var: Tensor, batch: Tensor, factor: float) -> None:
    """r ← r + factor · (batch - r) for the running mean and variance, one foreach launch (plus one
    copy when the buffers are not float32): ``batch`` [2, ...] holds the batch mean and its
    unbiased variance, in the buffers' shape after the first axis."""
    batch = batch.to(running_mean.dtype).reshape(2, *running_mean.shape)
    with torch.no_grad():
        torch._foreach_lerp_([running_mean, running_var], [batch[0], batch[1]], factor)
