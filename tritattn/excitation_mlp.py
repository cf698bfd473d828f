"""The excitation's MLP (or channel conv) over all samples at once, as GEMMs on the [B, ·]
workspaces: the split path of the block pipeline, and the weight gradients of both paths.

The one-launch path runs each sample's MLP in the last program of its sample
(kernels/excitation.py); that program re-reads all C×RD weights per sample, one tile at a time —
a serial tail where C·RD is large. The split path pools in one launch, runs the MLP here as
GEMMs over the batch (one read of the weights; cuBLAS, deterministic for a fixed
configuration), then scales in a second launch; its backward likewise (the reduce launch gives
grad_s, the MLP's backward runs here, then the apply launch). The weight gradients are GEMMs
over the batch on either path ([RD × B] · [B × C]): no program loops over the batch.

Everything is computed in the workspaces' dtype (ACC: float32, float64 for float64 x), the
weights converted to it, as the kernels accumulate; results are written into the caller's
tensors (the parameters' gradients in the parameters' dtype). The formulas are those of
kernels/excitation.py's module docstring (pool, mlp, act as in tritattn.excitation_block).
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .eager_ops import autocast_on


def _in_acc(fn: Callable[..., None]) -> Callable[..., None]:
    """Runs ``fn`` with autocast off on its first tensor's device: under mixed precision the
    GEMMs on the [B, ·] workspaces keep the accumulator's dtype, as the kernels' own sums do
    (autocast would cast one operand to bfloat16 and leave the workspace in float32)."""
    @functools.wraps(fn)
    def wrapper(first: Tensor, *args, **kwargs) -> None:
        if not autocast_on(first):  # no context to enter: µs of host time, more inside a backward
            return fn(first, *args, **kwargs)
        with torch.autocast(first.device.type, enabled=False):
            return fn(first, *args, **kwargs)
    return wrapper


def _acc(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    return t.to(dtype) if t is not None and t.dtype != dtype else t


def _acc_weights(weights: tuple, dtype: torch.dtype) -> tuple:
    """(w1, b1, w2, b2) in ``dtype``: the same tensors where they have it."""
    w1, b1, w2, b2 = weights
    return _acc(w1, dtype), _acc(b1, dtype), _acc(w2, dtype), _acc(b2, dtype)


def pooled_input(mean: Tensor, maximum: Optional[Tensor], pool: str) -> Tensor:
    """The MLP's input v: the mean, or for "mean_max_avg" (mean + max) · 0.5 — the kernels'
    0.5·mean + 0.5·max to the bit (a product by 0.5 is exact), in two launches."""
    return (mean + maximum).mul_(0.5) if pool == "mean_max_avg" else mean


def _activation(h: Tensor, act: str) -> Tensor:
    return F.relu(h) if act == "relu" else F.silu(h) if act == "silu" else h


def _activation_backward(h: Tensor, grad: Tensor, act: str) -> Tensor:
    """The gradient of act's input h from its output's, one launch (ReLU's: ``h`` may be act(h) as well)."""
    if act == "relu":
        return torch.ops.aten.threshold_backward(grad, h, 0)
    if act == "silu":
        return torch.ops.aten.silu_backward(grad, h)
    return grad


def keeps_hidden(mlp: str, pool: str, hidden_norm: bool) -> bool:
    """Whether the split path's forward keeps the MLP's hidden vectors for its backward
    (:func:`hidden_slots`), which else computes them again: an SE MLP without a hidden BatchNorm,
    on one pooled vector (not CBAM's two)."""
    return mlp == "fc_act_fc" and not hidden_norm and pool != "mean_max_both"


def hidden_slots(mlp: str, pool: str, act: str, hidden_norm: bool) -> int:
    """[B, RD] vectors the split path keeps (:func:`keeps_hidden`; else 0): act(h), and h for SiLU
    (its backward's input)."""
    if not keeps_hidden(mlp, pool, hidden_norm):
        return 0
    return 2 if act == "silu" else 1


def _hidden_into(hidden: Tensor, v: Tensor, w1: Tensor, b1: Optional[Tensor], act: str) -> Tensor:
    """act(W1 · v + b1) into hidden[0] and, for SiLU, W1 · v + b1 into hidden[1] (the same launches
    as computing them anew); returns hidden[0]."""
    slots = hidden.unbind(0)  # one call for both views (indexing costs µs more)
    a, h = slots[0], slots[-1]  # h: SiLU's second slot; one slot (a) otherwise
    _linear_into(h, v, w1, b1)
    if act == "relu":
        torch.relu_(a)
    elif act == "silu":
        torch.ops.aten.silu.out(h, out=a)
    return a


def _hidden_norm(norm: Optional[tuple], dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """The hidden eval BatchNorm as (scale, shift, 1/σ, running mean), the kernels' eval_batchnorm."""
    if norm is None:
        return None
    weight, bias, running_mean, running_var, eps = norm
    inv_std = 1.0 / torch.sqrt(running_var.to(dtype) + eps)
    scale = weight.to(dtype) * inv_std
    mean = running_mean.to(dtype)
    return scale, bias.to(dtype) - mean * scale, inv_std, mean


def _windows(u: Tensor, taps: int, circular: bool) -> Tensor:
    """[B, C, taps] with windows[b, c, t] = u[b, c + t - pad] (zero or circular padding, pad = (taps-1)/2)."""
    pad = (taps - 1) // 2
    padded = F.pad(u[:, None, :], (pad, pad), mode="circular" if circular else "constant")[:, 0]
    return padded.unfold(1, taps, 1)


def _hidden(v: Tensor, w1: Tensor, b1: Optional[Tensor], bn) -> tuple[Tensor, Tensor]:
    """(h_pre, h): W1 · v + b1, and h after the hidden BatchNorm (the same tensor without one)."""
    h_pre = F.linear(v, w1, b1)
    return h_pre, (h_pre * bn[0] + bn[1] if bn is not None else h_pre)


@_in_acc
def logits(mean: Tensor, maximum: Optional[Tensor], weights: tuple, spec: dict, norm: Optional[tuple], s: Tensor,
           hidden: Optional[Tensor] = None) -> None:
    """s [B, C] = excitation(pool) for every sample (the split path's MLP), from the pooled
    ``mean`` / ``maximum`` [B, C]; ``weights`` = (w1, b1, w2, b2) as excitation_block takes them;
    ``hidden`` [:func:`hidden_slots`, B, RD] (ACC) receives the hidden vectors where they are kept."""
    dtype = s.dtype
    w1, b1, w2, b2 = _acc_weights(weights, dtype)
    pool, mlp = spec["pool"], spec["mlp"]
    if mlp == "fc_act_fc" and hidden is not None:
        _linear_into(s, _hidden_into(hidden, pooled_input(mean, maximum, pool), w1, b1, spec["act"]), w2, b2)
    elif mlp == "fc_act_fc":
        bn = _hidden_norm(norm, dtype)
        a = _activation(_hidden(pooled_input(mean, maximum, pool), w1, b1, bn)[1], spec["act"])
        if pool == "mean_max_both":  # W2 · (act(h_mean) + act(h_max)) + 2·b2
            a = a + _activation(_hidden(maximum, w1, b1, bn)[1], spec["act"])
        _linear_into(s, a, w2, b2, 2.0 if pool == "mean_max_both" else 1.0)
    elif mlp == "fc":
        _linear_into(s, pooled_input(mean, maximum, pool), w2, b2)
    else:
        out = _windows(pooled_input(mean, maximum, pool), spec["taps"], mlp == "taps_circular") @ w1
        s.copy_(out + b2 if b2 is not None else out)


def _linear_into(out: Tensor, a: Tensor, w: Tensor, bias: Optional[Tensor], bias_factor: float = 1.0) -> None:
    """out = a · wᵀ + bias_factor · bias, written in place (one GEMM)."""
    if bias is None:
        torch.mm(a, w.t(), out=out)
    else:
        torch.addmm(bias, a, w.t(), beta=bias_factor, out=out)


@_in_acc
def pool_grads(grad_s: Tensor, mean: Tensor, maximum: Optional[Tensor], weights: tuple, spec: dict,
               norm: Optional[tuple], grad_mean: Tensor, grad_max: Optional[Tensor], grads: dict,
               kept: Optional[Tensor] = None) -> None:
    """The split path's MLP backward for every sample: from grad_s [B, C] (the logits' gradient)
    the pooled vectors' gradients into ``grad_mean`` / ``grad_max`` [B, C], and the weight
    gradients into ``grads`` (as :func:`weight_grads`); ``kept``: the forward's hidden vectors
    (:func:`logits`), else they are computed again."""
    dtype = grad_s.dtype
    w1, b1, w2, _ = _acc_weights(weights, dtype)
    pool, mlp = spec["pool"], spec["mlp"]
    v = pooled_input(mean, maximum, pool)
    hidden = grad_h = grad_h_max = grad_norm = None
    if mlp == "fc_act_fc" and kept is not None:
        slots = kept.unbind(0)
        hidden = slots[0]
        grad_h = _activation_backward(slots[-1], torch.mm(grad_s, w2), spec["act"])  # SiLU's from h, ReLU's from act(h)
        torch.mm(grad_h, w1, out=grad_mean)
    elif mlp == "fc_act_fc":
        bn = _hidden_norm(norm, dtype)
        h_pre, h = _hidden(v, w1, b1, bn)
        da = grad_s @ w2
        grad_h, hidden = _activation_backward(h, da, spec["act"]), _activation(h, spec["act"])
        if pool == "mean_max_both":
            h_max_pre, h_max = _hidden(maximum, w1, b1, bn)
            grad_h_max = _activation_backward(h_max, da, spec["act"])
            hidden = hidden + _activation(h_max, spec["act"])
        if bn is not None:
            scale, _, inv_std, running_mean = bn
            grad_x_hat = grad_h * ((h_pre - running_mean) * inv_std)
            grad_bias = grad_h
            if grad_h_max is not None:
                grad_x_hat = grad_x_hat + grad_h_max * ((h_max_pre - running_mean) * inv_std)
                grad_bias = grad_bias + grad_h_max
                grad_h_max = grad_h_max * scale
            grad_norm = (grad_bias, grad_x_hat)
            grad_h = grad_h * scale
        torch.mm(grad_h, w1, out=grad_mean)
        if grad_h_max is not None:
            torch.mm(grad_h_max, w1, out=grad_max)
    elif mlp == "fc":
        torch.mm(grad_s, w2, out=grad_mean)
    else:  # the transposed conv: grad_v[c] = Σ_t w[t] · grad_s[c - t + pad]
        grad_mean.copy_(_windows(grad_s, spec["taps"], mlp == "taps_circular") @ w1.flip(0))
    if pool == "mean_max_avg":
        grad_mean.mul_(0.5)
        grad_max.copy_(grad_mean)
    weight_grads(grad_s, v, maximum, spec, hidden, grad_h, grad_h_max, grad_norm, grads)


def weight_grads(grad_s: Tensor, v: Tensor, maximum: Optional[Tensor], spec: dict, hidden: Optional[Tensor],
                 grad_h: Optional[Tensor], grad_h_max: Optional[Tensor], grad_norm: Optional[tuple],
                 grads: dict) -> None:
    """The weight gradients as GEMMs and column sums over the batch, into ``grads`` ("w1", "b1",
    "w2", "b2", "bn_weight", "bn_bias"; None where absent):

      "fc_act_fc": grad_W1 = grad_hᵀ · v (+ grad_h_maxᵀ · max), grad_b1 = Σ_b grad_h (+ grad_h_max),
                   grad_W2 = grad_sᵀ · hidden, grad_b2 = Σ_b grad_s (× 2 for "mean_max_both"),
                   the hidden BatchNorm's (bias, weight) = Σ_b grad_norm
      "fc":        grad_W = grad_sᵀ · v, grad_b = Σ_b grad_s
      taps:        grad_w[t] = Σ_b Σ_c grad_s[b, c] · v[b, c + t - pad], grad_b = Σ grad_s

    v [B, C] is the MLP's input (:func:`pooled_input`), hidden [B, RD] = act(h) (+ act(h_max)),
    grad_h / grad_h_max [B, RD] the gradients of the hidden pre-activations (after the
    BatchNorm's scale), grad_norm = ([B, RD] terms of the BatchNorm's bias gradient, of its
    weight gradient). Called by :func:`pool_grads` and :func:`tail_weight_grads`, with autocast off."""
    pool, mlp = spec["pool"], spec["mlp"]
    if mlp == "fc_act_fc":
        _mm_into(grads["w1"], grad_h.t(), v, grad_h_max.t() if grad_h_max is not None else None, maximum)
        if grads["b1"] is not None:
            _sum_into(grads["b1"], grad_h + grad_h_max if grad_h_max is not None else grad_h)
        _mm_into(grads["w2"], grad_s.t(), hidden)
        if grad_norm is not None:
            _sum_into(grads["bn_bias"], grad_norm[0])
            _sum_into(grads["bn_weight"], grad_norm[1])
    elif mlp == "fc":
        _mm_into(grads["w2"], grad_s.t(), v)
    elif grads["w1"] is not None:
        windows = _windows(v, spec["taps"], mlp == "taps_circular")
        grads["w1"].copy_(torch.einsum("bc,bct->t", grad_s, windows))
    if grads["b2"] is not None:
        if mlp in ("fc_act_fc", "fc"):
            # CBAM's fc2 bias is used twice: mlp(mean) + mlp(max)
            _sum_into(grads["b2"], grad_s, 2.0 if pool == "mean_max_both" else 1.0)
        else:
            grads["b2"].copy_(grad_s.sum().reshape(1))


def _mm_into(dst: Optional[Tensor], a: Tensor, b: Tensor, a2: Optional[Tensor] = None, b2: Optional[Tensor] = None) -> None:
    """dst = a · b (+ a2 · b2): GEMMs over the batch, computed in dst when it has their dtype."""
    if dst is None:
        return
    here = dst.dtype == a.dtype and dst.is_contiguous()
    out = torch.mm(a, b, out=dst) if here else a @ b
    if a2 is not None:
        out.addmm_(a2, b2)
    if not here:
        dst.copy_(out)


def _sum_into(dst: Optional[Tensor], t: Tensor, factor: float = 1.0) -> None:
    """dst = factor · Σ_b t[b] (a fixed-order column sum), computed in dst when it has t's dtype."""
    if dst is None:
        return
    here = dst.dtype == t.dtype and dst.is_contiguous()
    out = torch.sum(t, 0, out=dst) if here else t.sum(0)
    if factor != 1.0:
        out.mul_(factor)
    if not here:
        dst.copy_(out)


@_in_acc
def tail_weight_grads(grad_s: Tensor, mean: Tensor, maximum: Optional[Tensor], spec: dict, RD: int,
                      work: dict, grads: dict) -> None:
    """:func:`weight_grads` from the workspaces the one-launch path's reduce kernel wrote
    (``work`` "hidden" [B, RD], "grad_h" [B, RD] or [B, 2·RD] with the max branch's at + RD,
    "grad_norm" [B, 2·RD]: the BatchNorm's bias terms, then its weight terms)."""
    grad_h = grad_h_max = grad_norm = None
    if spec["mlp"] == "fc_act_fc":
        grad_h = work["grad_h"]  # [B, RD], no view to make (µs of host time inside a backward)
        if spec["pool"] == "mean_max_both":
            grad_h, grad_h_max = grad_h[:, :RD], grad_h[:, RD:]
        if work["grad_norm"] is not None:
            grad_norm = (work["grad_norm"][:, :RD], work["grad_norm"][:, RD:])
    weight_grads(grad_s, pooled_input(mean, maximum, spec["pool"]), maximum, spec, work["hidden"], grad_h, grad_h_max,
                 grad_norm, grads)
