"""CBAM and light CBAM as one differentiable unit: ``tritattn::cbam_block`` (4 kernels) and its
backward (4 kernels), in training as in inference.

Forward: squeeze_excite_fwd (the channel branch's pooling and shared MLP → s_c) →
gated_spatial_pool_fwd (the spatial descriptor d of z = x · gate_c(s_c), never written) →
spatial_conv_fwd (the k×k conv → u over (sample, pixel tile) programs; the BatchNorm as
t = a · u + c, from the batch statistics merged in a fixed-order tree in training or the running
ones in eval) → doubly_gated_scale_fwd (y = z · gate_s(t)). Eager runs about 18 kernels and 8
passes over x-sized tensors; this runs 4 and 4 (kernels/cbam_spatial.py), no program of them
looping over the batch or a whole map.

Backward: cbam_spatial_bwd_reduce (Σ_c grad_y · z → grad_t, the BatchNorm's gradients) →
spatial_conv_bwd (grad_u, the transposed conv, the conv's gradient) → the channel branch's
excitation_bwd_reduce and excitation_bwd_apply with ∂L/∂z formed on the fly (act_out "spatial"):
grad_x and the MLP's gradients (kernels/cbam_spatial_bwd.py, kernels/excitation.py).

Saved for backward: x, and per sample s_c [B, C] and u [B, H·W] (float32) and the BatchNorm's
(a, c, μ, 1/σ, v): never an x-sized intermediate (eager saves z and its gated copy, the descriptor,
the conv and BatchNorm inputs and the gates).

The op is functional (autograd needs it so): in training the module
(:class:`tritattn.modules.CbamPipeline`) counts num_batches_tracked and moves the running
statistics with the batch's (:func:`tritattn.batchnorm.update_running_stats`), as ``nn.BatchNorm2d`` does.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import dispatch, workspaces
from .excitation_block import acc_dtype, channel_backward, pipeline_spec, pooled_workspace
from .functions import differentiable
from .layout import addressable
from .ops import _empty_like_4d, _new, _new_as, _nothing, _optional


def _alloc_forward(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    B, C, H, W = x.shape
    acc = acc_dtype(x)
    return _empty_like_4d(x), _new((B, C), acc, x.device), _new((B, H * W), acc, x.device), _new((5,), acc, x.device)


@torch.library.custom_op("tritattn::cbam_block", mutates_args=())
def cbam_block(
    x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor], pool: str, act: str, gate_c: str,
    conv_w: Tensor, bn_weight: Tensor, bn_bias: Tensor, bn_running_mean: Tensor, bn_running_var: Tensor,
    bn_eps: float, bn_training: bool, gate_s: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, s, u, affine): y = CBAM(x); pool "mean_max_both" with a 2-channel conv_w [1, 2, k, k]
    (CBAM), or "mean_max_avg" with [1, 1, k, k] (light CBAM); the shared MLP w1 [RD, C], b1,
    w2 [C, RD], b2. s [B, C] (channel logits), u [B, H·W] (conv output) and affine (a, c, μ, 1/σ, v)
    are kept for the backward. With ``bn_training`` the BatchNorm normalises by the batch
    statistics μ and σ² (v: the unbiased σ², for the running variance); the op mutates nothing:
    the caller moves the running statistics (:func:`tritattn.batchnorm.update_running_stats`)."""
    from . import launch

    x = addressable(x)
    y, s, u, affine = _alloc_forward(x)
    if not x.numel():
        s.zero_(), u.zero_(), affine.zero_()
        return y, s, u, affine
    B, C, H, W = x.shape
    P, D, KS = H * W, conv_w.shape[1], conv_w.shape[2]
    acc = acc_dtype(x)
    rows, slots = launch.cbam_forward_workspace(B, P, D, KS, bn_training)
    counter = workspaces.counters(x.device, max(B, slots))  # squeeze_excite_fwd's B, then the conv's tree
    launch.squeeze_excite_fwd(x, w1, b1, w2, b2, *pipeline_spec(pool, "fc_act_fc", act, w1, C),
                              *pooled_workspace(x, pool), s, counter)
    d = _new((B, D, P), acc, x.device)
    part = _new((max(rows, 1), launch.MOMENTS_WIDTH), acc, x.device)
    launch.cbam_spatial_forward(x, s, gate_c, gate_s, conv_w.contiguous(),
                                (bn_weight, bn_bias, bn_running_mean, bn_running_var), bn_eps, bn_training,
                                d, u, part, affine, counter, y)
    return y, s, u, affine


@cbam_block.register_fake
def _(x, w1, b1, w2, b2, pool, act, gate_c, conv_w, bn_weight, bn_bias, bn_running_mean, bn_running_var,
      bn_eps, bn_training, gate_s):
    return _alloc_forward(addressable(x))


def _alloc_backward(x: Tensor, params: tuple) -> tuple[Tensor, ...]:
    return (_empty_like_4d(x),) + tuple(_new_as(t) if t is not None else _nothing(x) for t in params)


@torch.library.custom_op("tritattn::cbam_block_backward", mutates_args=())
def cbam_block_backward(
    grad_y: Tensor, x: Tensor, s: Tensor, u: Tensor, affine: Tensor,
    w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor], pool: str, act: str, gate_c: str,
    conv_w: Tensor, bn_weight: Tensor, bn_bias: Tensor, bn_training: bool, gate_s: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(grad_x, grad_w1, grad_b1, grad_w2, grad_b2, grad_conv_w, grad_bn_weight, grad_bn_bias); an
    absent bias's is empty."""
    from . import launch

    x, grad_y = addressable(x), addressable(grad_y)
    out = _alloc_backward(x, (w1, b1, w2, b2, conv_w, bn_weight, bn_bias))
    grad_x, gw1, gb1, gw2, gb2, gconv, gbnw, gbnb = out
    B, C, H, W = x.shape
    if not x.numel():
        for g in out[1:]:
            g.zero_()
        return out
    P, D, KS = H * W, conv_w.shape[1], conv_w.shape[2]
    acc = acc_dtype(x)
    sum_rows, w_rows, slots = launch.cbam_backward_workspace(B, P, D, KS)
    work = dict(
        grad_t=_new((B, P), acc, x.device), d=_new((B, D, P), acc, x.device), sp=_new((B, 4, P), acc, x.device),
        ties=_new((B, P), torch.int32, x.device), part=_new((max(sum_rows, 1), launch.BN_SUMS_WIDTH), acc, x.device),
        sums=_new((2,), acc, x.device),
        wpart=_new((max(w_rows, 1), launch.spatial_conv_tile(P, D, KS)[1]), acc, x.device),
    )
    launch.cbam_spatial_backward(grad_y, x, s, u, affine, gate_c, gate_s, conv_w.contiguous(), bn_training, work,
                                 workspaces.counters(x.device, max(slots, 1)), gconv, gbnw, gbnb)
    channel_backward(grad_y, x, None, s, (w1, b1, w2, b2), pool, "fc_act_fc", act, gate_c, "spatial",
                     grad_x, None, [_optional(g) for g in (gw1, gb1, gw2, gb2)], work["sp"])
    return out


@cbam_block_backward.register_fake
def _(grad_y, x, s, u, affine, w1, b1, w2, b2, pool, act, gate_c, conv_w, bn_weight, bn_bias, bn_training, gate_s):
    return _alloc_backward(addressable(x), (w1, b1, w2, b2, conv_w, bn_weight, bn_bias))


def _setup(ctx, inputs, output) -> None:
    x, w1, b1, w2, b2, pool, act, gate_c, conv_w, bn_weight, bn_bias, _rm, _rv, _eps, bn_training, gate_s = inputs
    _, s, u, affine = output
    ctx.config = (pool, act, gate_c, bn_training, gate_s)
    ctx.save_for_backward(x, s, u, affine, w1, b1, w2, b2, conv_w, bn_weight, bn_bias)
    ctx.mark_non_differentiable(s, u, affine)
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_y, _grad_s, _grad_u, _grad_affine):
    x, s, u, affine, w1, b1, w2, b2, conv_w, bn_weight, bn_bias = ctx.saved_tensors
    pool, act, gate_c, bn_training, gate_s = ctx.config
    grad_x, gw1, gb1, gw2, gb2, gconv, gbnw, gbnb = dispatch.call(
        cbam_block_backward, grad_y, x, s, u, affine, w1, b1, w2, b2, pool, act, gate_c, conv_w, bn_weight, bn_bias, bn_training, gate_s)
    return (grad_x, gw1, gb1 if b1 is not None else None, gw2, gb2 if b2 is not None else None, None, None, None,
            gconv, gbnw, gbnb, None, None, None, None, None)


CbamBlock = differentiable(cbam_block, _setup, _backward)  # registers the formula, too
