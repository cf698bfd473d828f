"""The untuned tiles (kernels/tiling.py): a row reduction's loop over K stays short where K is
contiguous (``loop_tile_shape``), the elementwise kernels and channels_last keep ``tile_shape``'s
tile, and ``default_config`` tells the two kinds apart by their pipeline depth — which
tritattn/launch.py gives every row reduction (> 1) and no elementwise kernel (1).
"""
import itertools

import pytest
import torch
import triton
from torch import nn

import tritattn
from tritattn import paths, tuning
from tritattn.kernels import tiling
from tritattn.kernels.grid_math import cdiv

#: (R, K): small and ragged, K just past a step boundary, 56×56, 80×80, 112×112 and beyond, one row
SHAPES = [(1, 1), (3, 5), (37, 49), (20, 4097), (256, 3136), (64, 6400), (1, 6000), (32, 12544), (2, 12544),
          (1, 100_000), (96, 12544), (5, 70_000)]


def steps(K: int, block_k: int) -> int:
    return cdiv(K, block_k)


@pytest.mark.parametrize("R, K", SHAPES)
@pytest.mark.parametrize("rows_contiguous", [False, True], ids=["nchw", "channels_last"])
def test_a_row_reduction_tile_grows_along_k_only_as_far_as_it_must(R, K, rows_contiguous):
    """Powers of two within TILE_ELEMENTS, the long side on the contiguous axis; tile_shape's
    tile unless K is contiguous and it would loop more than LOOP_STEPS_MAX times; then the
    shortest BLOCK_K (doubled from tile_shape's) that loops at most LOOP_STEPS_MAX times, or
    TILE_ELEMENTS long."""
    base = tiling.tile_shape(R, K, rows_contiguous)
    block_r, block_k = tiling.loop_tile_shape(R, K, rows_contiguous)
    assert block_r & (block_r - 1) == 0 and block_k & (block_k - 1) == 0
    assert 1 <= block_r * block_k <= tiling.TILE_ELEMENTS
    if rows_contiguous or steps(K, base[1]) <= tiling.LOOP_STEPS_MAX:
        assert (block_r, block_k) == base
        return
    assert block_k > base[1] and block_r <= base[0], "longer along K, never wider"
    assert block_r == max(1, min(base[0], tiling.TILE_ELEMENTS // block_k)), "rows cut only to fit the tile"
    assert steps(K, block_k) <= tiling.LOOP_STEPS_MAX or block_k == tiling.TILE_ELEMENTS
    assert steps(K, block_k // 2) > tiling.LOOP_STEPS_MAX, "no longer than it must be"


def test_efficientnet_b0_first_se_loops_four_steps_in_nchw():
    """32 channels @112×112 (K = 12 544), the census block whose 4 × 1024 tile looped 13 times:
    one channel per program, 4096 pixels per step, 4 steps; elementwise and channels_last tiles
    as before."""
    loop = tiling.default_config(32, 112 * 112, False, num_stages=3)
    assert (loop.kwargs["BLOCK_R"], loop.kwargs["BLOCK_K"]) == (1, 4096)
    assert steps(112 * 112, 4096) == 4 <= tiling.LOOP_STEPS_MAX < steps(112 * 112, tiling.LONG_SIDE_MAX)
    elementwise = tiling.default_config(32, 112 * 112, False, num_stages=1)
    assert (elementwise.kwargs["BLOCK_R"], elementwise.kwargs["BLOCK_K"]) == tiling.tile_shape(32, 112 * 112, False)
    for num_stages in (1, 3):
        cl = tiling.default_config(32, 112 * 112, True, num_stages)
        assert (cl.kwargs["BLOCK_R"], cl.kwargs["BLOCK_K"]) == tiling.tile_shape(32, 112 * 112, True)


@pytest.mark.parametrize("R, K, rows_contiguous", [(R, K, c) for (R, K), c in itertools.product(SHAPES, (False, True))])
def test_default_config_takes_the_loop_tile_for_kernels_with_stages(R, K, rows_contiguous):
    for num_stages, shape in ((1, tiling.tile_shape), (2, tiling.loop_tile_shape), (3, tiling.loop_tile_shape)):
        cfg = tiling.default_config(R, K, rows_contiguous, num_stages)
        assert (cfg.kwargs["BLOCK_R"], cfg.kwargs["BLOCK_K"]) == shape(R, K, rows_contiguous)
        assert (cfg.num_warps, cfg.num_stages) == (4, num_stages)


def test_the_shrunk_heuristic_grows_the_loop_tile_too(monkeypatch):
    """With the tests' tiny tiles (conftest.use_small_tiles: 32 elements, long side 8) a 7×7 map
    in NCHW loops 4 times over a 2 × 16 tile, not 7 times over 4 × 8."""
    monkeypatch.setattr(tiling, "TILE_ELEMENTS", 32)
    monkeypatch.setattr(tiling, "LONG_SIDE_MAX", 8)
    assert tiling.tile_shape(40, 49, False, 32) == (4, 8)
    cfg = tiling.default_config(40, 49, False, num_stages=3)
    assert (cfg.kwargs["BLOCK_R"], cfg.kwargs["BLOCK_K"]) == (2, 16)


def _launches_by_grid(monkeypatch) -> dict[str, dict[str, int]]:
    """{"_rows_grid" / "_elementwise_grid": {Tuner name: its num_stages}} of the Tuners that a
    training step of the per-op ops, SE (both kernel paths), CBAM and split attention launch,
    at small shapes (the grid told by the launch.py helper that made it)."""
    seen: dict[str, dict[str, int]] = {}
    real_launch = tuning.Tuner.launch

    def launch_(self, problem, grid, *args, **kwargs):
        helper = getattr(grid, "__qualname__", "").split(".")[0]
        seen.setdefault(helper, {})[self.name] = self.num_stages
        return real_launch(self, problem, grid, *args, **kwargs)

    monkeypatch.setattr(tuning.Tuner, "launch", launch_)
    x = torch.randn(2, 12, 5, 7, requires_grad=True)
    mean, maximum = tritattn.squeeze(x, "mean_max")
    y = tritattn.excite_scale(x, mean + maximum, "sigmoid", x, "relu")
    y.backward(torch.randn_like(y))
    blocks = [tritattn.SEModule(12, rd_channels=4), tritattn.CbamModule(12, rd_channels=4),
              tritattn.SplitAttn(12, 12, radix=2, norm_layer=nn.BatchNorm2d)]
    for block in blocks:
        for path in ("one-launch", "split"):
            with paths.forced(path):
                z = block(x)
                z.backward(torch.randn_like(z))
    return seen


def test_every_row_reduction_has_stages_and_no_elementwise_kernel_has(monkeypatch):
    """default_config's marker holds: every Tuner launched on launch.py's rows grid has
    num_stages > 1 (its default tile is loop_tile_shape's), every one on its elementwise grid 1."""
    seen = _launches_by_grid(monkeypatch)
    rows, elementwise = seen.get("_rows_grid", {}), seen.get("_elementwise_grid", {})
    assert {"mean_max_fwd", "gated_scale_bwd", "squeeze_excite_fwd", "excitation_bwd_reduce"} <= set(rows), seen
    assert {"mean_max_bwd", "gated_scale_fwd", "excitation_bwd_apply"} <= set(elementwise), seen
    assert all(stages > 1 for stages in rows.values()), rows
    assert all(stages == 1 for stages in elementwise.values()), elementwise


def test_row_tiles_hold_the_loop_tiles():
    """The tuning space of the row reductions holds every tile loop_tile_shape can choose, once
    clamped to the problem as prune_configs clamps it (the default's neighbours in warps and
    stages are what prune_configs ranks first)."""
    oriented = [shape for long, short in tiling.ROW_TILES for shape in ((short, long), (long, short))]
    grown = 0
    for R, K in SHAPES:
        tile = tiling.loop_tile_shape(R, K, False)
        if tile != tiling.tile_shape(R, K, False):
            grown += 1
            r_cap, k_cap = triton.next_power_of_2(R), triton.next_power_of_2(K)
            assert tile in {(min(r, r_cap), min(k, k_cap)) for r, k in oriented}, (R, K)
    assert grown >= 5
