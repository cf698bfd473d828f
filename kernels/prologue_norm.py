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

Both kernels sum in a fixed order (no atomics on floats): bitwise repeatable. Neither has a loop
over the batch: :func:`batch_stats_fwd` spreads (sample, pixel chunk, channel block) over its
programs and merges their partials with tile loads of many rows at once; :func:`prologue_norm_bwd`
reads a [BLOCK_B samples, BLOCK_C channels] tile per memory instruction (launch.py sizes BLOCK_B to
the batch, up to 256, so a program's memory instructions do not grow with B up to there).
"""
import triton
import triton.language as tl

from .excitation import last_of_sample
from .gates import gate_value
from .mean_max import chan_combine
from .rounding import to_output


@triton.jit
def _chunk_moments(x_ptr, b, offs_r, mask_r, k0, k1, sxb, sxr, sxk,
                   ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """(mean, M2) [BLOCK_R] of x[b, offs_r, k0:k1] in ACC: each BLOCK_K tile's mean and squared
    deviations, folded in order by Chan's update (mean_max.chan_combine)."""
    n = tl.zeros([BLOCK_R], dtype=ACC)
    mean = tl.zeros([BLOCK_R], dtype=ACC)
    m2 = tl.zeros([BLOCK_R], dtype=ACC)
    rows = x_ptr + b * sxb + offs_r.to(tl.int64)[:, None] * sxr
    for start in range(k0, k1, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mask = mask_r[:, None] & (offs_k < k1)[None, :]
        v = tl.load(rows + offs_k.to(tl.int64)[None, :] * sxk, mask=mask, other=0.0).to(ACC)
        n_t = tl.minimum(k1 - start, BLOCK_K).to(ACC)
        mean_t = tl.sum(v, axis=1) / n_t
        dev = tl.where(mask, v - mean_t[:, None], 0.0)
        n, mean, m2 = chan_combine(n, mean, m2, n_t, mean_t, tl.sum(dev * dev, axis=1))
    return mean, m2


@triton.jit
def _values_before(r, K, KC, NK):
    """How many values of x's channel the partial rows [0, r) hold (row b·NK + kc: the kc-th
    chunk of KC pixels of sample b, the last chunk of a sample shorter): (r // NK)·K + (r % NK)·KC."""
    r = r.to(tl.int64)
    return (r // NK) * K + (r % NK) * KC


@triton.jit
def _merge(part_ptr, first, n_entries, row0, unit, offs_r, mask_r, C, K, KC, NK, ROWS,
           ACC: tl.constexpr, BLOCK_R: tl.constexpr, MERGE_ROWS: tl.constexpr):
    """(n, mean, M2) [BLOCK_R] of the n_entries (mean, M2) pairs at part rows first … first +
    n_entries - 1 (part [*, 2, C]), entry e summarising the partial rows [row0 + e·unit,
    min(row0 + (e + 1)·unit, ROWS)) (unit 1: a row itself; unit MERGE_ROWS: a group of rows):
    MERGE_ROWS entries per load (a tile of means, one of M2), each tile merged at once (n_t =
    Σ n_e, mean_t = Σ n_e·mean_e / n_t, M2_t = Σ M2_e + Σ n_e·(mean_e - mean_t)²), the tiles
    folded in order by Chan's update."""
    n = tl.zeros([BLOCK_R], dtype=ACC)
    mean = tl.zeros([BLOCK_R], dtype=ACC)
    m2 = tl.zeros([BLOCK_R], dtype=ACC)
    for e0 in range(0, n_entries, MERGE_ROWS):
        e = e0 + tl.arange(0, MERGE_ROWS)
        mask_e = e < n_entries
        mask = mask_e[:, None] & mask_r[None, :]
        ptrs = part_ptr + (first + e).to(tl.int64)[:, None] * (2 * C) + offs_r[None, :]
        mean_e = tl.load(ptrs, mask=mask, other=0.0, cache_modifier=".cg")
        m2_e = tl.load(ptrs + C, mask=mask, other=0.0, cache_modifier=".cg")
        start = row0 + e * unit  # the entry's first partial row
        n_e = _values_before(tl.minimum(start + unit, ROWS), K, KC, NK) - _values_before(start, K, KC, NK)
        n_e = tl.where(mask_e, n_e, 0).to(ACC)
        n_t = tl.sum(n_e, axis=0)
        mean_t = tl.sum(n_e[:, None] * mean_e, axis=0) / n_t
        dev = mean_e - mean_t[None, :]
        m2_t = tl.sum(m2_e + n_e[:, None] * dev * dev, axis=0)
        n, mean, m2 = chan_combine(n, mean, m2, n_t, mean_t, m2_t)
    return n, mean, m2


@triton.jit
def _store_stats(stats_ptr, offs_r, mask_r, C, n, mean, m2):
    """stats [3, C]: the mean, the biased and the unbiased variance."""
    tl.store(stats_ptr + offs_r, mean, mask=mask_r)
    tl.store(stats_ptr + C + offs_r, m2 / n, mask=mask_r)
    tl.store(stats_ptr + 2 * C + offs_r, m2 / tl.maximum(n - 1.0, 1.0), mask=mask_r)


@triton.jit
def batch_stats_fwd(
    x_ptr, part_ptr, stats_ptr, counter_ptr,
    C, K, KC, NK, ROWS,
    sxb, sxr, sxk,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, MERGE_ROWS: tl.constexpr,
):
    """Per channel (R = C, K = H×W): the batch mean, biased and unbiased variance of x into
    stats [3, C] (ACC), by a two-level tree of tickets (excitation.last_of_sample).

    Program (row, channel block), row = b·NK + kc (ROWS = B·NK rows): the mean and M2 of its
    BLOCK_R channels over the kc-th chunk of KC pixels of sample b (≤ KC / BLOCK_K tiles, folded
    by Chan's update), stored to part[row] (part [ROWS (+ NG), 2, C], NG = cdiv(ROWS, MERGE_ROWS)).
    The rows form NG groups of MERGE_ROWS; a ticket on the group's counter slot (NCB + g·NCB +
    block, NCB = cdiv(C, BLOCK_R)): the group's last program merges its ≤ MERGE_ROWS partials
    (:func:`_merge`: one load of means, one of M2). With one group it writes stats; else it stores
    the group's (mean, M2) to part[ROWS + g] and draws a ticket on slot ``block``: the last group
    merges the NG group partials (MERGE_ROWS per load) and writes stats. Each last program resets
    its slot to 0. The counts are known from the indices (:func:`_values_before`), never stored.
    Minimum bytes: x read once + the partials [ROWS (+ NG), 2, C] written and read + stats [3, C]
    written. Grid: ROWS · NCB programs (channel block fastest). The longest program: ≤ KC / BLOCK_K
    tile loads, 2 stores, its ticket, then 2 loads + 2 stores + a ticket + 2·cdiv(NG, MERGE_ROWS)
    loads + 5 stores — constant in B while NG ≤ MERGE_ROWS (B·NK ≤ MERGE_ROWS², ≥ 4096 rows).
    Counter slots: NCB · (1 + NG), left at 0.
    """
    pid = tl.program_id(0)
    n_cblocks = tl.cdiv(C, BLOCK_R)
    block = pid % n_cblocks
    row = (pid // n_cblocks).to(tl.int64)
    offs_r = block * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = offs_r < C
    k0 = (row % NK) * KC
    mean, m2 = _chunk_moments(x_ptr, row // NK, offs_r, mask_r, k0, tl.minimum(k0 + KC, K), sxb, sxr, sxk,
                              ACC, BLOCK_R, BLOCK_K)
    tl.store(part_ptr + row * 2 * C + offs_r, mean, mask=mask_r)
    tl.store(part_ptr + row * 2 * C + C + offs_r, m2, mask=mask_r)
    n_groups = tl.cdiv(ROWS, MERGE_ROWS)
    group = row // MERGE_ROWS
    slot = n_cblocks + group * n_cblocks + block
    if last_of_sample(counter_ptr, slot, tl.minimum(ROWS - group * MERGE_ROWS, MERGE_ROWS)):
        first = group * MERGE_ROWS
        n, mean, m2 = _merge(part_ptr, first, tl.minimum(ROWS - first, MERGE_ROWS), first, 1, offs_r, mask_r,
                             C, K, KC, NK, ROWS, ACC, BLOCK_R, MERGE_ROWS)
        if n_groups == 1:
            _store_stats(stats_ptr, offs_r, mask_r, C, n, mean, m2)
        else:
            tl.store(part_ptr + (ROWS + group) * 2 * C + offs_r, mean, mask=mask_r)
            tl.store(part_ptr + (ROWS + group) * 2 * C + C + offs_r, m2, mask=mask_r)
            if last_of_sample(counter_ptr, block, n_groups):
                n, mean, m2 = _merge(part_ptr, ROWS, n_groups, 0, MERGE_ROWS, offs_r, mask_r, C, K, KC, NK, ROWS,
                                     ACC, BLOCK_R, MERGE_ROWS)
                _store_stats(stats_ptr, offs_r, mask_r, C, n, mean, m2)
                tl.store(counter_ptr + block, 0)
        tl.store(counter_ptr + slot, 0)


@triton.jit
def prologue_norm_bwd(
    s_ptr, grad_mean_ptr, psum_ptr, sums_ptr, gw_ptr, gb_ptr,
    B, C, K,
    GATE: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """S[c] and T[c] (module docstring) into sums [2, C] (ACC) for the block's last backward
    kernel, and the BatchNorm's grad_bias = S, grad_weight = T in the parameters' dtype.
    psum [B, 4, C]: the backward's first pass's per-(b, c) sums P; s, grad_mean [B, C].
    Minimum bytes: psum, s and grad_mean read (6·B·C·ACC) + sums and the two gradients written.
    Grid: one program per BLOCK_C channels; it reads [BLOCK_B, BLOCK_C] tiles (six per step: s,
    grad_mean, P0…P3), cdiv(B, BLOCK_B) steps in sample order, each summed over its samples at
    once: the longest program issues 6·cdiv(B, BLOCK_B) loads + 4 stores.
    """
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    total = tl.zeros([BLOCK_C], dtype=ACC)
    total_hat = tl.zeros([BLOCK_C], dtype=ACC)
    for b0 in range(0, B, BLOCK_B):
        offs_b = (b0 + tl.arange(0, BLOCK_B)).to(tl.int64)
        mask = (offs_b < B)[:, None] & mask_c[None, :]
        bc = offs_b[:, None] * C + offs_c[None, :]
        g = gate_value(tl.load(s_ptr + bc, mask=mask, other=0.0), GATE)
        gm = tl.load(grad_mean_ptr + bc, mask=mask, other=0.0) / K
        base = psum_ptr + offs_b[:, None] * (4 * C) + offs_c[None, :]
        p0 = tl.load(base, mask=mask, other=0.0)
        p1 = tl.load(base + C, mask=mask, other=0.0)
        p2 = tl.load(base + 2 * C, mask=mask, other=0.0)
        p3 = tl.load(base + 3 * C, mask=mask, other=0.0)
        total += tl.sum(g * p0 + gm * p1, axis=0)
        total_hat += tl.sum(g * p2 + gm * p3, axis=0)
    tl.store(sums_ptr + offs_c, total, mask=mask_c)
    tl.store(sums_ptr + C + offs_c, total_hat, mask=mask_c)
    tl.store(gb_ptr + offs_c, to_output(total, gb_ptr), mask=mask_c)
    tl.store(gw_ptr + offs_c, to_output(total_hat, gw_ptr), mask=mask_c)
