"""``python -m tritattn``: the environment report to paste into a bug report.

What it shows: the versions of tritattn, torch (with its CUDA / ROCm build), triton and Python,
the OS; the switches read from the environment; every device with the backend a tensor on it gets
(:func:`~tritattn.backend_reason`) and, for a GPU, whether a tuned table ships for it; the user
tuning cache's path and size; the peer classes :func:`~tritattn.convert` knows. It only reads:
nothing is compiled, launched or tuned.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

import tritattn

from .backend import TRITON_AVAILABLE, TRITON_IMPORT_ERROR, backend_reason
from .peers import PEER_TWINS, SELF_ATTENTION, WITHOUT_TWIN

#: the environment variables that change what tritattn (or triton under it) does
SWITCHES = ("TRITATTN_DISABLE", "TRITATTN_BLOCK_PIPELINE", "TRITATTN_L2_CHUNK", "TRITATTN_AUTOTUNE", "TRITATTN_CACHE_DIR",
            "TRITATTN_POISON_OUTPUTS", "TRITON_INTERPRET")


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
        import triton

        from . import tuning
        shipped = tuning.shipped_table().sizes().get(props.name, {})
        if shipped:
            versions = ", ".join(f"{n} configs for triton {v}" for v, n in shipped.items())
            match = "" if triton.__version__ in shipped else f" (none for this triton, {triton.__version__}: the others are used)"
            lines.append(f"  shipped tuned table: {versions}{match}")
        else:
            lines.append(f"  shipped tuned table: none for {props.name!r}: kernels are tuned on first use")
    return lines


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
