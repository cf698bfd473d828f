"""The producer BatchNorm of a block prologue with batch statistics (training): its statistics in
the forward, and the per-channel sums its backward needs.

The prologue (kernels/norm_act.py) computes x = act(z), z = c · scale + shift, where the kernels
load c, the BatchNorm's input. In training the BatchNorm normalises with the batch's statistics,
so the block's forward first runs :func:`batch_stats_fwd`, and its backward, besides
∂L/∂z = act'(z) · ∂L/∂x, needs the BatchNorm backward through those statistics:

    ∂L/∂c = w / σ · (∂L/∂z - S / N - x̂ · T / N),   x̂ = (c - μ) / σ,  N = B·H·W
    S[c]  = Σ_{b,k} ∂L/∂z = ∂L/∂bias,   T[c] = Σ_{b,k} ∂L/∂z · x̂ = ∂L/∂weight

(in eval, with running statistics, ∂L/∂c = w / σ · ∂L/∂z, and S, T are the same gradients).
With mean pooling, ∂L/∂x = d · g + grad_mean / K at every pixel (g = gate(s[b, c])), so the
backward's first pass can leave per (b, c) four sums over k — P = (Σ act'·d, Σ act', Σ act'·d·x̂,
Σ act'·x̂) — before grad_mean is known, and :func:`prologue_norm_bwd` forms S and T from them:

    S[c] = Σ_b g · P0 + grad_mean / K · P1,   T[c] = Σ_b g · P2 + grad_mean / K · P3

Both kernels sum in a fixed order (no atomics on floats): bitwise repeatable.
"""
import triton
import triton.language as tl

from .excitation import last_of_sample
from .gates import gate_value
from .mean_max import chan_combine
from .program_tiles import row_block
from .rounding import to_output
from .tiling import ROW_TILES, oriented_configs

#: batch_stats_fwd loops over K; its workspace row per (b, channel) is written once and its
#: counters are left at 0, so a config can be re-run on the real arguments.
BATCH_STATS_FWD_CONFIGS = oriented_configs(ROW_TILES, num_warps=(2, 4, 8), num_stages=(1, 2, 3))
#: channels per program of prologue_norm_bwd (it loops over the batch)
PROLOGUE_NORM_BWD_BLOCK_C = 128


@triton.jit
def batch_stats_fwd(
    x_ptr, part_ptr, stats_ptr, counter_ptr,
    B, R, K,
    sxb, sxr, sxk,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Per channel (R = C, K = H×W): the batch mean, biased and unbiased variance of x into
    stats [3, C] (ACC).

    Each program (b, BLOCK_R channels) folds its tiles into (mean, M2) by Chan's update
    (mean_max.chan_combine) and stores them in part [B, 2, C]; the last program of each channel
    block (a ticket on counter[channel block], excitation.last_of_sample) combines the B samples
    in sample order, writes stats, and resets its counter.
    Minimum bytes: x read once + part [B, 2, C] written and read + stats [3, C] written.
    Grid: rows_grid — one program per (b, BLOCK_R channels) looping over K.
    """
    b, offs_r = row_block(R, BLOCK_R)
    mask_r = offs_r < R
    r64 = offs_r.to(tl.int64)
    n = tl.zeros([BLOCK_R], dtype=ACC)
    mean = tl.zeros([BLOCK_R], dtype=ACC)
    m2 = tl.zeros([BLOCK_R], dtype=ACC)
    for start in range(0, K, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mask = mask_r[:, None] & (offs_k < K)[None, :]
        v = tl.load(x_ptr + b * sxb + r64[:, None] * sxr + offs_k.to(tl.int64)[None, :] * sxk, mask=mask,
                    other=0.0).to(ACC)
        n_t = tl.minimum(K - start, BLOCK_K).to(ACC)
        mean_t = tl.sum(v, axis=1) / n_t
        dev = tl.where(mask, v - mean_t[:, None], 0.0)
        n, mean, m2 = chan_combine(n, mean, m2, n_t, mean_t, tl.sum(dev * dev, axis=1))
    tl.store(part_ptr + b * 2 * R + r64, mean, mask=mask_r)
    tl.store(part_ptr + b * 2 * R + R + r64, m2, mask=mask_r)
    block = tl.program_id(0) % tl.cdiv(R, BLOCK_R)
    if last_of_sample(counter_ptr, block, B):
        n = tl.zeros([BLOCK_R], dtype=ACC)
        mean = tl.zeros([BLOCK_R], dtype=ACC)
        m2 = tl.zeros([BLOCK_R], dtype=ACC)
        for i in range(0, B):
            mean_i = tl.load(part_ptr + i * 2 * R + r64, mask=mask_r, other=0.0, cache_modifier=".cg")
            m2_i = tl.load(part_ptr + i * 2 * R + R + r64, mask=mask_r, other=0.0, cache_modifier=".cg")
            n, mean, m2 = chan_combine(n, mean, m2, tl.zeros([BLOCK_R], dtype=ACC) + K, mean_i, m2_i)
        tl.store(stats_ptr + r64, mean, mask=mask_r)
        tl.store(stats_ptr + R + r64, m2 / n, mask=mask_r)
        tl.store(stats_ptr + 2 * R + r64, m2 / tl.maximum(n - 1.0, 1.0), mask=mask_r)
        tl.store(counter_ptr + block, 0)


@triton.jit
def prologue_norm_bwd(
    s_ptr, grad_mean_ptr, psum_ptr, sums_ptr, gw_ptr, gb_ptr,
    B, C, K,
    GATE: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """S[c] and T[c] (module docstring) into sums [2, C] (ACC) for the block's last backward
    kernel, and the BatchNorm's grad_bias = S, grad_weight = T in the parameters' dtype.
    psum [B, 4, C]: the backward's first pass's per-(b, c) sums P; s, grad_mean [B, C].
    Minimum bytes: psum, s and grad_mean read (6·B·C·ACC) + sums and the two gradients written.
    Grid: one program per BLOCK_C channels, looping over b in order.
    """
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    total = tl.zeros([BLOCK_C], dtype=ACC)
    total_hat = tl.zeros([BLOCK_C], dtype=ACC)
    for b in range(0, B):
        g = gate_value(tl.load(s_ptr + b * C + offs_c, mask=mask_c, other=0.0), GATE)
        gm = tl.load(grad_mean_ptr + b * C + offs_c, mask=mask_c, other=0.0) / K
        base = psum_ptr + b * 4 * C + offs_c
        total += g * tl.load(base, mask=mask_c, other=0.0) + gm * tl.load(base + C, mask=mask_c, other=0.0)
        total_hat += g * tl.load(base + 2 * C, mask=mask_c, other=0.0) + gm * tl.load(base + 3 * C, mask=mask_c, other=0.0)
    tl.store(sums_ptr + offs_c, total, mask=mask_c)
    tl.store(sums_ptr + C + offs_c, total_hat, mask=mask_c)
    tl.store(gb_ptr + offs_c, to_output(total, gb_ptr), mask=mask_c)
    tl.store(gw_ptr + offs_c, to_output(total_hat, gw_ptr), mask=mask_c)
