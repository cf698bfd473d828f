"""Softmax-weighted ("context") pooling, GCNet's global context: ``tritattn::context_pool`` (2 kernels)
and its backward (1 kernel and a fixed-order sum of a small workspace).

For x [B, C, H, W], the 1×1 conv to one channel (weight w [C], bias) and p over the H·W pixels:

    α[b, :]   = softmax_p(Σ_c w[c] · x[b, c, p] + bias)
    ctx[b, c] = Σ_p α[b, p] · x[b, c, p]

— timm's ``GlobalContext`` with ``use_attn=True``. Eager runs the conv (a pass over x writing an
[B, 1, H, W] map), the softmax and a batched matmul (a second pass over x); here x is read from
HBM once (kernels/context_pool.py): each program forms its pixels' logits over C, then re-reads
its tile from cache to accumulate Σ_p e^{logit - m} · x with its own running max m, and a second
tiny launch merges the programs' partials exactly (flash-decoding's stable softmax). The
backward reads x once too and writes grad_x.

Saved for backward: x, w and stats [B, C + 2] in ACC (float32; float64 for float64 x) — the
softmax's max M and normaliser L per sample and ctx unrounded — never the [B, H·W] attention map
(eager saves the softmax output and the conv output). Everything is summed in a fixed order
without atomics: bitwise repeatable.

The ops run on the Triton kernels (GPU or interpreter) or, where :func:`tritattn.backend_for`
says "torch", on the eager formulas below, which accumulate in ACC the same way.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import eager_ops
from .backend import TRITON_AVAILABLE, backend_for
from .checks import check_feature_map, check_tensor
from .excitation_block import acc_dtype
from .layout import addressable
from .ops import _empty_like_4d, _new

if TRITON_AVAILABLE:
    from . import launch


# --- the ops -----------------------------------------------------------------------------------

def _alloc_forward(x: Tensor) -> tuple[Tensor, Tensor]:
    B, C = x.shape[:2]
    return _new((B, C), x.dtype, x.device), _new((B, C + 2), acc_dtype(x), x.device)


@torch.library.custom_op("tritattn::context_pool", mutates_args=())
def context_pool_op(x: Tensor, w: Tensor, bias: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """(ctx [B, C] in x's dtype, stats [B, C + 2] in ACC: the softmax's max M, its normaliser L and
    ctx unrounded, for the backward). w: the conv's weight flattened to [C]; bias [1] or None
    (softmax is shift-invariant: the bias does not change ctx, it is an input for its gradient)."""
    x = addressable(x)
    ctx, stats = _alloc_forward(x)
    if not x.numel():
        return ctx, stats
    w = w.contiguous()
    if backend_for(x) == "torch":
        eager_ops.context_pool_fwd(x, w, ctx, stats)
        return ctx, stats
    rows, acc = launch.context_pool_programs(x), acc_dtype(x)
    part, pstats = _new((rows, x.shape[1]), acc, x.device), _new((rows, 2), acc, x.device)
    launch.context_pool_fwd(x, w, part, pstats, ctx, stats)
    return ctx, stats


@context_pool_op.register_fake
def _(x, w, bias):
    return _alloc_forward(x)


def _alloc_backward(x: Tensor, w: Tensor, bias: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    like = bias if bias is not None else w
    return _empty_like_4d(x), _new(w.shape, w.dtype, w.device), _new((1,), like.dtype, like.device)


@torch.library.custom_op("tritattn::context_pool_backward", mutates_args=())
def context_pool_backward(
    grad_ctx: Tensor, x: Tensor, w: Tensor, bias: Optional[Tensor], stats: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """(grad_x in x's memory format, grad_w [C], grad_bias [1] — in bias's dtype, w's without a
    bias): dlogit = α · (Σ_c dctx · x - Σ_c dctx · ctx), grad_x = α · dctx + dlogit · w,
    grad_w = Σ_b Σ_p dlogit · x, grad_bias = Σ_b Σ_p dlogit."""
    x = addressable(x)
    grad_x, grad_w, grad_bias = _alloc_backward(x, w, bias)
    if not x.numel():
        grad_w.zero_(), grad_bias.zero_()
        return grad_x, grad_w, grad_bias
    w = w.contiguous()
    if backend_for(x) == "torch":
        gw, gb = eager_ops.context_pool_bwd(grad_ctx, x, w, stats, grad_x)
    else:
        C = x.shape[1]
        wpart = _new((launch.context_pool_programs(x), C + 1), acc_dtype(x), x.device)
        launch.context_pool_bwd(grad_ctx, x, w, stats, grad_x, wpart)
        total = wpart.sum(0)  # a fixed-order reduction (no atomics): deterministic
        gw, gb = total[:C], total[C:]
    grad_w.copy_(gw)
    grad_bias.copy_(gb)
    return grad_x, grad_w, grad_bias


@context_pool_backward.register_fake
def _(grad_ctx, x, w, bias, stats):
    return _alloc_backward(x, w, bias)


def _setup(ctx, inputs, output) -> None:
    x, w, bias = inputs
    _, stats = output
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x, w, bias, stats)
    ctx.mark_non_differentiable(stats)
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_ctx, _grad_stats):
    x, w, bias, stats = ctx.saved_tensors
    if grad_ctx is None:
        return None, None, None
    grad_x, grad_w, grad_bias = torch.ops.tritattn.context_pool_backward(grad_ctx, x, w, bias, stats)
    return grad_x, grad_w, grad_bias if ctx.has_bias else None


context_pool_op.register_autograd(_backward, setup_context=_setup)


# --- the public function -----------------------------------------------------------------------

def context_pool(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """GCNet's global context of x [B, C, H, W]: ``ctx[b, c] = Σ_p softmax_p(w · x[b, :, p] + bias) · x[b, c, p]``
    → [B, C] in x's dtype, differentiable in x, weight and bias.

    ``weight``: the 1×1 conv's weight, [C] or [1, C, 1, 1] (``conv_attn.weight``); ``bias``: [1]
    or None. The softmax is stable (a running max) and everything accumulates in float32
    (float64 for float64 x); x is read once, in place for NCHW and channels_last.
    """
    check_feature_map(x)
    C = x.shape[1]
    check_tensor(weight, "weight")
    if weight.numel() != C or (weight.dim() != 1 and tuple(weight.shape) != (1, C, 1, 1)):
        raise ValueError(f"weight must have shape ({C},) or (1, {C}, 1, 1) — the 1×1 conv from x's {C} channels "
                         f"to one — got {tuple(weight.shape)}")
    if weight.device != x.device:
        raise ValueError(f"weight is on {weight.device} but x is on {x.device}; move them to one device")
    if bias is not None:
        check_tensor(bias, "bias")
        if tuple(bias.shape) != (1,):
            raise ValueError(f"bias must have shape (1,) (the conv's one output channel), got {tuple(bias.shape)}")
        if bias.device != x.device:
            raise ValueError(f"bias is on {bias.device} but x is on {x.device}; move them to one device")
    return torch.ops.tritattn.context_pool(x, weight.reshape(C), bias)[0]
