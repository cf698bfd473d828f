"""CBAM's spatial half, backward: from grad_y to the gradient at the channel branch's output z.

The forward (kernels/cbam_spatial.py), per sample b and pixel p, with z = x · gate_c(s[b, c])
rounded to x's dtype:

    d[b, :, p] = (mean_c z, max_c z)  or  0.5 · mean_c z + 0.5 · max_c z      (D = 2 / 1)
    u = conv(d),  t = a · u + c  (the BatchNorm, a = weight / σ, c = bias - μ · a),  y = z · gate_s(t)

  cbam_spatial_bwd_reduce  per pixel, one pass over (grad_y, x) along C:
                             grad_t[b, p] = gate_s'(t) · Σ_c grad_y · z
                           and d, max_c z and its ties recomputed (the forward saves only u);
                           each program's (Σ grad_t, Σ grad_t · x̂) over its pixels (x̂ = (u - μ) / σ)
                           merged over the launch in a fixed-order tree (kernels/ticket_tree.py):
                           the BatchNorm's bias and weight gradients
  spatial_conv_bwd         per (sample, tile of pixels): grad_u = a · (grad_t - Σ grad_t / N -
                           x̂ · Σ grad_t · x̂ / N) (batch statistics, N = B·H·W; a · grad_t with
                           running statistics), grad_d = the transposed conv of grad_u (its halo
                           one gather), and the tile's share of the conv weight's gradient
                           Σ_p grad_u · d(shifted), merged over the launch in a fixed-order tree

They leave per pixel, in the workspace sp [B, 4, H·W] (ACC), what the channel branch's backward
(kernels/excitation.py with ACT_OUT = "spatial") needs to form ∂L/∂z on the fly, never written:

    ∂L/∂z[b, c, p] = grad_y · sp[0] + sp[1] + [z == sp[3]] · sp[2]
    sp[0] = gate_s(t), sp[1] = grad of the mean / C, sp[2] = grad of the max / its ties, sp[3] = max_c z
"""
import triton
import triton.language as tl

from .cbam_spatial import affine_entries, pixel_tile, store_descriptor
from .gates import gate_backward, gate_value
from .mean_max import pool_start, pool_tile, pooled_max
from .program_tiles import row_block
from .rounding import as_materialised, to_output
from .ticket_tree import row_entry, tree_merge
from .tiling import ROW_TILES, oriented_configs

#: cbam_spatial_bwd_reduce loops over C like gated_spatial_pool_fwd; spatial_conv_bwd works on
#: [B, H·W] maps only, its tile set by the problem (launch.py).
CBAM_SPATIAL_BWD_REDUCE_CONFIGS = oriented_configs(ROW_TILES, num_warps=(2, 4, 8), num_stages=(1, 2, 3))


@triton.jit
def cbam_spatial_bwd_reduce(
    grad_y_ptr, x_ptr, s_ptr, u_ptr, affine_ptr,
    grad_t_ptr, d_ptr, sp_ptr, ties_ptr, part_ptr, sums_ptr, counter_ptr, gbnw_ptr, gbnb_ptr,
    R, K,
    sgyb, sgyr, sgyk,
    sxb, sxr, sxk,
    GATE_C: tl.constexpr, GATE_S: tl.constexpr, D: tl.constexpr, FAN: tl.constexpr,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Backward, first launch (R = H·W pixels, K = C channels; s [B, C], u [B, H·W], affine =
    (a, c, μ, 1/σ) from the forward):

      grad_t[b, p]  = gate_s'(t) · Σ_c grad_y · z          fixed order, ACC
      d[b, :, p], sp[b, 3, p] = max_c z, ties[b, p] = #{c : z == max}, sp[b, 0, p] = gate_s(t)
      per program: (Σ_p grad_t, Σ_p grad_t · x̂) over its pixels, merged over the launch in a
      fixed-order tree (kernels/ticket_tree.py: part [rows, 2] ACC, fan-in FAN,
      counter slots left at 0); the root stores the sums to sums[0:2] and the BatchNorm's
      grad_bias = sums[0], grad_weight = sums[1]

    Minimum bytes: grad_y and x read + s, u read + grad_t, d, sp[0], sp[3], ties written.
    Grid: rows_grid — one program per (b, BLOCK_R pixels) looping over C (3 loads per BLOCK_K
    channels), then 2 loads, 5 + D stores and its ticket; the programs that merge 4 more per tree
    level, the root 3 more.
    """
    b, offs_r = row_block(R, BLOCK_R)
    mask_r = offs_r < R
    r64 = offs_r.to(tl.int64)
    rows = r64[:, None]
    dot = tl.zeros([BLOCK_R], dtype=ACC)
    total, run_max, run_count, has_nan = pool_start(BLOCK_R, ACC)
    for start in range(0, K, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        mask = mask_r[:, None] & mask_k[None, :]
        k64 = offs_k.to(tl.int64)[None, :]
        g = gate_value(tl.load(s_ptr + b * K + offs_k, mask=mask_k, other=0.0), GATE_C)
        x = tl.load(x_ptr + b * sxb + rows * sxr + k64 * sxk, mask=mask, other=0.0).to(ACC)
        z = as_materialised(x * g[None, :], x_ptr)  # as the forward rounds it
        dy = tl.load(grad_y_ptr + b * sgyb + rows * sgyr + k64 * sgyk, mask=mask, other=0.0).to(ACC)
        dot += tl.sum(dy * z, axis=1)
        total, run_max, run_count, has_nan = pool_tile(z, mask, total, run_max, run_count, has_nan, True, True)
    mean = total / K
    maximum = pooled_max(run_max, has_nan)
    a, c, mu, inv_std = affine_entries(affine_ptr)
    u = tl.load(u_ptr + b * R + r64, mask=mask_r, other=0.0)
    t = u * a + c
    grad_t = tl.where(mask_r, gate_backward(t, dot, GATE_S), 0.0)
    tl.store(grad_t_ptr + b * R + r64, grad_t, mask=mask_r)
    tl.store(sp_ptr + b * 4 * R + r64, gate_value(t, GATE_S), mask=mask_r)
    tl.store(sp_ptr + (b * 4 + 3) * R + r64, maximum, mask=mask_r)
    tl.store(ties_ptr + b * R + r64, run_count, mask=mask_r)
    store_descriptor(d_ptr, b, R, r64, mask_r, mean, maximum, D)
    cols = tl.arange(0, 2)
    part = tl.where(cols == 0, tl.sum(grad_t, axis=0), tl.sum(grad_t * ((u - mu) * inv_std), axis=0))
    root, sums = tree_merge(part_ptr, counter_ptr, tl.program_id(0), tl.num_programs(0), part, "sum", FAN, 2)
    if root:
        tl.store(sums_ptr + cols, sums)
        tl.store(gbnb_ptr, to_output(row_entry(sums, cols, 0), gbnb_ptr))
        tl.store(gbnw_ptr, to_output(row_entry(sums, cols, 1), gbnw_ptr))


@triton.jit
def bn_input_grad(grad_t_ptr, u_ptr, offs, mask, a, mu, inv_std, mean_g, mean_gx, BATCH_STATS: tl.constexpr):
    """grad_u at flat offsets (0 where masked): the BatchNorm's backward for its one channel."""
    gt = tl.load(grad_t_ptr + offs, mask=mask, other=0.0)
    if BATCH_STATS:
        u = tl.load(u_ptr + offs, mask=mask, other=0.0)
        gt = gt - mean_g - ((u - mu) * inv_std) * mean_gx
    return tl.where(mask, a * gt, 0.0)


@triton.jit
def spatial_conv_bwd(
    grad_t_ptr, u_ptr, d_ptr, affine_ptr, sums_ptr, w_ptr, sp_ptr, ties_ptr, part_ptr, counter_ptr, gw_ptr,
    C, H, W, N,
    D: tl.constexpr, KS: tl.constexpr, BATCH_STATS: tl.constexpr, FAN: tl.constexpr,
    ACC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """Backward, second launch, on [B, H·W] maps (w [1, D, KS, KS] contiguous, pad = (KS-1)/2):

      grad_u       = the BatchNorm's backward (:func:`bn_input_grad`; N = B·H·W)
      grad_d[ci, q] = Σ_{ky, kx} w[ci, ky, kx] · grad_u[q - (ky - pad, kx - pad)]   (zero outside)
      sp[b, 1, p]  = grad_d[0] / C,  sp[b, 2, p] = grad_d[1] / ties   (D = 2; D = 1: both halves
                     of grad_d[0], as d = 0.5 · mean + 0.5 · max)
      grad_w[ci, ky, kx] = Σ_{b, p} grad_u[b, p] · d[b, ci, p + (ky - pad, kx - pad)]: each
                     tile's share, a row of D · BLOCK_T, merged over the launch in a fixed-order
                     tree (kernels/ticket_tree.py: part [rows, D · BLOCK_T] ACC, fan-in FAN,
                     counter slots left at 0); the root stores grad_w

    Tap t = ky · KS + kx < KS·KS ≤ BLOCK_T: the tile's halo of grad_t (and u) is one [BLOCK_P,
    BLOCK_T] gather, that of d one [BLOCK_P, D · BLOCK_T] gather (re-read from cache by the
    neighbouring tiles); Σ over the taps and over the tile's pixels one reduction each (fixed order).
    Minimum bytes: grad_t, u, d, ties read; sp[1], sp[2] written ([B, H·W] maps, in ACC).
    Grid: one program per (b, BLOCK_P pixels); each issues 8 + D loads (6 + D in eval) and 3
    stores and its ticket; the programs that merge 4 more per tree level, the root 1 more.
    """
    pid = tl.program_id(0)
    b, offs_p, mask_p, h, w = pixel_tile(H, W, BLOCK_P)
    P = H * W
    pad: tl.constexpr = (KS - 1) // 2
    a, _, mu, inv_std = affine_entries(affine_ptr)
    cols2 = tl.arange(0, 2)
    means = tl.load(sums_ptr + cols2) / N
    mean_g = row_entry(means, cols2, 0)
    mean_gx = row_entry(means, cols2, 1)
    grad_u = bn_input_grad(grad_t_ptr, u_ptr, b * P + offs_p, mask_p, a, mu, inv_std, mean_g, mean_gx, BATCH_STATS)
    taps = tl.arange(0, BLOCK_T)
    ky = taps // KS
    kx = taps % KS
    mask_t = taps < KS * KS
    # transposed conv: the pixel q - (ky - pad, kx - pad) that read this one through tap (ky, kx)
    qh = h[:, None] - (ky[None, :] - pad)
    qw = w[:, None] - (kx[None, :] - pad)
    valid = mask_p[:, None] & mask_t[None, :] & (qh >= 0) & (qh < H) & (qw >= 0) & (qw < W)
    g_src = bn_input_grad(grad_t_ptr, u_ptr, b * P + qh * W + qw, valid, a, mu, inv_std, mean_g, mean_gx, BATCH_STATS)
    grad_d0 = tl.sum(g_src * tl.load(w_ptr + taps, mask=mask_t, other=0.0).to(ACC)[None, :], axis=1)
    if D == 2:
        grad_d1 = tl.sum(g_src * tl.load(w_ptr + KS * KS + taps, mask=mask_t, other=0.0).to(ACC)[None, :], axis=1)
        grad_mean = grad_d0 / C
        grad_max = grad_d1
    else:
        grad_mean = 0.5 * grad_d0 / C
        grad_max = 0.5 * grad_d0
    ties = tl.load(ties_ptr + b * P + offs_p, mask=mask_p, other=1).to(ACC)
    tl.store(sp_ptr + (b * 4 + 1) * P + offs_p, grad_mean, mask=mask_p)
    tl.store(sp_ptr + (b * 4 + 2) * P + offs_p, grad_max / ties, mask=mask_p)
    # weight gradient: this pixel's grad_u times the input it read through tap (ci, ky, kx), column
    # ci · BLOCK_T + t of the tile's row
    cols = tl.arange(0, D * BLOCK_T)
    ci = cols // BLOCK_T
    t = cols % BLOCK_T
    rh = h[:, None] + (t[None, :] // KS - pad)
    rw = w[:, None] + (t[None, :] % KS - pad)
    inside = mask_p[:, None] & (t < KS * KS)[None, :] & (rh >= 0) & (rh < H) & (rw >= 0) & (rw < W)
    v = tl.load(d_ptr + (b * D + ci[None, :]) * P + rh * W + rw, mask=inside, other=0.0)
    wrow = tl.sum(grad_u[:, None] * v, axis=0)
    root, total = tree_merge(part_ptr, counter_ptr, pid, tl.num_programs(0), wrow, "sum", FAN, D * BLOCK_T)
    if root:
        tl.store(gw_ptr + ci * KS * KS + t, to_output(total, gw_ptr), mask=t < KS * KS)
