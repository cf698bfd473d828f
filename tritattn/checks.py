"""Input validation for the public ops: every bad input is rejected before any kernel launch,
with a message that names the argument and what was expected.

What is accepted
----------------
x         a dense (strided) floating tensor [B, C, H, W] — float16, bfloat16, float32 or float64 —
          with C, H, W > 0; B = 0 gives empty results. Any strides: NCHW- and channels_last-dense
          tensors, and views whose H×W plane has one stride (slices, stride-0 broadcasts), are
          read in place; other layouts are copied once (:func:`tritattn.layout.addressable`).
companions (the logits s / t and the residual) floating, strided, on x's device, of the shape
          the op needs. Their dtype may differ from x's; outputs take x's dtype.

Errors: ``TypeError`` for a wrong type, dtype or tensor layout; ``ValueError`` for a wrong
shape, device, option value, or (modules) channel count.

Under a tracer: a torch.fx ``Proxy`` passes unchecked (nothing about it is known until the graph
runs: the functional ops trace through to their custom ops, which the graph calls unchecked, as
``torch.ops.tritattn.*`` and the ``torch.autograd.Function`` classes are); under ``torch.jit.trace``
the sizes are checked as plain ints (:func:`tritattn.tracing.sizes`: no TracerWarning, and the
trace records no check). FakeTensors and meta tensors are tensors: checked as any other.
"""
from __future__ import annotations

import torch

from .tracing import is_symbolic, sizes

GATES = ("sigmoid", "hard_sigmoid")  # gate(s) applied to the logits: kernels/gates.py
ACTS = ("identity", "relu")  # epilogue after the optional residual add

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: Largest C and H×W the kernels take. They index one row or column (a channel, a pixel) in
#: int32 and only then widen to int64 for the addresses, so an extent must stay a full tile
#: (≤ 2^20 elements, far above any tile) below 2^31: ``offs = block_start + arange(BLOCK)``
#: would wrap otherwise. B·C·H·W itself is unbounded: every address is computed in int64.
MAX_EXTENT = 2**31 - 2**20


def _describe(t: torch.Tensor) -> str:
    return f"shape {sizes(t)}, dtype {t.dtype}, device {t.device}"


def check_tensor(t: object, name: str) -> None:
    """t must be a dense (strided) torch.Tensor of a floating dtype the kernels support."""
    if is_symbolic(t):
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}; call .to_dense() first")
    if t.dtype not in FLOAT_DTYPES:
        if t.is_complex():
            kind = "a complex"
        elif t.is_floating_point() or t.is_quantized:
            kind = "an unsupported"  # float8 variants, quantized types
        else:
            kind = "an integer or bool"
        raise TypeError(
            f"{name} must have a floating dtype (float16, bfloat16, float32 or float64), got {kind} dtype {t.dtype}"
        )


def plain_floating(t: object) -> bool:
    """Whether t is a plain dense tensor of a supported floating dtype, outside ``torch.jit.trace``:
    the common case, whose sizes a check may then read in one test (host time at every call)."""
    return (type(t) is torch.Tensor and t.layout is torch.strided and t.dtype in FLOAT_DTYPES
            and not torch.jit.is_tracing())


def check_feature_map(x: object, name: str = "x") -> None:
    """x must be a dense floating [B, C, H, W] tensor with C, H, W > 0 (B may be 0)."""
    if plain_floating(x):
        shape = x.shape  # the common case in one test (host time at every block call); else each check in turn
        if len(shape) == 4 and 0 < shape[1] <= MAX_EXTENT and shape[2] and shape[3] and shape[2] * shape[3] <= MAX_EXTENT:
            return
    check_tensor(x, name)
    if is_symbolic(x):
        return
    shape = sizes(x)
    if len(shape) != 4:
        raise ValueError(f"{name} must be 4-D [B, C, H, W], got a {len(shape)}-D tensor of shape {shape}")
    _, C, H, W = shape
    if C == 0 or H == 0 or W == 0:
        raise ValueError(f"{name} must have C, H, W > 0 to pool over, got shape {shape} (B = 0 is allowed)")
    if C > MAX_EXTENT or H * W > MAX_EXTENT:
        raise ValueError(f"{name} must have C and H×W at most {MAX_EXTENT}, got shape {shape}")


def check_companion(t: object, name: str, x: torch.Tensor, shape: tuple[int, ...]) -> None:
    """t (a gate, logits or residual belonging to x) must be dense, floating, on x's device, of ``shape``."""
    check_tensor(t, name)
    _check_placement(t, name, x, shape)


def _check_placement(t: torch.Tensor, name: str, x: torch.Tensor, shape: tuple[int, ...]) -> None:
    """t (already checked with :func:`check_tensor`) is on x's device and has ``shape``."""
    if is_symbolic(t) or is_symbolic(x):
        return
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device} but x is on {x.device}; move them to one device")
    if sizes(t) != sizes(shape):
        raise ValueError(f"{name} must have shape {sizes(shape)} to match x ({_describe(x)}), got {sizes(t)}")


def check_logits(s: object, x: torch.Tensor, name: str = "s") -> None:
    """Per-channel logits for x: [B, C] or [B, C, 1, 1] (the output of a 1×1 conv)."""
    check_tensor(s, name)
    if is_symbolic(s) or is_symbolic(x):
        return
    B, C = sizes(x)[:2]
    if sizes(s) not in ((B, C), (B, C, 1, 1)):
        raise ValueError(
            f"{name} must have shape ({B}, {C}) or ({B}, {C}, 1, 1) — [B, C] logits for x ({_describe(x)}) — "
            f"got {sizes(s)}"
        )
    _check_placement(s, name, x, sizes(s))


def check_channels(x: torch.Tensor, expected: int, module: str) -> None:
    """A module built for ``expected`` channels must get x = [B, expected, H, W] (x already checked
    with :func:`check_feature_map`)."""
    if is_symbolic(x):
        return
    channels = sizes(x)[1]
    if channels != expected:
        raise ValueError(
            f"{module} was built for {expected} channels but x has {channels} "
            f"(x: {_describe(x)}; expected [B, {expected}, H, W])"
        )


def check_choice(value: object, name: str, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def check_gate(gate: object) -> None:
    check_choice(gate, "gate", GATES)


def check_act(act: object) -> None:
    check_choice(act, "act", ACTS)
