"""The paper model of a launch's time on a GPU — an **estimate from a model, never a measurement**.

A GPU runs a launch as long as its longest program; a program's loop whose iterations each wait
on a memory instruction is serial, one round trip each (../shared/ANCHORS.md §5). So one launch
is estimated as

    t(launch) = max(bytes / copy bandwidth,  longest program's memory instructions × round trip)
                + launch overhead

and a path (a block's sequence of launches: tritattn's, the per-op path's, eager's aten and cuBLAS
kernels) as the sum over its launches. "Memory instructions" are the tile loads, stores and
atomics one program issues (counted in the Triton interpreter by perf/program_census.py, or
predicted per path by the block ops). Eager's kernels (aten reductions, elementwise, cuBLAS) are
modelled as parallel: their longest program is taken as a few instructions, so only bytes and
the launch count.

The constants live here and only here (README "The critical-path model" quotes them). They are
public figures or arithmetic (ANCHORS §1, §5), not fitted: when a GPU run exists, the sweep prints
the estimate beside the measurement and they are refit here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence


#: bytes of an int32 (a ticket counter, a tie count)
INT32 = 4


@dataclass(frozen=True)
class GpuModel:
    """One GPU's constants in the model."""

    name: str
    copy_bytes_per_s: float  # device copy, read + write counted (ANCHORS §1, measured with torch)
    round_trip_s: float  # one dependent memory instruction of a program, HBM (ANCHORS §5: 0.15 µs L2 … 0.4 µs HBM)
    launch_s: float  # one kernel launch without CUDA graphs
    sms: int


H100 = GpuModel("H100", copy_bytes_per_s=3.0e12, round_trip_s=0.4e-6, launch_s=3.0e-6, sms=132)
H200 = GpuModel("H200", copy_bytes_per_s=4.3e12, round_trip_s=0.4e-6, launch_s=3.0e-6, sms=132)
GPUS: tuple[GpuModel, ...] = (H100, H200)

#: Memory instructions the model gives the longest program of an eager (aten / cuBLAS) kernel.
EAGER_LONGEST = 4


@dataclass(frozen=True)
class Launch:
    """One kernel launch as the model sees it."""

    kernel: str
    programs: int
    median: int  # memory instructions of the median program
    longest: int  # memory instructions of the longest program
    bytes: int  # bytes moved (the launch's minimum traffic)


def eager_launch(kernel: str, nbytes: int) -> Launch:
    """An eager aten / cuBLAS kernel: parallel, so only its bytes and its launch count."""
    return Launch(kernel, programs=0, median=EAGER_LONGEST, longest=EAGER_LONGEST, bytes=int(nbytes))


def launch_seconds(launch: Launch, gpu: GpuModel = H100) -> float:
    """t(launch) = max(bytes / copy bandwidth, longest × round trip) + launch overhead (estimate)."""
    return max(launch.bytes / gpu.copy_bytes_per_s, launch.longest * gpu.round_trip_s) + gpu.launch_s


def path_seconds(launches: Iterable[Launch], gpu: GpuModel = H100) -> float:
    """The estimated time of a sequence of launches (one block's path)."""
    return sum(launch_seconds(launch, gpu) for launch in launches)


def gpu_model(name: str) -> GpuModel:
    """The model of a GPU by its device name (an H200 by name, else the H100's constants)."""
    return H200 if "H200" in name.upper() else H100


# --- The targets of the critical path (issue 23 §2) ----------------------------------------------

#: The round trip the targets assume (ANCHORS §5, the HBM end).
TARGET_ROUND_TRIP_S = 0.4e-6
#: A launch's longest program may issue at most LONGEST_PER_MEDIAN × the median's + LONGEST_SLACK.
LONGEST_PER_MEDIAN = 2
LONGEST_SLACK = 32
#: ... and its serial time stays under max(BYTES_FACTOR × the launch's bytes at H100 copy bandwidth, FLOOR_S).
BYTES_FACTOR = 3
FLOOR_S = 12e-6
#: A launch that moves more than BIG_LAUNCH_BYTES at batch 32 has at least MIN_PROGRAMS programs.
BIG_LAUNCH_BYTES = 8 * 2**20
MIN_PROGRAMS = 2 * H100.sms


def tail_violations(launch: Launch) -> list[str]:
    """The §2 targets one launch misses (empty when it meets them): a serial tail."""
    out = []
    if launch.longest > LONGEST_PER_MEDIAN * launch.median + LONGEST_SLACK:
        out.append(f"{launch.kernel}: longest program {launch.longest} > {LONGEST_PER_MEDIAN} × median "
                   f"{launch.median} + {LONGEST_SLACK} memory instructions")
    budget = max(BYTES_FACTOR * launch.bytes / H100.copy_bytes_per_s, FLOOR_S)
    if launch.longest * TARGET_ROUND_TRIP_S > budget:
        out.append(f"{launch.kernel}: longest program {launch.longest} × {TARGET_ROUND_TRIP_S * 1e6:.1f} µs = "
                   f"{launch.longest * TARGET_ROUND_TRIP_S * 1e6:.1f} µs > {budget * 1e6:.1f} µs")
    return out


def growth_violations(small: Sequence[Launch], large: Sequence[Launch], b_small: int, b_large: int) -> list[str]:
    """Launches whose longest program grows with the batch (beyond a logarithm) between two
    counts of one path at batch b_small < b_large (the same launches in the same order)."""
    import math

    out = []
    for a, b in zip(small, large):
        allowed = a.longest + max(1, math.ceil(math.log2(b_large / b_small))) * LONGEST_SLACK // 8
        if b.longest > allowed:
            out.append(f"{a.kernel}: longest program {a.longest} at B={b_small} → {b.longest} at B={b_large}")
    return out
