"""Which implementation runs for a given tensor, and the switch that turns the kernels off.

- ``"triton"``              CUDA tensor: the Triton kernels on the GPU.
- ``"triton-interpreter"``  CPU tensor while Triton's interpreter is on (``TRITON_INTERPRET=1``
                            set before triton was imported): the same kernels, executed on the CPU.
- ``"torch"``               anything else (CPU without the interpreter, no usable triton, another
                            device type) and everything while the kernels are disabled: the eager
                            torch implementation in :mod:`tritattn.eager_ops`.

The kernels are disabled process-wide by ``TRITATTN_DISABLE=1`` (read at import) or for a scope
by ``with tritattn.disabled():`` — the switch to reach for when a number looks wrong. It is
process-wide rather than per thread because autograd runs CUDA backward passes on its own
threads. It is read on every op call, so it applies to modules converted before it was set and to
``torch.compile``'d models (the ops are opaque to the compiler), but not to kernels already
recorded in a CUDA graph.
"""
from __future__ import annotations

import contextlib
import os
import re
import threading
import warnings
from typing import Iterator, Literal

import torch

Backend = Literal["triton", "triton-interpreter", "torch"]

try:
    import triton
    from triton.runtime.interpreter import InterpretedFunction

    from . import kernels
    from .kernels.mean_max import mean_max_fwd as _probe_kernel

    TRITON_AVAILABLE = True
    TRITON_IMPORT_ERROR: str | None = None
    INTERPRETER = isinstance(_probe_kernel, InterpretedFunction)
except ImportError as error:  # triton missing (e.g. macOS wheels, ROCm without its triton): eager path everywhere
    TRITON_AVAILABLE = False
    TRITON_IMPORT_ERROR = f"{type(error).__name__}: {error}"
    INTERPRETER = False


def _major_minor(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def interpreter_problem(triton_version: str, numpy_version: str) -> str | None:
    """Why Triton's interpreter cannot run tritattn's kernels with these versions (None: it can)."""
    if _major_minor(triton_version) < (3, 7) and _major_minor(numpy_version) >= (2, 4):
        return (f"triton {triton_version}'s interpreter fails with NumPy {numpy_version} (a runtime loop bound "
                "becomes int() of a 1-element array: triton-lang/triton#9171, fixed in triton 3.7); "
                "install triton>=3.7 or numpy<2.4")
    return None


if INTERPRETER:
    import numpy

    #: Why the interpreter will fail on every kernel here (None: it will not); warned at import.
    INTERPRETER_PROBLEM = interpreter_problem(triton.__version__, numpy.__version__)
    if INTERPRETER_PROBLEM:
        warnings.warn(INTERPRETER_PROBLEM, stacklevel=2)
else:
    INTERPRETER_PROBLEM = None

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _disabled_by_environment() -> bool:
    value = os.environ.get("TRITATTN_DISABLE", "").strip().lower()
    if value not in _TRUE + _FALSE:
        warnings.warn(f"TRITATTN_DISABLE={value!r} is neither 1 nor 0: tritattn's kernels are disabled", stacklevel=2)
    return value not in _FALSE


#: True when ``TRITATTN_DISABLE`` was set (to 1, true, yes or on) at import.
DISABLED_BY_ENVIRONMENT: bool = _disabled_by_environment()
_disabled_scopes = 0
_scopes_lock = threading.Lock()


def kernels_disabled() -> bool:
    """Whether every op takes the eager torch path now (``TRITATTN_DISABLE`` or a :func:`disabled` scope)."""
    return DISABLED_BY_ENVIRONMENT or _disabled_scopes > 0


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """``with tritattn.disabled():`` every tritattn op in the scope, in any thread, runs the eager
    torch path and no Triton kernel is launched. Scopes nest."""
    global _disabled_scopes
    with _scopes_lock:
        _disabled_scopes += 1
    try:
        yield
    finally:
        with _scopes_lock:
            _disabled_scopes -= 1


def backend_for(x: torch.Tensor) -> Backend:
    """The implementation tritattn's ops run for tensors on ``x``'s device (see :func:`backend_reason`)."""
    if kernels_disabled() or not TRITON_AVAILABLE:
        return "torch"
    # is_cuda / is_cpu: ≈ 0.3 µs less than x.device.type (a device object per call), at every op
    if x.is_cuda and not INTERPRETER:
        return "triton"
    if x.is_cpu and INTERPRETER:
        return "triton-interpreter"
    return "torch"


def backend_reason(x: torch.Tensor) -> str:
    """:func:`backend_for` for ``x`` and why, in a sentence."""
    backend, device = backend_for(x), x.device.type
    if DISABLED_BY_ENVIRONMENT:
        why = "kernels disabled by TRITATTN_DISABLE"
    elif kernels_disabled():
        why = "kernels disabled in a tritattn.disabled() scope"
    elif not TRITON_AVAILABLE:
        why = f"triton could not be imported ({TRITON_IMPORT_ERROR})"
    elif backend == "triton":
        why = f"Triton kernels on the GPU (triton {triton.__version__})"
    elif backend == "triton-interpreter":
        why = "Triton kernels in Triton's interpreter on the CPU (TRITON_INTERPRET=1)"
        why += f", but {INTERPRETER_PROBLEM}" if INTERPRETER_PROBLEM else ""
    elif device == "cpu":
        why = "CPU tensor and Triton's interpreter is off (TRITON_INTERPRET=1 before importing triton turns it on)"
    elif device == "cuda":
        why = "Triton's interpreter is on (TRITON_INTERPRET=1), and it runs kernels on CPU tensors only"
    else:
        why = f"no Triton kernels for {device} tensors"
    return f"{backend}: {why}"
