"""The excitation's MLP (or channel conv) over all samples at once, as GEMMs on the [B, ·]
workspaces: the split path of the block pipeline, and the weight gradients of both paths.

The one-launch path runs each sample's MLP in the last program of its sample
(kernels/excitation.py); that program re-reads all C×RD weights per sample, one tile at a time —
a serial tail where C·RD is large. The split path pools in one launch, runs the MLP here as
GEMMs over the batch (one read of the weights; cuBLAS, deterministic for a fixed
configuration), then scales in a second launch (ECA's taps: in the scale launch itself,
kernels/gated_scale.py; their backward here, as one convolution_backward); its backward likewise
(the reduce launch gives grad_s, the MLP's backward runs here, then the apply launch). The
weight gradients are GEMMs over the batch on either path ([RD × B] · [B × C]; the taps': one
convolution_backward, cuDNN's deterministic kernels): no program loops over the batch.

Everything is computed in the workspaces' dtype (ACC: float32, float64 for float64 x), the
weights converted to it, as the kernels accumulate; results are written into the caller's
tensors (the parameters' gradients in the parameters' dtype). The formulas are those of
kernels/excitation.py's module docstring (pool, mlp, act as in tritattn.excitation_block).
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

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


def activation_backward(h: Tensor, grad: Tensor, act: str) -> Tensor:
    """The gradient of act's input h from its output's, one launch (ReLU's: ``h`` may be act(h) as well)."""
    if act == "relu":
        return _THRESHOLD_BACKWARD(grad, h, 0)
    if act == "silu":
        return _SILU_BACKWARD(grad, h)
    return grad


#: the overloads themselves: an op packet resolves its overload at each call (≈ 0.7 µs)
_THRESHOLD_BACKWARD, _SILU_BACKWARD = torch.ops.aten.threshold_backward.default, torch.ops.aten.silu_backward.default


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


def is_dense(mlp: str, pool: str, hidden_norm: bool) -> bool:
    """Whether the block's MLP runs as :class:`DenseMLP`: "fc_act_fc" without a hidden BatchNorm, or
    "fc", on one pooled vector (not CBAM's two)."""
    return mlp in ("fc_act_fc", "fc") and not hidden_norm and pool != "mean_max_both"


def makes_its_outputs(mlp: str) -> bool:
    """Whether the split path's MLP backward of this kind allocates grad_v itself (in
    :func:`pool_grads`), so its caller passes None for it: the taps, whose convolution_backward's
    output it is (no copy)."""
    return mlp.startswith("taps")


def taps_grad_in_apply(mlp: str, pool: str, pro_norm: bool) -> bool:
    """Whether the split path's backward leaves the taps' input gradient (v's, from grad_s: the
    transposed channel conv) to its apply launch, which computes it for its own channels: the taps
    on the mean pool, unless a prologue BatchNorm's backward must read grad_mean before that launch."""
    return mlp.startswith("taps") and pool == "mean" and not pro_norm


class DenseMLP(NamedTuple):
    """A block's MLP on the [B, C] workspaces, its weights in the workspaces' dtype (ACC):
    s = W2 · act(W1 · v + b1) + b2 ("fc_act_fc"), or s = W2 · v + b2 ("fc": w1 None). Built per
    call from the block's weights (:func:`dense_mlp`), or once per call signature by the short
    host path (tritattn/excitation_step.py), which holds the weights' transposed views (the
    parameters themselves: an in-place update is seen)."""

    w1: Optional[Tensor]
    w1t: Optional[Tensor]
    b1: Optional[Tensor]
    w2: Tensor
    w2t: Tensor
    b2: Optional[Tensor]
    act: str


def dense_mlp(weights: tuple, act: str, dtype: torch.dtype) -> DenseMLP:
    """:class:`DenseMLP` of (w1, b1, w2, b2) as excitation_block takes them (w1 None for "fc"),
    converted to ``dtype`` where they have another (a copy: made again at each call)."""
    w1, b1, w2, b2 = _acc_weights(weights, dtype)
    return DenseMLP(w1, w1.t() if w1 is not None else None, b1, w2, w2.t(), b2, act)


def _dense_hidden(v: Tensor, m: DenseMLP, hidden: Optional[Tensor] = None) -> tuple[Tensor, ...]:
    """The hidden vectors the backward takes: (act(h),), and (act(h), h) for SiLU, h = W1 · v + b1;
    written into ``hidden``'s slots [:func:`hidden_slots`, B, RD] where given (the same launches)."""
    slots = hidden.unbind(0) if hidden is not None else (None, None)  # one call for both views
    h = _linear(v, m.w1t, m.b1, slots[-1])  # SiLU's second slot; the only one otherwise
    if m.act == "relu":
        return (torch.relu_(h),)
    if m.act == "silu":
        return (F.silu(h) if hidden is None else torch.ops.aten.silu.out(h, out=slots[0]), h)
    return (h,)


def _dense_logits(v: Tensor, m: DenseMLP, s: Optional[Tensor] = None,
                  hidden: Optional[Tensor] = None) -> tuple[Tensor, tuple[Tensor, ...]]:
    """(s, the hidden vectors :func:`_dense_hidden`, () for "fc") of v [B, C]; s into ``s`` where given."""
    if m.w1 is None:
        return _linear(v, m.w2t, m.b2, s), ()
    kept = _dense_hidden(v, m, hidden)
    return _linear(kept[0], m.w2t, m.b2, s), kept


def _dense_pool_grads(grad_s: Tensor, v: Tensor, m: DenseMLP, kept: Optional[tuple], grad_v: Tensor,
                      grads: dict) -> None:
    """grad_v = ∂s/∂v ᵀ grad_s into ``grad_v``, and the weight gradients into ``grads`` (as
    :func:`weight_grads`), from the forward's hidden vectors ``kept`` (:func:`_dense_hidden`;
    None: computed again)."""
    if m.w1 is None:
        torch.mm(grad_s, m.w2, out=grad_v)
        weight_grads(grad_s, v, None, _DENSE_FC, None, None, None, None, grads)
        return
    if kept is None:
        kept = _dense_hidden(v, m)
    grad_h = activation_backward(kept[-1], torch.mm(grad_s, m.w2), m.act)  # SiLU's from h, ReLU's from act(h)
    torch.mm(grad_h, m.w1, out=grad_v)
    weight_grads(grad_s, v, None, _DENSE_FC_ACT_FC, kept[0], grad_h, None, None, grads)


#: weight_grads' spec for a DenseMLP (its pooling is one vector: the bias is used once)
_DENSE_FC, _DENSE_FC_ACT_FC = dict(pool="mean", mlp="fc"), dict(pool="mean", mlp="fc_act_fc")


dense_logits = _in_acc(_dense_logits)


def _linear(a: Tensor, wt: Tensor, bias: Optional[Tensor], out: Optional[Tensor] = None,
            bias_factor: float = 1.0) -> Tensor:
    """a · wt + bias_factor · bias (wt: a weight's transposed view), one GEMM, into ``out`` where given."""
    if bias is None:
        return torch.mm(a, wt) if out is None else torch.mm(a, wt, out=out)
    if out is None and bias_factor == 1.0:
        return torch.addmm(bias, a, wt)
    return torch.addmm(bias, a, wt, beta=bias_factor, out=out)


def _hidden_norm(norm: Optional[tuple], dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """The hidden eval BatchNorm as (scale, shift, 1/σ, running mean), the kernels' eval_batchnorm."""
    if norm is None:
        return None
    weight, bias, running_mean, running_var, eps = norm
    inv_std = 1.0 / torch.sqrt(running_var.to(dtype) + eps)
    scale = weight.to(dtype) * inv_std
    mean = running_mean.to(dtype)
    return scale, bias.to(dtype) - mean * scale, inv_std, mean


class TapsFilter(NamedTuple):
    """ECA's taps w [taps] as their convolution_backward takes them (:func:`taps_filter`): ``weight`` w viewed
    [1, 1, taps], ``pad`` (taps-1)/2, and whether the padding is ``circular``."""

    weight: Tensor
    pad: int
    circular: bool


def taps_filter(w: Tensor, circular: bool) -> TapsFilter:
    """The taps w [taps] as :func:`taps_grads` takes them (a caller may keep it:
    a view of w, it sees w's in-place updates)."""
    return TapsFilter(w.view(1, 1, -1), (w.shape[0] - 1) // 2, circular)


def taps_grads(grad_s: Tensor, v: Tensor, f: TapsFilter, want: tuple[bool, bool, bool]) -> tuple:
    """(grad_v [B, C], grad_w [taps], grad_b [1]) of s = taps(v) + b (channel_taps.channel_conv:
    s[b, c] = Σ_t w[t] · v[b, c + t - pad] + b, zero or circular padding) from grad_s, each
    where ``want`` asks (else None): grad_v[c] = Σ_t w[t] · grad_s[c - t + pad], grad_w[t] = Σ_b
    Σ_c grad_s[b, c] · v[b, c + t - pad], grad_b = Σ grad_s — one convolution_backward (on a GPU
    cuDNN's backward-data and backward-filter kernels, in :func:`_exact_cudnn`); with the circular
    padding, v padded again and grad_v folded back (the padding's gradient: three launches)."""
    u, pad = _taps_input(v, f)
    state = _exact_cudnn(u)
    try:
        grad_u, grad_w, grad_b = _CONVOLUTION_BACKWARD(
            grad_s.unsqueeze(1), u, f.weight, [1] if want[2] else None, [1], [pad], [1], False, [0], 1, list(want))
    finally:
        _restore_cudnn(state)
    grad_v = grad_u.squeeze(1) if grad_u is not None else None
    if grad_v is not None and f.circular:  # u = v's last pad columns, v, its first pad columns
        pad, C = f.pad, v.shape[1]
        padded, grad_v = grad_v, grad_v[:, pad:pad + C].clone()
        if pad:
            grad_v[:, C - pad:] += padded[:, :pad]
            grad_v[:, :pad] += padded[:, C + pad:]
    return grad_v, grad_w.view(-1) if grad_w is not None else None, grad_b


_CONVOLUTION_BACKWARD = torch.ops.aten.convolution_backward.default


def _taps_input(u: Tensor, f: TapsFilter) -> tuple[Tensor, int]:
    """([B, 1, C] (circularly padded: [B, 1, C + taps - 1]), the conv's zero padding) of u [B, C]."""
    u = u.unsqueeze(1)
    return (F.pad(u, (f.pad, f.pad), mode="circular"), 0) if f.circular else (u, f.pad)


def _exact_cudnn(t: Tensor) -> Optional[tuple[bool, bool]]:
    """On a GPU, cuDNN made exact for the taps' convolutions until :func:`_restore_cudnn`: float32
    products, not TF32 (cuDNN's default, where cuBLAS's is off), and deterministic algorithms
    only (some of the backward's are not: atomics); returns the flags it replaced (None off a GPU)."""
    if not t.is_cuda:
        return None
    cudnn = torch.backends.cudnn
    state = (cudnn.allow_tf32, cudnn.deterministic)
    cudnn.allow_tf32, cudnn.deterministic = False, True
    return state


def _restore_cudnn(state: Optional[tuple[bool, bool]]) -> None:
    if state is not None:
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic = state


def _hidden(v: Tensor, w1: Tensor, b1: Optional[Tensor], bn) -> tuple[Tensor, Tensor]:
    """(h_pre, h): W1 · v + b1, and h after the hidden BatchNorm (the same tensor without one)."""
    h_pre = F.linear(v, w1, b1)
    return h_pre, (h_pre * bn[0] + bn[1] if bn is not None else h_pre)


@_in_acc
def logits(mean: Tensor, maximum: Optional[Tensor], weights: tuple, spec: dict, norm: Optional[tuple],
           s: Optional[Tensor], hidden: Optional[Tensor] = None) -> Tensor:
    """s [B, C] = excitation(pool) for every sample (the split path's MLP), from the pooled
    ``mean`` / ``maximum`` [B, C]; ``weights`` = (w1, b1, w2, b2) as excitation_block takes them;
    ``hidden`` [:func:`hidden_slots`, B, RD] (ACC) receives the hidden vectors where they are kept.
    Returns s (made new where ``s`` is None). Not the taps: the scale launch computes them
    (excitation_block.forward_launches)."""
    dtype = mean.dtype  # the workspaces' (ACC)
    pool, mlp = spec["pool"], spec["mlp"]
    if is_dense(mlp, pool, norm is not None):
        return _dense_logits(pooled_input(mean, maximum, pool), dense_mlp(weights, spec["act"], dtype), s, hidden)[0]
    w1, b1, w2, b2 = _acc_weights(weights, dtype)
    if mlp == "fc_act_fc":
        bn = _hidden_norm(norm, dtype)
        a = _activation(_hidden(pooled_input(mean, maximum, pool), w1, b1, bn)[1], spec["act"])
        if pool == "mean_max_both":  # W2 · (act(h_mean) + act(h_max)) + 2·b2
            a = a + _activation(_hidden(maximum, w1, b1, bn)[1], spec["act"])
        return _linear(a, w2.t(), b2, s, 2.0 if pool == "mean_max_both" else 1.0)
    return _linear(pooled_input(mean, maximum, pool), w2.t(), b2, s)  # "fc"


@_in_acc
def pool_grads(grad_s: Tensor, mean: Tensor, maximum: Optional[Tensor], weights: tuple, spec: dict,
               norm: Optional[tuple], grad_mean: Optional[Tensor], grad_max: Optional[Tensor], grads: dict,
               kept: Optional[tuple] = None, prepared: Optional[DenseMLP] = None) -> Tensor:
    """The split path's MLP backward for every sample: from grad_s [B, C] (the logits' gradient)
    the pooled vectors' gradients into ``grad_mean`` / ``grad_max`` [B, C], and the weight
    gradients into ``grads`` (as :func:`weight_grads`); ``kept``: the forward's hidden vectors
    (a :class:`DenseMLP`'s: act(h), and h for SiLU), else they are computed again; ``prepared``:
    the block's :class:`DenseMLP` where the caller made it (else made here where :func:`is_dense`).
    Returns grad_mean; ``grad_mean`` may be None where :func:`makes_its_outputs`."""
    dtype = grad_s.dtype
    pool, mlp = spec["pool"], spec["mlp"]
    v = pooled_input(mean, maximum, pool)
    if is_dense(mlp, pool, norm is not None):
        _dense_pool_grads(grad_s, v, prepared or dense_mlp(weights, spec["act"], dtype), kept, grad_mean, grads)
        _pool_grads_mean_max_avg(pool, grad_mean, grad_max)
        return grad_mean
    w1, b1, w2, _ = _acc_weights(weights, dtype)
    hidden = grad_h = grad_h_max = grad_norm = None
    if mlp == "fc_act_fc":
        bn = _hidden_norm(norm, dtype)
        h_pre, h = _hidden(v, w1, b1, bn)
        da = grad_s @ w2
        grad_h, hidden = activation_backward(h, da, spec["act"]), _activation(h, spec["act"])
        if pool == "mean_max_both":
            h_max_pre, h_max = _hidden(maximum, w1, b1, bn)
            grad_h_max = activation_backward(h_max, da, spec["act"])
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
    else:  # the taps: the input's and the weights' gradients in one convolution_backward
        grad_v = _taps_weight_grads(grad_s, v, w1, mlp == "taps_circular", grads, True)
        grad_mean = grad_v if grad_mean is None else grad_mean.copy_(grad_v)
        _pool_grads_mean_max_avg(pool, grad_mean, grad_max)
        return grad_mean
    _pool_grads_mean_max_avg(pool, grad_mean, grad_max)
    weight_grads(grad_s, v, maximum, spec, hidden, grad_h, grad_h_max, grad_norm, grads)
    return grad_mean


def _taps_weight_grads(grad_s: Tensor, v: Tensor, w1: Tensor, circular: bool, grads: dict,
                       want_v: bool) -> Optional[Tensor]:
    """The taps' weight gradients into ``grads`` ("w1", "b2", as :func:`weight_grads`), and
    grad_v where ``want_v``: :func:`taps_grads`."""
    want = (want_v, grads["w1"] is not None, grads["b2"] is not None)
    if not any(want):
        return None
    grad_v, grad_w, grad_b = taps_grads(grad_s, v, taps_filter(w1, circular), want)
    if grad_w is not None:
        grads["w1"] = _as_grad(grads["w1"], grad_w)
    if grad_b is not None:
        grads["b2"] = _as_grad(grads["b2"], grad_b)
    return grad_v


def _pool_grads_mean_max_avg(pool: str, grad_mean: Tensor, grad_max: Optional[Tensor]) -> None:
    """For "mean_max_avg" (v = (mean + max) · 0.5), grad_mean and grad_max from grad_v, which
    ``grad_mean`` holds: both grad_v · 0.5."""
    if pool == "mean_max_avg":
        grad_mean.mul_(0.5)
        grad_max.copy_(grad_mean)


def weight_grads(grad_s: Tensor, v: Tensor, maximum: Optional[Tensor], spec: dict, hidden: Optional[Tensor],
                 grad_h: Optional[Tensor], grad_h_max: Optional[Tensor], grad_norm: Optional[tuple],
                 grads: dict) -> None:
    """The weight gradients as GEMMs and column sums over the batch, into ``grads`` ("w1", "b1",
    "w2", "b2", "bn_weight", "bn_bias"; None where absent or not wanted, a tensor to write, or a
    dtype: the gradient is a new tensor of it, which replaces the dtype in ``grads``):

      "fc_act_fc": grad_W1 = grad_hᵀ · v (+ grad_h_maxᵀ · max), grad_b1 = Σ_b grad_h (+ grad_h_max),
                   grad_W2 = grad_sᵀ · hidden, grad_b2 = Σ_b grad_s (× 2 for "mean_max_both"),
                   the hidden BatchNorm's (bias, weight) = Σ_b grad_norm
      "fc":        grad_W = grad_sᵀ · v, grad_b = Σ_b grad_s

    (the taps' are :func:`_taps_weight_grads`'s). v [B, C] is the MLP's input (:func:`pooled_input`),
    hidden [B, RD] = act(h) (+ act(h_max)), grad_h / grad_h_max [B, RD] the gradients of the
    hidden pre-activations (after the BatchNorm's scale), grad_norm = ([B, RD] terms of the
    BatchNorm's bias gradient, of its weight gradient). Called by :func:`pool_grads` and
    :func:`tail_weight_grads`, with autocast off."""
    pool, mlp = spec["pool"], spec["mlp"]
    if mlp == "fc_act_fc":
        if grads["w1"] is not None:
            grads["w1"] = _mm_to(grads["w1"], grad_h.t(), v,
                                 grad_h_max.t() if grad_h_max is not None else None, maximum)
        if grads["b1"] is not None:
            grads["b1"] = _sum_to(grads["b1"], grad_h + grad_h_max if grad_h_max is not None else grad_h)
        if grads["w2"] is not None:
            grads["w2"] = _mm_to(grads["w2"], grad_s.t(), hidden)
        if grad_norm is not None:
            grads["bn_bias"] = _sum_to(grads["bn_bias"], grad_norm[0])
            grads["bn_weight"] = _sum_to(grads["bn_weight"], grad_norm[1])
    elif grads["w2"] is not None:
        grads["w2"] = _mm_to(grads["w2"], grad_s.t(), v)
    if grads["b2"] is not None:  # CBAM's fc2 bias is used twice: mlp(mean) + mlp(max)
        grads["b2"] = _sum_to(grads["b2"], grad_s, 2.0 if pool == "mean_max_both" else 1.0)


def _mm_to(dst: Tensor | torch.dtype | None, a: Tensor, b: Tensor, a2: Optional[Tensor] = None,
           b2: Optional[Tensor] = None) -> Tensor | None:
    """a · b (+ a2 · b2), GEMMs over the batch, as the gradient ``dst`` asks for (:func:`_as_grad`;
    computed in dst when it has their dtype); returns it."""
    if dst is None:
        return None
    here = isinstance(dst, Tensor) and dst.dtype == a.dtype and dst.is_contiguous()
    out = torch.mm(a, b, out=dst) if here else torch.mm(a, b)
    if a2 is not None:
        out.addmm_(a2, b2)
    return dst if here else _as_grad(dst, out)


def _sum_to(dst: Tensor | torch.dtype | None, t: Tensor, factor: float = 1.0) -> Tensor | None:
    """factor · Σ_b t[b] (a fixed-order column sum) as the gradient ``dst`` asks for
    (:func:`_as_grad`; computed in dst when it has t's dtype); returns it."""
    if dst is None:
        return None
    here = isinstance(dst, Tensor) and dst.dtype == t.dtype and dst.is_contiguous()
    out = torch.sum(t, 0, out=dst) if here else t.sum(0)
    if factor != 1.0:
        out.mul_(factor)
    return dst if here else _as_grad(dst, out)


def _as_grad(dst: Tensor | torch.dtype, out: Tensor) -> Tensor:
    """A weight gradient computed as ``out``, where ``dst`` asks for it: a tensor (the op's
    output) receives it; a dtype (the short host path's) takes out itself, converted where it
    has another dtype."""
    if isinstance(dst, torch.dtype):
        return out if out.dtype == dst else out.to(dst)
    dst.copy_(out)
    return dst


@_in_acc
def tail_weight_grads(grad_s: Tensor, mean: Tensor, maximum: Optional[Tensor], spec: dict, RD: int,
                      work: dict, grads: dict, w1: Optional[Tensor]) -> None:
    """:func:`weight_grads` from the workspaces the one-launch path's reduce kernel wrote
    (``work`` "hidden" [B, RD], "grad_h" [B, RD] or [B, 2·RD] with the max branch's at + RD,
    "grad_norm" [B, 2·RD]: the BatchNorm's bias terms, then its weight terms); the taps'
    (``w1``: the taps, in grad_s's dtype) by :func:`_taps_weight_grads`, their input's gradient
    left to the kernels (one-launch: the reduce's; split: the apply's, excitation_block.apply_taps)."""
    v = pooled_input(mean, maximum, spec["pool"])
    if spec["mlp"].startswith("taps"):
        _taps_weight_grads(grad_s, v, _acc(w1, grad_s.dtype), spec["mlp"] == "taps_circular", grads, False)
        return
    grad_h = grad_h_max = grad_norm = None
    if spec["mlp"] == "fc_act_fc":
        grad_h = work["grad_h"]  # [B, RD], no view to make (µs of host time inside a backward)
        if spec["pool"] == "mean_max_both":
            grad_h, grad_h_max = grad_h[:, :RD], grad_h[:, RD:]
        if work["grad_norm"] is not None:
            grad_norm = (work["grad_norm"][:, :RD], work["grad_norm"][:, RD:])
    weight_grads(grad_s, v, maximum, spec, work["hidden"], grad_h, grad_h_max, grad_norm, grads)
