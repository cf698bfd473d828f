"""Which implementation runs for a given tensor.

- ``"triton"``              CUDA tensor: the Triton kernels on the GPU.
- ``"triton-interpreter"``  CPU tensor while Triton's interpreter is on (``TRITON_INTERPRET=1``
                            set before triton was imported): the same kernels, executed on the CPU.
- ``"torch"``               anything else (CPU without the interpreter, or no usable triton):
                            the eager torch implementation in :mod:`tritattn.eager_ops`.
"""
from __future__ import annotations

from typing import Literal

import torch

Backend = Literal["triton", "triton-interpreter", "torch"]

try:
    import triton
    from triton.runtime.interpreter import InterpretedFunction

    from . import kernels
    from .kernels.mean_max import mean_max_fwd as _probe_kernel

    TRITON_AVAILABLE = True
    INTERPRETER = isinstance(_probe_kernel, InterpretedFunction)
except ImportError:  # triton missing (e.g. macOS wheels): eager path everywhere
    TRITON_AVAILABLE = False
    INTERPRETER = False


def backend_for(x: torch.Tensor) -> Backend:
    """The implementation tritattn's ops run for tensors on ``x``'s device."""
    if not TRITON_AVAILABLE:
        return "torch"
    if x.device.type == "cuda" and not INTERPRETER:
        return "triton"
    if x.device.type == "cpu" and INTERPRETER:
        return "triton-interpreter"
    return "torch"
