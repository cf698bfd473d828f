"""GCNet's context on the host's short path: :func:`pool`, the launches of
``tritattn::context_pool`` (and of its backward) prepared once per signature of x, under
autograd as one plain ``torch.autograd.Function``.

A GlobalContext call that needs a gradient takes the per-op path (its MLPs run as modules on
the context). Through the op (even called directly, tritattn/dispatch.py) the context paid,
besides its launches: the generic Function's plumbing, x's addressability check, five
allocations and the workspaces' sizes derived by shape, the launch plans' keys built from the
tensors' strides, and the views autograd records around it (``conv_attn.weight.view(C)`` and
``ctx.view(B, C, 1, 1)``, each a node). On perf/host_time.py's proxy (launches stubbed, three
runs), gcresnet's training step took 333 µs at B = 1 and 347 at B = 8; with this path and the
module's cheaper channel check 283 and 296 µs (eager timm's: 295 and 311).

A :class:`MapCall` keeps what x's signature (sizes, strides, dtype, device, and the tile limits
the context's tile is read from: ``tiling.TILE_ELEMENTS``, ``LONG_SIDE_MAX``) fixes: the
outputs' and workspaces' sizes and strides, the launch plans (the backward's per layout of the
incoming gradient). :func:`pool` takes conv_attn's weight as the module holds it ([1, C, 1, 1],
contiguous; its gradient in that shape) and returns the context as [B, C, 1, 1], the shape the
MLPs' 1×1 convs take. The launches, their arguments, the weight gradients' fixed-order sums
(context_block.sum_weight_partials) and the math are the op's, so the bits are too
(tests/test_context_step.py).

It applies where the op would run its implementation directly anyway (``dispatch.direct``), on
the Triton kernels, for a non-empty x its kernels address in place and a contiguous weight.
Everything else calls the op as before. Like the op's, the backward is not differentiable.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import dispatch
from .backend import TRITON_AVAILABLE, backend_for
from .context_block import context_pool_unchecked, sum_weight_partials
from .excitation_block import acc_dtype
from .layout import flat_spatial_stride
from .ops import _empty_like_4d, _new_strided

if TRITON_AVAILABLE:
    from . import launch
    from .kernels import tiling


class MapCall:
    """What a context over maps of one signature derives from it alone."""

    __slots__ = ("C", "ctx", "stats", "part", "pstats", "grad_x", "wpart", "plans")

    def __init__(self, x: Tensor):
        B, C, H, W = x.shape
        self.C = C
        acc, device = acc_dtype(x), x.device
        rows = launch.context_pool_programs(x)
        #: (size, strides, dtype, device) of the outputs and workspaces (ops._new_strided): the
        #: context [B, C, 1, 1], the softmax's statistics [B, C + 2] (context_block's), the
        #: partials [B·NP, C] and [B·NP, 2], grad_x in ops._empty_like_4d's layout, the weight partials
        self.ctx = ((B, C, 1, 1), (C, 1, 1, 1), x.dtype, device)
        self.stats = ((B, C + 2), (C + 2, 1), acc, device)
        self.part = ((rows, C), (C, 1), acc, device)
        self.pstats = ((rows, 2), (2, 1), acc, device)
        meta = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")
        self.grad_x = (x.shape, _empty_like_4d(meta).stride(), x.dtype, device)
        self.wpart = ((rows, C + 1), (C + 1, 1), acc, device)
        #: launch plans: "forward", ("backward", the gradient's batch and channel strides)
        self.plans: dict = {}


#: signature of x (sizes, strides, dtype, device, tile limits) → its MapCall, or None where x is
#: empty or the kernels do not address it in place (the op copies it)
_calls: dict[tuple, Optional[MapCall]] = {}


def map_call(x: Tensor) -> Optional[MapCall]:
    """The MapCall for x where the short path applies to it now (module docstring), else None."""
    if not dispatch.direct(x) or backend_for(x) == "torch":
        return None
    return dispatch.per_signature(
        _calls, (x.shape, x.stride(), x.dtype, x.device, tiling.TILE_ELEMENTS, tiling.LONG_SIDE_MAX),
        lambda: MapCall(x) if x.numel() and flat_spatial_stride(x) is not None else None)


def pool(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """context_pool(x, weight, bias) [B, C] viewed [B, C, 1, 1]: GCNet's softmax-weighted context of
    x, valid (unchecked), under the logits of conv_attn's weight [1, C, 1, 1] (or any shape of C
    elements) and bias [1] or None, on x's device."""
    call = map_call(x)
    if call is None or not weight.is_contiguous():
        B, C = x.shape[:2]
        return context_pool_unchecked(x, weight.reshape(C), bias).view(B, C, 1, 1)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        return _apply(x, weight, bias, call)
    return _forward(x, weight, call)[0]


def _forward(x: Tensor, weight: Tensor, call: MapCall) -> tuple[Tensor, Tensor]:
    """(the context [B, C, 1, 1], the softmax's statistics for the backward)."""
    ctx, stats = _new_strided(*call.ctx), _new_strided(*call.stats)
    plans = call.plans
    plans["forward"] = launch.context_pool_fwd(x, weight, _new_strided(*call.part), _new_strided(*call.pstats), ctx,
                                               stats, plan=plans.get("forward"))
    return ctx, stats


#: what a double backward through the context's backward launch names
WHAT = "GCNet's context pooling"


class ContextPoolStep(torch.autograd.Function):
    """:func:`pool` under autograd: one backward launch writes grad_x and the weight partials,
    summed in a fixed order into the weight's and the bias's gradients (as the op's)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], call: MapCall) -> Tensor:
        context, stats = _forward(x, weight, call)
        ctx.call = call
        ctx.save_for_backward(x, weight, bias, stats)
        return context

    @staticmethod
    def backward(ctx, grad: Tensor):
        if torch.is_grad_enabled():  # create_graph: the launch's gradients are not differentiable
            with torch.no_grad():
                grads = _backward(ctx, grad)
            return tuple(dispatch.not_differentiable(g, WHAT) if g is not None else None for g in grads)
        return _backward(ctx, grad)


def _backward(ctx, grad: Tensor) -> tuple:
    x, weight, bias, stats = ctx.saved_tensors
    call, needs = ctx.call, ctx.needs_input_grad
    plans = call.plans
    key = ("backward", grad.stride(0), grad.stride(1))  # [B, C, 1, 1]: the kernel reads its [B, C] strides
    grad_x, wpart = _new_strided(*call.grad_x), _new_strided(*call.wpart)
    plans[key] = launch.context_pool_bwd(grad, x, weight, stats, grad_x, wpart, plan=plans.get(key))
    grad_w = grad_bias = None
    if needs[1] or needs[2]:
        like = bias if bias is not None else weight  # the bias's gradient in its dtype (w's without one), as the op's
        grad_w = _new_strided(weight.shape, weight.stride(), weight.dtype, weight.device)
        grad_bias = _new_strided((1,), (1,), like.dtype, like.device)
        sum_weight_partials(wpart, grad_w.view(call.C), grad_bias)
    return (grad_x if needs[0] else None), (grad_w if needs[1] else None), (grad_bias if needs[2] else None), None


#: ContextPoolStep.apply without its Python wrapper: it runs only where dispatch.direct holds
_apply = dispatch.bare_apply(ContextPoolStep)
