"""tritattn's operators, registered with ``torch.library.custom_op``.

Each forward and backward is an opaque custom op with a fake (meta) implementation, so
``torch.compile(fullgraph=True)`` and ``torch.export`` trace them without graph breaks; the
forward ops' autograd formulas are registered in :mod:`tritattn.autograd`. Every op allocates
its outputs here — the fake implementations call the same allocation code, so shapes and
strides agree — then runs on the
backend :func:`tritattn.backend_for` names: :mod:`tritattn.launch` (Triton kernels) or
:mod:`tritattn.eager_ops` (torch). Outputs take x's memory format.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor

from . import eager_ops
from .backend import TRITON_AVAILABLE, backend_for
from .layout import Axis, addressable

if TRITON_AVAILABLE:
    from . import launch


#: Debugging aid (and used by the tests): fill every new output with NaN (integers with -1)
#: before the kernel writes it, so an element the kernel skips cannot pass for a result.
poison_outputs: bool = os.environ.get("TRITATTN_POISON_OUTPUTS", "0") == "1"


def _poisoned(t: Tensor) -> Tensor:
    """t, filled with NaN (-1 for integers) where :data:`poison_outputs` asks."""
    if poison_outputs and t.numel() and not isinstance(t, torch._subclasses.FakeTensor):
        t.fill_(float("nan") if t.is_floating_point() else -1)
    return t


def _new(shape, dtype: torch.dtype, device: torch.device, memory_format=torch.contiguous_format) -> Tensor:
    # a tuple: torch.empty parses a torch.Size ≈ 1 µs slower (host time at every call); _poisoned
    # called only where it poisons (each call costs µs inside a backward)
    t = torch.empty(shape if type(shape) is tuple else tuple(shape), dtype=dtype, device=device,
                    memory_format=memory_format)
    return _poisoned(t) if poison_outputs else t


def _new_strided(shape: tuple, strides: tuple, dtype: torch.dtype, device: torch.device) -> Tensor:
    """:func:`_new` where the caller knows the strides: ``torch.empty_strided`` parses its
    arguments ≈ 0.5 µs faster than ``torch.empty`` (a host path that allocates per call)."""
    t = torch.empty_strided(shape, strides, dtype=dtype, device=device)
    return _poisoned(t) if poison_outputs else t


def _empty_like_preserved(x: Tensor) -> Tensor:
    """A new tensor of x's size, strides, dtype and device (``torch.empty_like``, x dense)."""
    new = torch.empty_like(x)
    return _poisoned(new) if poison_outputs else new


def _new_as(t: Tensor) -> Tensor:
    """A new contiguous tensor of t's shape, dtype and device (a gradient for a weight t)."""
    new = torch.empty_like(t, memory_format=torch.contiguous_format)
    return _poisoned(new) if poison_outputs else new


def _impl(x: Tensor):
    """The module holding mean_max_fwd / mean_max_bwd / gated_scale_fwd / gated_scale_bwd for x."""
    return eager_ops if backend_for(x) == "torch" else launch


def memory_format_of(x: Tensor) -> torch.memory_format:
    """channels_last for a channels_last-dense x that is not also NCHW-contiguous, else contiguous."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _empty_4d(x: Tensor, channels: int, dtype: torch.dtype | None = None) -> Tensor:
    B, _, H, W = x.shape
    return _new((B, channels, H, W), dtype or x.dtype, x.device, memory_format_of(x))


def _empty_like_4d(x: Tensor) -> Tensor:
    new = torch.empty_like(x, memory_format=memory_format_of(x))
    return _poisoned(new) if poison_outputs else new


def _optional(t: Tensor) -> Tensor | None:
    """Custom ops cannot return None: an unused output is an empty tensor, mapped back here."""
    return t if t.numel() else None


def _nothing(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    return _new((0,), dtype or x.dtype, x.device)


# --- mean / max over H×W (channel squeeze) or over C (CBAM spatial pooling) ------------------

def _alloc_squeeze(x: Tensor, want_mean: bool, want_max: bool) -> tuple[Tensor, Tensor, Tensor]:
    B, C = x.shape[:2]
    mean = _new((B, C), x.dtype, x.device) if want_mean else _nothing(x)
    maximum = _new((B, C), x.dtype, x.device) if want_max else _nothing(x)
    count = _new((B, C), torch.int32, x.device) if want_max else _nothing(x, torch.int32)
    return mean, maximum, count


@torch.library.custom_op("tritattn::squeeze", mutates_args=())
def squeeze(x: Tensor, want_mean: bool, want_max: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(mean [B, C], max [B, C], tie count [B, C] int32) over H×W; unwanted outputs are empty."""
    x = addressable(x)
    mean, maximum, count = _alloc_squeeze(x, want_mean, want_max)
    if x.numel():
        _impl(x).mean_max_fwd(x, "channel", _optional(mean), _optional(maximum), _optional(count))
    return mean, maximum, count


@squeeze.register_fake
def _(x, want_mean, want_max):
    return _alloc_squeeze(x, want_mean, want_max)


def _alloc_spatial_pool(x: Tensor) -> tuple[Tensor, Tensor]:
    B, _, H, W = x.shape
    return _empty_4d(x, 2), _new((B, H * W), torch.int32, x.device)


@torch.library.custom_op("tritattn::spatial_pool", mutates_args=())
def spatial_pool(x: Tensor) -> tuple[Tensor, Tensor]:
    """(pooled [B, 2, H, W] = (mean over C, max over C), tie count [B, H·W] int32)."""
    x = addressable(x)
    pooled, count = _alloc_spatial_pool(x)
    if x.numel():
        _impl(x).mean_max_fwd(x, "spatial", pooled[:, 0:1], pooled[:, 1:2], count)
    return pooled, count


@spatial_pool.register_fake
def _(x):
    return _alloc_spatial_pool(x)


def _mean_max_backward(
    x: Tensor, axis: Axis, grad_mean: Tensor | None, grad_max: Tensor | None,
    maximum: Tensor | None, count: Tensor | None,
) -> Tensor:
    x = addressable(x)
    grad_x = _empty_like_4d(x)
    if x.numel():
        if axis == "spatial":
            grad_mean, grad_max = (addressable(g) if g is not None else None for g in (grad_mean, grad_max))
        _impl(x).mean_max_bwd(x, axis, grad_mean, grad_max, maximum, count, grad_x)
    return grad_x


@torch.library.custom_op("tritattn::squeeze_backward", mutates_args=())
def squeeze_backward(
    x: Tensor, grad_mean: Optional[Tensor], grad_max: Optional[Tensor], maximum: Optional[Tensor], count: Optional[Tensor]
) -> Tensor:
    """grad_x = grad_mean / (H·W) + [x == max] · grad_max / count."""
    return _mean_max_backward(x, "channel", grad_mean, grad_max, maximum, count)


@squeeze_backward.register_fake
def _(x, grad_mean, grad_max, maximum, count):
    return _empty_like_4d(addressable(x))


@torch.library.custom_op("tritattn::spatial_pool_backward", mutates_args=())
def spatial_pool_backward(x: Tensor, grad_pooled: Tensor, pooled: Tensor, count: Tensor) -> Tensor:
    """grad_x = grad_pooled[:, 0] / C + [x == pooled[:, 1]] · grad_pooled[:, 1] / count."""
    pooled = addressable(pooled)
    return _mean_max_backward(x, "spatial", grad_pooled[:, 0:1], grad_pooled[:, 1:2], pooled[:, 1:2], count)


@spatial_pool_backward.register_fake
def _(x, grad_pooled, pooled, count):
    return _empty_like_4d(addressable(x))


# --- gated scaling: per-channel excitation or per-pixel CBAM spatial scaling -----------------

@torch.library.custom_op("tritattn::excite_scale", mutates_args=())
def excite_scale(x: Tensor, s: Tensor, residual: Optional[Tensor], gate: str, act: str) -> Tensor:
    """y = act(x · gate(s)[b, c] + residual), s: [B, C] logits."""
    x = addressable(x)
    residual = addressable(residual) if residual is not None else None
    y = _empty_like_4d(x)
    if x.numel():
        _impl(x).gated_scale_fwd(x, s, residual, y, "channel", gate, act)
    return y


@excite_scale.register_fake
def _(x, s, residual, gate, act):
    return _empty_like_4d(addressable(x))


def _alloc_excite_scale_backward(x: Tensor, s: Tensor, want_grad_residual: bool) -> tuple[Tensor, Tensor, Tensor]:
    grad_res = _empty_like_4d(x) if want_grad_residual else _nothing(x)
    return _empty_like_4d(x), _new_as(s), grad_res


@torch.library.custom_op("tritattn::excite_scale_backward", mutates_args=())
def excite_scale_backward(
    grad_y: Tensor, x: Tensor, s: Tensor, y: Optional[Tensor], gate: str, act: str, want_grad_residual: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """(grad_x, grad_s, grad_residual or empty) in one pass; y is needed only for act="relu"."""
    x, grad_y = addressable(x), addressable(grad_y)
    y = addressable(y) if y is not None else None
    grad_x, grad_s, grad_res = _alloc_excite_scale_backward(x, s, want_grad_residual)
    if x.numel():
        _impl(x).gated_scale_bwd(grad_y, x, s, y, grad_x, _optional(grad_res), grad_s, "channel", gate, act)
    else:
        grad_s.zero_()
    return grad_x, grad_s, grad_res


@excite_scale_backward.register_fake
def _(grad_y, x, s, y, gate, act, want_grad_residual):
    return _alloc_excite_scale_backward(addressable(x), s, want_grad_residual)


@torch.library.custom_op("tritattn::spatial_scale", mutates_args=())
def spatial_scale(x: Tensor, t: Tensor, gate: str) -> Tensor:
    """y = x · gate(t)[b, 0, h, w], t: [B, 1, H, W] logits."""
    x, t = addressable(x), addressable(t)
    y = _empty_like_4d(x)
    if x.numel():
        _impl(x).gated_scale_fwd(x, t, None, y, "spatial", gate, "identity")
    return y


@spatial_scale.register_fake
def _(x, t, gate):
    return _empty_like_4d(addressable(x))


@torch.library.custom_op("tritattn::spatial_scale_backward", mutates_args=())
def spatial_scale_backward(grad_y: Tensor, x: Tensor, t: Tensor, gate: str) -> tuple[Tensor, Tensor]:
    """(grad_x, grad_t) in one pass over grad_y and x."""
    x, grad_y, t = addressable(x), addressable(grad_y), addressable(t)
    grad_x, grad_t = _empty_like_4d(x), _empty_4d(t, 1)
    if x.numel():
        _impl(x).gated_scale_bwd(grad_y, x, t, None, grad_x, None, grad_t, "spatial", gate, "identity")
    else:
        grad_t.zero_()
    return grad_x, grad_t


@spatial_scale_backward.register_fake
def _(grad_y, x, t, gate):
    return _empty_like_4d(addressable(x)), _empty_4d(addressable(t), 1)
