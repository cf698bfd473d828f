"""Softmax-weighted ("context") pooling over H×W, GCNet's global context, and its backward.

Per sample b, with x[b, c, p] over the P = H·W pixels p (x_ptr + b·sxb + c·sxc + p·sxp, so
NCHW and channels_last are read in place) and the 1×1 conv to one channel, weight w [C]:

    logit[b, p] = Σ_c w[c] · x[b, c, p]            (+ the conv's bias, which softmax ignores)
    α[b, p]     = exp(logit[b, p] - M[b]) / L[b],  M[b] = max_p logit, L[b] = Σ_p exp(logit - M)
    ctx[b, c]   = Σ_p α[b, p] · x[b, c, p]

Backward, given dctx [B, C]:

    dα[b, p]     = Σ_c dctx[b, c] · x[b, c, p],   k[b] = Σ_p α · dα = Σ_c dctx[b, c] · ctx[b, c]
    dlogit[b, p] = α[b, p] · (dα[b, p] - k[b])
    grad_x       = α[b, p] · dctx[b, c] + dlogit[b, p] · w[c]
    grad_w[c]    = Σ_b Σ_p dlogit[b, p] · x[b, c, p],   grad_bias = Σ_b Σ_p dlogit (0 up to rounding)

The bias shifts every logit of a sample alike, so α does not depend on it and no kernel reads it.

Every kernel works on a program's block of BLOCK_P pixels of one sample and loops over C in
BLOCK_C steps, twice: once to form the pixels' logits, once more — the tile is then in L1/L2, a
program's footprint being C·BLOCK_P elements (launch.py sizes BLOCK_P for that) — to use them.
So x comes from HBM once per kernel. Softmax is stable as in flash-decoding: each program keeps
its own max m and sum l = Σ exp(logit - m); context_pool_combine merges them exactly, a tile of
BLOCK_NP partials per step (no program walks a sample's partials one by one).
Accumulation in ACC (float32; float64 for float64 x), one rounding per stored output; every sum
runs in a fixed order, without atomics: results are bitwise repeatable.

For inference, context_pool_combine_mlp replaces the combine: it merges the partials into an
ACC workspace, and each sample's last program (a ticket on a per-sample int32 counter, as in
kernels/excitation.py) then runs GCNet's MLPs W2 · act(LayerNorm(W1 · ctx + b1)) + b2 on the
complete context, so no torch op runs between the two launches and the scaling.

The tile is part of the algorithm (the workspaces have one row per program, and the backward
must recompute the forward's logits bit for bit), so the kernels run with one config
(launch.py: FixedConfig, BLOCK_P and BLOCK_C from the problem), not a tuned one.
"""
import triton
import triton.language as tl

from .excitation import hidden_pre_activation, last_of_sample
from .norm_act import activation
from .rounding import to_output


@triton.jit
def _pixel_block(P, BLOCK_P: tl.constexpr):
    """(b as int64, the program's index i among its sample's pixel blocks, its BLOCK_P pixels)."""
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(P, BLOCK_P)
    i = pid % n_blocks
    return (pid // n_blocks).to(tl.int64), i, i * BLOCK_P + tl.arange(0, BLOCK_P)


@triton.jit
def context_pool_partials(
    x_ptr, w_ptr, part_ptr, pstats_ptr,
    C, P,
    sxb, sxc, sxp,
    ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Forward, first launch: per (b, block i of BLOCK_P pixels), over its pixels p,

      logit[p]        = Σ_c w[c] · x[b, c, p]                       (first loop over C)
      m_i = max_p logit,  l_i = Σ_p exp(logit - m_i)                → pstats[b·NP + i] = (m_i, l_i)
      part[b·NP + i, c] = Σ_p exp(logit[p] - m_i) · x[b, c, p]      (second loop over C)

    NP = cdiv(P, BLOCK_P). Reads x once from HBM (the second loop re-reads the program's
    C × BLOCK_P tile from cache) and w; writes the ACC workspaces part [B·NP, C] (contiguous)
    and pstats [B·NP, 2]. Minimum bytes: B·C·P·itemsize read + B·NP·(C + 2)·sizeof(ACC) written.
    Grid: one program per (b, pixel block), B·NP programs, all alike: 4·cdiv(C, BLOCK_C) + 2 memory
    instructions (launch.context_pool_tile keeps cdiv(C, BLOCK_C) ≤ 2 where BLOCK_P ≥ 16 allows).
    """
    b, i, offs_p = _pixel_block(P, BLOCK_P)
    mask_p = offs_p < P
    cols = offs_p.to(tl.int64)[None, :] * sxp
    x_base = x_ptr + b * sxb
    logit = tl.zeros([BLOCK_P], dtype=ACC)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        mask = mask_c[:, None] & mask_p[None, :]
        x = tl.load(x_base + offs_c.to(tl.int64)[:, None] * sxc + cols, mask=mask, other=0.0).to(ACC)
        w = tl.load(w_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
        logit += tl.sum(w[:, None] * x, axis=0)
    logit = tl.where(mask_p, logit, float("-inf"))
    m = tl.max(logit, axis=0)
    e = tl.where(mask_p, tl.exp(logit - m), 0.0)
    row = b * tl.cdiv(P, BLOCK_P) + i
    tl.store(pstats_ptr + row * 2, m)
    tl.store(pstats_ptr + row * 2 + 1, tl.sum(e, axis=0))
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        mask = mask_c[:, None] & mask_p[None, :]
        x = tl.load(x_base + offs_c.to(tl.int64)[:, None] * sxc + cols, mask=mask, other=0.0).to(ACC)
        tl.store(part_ptr + row * C + offs_c, tl.sum(x * e[None, :], axis=1), mask=mask_c)


@triton.jit
def _channel_block(C, BLOCK_C: tl.constexpr):
    """(b as int64, the program's channel block, its BLOCK_C channels, their mask): the combine's grid."""
    pid = tl.program_id(0)
    n_cblocks = tl.cdiv(C, BLOCK_C)
    cblock = pid % n_cblocks
    offs_c = cblock * BLOCK_C + tl.arange(0, BLOCK_C)
    return (pid // n_cblocks).to(tl.int64), cblock, offs_c, offs_c < C


@triton.jit
def _merge_partials(part_ptr, pstats_ptr, b, offs_c, mask_c, C, NP,
                    ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_NP: tl.constexpr):
    """(ctx [BLOCK_C], M, L) of sample b at channels offs_c: the merge of its NP partials,
    BLOCK_NP of them per step (one [BLOCK_NP, BLOCK_C] tile of part and the BLOCK_NP (m_i, l_i),
    three loads), the steps in order with a running max (context_pool_combine's docstring)."""
    acc = tl.zeros([BLOCK_C], dtype=ACC)
    run_m = tl.max(tl.full([BLOCK_NP], float("-inf"), dtype=ACC), axis=0)  # scalars: -inf, 0
    run_l = tl.sum(tl.zeros([BLOCK_NP], dtype=ACC), axis=0)
    for i0 in range(0, NP, BLOCK_NP):
        offs_i = i0 + tl.arange(0, BLOCK_NP)
        mask_i = offs_i < NP
        rows = b * NP + offs_i
        m_i = tl.load(pstats_ptr + rows * 2, mask=mask_i, other=float("-inf"))
        l_i = tl.load(pstats_ptr + rows * 2 + 1, mask=mask_i, other=0.0)
        part = tl.load(part_ptr + rows[:, None] * C + offs_c[None, :], mask=mask_i[:, None] & mask_c[None, :],
                       other=0.0)
        new_m = tl.maximum(run_m, tl.max(m_i, axis=0))
        old_scale = tl.exp(run_m - new_m)  # 0 on the first step (run_m = -inf)
        new_scale = tl.exp(m_i - new_m)  # 0 where masked (m_i = -inf)
        acc = acc * old_scale + tl.sum(part * new_scale[:, None], axis=0)
        run_l = run_l * old_scale + tl.sum(l_i * new_scale, axis=0)
        run_m = new_m
    return acc / run_l, run_m, run_l


@triton.jit
def context_pool_combine(
    part_ptr, pstats_ptr, ctx_ptr, stats_ptr,
    C, NP,
    scb, scc,
    ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_NP: tl.constexpr,
):
    """Forward, second launch: per (b, block of BLOCK_C channels), the merge of the sample's NP
    partials, BLOCK_NP per step (:func:`_merge_partials`), the steps in order with a running max
    (rescaling what was summed before):

      M = max_i m_i,  L = Σ_i l_i · e^{m_i - M},  ctx[b, c] = Σ_i part[b·NP + i, c] · e^{m_i - M} / L

    Writes ctx [B, C] (x's dtype, strides scb, scc) and stats [B, C + 2] (ACC, contiguous):
    stats[b, 0] = M, stats[b, 1] = L (by the sample's first program), stats[b, 2 + c] = ctx
    unrounded (the backward's k = Σ_c dctx · ctx). Minimum bytes: the workspaces read,
    B·NP·(C + 2)·sizeof(ACC), + B·C·itemsize + B·(C + 2)·sizeof(ACC) written.
    Grid: one program per (b, channel block), B·cdiv(C, BLOCK_C) programs; each issues
    3·cdiv(NP, BLOCK_NP) loads and 2 stores (+ 2 by the sample's first): no program is longer
    than another by more than those two, and none grows with B.
    """
    b, cblock, offs_c, mask_c = _channel_block(C, BLOCK_C)
    ctx, run_m, run_l = _merge_partials(part_ptr, pstats_ptr, b, offs_c, mask_c, C, NP, ACC, BLOCK_C, BLOCK_NP)
    tl.store(ctx_ptr + b * scb + offs_c.to(tl.int64) * scc, to_output(ctx, ctx_ptr), mask=mask_c)
    tl.store(stats_ptr + b * (C + 2) + 2 + offs_c, ctx, mask=mask_c)
    if cblock == 0:
        tl.store(stats_ptr + b * (C + 2), run_m)
        tl.store(stats_ptr + b * (C + 2) + 1, run_l)


@triton.jit
def layer_norm_mlp(
    b, ctx_ptr, w1_ptr, b1_ptr, lnw_ptr, lnb_ptr, w2_ptr, b2_ptr, out_ptr,
    C, RD, eps, sw1j, sw1c, sw2c, sw2j,
    ACT: tl.constexpr, ACC: tl.constexpr, BLOCK_J: tl.constexpr, MLP_BLOCK_C: tl.constexpr,
):
    """out[b, :] = W2 · act(LayerNorm(W1 · ctx[b] + b1)) + b2 for one sample (timm's ConvMlp with
    LayerNorm2d in eval), ctx_ptr the complete [B, C] ACC vector; fixed-order sums in ACC:

      h = W1 · ctx + b1 [RD],  μ = Σ_j h / RD,  var = Σ_j (h - μ)² / RD (biased, as F.layer_norm)
      a = act((h - μ) · 1/sqrt(var + eps) · ln_w + ln_b),  out = W2 · a + b2 [C]
    """
    offs_j = tl.arange(0, BLOCK_J)
    mask_j = offs_j < RD
    h, _ = hidden_pre_activation(b, ctx_ptr, ctx_ptr, w1_ptr, b1_ptr, C, RD, sw1j, sw1c,
                                 "mean", True, ACC, BLOCK_J, MLP_BLOCK_C)
    mu = tl.sum(tl.where(mask_j, h, 0.0), axis=0) / RD
    d = tl.where(mask_j, h - mu, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=0) / RD + eps)
    ln_w = tl.load(lnw_ptr + offs_j, mask=mask_j, other=0.0).to(ACC)
    ln_b = tl.load(lnb_ptr + offs_j, mask=mask_j, other=0.0).to(ACC)
    a = tl.where(mask_j, activation(d * rstd * ln_w + ln_b, ACT), 0.0)
    for c0 in range(0, C, MLP_BLOCK_C):
        offs_c = c0 + tl.arange(0, MLP_BLOCK_C)
        mask_c = offs_c < C
        w2 = tl.load(w2_ptr + offs_c[:, None] * sw2c + offs_j[None, :] * sw2j,
                     mask=mask_c[:, None] & mask_j[None, :], other=0.0).to(ACC)
        out = tl.sum(w2 * a[None, :], axis=1) + tl.load(b2_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
        tl.store(out_ptr + b * C + offs_c, out, mask=mask_c)


@triton.jit
def context_pool_combine_mlp(
    part_ptr, pstats_ptr, ctx_ptr, counter_ptr,
    sw1_ptr, sb1_ptr, slnw_ptr, slnb_ptr, sw2_ptr, sb2_ptr, s_ptr,
    aw1_ptr, ab1_ptr, alnw_ptr, alnb_ptr, aw2_ptr, ab2_ptr, t_ptr,
    C, NP, RD_S, RD_A, eps_s, eps_a,
    ssw1j, ssw1c, ssw2c, ssw2j,
    asw1j, asw1c, asw2c, asw2j,
    HAS_SCALE: tl.constexpr, HAS_ADD: tl.constexpr, ACT: tl.constexpr,
    ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_NP: tl.constexpr, BLOCK_J: tl.constexpr,
    MLP_BLOCK_C: tl.constexpr,
):
    """Forward for inference, second launch: context_pool_combine's merge, then GCNet's MLPs.

    Per (b, block of BLOCK_C channels): ctx[b, c] = Σ_i part[b·NP + i, c] · e^{m_i - M} / L as in
    context_pool_combine, stored to the ACC workspace ctx [B, C] (contiguous); then a ticket from
    the int32 counter of sample b (excitation.last_of_sample): the sample's last program reads the
    complete ctx[b] back (in a fixed order: bitwise repeatable) and computes, for each MLP present
    (:func:`layer_norm_mlp`; weights W1 [RD, C], b1 [RD], ln_w, ln_b [RD], W2 [C, RD], b2 [C],
    read with their strides in their own dtype),

      HAS_SCALE:  s[b, :] = mlp_scale(ctx[b])   (the gate's logits)      → s [B, C] (ACC, contiguous)
      HAS_ADD:    t[b, :] = mlp_add(ctx[b])                              → t [B, C] (ACC, contiguous)

    having reset the counter to 0 (for the next launch) first. No stats for a backward: inference only.
    Reads the workspaces part, pstats and ctx back; writes ctx, s and / or t. Minimum bytes:
    B·NP·(C + 2)·sizeof(ACC) read + B·C·sizeof(ACC)·(1 + n_mlp) written + B·C·sizeof(ACC) read
    back (ctx, by the last programs) + the MLPs' weights, n_mlp·(2·RD·C + 3·RD + C)·w_itemsize,
    once per sample (from L2 after the first; count them once per block, as the SE pipeline).
    Grid: one program per (b, channel block), B·cdiv(C, BLOCK_C) programs; the MLP's weight tile
    BLOCK_J × MLP_BLOCK_C (BLOCK_J ≥ max(RD_S, RD_A)). Every program issues 3·cdiv(NP, BLOCK_NP)
    loads, a store and its ticket; a sample's last adds each MLP's 5·cdiv(C, MLP_BLOCK_C) + 3
    memory instructions (W1 and ctx tiles; b1, ln_w, ln_b; W2 and b2 tiles and the output): a tail
    that grows with C·RD, not with B — the op takes this path only where the model says it is the
    faster one (tritattn/context_cost.py).
    """
    b, cblock, offs_c, mask_c = _channel_block(C, BLOCK_C)
    ctx, run_m, run_l = _merge_partials(part_ptr, pstats_ptr, b, offs_c, mask_c, C, NP, ACC, BLOCK_C, BLOCK_NP)
    tl.store(ctx_ptr + b * C + offs_c, ctx, mask=mask_c)
    if last_of_sample(counter_ptr, b, tl.cdiv(C, BLOCK_C)):
        tl.store(counter_ptr + b, 0)  # every ticket of the sample is drawn: the slot is free again
        if HAS_SCALE:
            layer_norm_mlp(b, ctx_ptr, sw1_ptr, sb1_ptr, slnw_ptr, slnb_ptr, sw2_ptr, sb2_ptr, s_ptr,
                           C, RD_S, eps_s, ssw1j, ssw1c, ssw2c, ssw2j, ACT, ACC, BLOCK_J, MLP_BLOCK_C)
        if HAS_ADD:
            layer_norm_mlp(b, ctx_ptr, aw1_ptr, ab1_ptr, alnw_ptr, alnb_ptr, aw2_ptr, ab2_ptr, t_ptr,
                           C, RD_A, eps_a, asw1j, asw1c, asw2c, asw2j, ACT, ACC, BLOCK_J, MLP_BLOCK_C)


@triton.jit
def context_pool_bwd(
    grad_ctx_ptr, x_ptr, w_ptr, stats_ptr, grad_x_ptr, wpart_ptr,
    C, P,
    sgcb, sgcc,
    sxb, sxc, sxp,
    sgxb, sgxc, sgxp,
    ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Backward: per (b, block i of BLOCK_P pixels), with M, L and ctx from stats [B, C + 2],

      first loop over C:  logit[p] (as the forward, same order), dα[p] = Σ_c dctx · x,
                          k = Σ_c dctx[b, c] · ctx[b, c]
      α = exp(logit - M) / L,  dlogit = α · (dα - k)
      second loop over C: grad_x[b, c, p] = α[p] · dctx[b, c] + dlogit[p] · w[c]   (x's dtype)
                          wpart[b·NP + i, c] = Σ_p dlogit[p] · x[b, c, p]
      wpart[b·NP + i, C] = Σ_p dlogit[p]

    The host sums wpart [B·NP, C + 1] (ACC, contiguous) over its rows (a fixed-order reduction)
    into grad_w and grad_bias. Reads x once from HBM (the second loop from cache) and writes
    grad_x: minimum bytes 2·B·C·P·itemsize + B·NP·(C + 1)·sizeof(ACC) written + the [B, C]
    vectors. Grid: one program per (b, pixel block), B·NP programs, as context_pool_partials, all
    alike: 9·cdiv(C, BLOCK_C) + 3 memory instructions.
    """
    b, i, offs_p = _pixel_block(P, BLOCK_P)
    mask_p = offs_p < P
    p64 = offs_p.to(tl.int64)[None, :]
    x_base = x_ptr + b * sxb
    logit = tl.zeros([BLOCK_P], dtype=ACC)
    d_alpha = tl.zeros([BLOCK_P], dtype=ACC)
    k = tl.zeros([BLOCK_C], dtype=ACC)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        mask = mask_c[:, None] & mask_p[None, :]
        x = tl.load(x_base + offs_c.to(tl.int64)[:, None] * sxc + p64 * sxp, mask=mask, other=0.0).to(ACC)
        w = tl.load(w_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
        dctx = tl.load(grad_ctx_ptr + b * sgcb + offs_c.to(tl.int64) * sgcc, mask=mask_c, other=0.0).to(ACC)
        ctx = tl.load(stats_ptr + b * (C + 2) + 2 + offs_c, mask=mask_c, other=0.0)
        logit += tl.sum(w[:, None] * x, axis=0)
        d_alpha += tl.sum(dctx[:, None] * x, axis=0)
        k += dctx * ctx
    big_m = tl.load(stats_ptr + b * (C + 2))
    big_l = tl.load(stats_ptr + b * (C + 2) + 1)
    alpha = tl.where(mask_p, tl.exp(logit - big_m) / big_l, 0.0)
    dlogit = alpha * (d_alpha - tl.sum(k, axis=0))
    row = b * tl.cdiv(P, BLOCK_P) + i
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        mask = mask_c[:, None] & mask_p[None, :]
        c64 = offs_c.to(tl.int64)[:, None]
        x = tl.load(x_base + c64 * sxc + p64 * sxp, mask=mask, other=0.0).to(ACC)
        w = tl.load(w_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
        dctx = tl.load(grad_ctx_ptr + b * sgcb + offs_c.to(tl.int64) * sgcc, mask=mask_c, other=0.0).to(ACC)
        g = alpha[None, :] * dctx[:, None] + dlogit[None, :] * w[:, None]
        tl.store(grad_x_ptr + b * sgxb + c64 * sgxc + p64 * sgxp, to_output(g, grad_x_ptr), mask=mask)
        tl.store(wpart_ptr + row * (C + 1) + offs_c, tl.sum(dlogit[None, :] * x, axis=1), mask=mask_c)
    tl.store(wpart_ptr + row * (C + 1) + C, tl.sum(dlogit, axis=0))
