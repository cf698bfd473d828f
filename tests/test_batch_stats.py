"""The prologue BatchNorm's two batch reductions on their own (kernels/prologue_norm.py), against
float64 sums written here from the math:

- batch_stats_fwd: the batch mean, biased and unbiased variance per channel, merged from
  (sample, pixel chunk) partials by a two-level ticket tree — odd C, H×W ∈ {49, 1, 3×5, 15×15},
  B = 1, a batch whose partial rows span several groups of the tree (B = 300 at the default tile;
  several pixel chunks per sample and several groups with tiny tiles), both layouts, float32 /
  float16 / bfloat16 inputs (statistics in float32), a mean far from 0 (the merge is Chan's, not
  Σx² - n·mean²); bitwise repeatable and the counters left at 0;
- prologue_norm_bwd: S[c] = Σ_b g · P0 + grad_mean / K · P1 and T[c] = Σ_b g · P2 + grad_mean / K ·
  P3 over [BLOCK_B, BLOCK_C] tiles — B = 1, B = 300 (two steps of 256 samples), odd C, both gates.
"""
import pytest
import torch

from conftest import DEVICE, assert_close, make_input, use_small_tiles

from tritattn import launch
from tritattn.excitation_block import acc_dtype


def batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(stats [3, C], the workspace's rows, groups of the tree) of launch.batch_stats_fwd on x, the
    counters checked to be 0 after the launch."""
    rows, slots = launch.batch_stats_workspace(x)
    counter = torch.zeros(slots, dtype=torch.int32, device=x.device)
    stats = torch.full((3, x.shape[1]), float("nan"), dtype=acc_dtype(x), device=x.device)
    launch.batch_stats_fwd(x, torch.full((rows, 2, x.shape[1]), float("nan"), dtype=acc_dtype(x), device=x.device),
                           stats, counter)
    assert not counter.any(), "a counter slot was left drawn"
    return stats, rows, launch.batch_stats_tile(x)["NG"]


def expected_stats(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return torch.stack([x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False), x.var((0, 2, 3))])


SHAPES = [(2, 37, 7, 7), (1, 37, 7, 7), (5, 13, 1, 1), (3, 6, 3, 5), (2, 5, 15, 15)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("tiles", ["default", "small"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_batch_stats_match_float64(shape, tiles, dtype, channels_last, monkeypatch):
    if tiles == "small":
        use_small_tiles(monkeypatch)
    x = make_input(shape, dtype, channels_last) + 3.0  # a mean far from 0
    stats, _, _ = batch_stats(x)
    assert_close(stats, expected_stats(x), torch.float32, what=f"{tuple(shape)} {dtype}")


def test_a_batch_over_several_groups_of_the_tree(channels_last, monkeypatch):
    """B = 300 at the default tile (more partial rows than one merge load takes: a second level),
    and tiny tiles over 15×15 maps (several pixel chunks per sample, several groups)."""
    x = make_input((300, 5, 3, 5), torch.float32, channels_last)
    stats, rows, groups = batch_stats(x)
    assert rows > 300 and groups > 1
    assert_close(stats, expected_stats(x), torch.float32, what="B=300")
    use_small_tiles(monkeypatch)
    x = make_input((3, 9, 15, 15), torch.float32, channels_last)
    stats, rows, groups = batch_stats(x)
    assert rows > 3 * 2 and groups > 1, (rows, groups)
    assert_close(stats, expected_stats(x), torch.float32, what="tiny tiles, 15×15")


def test_batch_stats_are_bitwise_repeatable(monkeypatch):
    use_small_tiles(monkeypatch)
    x = make_input((4, 11, 9, 9), torch.float32, channels_last=True)
    first, second = batch_stats(x)[0], batch_stats(x)[0]
    assert torch.equal(first, second)


def expected_sums(s, grad_mean, psum, gate, K):
    g = torch.sigmoid(s.double()) if gate == "sigmoid" else torch.clamp(s.double() + 3, 0, 6) / 6
    gm = grad_mean.double() / K
    p = psum.double()
    return torch.stack([(g * p[:, 0] + gm * p[:, 1]).sum(0), (g * p[:, 2] + gm * p[:, 3]).sum(0)])


@pytest.mark.parametrize("B, C", [(1, 37), (3, 130), (300, 5)])
@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_prologue_norm_bwd_sums_match_float64(B, C, gate):
    K = 15
    s, grad_mean = (torch.randn(B, C, dtype=torch.float64).float().to(DEVICE) for _ in range(2))
    psum = torch.randn(B, 4, C, dtype=torch.float64).float().to(DEVICE)
    runs = []
    for _ in range(2):
        sums = torch.full((2, C), float("nan"), device=DEVICE)
        gw, gb = torch.full((C,), float("nan"), device=DEVICE), torch.full((C,), float("nan"), device=DEVICE)
        launch.prologue_norm_bwd(s, grad_mean, psum, sums, gw, gb, gate, K)
        runs.append((sums, gw, gb))
    want = expected_sums(s, grad_mean, psum, gate, K)
    sums, gw, gb = runs[0]
    scale = (psum.double().abs().sum((0, 1))).max().item()  # the size of what the sums add up
    assert_close(sums, want, torch.float32, what=f"S, T B={B}", scale=scale)
    assert torch.equal(gb, sums[0]) and torch.equal(gw, sums[1])
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1])), "not bitwise repeatable"
