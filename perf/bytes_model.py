"""Minimum bytes: what a kernel must move at the least — each input read once, each output
written once — the denominator of every achieved-GB/s figure in the sweep.

One function per kernel, mirroring the "Minimum bytes" line of its docstring in
``kernels/mean_max.py`` and ``kernels/gated_scale.py``. B, R, K as the kernels see x:
R = C, K = H×W for the channel ops; R = H×W, K = C for CBAM's spatial ops. ``itemsize`` is x's
(every plane and per-row vector has x's dtype, except ``s``, of ``s_itemsize``, and the int32 tie
counts). :func:`op_min_bytes` maps one call of a tritattn custom op to the kernel it launches;
a block's minimum is the sum over the kernels it launches plus its parameters (read once; in a
training step also their gradients written once), :func:`block_min_bytes`. The same minimum is
the denominator for tritattn, eager and torch.compile: it is the work, not an implementation.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

INT32 = 4


def mean_max_fwd(B: int, R: int, K: int, itemsize: int, want_mean: bool, want_max: bool) -> int:
    """x read; mean written if wanted; max and its int32 tie count written if wanted."""
    return B * R * K * itemsize + B * R * (itemsize * want_mean + (itemsize + INT32) * want_max)


def mean_max_bwd(B: int, R: int, K: int, itemsize: int, has_mean: bool, has_max: bool) -> int:
    """grad_x written (+ x read with the max term); grad_mean read; grad_max, max, count read."""
    planes = (1 + has_max) * B * R * K * itemsize
    return planes + B * R * (itemsize * has_mean + (2 * itemsize + INT32) * has_max)


def gated_scale_fwd(B: int, R: int, K: int, itemsize: int, s_itemsize: int, has_residual: bool) -> int:
    """x read, y written (+ residual read); s read."""
    return (2 + has_residual) * B * R * K * itemsize + B * R * s_itemsize


def gated_scale_bwd(B: int, R: int, K: int, itemsize: int, s_itemsize: int, relu: bool, write_grad_res: bool) -> int:
    """grad_y and x read, grad_x written (+ y read for relu, + grad_residual written); s read, grad_s written."""
    return (3 + relu + write_grad_res) * B * R * K * itemsize + 2 * B * R * s_itemsize


def _channel(x: Tensor) -> tuple[int, int, int, int]:
    B, C, H, W = x.shape
    return B, C, H * W, x.element_size()


def _spatial(x: Tensor) -> tuple[int, int, int, int]:
    B, C, H, W = x.shape
    return B, H * W, C, x.element_size()


def op_min_bytes(op: str, a: dict[str, Any]) -> tuple[str, int]:
    """(kernel, minimum bytes) of one call of ``torch.ops.tritattn.<op>`` with arguments ``a`` by name."""
    if op == "squeeze":
        return "mean_max_fwd", mean_max_fwd(*_channel(a["x"]), a["want_mean"], a["want_max"])
    if op == "squeeze_backward":
        return "mean_max_bwd", mean_max_bwd(*_channel(a["x"]), a["grad_mean"] is not None, a["grad_max"] is not None)
    if op == "spatial_pool":
        return "mean_max_fwd", mean_max_fwd(*_spatial(a["x"]), True, True)
    if op == "spatial_pool_backward":
        return "mean_max_bwd", mean_max_bwd(*_spatial(a["x"]), True, True)
    if op == "excite_scale":
        return "gated_scale_fwd", gated_scale_fwd(*_channel(a["x"]), a["s"].element_size(), a["residual"] is not None)
    if op == "excite_scale_backward":
        return "gated_scale_bwd", gated_scale_bwd(
            *_channel(a["x"]), a["s"].element_size(), a["act"] == "relu", a["want_grad_residual"])
    if op == "spatial_scale":
        return "gated_scale_fwd", gated_scale_fwd(*_spatial(a["x"]), a["t"].element_size(), False)
    if op == "spatial_scale_backward":
        return "gated_scale_bwd", gated_scale_bwd(*_spatial(a["x"]), a["t"].element_size(), False, False)
    raise KeyError(f"no byte model for tritattn op {op!r}")


def param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def block_min_bytes(op_calls: list[tuple[str, dict[str, Any]]], module: nn.Module, training: bool) -> int:
    """Σ over the tritattn kernels a block launched, plus its parameters read once (and, for a
    training step, their gradients written once)."""
    kernels = sum(op_min_bytes(op, a)[1] for op, a in op_calls)
    return kernels + param_bytes(module) * (2 if training else 1)
