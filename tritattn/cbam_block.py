"""CBAM and light CBAM in inference as one pipeline of 3 kernels: ``tritattn::cbam_eval``.

squeeze_excite_fwd (the channel branch's pooling and shared MLP → s_c) → gated_spatial_pool_fwd
(the spatial descriptor of z = x · gate_c(s_c), never written, then the k×k conv and the eval
BatchNorm per sample → t) → doubly_gated_scale_fwd (y = z · gate_s(t)). Eager runs about 18
kernels and 8 passes over x-sized tensors; this runs 3 and 4 (kernels/cbam_spatial.py).

Inference only: the op has no backward. :meth:`tritattn.modules.CbamModule.forward` takes it
when no gradient is wanted (``torch.no_grad()`` / ``inference_mode``, or nothing requires grad)
and the spatial BatchNorm uses its running statistics; otherwise the two branches run as in
training (the channel block pipeline, then the spatial per-op path).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .excitation_block import acc_dtype, counters, pipeline_spec, pooled_workspace
from .layout import addressable
from .ops import _empty_like_4d, _new


@torch.library.custom_op("tritattn::cbam_eval", mutates_args=())
def cbam_eval(
    x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor], pool: str, act: str, gate_c: str,
    conv_w: Tensor, bn_weight: Tensor, bn_bias: Tensor, bn_mean: Tensor, bn_var: Tensor, bn_eps: float, gate_s: str,
) -> Tensor:
    """y = CBAM(x): pool "mean_max_both" with a 2-channel conv_w [1, 2, k, k] (CBAM), or
    "mean_max_avg" with [1, 1, k, k] (light CBAM); the shared MLP w1 [RD, C], b1, w2 [C, RD], b2."""
    from . import launch

    x = addressable(x)
    y = _empty_like_4d(x)
    if not x.numel():
        return y
    B, C, H, W = x.shape
    acc = acc_dtype(x)
    s = _new((B, C), acc, x.device)
    counter = counters(x.device, B)
    launch.squeeze_excite_fwd(x, w1, b1, w2, b2, *pipeline_spec(pool, "fc_act_fc", act, w1, C),
                              *pooled_workspace(x, pool), s, counter)
    d = _new((B, conv_w.shape[1], H * W), acc, x.device)
    t = _new((B, H * W), acc, x.device)
    launch.cbam_spatial_eval(x, s, gate_c, gate_s, conv_w.contiguous(), (bn_weight, bn_bias, bn_mean, bn_var), bn_eps,
                             d, t, counter, y)
    return y


@cbam_eval.register_fake
def _(x, w1, b1, w2, b2, pool, act, gate_c, conv_w, bn_weight, bn_bias, bn_mean, bn_var, bn_eps, gate_s):
    return _empty_like_4d(addressable(x))
