"""Radix (split) attention ops: the two passes over the branches of ResNeSt's SplitAttn and SKNet's
SelectiveKernel (kernels/radix_combine.py), with the small attention MLP in torch between them —
or, in inference, inside the first pass (``radix_attention``).

=======================  ===========================================================  ==============
op                       computes                                                     kernels
=======================  ===========================================================  ==============
radix_pool               pooled[b, c] = mean_hw Σ_r x5[b, r, c, h, w]  → [B, C]       radix_pool_fwd
radix_combine            out[b, c, h, w] = Σ_r a[b, r, c] · x5[b, r, c, h, w]         radix_combine_fwd
radix_combine_backward   grad_x5 = a · grad_out, grad_a = Σ_hw grad_out · x5          radix_combine_bwd
radix_attention          out = Σ_r softmax_r(W2 · act(bn(W1 · pooled + b1)) + b2)     radix_squeeze_attend_fwd,
                         · x5[:, r] (inference only: no backward)                     radix_combine_fwd
=======================  ===========================================================  ==============

radix_attention may also take SplitAttn's bn0 and act0 as a prologue: x5 then holds the conv
output c and the branches are act(bn(c)), computed where both kernels load c (kernels/radix_combine.py).

x5 is the branched feature map [B, R, C, H, W]: SplitAttn's [B, R·C, H, W] viewed so (a view in
NCHW and in channels_last), or SelectiveKernel's ``torch.stack(paths, dim=1)``; it is read in
place when its H and W flatten to one pixel stride (else copied once, :func:`tritattn.layout.addressable`).
radix_combine's output takes the memory format of one branch: channels_last when the channels
are x5's inner axis (:func:`branch_memory_format`). The pooling's gradient, grad_pooled / (H·W)
on every element, is returned as a broadcast view (no kernel, no plane written: autograd adds it
to radix_combine's grad_x5), as :mod:`tritattn.autograd` does for the squeeze's mean.

Each op is a ``torch.library.custom_op`` with a fake implementation and a registered autograd
formula; it runs the Triton kernels (GPU or interpreter) or, when :func:`tritattn.backend_for`
says "torch", the eager equivalents in tritattn/eager_ops.py (float32 / float64 accumulation, one rounding).

``radix_attention`` is inference-only: its autograd formula raises, and :func:`radix_attention`
refuses inputs that require grad while grad mode is on (the modules take the per-op path then).
It takes the attention MLP as dense matrices, W1 [RD, C] and W2 [R·C, RD] with W2's rows in
(radix, channel) order: :func:`dense_pointwise` expands a grouped 1×1 conv into a block-diagonal
one (the zeros add exactly 0), :func:`radix_logit_order` permutes timm's RadixSoftmax order.
The modules take it only on the Triton kernels (:func:`tritattn.excitation_block.runs_for`); on
the eager fallback the op computes the same math in torch.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
from torch import Tensor

from . import dispatch, eager_ops, paths, radix_cost, workspaces
from .backend import TRITON_AVAILABLE, backend_for
from .checks import _describe, check_companion, check_tensor, plain_floating
from .excitation_block import MLP_ACTS, _norm, _prologue, acc_dtype
from .functions import differentiable
from .layout import addressable, flat_spatial_stride
from .tracing import leaf_function, sizes
from .ops import _new, _new_as

if TRITON_AVAILABLE:
    from . import launch

# --- layout ----------------------------------------------------------------------------------


def branch_memory_format(x5: Tensor) -> torch.memory_format:
    """channels_last when the channels are x5's inner axis (channel stride below the pixel
    stride, C > 1 and H·W > 1: SplitAttn's channels_last input), else contiguous (NCHW)."""
    B, R, C, H, W = x5.shape
    sp = flat_spatial_stride(x5)
    if C > 1 and H * W > 1 and sp is not None and x5.stride(2) < sp:
        return torch.channels_last
    return torch.contiguous_format


def _new_like(t: Tensor) -> Tensor:
    """A new (poisonable) tensor of t's shape and dtype, its dimensions laid out in the order of
    t's strides (as ``torch.empty_like``'s preserve_format does for a dense t)."""
    if t.is_contiguous():  # the common case, without the permutation's µs
        return _new(tuple(t.shape), t.dtype, t.device)
    order = sorted(range(t.dim()), key=lambda d: -t.stride(d))  # stable: ties keep their order
    inverse = [order.index(d) for d in range(t.dim())]
    return _new([t.shape[d] for d in order], t.dtype, t.device).permute(inverse)


def _alloc_combine(x5: Tensor) -> Tensor:
    B, R, C, H, W = x5.shape
    return _new((B, C, H, W), x5.dtype, x5.device, branch_memory_format(x5))


def _alloc_backward(x5: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    return _new_like(x5), _new_as(a)


def _impl(x5: Tensor):
    """The module holding radix_pool_fwd / radix_combine_fwd / radix_combine_bwd for x5."""
    return eager_ops if backend_for(x5) == "torch" else launch


# --- the ops -----------------------------------------------------------------------------------


@torch.library.custom_op("tritattn::radix_pool", mutates_args=())
def radix_pool_op(x5: Tensor) -> Tensor:
    """pooled [B, C] = mean over H·W of Σ_r x5[:, r]; x5's dtype, float32 (float64) accumulation."""
    x5 = addressable(x5)
    B, R, C, H, W = x5.shape
    pooled = _new((B, C), x5.dtype, x5.device)
    if x5.numel():
        _impl(x5).radix_pool_fwd(x5, pooled)
    return pooled


@radix_pool_op.register_fake
def _(x5):
    B, R, C, H, W = x5.shape
    return _new((B, C), x5.dtype, x5.device)


@torch.library.custom_op("tritattn::radix_combine", mutates_args=())
def radix_combine_op(x5: Tensor, a: Tensor) -> Tensor:
    """out [B, C, H, W] = Σ_r a[b, r, c] · x5[b, r, c, h, w], one rounding to x5's dtype."""
    x5 = addressable(x5)
    out = _alloc_combine(x5)
    if out.numel():
        _impl(x5).radix_combine_fwd(x5, a, out)
    return out


@radix_combine_op.register_fake
def _(x5, a):
    return _alloc_combine(addressable(x5))


@torch.library.custom_op("tritattn::radix_combine_backward", mutates_args=())
def radix_combine_backward(grad_out: Tensor, x5: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    """(grad_x5 = a[b, r, c] · grad_out[b, c, h, w] in x5's layout, grad_a [B, R, C] = Σ_hw
    grad_out · x5) in one pass over grad_out and x5."""
    x5 = addressable(x5)
    grad_out = addressable(grad_out)
    grad_x5, grad_a = _alloc_backward(x5, a)
    if x5.numel():
        _impl(x5).radix_combine_bwd(grad_out, x5, a, grad_x5, grad_a)
    else:
        grad_a.zero_()
    return grad_x5, grad_a


@radix_combine_backward.register_fake
def _(grad_out, x5, a):
    return _alloc_backward(addressable(x5), a)


# --- autograd ----------------------------------------------------------------------------------


def _pool_setup(ctx, inputs, output) -> None:
    (x5,) = inputs
    ctx.x_shape = x5.shape


def _pool_backward(ctx, grad_pooled):
    # grad_pooled / (H·W) on every element, as a broadcast view (torch's mean backward does the
    # same): no plane is written, and autograd's sum with radix_combine's grad_x5 reads it for free
    B, R, C, H, W = ctx.x_shape
    return (grad_pooled / (H * W)).view(B, 1, C, 1, 1).expand(ctx.x_shape)


def _combine_setup(ctx, inputs, output) -> None:
    x5, a = inputs
    ctx.save_for_backward(x5, a)


def _combine_backward(ctx, grad_out):
    x5, a = ctx.saved_tensors
    grad_x5, grad_a = dispatch.call(radix_combine_backward, grad_out, x5, a)
    return grad_x5, grad_a


# each registers the formula on the op and returns the op as a torch.autograd.Function with it
RadixPool = differentiable(radix_pool_op, _pool_setup, _pool_backward)
RadixCombine = differentiable(radix_combine_op, _combine_setup, _combine_backward)


# --- public functions ----------------------------------------------------------------------------


def check_branches(x5: object, name: str = "x5") -> None:
    """x5 must be a dense floating [B, R, C, H, W] tensor with R, C, H, W > 0 (B may be 0)."""
    if plain_floating(x5):
        shape = x5.shape  # the common case in one test (host time at every call); else each check in turn
        if len(shape) == 5 and shape[1] and shape[2] and shape[3] and shape[4]:
            return
    check_tensor(x5, name)
    if x5.dim() != 5:
        raise ValueError(
            f"{name} must be 5-D [B, R, C, H, W] (R branches of C channels), got a {x5.dim()}-D tensor of "
            f"shape {tuple(x5.shape)}"
        )
    if 0 in sizes(x5)[1:]:
        raise ValueError(f"{name} must have R, C, H, W > 0, got shape {tuple(x5.shape)} (B = 0 is allowed)")


@leaf_function
def radix_pool(x5: Tensor) -> Tensor:
    """The descriptor of split attention: mean over H×W of the sum of the R branches,
    ``x5.sum(1).mean((2, 3))`` of x5 [B, R, C, H, W] → [B, C], in x5's dtype (float32 / float64
    accumulation, one rounding). Differentiable; its gradient is a broadcast view."""
    check_branches(x5)
    return radix_pool_unchecked(x5)


def radix_pool_unchecked(x5: Tensor) -> Tensor:
    """:func:`radix_pool` without its argument check: x5 must be valid branches."""
    return dispatch.call(radix_pool_op, x5)


@leaf_function
def radix_combine(x5: Tensor, a: Tensor) -> Tensor:
    """The attention-weighted sum of the branches: ``(x5 * a[..., None, None]).sum(1)`` of x5
    [B, R, C, H, W] and a [B, R, C] (the radix softmax) → [B, C, H, W], in x5's dtype and one
    branch's memory format, one rounding. Differentiable in x5 and a (one backward pass)."""
    check_branches(x5)
    B, R, C = sizes(x5)[:3]
    check_tensor(a, "a")
    if a.dim() != 3:
        raise ValueError(
            f"a must be 3-D [B, R, C] attention weights for x5 ({_describe(x5)}), got a {a.dim()}-D tensor of "
            f"shape {tuple(a.shape)}"
        )
    check_companion(a, "a", x5, (B, R, C))
    return radix_combine_unchecked(x5, a)


def radix_combine_unchecked(x5: Tensor, a: Tensor) -> Tensor:
    """:func:`radix_combine` without its argument checks: x5 must be valid branches, a [B, R, C] on their device."""
    return dispatch.call(radix_combine_op, x5, a)


# --- inference: the squeeze and the attention MLP in one kernel (radix_attention) -----------------


def dense_pointwise(weight: Tensor, groups: int) -> Tensor:
    """A 1×1 conv's weight [out, in / groups, 1, 1] as a dense [out, in] matrix: block-diagonal
    for groups > 1 (exact: the zeros contribute exactly 0); a view for groups = 1."""
    w = weight.flatten(1)
    return w if groups == 1 else torch.block_diag(*w.chunk(groups, 0))


def radix_logit_order(w2: Tensor, b2: Optional[Tensor], radix: int, cardinality: int) -> tuple[Tensor, Optional[Tensor]]:
    """fc2's rows (and bias) [R·C, …] from timm's RadixSoftmax order — the logits viewed
    [cardinality, radix, C / cardinality] — to (radix, channel) order, row r·C + c with
    c = (group, channel in group): the order of radix_combine's a[b, r, c]. Unchanged (no copy)
    for radix 1 (a sigmoid on fc2's order) or cardinality 1."""
    if radix == 1 or cardinality == 1:
        return w2, b2
    rows = w2.shape[0]
    perm = torch.arange(rows, device=w2.device).view(cardinality, radix, rows // (radix * cardinality))
    perm = perm.transpose(0, 1).reshape(-1)
    return w2[perm], (b2[perm] if b2 is not None else None)


@torch.library.custom_op("tritattn::radix_attention", mutates_args=())
def radix_attention_op(
    x5: Tensor, w1: Tensor, b1: Optional[Tensor], bn_weight: Optional[Tensor], bn_bias: Optional[Tensor],
    bn_mean: Optional[Tensor], bn_var: Optional[Tensor], bn_eps: float, w2: Tensor, b2: Optional[Tensor], act: str,
    pre_weight: Optional[Tensor] = None, pre_bias: Optional[Tensor] = None, pre_mean: Optional[Tensor] = None,
    pre_var: Optional[Tensor] = None, pre_eps: float = 0.0, prologue_act: str = "none", path: str = "",
) -> Tensor:
    """out [B, C, H, W] = Σ_r a[b, r, c] · x5[b, r, c, h, w], a = the radix softmax over r (sigmoid
    for R = 1) of W2 · act(bn(W1 · pooled + b1)) + b2, pooled = mean over H·W of Σ_r x5; w1 dense
    [RD, C], w2 dense [R·C, RD] (rows in (r, c) order), the BatchNorm (all four tensors or none)
    in eval. Two kernels: radix_squeeze_attend_fwd (a in float32 / float64), radix_combine_fwd
    (one rounding to x5's dtype). Inference only: no backward.

    ``path`` (tritattn/radix_cost.py): "one-launch" (the MLP and the softmax in each sample's last
    program of the first kernel), "split" (the first kernel pools only; the MLP and the softmax
    run as GEMMs over all samples in torch, eager_ops.radix_pooled_attention), or "" to choose
    by the critical-path model or a tuned winner (:func:`attention_path`).

    Prologue (``prologue_act`` ≠ "none": kernels/radix_combine.py): x5 holds SplitAttn's conv
    output c, and the branches are x5 ← prologue_act(bn(c)) with the eval BatchNorm ``pre_*``
    [R·C] (all four tensors, or none: the activation alone) of channel r·C + c, z and x rounded to
    c's dtype as eager writes them, computed where both kernels load c and never written."""
    x5 = addressable(x5)
    out = _alloc_combine(x5)
    if not out.numel():
        return out
    B, R, C = x5.shape[:3]
    norm = _norm(bn_weight, bn_bias, bn_mean, bn_var, bn_eps)
    prologue = _prologue(prologue_act, pre_weight, pre_bias, pre_mean, pre_var, pre_eps)
    a = _new((B, R, C), acc_dtype(x5), x5.device)
    if backend_for(x5) == "torch":
        x5 = eager_ops.radix_prologue(x5, prologue)
        a.copy_(eager_ops.radix_attention_weights(x5, w1, b1, norm, w2, b2, act))
        eager_ops.radix_combine_fwd(x5, a, out)
        return out
    pooled = _new((B, C), acc_dtype(x5), x5.device)
    call = functools.partial(torch.ops.tritattn.radix_attention, x5, w1, b1, bn_weight, bn_bias, bn_mean, bn_var, bn_eps,
                             w2, b2, act, pre_weight, pre_bias, pre_mean, pre_var, pre_eps, prologue_act)
    shape = attention_shape(x5, w1, b1, norm, w2, b2, act, prologue)
    if attention_path(path, shape, x5.device, paths.op_measure(call)) == "one-launch":
        launch.radix_squeeze_attend_fwd(x5, w1, b1, norm, w2, b2, act, pooled, a, workspaces.counters(x5.device, B),
                                        prologue)
    else:
        launch.radix_squeeze_attend_fwd(x5, w1, b1, norm, w2, b2, act, pooled, None, None, prologue, mlp_tail=False)
        a = eager_ops.radix_pooled_attention(pooled, R, w1, b1, norm, w2, b2, act)
    launch.radix_combine_fwd(x5, a, out, prologue)
    return out


def attention_shape(x5: Tensor, w1: Tensor, b1: Optional[Tensor], norm: Optional[tuple], w2: Tensor,
                    b2: Optional[Tensor], act: str, prologue: Optional[tuple]) -> radix_cost.RadixShape:
    """The cost model's view of one radix_attention call on the branches x5."""
    B, R, C, H, W = x5.shape
    acc = acc_dtype(x5)
    return radix_cost.RadixShape(
        B, R, C, H * W, x5.element_size(), branch_memory_format(x5) == torch.channels_last, w1.shape[0], act,
        b1 is not None, b2 is not None, norm is not None, prologue is not None and prologue[1] is not None,
        all(t.dtype == acc for t in (w1, b1, w2, b2) if t is not None))


def op_attention_path(args: dict) -> str:
    """The path a call of ``tritattn::radix_attention`` with these arguments by name takes, as the
    op decides it (perf/bytes_model.py asks)."""
    norm = _norm(args["bn_weight"], args["bn_bias"], args["bn_mean"], args["bn_var"], args["bn_eps"])
    prologue = _prologue(args.get("prologue_act", "none"), args.get("pre_weight"), args.get("pre_bias"),
                         args.get("pre_mean"), args.get("pre_var"), args.get("pre_eps", 0.0))
    x5 = args["x5"]
    shape = attention_shape(x5, args["w1"], args["b1"], norm, args["w2"], args["b2"], args["act"], prologue)
    return attention_path(args.get("path", ""), shape, x5.device)


def attention_path(path: str, shape: radix_cost.RadixShape, device: torch.device,
                   measure: Callable[[str], Callable[[], object]] | None = None) -> str:
    """The op's path: ``path`` when it names one of radix_cost.PATHS, else chosen (paths.op_path:
    forced, tuned, measured inside ``tritattn.tune`` on a GPU with ``measure``, or estimated by the
    critical-path model)."""
    return paths.op_path("radix_attention", path, radix_cost.PATHS, lambda: shape, radix_cost.RadixShape.key,
                         radix_cost.paths, device, measure)


@radix_attention_op.register_fake
def _(x5, w1, b1, bn_weight, bn_bias, bn_mean, bn_var, bn_eps, w2, b2, act, pre_weight=None, pre_bias=None,
      pre_mean=None, pre_var=None, pre_eps=0.0, prologue_act="none", path=""):
    return _alloc_combine(addressable(x5))


#: the prologue activations radix_attention computes (kernels/norm_act.py's ACTIVATIONS; not
#: imported from there: this module loads without triton)
PROLOGUE_ACTS = ("relu", "silu", "hardswish", "identity")

INFERENCE_ONLY = (
    "tritattn::radix_attention is inference-only (it has no backward): run it under torch.no_grad() or "
    "torch.inference_mode(), or on inputs that do not require grad; the fast SplitAttn / SelectiveKernel take "
    "the differentiable per-op path (radix_pool, the MLP in torch, radix_combine) when a gradient is needed"
)


def _attention_backward(ctx, grad_out):
    raise RuntimeError(INFERENCE_ONLY)


radix_attention_op.register_autograd(_attention_backward)


def radix_attention(
    x5: Tensor, w1: Tensor, b1: Optional[Tensor], norm: Optional[tuple], w2: Tensor, b2: Optional[Tensor], act: str,
    prologue: Optional[tuple] = None,
) -> Tensor:
    """Split attention's whole inference pass over the branches x5 [B, R, C, H, W] in two kernels:
    ``Σ_r a[:, r] · x5[:, r]`` with a = softmax over r (sigmoid for R = 1) of
    ``W2 · act(bn(W1 · mean_hw(Σ_r x5) + b1)) + b2`` → [B, C, H, W] in x5's dtype and one branch's
    memory format. ``w1`` dense [RD, C], ``w2`` dense [R·C, RD] with rows in (radix, channel)
    order (:func:`dense_pointwise`, :func:`radix_logit_order`); ``norm`` an eval BatchNorm's
    (weight, bias, running mean, running var, eps) [RD], or None; ``act`` in "relu", "silu",
    "identity". ``prologue``: (activation, eval BatchNorm's (weight, bias, running mean, running
    var, eps) [R·C] or None), x5 then holding the BatchNorm's input c (SplitAttn's conv output
    viewed as branches) and the branches being act(bn(c)), BatchNorm channel r·C + c — computed
    inside both kernels (no pass of its own), z and x rounded to c's dtype as eager writes them.
    Not differentiable: raises if grad mode is on and an input requires grad."""
    check_branches(x5)
    B, R, C = sizes(x5)[:3]
    if act not in MLP_ACTS:
        raise ValueError(f"act must be one of {MLP_ACTS}, got {act!r}")
    check_tensor(w1, "w1")
    if w1.dim() != 2 or sizes(w1)[1] != C:
        raise ValueError(f"w1 must be a dense [RD, {C}] matrix for x5 ({_describe(x5)}), got shape {tuple(w1.shape)}")
    RD = sizes(w1)[0]
    check_companion(w1, "w1", x5, (RD, C))
    check_companion(w2, "w2", x5, (R * C, RD))
    bn = tuple(norm[:4]) if norm is not None else (None,) * 4
    for name, t, n in (("b1", b1, RD), ("b2", b2, R * C), *((f"norm[{i}]", t, RD) for i, t in enumerate(bn))):
        if t is not None:
            check_companion(t, name, x5, (n,))
    if norm is not None and any(t is None for t in bn):
        raise ValueError("norm must give the BatchNorm's weight, bias, running mean and running var (all four)")
    pro_act, pro_norm = prologue if prologue is not None else ("none", None)
    if prologue is not None and pro_act not in PROLOGUE_ACTS:
        raise ValueError(f"the prologue's activation must be one of {PROLOGUE_ACTS}, got {pro_act!r}")
    pre = tuple(pro_norm[:4]) if pro_norm is not None else (None,) * 4
    if pro_norm is not None and any(t is None for t in pre):
        raise ValueError("the prologue's norm must give the BatchNorm's weight, bias, running mean and running var "
                         "(all four)")
    for i, t in enumerate(pre):
        if t is not None:
            check_companion(t, f"prologue norm[{i}]", x5, (R * C,))
    return radix_attention_unchecked(x5, w1, b1, norm, w2, b2, act, prologue)


def radix_attention_unchecked(
    x5: Tensor, w1: Tensor, b1: Optional[Tensor], norm: Optional[tuple], w2: Tensor, b2: Optional[Tensor], act: str,
    prologue: Optional[tuple] = None,
) -> Tensor:
    """:func:`radix_attention` without its argument checks, for a twin that checked x itself and
    passes its own weights (their shapes fixed by its layers) where no gradient is needed (its
    refusals): a dozen checks fewer per call (host time). Still raises where grad mode is on and
    an input requires grad (there is no backward)."""
    bn = tuple(norm[:4]) if norm is not None else (None,) * 4
    pro_act, pro_norm = prologue if prologue is not None else ("none", None)
    pre = tuple(pro_norm[:4]) if pro_norm is not None else (None,) * 4
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x5, w1, b1, w2, b2, *bn, *pre)):
        raise RuntimeError(INFERENCE_ONLY)
    return dispatch.call(
        radix_attention_op, x5, w1, b1, *bn, float(norm[4]) if norm is not None else 0.0, w2, b2, act,
        *pre, float(pro_norm[4]) if pro_norm is not None else 0.0, pro_act)
