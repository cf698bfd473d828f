"""CBAM's spatial half on the channel-gated map, in inference: z = x · gate_c(s_c[b, c]) is never
written.

  gated_spatial_pool_fwd   per pixel p of sample b: mean_c z and max_c z (CBAM) or their average
                           (light CBAM) → the descriptor map d [B, D, H·W]; then the sample's last
                           program (kernels/excitation.py's per-sample counter) computes the k×k
                           conv of d (zero padding (k-1)/2, no bias) and the eval BatchNorm
                           (t = (conv - mean) · weight / sqrt(var + eps) + bias) → t [B, H·W]
  doubly_gated_scale_fwd   y = x · gate_c(s_c[b, c]) · gate_s(t[b, p])

With squeeze_excite_fwd (s_c) that is CBAM's eval forward in 3 kernels and 4 passes over
x-sized tensors (x read three times, y written). z is rounded to x's dtype before it is pooled,
as eager's materialised x · gate does; d, t and s_c stay in ACC (float32; float64 for float64 x).
"""
import triton
import triton.language as tl

from .excitation import last_of_sample
from .gates import gate_value
from .mean_max import pool_start, pool_tile, pooled_max
from .program_tiles import elementwise_tile, row_block
from .rounding import to_output
from .tiling import ELEMENTWISE_TILES, ROW_TILES, oriented_configs

#: gated_spatial_pool_fwd loops over C; the conv's tile (CONV_BLOCK_P pixels) is set by the problem.
GATED_SPATIAL_POOL_FWD_CONFIGS = oriented_configs(ROW_TILES, num_warps=(2, 4, 8), num_stages=(1, 2, 3))
#: doubly_gated_scale_fwd: one tile per program.
DOUBLY_GATED_SCALE_FWD_CONFIGS = oriented_configs(ELEMENTWISE_TILES, num_warps=(2, 4, 8), num_stages=(1,))


@triton.jit
def sample_spatial_logits(
    b, d_ptr, t_ptr, w_ptr, bnw_ptr, bnb_ptr, bnm_ptr, bnv_ptr, H, W, bn_eps,
    D: tl.constexpr, KS: tl.constexpr, ACC: tl.constexpr, CONV_BLOCK_P: tl.constexpr,
):
    """t[b, :] = bn(conv(d[b])) for one sample: w [1, D, KS, KS] contiguous, the BatchNorm's one
    channel of weight, bias, running mean and variance; Σ over (D, KS, KS) in a fixed order."""
    P = H * W
    pad: tl.constexpr = (KS - 1) // 2
    scale = tl.load(bnw_ptr).to(ACC) / tl.sqrt(tl.load(bnv_ptr).to(ACC) + bn_eps)
    shift = tl.load(bnb_ptr).to(ACC) - tl.load(bnm_ptr).to(ACC) * scale
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
        tl.store(t_ptr + b * P + offs_p, acc * scale + shift, mask=mask_p)


@triton.jit
def gated_spatial_pool_fwd(
    x_ptr, s_ptr, d_ptr, t_ptr, counter_ptr, w_ptr, bnw_ptr, bnb_ptr, bnm_ptr, bnv_ptr,
    R, K, H, W, bn_eps,
    sxb, sxr, sxk,
    GATE: tl.constexpr, D: tl.constexpr, KS: tl.constexpr,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, CONV_BLOCK_P: tl.constexpr,
):
    """The spatial descriptor of z = x · gate(s[b, k]) and its conv + eval BatchNorm (R = H·W
    pixels, K = C channels; s [B, C] contiguous):

      D = 2: d[b, 0, p] = Σ_c z / C, d[b, 1, p] = max_c z         (CBAM)
      D = 1: d[b, 0, p] = 0.5 · Σ_c z / C + 0.5 · max_c z          (light CBAM)
      t[b, :] = bn(conv(d[b]))  by the sample's last program        (sample_spatial_logits)

    Minimum bytes: x read + s read + d written (ACC) + t written (ACC).
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
        z = to_output(x * g[None, :], x_ptr).to(ACC)  # eager materialises x · gate in x's dtype
        total, run_max, run_count, has_nan = pool_tile(z, mask, total, run_max, run_count, has_nan, True, True)
    mean = total / K
    maximum = pooled_max(run_max, has_nan)
    if D == 2:
        tl.store(d_ptr + (b * 2) * R + r64, mean, mask=mask_r)
        tl.store(d_ptr + (b * 2 + 1) * R + r64, maximum, mask=mask_r)
    else:
        tl.store(d_ptr + b * R + r64, 0.5 * mean + 0.5 * maximum, mask=mask_r)
    if last_of_sample(counter_ptr, b, tl.cdiv(R, BLOCK_R)):
        sample_spatial_logits(b, d_ptr, t_ptr, w_ptr, bnw_ptr, bnb_ptr, bnm_ptr, bnv_ptr, H, W, bn_eps,
                              D, KS, ACC, CONV_BLOCK_P)
        tl.store(counter_ptr + b, 0)


@triton.jit
def doubly_gated_scale_fwd(
    x_ptr, s_ptr, t_ptr, y_ptr,
    R, K,
    sxb, sxr, sxk,
    syb, syr, syk,
    GATE_C: tl.constexpr, GATE_S: tl.constexpr,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y[b, c, p] = x · gate_c(s[b, c]) · gate_s(t[b, p])  (R = C, K = H·W; s [B, C], t [B, H·W]
    contiguous, in ACC). Minimum bytes: x read + y written + s and t read.
    Grid: elementwise_grid — one program per (b, row block, column block)."""
    b, offs_r, offs_k = elementwise_tile(R, K, BLOCK_R, BLOCK_K)
    mask_r = offs_r < R
    mask_k = offs_k < K
    mask = mask_r[:, None] & mask_k[None, :]
    r64 = offs_r.to(tl.int64)
    k64 = offs_k.to(tl.int64)[None, :]
    g_c = gate_value(tl.load(s_ptr + b * R + r64, mask=mask_r, other=0.0), GATE_C)
    g_s = gate_value(tl.load(t_ptr + b * K + offs_k, mask=mask_k, other=0.0), GATE_S)
    x = tl.load(x_ptr + b * sxb + r64[:, None] * sxr + k64 * sxk, mask=mask, other=0.0).to(ACC)
    # z = x · g_c rounded to x's dtype, as in gated_spatial_pool_fwd and in eager
    z = to_output(x * g_c[:, None], x_ptr).to(ACC)
    tl.store(y_ptr + b * syb + r64[:, None] * syr + k64 * syk, to_output(z * g_s[None, :], y_ptr), mask=mask)
