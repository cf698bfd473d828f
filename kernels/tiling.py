"""Tile shapes and launch grids for kernels over the [R, K] plane of each batch element.

Every kernel views a 4-D tensor [B, C, H, W] as [B, R, K]: R "rows" that are kept and K
"columns" that are reduced over or broadcast along. Channel attention uses R = C, K = H×W;
CBAM's spatial attention uses R = H×W, K = C. Element (b, r, k) lives at
``ptr + b·sb + r·sr + k·sk``, so NCHW and channels_last are both read in place.

A tile is BLOCK_R × BLOCK_K elements. The memory-contiguous axis gets the long side so loads
coalesce. ``TILE_ELEMENTS`` bounds a tile so live registers stay modest on a GPU
(4096 float32 values over 4 warps = 32 per thread). :func:`tile_shape` is the untuned choice,
for a row reduction :func:`loop_tile_shape` (its loop over K kept short); the second half of
this file builds and prunes the autotuning spaces (tritattn/tuning.py).
"""
import math
from typing import Callable

import triton

from .grid_math import cdiv, next_power_of_2

TILE_ELEMENTS = 4096
LONG_SIDE_MAX = 1024
#: A row reduction's program waits a round trip per BLOCK_K step of its loop over K: where K is
#: contiguous and tile_shape's tile would take more steps than this, the tile grows along K
#: (past LONG_SIDE_MAX, up to TILE_ELEMENTS) — :func:`loop_tile_shape`.
LOOP_STEPS_MAX = 4


def tile_shape(R: int, K: int, rows_contiguous: bool, tile_elements: int = TILE_ELEMENTS) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_K), powers of two, the long side on the axis with unit stride."""
    if rows_contiguous:
        block_r = min(next_power_of_2(R), LONG_SIDE_MAX, tile_elements)
        block_k = max(1, min(next_power_of_2(K), tile_elements // block_r))
    else:
        block_k = min(next_power_of_2(K), LONG_SIDE_MAX, tile_elements)
        block_r = max(1, min(next_power_of_2(R), tile_elements // block_k))
    return block_r, block_k


def loop_tile_shape(R: int, K: int, rows_contiguous: bool, tile_elements: int = TILE_ELEMENTS) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_K) of a row reduction (rows_grid: a program per BLOCK_R rows, looping over
    K): :func:`tile_shape`'s, except where K is the contiguous axis and the loop would take more
    than LOOP_STEPS_MAX steps: then BLOCK_K doubles (BLOCK_R halving where the tile would
    outgrow ``tile_elements``) until it takes at most LOOP_STEPS_MAX steps or BLOCK_K reaches
    ``tile_elements``. Fewer, longer loads per program and more programs; the batch plays no
    part, so a launch's per-program counts stay the same at every batch."""
    block_r, block_k = tile_shape(R, K, rows_contiguous, tile_elements)
    while not rows_contiguous and cdiv(K, block_k) > LOOP_STEPS_MAX and 2 * block_k <= tile_elements:
        block_k *= 2
        block_r = max(1, min(block_r, tile_elements // block_k))
    return block_r, block_k


def rows_grid(B: int, R: int, block_r: int) -> tuple[int]:
    """Row-reduction kernels: one program per (b, block of BLOCK_R rows), looping over K."""
    return (B * cdiv(R, block_r),)


def elementwise_grid(B: int, R: int, K: int, block_r: int, block_k: int) -> tuple[int]:
    """Elementwise kernels: one program per (b, row block, column block), column block fastest."""
    return (B * cdiv(R, block_r) * cdiv(K, block_k),)


# --- configuration spaces for autotuning (tritattn/tuning.py) ---------------------------------
#
# A kernel's space is a list of ``triton.Config`` over BLOCK_R, BLOCK_K, num_warps and num_stages.
# Tiles come in both orientations (the layout-specific choice: which axis gets the long side);
# prune_configs keeps the orientation whose long side is the contiguous axis of the tensor at hand.

#: Register budget of a tile: at most this many elements per thread (4096 float32 over 4 warps = 32).
MAX_ELEMENTS_PER_THREAD = 64

#: (long side, short side) tiles of the row-reduction kernels (rows_grid, looping over K):
#: from one long row per program (TILE_ELEMENTS long: loop_tile_shape's longest) to 32 × 32.
ROW_TILES = [(4096, 1), (2048, 2), (1024, 1), (1024, 2), (512, 2), (512, 4), (256, 4), (256, 8), (128, 8), (128, 16),
             (64, 16), (64, 32), (32, 32)]
#: (long side, short side) tiles of the elementwise kernels (elementwise_grid, one tile per program).
ELEMENTWISE_TILES = [(1024, 1), (1024, 2), (1024, 4), (512, 4), (512, 8), (256, 8), (256, 16), (128, 16), (128, 32), (64, 32), (64, 64)]


def oriented_configs(
    tiles: list[tuple[int, int]], num_warps: tuple[int, ...], num_stages: tuple[int, ...]
) -> list[triton.Config]:
    """Every (long, short) tile in both orientations × num_warps × num_stages, without repeats."""
    shapes = list(dict.fromkeys(shape for long, short in tiles for shape in ((short, long), (long, short))))
    return [
        triton.Config({"BLOCK_R": r, "BLOCK_K": k}, num_warps=w, num_stages=s)
        for r, k in shapes for w in num_warps for s in num_stages
    ]


def default_config(R: int, K: int, rows_contiguous: bool, num_stages: int) -> triton.Config:
    """The untuned choice: :func:`tile_shape` with the current TILE_ELEMENTS / LONG_SIDE_MAX
    (read at call time, so tests can shrink them) and 4 warps; for a kernel that loops over K
    (``num_stages`` > 1: tritattn/launch.py gives the row reductions 3 stages, the elementwise
    kernels 1), :func:`loop_tile_shape`."""
    shape = loop_tile_shape if num_stages > 1 else tile_shape
    block_r, block_k = shape(R, K, rows_contiguous, tile_elements=TILE_ELEMENTS)
    return triton.Config({"BLOCK_R": block_r, "BLOCK_K": block_k}, num_warps=4, num_stages=num_stages)


def _log2_distance(a: int, b: int) -> int:
    return abs(a.bit_length() - b.bit_length())  # a, b powers of two


def _signature(cfg: triton.Config) -> tuple[int, int, int, int]:
    return cfg.kwargs["BLOCK_R"], cfg.kwargs["BLOCK_K"], cfg.num_warps, cfg.num_stages


def prune_configs(
    configs: list[triton.Config], R: int, K: int, rows_contiguous: bool, num_stages: int,
    programs: Callable[[triton.Config], int], min_programs: int = 0, max_configs: int = 6,
) -> list[triton.Config]:
    """The few configs worth benchmarking for one problem, the untuned default first.

    1. clamp each tile to the problem (BLOCK ≤ next power of two of R, resp. K), drop repeats;
    2. layout: keep tiles whose block on the contiguous axis is the long side or spans that
       whole axis (coalesced loads);
    3. registers: keep tiles with between 1 and MAX_ELEMENTS_PER_THREAD elements per thread;
    4. rank by closeness to the default (log2 steps in BLOCK_R, BLOCK_K and num_warps, plus the
       num_stages difference) plus an occupancy penalty of log2(min_programs / programs) when
       the grid (``programs(config)`` programs) is smaller than ``min_programs``; keep the
       ``max_configs - 1`` best after the default.
    """
    default = default_config(R, K, rows_contiguous, num_stages)
    r_cap, k_cap = next_power_of_2(R), next_power_of_2(K)
    seen = {_signature(default)}
    candidates = []
    for cfg in configs:
        r, k = min(cfg.kwargs["BLOCK_R"], r_cap), min(cfg.kwargs["BLOCK_K"], k_cap)
        contig, other, contig_cap = (r, k, r_cap) if rows_contiguous else (k, r, k_cap)
        threads = 32 * cfg.num_warps
        if (contig < other and contig < contig_cap) or not threads <= r * k <= MAX_ELEMENTS_PER_THREAD * threads:
            continue
        clamped = triton.Config({"BLOCK_R": r, "BLOCK_K": k}, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        if _signature(clamped) not in seen:
            seen.add(_signature(clamped))
            candidates.append(clamped)

    def cost(cfg: triton.Config) -> float:
        return (
            _log2_distance(cfg.kwargs["BLOCK_R"], default.kwargs["BLOCK_R"])
            + _log2_distance(cfg.kwargs["BLOCK_K"], default.kwargs["BLOCK_K"])
            + _log2_distance(cfg.num_warps, default.num_warps)
            + abs(cfg.num_stages - default.num_stages)
            + math.log2(max(1.0, min_programs / programs(cfg)))
        )

    return [default] + sorted(candidates, key=cost)[: max_configs - 1]
