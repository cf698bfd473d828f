"""The ``"torch"`` backend: the kernels' math in eager torch, same signatures as :mod:`tritattn.launch`.

Runs where no Triton kernel can (CPU without the interpreter, or no triton). Accumulates in
float32 (float64 for float64 inputs) and rounds once into the preallocated outputs, like the
kernels, so both backends give the same numbers up to summation order.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .layout import Axis


def _acc(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64 if t.dtype == torch.float64 else torch.float32)


def _reduced_dims(axis: Axis) -> tuple[int, ...]:
    return (2, 3) if axis == "channel" else (1,)


def _rows(v: torch.Tensor, axis: Axis) -> torch.Tensor:
    """A per-row vector ([B, C] or [B, 1, H, W]) as a tensor that broadcasts against x."""
    return v[:, :, None, None] if axis == "channel" else v


def gate_value(s: torch.Tensor, gate: str) -> torch.Tensor:
    return torch.sigmoid(s) if gate == "sigmoid" else F.hardsigmoid(s)


def gate_backward(s: torch.Tensor, grad: torch.Tensor, gate: str) -> torch.Tensor:
    """grad · gate'(s) as the kernels compute it (kernels/gates.py: the sigmoid's derivative as
    e / (1 + e)^2, e = exp(-|s|); hardsigmoid's backward selects, so 0 outside (-3, 3))."""
    if gate == "sigmoid":
        e = torch.exp(-s.abs())
        return grad * (e / ((1.0 + e) * (1.0 + e)))
    return torch.where((s > -3.0) & (s < 3.0), grad / 6.0, 0.0)


def mean_max_fwd(
    x: torch.Tensor, axis: Axis, mean: torch.Tensor | None, maximum: torch.Tensor | None, count: torch.Tensor | None
) -> None:
    dims = _reduced_dims(axis)
    if mean is not None:
        mean.copy_(_acc(x).mean(dims, keepdim=True).reshape(mean.shape))
    if maximum is not None:
        m = x.amax(dims, keepdim=True)
        maximum.copy_(m.reshape(maximum.shape))
        count.copy_((x == m).sum(dims).reshape(count.shape))


def mean_max_bwd(
    x: torch.Tensor, axis: Axis, grad_mean: torch.Tensor | None, grad_max: torch.Tensor | None,
    maximum: torch.Tensor | None, count: torch.Tensor | None, grad_x: torch.Tensor,
) -> None:
    K = x.shape[1] if axis == "spatial" else x.shape[2] * x.shape[3]
    g = torch.zeros(x.shape, dtype=_acc(x).dtype, device=x.device)
    if grad_mean is not None:
        g += _rows(_acc(grad_mean), axis) / K
    if grad_max is not None:
        n = count.reshape(_rows(grad_max, axis).shape)
        share = _rows(_acc(grad_max), axis) / n
        m = _rows(maximum, axis)
        g += torch.where(m.isnan(), float("nan"), torch.where(x == m, share, 0.0))  # as torch.amax's backward
    grad_x.copy_(g)


def gated_scale_fwd(
    x: torch.Tensor, s: torch.Tensor, residual: torch.Tensor | None, y: torch.Tensor,
    axis: Axis, gate: str, act: str,
) -> None:
    out = _acc(x) * gate_value(_rows(_acc(s), axis), gate)
    if residual is not None:
        out = out + _acc(residual)
    if act == "relu":
        out = torch.where(out < 0, 0.0, out)
    y.copy_(out)


def gated_scale_bwd(
    grad_y: torch.Tensor, x: torch.Tensor, s: torch.Tensor, y: torch.Tensor | None,
    grad_x: torch.Tensor, grad_res: torch.Tensor | None, grad_s: torch.Tensor,
    axis: Axis, gate: str, act: str,
) -> None:
    d = _acc(grad_y)
    if act == "relu":
        d = torch.where(y <= 0, 0.0, d)  # as torch's threshold_backward: a NaN y passes grad_y
    s_rows = _rows(_acc(s), axis)
    g = gate_value(s_rows, gate)
    grad_x.copy_(d * g)
    if grad_res is not None:
        grad_res.copy_(d)
    dot = (d * _acc(x)).sum(_reduced_dims(axis), keepdim=True)
    grad_s.copy_(gate_backward(s_rows, dot, gate).reshape(grad_s.shape))


# --- split attention / selective kernel (tritattn/radix_block.py): x5 [B, R, C, H, W] --------

def radix_pool_fwd(x5: torch.Tensor, pooled: torch.Tensor) -> None:
    pooled.copy_(_acc(x5).sum(1).mean((2, 3)))


#: the activations of the prologues and the in-kernel MLPs (kernels/norm_act.py's) as torch functions
_ACTIVATIONS = {"relu": torch.relu, "silu": F.silu, "hardswish": F.hardswish, "identity": lambda t: t}


def eval_batchnorm(norm: tuple, acc: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval BatchNorm (weight, bias, running mean, running var, eps) as h ↦ h · scale + shift,
    in ``acc``, with kernels/norm_act.py's formula (scale = weight · 1/σ, shift = bias − mean · scale)."""
    weight, bias, mean, var, eps = norm
    scale = weight.to(acc) * (1.0 / torch.sqrt(var.to(acc) + eps))
    return scale, bias.to(acc) - mean.to(acc) * scale


def radix_prologue(c5: torch.Tensor, prologue: tuple | None) -> torch.Tensor:
    """x5 = act(bn(c5)) of the conv output c5 [B, R, C, H, W] as the kernels' prologue computes it
    (kernels/radix_combine.py): bn the eval BatchNorm (weight, bias, running mean, running var,
    eps) [R·C] of channel r·C + c as c · scale + shift (or none), z and x each rounded to c5's
    dtype as eager materialises them; c5 itself without a prologue."""
    if prologue is None:
        return c5
    act, norm = prologue
    z = c5
    if norm is not None:
        B, R, C = c5.shape[:3]
        scale, shift = eval_batchnorm(norm, _acc(c5).dtype)
        z = (_acc(c5) * scale.view(R, C, 1, 1) + shift.view(R, C, 1, 1)).to(c5.dtype)
    return _ACTIVATIONS[act](_acc(z)).to(c5.dtype)


def radix_attention_weights(
    x5: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, norm: tuple | None, w2: torch.Tensor,
    b2: torch.Tensor | None, act: str,
) -> torch.Tensor:
    """radix_squeeze_attend_fwd's attention a [B, R, C] in the accumulator dtype: the radix softmax
    (sigmoid for R = 1) of W2 · act(bn(W1 · mean_hw(Σ_r x5) + b1)) + b2."""
    return radix_pooled_attention(_acc(x5).sum(1).mean((2, 3)), x5.shape[1], w1, b1, norm, w2, b2, act)


def radix_pooled_attention(
    pooled: torch.Tensor, R: int, w1: torch.Tensor, b1: torch.Tensor | None, norm: tuple | None, w2: torch.Tensor,
    b2: torch.Tensor | None, act: str,
) -> torch.Tensor:
    """The attention a [B, R, C] in pooled's dtype (the accumulator's) of the pooled vector [B, C]:
    the radix softmax (sigmoid for R = 1) of W2 · act(bn(W1 · pooled + b1)) + b2, as GEMMs over
    all samples (the split path's MLP, and the eager formula's)."""
    dt = pooled.dtype
    with without_autocast(pooled):
        h = F.linear(pooled, w1.to(dt), b1.to(dt) if b1 is not None else None)
        if norm is not None:
            scale, shift = eval_batchnorm(norm, dt)
            h = h * scale + shift
        z = F.linear(_ACTIVATIONS[act](h), w2.to(dt), b2.to(dt) if b2 is not None else None)
    z = z.view(pooled.shape[0], R, pooled.shape[1])
    return z.sigmoid() if R == 1 else z.softmax(1)


def autocast_on(t: torch.Tensor) -> bool:
    """Whether autocast is on for t's device (whether the device type has autocast at all is asked once)."""
    device = t.device.type
    available = _AUTOCAST_AVAILABLE.get(device)
    if available is None:
        available = _AUTOCAST_AVAILABLE[device] = torch.amp.is_autocast_available(device)
    return available and torch.is_autocast_enabled(device)


#: device type → whether autocast exists for it (fixed for the process)
_AUTOCAST_AVAILABLE: dict[str, bool] = {}


def without_autocast(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off on t's device (where it has one): GEMMs on the accumulator's [B, ·] vectors keep
    its dtype under mixed precision, as the kernels' own sums do."""
    if autocast_on(t):
        return torch.autocast(t.device.type, enabled=False)
    return contextlib.nullcontext()  # autocast is off there already: entering it again costs µs of host time


def radix_combine_fwd(x5: torch.Tensor, a: torch.Tensor, out: torch.Tensor, prologue: tuple | None = None) -> None:
    out.copy_((_acc(radix_prologue(x5, prologue)) * _acc(a)[:, :, :, None, None]).sum(1))


def radix_combine_bwd(g: torch.Tensor, x5: torch.Tensor, a: torch.Tensor, grad_x5: torch.Tensor, grad_a: torch.Tensor) -> None:
    g_acc = _acc(g)[:, None]
    grad_x5.copy_(_acc(a)[:, :, :, None, None] * g_acc)
    grad_a.copy_((g_acc * _acc(x5)).sum((3, 4)))


# --- GCNet's context pooling (tritattn/context_block.py): no workspaces, unlike launch's ------

def context_pool_fwd(x: torch.Tensor, w: torch.Tensor, ctx: torch.Tensor, stats: torch.Tensor) -> None:
    """ctx and stats [B, C + 2] (the softmax's max M, its normaliser L, ctx unrounded), the kernels' math."""
    B, C, H, W = x.shape
    xa = _acc(x).reshape(B, C, H * W)
    logit = torch.einsum("c,bcp->bp", w.to(xa.dtype), xa)
    m = logit.amax(1, keepdim=True)
    e = torch.exp(logit - m)
    total = e.sum(1, keepdim=True)
    c = torch.einsum("bp,bcp->bc", e, xa) / total
    ctx.copy_(c)
    stats[:, 0:1].copy_(m)
    stats[:, 1:2].copy_(total)
    stats[:, 2:].copy_(c)


def context_pool_bwd(
    grad_ctx: torch.Tensor, x: torch.Tensor, w: torch.Tensor, stats: torch.Tensor, grad_x: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_x in place; returns (grad_w [C], grad_bias [1]) in the accumulator dtype."""
    B, C, H, W = x.shape
    xa = _acc(x).reshape(B, C, H * W)
    wa, g = w.to(xa.dtype), grad_ctx.to(xa.dtype)
    logit = torch.einsum("c,bcp->bp", wa, xa)
    alpha = torch.exp(logit - stats[:, 0:1]) / stats[:, 1:2]
    d_alpha = torch.einsum("bc,bcp->bp", g, xa)
    k = (g * stats[:, 2:]).sum(1, keepdim=True)
    dlogit = alpha * (d_alpha - k)
    grad_x.copy_((alpha[:, None, :] * g[:, :, None] + dlogit[:, None, :] * wa[None, :, None]).reshape(x.shape))
    return torch.einsum("bp,bcp->c", dlogit, xa), dlogit.sum().reshape(1)


def context_mlp(ctx: torch.Tensor, mlp: tuple, act: str) -> torch.Tensor:
    """context_pool_combine_mlp's MLP output W2 · act(LayerNorm(W1 · ctx + b1)) + b2 in ctx's dtype
    (the accumulator's), as GEMMs over all samples (the split path's MLP, and the eager formula's);
    ``mlp`` = (w1 [RD, C], b1, ln_w, ln_b, w2 [C, RD], b2, eps)."""
    w1, b1, ln_w, ln_b, w2, b2, eps = mlp
    dt = ctx.dtype
    with without_autocast(ctx):
        h = F.layer_norm(F.linear(ctx, w1.to(dt), b1.to(dt)), (w1.shape[0],), ln_w.to(dt), ln_b.to(dt), eps)
        return F.linear(_ACTIVATIONS[act](h), w2.to(dt), b2.to(dt))
