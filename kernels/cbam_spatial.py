"""CBAM's spatial half on the channel-gated map, forward: z = x · gate_c(s_c[b, c]) is never written.

  gated_spatial_pool_fwd   per pixel p of sample b: mean_c z and max_c z (CBAM) or their average
                           (light CBAM) → the descriptor map d [B, D, H·W]
  spatial_conv_fwd         per (sample, tile of pixels): u = the k×k conv of d (zero padding
                           (k-1)/2, no bias) → u [B, H·W]; the spatial BatchNorm as an affine
                           t = a · u + c — from the batch statistics of u in training (each tile's
                           (n, mean, M2) merged in a fixed-order tree, kernels/ticket_tree.py), from
                           the running statistics in eval
  doubly_gated_scale_fwd   y = x · gate_c(s_c[b, c]) · gate_s(t[b, p])

With squeeze_excite_fwd (s_c) that is CBAM's forward in 4 kernels and 4 passes over x-sized
tensors (x read three times, y written), in training as in eval. No program loops over the
batch, over a whole map or over the other programs' results: the conv has its own launch over
(sample, pixel tile), every program of it issuing a fixed handful of memory instructions (its
tile's halo of d is one gather), and the batch statistics' merge adds 4 per tree level to the
programs that merge. z is rounded to x's dtype before it is pooled, as eager's materialised
x · gate does; d, u and s_c stay in ACC (float32; float64 for float64 x). The backward is
kernels/cbam_spatial_bwd.py.
"""
import triton
import triton.language as tl

from .gates import gate_value
from .mean_max import pool_start, pool_tile, pooled_max
from .program_tiles import elementwise_tile, row_block
from .rounding import as_materialised, to_output
from .ticket_tree import moments_row, row_entry, tree_merge
from .tiling import ELEMENTWISE_TILES, ROW_TILES, oriented_configs

#: gated_spatial_pool_fwd loops over C; spatial_conv_fwd's tile is set by the problem (launch.py).
GATED_SPATIAL_POOL_FWD_CONFIGS = oriented_configs(ROW_TILES, num_warps=(2, 4, 8), num_stages=(1, 2, 3))
#: doubly_gated_scale_fwd: one tile per program.
DOUBLY_GATED_SCALE_FWD_CONFIGS = oriented_configs(ELEMENTWISE_TILES, num_warps=(2, 4, 8), num_stages=(1,))


@triton.jit
def pixel_tile(H, W, BLOCK_P: tl.constexpr):
    """The (sample, tile of BLOCK_P pixels) of a program over [B, H·W] maps (grid: B · ⌈H·W /
    BLOCK_P⌉, tiles fastest): b (int64), the pixel offsets, their mask, rows and columns."""
    pid = tl.program_id(0)
    n_tiles = tl.cdiv(H * W, BLOCK_P)
    offs_p = (pid % n_tiles) * BLOCK_P + tl.arange(0, BLOCK_P)
    return (pid // n_tiles).to(tl.int64), offs_p, offs_p < H * W, offs_p // W, offs_p % W


@triton.jit
def affine_entries(affine_ptr):
    """(a, c, μ, 1/σ) of the BatchNorm's affine (its 5 entries in ACC: :func:`batch_norm_affine`), in one load."""
    offs = tl.arange(0, 8)
    v = tl.load(affine_ptr + offs, mask=offs < 5, other=0.0)
    return row_entry(v, offs, 0), row_entry(v, offs, 1), row_entry(v, offs, 2), row_entry(v, offs, 3)


@triton.jit
def batch_norm_affine(
    moments, cols, affine_ptr, bnw_ptr, bnb_ptr, rm_ptr, rv_ptr, bn_eps, BATCH_STATS: tl.constexpr, ACC: tl.constexpr,
):
    """The spatial BatchNorm's one channel as t = a · u + c, stored to affine.

    BATCH_STATS: μ, σ² = the mean and biased variance of u over (B, H, W), from ``moments`` =
    (n, mean, M2) of all of u; otherwise the running statistics. a = weight / sqrt(σ² + eps),
    c = bias - μ · a; affine = (a, c, μ, 1 / sqrt(σ² + eps), v) for the scale kernel and the
    backward, v = the unbiased batch variance σ² · N / (N - 1) with which the host moves the
    running variance (the running variance in eval)."""
    if BATCH_STATS:
        n = row_entry(moments, cols, 0)
        mean = row_entry(moments, cols, 1)
        m2 = row_entry(moments, cols, 2)
        var = m2 / n
        unbiased = m2 / (n - 1.0)
    else:
        mean = tl.load(rm_ptr).to(ACC)
        var = tl.load(rv_ptr).to(ACC)
        unbiased = var
    inv_std = 1.0 / tl.sqrt(var + bn_eps)
    a = tl.load(bnw_ptr).to(ACC) * inv_std
    c = tl.load(bnb_ptr).to(ACC) - mean * a
    offs = tl.arange(0, 8)
    entries = tl.where(offs == 0, a, tl.where(offs == 1, c, tl.where(offs == 2, mean,
                                                                   tl.where(offs == 3, inv_std, unbiased))))
    tl.store(affine_ptr + offs, entries, mask=offs < 5)


@triton.jit
def store_descriptor(d_ptr, b, R, r64, mask_r, mean, maximum, D: tl.constexpr):
    """The spatial descriptor of a block of pixels into d [B, D, R]: (mean, max) over C for
    CBAM (D = 2), 0.5 · mean + 0.5 · max for light CBAM (D = 1)."""
    if D == 2:
        tl.store(d_ptr + (b * 2) * R + r64, mean, mask=mask_r)
        tl.store(d_ptr + (b * 2 + 1) * R + r64, maximum, mask=mask_r)
    else:
        tl.store(d_ptr + b * R + r64, 0.5 * mean + 0.5 * maximum, mask=mask_r)


@triton.jit
def gated_spatial_pool_fwd(
    x_ptr, s_ptr, d_ptr,
    R, K,
    sxb, sxr, sxk,
    GATE: tl.constexpr, D: tl.constexpr,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """The spatial descriptor of z = x · gate(s[b, k]) (R = H·W pixels, K = C channels; s [B, C]
    contiguous):

      D = 2: d[b, 0, p] = Σ_c z / C, d[b, 1, p] = max_c z         (CBAM)
      D = 1: d[b, 0, p] = 0.5 · Σ_c z / C + 0.5 · max_c z          (light CBAM)

    Reduces over C in a fixed order, per pixel. Minimum bytes: x read + s read + d written (ACC).
    Grid: rows_grid — one program per (b, BLOCK_R pixels) looping over C (launch.py cuts BLOCK_R
    so that a sample's map is spread over several programs); every program alike: 2 loads per
    BLOCK_K channels and D stores.
    """
    b, offs_r = row_block(R, BLOCK_R)
    mask_r = offs_r < R
    r64 = offs_r.to(tl.int64)
    row_ptrs = x_ptr + b * sxb + r64[:, None] * sxr
    total, run_max, run_count, has_nan = pool_start(BLOCK_R, ACC)
    for start in range(0, K, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        mask = mask_r[:, None] & mask_k[None, :]
        g = gate_value(tl.load(s_ptr + b * K + offs_k, mask=mask_k, other=0.0), GATE)
        x = tl.load(row_ptrs + offs_k.to(tl.int64)[None, :] * sxk, mask=mask, other=0.0).to(ACC)
        z = as_materialised(x * g[None, :], x_ptr)
        total, run_max, run_count, has_nan = pool_tile(z, mask, total, run_max, run_count, has_nan, True, True)
    store_descriptor(d_ptr, b, R, r64, mask_r, total / K, pooled_max(run_max, has_nan), D)


@triton.jit
def spatial_conv_fwd(
    d_ptr, w_ptr, u_ptr, part_ptr, counter_ptr, affine_ptr, bnw_ptr, bnb_ptr, rm_ptr, rv_ptr,
    H, W, bn_eps,
    D: tl.constexpr, KS: tl.constexpr, BATCH_STATS: tl.constexpr, FAN: tl.constexpr,
    ACC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """u = conv(d) and the BatchNorm's affine, on [B, D, H·W] maps (w [1, D, KS, KS] contiguous,
    pad = (KS-1)/2, no bias):

      u[b, p] = Σ_{ci, dy, dx} w[ci, dy, dx] · d[b, ci, p + (dy - pad, dx - pad)]   (zero outside)

    Tap t = (ci · KS + dy) · KS + dx < D·KS·KS ≤ BLOCK_T: the tile's halo of d is one [BLOCK_P,
    BLOCK_T] gather (re-read from cache by the neighbouring tiles), the weights one load, Σ over
    the taps one reduction (fixed order).
    BATCH_STATS: the tile's (n, mean, M2) of u is merged with the other tiles' in a fixed-order
    tree (kernels/ticket_tree.py: part [rows, 4] ACC, fan-in FAN, counter slots
    left at 0) and the root stores the affine (:func:`batch_norm_affine`); in eval program 0
    stores it from the running statistics.
    Minimum bytes: d read + u written (ACC). Grid: one program per (b, BLOCK_P pixels); each
    issues 2 loads and 2 stores (+ its ticket in training); the programs that merge 4 more per
    tree level, the root 3 more (the BatchNorm's weight and bias, the affine).
    """
    pid = tl.program_id(0)
    b, offs_p, mask_p, h, w = pixel_tile(H, W, BLOCK_P)
    P = H * W
    pad: tl.constexpr = (KS - 1) // 2
    taps = tl.arange(0, BLOCK_T)
    ci = taps // (KS * KS)
    dy = (taps // KS) % KS
    dx = taps % KS
    mask_t = taps < D * KS * KS
    hh = h[:, None] + (dy[None, :] - pad)
    ww = w[:, None] + (dx[None, :] - pad)
    valid = mask_p[:, None] & mask_t[None, :] & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
    v = tl.load(d_ptr + (b * D + ci[None, :]) * P + hh * W + ww, mask=valid, other=0.0)
    wt = tl.load(w_ptr + taps, mask=mask_t, other=0.0).to(ACC)
    u = tl.sum(v * wt[None, :], axis=1)  # 0 at masked pixels
    tl.store(u_ptr + b * P + offs_p, u, mask=mask_p)
    cols = tl.arange(0, 4)
    if BATCH_STATS:
        n = tl.sum(mask_p.to(ACC), axis=0)
        mean = tl.sum(u, axis=0) / n
        m2 = tl.sum(tl.where(mask_p, (u - mean) * (u - mean), 0.0), axis=0)
        root, moments = tree_merge(part_ptr, counter_ptr, pid, tl.num_programs(0), moments_row(n, mean, m2, cols),
                                   "moments", FAN, 4)
        if root:
            batch_norm_affine(moments, cols, affine_ptr, bnw_ptr, bnb_ptr, rm_ptr, rv_ptr, bn_eps, BATCH_STATS, ACC)
    else:
        if pid == 0:  # the running statistics: no moments (cols stands in)
            batch_norm_affine(cols, cols, affine_ptr, bnw_ptr, bnb_ptr, rm_ptr, rv_ptr, bn_eps, BATCH_STATS, ACC)


@triton.jit
def doubly_gated_scale_fwd(
    x_ptr, s_ptr, u_ptr, affine_ptr, y_ptr,
    R, K,
    sxb, sxr, sxk,
    syb, syr, syk,
    GATE_C: tl.constexpr, GATE_S: tl.constexpr,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y[b, c, p] = x · gate_c(s[b, c]) · gate_s(t[b, p]), t = a · u[b, p] + c  (R = C, K = H·W;
    s [B, C], u [B, H·W] contiguous, in ACC; affine = (a, c, …)). Minimum bytes: x read + y
    written + s and u read.
    Grid: elementwise_grid — one program per (b, row block, column block)."""
    b, offs_r, offs_k = elementwise_tile(R, K, BLOCK_R, BLOCK_K)
    mask_r = offs_r < R
    mask_k = offs_k < K
    mask = mask_r[:, None] & mask_k[None, :]
    r64 = offs_r.to(tl.int64)
    k64 = offs_k.to(tl.int64)[None, :]
    g_c = gate_value(tl.load(s_ptr + b * R + r64, mask=mask_r, other=0.0), GATE_C)
    t = tl.load(u_ptr + b * K + offs_k, mask=mask_k, other=0.0) * tl.load(affine_ptr) + tl.load(affine_ptr + 1)
    g_s = gate_value(t, GATE_S)
    x = tl.load(x_ptr + b * sxb + r64[:, None] * sxr + k64 * sxk, mask=mask, other=0.0).to(ACC)
    # z = x · g_c rounded to x's dtype, as in gated_spatial_pool_fwd and in eager
    z = as_materialised(x * g_c[:, None], x_ptr)
    tl.store(y_ptr + b * syb + r64[:, None] * syr + k64 * syk, to_output(z * g_s[None, :], y_ptr), mask=mask)
