"""``python -m tritattn``: the environment report to paste into a bug report.

What it shows: the versions of tritattn, torch (with its CUDA / ROCm build), triton, NumPy (and
whether Triton's interpreter is known to fail with it), timm, torchvision (and whether it imports:
PyPI's CUDA build fails beside a CPU-only torch) and Python, the OS; the switches read from the
environment; every device with the backend a tensor on it gets (:func:`~tritattn.backend_reason`)
and, for a GPU, whether a tuned table ships for it; the user tuning cache's path and size; the
peer classes :func:`~tritattn.convert` knows. It only reads: nothing is compiled, launched or
tuned (torchvision is imported, to tell whether it can be; an import that fails is taken back out
of ``sys.modules``).
"""
from __future__ import annotations

import importlib
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import torch

import tritattn

from .backend import TRITON_AVAILABLE, TRITON_IMPORT_ERROR, backend_reason, interpreter_problem
from .peers import PEER_TWINS, SELF_ATTENTION, WITHOUT_TWIN

#: the environment variables that change what tritattn (or triton under it) does
SWITCHES = ("TRITATTN_DISABLE", "TRITATTN_BLOCK_PIPELINE", "TRITATTN_L2_CHUNK", "TRITATTN_AUTOTUNE", "TRITATTN_CACHE_DIR",
            "TRITATTN_POISON_OUTPUTS", "TRITON_INTERPRET")


def _installed(distribution: str) -> str | None:
    """The installed version of ``distribution`` (read from its metadata, nothing imported), or None."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _numpy_line() -> str:
    """NumPy's version, and the known failure of Triton's interpreter with it, if any."""
    version = _installed("numpy")
    if version is None:
        return "numpy: not installed"
    problem = None
    if TRITON_AVAILABLE:
        import triton
        problem = interpreter_problem(triton.__version__, version)
    return f"numpy {version}" + (f" (Triton's interpreter: {problem})" if problem else "")


def _import_error(name: str) -> str | None:
    """Why ``import name`` fails, in one line, or None when it works. The modules a failed import
    left in ``sys.modules`` are taken out again."""
    if name in sys.modules:
        return None
    before = set(sys.modules)
    try:
        importlib.import_module(name)
    except Exception as error:  # whatever a third-party __init__ raises is what the report shows
        for module in set(sys.modules) - before:
            if module == name or module.startswith(f"{name}."):
                del sys.modules[module]
        first_line = (str(error).strip().splitlines() or [""])[0]
        return f"{type(error).__name__}: {first_line}"
    return None


def _peer_lines() -> list[str]:
    """timm's and torchvision's versions, and whether torchvision imports."""
    timm = _installed("timm")
    torchvision = _installed("torchvision")
    lines = [f"timm {timm}" if timm else "timm: not installed"]
    if torchvision is None:
        lines.append("torchvision: not installed")
    else:
        error = _import_error("torchvision")
        lines.append(f"torchvision {torchvision} ({'imports' if error is None else f'does not import: {error}'})")
    return lines


def _versions() -> list[str]:
    if TRITON_AVAILABLE:
        import triton
        triton_line = f"triton {triton.__version__} ({Path(triton.__file__).parent})"
    else:
        triton_line = f"triton: not importable ({TRITON_IMPORT_ERROR})"
    build = [f"CUDA {torch.version.cuda}" if torch.version.cuda else None,
             f"ROCm/HIP {torch.version.hip}" if torch.version.hip else None]
    return [
        f"tritattn {tritattn.__version__} ({Path(tritattn.__file__).parent})",
        f"torch {torch.__version__} ({', '.join(b for b in build if b) or 'CPU-only build'})",
        triton_line,
        _numpy_line(),
        *_peer_lines(),
        f"python {platform.python_version()} ({sys.executable})",
        f"os {platform.platform()}",
    ]


def _switches() -> list[str]:
    return [f"{name}={os.environ[name]!r}" if name in os.environ else f"{name} not set" for name in SWITCHES]


def _gpu_lines(index: int) -> list[str]:
    device = torch.device("cuda", index)
    props = torch.cuda.get_device_properties(device)
    l2 = getattr(props, "L2_cache_size", 0)
    lines = [
        f"cuda:{index} {props.name}: {props.multi_processor_count} SMs, {props.total_memory / 2**30:.1f} GiB"
        + (f", L2 {l2 / 2**20:.0f} MiB" if l2 else "") + f", compute capability {props.major}.{props.minor}",
        f"  tensors: {backend_reason(torch.empty(0, device=device))}",
    ]
    if TRITON_AVAILABLE:
        lines.append(f"  shipped tuned table: {_shipped_table(props.name)}")
    return lines


def _shipped_table(gpu: str) -> str:
    """What tuned configs tritattn ships for the GPU called ``gpu``, and what runs without them."""
    import triton

    from . import tuning
    shipped = tuning.shipped_table().sizes().get(gpu, {})
    if not shipped:
        return f"none for {gpu!r}: default configs unless tuned (tritattn.tune(model, example_input), or TRITATTN_AUTOTUNE=1)"
    versions = ", ".join(f"{n} configs for triton {v}" for v, n in shipped.items())
    return versions + ("" if triton.__version__ in shipped else f" (none for this triton, {triton.__version__}: the others are used)")


def _tuning_lines() -> list[str]:
    if not TRITON_AVAILABLE:
        return ["tuning cache: not used (no triton)"]
    from . import tuning
    path = tuning.cache_file()
    if not path.exists():
        return [f"tuning cache: {path} (not written yet)"]
    per_gpu = {gpu: sum(versions.values()) for gpu, versions in tuning.ConfigTable.load(path).sizes().items()}
    listed = "; ".join(f"{gpu}: {n}" for gpu, n in per_gpu.items()) or "empty"
    return [f"tuning cache: {path} ({sum(per_gpu.values())} configs; {listed})"]


def environment_report() -> str:
    """The report ``python -m tritattn`` prints."""
    lines = ["tritattn environment report", ""] + _versions() + ["", "switches: " + ", ".join(_switches()), "", "devices:"]
    lines.append(f"cpu tensors: {backend_reason(torch.empty(0))}")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for index in range(gpus):
        lines += _gpu_lines(index)
    if not gpus:
        lines.append("no CUDA / ROCm GPU visible to torch")
    lines += [""] + _tuning_lines() + ["", "converted by tritattn.convert (peer -> tritattn class):"]
    lines += [f"  {peer} -> tritattn.{twin}" for peer, twin in PEER_TWINS.items()]
    lines.append("recognised, left eager (no twin): " + ", ".join(sorted(WITHOUT_TWIN)))
    lines.append("recognised, left eager (self-attention, out of scope): " + ", ".join(sorted(SELF_ATTENTION)))
    return "\n".join(lines)
