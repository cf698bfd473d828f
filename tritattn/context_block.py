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

``tritattn::context_mlp`` is GCNet's context with its MLPs for inference (no backward): the
context, then both MLPs (fc1 → LayerNorm → act → fc2) computed by each sample's last program of
the combine launch (kernels/context_pool.py: context_pool_combine_mlp); the module then applies
x · gate(s) (+ t) in the gated-scale kernel, or x + t in torch.

The ops run on the Triton kernels (GPU or interpreter) or, where :func:`tritattn.backend_for`
says "torch", on the eager formulas in tritattn/eager_ops.py, which
accumulate in ACC the same way.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from . import context_cost, dispatch, eager_ops, paths, workspaces
from .backend import TRITON_AVAILABLE, backend_for
from .checks import check_feature_map, check_tensor
from .excitation_block import acc_dtype
from .functions import differentiable
from .layout import addressable
from .ops import _empty_like_4d, _new, _new_as
from .tracing import leaf_function, sizes

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
    return _empty_like_4d(x), _new_as(w), _new((1,), like.dtype, like.device)


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
        wpart = _new((launch.context_pool_programs(x), x.shape[1] + 1), acc_dtype(x), x.device)
        launch.context_pool_bwd(grad_ctx, x, w, stats, grad_x, wpart)
        sum_weight_partials(wpart, grad_w, grad_bias)
        return grad_x, grad_w, grad_bias
    grad_w.copy_(gw)
    grad_bias.copy_(gb)
    return grad_x, grad_w, grad_bias


def sum_weight_partials(wpart: Tensor, grad_w: Tensor, grad_bias: Tensor) -> None:
    """grad_w [C] and grad_bias [1] ← the column sums of context_pool_bwd's partials wpart
    [rows, C + 1] in a fixed order (no atomics): in place where the dtypes agree, else summed in
    wpart's dtype and converted."""
    C = grad_w.shape[0]
    if wpart.dtype == grad_w.dtype == grad_bias.dtype:
        torch.sum(wpart[:, :C], 0, out=grad_w)
        torch.sum(wpart[:, C:], 0, out=grad_bias)
        return
    total = wpart.sum(0)
    grad_w.copy_(total[:C])
    grad_bias.copy_(total[C:])


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
    grad_x, grad_w, grad_bias = dispatch.call(context_pool_backward, grad_ctx, x, w, bias, stats)
    return grad_x, grad_w, grad_bias if ctx.has_bias else None


ContextPool = differentiable(context_pool_op, _setup, _backward)  # registers the formula, too


# --- the public function -----------------------------------------------------------------------

@leaf_function
def context_pool(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """GCNet's global context of x [B, C, H, W]: ``ctx[b, c] = Σ_p softmax_p(w · x[b, :, p] + bias) · x[b, c, p]``
    → [B, C] in x's dtype, differentiable in x, weight and bias.

    ``weight``: the 1×1 conv's weight, [C] or [1, C, 1, 1] (``conv_attn.weight``); ``bias``: [1]
    or None. The softmax is stable (a running max) and everything accumulates in float32
    (float64 for float64 x); x is read once, in place for NCHW and channels_last.
    """
    check_feature_map(x)
    C = sizes(x)[1]
    check_tensor(weight, "weight")
    if math.prod(sizes(weight)) != C or (weight.dim() != 1 and sizes(weight) != (1, C, 1, 1)):
        raise ValueError(f"weight must have shape ({C},) or (1, {C}, 1, 1) — the 1×1 conv from x's {C} channels "
                         f"to one — got {tuple(weight.shape)}")
    if weight.device != x.device:
        raise ValueError(f"weight is on {weight.device} but x is on {x.device}; move them to one device")
    if bias is not None:
        check_tensor(bias, "bias")
        if sizes(bias) != (1,):
            raise ValueError(f"bias must have shape (1,) (the conv's one output channel), got {tuple(bias.shape)}")
        if bias.device != x.device:
            raise ValueError(f"bias is on {bias.device} but x is on {x.device}; move them to one device")
    return context_pool_unchecked(x, weight.reshape(C), bias)


def context_pool_unchecked(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """:func:`context_pool` without its argument checks: x, weight [C] and bias must be valid."""
    return dispatch.call(context_pool_op, x, weight, bias)[0]


# --- GCNet's whole block, for inference: the context and its MLPs in one launch pair ------------

def _mlp(w1, b1, ln_w, ln_b, w2, b2, eps: float) -> tuple | None:
    """One MLP as the launcher takes it: (w1 [RD, C], b1, ln_w, ln_b, w2 [C, RD], b2, eps), or None."""
    return None if w1 is None else (w1, b1, ln_w, ln_b, w2, b2, eps)


def _alloc_context_mlp(x: Tensor, scale_w1: Optional[Tensor], add_w1: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    B, C = x.shape[:2]
    acc = acc_dtype(x)
    return tuple(_new((B, C), acc, x.device) if w1 is not None else _new((0,), acc, x.device) for w1 in (scale_w1, add_w1))


@torch.library.custom_op("tritattn::context_mlp", mutates_args=())
def context_mlp_op(
    x: Tensor, conv_w: Tensor,
    scale_w1: Optional[Tensor], scale_b1: Optional[Tensor], scale_ln_w: Optional[Tensor], scale_ln_b: Optional[Tensor],
    scale_w2: Optional[Tensor], scale_b2: Optional[Tensor], scale_eps: float,
    add_w1: Optional[Tensor], add_b1: Optional[Tensor], add_ln_w: Optional[Tensor], add_ln_b: Optional[Tensor],
    add_w2: Optional[Tensor], add_b2: Optional[Tensor], add_eps: float,
    act: str, path: str = "",
) -> tuple[Tensor, Tensor]:
    """GCNet's context and its MLPs for inference (no autograd formula): (s, t) [B, C] in ACC,
    s = mlp_scale(ctx) and t = mlp_add(ctx) (an absent MLP's output is empty), with ctx the
    context pooling of x under conv_w [C] (the conv's bias is not an input: softmax ignores it)
    and each MLP W2 · act(LayerNorm(W1 · ctx + b1)) + b2 (w1 [RD, C], b1, ln_w, ln_b [RD],
    w2 [C, RD], b2 [C]; absent: its w1 None; at least one present); act "relu" or "silu".

    Triton, ``path`` (tritattn/context_cost.py): "one-launch" — context_pool_partials, then
    context_pool_combine_mlp (the merge, and both MLPs by each sample's last program); "split" —
    context_pool_partials, context_pool_combine, then the MLPs as GEMMs over all samples in torch
    (eager_ops.context_mlp); "" — chosen by the critical-path model or a tuned winner
    (:func:`mlp_path`). The block's output is the module's: the gated-scale kernel with t as its
    stride-0 residual, or x + t. Raises if an input requires grad while grad mode is on: there is
    no backward."""
    x = addressable(x)
    s, t = _alloc_context_mlp(x, scale_w1, add_w1)
    if not x.numel():
        return s, t
    B, C = x.shape[:2]
    acc = acc_dtype(x)
    scale_mlp = _mlp(scale_w1, scale_b1, scale_ln_w, scale_ln_b, scale_w2, scale_b2, scale_eps)
    add_mlp = _mlp(add_w1, add_b1, add_ln_w, add_ln_b, add_w2, add_b2, add_eps)
    conv_w = conv_w.reshape(C).contiguous()
    outputs = (s if scale_mlp is not None else None, t if add_mlp is not None else None)
    ctx = _new((B, C), acc, x.device)
    if backend_for(x) == "torch":
        eager_ops.context_pool_fwd(x, conv_w, ctx, _new((B, C + 2), acc, x.device))
    else:
        rows = launch.context_pool_programs(x)
        part, pstats = _new((rows, C), acc, x.device), _new((rows, 2), acc, x.device)

        def call(path: str) -> tuple[Tensor, Tensor]:  # the op on these arguments, timed per path inside tune
            return torch.ops.tritattn.context_mlp(x, conv_w, scale_w1, scale_b1, scale_ln_w, scale_ln_b, scale_w2,
                                                  scale_b2, scale_eps, add_w1, add_b1, add_ln_w, add_ln_b, add_w2,
                                                  add_b2, add_eps, act, path=path)

        if mlp_path(path, lambda: mlp_shape(x, scale_mlp, add_mlp, act), x.device, paths.op_measure(call)) == "one-launch":
            launch.global_context_fwd(x, conv_w, part, pstats, ctx, workspaces.counters(x.device, B), scale_mlp, add_mlp,
                                      *outputs, act)
            return s, t
        launch.context_pool_fwd(x, conv_w, part, pstats, ctx, _new((B, C + 2), acc, x.device))
    s, t = (eager_ops.context_mlp(ctx, mlp, act) if mlp is not None else out for mlp, out in zip((scale_mlp, add_mlp), (s, t)))
    return s, t


def mlp_shape(x: Tensor, scale_mlp: tuple | None, add_mlp: tuple | None, act: str) -> context_cost.ContextShape:
    """The cost model's view of one context_mlp call on x (MLPs as :func:`_mlp` gives them)."""
    B, C, H, W = x.shape
    acc = acc_dtype(x)
    weights = [t for mlp in (scale_mlp, add_mlp) if mlp is not None for t in mlp[:6]]
    return context_cost.ContextShape(B, C, H * W, x.dtype, scale_mlp[0].shape[0] if scale_mlp else 0,
                                     add_mlp[0].shape[0] if add_mlp else 0, act, all(w.dtype == acc for w in weights))


def mlp_path(path: str, shape_of: Callable[[], context_cost.ContextShape], device: torch.device,
             measure: Callable[[str], Callable[[], object]] | None = None) -> str:
    """The op's path: ``path`` when it names one of context_cost.PATHS, else chosen (paths.op_path:
    forced, tuned, measured inside ``tritattn.tune`` on a GPU with ``measure``, or estimated by the
    critical-path model) for the call whose shape ``shape_of()`` gives (built only then)."""
    return paths.op_path("context_mlp", path, context_cost.PATHS, shape_of, context_cost.ContextShape.key,
                         context_cost.paths, device, measure)


def op_mlp_path(args: dict) -> str:
    """The path a call of ``tritattn::context_mlp`` with these arguments by name takes, as the op
    decides it (perf/bytes_model.py asks)."""
    mlps = [_mlp(*(args[f"{kind}_{n}"] for n in ("w1", "b1", "ln_w", "ln_b", "w2", "b2", "eps"))) for kind in ("scale", "add")]
    return mlp_path(args.get("path", ""), lambda: mlp_shape(args["x"], *mlps, args["act"]), args["x"].device)


@context_mlp_op.register_fake
def _(x, conv_w, scale_w1, scale_b1, scale_ln_w, scale_ln_b, scale_w2, scale_b2, scale_eps,
      add_w1, add_b1, add_ln_w, add_ln_b, add_w2, add_b2, add_eps, act, path=""):
    return _alloc_context_mlp(x, scale_w1, add_w1)


_INFERENCE_ONLY = ("tritattn::context_mlp is inference-only (it has no backward) but an input requires grad: "
                   "call it under torch.no_grad() or torch.inference_mode(), or use the differentiable ops "
                   "(tritattn.context_pool and the MLPs in torch)")


def _refuse_autograd(ctx, inputs, output) -> None:
    """No backward: autograd calls this when an input requires grad in grad mode; raise at once
    (rather than when a backward reaches the op, or never)."""
    raise RuntimeError(_INFERENCE_ONLY)


def _no_backward(ctx, *grads):  # never reached: _refuse_autograd raises first
    raise RuntimeError(_INFERENCE_ONLY)


context_mlp_op.register_autograd(_no_backward, setup_context=_refuse_autograd)
