"""Timing: the median of many runs after a warm-up.

On a GPU, ``triton.testing.do_bench`` (it flushes L2 before each run and times with CUDA events),
or ``triton.testing.do_bench_cudagraph`` (the runs replayed from a CUDA graph, so launch overhead
is gone). Benchmarked functions cycle through several input sets whose total size is at least
twice the L2 cache (:func:`rotation_count`), so a small shape cannot be served from L2 — in the
CUDA-graph variant, which does not flush, that rotation is what keeps the timing honest.

On a CPU: wall-clock medians (``time.perf_counter``). They time the Triton interpreter (tritattn)
and eager CPU kernels, and say nothing about GPU performance: every CPU row carries
:func:`timing_label`.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable

import torch
import triton.testing

from tritattn import backend_for

GPU_WARMUP_MS, GPU_REP_MS = 5, 25
GRAPH_REP_MS = 3  # per replay; do_bench_cudagraph replays 10 times
CPU_WARMUP_RUNS, CPU_RUNS = 1, 5
CPU_COPY_BYTES, GPU_COPY_BYTES = 64 << 20, 1 << 30
DEFAULT_L2_BYTES = 64 << 20
MAX_ROTATION = 64


def timing_label(device: torch.device, impl: str) -> str:
    """What a timing on ``device`` measures, in words that go with it into every report."""
    if device.type == "cuda":
        return "GPU timing"
    if not impl.startswith("tritattn"):
        return "CPU timing, not GPU performance"
    if backend_for(torch.empty(0, device=device)) == "triton-interpreter":
        return "CPU interpreter timing, not GPU performance"
    return "CPU timing of tritattn's eager fallback, not GPU performance"


def rotation_count(bytes_per_set: int, device: torch.device) -> int:
    """Input sets to cycle through so that together they exceed twice the L2 cache (1 on CPU)."""
    if device.type != "cuda":
        return 1
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or DEFAULT_L2_BYTES
    return max(1, min(MAX_ROTATION, math.ceil(2 * l2 / max(1, bytes_per_set))))


def time_ms(fn: Callable[[], Any], device: torch.device, cuda_graph: bool = False) -> float:
    """Median time of one ``fn()`` in ms (see the module docstring for how, per device)."""
    if device.type == "cuda":
        if cuda_graph:
            with torch.cuda.stream(torch.cuda.Stream(device)):
                return triton.testing.do_bench_cudagraph(fn, rep=GRAPH_REP_MS, return_mode="median")
        return triton.testing.do_bench(fn, warmup=GPU_WARMUP_MS, rep=GPU_REP_MS, return_mode="median")
    for _ in range(CPU_WARMUP_RUNS):
        fn()
    runs = []
    for _ in range(CPU_RUNS):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1e3)
    return statistics.median(runs)


def copy_bandwidth_gbs(device: torch.device) -> float:
    """Device copy bandwidth: a large ``dst.copy_(src)``, counting bytes read + written, in GB/s."""
    n = GPU_COPY_BYTES if device.type == "cuda" else CPU_COPY_BYTES
    src = torch.empty(n, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device)
    return 2 * n / (ms * 1e-3) / 1e9
