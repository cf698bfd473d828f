"""The radix (split) attention of ResNeSt's SplitAttn and SKNet's SelectiveKernel: the pooling of
R branches into one channel descriptor, the attention-weighted sum of the branches, its backward.

A branched feature map x [B, R, C, H, W] (SplitAttn's [B, R·C, H, W] viewed so, or the stack of
SelectiveKernel's paths) is seen as [B, R, C, K], K = H×W: x[b, r, c, k] is at
x_ptr + b·sxb + r·sxr + c·sxc + k·sxk, so NCHW-like and channels_last-like branches are read in
place. The attention a[b, r, c] (at a_ptr + b·sab + r·sar + c·sac) is the radix softmax (or the
sigmoid for R = 1) of the block's logits: computed in torch between the kernels (training, and
any block whose MLP the kernels do not take), or in inference by radix_squeeze_attend_fwd, which
pools and runs the block's tiny attention MLP in one launch (the per-sample ticket of
kernels/excitation.py), so the block is two kernels: radix_squeeze_attend_fwd, radix_combine_fwd.
Rows are the C channels, columns the K pixels (tiling.py's [R, K] plane with R = C); the radix
index r is a loop inside every program (R is 1, 2 or 4 in timm). All arithmetic in ACC (float32;
float64 for float64 inputs) with one rounding to each output's dtype.

The prologue (inference: radix_squeeze_attend_fwd and radix_combine_fwd). With PRO_ACT ≠ "none",
x5 holds SplitAttn's conv output c instead of x, and every loaded element of branch r, channel c
becomes x = act(bn(c)) (kernels/norm_act.py's :func:`prologue`: z and x rounded to x5's dtype as
eager materialises them), bn the eval BatchNorm (PRO_NORM) of conv channel r·C + c: its weight,
bias, running mean and running var (R·C entries each) at pw, pb, pm, pv and its eps; the scale and
shift of the program's channels are loaded per branch, inside the r loop. bn0 and act0 then cost
no pass of their own: x is never written.
"""
import triton
import triton.language as tl

from .excitation import hidden_pre_activation, last_of_sample
from .gates import gate_value
from .norm_act import activation, eval_batchnorm, prologue, prologue_affine
from .program_tiles import elementwise_tile, row_block
from .rounding import as_materialised, to_output
from .tiling import ELEMENTWISE_TILES, ROW_TILES, oriented_configs

# Autotuning spaces (pruned per problem by tiling.prune_configs). The three kernels store every
# output element exactly once (grad_a from a private accumulator) and accumulate into no output,
# so a config can be benchmarked on the real arguments repeatedly without reset_to_zero / restore_value.
#: radix_pool_fwd loops over r and K: the pipeline depth (num_stages) matters.
RADIX_POOL_FWD_CONFIGS = oriented_configs(ROW_TILES, num_warps=(2, 4, 8), num_stages=(1, 2, 3))
#: radix_combine_fwd loops over the R branches of one tile only: one stage.
RADIX_COMBINE_FWD_CONFIGS = oriented_configs(ELEMENTWISE_TILES, num_warps=(2, 4, 8), num_stages=(1,))
#: radix_combine_bwd loops over K (and r inside): the pipeline depth matters.
RADIX_COMBINE_BWD_CONFIGS = oriented_configs(ROW_TILES, num_warps=(2, 4, 8), num_stages=(1, 2, 3))
#: radix_squeeze_attend_fwd: radix_pool_fwd's loop (the MLP's tile is set by the problem, not
#: tuned); it stores pooled and a once each and leaves the counters at 0, so a config can be re-run.
RADIX_SQUEEZE_ATTEND_FWD_CONFIGS = RADIX_POOL_FWD_CONFIGS


@triton.jit
def branch_sum(x_ptr, b, c64, mask_c, R, C, K, sxb, sxr, sxc, sxk, pw_ptr, pb_ptr, pm_ptr, pv_ptr, p_eps,
               PRO_ACT: tl.constexpr, PRO_NORM: tl.constexpr,
               ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """Σ_r Σ_k x[b, r, c, k] [BLOCK_R] for the program's channels c64, in ACC and a fixed order
    (r outer, K blocks inner). With a prologue (PRO_ACT ≠ "none"), x = act(bn(·)) of what x_ptr
    holds, bn the BatchNorm of channel r·C + c (module docstring); without, x as loaded."""
    total = tl.zeros([BLOCK_R], dtype=ACC)
    row_ptrs = x_ptr + b * sxb + c64[:, None] * sxc  # branch r = 0; stepped by sxr (64-bit pointers)
    for r in range(R):
        # branch r's BatchNorm channels r·C + c (zeros, unused, without PRO_NORM)
        scale, shift, _, _ = prologue_affine(pw_ptr, pb_ptr, pm_ptr, pv_ptr, p_eps, r * C + c64, mask_c, PRO_NORM, ACC)
        for start in range(0, K, BLOCK_K):
            offs_k = start + tl.arange(0, BLOCK_K)
            mask = mask_c[:, None] & (offs_k < K)[None, :]
            v = tl.load(row_ptrs + offs_k.to(tl.int64)[None, :] * sxk, mask=mask, other=0.0).to(ACC)
            x = prologue(v, mask, scale, shift, x_ptr, PRO_ACT, PRO_NORM)[0]
            total += tl.sum(x, axis=1)
        row_ptrs += sxr
    return total


@triton.jit
def radix_pool_fwd(
    x_ptr, pooled_ptr,
    R, C, K,
    sxb, sxr, sxc, sxk,
    spb, spc,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """pooled[b, c] = (1/K) · Σ_r Σ_k x[b, r, c, k]   (timm: x.sum(1).mean((2, 3)))

    Reads x once; reduces over the R branches and the K pixels into a private ACC accumulator per
    channel (summed in a fixed order: r outer, K blocks inner — deterministic, no atomics) and
    stores pooled (strides spb, spc) once, rounded to its dtype. BLOCK_R tiles the C channels.
    Minimum bytes: B·R·C·K·itemsize(x) read + B·C·itemsize(pooled) written.
    Grid: rows_grid(B, C, BLOCK_R) — one program per (b, block of BLOCK_R channels), looping over
    r and over K in BLOCK_K steps: every program issues R·cdiv(K, BLOCK_K) loads and a store (no
    program longer than another; the untuned tile, launch.radix_rows_tile, keeps that ≤ 16 where
    ≥ 8 contiguous channels per program allow: 7 steps of 512 pixels per branch at 56×56).
    """
    b, offs_c = row_block(C, BLOCK_R)
    mask_c = offs_c < C
    c64 = offs_c.to(tl.int64)
    total = branch_sum(x_ptr, b, c64, mask_c, R, C, K, sxb, sxr, sxc, sxk, None, None, None, None, 0.0,
                       "none", False, ACC, BLOCK_R, BLOCK_K)
    tl.store(pooled_ptr + b * spb + c64 * spc, to_output(total / K, pooled_ptr), mask=mask_c)


@triton.jit
def radix_combine_fwd(
    x_ptr, a_ptr, out_ptr, pw_ptr, pb_ptr, pm_ptr, pv_ptr,
    R, C, K, p_eps,
    sxb, sxr, sxc, sxk,
    sab, sar, sac,
    sob, soc, sok,
    PRO_ACT: tl.constexpr, PRO_NORM: tl.constexpr,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out[b, c, k] = Σ_r a[b, r, c] · x[b, r, c, k]

    With a prologue (PRO_ACT ≠ "none"), x_ptr holds c and x[b, r, c, k] = act(bn_{r·C + c}(c[b, r,
    c, k])) as loaded (module docstring; the BatchNorm's R·C-entry vectors at pw, pb, pm, pv with
    PRO_NORM, the program's scale and shift loaded per branch).
    Reads each x element once and a[b, :, c] once per tile; the sum over r is in ACC (r in order)
    and out (strides sob, soc, sok) is stored once, rounded to its dtype.
    Minimum bytes: B·R·C·K·itemsize(x) read + B·C·K·itemsize(out) written + B·R·C·itemsize(a) read
    (with a prologue x is c, the same size; the BatchNorm's vectors are per-block parameters).
    Grid: elementwise_grid(B, C, K, BLOCK_R, BLOCK_K) — one program per (b, channel block,
    pixel block), looping over the R branches of its tile: R·(2 + 4·PRO_NORM) + 1 memory
    instructions, every program alike.
    """
    b, offs_c, offs_k = elementwise_tile(C, K, BLOCK_R, BLOCK_K)
    mask_c = offs_c < C
    mask = mask_c[:, None] & (offs_k < K)[None, :]
    c64 = offs_c.to(tl.int64)
    k64 = offs_k.to(tl.int64)[None, :]
    acc = tl.zeros([BLOCK_R, BLOCK_K], dtype=ACC)
    a_ptrs = a_ptr + b * sab + c64 * sac  # branch r = 0; stepped by sar / sxr (64-bit pointers)
    x_ptrs = x_ptr + b * sxb + c64[:, None] * sxc + k64 * sxk
    for r in range(R):
        a = tl.load(a_ptrs, mask=mask_c, other=0.0).to(ACC)
        v = tl.load(x_ptrs, mask=mask, other=0.0).to(ACC)
        # branch r's BatchNorm channels r·C + c (zeros, unused, without PRO_NORM)
        scale, shift, _, _ = prologue_affine(pw_ptr, pb_ptr, pm_ptr, pv_ptr, p_eps, r * C + c64, mask_c, PRO_NORM, ACC)
        x = prologue(v, mask, scale, shift, x_ptr, PRO_ACT, PRO_NORM)[0]
        acc += a[:, None] * x
        a_ptrs += sar
        x_ptrs += sxr
    tl.store(out_ptr + b * sob + c64[:, None] * soc + k64 * sok, to_output(acc, out_ptr), mask=mask)


@triton.jit
def radix_combine_bwd(
    grad_out_ptr, x_ptr, a_ptr, grad_x_ptr, grad_a_ptr, gp_ptr,
    R, C, K,
    sgb, sgc, sgk,
    sxb, sxr, sxc, sxk,
    sab, sar, sac,
    sgxb, sgxr, sgxc, sgxk,
    sgab, sgar, sgac,
    sgpb, sgpc,
    WANT_GRAD_X: tl.constexpr, WANT_GRAD_A: tl.constexpr, ADD_POOL: tl.constexpr,
    ACC: tl.constexpr, RADIX_BLOCK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Backward of radix_combine_fwd in one pass over (grad_out, x):

      grad_x[b, r, c, k] = a[b, r, c] · grad_out[b, c, k]                          (WANT_GRAD_X)
                           (+ gp[b, c] / K with ADD_POOL: the pooled descriptor's gradient, the
                           radix pool's backward, broadcast over r and k)
      grad_a[b, r, c]    = Σ_k grad_out[b, c, k] · x[b, r, c, k]                   (WANT_GRAD_A)

    Both (the op's backward), grad_a alone (the reduce of the deferred per-op backward,
    tritattn/radix_step.py: the MLP's backward then gives gp) or grad_x with the pool's term (its
    apply: one write of grad_x where the op path writes a · g, then autograd adds the pool's
    broadcast gradient into it, a second pass). With ADD_POOL each term is rounded to grad_x's
    dtype as eager materialises it (a · g, gp / K), then their sum: the op path's bits.
    Each grad_out tile is loaded once and used for all R branches. Σ_k is a private ACC
    accumulator per (r, channel) — a [RADIX_BLOCK, BLOCK_R] tile, RADIX_BLOCK = R rounded up to
    a power of two — summed in a fixed order (K blocks in order): deterministic, no atomics; grad_a
    (strides sgab, sgar, sgac) is stored once at the end, grad_x (strides sgx*) once per element.
    Minimum bytes: B·C·K·itemsize(grad_out) read, + B·R·C·K·itemsize(x) read with WANT_GRAD_A,
    + B·R·C·K·itemsize(grad_x) written with WANT_GRAD_X, B·R·C·itemsize(a) read (+ B·R·C·itemsize(grad_a)
    written, + B·C·itemsize(gp) read).
    Grid: rows_grid(B, C, BLOCK_R) — one program per (b, block of BLOCK_R channels), looping over
    K in BLOCK_K steps and over the R branches inside: cdiv(K, BLOCK_K)·(1 + R·(1 + WANT_GRAD_X +
    WANT_GRAD_A)) + WANT_GRAD_A + ADD_POOL memory instructions, every program alike (the untuned
    tile: see radix_pool_fwd).
    """
    b, offs_c = row_block(C, BLOCK_R)
    mask_c = offs_c < C
    c64 = offs_c.to(tl.int64)
    rows = c64[:, None]
    radix = tl.arange(0, RADIX_BLOCK)[:, None]  # [RADIX_BLOCK, 1]: the r of each accumulator row
    acc = tl.zeros([RADIX_BLOCK, BLOCK_R], dtype=ACC)
    spread = tl.zeros([BLOCK_R], dtype=ACC)
    if ADD_POOL:  # gp / (H·W), rounded as eager's division writes it
        spread = as_materialised(tl.load(gp_ptr + b * sgpb + c64 * sgpc, mask=mask_c, other=0.0).to(ACC) / K,
                                 grad_x_ptr)
    for start in range(0, K, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mask = mask_c[:, None] & (offs_k < K)[None, :]
        k64 = offs_k.to(tl.int64)[None, :]
        g = tl.load(grad_out_ptr + b * sgb + rows * sgc + k64 * sgk, mask=mask, other=0.0).to(ACC)
        # branch r = 0; stepped by sar / sxr / sgxr (64-bit pointers)
        a_ptrs = a_ptr + b * sab + c64 * sac
        x_ptrs = x_ptr + b * sxb + rows * sxc + k64 * sxk
        if WANT_GRAD_X:
            gx_ptrs = grad_x_ptr + b * sgxb + rows * sgxc + k64 * sgxk
        for r in range(R):
            a = tl.load(a_ptrs, mask=mask_c, other=0.0).to(ACC)
            if WANT_GRAD_X:
                grad_x = a[:, None] * g
                if ADD_POOL:
                    grad_x = as_materialised(grad_x, grad_x_ptr) + spread[:, None]
                tl.store(gx_ptrs, to_output(grad_x, grad_x_ptr), mask=mask)
                gx_ptrs += sgxr
            if WANT_GRAD_A:
                x = tl.load(x_ptrs, mask=mask, other=0.0).to(ACC)
                acc = tl.where(radix == r, acc + tl.sum(g * x, axis=1)[None, :], acc)
            a_ptrs += sar
            x_ptrs += sxr
    if WANT_GRAD_A:
        mask_a = (radix < R) & mask_c[None, :]
        tl.store(grad_a_ptr + b * sgab + radix.to(tl.int64) * sgar + c64[None, :] * sgac,
                 to_output(acc, grad_a_ptr), mask=mask_a)


@triton.jit
def sample_radix_attention(
    b, pooled_ptr, w1_ptr, b1_ptr, bnw_ptr, bnb_ptr, bnm_ptr, bnv_ptr, w2_ptr, b2_ptr, a_ptr,
    R, C, RD, bn_eps, sw1j, sw1c, sw2n, sw2j,
    ACT: tl.constexpr, HAS_B1: tl.constexpr, HAS_B2: tl.constexpr, HIDDEN_NORM: tl.constexpr,
    ACC: tl.constexpr, RADIX_BLOCK: tl.constexpr, BLOCK_J: tl.constexpr, MLP_BLOCK_C: tl.constexpr,
):
    """The attention a[b] [R, C] of one sample from its complete pooled vector (contiguous [B, C]
    ACC workspace): h = W1 · v + b1 (Σ over C in a fixed order), the eval BatchNorm (HIDDEN_NORM),
    act, then per block of MLP_BLOCK_C channels the R logits z[r, c] = W2[r·C + c, :] · act(h) +
    b2[r·C + c] in a [RADIX_BLOCK, MLP_BLOCK_C] tile and their softmax over r (max subtracted;
    rows r ≥ R are -inf), or the sigmoid for R = 1 (RADIX_BLOCK = 1). a is stored in ACC,
    contiguous [B, R, C]."""
    offs_j = tl.arange(0, BLOCK_J)
    mask_j = offs_j < RD
    h, _ = hidden_pre_activation(b, pooled_ptr, pooled_ptr, w1_ptr, b1_ptr, C, RD, sw1j, sw1c,
                                 "mean", HAS_B1, ACC, BLOCK_J, MLP_BLOCK_C)
    if HIDDEN_NORM:
        scale, shift, _, _ = eval_batchnorm(bnw_ptr, bnb_ptr, bnm_ptr, bnv_ptr, bn_eps, offs_j, mask_j, ACC)
        h = h * scale + shift
    hidden = tl.where(mask_j, activation(h, ACT), 0.0)
    radix = tl.arange(0, RADIX_BLOCK)[:, None]  # [RADIX_BLOCK, 1]: the r of each logit row
    for c0 in range(0, C, MLP_BLOCK_C):
        offs_c = c0 + tl.arange(0, MLP_BLOCK_C)
        mask_c = offs_c < C
        z = tl.zeros([RADIX_BLOCK, MLP_BLOCK_C], dtype=ACC)
        for r in range(R):
            rows = r * C + offs_c
            w2 = tl.load(w2_ptr + rows[:, None] * sw2n + offs_j[None, :] * sw2j,
                         mask=mask_c[:, None] & mask_j[None, :], other=0.0).to(ACC)
            logit = tl.sum(w2 * hidden[None, :], axis=1)
            if HAS_B2:
                logit += tl.load(b2_ptr + rows, mask=mask_c, other=0.0).to(ACC)
            z = tl.where(radix == r, logit[None, :], z)
        if RADIX_BLOCK == 1:
            attn = gate_value(z, "sigmoid")
        else:
            z = tl.where(radix < R, z, float("-inf"))
            e = tl.exp(z - tl.max(z, axis=0)[None, :])
            attn = e / tl.sum(e, axis=0)[None, :]
        tl.store(a_ptr + b * R * C + radix * C + offs_c[None, :], attn, mask=(radix < R) & mask_c[None, :])


@triton.jit
def radix_squeeze_attend_fwd(
    x_ptr, pooled_ptr, counter_ptr,
    w1_ptr, b1_ptr, bnw_ptr, bnb_ptr, bnm_ptr, bnv_ptr, w2_ptr, b2_ptr, a_ptr,
    pw_ptr, pb_ptr, pm_ptr, pv_ptr,
    R, C, K, RD, bn_eps, p_eps,
    sxb, sxr, sxc, sxk,
    sw1j, sw1c, sw2n, sw2j,
    ACT: tl.constexpr, HAS_B1: tl.constexpr, HAS_B2: tl.constexpr, HIDDEN_NORM: tl.constexpr,
    PRO_ACT: tl.constexpr, PRO_NORM: tl.constexpr, MLP_TAIL: tl.constexpr,
    ACC: tl.constexpr, RADIX_BLOCK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_J: tl.constexpr, MLP_BLOCK_C: tl.constexpr,
):
    """Inference: the squeeze and the attention MLP of split attention in one launch (MLP_TAIL),
    or the squeeze alone (the split path: the MLP then runs as GEMMs over all samples in torch).

      x[b, r, c, k] = act(bn_{r·C + c}(c[b, r, c, k]))              with a prologue (PRO_ACT ≠ "none")
      v[b, c]    = (1/K) · Σ_r Σ_k x[b, r, c, k]                    (as radix_pool_fwd)
      h          = W1 · v[b] + b1                 W1 dense [RD, C] (a grouped fc1 expanded), HAS_B1
      h          ← h · scale + shift              the eval BatchNorm (HIDDEN_NORM; kernels/norm_act.py)
      z[r, c]    = W2[r·C + c, :] · act(h) + b2[r·C + c]           ACT: relu / silu / identity
      a[b, r, c] = exp(z[r, c] - m[c]) / Σ_r' exp(z[r', c] - m[c]),  m[c] = max_r z[r, c]
                   (R = 1: a = sigmoid(z))

    W2's rows (dense [R·C, RD]) are in the order r·C + c, c the channel radix_combine_fwd sees
    (the host expands grouped 1×1 convs and permutes timm's (cardinality, radix, C/cardinality)
    logits into it). With a prologue, x_ptr holds the conv output c and x is computed as loaded
    (module docstring; the BatchNorm's R·C-entry vectors at pw, pb, pm, pv with PRO_NORM), never
    written. Each program pools its BLOCK_R channels (r outer, K blocks inner: a fixed
    order, no atomics on floats) and stores them to the ACC workspace pooled [B, C] (contiguous);
    the program that draws the sample's last ticket (:func:`kernels.excitation.last_of_sample`,
    int32 counter slot b) resets the slot to 0 (every ticket of the sample is drawn: nobody else
    reads it in this launch), reads the complete vector back in a fixed order, computes the MLP
    and the radix softmax (:func:`sample_radix_attention`) and stores a [B, R, C] (ACC,
    contiguous). Without MLP_TAIL no ticket is drawn and a, the weights and the counters are not
    used. Bitwise repeatable; weights read in their own dtype, all arithmetic in ACC.
    Minimum bytes: B·R·C·K·itemsize(x) read + B·C·itemsize(ACC) (pooled) + B·R·C·itemsize(ACC)
    (a) written (with a prologue x is c, the same size). The weights — and a prologue's BatchNorm
    vectors, read once per program and branch — are per-block parameters (read from L2 after the
    first; counted once per block, not per kernel), and so is the pooled vector read back.
    Grid: rows_grid(B, C, BLOCK_R) — one program per (b, block of BLOCK_R channels), looping over
    r and over K in BLOCK_K steps; the sample's last program then runs the MLP with a
    BLOCK_J × MLP_BLOCK_C weight tile (BLOCK_J ≥ RD) and a [RADIX_BLOCK, MLP_BLOCK_C] logit tile
    (RADIX_BLOCK = R rounded up to a power of two): 2·n + 1 + 4·HIDDEN_NORM loads for the hidden
    layer and n·(R·(1 + HAS_B2) + 1) for the logits, n = cdiv(C, MLP_BLOCK_C) — a tail that grows
    with C·RD (not with B), taken only where the model says it is the faster path
    (tritattn/radix_cost.py).
    """
    b, offs_c = row_block(C, BLOCK_R)
    mask_c = offs_c < C
    c64 = offs_c.to(tl.int64)
    total = branch_sum(x_ptr, b, c64, mask_c, R, C, K, sxb, sxr, sxc, sxk, pw_ptr, pb_ptr, pm_ptr, pv_ptr, p_eps,
                       PRO_ACT, PRO_NORM, ACC, BLOCK_R, BLOCK_K)
    tl.store(pooled_ptr + b * C + c64, total / K, mask=mask_c)
    if MLP_TAIL:
        if last_of_sample(counter_ptr, b, tl.cdiv(C, BLOCK_R)):
            tl.store(counter_ptr + b, 0)
            sample_radix_attention(b, pooled_ptr, w1_ptr, b1_ptr, bnw_ptr, bnb_ptr, bnm_ptr, bnv_ptr, w2_ptr, b2_ptr,
                                   a_ptr, R, C, RD, bn_eps, sw1j, sw1c, sw2n, sw2j, ACT, HAS_B1, HAS_B2, HIDDEN_NORM,
                                   ACC, RADIX_BLOCK, BLOCK_J, MLP_BLOCK_C)
