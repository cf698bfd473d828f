"""CBAM's spatial half on the channel-gated map, forward: z = x · gate_c(s_c[b, c]) is never written.

  gated_spatial_pool_fwd   per pixel p of sample b: mean_c z and max_c z (CBAM) or their average
                           (light CBAM) → the descriptor map d [B, D, H·W]; the sample's last
                           program (kernels/excitation.py's per-sample counter) computes the k×k
                           conv of d (zero padding (k-1)/2, no bias) → u [B, H·W]; the launch's
                           last program the BatchNorm as an affine t = a · u + c — from the batch
                           statistics of u in training (and the running statistics moved), from
                           the running statistics in eval
  doubly_gated_scale_fwd   y = x · gate_c(s_c[b, c]) · gate_s(t[b, p])

With squeeze_excite_fwd (s_c) that is CBAM's forward in 3 kernels and 4 passes over x-sized
tensors (x read three times, y written), in training as in eval. z is rounded to x's dtype
before it is pooled, as eager's materialised x · gate does; d, u and s_c stay in ACC (float32;
float64 for float64 x). The backward is kernels/cbam_spatial_bwd.py.
"""
import triton
import triton.language as tl

from .excitation import last_of_sample
from .gates import gate_value
from .mean_max import chan_combine, pool_start, pool_tile, pooled_max
from .program_tiles import elementwise_tile, row_block
from .rounding import as_materialised, to_output
from .tiling import ELEMENTWISE_TILES, ROW_TILES, oriented_configs

#: gated_spatial_pool_fwd loops over C; the conv's tile (CONV_BLOCK_P pixels) is set by the problem.
GATED_SPATIAL_POOL_FWD_CONFIGS = oriented_configs(ROW_TILES, num_warps=(2, 4, 8), num_stages=(1, 2, 3))
#: doubly_gated_scale_fwd: one tile per program.
DOUBLY_GATED_SCALE_FWD_CONFIGS = oriented_configs(ELEMENTWISE_TILES, num_warps=(2, 4, 8), num_stages=(1,))


@triton.jit
def acc_zero(ACC: tl.constexpr):
    """A scalar 0 of type ACC (a loop-carried scalar must keep one type)."""
    return tl.sum(tl.zeros([2], dtype=ACC), axis=0)


@triton.jit
def sample_conv(
    b, d_ptr, u_ptr, stats_ptr, w_ptr, H, W,
    D: tl.constexpr, KS: tl.constexpr, ACC: tl.constexpr, CONV_BLOCK_P: tl.constexpr,
):
    """u[b, :] = conv(d[b]) for one sample (w [1, D, KS, KS] contiguous, zero padding (KS-1)/2, Σ
    over (D, KS, KS) in a fixed order), and the sample's (mean, Σ (u - mean)²) into stats[b, 0:2],
    combined block by block in a fixed order (mean_max.chan_combine)."""
    P = H * W
    pad: tl.constexpr = (KS - 1) // 2
    n, mean, m2 = acc_zero(ACC), acc_zero(ACC), acc_zero(ACC)
    for p0 in range(0, P, CONV_BLOCK_P):
        offs_p = p0 + tl.arange(0, CONV_BLOCK_P)
        mask_p = offs_p < P
        h = offs_p // W
        w = offs_p % W
        acc = tl.zeros([CONV_BLOCK_P], dtype=ACC)
        for ci in tl.static_range(D):
            for dy in tl.static_range(KS):
                hh = h + (dy - pad)
                for dx in tl.static_range(KS):
                    ww = w + (dx - pad)
                    valid = mask_p & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                    v = tl.load(d_ptr + (b * D + ci) * P + hh * W + ww, mask=valid, other=0.0, cache_modifier=".cg")
                    acc += tl.load(w_ptr + (ci * KS + dy) * KS + dx).to(ACC) * v
        tl.store(u_ptr + b * P + offs_p, acc, mask=mask_p)
        nb = tl.sum(mask_p.to(ACC), axis=0)
        mean_b = tl.sum(acc, axis=0) / nb  # acc is 0 at masked pixels
        m2_b = tl.sum(tl.where(mask_p, (acc - mean_b) * (acc - mean_b), 0.0), axis=0)
        n, mean, m2 = chan_combine(n, mean, m2, nb, mean_b, m2_b)
    tl.store(stats_ptr + b * 2, mean)
    tl.store(stats_ptr + b * 2 + 1, m2)


@triton.jit
def batch_norm_affine(
    stats_ptr, affine_ptr, bnw_ptr, bnb_ptr, rm_ptr, rv_ptr, B, P, bn_eps,
    BATCH_STATS: tl.constexpr, ACC: tl.constexpr,
):
    """The spatial BatchNorm's one channel as t = a · u + c, by the last program of the launch.

    BATCH_STATS: μ, σ² = the mean and biased variance of u over (B, H, W), the per-sample
    (mean, Σ (u - mean)²) combined in sample order; otherwise the running statistics.
    a = weight / sqrt(σ² + eps), c = bias - μ · a; affine = (a, c, μ, 1 / sqrt(σ² + eps), v) for
    the scale kernel and the backward, v = the unbiased batch variance σ² · N / (N - 1) with which
    the host moves the running variance (the running variance in eval)."""
    if BATCH_STATS:
        n, mean, m2 = acc_zero(ACC), acc_zero(ACC), acc_zero(ACC)
        nb = acc_zero(ACC) + P
        for b in range(0, B):
            mean_b = tl.load(stats_ptr + b * 2, cache_modifier=".cg")
            m2_b = tl.load(stats_ptr + b * 2 + 1, cache_modifier=".cg")
            n, mean, m2 = chan_combine(n, mean, m2, nb, mean_b, m2_b)
        var = m2 / n
        unbiased = m2 / (n - 1.0)
    else:
        mean = tl.load(rm_ptr).to(ACC)
        var = tl.load(rv_ptr).to(ACC)
        unbiased = var
    inv_std = 1.0 / tl.sqrt(var + bn_eps)
    a = tl.load(bnw_ptr).to(ACC) * inv_std
    tl.store(affine_ptr, a)
    tl.store(affine_ptr + 1, tl.load(bnb_ptr).to(ACC) - mean * a)
    tl.store(affine_ptr + 2, mean)
    tl.store(affine_ptr + 3, inv_std)
    tl.store(affine_ptr + 4, unbiased)


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
    x_ptr, s_ptr, d_ptr, u_ptr, stats_ptr, affine_ptr, counter_ptr,
    w_ptr, bnw_ptr, bnb_ptr, rm_ptr, rv_ptr,
    B, R, K, H, W, bn_eps,
    sxb, sxr, sxk,
    GATE: tl.constexpr, D: tl.constexpr, KS: tl.constexpr, BATCH_STATS: tl.constexpr,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, CONV_BLOCK_P: tl.constexpr,
):
    """The spatial descriptor of z = x · gate(s[b, k]), its conv and the BatchNorm's affine
    (R = H·W pixels, K = C channels; s [B, C] contiguous):

      D = 2: d[b, 0, p] = Σ_c z / C, d[b, 1, p] = max_c z         (CBAM)
      D = 1: d[b, 0, p] = 0.5 · Σ_c z / C + 0.5 · max_c z          (light CBAM)
      u[b, :] = conv(d[b]) and its (mean, M2)  by the sample's last program    (sample_conv)
      affine = (a, c, μ, 1/σ, v)                by the last sample's last program (batch_norm_affine)

    Counters: one per sample (slots 0 … B-1) and one for the launch (slot B), all left at 0.
    Minimum bytes: x read + s read + d written (ACC) + u written (ACC).
    Grid: rows_grid — one program per (b, BLOCK_R pixels) looping over C.
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
    if last_of_sample(counter_ptr, b, tl.cdiv(R, BLOCK_R)):
        sample_conv(b, d_ptr, u_ptr, stats_ptr, w_ptr, H, W, D, KS, ACC, CONV_BLOCK_P)
        tl.store(counter_ptr + b, 0)
        if last_of_sample(counter_ptr, B, B):
            batch_norm_affine(stats_ptr, affine_ptr, bnw_ptr, bnb_ptr, rm_ptr, rv_ptr, B, R, bn_eps, BATCH_STATS, ACC)
            tl.store(counter_ptr + B, 0)


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
