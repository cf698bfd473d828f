"""The autograd formula of each forward op (``torch.library.register_autograd``), in terms of the
backward ops of :mod:`tritattn.ops`.

Registered on the ops themselves, so ``torch.ops.tritattn.<op>`` is differentiable however it is
called (directly, from :mod:`tritattn.functional`, from a traced graph), and
``torch.library.opcheck`` finds the autograd kernel at the autograd key. The backward ops are not
differentiable (no double backward). :func:`tritattn.functions.differentiable` registers each
formula and returns the op as a ``torch.autograd.Function`` with the same setup and backward
(:class:`Squeeze`, :class:`SpatialPool`, :class:`ExciteScale`, :class:`SpatialScale`).

================  ===================================  ============================================
op                saved for backward                   gradient
================  ===================================  ============================================
squeeze           with max: x, max, ties [#]_          grad_mean / (H·W) + [x == max] · grad_max / ties
spatial_pool      x, pooled, ties                      the same over C, per pixel
excite_scale      x, s (+ y for relu)                  excite_scale_backward: x, s (and residual)
spatial_scale     x, t                                 spatial_scale_backward: x, t
================  ===================================  ============================================

.. [#] the mean alone saves nothing: its gradient is grad_mean / (H·W) broadcast as a view, which
   autograd adds to the scaling op's grad_x without writing a plane of its own.
"""
from __future__ import annotations

from . import ops
from .dispatch import call
from .functions import differentiable


def _squeeze_setup(ctx, inputs, output) -> None:
    x, want_mean, want_max = inputs
    _, maximum, count = output
    ctx.want_mean, ctx.want_max, ctx.x_shape = want_mean, want_max, x.shape
    ctx.save_for_backward(x if want_max else None, maximum, count)


def _squeeze_backward(ctx, grad_mean, grad_max, grad_count):
    x, maximum, count = ctx.saved_tensors
    if not ctx.want_max:
        # The mean's gradient, grad_mean / (H·W) on every element, stays a broadcast view (as in
        # torch's own mean backward): no plane is written, and autograd's sum with the scaling
        # op's grad_x reads it for free.
        B, C, H, W = ctx.x_shape
        return (grad_mean / (H * W))[:, :, None, None].expand(ctx.x_shape), None, None
    grad_x = call(
        ops.squeeze_backward, x, grad_mean if ctx.want_mean else None, grad_max, maximum, count,
    )
    return grad_x, None, None


def _spatial_pool_setup(ctx, inputs, output) -> None:
    (x,) = inputs
    pooled, count = output
    ctx.save_for_backward(x, pooled, count)


def _spatial_pool_backward(ctx, grad_pooled, grad_count):
    x, pooled, count = ctx.saved_tensors
    return call(ops.spatial_pool_backward, x, grad_pooled, pooled, count)


def _excite_scale_setup(ctx, inputs, output) -> None:
    x, s, residual, gate, act = inputs
    ctx.gate, ctx.act, ctx.has_residual = gate, act, residual is not None
    ctx.save_for_backward(x, s, output if act == "relu" else None)


def _excite_scale_backward(ctx, grad_y):
    x, s, y = ctx.saved_tensors
    want_grad_res = ctx.has_residual and ctx.act != "identity" and ctx.needs_input_grad[2]
    grad_x, grad_s, grad_res = call(ops.excite_scale_backward, grad_y, x, s, y, ctx.gate, ctx.act, want_grad_res)
    if not ctx.has_residual:
        grad_res = None
    elif ctx.act == "identity":
        grad_res = grad_y  # d(y)/d(residual) is the identity
    return grad_x, grad_s, grad_res, None, None


def _spatial_scale_setup(ctx, inputs, output) -> None:
    x, t, gate = inputs
    ctx.gate = gate
    ctx.save_for_backward(x, t)


def _spatial_scale_backward(ctx, grad_y):
    x, t = ctx.saved_tensors
    grad_x, grad_t = call(ops.spatial_scale_backward, grad_y, x, t, ctx.gate)
    return grad_x, grad_t, None


# each registers the formula on the op and returns the op as a torch.autograd.Function with it
Squeeze = differentiable(ops.squeeze, _squeeze_setup, _squeeze_backward)
SpatialPool = differentiable(ops.spatial_pool, _spatial_pool_setup, _spatial_pool_backward)
ExciteScale = differentiable(ops.excite_scale, _excite_scale_setup, _excite_scale_backward)
SpatialScale = differentiable(ops.spatial_scale, _spatial_scale_setup, _spatial_scale_backward)
