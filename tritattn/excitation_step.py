"""A channel-attention block's call on the host's short path: the block op's own launches
without the op's plumbing, under autograd as one plain ``torch.autograd.Function``
(:class:`ExcitationStep`).

Through the custom op ``tritattn::excitation_block`` (even called directly, tritattn/dispatch.py),
a call pays, besides its launches, the generic op's plumbing: an autograd formula over the op's
24 arguments and a backward op of 29, whose outputs cannot be None (0-size placeholders for
every absent gradient), its kernel path chosen again inside each op, a gradient allocated for
every weight whether or not autograd wants it. On perf/host_time.py's proxy that was ≈ 100 µs of
the one-launch path's 280 µs training step, where eager timm's whole SE block takes 185.

:func:`excite` runs the same launches and ops on the path the module chose — in the common
cases (:class:`StepCall` ``lean``) straight through (:func:`_lean_forward`, :func:`_lean_backward`,
keeping their launches' plans), else through excitation_block.forward_launches and
channel_backward — so its results are the op's to the bit (tests/test_excitation_step.py):

- without autograd, the forward's launches alone (no hidden vectors kept);
- under autograd, :class:`ExcitationStep`, saving what the op saves: x, the logits s (float32),
  y only with the ReLU epilogue, the split path's hidden vectors (excitation_mlp.DenseMLP's);
  its backward allocates gradients only for the inputs autograd asks for
  (``ctx.needs_input_grad``), and where neither x nor the residual wants one the apply launch
  does not run.

:func:`applies` takes it where the op would run its implementation directly anyway
(``dispatch.direct``: not under torch.compile / export / jit.trace, no dispatch or function
mode, no functorch transform, no profiler, a plain tensor), in the common case: no prologue (the
caller's), no hidden BatchNorm, one launch pair over the batch (the L2 chunking off), a
non-empty x, a kernel path named by the module. Everything else calls the op as before, and
under torch.compile the op is what dynamo records. Like the op's backward, the backward is not
differentiable: under ``create_graph`` its gradients carry a gradient function that raises (as
``once_differentiable``'s do), the residual's identity gradient excepted.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from . import dispatch, excitation_block, excitation_mlp, paths, workspaces
from .backend import TRITON_AVAILABLE, kernels_disabled
from .excitation_block import (KERNEL_PATHS, BlockSpec, acc_dtype, apply_taps, channel_backward, forward_launches,
                               pipeline_spec, pooled_workspace, samples_per_launch, scale_taps)
from .layout import addressable, flat_spatial_stride
from .ops import _empty_like_4d, _empty_like_preserved, _new, _new_strided

if TRITON_AVAILABLE:
    from . import launch


class StepCall(NamedTuple):
    """The non-tensor arguments of one call: the kernels' description of the excitation
    (excitation_block.pipeline_spec), the hidden width RD, the gate, the epilogue, the path; on
    the split path with a dense MLP (excitation_mlp.is_dense) ``dense``, and ``mlp`` the MLP
    prepared once where the weights have the workspaces' dtype (else made at each call);
    ``lean``: the weights in the workspaces' dtype, one pooled vector (not CBAM's two), and on the
    split path a dense MLP (then ``mlp``) or the taps: the call runs :func:`_lean_forward` and
    :func:`_lean_backward` where autocast is off; ``plans``: their launches' plans, kept per
    launch (and the backward's per layout of the incoming gradient) — the call signature fixes the
    rest of what a plan is built from; ``in_place``: the kernels address x (and the residual) in
    place (layout.addressable: their strides, which the call signature fixes). For the straight
    path's allocations, fixed by the signature too: ``vector`` and ``hidden``, the (size, strides,
    dtype, device) of its [B, C] and [B, RD] workspaces (ops._new_strided), ``y_like``: whether
    y (and grad_x) may be ``torch.empty_like(x)`` (its strides are ops._empty_like_4d's);
    ``autocast``: the device type whose autocast a call checks (None: it has none); ``taps``:
    ECA's taps as their backward's convolution takes them (excitation_mlp.taps_filter, of the detached weight) where
    ``lean`` with the taps, else None."""

    spec: dict
    RD: int
    gate: str
    act_out: str
    path: str
    dense: bool
    mlp: Optional[excitation_mlp.DenseMLP]
    lean: bool
    plans: dict
    in_place: bool
    vector: tuple
    hidden: tuple
    y_like: bool
    autocast: Optional[str]
    taps: Optional[excitation_mlp.TapsFilter]


def applies(x: Tensor, spec: BlockSpec, residual: Optional[Tensor], path: str) -> bool:
    """Whether a call of the block op on these arguments (no prologue) takes :func:`excite`."""
    return (path in KERNEL_PATHS and spec.norm is None and x.numel() > 0 and dispatch.direct(x)
            and samples_per_launch(x) == x.shape[0])


def excite(x: Tensor, spec: BlockSpec, gate: str, residual: Optional[Tensor], act_out: str, path: str) -> Tensor:
    """y = act_out(x · gate(excitation(pool(x))) + residual) on ``path`` (where :func:`applies`),
    recorded by autograd as one :class:`ExcitationStep` where x, the residual or a weight needs a
    gradient."""
    return Step(x, spec, gate, residual, act_out, path)(x, residual)


class Step:
    """:func:`excite` prepared for one call signature (:func:`call_key`): what a call derives from
    the signature, the block's weights and the grad mode alone, derived once. A module keeps one
    per signature it meets (tritattn/modules.py) and calls it while its plan stands; a call
    itself still checks :func:`dispatch.direct` (the modes may change between calls)."""

    __slots__ = ("weights", "call", "grad")

    def __init__(self, x: Tensor, spec: BlockSpec, gate: str, residual: Optional[Tensor], act_out: str, path: str):
        kernel_spec, RD = pipeline_spec(spec.pool, spec.mlp, spec.act, spec.w1, x.shape[1])
        self.weights = (spec.w1, spec.b1, spec.w2, spec.b2)
        dense = path == "split" and excitation_mlp.is_dense(spec.mlp, spec.pool, False)
        acc = acc_dtype(x)
        in_acc = all(w is None or w.dtype == acc for w in self.weights)
        prepared = dense and in_acc
        lean = in_acc and spec.pool != "mean_max_both" and (
            path == "one-launch" or dense or spec.mlp.startswith("taps"))
        B, C = x.shape[:2]
        device = x.device
        meta = torch.empty_like(x, device="meta")  # the strides of empty_like(x), nothing allocated
        self.call = StepCall(kernel_spec, RD, gate, act_out, path, dense,
                             excitation_mlp.dense_mlp(self.weights, spec.act, acc) if prepared else None, lean, {},
                             all(t is None or flat_spatial_stride(t) is not None for t in (x, residual)),
                             ((B, C), (C, 1), acc, device), ((B, RD), (RD, 1), acc, device),
                             meta.stride() == _empty_like_4d(meta).stride(),
                             device.type if torch.amp.is_autocast_available(device.type) else None,
                             excitation_mlp.taps_filter(spec.w1.detach(), spec.mlp == "taps_circular")
                             if lean and spec.mlp.startswith("taps") else None)
        self.grad = dispatch.needs_grad((x, residual, *self.weights))

    def __call__(self, x: Tensor, residual: Optional[Tensor]) -> Tensor:
        if self.grad:
            return _apply(x, residual, *self.weights, self.call)
        if not self.call.in_place:
            x, residual = addressable(x), _addressable(residual)
        return _forward(x, residual, self.weights, self.call)[0]


def call_key(x: object, residual: object, act_out: str) -> tuple | None:
    """What a block module's call on (x, residual, act_out) decides its path and :class:`Step`
    from, besides the module's plan and the grad mode (module_plans keeps one plan per mode):
    x's and the residual's sizes, strides, dtype, device and ``requires_grad``; the switches
    (excitation_block.enabled, l2_fraction, backend.kernels_disabled) and the path choice's state
    (paths.call_state). None where a call must decide anew: x or the residual not a plain dense
    tensor (the checks say why), a paths.recording scope open (tritattn.tune's pass), or under
    torch.compile (dynamo would guard on every size the key holds: a recompile per batch)."""
    if torch.compiler.is_compiling() or type(x) is not Tensor or x.layout is not torch.strided:
        return None
    state = paths.call_state()
    if state is None:
        return None
    if residual is None:
        res = None
    elif type(residual) is not Tensor or residual.layout is not torch.strided:
        return None
    else:
        res = (residual.shape, residual.stride(), residual.dtype, residual.device, residual.requires_grad)
    return (x.shape, x.stride(), x.dtype, x.device, x.requires_grad, res, act_out, state, excitation_block.enabled,
            excitation_block.l2_fraction, kernels_disabled())


def _addressable(t: Optional[Tensor]) -> Optional[Tensor]:
    return addressable(t) if t is not None else None


def _forward(x: Tensor, residual: Optional[Tensor], weights: tuple,
             call: StepCall) -> tuple[Tensor, Tensor, tuple[Tensor, ...], Optional[Tensor]]:
    """(y, s, the split path's hidden vectors (excitation_mlp.DenseMLP's; else ()), the one-launch
    path's ticket counters — left at 0 by the kernels, so the backward's launches may take them
    too — else None) for an addressable x (and residual)."""
    if _straight(call):
        return _lean_forward(x, residual, weights, call)
    B, C = x.shape[:2]
    spec, tail = call.spec, call.path == "one-launch"
    y = _empty_like_4d(x)
    mlp = call.mlp
    if mlp is None and call.dense:
        mlp = excitation_mlp.dense_mlp(weights, spec["act"], acc_dtype(x))
    s = None if mlp is not None else _new((B, C), acc_dtype(x), x.device)  # the dense MLP's GEMM makes s
    counter = workspaces.counters(x.device, B) if tail else None
    s, kept = forward_launches(x, residual, weights, spec, call.RD, call.gate, call.act_out, tail, y, s,
                               pooled_workspace(x, spec["pool"]), counter, prepared=mlp)
    return y, s, kept, counter


class ExcitationStep(torch.autograd.Function):
    """The block op's forward and backward launches as one autograd node (module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, residual: Optional[Tensor], w1: Optional[Tensor], b1: Optional[Tensor],
                w2: Optional[Tensor], b2: Optional[Tensor], call: StepCall) -> Tensor:
        if not call.in_place:
            x, residual = addressable(x), _addressable(residual)
        y, s, kept, counter = _forward(x, residual, (w1, b1, w2, b2), call)
        ctx.call, ctx.has_residual, ctx.counter = call, residual is not None, counter
        ctx.save_for_backward(x, y if call.act_out == "relu" else None, s, w1, b1, w2, b2, *kept)
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        if not torch.is_grad_enabled():
            return _backward(ctx, grad_y)
        # create_graph: the launches' gradients are not differentiable; a double backward through them raises
        with torch.no_grad():
            grads = _backward(ctx, grad_y)
        return tuple(dispatch.not_differentiable(g, "a channel-attention block") if isinstance(g, Tensor) and g is not grad_y
                     else g for g in grads)


#: ExcitationStep.apply without its Python wrapper: a Step runs only where dispatch.direct holds
_apply = dispatch.bare_apply(ExcitationStep)


def _backward(ctx, grad_y: Tensor) -> tuple:
    call = ctx.call
    if _straight(call):
        return _lean_backward(ctx, grad_y)
    x, y, s, w1, b1, w2, b2, *kept = ctx.saved_tensors
    needs = ctx.needs_input_grad
    spec = call.spec
    # d(y)/d(residual) is the identity without an epilogue; the apply launch writes it after a ReLU
    grad_res_written = ctx.has_residual and call.act_out != "identity" and needs[1]
    grad_x = _empty_like_4d(x) if needs[0] or grad_res_written else None
    grad_res = _empty_like_4d(x) if grad_res_written else None
    # the weight gradients autograd wants, made new by their GEMMs (named by their dtype)
    wanted = [t.dtype if t is not None and want else None for t, want in zip((w1, b1, w2, b2), needs[2:6])]
    grads = channel_backward(addressable(grad_y), x, y, s, (w1, b1, w2, b2), spec["pool"], spec["mlp"], spec["act"],
                             call.gate, call.act_out, grad_x, grad_res, wanted, path=call.path,
                             kept=tuple(kept) or None, kernel_spec=(spec, call.RD), counter=ctx.counter,
                             prepared=call.mlp)
    if ctx.has_residual and call.act_out == "identity" and needs[1]:
        grad_res = grad_y
    return (grad_x if needs[0] else None), grad_res, *grads, None


# --- the common cases, straight through ------------------------------------------------------
# The same launches and torch ops, in the same order, as excitation_block.forward_launches and
# channel_backward → excitation_mlp.pool_grads / tail_weight_grads → weight_grads take for the
# cases ``StepCall.lean`` names (so the same bits, tests/test_excitation_step.py), without their
# generality: no hidden BatchNorm, prologue or chunks, no gradient routing by name, no dtype
# conversions (the weights have the workspaces' dtype), no autocast scope (these run only where
# autocast is off); only the gradients autograd asks for. On perf/host_time.py's proxy, 15–20 µs
# less per training step (SE-ResNet-50 stage 4, split: 207 → 191 µs at B = 1, 220 → 201 at B = 8;
# stage 1, one-launch: 173 → 166, 180 → 175; eager 171–184), ECA's 204 → 185 and 409 → 391.


def _straight(call: StepCall) -> bool:
    """Whether this call runs straight through: ``call.lean`` and autocast off now."""
    return call.lean and not (call.autocast is not None and torch.is_autocast_enabled(call.autocast))


def _new_map(x: Tensor, call: StepCall) -> Tensor:
    """A new map of x's size in ops._empty_like_4d's layout (``torch.empty_like`` where that is it)."""
    return _empty_like_preserved(x) if call.y_like else _empty_like_4d(x)


def _pooled(call: StepCall, pool: str) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """excitation_block.pooled_workspace's mean, max and tie count, from the call's sizes."""
    vector = call.vector
    if pool == "mean":
        return _new_strided(*vector), None, None
    return _new_strided(*vector), _new_strided(*vector), _new_strided(*vector[:2], torch.int32, vector[3])


def _lean_forward(x: Tensor, residual: Optional[Tensor], weights: tuple,
                  call: StepCall) -> tuple[Tensor, Tensor, tuple[Tensor, ...], Optional[Tensor]]:
    """:func:`_forward` where ``call.lean``: on the one-launch path pool + each sample's MLP in the
    first launch; on the split path pool, the MLP's GEMMs (the taps: none); then scale (with the
    taps, computing s)."""
    spec, plans = call.spec, call.plans
    pool = spec["pool"]
    y = _new_map(x, call)
    mean, maximum, count = _pooled(call, pool)
    squeeze = ("squeeze", launch.excitation.MLP_TILE_ELEMENTS)  # the plan's MLP tile
    taps = None
    if call.path == "one-launch":
        vector = call.vector
        s, kept, counter = _new_strided(*vector), (), workspaces.counters(vector[3], vector[0][0])
        plans[squeeze] = launch.squeeze_excite_fwd(x, *weights, spec, call.RD, mean, maximum, count, s, counter,
                                                   plan=plans.get(squeeze))
    else:
        counter = None
        plans[squeeze] = launch.squeeze_excite_fwd(x, None, None, None, None, spec, call.RD, mean, maximum, count,
                                                   None, None, mlp_tail=False, plan=plans.get(squeeze))
        if call.mlp is not None:
            s, kept = excitation_mlp.dense_logits(excitation_mlp.pooled_input(mean, maximum, pool), call.mlp)
        else:  # ECA's taps, computed by the scale launch, which writes s
            s, kept, taps = _new_strided(*call.vector), (), scale_taps((mean, maximum), weights[0], weights[3], spec)
    plans["scale"] = launch.gated_scale_fwd(x, s, residual, y, "channel", call.gate, call.act_out,
                                            plan=plans.get("scale"), taps=taps)
    return y, s, kept, counter


def _lean_backward(ctx, grad_y: Tensor) -> tuple:
    """:func:`_backward` where ``call.lean``: the reduce launch (grad_s and the pooled vectors
    again; on the one-launch path each sample's MLP backward too) → the weight gradients autograd
    asks for as GEMMs and column sums, or the taps' convolution_backward (their weight and bias
    alone: v's gradient is the apply launch's, excitation_block.apply_taps) → the apply launch."""
    x, y, s, w1, b1, w2, b2, *kept = ctx.saved_tensors
    call, needs = ctx.call, ctx.needs_input_grad
    spec, m = call.spec, call.mlp
    pool, mlp = spec["pool"], spec["mlp"]
    tail = call.path == "one-launch"
    mean, maximum, count = _pooled(call, pool)
    vector, hidden = call.vector, tail and mlp == "fc_act_fc"
    work = {"grad_s": _new_strided(*vector), "grad_mean": _new_strided(*vector) if tail else None,
            "grad_max": _new_strided(*vector) if tail and maximum is not None else None,
            "hidden": _new_strided(*call.hidden) if hidden else None,
            "grad_h": _new_strided(*call.hidden) if hidden else None, "grad_norm": None}
    # a plan is kept per layout of an addressable gradient, so a known layout needs no check
    plans, tile = call.plans, launch.excitation.MLP_TILE_ELEMENTS
    grad = grad_y
    reduce = ("reduce", grad.stride(), tile)
    if reduce not in plans:
        grad = addressable(grad_y)
        reduce = ("reduce", grad.stride(), tile)
    apply = ("apply", reduce[1])
    if tail:
        plans[reduce] = launch.excitation_bwd_reduce(grad, x, y, s, mean, maximum, count, w1, b1, w2, spec, call.RD,
                                                     call.gate, call.act_out, work, ctx.counter,
                                                     plan=plans.get(reduce))
    else:
        plans[reduce] = launch.excitation_bwd_reduce(grad, x, y, s, mean, maximum, count, None, None, None, spec,
                                                     call.RD, call.gate, call.act_out, work, None, mlp_tail=False,
                                                     plan=plans.get(reduce))
    grad_s = work["grad_s"]
    v = excitation_mlp.pooled_input(mean, maximum, pool)
    # d(y)/d(residual) is the identity without an epilogue; the apply launch writes it after a ReLU
    has_residual = ctx.has_residual
    grad_res_written = has_residual and call.act_out != "identity" and needs[1]
    want_x = needs[0] or grad_res_written  # the apply launch runs
    # the one-launch path's reduce wrote grad_mean; on the split path the taps' is the apply launch's
    taps = w1 if want_x and apply_taps(tail, spec, False) else None
    want_v = want_x and not tail and taps is None
    grad_v = grad_w1 = grad_b1 = grad_w2 = grad_b2 = None
    if mlp.startswith("taps"):  # s = conv(v, w1) + b2, the gradients wanted from one convolution_backward
        want = (want_v, needs[2], needs[5])
        if any(want):
            grad_v, grad_w1, grad_b2 = excitation_mlp.taps_grads(grad_s, v, call.taps, want)
    else:
        if mlp == "fc":  # s = W2 · v + b2
            grad_h, act_h = grad_s, v
        elif tail:  # the reduce launch wrote act(h) and the gradient of h
            grad_h, act_h = work["grad_h"], work["hidden"]
        else:  # SiLU's backward from h, ReLU's from act(h)
            grad_h, act_h = excitation_mlp.activation_backward(kept[-1], torch.mm(grad_s, m.w2), m.act), kept[0]
        if mlp == "fc_act_fc":
            grad_w1 = torch.mm(grad_h.t(), v) if needs[2] else None
            grad_b1 = grad_h.sum(0) if needs[3] else None
        grad_w2 = torch.mm(grad_s.t(), act_h) if needs[4] else None
        grad_b2 = grad_s.sum(0) if needs[5] else None
        if want_v:
            grad_v = torch.mm(grad_h, m.w1) if m.w1 is not None else torch.mm(grad_s, m.w2)
    grad_x = grad_res = None
    if want_x:
        grad_x = _new_map(x, call)
        grad_res = _new_map(x, call) if grad_res_written else None
        if want_v:
            if pool == "mean_max_avg":  # v = (mean + max) · 0.5: both gradients grad_v · 0.5
                work["grad_max"] = grad_v.mul_(0.5)
            work["grad_mean"] = grad_v
        plans[apply] = launch.excitation_bwd_apply(grad, x, y, s, maximum, count, spec, call.RD, call.gate,
                                                   call.act_out, work, grad_x, grad_res, plan=plans.get(apply),
                                                   taps=taps)
    if has_residual and call.act_out == "identity" and needs[1]:
        grad_res = grad_y
    return (grad_x if needs[0] else None), grad_res, grad_w1, grad_b1, grad_w2, grad_b2, None
