"""Public functional ops: one ``torch.autograd.Function`` per operation, each forward and
backward a custom op from :mod:`tritattn.ops` (so torch.compile traces them whole).

================  ====================================================  ======================
op                computes                                              saved for backward
================  ====================================================  ======================
squeeze           mean and/or max of x over H×W → [B, C]                with max: x, max, ties [#]_
excite_scale      act(x · gate(s)[b, c] + residual)                     x, s (+ y for relu)
spatial_pool      concat(mean over C, max over C) → [B, 2, H, W]        x, pooled, ties
spatial_scale     x · gate(t)[b, 0, h, w]                               x, t
================  ====================================================  ======================

.. [#] the mean alone saves nothing: its gradient is grad_mean / (H·W) broadcast as a view, which
   autograd adds to the scaling op's grad_x without writing a plane of its own.

Max pooling follows ``torch.amax``: NaN propagates, and the gradient is split evenly between
tied maxima.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from . import ops  # noqa: F401  (registers torch.ops.tritattn.*)
from .checks import check_act, check_choice, check_companion, check_feature_map, check_gate, check_logits

SqueezeMode = Literal["mean", "max", "mean_max"]


class SqueezeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, want_mean: bool, want_max: bool):
        mean, maximum, count = torch.ops.tritattn.squeeze(x, want_mean, want_max)
        ctx.want_mean, ctx.want_max, ctx.x_shape = want_mean, want_max, x.shape
        ctx.save_for_backward(x if want_max else None, maximum, count)
        return mean, maximum

    @staticmethod
    def backward(ctx, grad_mean: Tensor, grad_max: Tensor):
        x, maximum, count = ctx.saved_tensors
        if not ctx.want_max:
            # The mean's gradient, grad_mean / (H·W) on every element, stays a broadcast view (as in
            # torch's own mean backward): no plane is written, and autograd's sum with the scaling
            # op's grad_x reads it for free.
            B, C, H, W = ctx.x_shape
            return (grad_mean / (H * W))[:, :, None, None].expand(ctx.x_shape), None, None
        grad_x = torch.ops.tritattn.squeeze_backward(
            x,
            grad_mean if ctx.want_mean else None,
            grad_max if ctx.want_max else None,
            maximum if ctx.want_max else None,
            count if ctx.want_max else None,
        )
        return grad_x, None, None


class ExciteScaleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, s: Tensor, residual: Tensor | None, gate: str, act: str):
        y = torch.ops.tritattn.excite_scale(x, s, residual, gate, act)
        ctx.gate, ctx.act, ctx.has_residual = gate, act, residual is not None
        ctx.save_for_backward(x, s, y if act == "relu" else None)
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x, s, y = ctx.saved_tensors
        want_grad_res = ctx.has_residual and ctx.act != "identity" and ctx.needs_input_grad[2]
        grad_x, grad_s, grad_res = torch.ops.tritattn.excite_scale_backward(
            grad_y, x, s, y, ctx.gate, ctx.act, want_grad_res
        )
        if not ctx.has_residual:
            grad_res = None
        elif ctx.act == "identity":
            grad_res = grad_y  # d(y)/d(residual) is the identity
        return grad_x, grad_s, grad_res, None, None


class SpatialPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor):
        pooled, count = torch.ops.tritattn.spatial_pool(x)
        ctx.save_for_backward(x, pooled, count)
        return pooled

    @staticmethod
    def backward(ctx, grad_pooled: Tensor):
        x, pooled, count = ctx.saved_tensors
        return torch.ops.tritattn.spatial_pool_backward(x, grad_pooled, pooled, count)


class SpatialScaleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, t: Tensor, gate: str):
        ctx.gate = gate
        ctx.save_for_backward(x, t)
        return torch.ops.tritattn.spatial_scale(x, t, gate)

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x, t = ctx.saved_tensors
        grad_x, grad_t = torch.ops.tritattn.spatial_scale_backward(grad_y, x, t, ctx.gate)
        return grad_x, grad_t, None


def squeeze(x: Tensor, mode: SqueezeMode = "mean") -> Tensor | tuple[Tensor, Tensor]:
    """Per-(b, c) pooling of x [B, C, H, W] over H×W, accumulated in float32.

    ``mode="mean"`` → mean [B, C]; ``"max"`` → max [B, C] (as ``torch.amax``);
    ``"mean_max"`` → (mean, max) from a single pass over x. Outputs have x's dtype.
    """
    check_feature_map(x)
    check_choice(mode, "mode", ("mean", "max", "mean_max"))
    mean, maximum = SqueezeFunction.apply(x, mode != "max", mode != "mean")
    return {"mean": mean, "max": maximum}.get(mode, (mean, maximum))


def excite_scale(
    x: Tensor, s: Tensor, gate: str = "sigmoid", residual: Tensor | None = None, act: str = "identity"
) -> Tensor:
    """y = act(x · gate(s)[b, c] + residual) in one pass over x.

    x: [B, C, H, W]; s: excitation logits [B, C] or [B, C, 1, 1] (the output of an SE block's
    last 1×1 conv, before its gate); gate: "sigmoid" or "hard_sigmoid"; residual: optional,
    x's shape; act: "identity" or "relu" (the SE-ResNet bottleneck tail: relu(se(x) + shortcut)).
    The result has x's dtype and memory format.
    """
    check_feature_map(x)
    B, C = x.shape[:2]
    check_logits(s, x)
    if residual is not None:
        check_companion(residual, "residual", x, tuple(x.shape))
    check_gate(gate)
    check_act(act)
    return ExciteScaleFunction.apply(x, s.reshape(B, C), residual, gate, act)


def spatial_pool(x: Tensor) -> Tensor:
    """CBAM's spatial descriptor: concat(mean over C, max over C) → [B, 2, H, W], x's dtype and format."""
    check_feature_map(x)
    return SpatialPoolFunction.apply(x)


def spatial_scale(x: Tensor, t: Tensor, gate: str = "sigmoid") -> Tensor:
    """y = x · gate(t)[b, 0, h, w]: CBAM's spatial attention applied, t the [B, 1, H, W] conv output."""
    check_feature_map(x)
    B, _, H, W = x.shape
    check_companion(t, "t", x, (B, 1, H, W))
    check_gate(gate)
    return SpatialScaleFunction.apply(x, t, gate)
