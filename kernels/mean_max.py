"""Mean and max of x[b, r, :] over the K axis, and the backward of both.

Channel squeeze (SE, ECA, CBAM channel branch): R = C, K = H×W → vectors [B, C].
CBAM spatial pooling: R = H×W, K = C → the two planes of [B, 2, H, W].
x[b, r, k] is at x_ptr + b·sxb + r·sxr + k·sxk; a per-row vector v[b, r] at v_ptr + b·svb + r·svr.
Also :func:`chan_combine`, the merge of (count, mean, M2) summaries the BatchNorms' batch
variances are built from (kernels/cbam_spatial.py, kernels/prologue_norm.py).
"""
import triton
import triton.language as tl

from .program_tiles import elementwise_tile, row_block
from .rounding import to_output
from .tiling import ELEMENTWISE_TILES, ROW_TILES, oriented_configs

# Autotuning spaces (pruned per problem by tiling.prune_configs). Both kernels store every output
# element exactly once and accumulate into nothing, so a config can be benchmarked on the real
# arguments repeatedly without reset_to_zero / restore_value.
#: mean_max_fwd loops over K: the pipeline depth (num_stages) matters.
MEAN_MAX_FWD_CONFIGS = oriented_configs(ROW_TILES, num_warps=(2, 4, 8), num_stages=(1, 2, 3))
#: mean_max_bwd has no loop: one stage.
MEAN_MAX_BWD_CONFIGS = oriented_configs(ELEMENTWISE_TILES, num_warps=(2, 4, 8), num_stages=(1,))


@triton.jit
def chan_combine(n, mean, m2, nb, mean_b, m2_b):
    """Chan et al.'s pairwise update of (count, mean, Σ (v - mean)²) by a group of nb values."""
    total = n + nb
    delta = mean_b - mean
    return total, mean + delta * (nb / total), m2 + m2_b + delta * delta * (n * nb / total)


@triton.jit
def pool_start(BLOCK_R: tl.constexpr, ACC: tl.constexpr):
    """The running per-row (Σ x, max x, #{x == max}, NaN seen) before the first tile."""
    return (tl.zeros([BLOCK_R], dtype=ACC), tl.full([BLOCK_R], float("-inf"), dtype=ACC),
            tl.zeros([BLOCK_R], dtype=tl.int32), tl.zeros([BLOCK_R], dtype=tl.int32))


@triton.jit
def pool_tile(v, mask, total, run_max, run_count, has_nan, WANT_MEAN: tl.constexpr, WANT_MAX: tl.constexpr):
    """Fold one [BLOCK_R, BLOCK_K] tile of x (in ACC, loaded with 0 where masked) into the running
    per-row (Σ x, max x, #{x == max}, NaN seen) of :func:`pool_rows`."""
    if WANT_MEAN:
        total += tl.sum(v, axis=1)
    if WANT_MAX:
        v = tl.where(mask, v, float("-inf"))
        has_nan = tl.maximum(has_nan, tl.max((v != v).to(tl.int32), axis=1))
        tile_max = tl.max(v, axis=1)
        tile_count = tl.sum(((v == tile_max[:, None]) & mask).to(tl.int32), axis=1)
        run_count = tl.where(
            tile_max > run_max, tile_count,
            tl.where(tile_max == run_max, run_count + tile_count, run_count),
        )
        run_max = tl.maximum(run_max, tile_max)
    return total, run_max, run_count, has_nan


@triton.jit
def pool_rows(
    row_ptrs, sxk, mask_r, K,
    WANT_MEAN: tl.constexpr, WANT_MAX: tl.constexpr,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """The loop over K of one program's BLOCK_R rows (``row_ptrs`` [BLOCK_R, 1] point at k = 0):
    (Σ_k x, max_k x — NaN if any x is NaN, as torch.amax — and #{k : x == max}), in ACC."""
    total, run_max, run_count, has_nan = pool_start(BLOCK_R, ACC)
    for start in range(0, K, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mask = mask_r[:, None] & (offs_k < K)[None, :]
        v = tl.load(row_ptrs + offs_k.to(tl.int64)[None, :] * sxk, mask=mask, other=0.0).to(ACC)
        total, run_max, run_count, has_nan = pool_tile(v, mask, total, run_max, run_count, has_nan, WANT_MEAN, WANT_MAX)
    return total, pooled_max(run_max, has_nan), run_count


@triton.jit
def pooled_max(run_max, has_nan):
    """The running max, NaN where a NaN was seen (torch.amax propagates NaN)."""
    return tl.where(has_nan > 0, float("nan"), run_max)


@triton.jit
def mean_max_fwd(
    x_ptr, mean_ptr, max_ptr, count_ptr,
    R, K,
    sxb, sxr, sxk,
    smb, smr, sMb, sMr,
    WANT_MEAN: tl.constexpr, WANT_MAX: tl.constexpr,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One pass over x computing, per (b, r):

      mean[b, r]  = Σ_k x[b, r, k] / K                  ACC sum (float32; float64 for float64 x)
      max[b, r]   = max_k x[b, r, k]                    NaN if any x[b, r, k] is NaN (as torch.amax)
      count[b, r] = #{k : x[b, r, k] == max[b, r]}      int32, contiguous [B, R]; the ties over
                                                        which torch.amax's backward spreads grad
    Reads B·R·K elements once; writes B·R values per wanted output (+ 4 bytes each for count).
    Grid: rows_grid — one program per (b, BLOCK_R rows), looping over K in BLOCK_K steps.
    """
    b, offs_r = row_block(R, BLOCK_R)
    mask_r = offs_r < R
    r64 = offs_r.to(tl.int64)
    total, run_max, run_count = pool_rows(x_ptr + b * sxb + r64[:, None] * sxr, sxk, mask_r, K,
                                          WANT_MEAN, WANT_MAX, ACC, BLOCK_R, BLOCK_K)
    if WANT_MEAN:
        tl.store(mean_ptr + b * smb + r64 * smr, to_output(total / K, mean_ptr), mask=mask_r)
    if WANT_MAX:
        # no rounding: the max is one of x's values
        tl.store(max_ptr + b * sMb + r64 * sMr, run_max.to(max_ptr.dtype.element_ty), mask=mask_r)
        tl.store(count_ptr + b * R + r64, run_count, mask=mask_r)


@triton.jit
def mean_max_bwd(
    x_ptr, grad_mean_ptr, grad_max_ptr, max_ptr, count_ptr, grad_x_ptr,
    R, K,
    sxb, sxr, sxk,
    sgxb, sgxr, sgxk,
    sgmb, sgmr, sgMb, sgMr, sMb, sMr,
    HAS_MEAN: tl.constexpr, HAS_MAX: tl.constexpr,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """grad_x[b, r, k] = grad_mean[b, r] / K + [x[b, r, k] == max[b, r]] · grad_max[b, r] / count[b, r]

    The max term spreads the gradient evenly over tied maxima, exactly as torch.amax's backward,
    and is NaN over a whole row whose max is NaN (torch.amax's backward too).
    Reads x only when HAS_MAX; writes grad_x (strides sgx*). Minimum bytes: B·R·K·itemsize
    written (+ the same read with HAS_MAX) + the per-row vectors.
    Grid: elementwise_grid — one program per (b, row block, column block).
    """
    b, offs_r, offs_k = elementwise_tile(R, K, BLOCK_R, BLOCK_K)
    mask_r = offs_r < R
    mask = mask_r[:, None] & (offs_k < K)[None, :]
    r64 = offs_r.to(tl.int64)
    k64 = offs_k.to(tl.int64)[None, :]

    g_mean = tl.zeros([BLOCK_R], dtype=ACC)
    g_max = tl.zeros([BLOCK_R], dtype=ACC)
    m = tl.zeros([BLOCK_R], dtype=ACC)
    n = tl.full([BLOCK_R], 1.0, dtype=ACC)
    x = tl.zeros([BLOCK_R, BLOCK_K], dtype=ACC)
    if HAS_MEAN:
        g_mean = tl.load(grad_mean_ptr + b * sgmb + r64 * sgmr, mask=mask_r, other=0.0).to(ACC)
    if HAS_MAX:
        g_max = tl.load(grad_max_ptr + b * sgMb + r64 * sgMr, mask=mask_r, other=0.0).to(ACC)
        m = tl.load(max_ptr + b * sMb + r64 * sMr, mask=mask_r, other=0.0).to(ACC)
        n = tl.load(count_ptr + b * R + r64, mask=mask_r, other=1).to(ACC)
        x = tl.load(x_ptr + b * sxb + r64[:, None] * sxr + k64 * sxk, mask=mask, other=0.0).to(ACC)
    g = add_pool_grad(tl.zeros([BLOCK_R, BLOCK_K], dtype=ACC), x, g_mean, g_max, m, n, K, HAS_MEAN, HAS_MAX)
    tl.store(grad_x_ptr + b * sgxb + r64[:, None] * sgxr + k64 * sgxk, to_output(g, grad_x_ptr), mask=mask)


@triton.jit
def add_pool_grad(g, x, g_mean, g_max, m, n, K, HAS_MEAN: tl.constexpr, HAS_MAX: tl.constexpr):
    """g + the gradient of the pooling of a tile of x [BLOCK_R, BLOCK_K] over K, given the
    per-row gradients of the mean and max, the max m and its tie count n:
    g_mean / K + [x == m] · g_max / n. The max term spreads the gradient evenly over tied maxima,
    exactly as torch.amax's backward, and is NaN over a whole row whose max is NaN (torch.amax's
    backward too: (grad / 0) · 0 there, no element equals NaN)."""
    if HAS_MEAN:
        g += (g_mean / K)[:, None]
    if HAS_MAX:
        share = tl.where(x == m[:, None], (g_max / n)[:, None], 0.0)
        g += tl.where((m != m)[:, None], float("nan"), share)
    return g
