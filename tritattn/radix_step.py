"""The radix twins' per-op path on the host's short path: :func:`pool` and :func:`combine`, the
launches of ``tritattn::radix_pool`` and ``tritattn::radix_combine`` (and of the latter's
backward) prepared once per signature of the branches, each under autograd as one plain
``torch.autograd.Function``.

A SplitAttn / SelectiveKernel call that needs a gradient takes the per-op path (the attention
MLP runs between the two passes, its BatchNorm in training on batch statistics: as its layers'
calls where tritattn/layer_calls.py and radix_mlp.py apply, else as modules).
Through the ops (even called directly, tritattn/dispatch.py) each pass paid, besides its launch:
the generic Function's plumbing, the branches' addressability check, an allocation by shape,
the launch plan's key built from the tensors' strides, and the views autograd records around
it (``pooled[:, :, None, None]`` for the MLP's convs, ``a.reshape(B, R, C)``). Timed alone on
perf/host_time.py's proxy (launches stubbed), the pool with autograd took 24 µs and the combine
23 µs; here 12 and 10 µs. ResNeSt's training step at B = 8: 750 → 685 µs (eager timm's: 640).

A :class:`BranchesCall` keeps what the signature of the branches x5 (sizes, strides, dtype,
device) fixes: the outputs' sizes and strides and the launch plans (the backward's per layout of
the incoming gradient, each checked once); branches the kernels do not address in place (the
ops copy them) or empty ones get none. :func:`pool`
returns the descriptor as [B, C, 1, 1], the shape the MLP's 1×1 convs take; :func:`combine`
takes the attention weights as the MLP makes them (contiguous, B·R·C elements: [B, R·C],
[B, C, 1, 1] or [B, R, C, 1, 1]), their gradient in that shape. The launches, their arguments
and the math are the ops' (tritattn/radix_block.py), so the bits are too
(tests/test_radix_step.py).

**x5's gradient written once.** Through the ops, x5 gets two gradients that autograd adds: the
combine's, a · g (a pass writing R maps), and the pool's, grad_pooled / (H·W) broadcast (a view;
the add then reads and writes the R maps again). Where :func:`combine` is given the pooled
output it was computed from (``pooled``: SplitAttn's descriptor, SelectiveKernel's through the
twin attention), its backward launch writes only the attention's gradient (the reduce over H·W)
and hands (g, x5, a) to the pool's autograd node, whose backward — after the attention MLP's,
which gives grad_pooled — writes x5's whole gradient in one launch (kernels/radix_combine.py,
ADD_POOL: each term rounded as eager rounds it, then their sum, so the op path's bits in the
interpreter; on a GPU the compiler may fuse the product and the sum). The combine defers only
where autograd's engine will run that pool node later in the same backward
(``torch._C._will_engine_execute_node``, the graph task's id): a backward that asks for the
attention's gradient alone, or an attention not made from the pooled output, gets the combine's
own gradient, as before. Per training step: the same number of launches, and of one branch's
map size M, 2M + 2R·M moved where the op path moves M + 4R·M (the add's read and write of
x5's gradient, less a second read of g); less host time (the pool's division and views, the add:
on perf/host_time.py's proxy at B = 8, interleaved, ResNeSt's training step 705 → 685 µs, SKNet's
960 → 948, eager's 653 and 886).

They apply where the op would run its implementation directly anyway (``dispatch.direct``: not
under torch.compile / export / jit.trace, no dispatch or function mode, no functorch transform,
no profiler, a plain tensor), on the Triton kernels (``backend_for`` is not "torch"), for a
non-empty x5 its kernels address in place. Everything else calls the ops as before. Like the
op's, radix_combine's backward is not differentiable (a double backward through it raises);
the pool's, a broadcast view, is.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import dispatch
from .backend import TRITON_AVAILABLE, backend_for
from .layout import addressable, flat_spatial_stride
from .ops import _empty_like_preserved, _new_strided
from .radix_block import _new_like, branch_memory_format, radix_combine_unchecked, radix_pool_unchecked

if TRITON_AVAILABLE:
    from . import launch


#: whether autograd's engine answers what deferring x5's gradient asks (the graph task's id,
#: whether it will run a node; private torch APIs, present in the torch versions we support)
ENGINE_ANSWERS = hasattr(torch._C, "_current_graph_task_id") and hasattr(torch._C, "_will_engine_execute_node")


class BranchesCall:
    """What a pass over branches of one signature (sizes, strides, dtype, device) derives from it alone."""

    __slots__ = ("shape", "spread", "hw", "pooled", "out", "grad_x5", "weights", "plans", "grads")

    def __init__(self, x5: Tensor):
        B, R, C, H, W = self.shape = x5.shape
        dtype, device = x5.dtype, x5.device
        self.spread = (B, 1, C, 1, 1)  # the pooled gradient's view, broadcast over R, H and W
        self.hw = H * W
        #: (size, strides, dtype, device) of the outputs (ops._new_strided): the descriptor
        #: [B, C, 1, 1], the combined map in one branch's memory format (the op's), grad_x5 in x5's order
        self.pooled = ((B, C, 1, 1), (C, 1, 1, 1), dtype, device)
        meta = torch.empty_strided(x5.shape, x5.stride(), dtype=dtype, device="meta")
        out = torch.empty((B, C, H, W), dtype=dtype, device="meta", memory_format=branch_memory_format(x5))
        self.out = ((B, C, H, W), out.stride(), dtype, device)
        self.grad_x5 = (x5.shape, _new_like(meta).stride(), dtype, device)
        #: the weights a as [B, R, C] (contiguous) for the first launch of each of their shapes
        self.weights = (B, R, C)
        #: launch plans: "pool", ("combine", a's shape), ("backward" / "reduce", a's shape, the gradient's
        #: strides), ("apply", a's shape, the gradient's strides, the pooled gradient's strides)
        self.plans: dict = {}
        #: (a's shape, strides) of the incoming gradients seen, each addressable (:func:`_backward_key`)
        self.grads: set = set()


#: signature of the branches (sizes, strides, dtype, device) → its BranchesCall, or None where
#: they are empty or the kernels do not address them in place (the ops copy them)
_calls: dict[tuple, Optional[BranchesCall]] = {}


def branches_call(x5: Tensor) -> Optional[BranchesCall]:
    """The BranchesCall for branches x5 where the short path applies to them now (module
    docstring), else None: :func:`pool` and :func:`combine` then call the ops."""
    if not dispatch.direct(x5) or backend_for(x5) == "torch":
        return None
    return dispatch.per_signature(_calls, (x5.shape, x5.stride(), x5.dtype, x5.device),
                                  lambda: BranchesCall(x5) if x5.numel() and flat_spatial_stride(x5) is not None else None)


def pool(x5: Tensor, call: Optional[BranchesCall]) -> Tensor:
    """radix_pool(x5) [B, C] viewed [B, C, 1, 1]: mean over H·W of Σ_r x5[:, r], x5 valid
    branches (unchecked); ``call``: :func:`branches_call`'s for x5."""
    if call is None:
        return radix_pool_unchecked(x5)[:, :, None, None]
    if torch.is_grad_enabled() and x5.requires_grad:
        return _pool_apply(x5, call)
    return _pool(x5, call)


def combine(x5: Tensor, a: Tensor, call: Optional[BranchesCall], pooled: Optional[Tensor] = None) -> Tensor:
    """radix_combine(x5, a viewed [B, R, C]): Σ_r a[:, r] · x5[:, r], x5 valid branches and a
    B·R·C attention weights on x5's device (unchecked) in (radix, channel) order, of any shape;
    ``call``: :func:`branches_call`'s for x5; ``pooled``: :func:`pool`'s output for the same x5
    where a is computed from it (its backward may then be deferred to the pool's: module docstring)."""
    if call is None or not a.is_contiguous():
        return radix_combine_unchecked(x5, a.reshape(x5.shape[:3]))
    if torch.is_grad_enabled() and (x5.requires_grad or a.requires_grad):
        return _combine_apply(x5, a, call, _pool_node(pooled, x5) if ENGINE_ANSWERS else None)
    return _combine(x5, a, call)


def _pool_node(pooled: Optional[Tensor], x5: Tensor) -> Optional[object]:
    """The autograd node of ``pooled`` where it is :func:`pool`'s output for this very x5 (its
    node's edge is x5's), else None."""
    node = pooled.grad_fn if pooled is not None else None
    if type(node) is not _POOL_NODE:
        return None
    producer = x5.grad_fn
    return node if producer is not None and node.next_functions[0][0] is producer else None


def _pool(x5: Tensor, call: BranchesCall) -> Tensor:
    pooled = _new_strided(*call.pooled)
    plans = call.plans
    plans["pool"] = launch.radix_pool_fwd(x5, pooled, plan=plans.get("pool"))
    return pooled


def _combine(x5: Tensor, a: Tensor, call: BranchesCall) -> Tensor:
    out = _new_strided(*call.out)
    plans, key = call.plans, ("combine", a.shape)
    plan = plans.get(key)
    # a's plan is built on its [B, R, C] view; a kept plan needs only its address
    plans[key] = launch.radix_combine_fwd(x5, a if plan is not None else a.view(call.weights), out, plan=plan)
    return out


class RadixPoolStep(torch.autograd.Function):
    """:func:`pool` under autograd: its gradient is grad / (H·W), a broadcast view (as the op's) —
    or, where the combine's backward deferred its x5 gradient here (``ctx.deferred``), the one
    launch that writes x5's whole gradient, a · g + grad / (H·W)."""

    @staticmethod
    def forward(ctx, x5: Tensor, call: BranchesCall) -> Tensor:
        ctx.call = call
        ctx.deferred = ctx.ran_in = None
        return _pool(x5, call)

    @staticmethod
    def backward(ctx, grad: Tensor):
        call = ctx.call
        if ENGINE_ANSWERS:  # else nothing is deferred here
            task = torch._C._current_graph_task_id()
            deferred, ctx.deferred, ctx.ran_in = ctx.deferred, None, task
            if deferred is not None and deferred[0] == task:  # the combine's x5 gradient comes with this one
                _, g, x5, a = deferred
                grad_x5 = _new_strided(*call.grad_x5)
                _combine_backward(g, x5, a, grad_x5, None, call, ("apply", a.shape, g.stride(), grad.stride()), grad)
                return grad_x5, None
        return (grad / call.hw).view(call.spread).expand(call.shape), None


#: the class of a RadixPoolStep's autograd node (its output's grad_fn)
_POOL_NODE = RadixPoolStep._backward_cls


#: what a double backward through radix_combine's backward launch names
WHAT = "radix_combine"


class RadixCombineStep(torch.autograd.Function):
    """:func:`combine` under autograd: one backward launch writes grad_x5 and grad_a (as the op's);
    or, where the pool's node (``pool``, its ctx) of the same x5 will run later in this backward,
    the launch writes grad_a alone and leaves x5's gradient to the pool's backward, which writes
    it whole in one launch once the MLP's backward has given the pooled gradient (:func:`_defers`)."""

    @staticmethod
    def forward(ctx, x5: Tensor, a: Tensor, call: BranchesCall, pool: Optional[object]) -> Tensor:
        ctx.call, ctx.pool = call, pool
        ctx.save_for_backward(x5, a)
        return _combine(x5, a, call)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x5, a = ctx.saved_tensors
        call = ctx.call
        grad, key = _backward_key(call, a, grad)
        grad_a = _empty_like_preserved(a)  # contiguous, as a
        pool = ctx.pool
        task = _defers(pool, ctx.needs_input_grad) if pool is not None and not torch.is_grad_enabled() else None
        if task is not None:
            _combine_backward(grad, x5, a, None, grad_a, call, ("reduce",) + key)
            pool.deferred = (task, grad, x5, a)
            return None, grad_a, None, None
        grad_x5 = _new_strided(*call.grad_x5)
        if torch.is_grad_enabled():  # create_graph: the launch's gradients are not differentiable
            with torch.no_grad():
                _combine_backward(grad, x5, a, grad_x5, grad_a, call, ("backward",) + key)
            return dispatch.not_differentiable(grad_x5, WHAT), dispatch.not_differentiable(grad_a, WHAT), None, None
        _combine_backward(grad, x5, a, grad_x5, grad_a, call, ("backward",) + key)
        return grad_x5, grad_a, None, None


def _backward_key(call: BranchesCall, a: Tensor, grad: Tensor) -> tuple[Tensor, tuple]:
    """(the incoming gradient of the combine's output, addressable, and (a's shape, its strides)),
    the key of its backward launches' plans: a layout seen before was addressable, so it needs no
    check (layout.addressable copies a gradient the kernels do not address in place)."""
    key = (a.shape, grad.stride())
    if key not in call.grads:
        grad = addressable(grad)
        key = (a.shape, grad.stride())
        call.grads.add(key)
    return grad, key


def _defers(pool: object, needs: tuple) -> Optional[int]:
    """This backward's graph task id where the combine's backward leaves x5's gradient to the
    pool's node ``pool``, else None: both gradients wanted, the pool's node not yet run in this
    backward and run later in it (the engine says so: then every path from the loss to x5
    through the pool's output, the attention MLP's, is done first), so it finds the combine's
    part there. Without autograd's engine (an error asking it), None."""
    if not (needs[0] and needs[1]):
        return None
    try:
        task = torch._C._current_graph_task_id()
        return task if pool.ran_in != task and torch._C._will_engine_execute_node(pool) else None
    except RuntimeError:
        return None


def _combine_backward(grad: Tensor, x5: Tensor, a: Tensor, grad_x5: Optional[Tensor], grad_a: Optional[Tensor],
                      call: BranchesCall, key: tuple, pooled_grad: Optional[Tensor] = None) -> None:
    """One radix_combine_bwd launch (its modes: launch.radix_combine_bwd), its plan kept in the
    call under ``key``; a first launch builds it on a's (and grad_a's) [B, R, C] views."""
    plans = call.plans
    plan = plans.get(key)
    if plan is None:
        a = a.view(call.weights)
        grad_a = grad_a.view(call.weights) if grad_a is not None else None
    plans[key] = launch.radix_combine_bwd(grad, x5, a, grad_x5, grad_a, plan=plan, pooled_grad=pooled_grad)


#: the applies without autograd.Function.apply's Python wrapper: they run only where dispatch.direct holds
_pool_apply = dispatch.bare_apply(RadixPoolStep)
_combine_apply = dispatch.bare_apply(RadixCombineStep)
