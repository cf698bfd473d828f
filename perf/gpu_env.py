"""Stage 1 of perf/gpu_check.py: what machine the results come from.

    python perf/gpu_env.py --out DIR

Writes ``DIR/env.json`` — GPU name, SM count, L2 size, memory, compute capability, driver,
torch / CUDA / triton / tritattn / Python versions, and the device copy bandwidth (a 1 GiB
``dst.copy_(src)`` on a GPU, 64 MiB on a CPU, bytes read + written counted: perf/bench.py) — and
``DIR/env.txt``, the library's own environment report (``python -m tritattn``). Without a GPU it
describes the CPU and says so.
"""
from __future__ import annotations

import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported (bench.py imports it)

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import triton  # noqa: E402

import bench  # noqa: E402
import tritattn  # noqa: E402
from tritattn.environment import environment_report  # noqa: E402


def driver_version() -> str | None:
    """The NVIDIA driver's version from nvidia-smi (None where there is none)."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def gpu_facts(device: torch.device) -> dict:
    """Name, SMs, L2, memory and compute capability of a GPU; on a CPU, the CPU."""
    if device.type != "cuda":
        return {"name": f"CPU ({platform.processor() or platform.machine()})", "kind": "cpu", "cores": os.cpu_count()}
    props = torch.cuda.get_device_properties(device)
    return {
        "name": props.name, "kind": "cuda", "sm_count": props.multi_processor_count,
        "l2_bytes": getattr(props, "L2_cache_size", None), "memory_bytes": props.total_memory,
        "compute_capability": f"{props.major}.{props.minor}", "driver": driver_version(),
    }


def environment(device: torch.device) -> dict:
    """Everything env.json holds (see the module docstring)."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": gpu_facts(device),
        "versions": {"tritattn": tritattn.__version__, "torch": torch.__version__, "cuda": torch.version.cuda,
                     "triton": triton.__version__, "python": platform.python_version()},
        "os": platform.platform(),
        "backend": tritattn.backend_reason(torch.empty(0, device=device)),
        "copy_bandwidth_gbs": bench.copy_bandwidth_gbs(device),
        "copy_bandwidth_note": ("device-to-device copy of 1 GiB, bytes read + written" if device.type == "cuda"
                                else "CPU memory copy of 64 MiB, bytes read + written: not a GPU figure"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="results folder")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = environment(device)
    (args.out / "env.json").write_text(json.dumps(env, indent=1))
    (args.out / "env.txt").write_text(environment_report() + "\n")
    d = env["device"]
    print(f"{d['name']}: copy bandwidth {env['copy_bandwidth_gbs']:.1f} GB/s ({env['copy_bandwidth_note']})")
    print(", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
