"""How a [B, C, H, W] tensor is seen by the kernels: as [B, R, K] through three strides."""
from __future__ import annotations

from typing import Literal

import torch

Axis = Literal["channel", "spatial"]  # "channel": R = C, K = H×W;  "spatial": R = H×W, K = C


def flat_spatial_stride(t: torch.Tensor) -> int | None:
    """The stride of the flattened H×W index p = h·W + w of t [..., H, W] (a map [B, C, H, W] or
    branches [B, R, C, H, W]), or None when no single stride exists."""
    H, W = t.shape[-2:]
    if H == 1:
        return t.stride(-1)
    if W == 1:
        return t.stride(-2)
    if t.stride(-2) == W * t.stride(-1):
        return t.stride(-1)
    return None


def addressable(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when the kernels can address it by strides, else a contiguous copy.

    NCHW-contiguous, channels_last and their broadcast (stride-0) views are addressed in place;
    other layouts (e.g. a transposed H/W) are copied once rather than read with wrong strides.
    """
    return t if flat_spatial_stride(t) is not None else t.contiguous()


def plane_strides(t: torch.Tensor, axis: Axis) -> tuple[int, int, int]:
    """(batch, row, column) strides of ``t`` viewed as [B, R, K] for ``axis``."""
    sp = flat_spatial_stride(t)
    assert sp is not None, "call addressable() first"
    sb, sc = t.stride(0), t.stride(1)
    return (sb, sc, sp) if axis == "channel" else (sb, sp, sc)


def vector_strides(v: torch.Tensor, axis: Axis) -> tuple[int, int]:
    """(batch, row) strides of a per-row vector: [B, C] for "channel", [B, 1, H, W] for "spatial"."""
    if axis == "channel":
        return v.stride(0), v.stride(1)
    sp = flat_spatial_stride(v)
    assert sp is not None, "call addressable() first"
    return v.stride(0), sp
