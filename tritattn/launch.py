"""Host-side launchers: allocate nothing, check nothing, just map tensors onto kernel arguments.

Each function takes already-validated, kernel-addressable tensors (see :mod:`tritattn.layout`)
and preallocated outputs, picks the tile and grid, and launches one kernel.
The functions mirror :mod:`tritattn.eager_ops` name for name.
"""
from __future__ import annotations

import contextlib

import torch
import triton.language as tl

from .kernels import tiling
from .kernels import gated_scale, mean_max
from .layout import Axis, plane_strides, vector_strides

NUM_WARPS = 4


def _acc_dtype(t: torch.Tensor):
    return tl.float64 if t.dtype == torch.float64 else tl.float32


def _extent(x: torch.Tensor, axis: Axis) -> tuple[int, int, int]:
    B, C, H, W = x.shape
    return (B, C, H * W) if axis == "channel" else (B, H * W, C)


def _tile(R: int, K: int, x_strides: tuple[int, int, int]) -> tuple[int, int]:
    _, sr, sk = x_strides
    return tiling.tile_shape(R, K, rows_contiguous=sr < sk, tile_elements=tiling.TILE_ELEMENTS)


def _device_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def mean_max_fwd(
    x: torch.Tensor, axis: Axis, mean: torch.Tensor | None, maximum: torch.Tensor | None, count: torch.Tensor | None
) -> None:
    """mean / max (and tie count) of x over the K axis of ``axis`` into the given per-row vectors."""
    B, R, K = _extent(x, axis)
    xs = plane_strides(x, axis)
    block_r, block_k = _tile(R, K, xs)
    ms = vector_strides(mean, axis) if mean is not None else (0, 0)
    Ms = vector_strides(maximum, axis) if maximum is not None else (0, 0)
    with _device_guard(x):
        mean_max.mean_max_fwd[tiling.rows_grid(B, R, block_r)](
            x, mean, maximum, count, R, K, *xs, *ms, *Ms,
            WANT_MEAN=mean is not None, WANT_MAX=maximum is not None,
            ACC=_acc_dtype(x), BLOCK_R=block_r, BLOCK_K=block_k, num_warps=NUM_WARPS,
        )


def mean_max_bwd(
    x: torch.Tensor, axis: Axis, grad_mean: torch.Tensor | None, grad_max: torch.Tensor | None,
    maximum: torch.Tensor | None, count: torch.Tensor | None, grad_x: torch.Tensor,
) -> None:
    """grad_x = grad_mean / K + [x == max] · grad_max / count, broadcast along K."""
    B, R, K = _extent(x, axis)
    xs = plane_strides(x, axis)
    block_r, block_k = _tile(R, K, xs)
    gms = vector_strides(grad_mean, axis) if grad_mean is not None else (0, 0)
    gMs = vector_strides(grad_max, axis) if grad_max is not None else (0, 0)
    Ms = vector_strides(maximum, axis) if maximum is not None else (0, 0)
    with _device_guard(x):
        mean_max.mean_max_bwd[tiling.elementwise_grid(B, R, K, block_r, block_k)](
            x, grad_mean, grad_max, maximum, count, grad_x, R, K,
            *xs, *plane_strides(grad_x, axis), *gms, *gMs, *Ms,
            HAS_MEAN=grad_mean is not None, HAS_MAX=grad_max is not None,
            ACC=_acc_dtype(x), BLOCK_R=block_r, BLOCK_K=block_k, num_warps=NUM_WARPS,
        )


def gated_scale_fwd(
    x: torch.Tensor, s: torch.Tensor, residual: torch.Tensor | None, y: torch.Tensor,
    axis: Axis, gate: str, act: str,
) -> None:
    """y = act(x · gate(s) + residual), s broadcast along the K axis of ``axis``."""
    B, R, K = _extent(x, axis)
    xs = plane_strides(x, axis)
    block_r, block_k = _tile(R, K, xs)
    rs = plane_strides(residual, axis) if residual is not None else (0, 0, 0)
    with _device_guard(x):
        gated_scale.gated_scale_fwd[tiling.elementwise_grid(B, R, K, block_r, block_k)](
            x, s, residual, y, R, K, *xs, *vector_strides(s, axis), *rs, *plane_strides(y, axis),
            GATE=gate, HAS_RESIDUAL=residual is not None, ACT=act,
            ACC=_acc_dtype(x), BLOCK_R=block_r, BLOCK_K=block_k, num_warps=NUM_WARPS,
        )


def gated_scale_bwd(
    grad_y: torch.Tensor, x: torch.Tensor, s: torch.Tensor, y: torch.Tensor | None,
    grad_x: torch.Tensor, grad_res: torch.Tensor | None, grad_s: torch.Tensor,
    axis: Axis, gate: str, act: str,
) -> None:
    """grad_x, grad_s (and grad_residual for relu) of gated_scale in one pass over grad_y and x."""
    B, R, K = _extent(x, axis)
    xs = plane_strides(x, axis)
    block_r, block_k = _tile(R, K, xs)
    ys = plane_strides(y, axis) if y is not None else (0, 0, 0)
    grs = plane_strides(grad_res, axis) if grad_res is not None else (0, 0, 0)
    with _device_guard(x):
        gated_scale.gated_scale_bwd[tiling.rows_grid(B, R, block_r)](
            grad_y, x, s, y, grad_x, grad_res, grad_s, R, K,
            *plane_strides(grad_y, axis), *xs, *vector_strides(s, axis), *ys,
            *plane_strides(grad_x, axis), *grs, *vector_strides(grad_s, axis),
            GATE=gate, ACT=act, WRITE_GRAD_RES=grad_res is not None,
            ACC=_acc_dtype(x), BLOCK_R=block_r, BLOCK_K=block_k, num_warps=NUM_WARPS,
        )
