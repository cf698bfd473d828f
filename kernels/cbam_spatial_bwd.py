"""CBAM's spatial half, backward: from grad_y to the gradient at the channel branch's output z.

The forward (kernels/cbam_spatial.py), per sample b and pixel p, with z = x · gate_c(s[b, c])
rounded to x's dtype:

    d[b, :, p] = (mean_c z, max_c z)  or  0.5 · mean_c z + 0.5 · max_c z      (D = 2 / 1)
    u = conv(d),  t = a · u + c  (the BatchNorm, a = weight / σ, c = bias - μ · a),  y = z · gate_s(t)

  cbam_spatial_bwd_reduce  per pixel, one pass over (grad_y, x) along C:
                             grad_t[b, p] = gate_s'(t) · Σ_c grad_y · z
                           and d, max_c z and its ties recomputed (the forward saves only u);
                           the launch's last program sums Σ grad_t and Σ grad_t · x̂ over the
                           batch (x̂ = (u - μ) / σ): the BatchNorm's weight and bias gradients
  spatial_conv_bwd         per pixel: grad_u = a · (grad_t - Σ grad_t / N - x̂ · Σ grad_t · x̂ / N)
                           (batch statistics, N = B·H·W; a · grad_t with running statistics),
                           grad_d = the transposed conv of grad_u, and the conv weight's gradient
                           Σ_b Σ_p grad_u · d(shifted), summed over programs in a fixed order

They leave per pixel, in the workspace sp [B, 4, H·W] (ACC), what the channel branch's backward
(kernels/excitation.py with ACT_OUT = "spatial") needs to form ∂L/∂z on the fly, never written:

    ∂L/∂z[b, c, p] = grad_y · sp[0] + sp[1] + [z == sp[3]] · sp[2]
    sp[0] = gate_s(t), sp[1] = grad of the mean / C, sp[2] = grad of the max / its ties, sp[3] = max_c z
"""
import triton
import triton.language as tl

from .cbam_spatial import acc_zero, store_descriptor
from .excitation import last_of_sample
from .gates import gate_backward, gate_value
from .mean_max import pool_start, pool_tile, pooled_max
from .program_tiles import row_block
from .rounding import as_materialised, to_output
from .tiling import ROW_TILES, oriented_configs

#: cbam_spatial_bwd_reduce loops over C like gated_spatial_pool_fwd; spatial_conv_bwd works on
#: [B, H·W] maps only, its tile (BLOCK_P pixels) set by the problem (launch.py).
CBAM_SPATIAL_BWD_REDUCE_CONFIGS = oriented_configs(ROW_TILES, num_warps=(2, 4, 8), num_stages=(1, 2, 3))


@triton.jit
def cbam_spatial_bwd_reduce(
    grad_y_ptr, x_ptr, s_ptr, u_ptr, affine_ptr,
    grad_t_ptr, d_ptr, sp_ptr, ties_ptr, part_ptr, sums_ptr, counter_ptr, gbnw_ptr, gbnb_ptr,
    B, R, K,
    sgyb, sgyr, sgyk,
    sxb, sxr, sxk,
    GATE_C: tl.constexpr, GATE_S: tl.constexpr, D: tl.constexpr,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, SUM_BLOCK_P: tl.constexpr,
):
    """Backward, first launch (R = H·W pixels, K = C channels; s [B, C], u [B, H·W], affine =
    (a, c, μ, 1/σ) from the forward):

      grad_t[b, p]  = gate_s'(t) · Σ_c grad_y · z          fixed order, ACC
      d[b, :, p], sp[b, 3, p] = max_c z, ties[b, p] = #{c : z == max}, sp[b, 0, p] = gate_s(t)
      per sample, by its last program: (Σ_p grad_t, Σ_p grad_t · x̂) → part[b, 0:2]
      by the launch's last program: their sums over b in order → sums[0:2], and the BatchNorm's
      grad_bias = sums[0], grad_weight = sums[1]

    Counters: slots 0 … B-1 per sample and slot B for the launch, left at 0.
    Minimum bytes: grad_y and x read + s, u read + grad_t, d, sp[0], sp[3], ties written.
    Grid: rows_grid — one program per (b, BLOCK_R pixels) looping over C.
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
    a = tl.load(affine_ptr)
    t = tl.load(u_ptr + b * R + r64, mask=mask_r, other=0.0) * a + tl.load(affine_ptr + 1)
    tl.store(grad_t_ptr + b * R + r64, gate_backward(t, dot, GATE_S), mask=mask_r)
    tl.store(sp_ptr + b * 4 * R + r64, gate_value(t, GATE_S), mask=mask_r)
    tl.store(sp_ptr + (b * 4 + 3) * R + r64, maximum, mask=mask_r)
    tl.store(ties_ptr + b * R + r64, run_count, mask=mask_r)
    store_descriptor(d_ptr, b, R, r64, mask_r, mean, maximum, D)
    if last_of_sample(counter_ptr, b, tl.cdiv(R, BLOCK_R)):
        mu = tl.load(affine_ptr + 2)
        inv_std = tl.load(affine_ptr + 3)
        sum_g = tl.zeros([SUM_BLOCK_P], dtype=ACC)
        sum_gx = tl.zeros([SUM_BLOCK_P], dtype=ACC)
        for p0 in range(0, R, SUM_BLOCK_P):
            offs_p = p0 + tl.arange(0, SUM_BLOCK_P)
            mask_p = offs_p < R
            gt = tl.load(grad_t_ptr + b * R + offs_p, mask=mask_p, other=0.0, cache_modifier=".cg")
            u = tl.load(u_ptr + b * R + offs_p, mask=mask_p, other=0.0)
            sum_g += gt
            sum_gx += gt * ((u - mu) * inv_std)
        tl.store(part_ptr + b * 2, tl.sum(sum_g, axis=0))
        tl.store(part_ptr + b * 2 + 1, tl.sum(sum_gx, axis=0))
        tl.store(counter_ptr + b, 0)
        if last_of_sample(counter_ptr, B, B):
            total_g = acc_zero(ACC)
            total_gx = acc_zero(ACC)
            for i in range(0, B):
                total_g += tl.load(part_ptr + i * 2, cache_modifier=".cg")
                total_gx += tl.load(part_ptr + i * 2 + 1, cache_modifier=".cg")
            tl.store(sums_ptr, total_g)
            tl.store(sums_ptr + 1, total_gx)
            tl.store(gbnb_ptr, to_output(total_g, gbnb_ptr))
            tl.store(gbnw_ptr, to_output(total_gx, gbnw_ptr))
            tl.store(counter_ptr + B, 0)


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
    grad_t_ptr, u_ptr, d_ptr, affine_ptr, sums_ptr, w_ptr, sp_ptr, ties_ptr, wpart_ptr, counter_ptr, gw_ptr,
    C, H, W, N,
    D: tl.constexpr, KS: tl.constexpr, BATCH_STATS: tl.constexpr,
    ACC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """Backward, second launch, on [B, H·W] maps (w [1, D, KS, KS] contiguous, pad = (KS-1)/2):

      grad_u       = the BatchNorm's backward (:func:`bn_input_grad`; N = B·H·W)
      grad_d[ci, q] = Σ_{ky, kx} w[ci, ky, kx] · grad_u[q - (ky - pad, kx - pad)]   (zero outside)
      sp[b, 1, p]  = grad_d[0] / C,  sp[b, 2, p] = grad_d[1] / ties   (D = 2; D = 1: both halves
                     of grad_d[0], as d = 0.5 · mean + 0.5 · max)
      wpart[prog, tap] = Σ_{p in the tile} grad_u[p] · d[ci, p + (ky - pad, kx - pad)]
      grad_w[tap] = Σ_prog wpart[prog, tap] in program order, by the launch's last program

    Counter: slot 0, left at 0. Minimum bytes: grad_t, u, d, ties read; sp[1], sp[2] written
    ([B, H·W] maps, in ACC; the tile's neighbours are re-read from cache).
    Grid: one program per (b, BLOCK_P pixels); BLOCK_T ≥ D·KS·KS.
    """
    pid = tl.program_id(0)
    P = H * W
    n_blocks = tl.cdiv(P, BLOCK_P)
    b = (pid // n_blocks).to(tl.int64)
    offs_p = (pid % n_blocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs_p < P
    h = offs_p // W
    w = offs_p % W
    pad: tl.constexpr = (KS - 1) // 2
    a = tl.load(affine_ptr)
    mu = tl.load(affine_ptr + 2)
    inv_std = tl.load(affine_ptr + 3)
    mean_g = tl.load(sums_ptr) / N
    mean_gx = tl.load(sums_ptr + 1) / N
    grad_u = bn_input_grad(grad_t_ptr, u_ptr, b * P + offs_p, mask_p, a, mu, inv_std, mean_g, mean_gx, BATCH_STATS)
    grad_d0 = tl.zeros([BLOCK_P], dtype=ACC)
    grad_d1 = tl.zeros([BLOCK_P], dtype=ACC)
    for ci in tl.static_range(D):
        for ky in tl.static_range(KS):
            for kx in tl.static_range(KS):
                wt = tl.load(w_ptr + (ci * KS + ky) * KS + kx).to(ACC)
                # transposed conv: the pixel q - (ky - pad, kx - pad) that read this one
                qh = h - (ky - pad)
                qw = w - (kx - pad)
                valid = mask_p & (qh >= 0) & (qh < H) & (qw >= 0) & (qw < W)
                g_src = bn_input_grad(grad_t_ptr, u_ptr, b * P + qh * W + qw, valid, a, mu, inv_std,
                                      mean_g, mean_gx, BATCH_STATS)
                if ci == 0:
                    grad_d0 += wt * g_src
                else:
                    grad_d1 += wt * g_src
                # weight gradient: this pixel's grad_u times the input it read through this tap
                rh = h + (ky - pad)
                rw = w + (kx - pad)
                inside = mask_p & (rh >= 0) & (rh < H) & (rw >= 0) & (rw < W)
                v = tl.load(d_ptr + (b * D + ci) * P + rh * W + rw, mask=inside, other=0.0)
                tl.store(wpart_ptr + pid * BLOCK_T + (ci * KS + ky) * KS + kx, tl.sum(grad_u * v, axis=0))
    ties = tl.load(ties_ptr + b * P + offs_p, mask=mask_p, other=1).to(ACC)
    if D == 2:
        grad_mean = grad_d0 / C
        grad_max = grad_d1
    else:
        grad_mean = 0.5 * grad_d0 / C
        grad_max = 0.5 * grad_d0
    tl.store(sp_ptr + (b * 4 + 1) * P + offs_p, grad_mean, mask=mask_p)
    tl.store(sp_ptr + (b * 4 + 2) * P + offs_p, grad_max / ties, mask=mask_p)
    if last_of_sample(counter_ptr, 0, tl.num_programs(0)):
        offs_t = tl.arange(0, BLOCK_T)
        mask_t = offs_t < D * KS * KS
        total = tl.zeros([BLOCK_T], dtype=ACC)
        for q in range(0, tl.num_programs(0)):
            total += tl.load(wpart_ptr + q * BLOCK_T + offs_t, mask=mask_t, other=0.0, cache_modifier=".cg")
        tl.store(gw_ptr + offs_t, to_output(total, gw_ptr), mask=mask_t)
        tl.store(counter_ptr, 0)
