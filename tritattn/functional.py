"""Public functional ops: argument checks, then the custom ops of :mod:`tritattn.ops`, which
are differentiable through the autograd formulas of :mod:`tritattn.autograd` (and opaque to
``torch.compile``, which traces them whole).

================  ====================================================
op                computes
================  ====================================================
squeeze           mean and/or max of x over H×W → [B, C]
excite_scale      act(x · gate(s)[b, c] + residual)
spatial_pool      concat(mean over C, max over C) → [B, 2, H, W]
spatial_scale     x · gate(t)[b, 0, h, w]
================  ====================================================

Max pooling follows ``torch.amax``: NaN propagates, and the gradient is split evenly between
tied maxima.

Each differentiable op is also a ``torch.autograd.Function`` (:mod:`tritattn.functions`),
differentiated by the formula registered on the op itself. ``X.apply`` takes the raw op's
arguments positionally (no keywords), in its schema order (trailing defaulted ones may be left
out), checks nothing, and returns all of the op's outputs:

===============  ======================================================================  =====================
class            ``apply`` arguments (the op's schema order)                             returns
===============  ======================================================================  =====================
Squeeze          x, want_mean, want_max                                                  (mean, max, ties)
SpatialPool      x                                                                       (pooled, ties)
ExciteScale      x, s [B, C], residual, gate, act                                        y
SpatialScale     x, t, gate                                                              y
ExcitationBlock  x, residual, w1, b1, w2, b2, pool, mlp, act, gate, act_out, bn_* …      (y, s, stats, hidden)
CbamBlock        x, w1, b1, w2, b2, pool, act, gate_c, conv_w, bn_* …, bn_training,      (y, s, u, affine)
                 gate_s
RadixPool        x5                                                                      pooled
RadixCombine     x5, a                                                                   out
ContextPool      x, w [C], bias                                                          (ctx, stats)
===============  ======================================================================  =====================

(``help(X)`` prints the full argument list with defaults.) The inference-only block ops,
``tritattn::radix_attention`` and ``tritattn::context_mlp``, have no backward and no class.

Each public function checks its arguments, then calls its op through :func:`tritattn.dispatch.call`
(the op's implementation without the dispatcher where nothing needs it: the same results). The
``*_unchecked`` forms skip the checks, for callers that made them (the modules check x once per
call).
"""
from __future__ import annotations

from typing import Literal

from torch import Tensor

from . import ops
from .autograd import ExciteScale, SpatialPool, SpatialScale, Squeeze  # (registers the ops' formulas, too)
from .cbam_block import CbamBlock
from .checks import check_act, check_choice, check_companion, check_feature_map, check_gate, check_logits
from .context_block import ContextPool
from .dispatch import call
from .excitation_block import ExcitationBlock
from .radix_block import RadixCombine, RadixPool
from .tracing import leaf_function

__all__ = [
    "squeeze", "excite_scale", "spatial_pool", "spatial_scale", "SqueezeMode",
    "Squeeze", "SpatialPool", "ExciteScale", "SpatialScale", "ExcitationBlock", "CbamBlock", "RadixPool",
    "RadixCombine", "ContextPool",
]

SqueezeMode = Literal["mean", "max", "mean_max"]


@leaf_function
def squeeze(x: Tensor, mode: SqueezeMode = "mean") -> Tensor | tuple[Tensor, Tensor]:
    """Per-(b, c) pooling of x [B, C, H, W] over H×W, accumulated in float32.

    ``mode="mean"`` → mean [B, C]; ``"max"`` → max [B, C] (as ``torch.amax``);
    ``"mean_max"`` → (mean, max) from a single pass over x. Outputs have x's dtype.
    """
    check_feature_map(x)
    check_choice(mode, "mode", ("mean", "max", "mean_max"))
    return squeeze_unchecked(x, mode)


@leaf_function
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
    check_logits(s, x)
    if residual is not None:
        check_companion(residual, "residual", x, tuple(x.shape))
    check_gate(gate)
    check_act(act)
    return excite_scale_unchecked(x, s, gate, residual, act)


@leaf_function
def spatial_pool(x: Tensor) -> Tensor:
    """CBAM's spatial descriptor: concat(mean over C, max over C) → [B, 2, H, W], x's dtype and format."""
    check_feature_map(x)
    return spatial_pool_unchecked(x)


@leaf_function
def spatial_scale(x: Tensor, t: Tensor, gate: str = "sigmoid") -> Tensor:
    """y = x · gate(t)[b, 0, h, w]: CBAM's spatial attention applied, t the [B, 1, H, W] conv output."""
    check_feature_map(x)
    B, _, H, W = x.shape
    check_companion(t, "t", x, (B, 1, H, W))
    check_gate(gate)
    return spatial_scale_unchecked(x, t, gate)


# The same ops for a caller that has checked its arguments itself (the modules check x once per
# call, and build s, t, gate and act themselves): no second check, and the custom op called
# through tritattn.dispatch (its implementation directly where the dispatcher adds nothing).

def squeeze_unchecked(x: Tensor, mode: SqueezeMode = "mean") -> Tensor | tuple[Tensor, Tensor]:
    """:func:`squeeze` without its argument checks: x and mode must be valid."""
    mean, maximum, _ = call(ops.squeeze, x, mode != "max", mode != "mean")
    return {"mean": mean, "max": maximum}.get(mode, (mean, maximum))


def excite_scale_unchecked(x: Tensor, s: Tensor, gate: str = "sigmoid", residual: Tensor | None = None,
                           act: str = "identity") -> Tensor:
    """:func:`excite_scale` without its argument checks: x, s (B·C logits), residual, gate and act must be valid."""
    return call(ops.excite_scale, x, s.reshape(x.shape[:2]), residual, gate, act)


def spatial_pool_unchecked(x: Tensor) -> Tensor:
    """:func:`spatial_pool` without its argument check: x must be valid."""
    return call(ops.spatial_pool, x)[0]


def spatial_scale_unchecked(x: Tensor, t: Tensor, gate: str = "sigmoid") -> Tensor:
    """:func:`spatial_scale` without its argument checks: x, t [B, 1, H, W] and gate must be valid."""
    return call(ops.spatial_scale, x, t, gate)
