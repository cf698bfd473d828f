"""Input validation for the public ops: every bad input is rejected before any kernel launch,
with a message that names the argument and what was expected."""
from __future__ import annotations

import torch

GATES = ("sigmoid", "hard_sigmoid")  # gate(s) applied to the logits: kernels/gates.py
ACTS = ("identity", "relu")  # epilogue after the optional residual add

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def check_feature_map(x: torch.Tensor, name: str = "x") -> None:
    """x must be a floating [B, C, H, W] tensor with C, H, W > 0 (B may be 0)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be 4-D [B, C, H, W], got {x.dim()}-D tensor of shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype (float16, bfloat16, float32, float64), got {x.dtype}")
    _, C, H, W = x.shape
    if C == 0 or H == 0 or W == 0:
        raise ValueError(f"{name} must have C, H, W > 0 to pool over, got shape {tuple(x.shape)}")


def check_companion(t: torch.Tensor, name: str, x: torch.Tensor, shape: tuple[int, ...]) -> None:
    """t (a gate, logits or residual belonging to x) must be floating, on x's device, of ``shape``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device} but x is on {x.device}; move them to one device")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} to match x ({_describe(x)}), got {tuple(t.shape)}")


def check_choice(value: str, name: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def check_gate(gate: str) -> None:
    check_choice(gate, "gate", GATES)


def check_act(act: str) -> None:
    check_choice(act, "act", ACTS)
