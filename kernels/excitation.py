"""A channel-attention block as one pipeline: the squeeze and the excitation MLP in one launch
(MLP_TAIL; else the squeeze alone, the MLP then running as GEMMs over the batch outside the
kernels: tritattn/excitation_mlp.py), and the block's backward in two.

The block (SE, Effective-SE, ECA / CECA, CBAM's channel branch) is, per sample b,

    v      = pool(x[b])                 mean over H×W; with POOL = "mean_max_avg" 0.5·mean + 0.5·max
    s[b]   = excitation(v)              MLP = "fc_act_fc": W2 · act(W1 · v + b1) + b2   (SE)
                                        MLP = "fc":        W · v + b                      (Effective-SE)
                                        MLP = "taps_zero" / "taps_circular":
                                            s[c] = Σ_t w[t] · v[c + t - PAD] (+ b), zero or circular
                                            padding of the channel axis                   (ECA / CECA)
    y      = act_out(x · gate(s) + residual)                   (gated_scale.gated_scale_fwd)

POOL = "mean_max_both" is CBAM's channel branch: s = mlp(mean) + mlp(max), i.e.
W2 · (act(h_mean) + act(h_max)) + 2·b2. HIDDEN_NORM: a BatchNorm in eval between W1 and act
(timm SEModule's ``norm_layer``, ReXNet), h ↦ h · weight / σ + bias - running_mean · weight / σ.
The backward takes ACT_OUT = "spatial" for CBAM, whose gradient arrives through the spatial half
(:func:`block_output_grad`).

The per-sample MLP needs the whole pooled vector of its sample, which programs over different
channel blocks produce. Each program stores its rows' pooled values, then takes a ticket from an
int32 counter per sample (``tl.atomic_add``, acquire-release, after a barrier so the program's
stores are all issued first); the program that draws the last ticket of its sample reads the
complete vector back and computes that sample's MLP, then resets the counter to 0 for the next
launch (so a CUDA graph replays it, and the tuner can re-run the kernel). Which program is last
varies from run to run, but it reads the vector in a fixed order: the result is bitwise
repeatable. No program waits for another, so the interpreter (programs run one after the other)
runs it as the GPU does.

The workspaces (``mean``, ``max``, ``count``, ``s``, the backward's per-sample vectors) are
contiguous [B, C] (hidden ones [B, RD]) in ACC (float32; float64 for float64 x); weights are read
with their strides in their own dtype and accumulated in ACC.
"""
import triton
import triton.language as tl

from .channel_taps import channel_conv, pooled_input
from .gated_scale import epilogue_grad
from .gates import gate_backward, gate_value
from .mean_max import add_pool_grad, pool_start, pool_tile, pooled_max
from .norm_act import activation, activation_backward, eval_batchnorm, prologue, prologue_affine
from .program_tiles import elementwise_tile, row_block
from .rounding import as_materialised, to_output
from .tiling import ELEMENTWISE_TILES, ROW_TILES, oriented_configs

#: squeeze_excite_fwd and excitation_bwd_reduce loop over K (pipeline depth matters); the tile is
#: that of the pooling loop — the per-sample MLP's tile (BLOCK_J × MLP_BLOCK_C) is set by the
#: problem (launch.py), not tuned. Both store every output element once and leave the counters
#: at 0, so a config can be re-run on the real arguments.
SQUEEZE_EXCITE_FWD_CONFIGS = oriented_configs(ROW_TILES, num_warps=(2, 4, 8), num_stages=(1, 2, 3))
EXCITATION_BWD_REDUCE_CONFIGS = SQUEEZE_EXCITE_FWD_CONFIGS
#: excitation_bwd_apply: one tile per program, no loop.
EXCITATION_BWD_APPLY_CONFIGS = oriented_configs(ELEMENTWISE_TILES, num_warps=(2, 4, 8), num_stages=(1,))

#: Elements of the per-sample MLP's weight tile (BLOCK_J × MLP_BLOCK_C).
MLP_TILE_ELEMENTS = 4096


@triton.jit
def hidden_pre_activation(
    b, mean_ptr, max_ptr, w1_ptr, b1_ptr, C, RD, sw1j, sw1c,
    POOL: tl.constexpr, HAS_B1: tl.constexpr, ACC: tl.constexpr, BLOCK_J: tl.constexpr, MLP_BLOCK_C: tl.constexpr,
):
    """(h, h_max) [BLOCK_J]: W1 · v + b1 for sample b, and W1 · max + b1 for POOL = "mean_max_both"
    (else zeros). Σ over C in a fixed order, MLP_BLOCK_C channels at a time."""
    offs_j = tl.arange(0, BLOCK_J)
    mask_j = offs_j < RD
    h = tl.zeros([BLOCK_J], dtype=ACC)
    h_max = tl.zeros([BLOCK_J], dtype=ACC)
    for c0 in range(0, C, MLP_BLOCK_C):
        offs_c = c0 + tl.arange(0, MLP_BLOCK_C)
        mask_c = offs_c < C
        w1 = tl.load(w1_ptr + offs_j[:, None] * sw1j + offs_c[None, :] * sw1c,
                     mask=mask_j[:, None] & mask_c[None, :], other=0.0).to(ACC)
        v = pooled_input(mean_ptr, max_ptr, b * C + offs_c, mask_c, POOL)
        h += tl.sum(w1 * v[None, :], axis=1)
        if POOL == "mean_max_both":
            v_max = tl.load(max_ptr + b * C + offs_c, mask=mask_c, other=0.0, cache_modifier=".cg")
            h_max += tl.sum(w1 * v_max[None, :], axis=1)
    if HAS_B1:
        bias = tl.load(b1_ptr + offs_j, mask=mask_j, other=0.0).to(ACC)
        h += bias
        h_max += bias
    return h, h_max


@triton.jit
def sample_logits(
    b, mean_ptr, max_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, bnw_ptr, bnb_ptr, bnm_ptr, bnv_ptr, s_ptr,
    C, RD, bn_eps, sw1j, sw1c, sw2c, sw2j,
    POOL: tl.constexpr, MLP: tl.constexpr, ACT: tl.constexpr, PAD: tl.constexpr, TAPS: tl.constexpr,
    HAS_B1: tl.constexpr, HAS_B2: tl.constexpr, HIDDEN_NORM: tl.constexpr,
    ACC: tl.constexpr, BLOCK_J: tl.constexpr, MLP_BLOCK_C: tl.constexpr,
):
    """s[b, :] = excitation(v) for one sample, from the complete pooled vectors (module docstring;
    HIDDEN_NORM: the hidden layer's eval BatchNorm before act, :func:`hidden_norm`). For the
    taps, w1_ptr is the conv's k weights (stride sw1c) and b2_ptr its scalar bias."""
    offs_j = tl.arange(0, BLOCK_J)
    mask_j = offs_j < RD
    if MLP == "fc_act_fc":
        h, h_max = hidden_pre_activation(b, mean_ptr, max_ptr, w1_ptr, b1_ptr, C, RD, sw1j, sw1c,
                                         POOL, HAS_B1, ACC, BLOCK_J, MLP_BLOCK_C)
        if HIDDEN_NORM:
            scale, shift, _, _ = eval_batchnorm(bnw_ptr, bnb_ptr, bnm_ptr, bnv_ptr, bn_eps, offs_j, mask_j, ACC)
            h = h * scale + shift
            h_max = h_max * scale + shift
        a = activation(h, ACT)
        if POOL == "mean_max_both":
            a += activation(h_max, ACT)
        a = tl.where(mask_j, a, 0.0)
    elif MLP == "fc":
        a = pooled_input(mean_ptr, max_ptr, b * C + offs_j, mask_j, POOL)  # RD = C
    for c0 in range(0, C, MLP_BLOCK_C):
        offs_c = c0 + tl.arange(0, MLP_BLOCK_C)
        mask_c = offs_c < C
        if MLP == "fc_act_fc" or MLP == "fc":
            w2 = tl.load(w2_ptr + offs_c[:, None] * sw2c + offs_j[None, :] * sw2j,
                         mask=mask_c[:, None] & mask_j[None, :], other=0.0).to(ACC)
            s = tl.sum(w2 * a[None, :], axis=1)
            if HAS_B2:
                bias = tl.load(b2_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
                s += 2.0 * bias if POOL == "mean_max_both" else bias
        else:
            s = channel_conv(b, mean_ptr, max_ptr, w1_ptr, b2_ptr, offs_c, mask_c, C, sw1c,
                             POOL, TAPS, PAD, MLP == "taps_circular", False, HAS_B2, ACC, BLOCK_J)
        tl.store(s_ptr + b * C + offs_c, s, mask=mask_c)


@triton.jit
def last_of_sample(counter_ptr, b, n_programs):
    """True in the program that draws the last of ``n_programs`` tickets of counter slot b (a
    sample's, or a channel block's, or a launch's; see the module docstring); that program
    stores 0 to the slot when done, so the next launch finds it reset."""
    tl.debug_barrier()  # every thread's stores issued before the ticket is taken (release)
    ticket = tl.atomic_add(counter_ptr + b, 1, sem="acq_rel")
    return ticket == n_programs - 1


@triton.jit
def block_output_grad(
    grad_y_ptr, y_ptr, sp_ptr, x_ptr, gy_offs, y_offs, x, g, b, offs_k, mask, K,
    ACT_OUT: tl.constexpr, ACC: tl.constexpr,
):
    """d, the gradient at the excitation's output x · gate(s) for a [BLOCK_R, BLOCK_K] tile (R = C,
    K = H×W; x in ACC, g = gate(s) per row):

      ACT_OUT = "relu" / "identity": the epilogue's (gated_scale.epilogue_grad)
      ACT_OUT = "spatial" (CBAM, the spatial half after it): with z = x · g rounded as the forward
        and the per-pixel sp [B, 4, K] of kernels/cbam_spatial_bwd.py,
        d = grad_y · sp[0] + sp[1] + [z == sp[3]] · sp[2]   (NaN over a pixel whose max is NaN)
    """
    if ACT_OUT == "spatial":
        dy = tl.load(grad_y_ptr + gy_offs, mask=mask, other=0.0).to(ACC)
        z = as_materialised(x * g[:, None], x_ptr)
        mask_k = offs_k < K
        base = sp_ptr + b * 4 * K + offs_k
        g_s = tl.load(base, mask=mask_k, other=0.0)
        g_mean = tl.load(base + K, mask=mask_k, other=0.0)
        share = tl.load(base + 2 * K, mask=mask_k, other=0.0)
        z_max = tl.load(base + 3 * K, mask=mask_k, other=0.0)
        max_term = tl.where(z == z_max[None, :], share[None, :], 0.0)
        max_term = tl.where((z_max != z_max)[None, :], float("nan"), max_term)
        d = dy * g_s[None, :] + g_mean[None, :] + max_term
    else:
        d = epilogue_grad(grad_y_ptr, y_ptr, gy_offs, y_offs, mask, ACT_OUT, ACC)
    return d


@triton.jit
def squeeze_excite_fwd(
    x_ptr, mean_ptr, max_ptr, count_ptr, counter_ptr,
    w1_ptr, b1_ptr, w2_ptr, b2_ptr, bnw_ptr, bnb_ptr, bnm_ptr, bnv_ptr, s_ptr,
    pw_ptr, pb_ptr, pm_ptr, pv_ptr,
    R, K, RD, bn_eps, p_eps,
    sxb, sxr, sxk,
    sw1j, sw1c, sw2c, sw2j,
    POOL: tl.constexpr, MLP: tl.constexpr, ACT: tl.constexpr, PAD: tl.constexpr, TAPS: tl.constexpr,
    HAS_B1: tl.constexpr, HAS_B2: tl.constexpr, HIDDEN_NORM: tl.constexpr,
    PRO_ACT: tl.constexpr, PRO_NORM: tl.constexpr, MLP_TAIL: tl.constexpr,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_J: tl.constexpr, MLP_BLOCK_C: tl.constexpr,
):
    """Squeeze and excitation in one launch: pooled vectors and the logits s [B, C] (R = C, K = H×W).

      mean[b, c] = Σ_k x[b, c, k] / K;  max[b, c], count[b, c] = max_k x and its ties (POOL ≠ "mean")
      s[b, :]    = excitation of the pooled vectors (module docstring), by the sample's last program
                   (MLP_TAIL; without it the launch pools only, and the MLP runs over all samples
                   as GEMMs afterwards: tritattn/excitation_mlp.py — the split path)

    With a prologue (PRO_ACT ≠ "none"), x_ptr holds z or c and x = act(z) is computed on the fly
    (kernels/norm_act.py; the BatchNorm's weight, bias, running mean and variance at pw, pb, pm, pv).

    Minimum bytes: x read once (B·C·K·itemsize) + the [B, C] vectors written (mean, s in ACC; max
    in ACC and count int32 with max pooling). The weights are read once per sample, from L2 after
    the first; perf/bytes_model.py counts them once per block, not per kernel.
    Grid: rows_grid — one program per (b, BLOCK_R channels) looping over K; the sample's last
    program then runs its MLP with a BLOCK_J × MLP_BLOCK_C weight tile (BLOCK_J ≥ RD).
    """
    b, offs_r = row_block(R, BLOCK_R)
    mask_r = offs_r < R
    r64 = offs_r.to(tl.int64)
    want_max: tl.constexpr = POOL != "mean"
    scale, shift, _, _ = prologue_affine(pw_ptr, pb_ptr, pm_ptr, pv_ptr, p_eps, offs_r, mask_r, PRO_NORM, ACC)
    total, run_max, run_count, has_nan = pool_start(BLOCK_R, ACC)
    for start in range(0, K, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mask = mask_r[:, None] & (offs_k < K)[None, :]
        v = tl.load(x_ptr + b * sxb + r64[:, None] * sxr + offs_k.to(tl.int64)[None, :] * sxk, mask=mask,
                    other=0.0).to(ACC)
        x = prologue(v, mask, scale, shift, x_ptr, PRO_ACT, PRO_NORM)[0]
        total, run_max, run_count, has_nan = pool_tile(x, mask, total, run_max, run_count, has_nan, True, want_max)
    run_max = pooled_max(run_max, has_nan)
    tl.store(mean_ptr + b * R + r64, total / K, mask=mask_r)
    if want_max:
        tl.store(max_ptr + b * R + r64, run_max, mask=mask_r)
        tl.store(count_ptr + b * R + r64, run_count, mask=mask_r)
    if MLP_TAIL and last_of_sample(counter_ptr, b, tl.cdiv(R, BLOCK_R)):
        sample_logits(b, mean_ptr, max_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, bnw_ptr, bnb_ptr, bnm_ptr, bnv_ptr, s_ptr,
                      R, RD, bn_eps, sw1j, sw1c, sw2c, sw2j, POOL, MLP, ACT, PAD, TAPS, HAS_B1, HAS_B2, HIDDEN_NORM,
                      ACC, BLOCK_J, MLP_BLOCK_C)
        tl.store(counter_ptr + b, 0)


@triton.jit
def sample_pool_grads(
    b, grad_s_ptr, mean_ptr, max_ptr, w1_ptr, b1_ptr, w2_ptr, bnw_ptr, bnb_ptr, bnm_ptr, bnv_ptr,
    hidden_ptr, grad_h_ptr, grad_norm_ptr, grad_mean_ptr, grad_max_ptr,
    C, RD, bn_eps, sw1j, sw1c, sw2c, sw2j,
    POOL: tl.constexpr, MLP: tl.constexpr, ACT: tl.constexpr, PAD: tl.constexpr, TAPS: tl.constexpr,
    HAS_B1: tl.constexpr, HIDDEN_NORM: tl.constexpr, ACC: tl.constexpr, BLOCK_J: tl.constexpr, MLP_BLOCK_C: tl.constexpr,
):
    """The excitation's backward for one sample, from the complete grad_s[b, :]:

      "fc_act_fc": h recomputed; da = W2ᵀ · grad_s; grad_h = act'(h) · da (and grad_h_max);
                   hidden[b] = act(h) (+ act(h_max)), grad_h[b] (and grad_h_max[b] at + RD) stored
                   for the weight gradients; grad_v = W1ᵀ · grad_h (grad of max: W1ᵀ · grad_h_max).
                   HIDDEN_NORM: h = scale · h_pre + shift; grad_h is taken back through it
                   (× scale), and grad_norm[b] = (act'(h) · da, act'(h) · da · x̂) [2, RD],
                   x̂ = (h_pre - running_mean) / σ, kept for the BatchNorm's weight and bias
      "fc":        grad_v = Wᵀ · grad_s
      taps:        grad_v[c] = Σ_t w[t] · grad_s[c - t + PAD] (the transposed conv, same padding)
    then grad_mean = grad_v (and grad_max), or both 0.5 · grad_v for POOL = "mean_max_avg".
    """
    offs_j = tl.arange(0, BLOCK_J)
    mask_j = offs_j < RD
    if MLP == "fc_act_fc":
        h_pre, h_max_pre = hidden_pre_activation(b, mean_ptr, max_ptr, w1_ptr, b1_ptr, C, RD, sw1j, sw1c,
                                                 POOL, HAS_B1, ACC, BLOCK_J, MLP_BLOCK_C)
        h = h_pre
        h_max = h_max_pre
        if HIDDEN_NORM:
            scale, shift, inv_std, running_mean = eval_batchnorm(bnw_ptr, bnb_ptr, bnm_ptr, bnv_ptr, bn_eps,
                                                              offs_j, mask_j, ACC)
            h = h_pre * scale + shift
            h_max = h_max_pre * scale + shift
        da = tl.zeros([BLOCK_J], dtype=ACC)
        for c0 in range(0, C, MLP_BLOCK_C):
            offs_c = c0 + tl.arange(0, MLP_BLOCK_C)
            mask_c = offs_c < C
            w2 = tl.load(w2_ptr + offs_c[:, None] * sw2c + offs_j[None, :] * sw2j,
                         mask=mask_c[:, None] & mask_j[None, :], other=0.0).to(ACC)
            ds = tl.load(grad_s_ptr + b * C + offs_c, mask=mask_c, other=0.0, cache_modifier=".cg")
            da += tl.sum(w2 * ds[:, None], axis=0)
        grad_h = activation_backward(h, da, ACT)
        a = activation(h, ACT)
        grad_h_max = tl.zeros([BLOCK_J], dtype=ACC)
        if POOL == "mean_max_both":
            grad_h_max = activation_backward(h_max, da, ACT)
            a += activation(h_max, ACT)
        if HIDDEN_NORM:
            grad_x_hat = grad_h * ((h_pre - running_mean) * inv_std)
            grad_x_hat += grad_h_max * ((h_max_pre - running_mean) * inv_std)
            tl.store(grad_norm_ptr + b * 2 * RD + offs_j, grad_h + grad_h_max, mask=mask_j)
            tl.store(grad_norm_ptr + b * 2 * RD + RD + offs_j, grad_x_hat, mask=mask_j)
            grad_h = grad_h * scale
            grad_h_max = grad_h_max * scale
        if POOL == "mean_max_both":
            tl.store(grad_h_ptr + b * 2 * RD + RD + offs_j, grad_h_max, mask=mask_j)
            tl.store(grad_h_ptr + b * 2 * RD + offs_j, grad_h, mask=mask_j)
        else:
            tl.store(grad_h_ptr + b * RD + offs_j, grad_h, mask=mask_j)
        tl.store(hidden_ptr + b * RD + offs_j, a, mask=mask_j)
    elif MLP == "fc":
        grad_v_all = tl.zeros([BLOCK_J], dtype=ACC)  # RD = C: the whole input vector
        for c0 in range(0, C, MLP_BLOCK_C):
            offs_c = c0 + tl.arange(0, MLP_BLOCK_C)
            mask_c = offs_c < C
            w = tl.load(w2_ptr + offs_c[:, None] * sw2c + offs_j[None, :] * sw2j,
                        mask=mask_c[:, None] & mask_j[None, :], other=0.0).to(ACC)
            ds = tl.load(grad_s_ptr + b * C + offs_c, mask=mask_c, other=0.0, cache_modifier=".cg")
            grad_v_all += tl.sum(w * ds[:, None], axis=0)
        scale = 0.5 if POOL == "mean_max_avg" else 1.0
        tl.store(grad_mean_ptr + b * C + offs_j, scale * grad_v_all, mask=mask_j)
        if POOL == "mean_max_avg":
            tl.store(grad_max_ptr + b * C + offs_j, scale * grad_v_all, mask=mask_j)

    if MLP != "fc":
        for c0 in range(0, C, MLP_BLOCK_C):
            offs_c = c0 + tl.arange(0, MLP_BLOCK_C)
            mask_c = offs_c < C
            grad_max = tl.zeros([MLP_BLOCK_C], dtype=ACC)
            if MLP == "fc_act_fc":
                w1 = tl.load(w1_ptr + offs_j[:, None] * sw1j + offs_c[None, :] * sw1c,
                             mask=mask_j[:, None] & mask_c[None, :], other=0.0).to(ACC)
                grad_v = tl.sum(w1 * grad_h[:, None], axis=0)
                if POOL == "mean_max_both":
                    grad_max = tl.sum(w1 * grad_h_max[:, None], axis=0)
            else:
                grad_v = channel_conv(b, grad_s_ptr, grad_s_ptr, w1_ptr, w1_ptr, offs_c, mask_c, C, sw1c,
                                      POOL, TAPS, PAD, MLP == "taps_circular", True, False, ACC, BLOCK_J)
            if POOL == "mean_max_avg":
                grad_v = 0.5 * grad_v
                grad_max = grad_v
            tl.store(grad_mean_ptr + b * C + offs_c, grad_v, mask=mask_c)
            if POOL != "mean":
                tl.store(grad_max_ptr + b * C + offs_c, grad_max, mask=mask_c)


@triton.jit
def excitation_bwd_reduce(
    grad_y_ptr, x_ptr, y_ptr, sp_ptr, s_ptr, grad_s_ptr, counter_ptr,
    mean_ptr, max_ptr, count_ptr, w1_ptr, b1_ptr, w2_ptr, bnw_ptr, bnb_ptr, bnm_ptr, bnv_ptr,
    hidden_ptr, grad_h_ptr, grad_norm_ptr, grad_mean_ptr, grad_max_ptr,
    pw_ptr, pb_ptr, pm_ptr, pv_ptr, psum_ptr,
    R, K, RD, bn_eps, p_eps,
    sgyb, sgyr, sgyk,
    sxb, sxr, sxk,
    syb, syr, syk,
    sw1j, sw1c, sw2c, sw2j,
    GATE: tl.constexpr, ACT_OUT: tl.constexpr,
    POOL: tl.constexpr, MLP: tl.constexpr, ACT: tl.constexpr, PAD: tl.constexpr, TAPS: tl.constexpr,
    HAS_B1: tl.constexpr, HIDDEN_NORM: tl.constexpr, PRO_ACT: tl.constexpr, PRO_NORM: tl.constexpr,
    MLP_TAIL: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_J: tl.constexpr, MLP_BLOCK_C: tl.constexpr,
):
    """Backward, first launch (R = C, K = H×W): one pass over grad_y and x, then the MLP backward.

      d[b, c, k]    = grad_y · [not y ≤ 0] (ACT_OUT = "relu"; d = grad_y for identity; CBAM's
                      "spatial": :func:`block_output_grad`)
      x             = act(z) recomputed from the saved z or c with a prologue (PRO_ACT, PRO_NORM:
                      kernels/norm_act.py); with PRO_NORM (mean pooling) also psum [B, 4, C], the
                      sums over k of act'(z) · (d, 1, d · x̂, x̂) (kernels/prologue_norm.py)
      grad_s[b, c]  = gate'(s[b, c]) · Σ_k d · x                       fixed order, ACC
      mean, max, count [B, C] of x recomputed in the same pass (the forward does not save them)
      per sample, by its last program (MLP_TAIL): :func:`sample_pool_grads` → grad_mean, grad_max
      [B, C] (and hidden, grad_h [B, RD] for the weight gradients; grad_norm [B, 2, RD] with
      HIDDEN_NORM); without MLP_TAIL the MLP's backward runs over all samples as GEMMs afterwards
      (tritattn/excitation_mlp.py — the split path), and so do the weight gradients on either path

    Minimum bytes: grad_y and x read (+ y for relu; + sp [B, 4, K] for "spatial") + the per-sample vectors (s read; grad_s,
    mean, grad_mean written, + max, count, grad_max with max pooling; hidden, grad_h written).
    Grid: rows_grid — one program per (b, BLOCK_R channels) looping over K.
    """
    b, offs_r = row_block(R, BLOCK_R)
    mask_r = offs_r < R
    r64 = offs_r.to(tl.int64)
    rows = r64[:, None]
    want_max: tl.constexpr = POOL != "mean"
    s = tl.load(s_ptr + b * R + r64, mask=mask_r, other=0.0)
    g = gate_value(s, GATE)
    acc = tl.zeros([BLOCK_R], dtype=ACC)
    total, run_max, run_count, has_nan = pool_start(BLOCK_R, ACC)
    scale, shift, inv_std, p_mean = prologue_affine(pw_ptr, pb_ptr, pm_ptr, pv_ptr, p_eps, offs_r, mask_r, PRO_NORM, ACC)
    p_d = tl.zeros([BLOCK_R], dtype=ACC)
    p_one = p_d
    p_d_hat = p_d
    p_hat = p_d
    for start in range(0, K, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mask = mask_r[:, None] & (offs_k < K)[None, :]
        k64 = offs_k.to(tl.int64)[None, :]
        v = tl.load(x_ptr + b * sxb + rows * sxr + k64 * sxk, mask=mask, other=0.0).to(ACC)
        x, z = prologue(v, mask, scale, shift, x_ptr, PRO_ACT, PRO_NORM)
        d = block_output_grad(grad_y_ptr, y_ptr, sp_ptr, x_ptr, b * sgyb + rows * sgyr + k64 * sgyk,
                              b * syb + rows * syr + k64 * syk, x, g, b, offs_k, mask, K, ACT_OUT, ACC)
        acc += tl.sum(d * x, axis=1)
        total, run_max, run_count, has_nan = pool_tile(x, mask, total, run_max, run_count, has_nan, True, want_max)
        if PRO_NORM:
            slope = tl.where(mask, activation_backward(z, tl.full(z.shape, 1.0, ACC), PRO_ACT), 0.0)
            x_hat = (v - p_mean[:, None]) * inv_std[:, None]
            p_d += tl.sum(slope * d, axis=1)
            p_one += tl.sum(slope, axis=1)
            p_d_hat += tl.sum(slope * d * x_hat, axis=1)
            p_hat += tl.sum(slope * x_hat, axis=1)
    if PRO_NORM:
        base = psum_ptr + b * 4 * R + r64
        tl.store(base, p_d, mask=mask_r)
        tl.store(base + R, p_one, mask=mask_r)
        tl.store(base + 2 * R, p_d_hat, mask=mask_r)
        tl.store(base + 3 * R, p_hat, mask=mask_r)
    tl.store(grad_s_ptr + b * R + r64, gate_backward(s, acc, GATE), mask=mask_r)
    tl.store(mean_ptr + b * R + r64, total / K, mask=mask_r)
    if want_max:
        tl.store(max_ptr + b * R + r64, pooled_max(run_max, has_nan), mask=mask_r)
        tl.store(count_ptr + b * R + r64, run_count, mask=mask_r)
    if MLP_TAIL and last_of_sample(counter_ptr, b, tl.cdiv(R, BLOCK_R)):
        sample_pool_grads(b, grad_s_ptr, mean_ptr, max_ptr, w1_ptr, b1_ptr, w2_ptr, bnw_ptr, bnb_ptr, bnm_ptr, bnv_ptr,
                          hidden_ptr, grad_h_ptr, grad_norm_ptr, grad_mean_ptr, grad_max_ptr, R, RD, bn_eps,
                          sw1j, sw1c, sw2c, sw2j, POOL, MLP, ACT, PAD, TAPS, HAS_B1, HIDDEN_NORM, ACC, BLOCK_J,
                          MLP_BLOCK_C)
        tl.store(counter_ptr + b, 0)


@triton.jit
def excitation_bwd_apply(
    grad_y_ptr, x_ptr, y_ptr, sp_ptr, s_ptr, grad_x_ptr, grad_res_ptr,
    grad_mean_ptr, grad_max_ptr, max_ptr, count_ptr,
    pw_ptr, pb_ptr, pm_ptr, pv_ptr, sums_ptr, grad_s_ptr, tw_ptr,
    B, R, K, p_eps, stw,
    sgyb, sgyr, sgyk,
    sxb, sxr, sxk,
    syb, syr, syk,
    sgxb, sgxr, sgxk,
    sgrb, sgrr, sgrk,
    GATE: tl.constexpr, ACT_OUT: tl.constexpr, WRITE_GRAD_RES: tl.constexpr, POOL: tl.constexpr,
    PRO_ACT: tl.constexpr, PRO_NORM: tl.constexpr, BATCH_STATS: tl.constexpr,
    TAPS: tl.constexpr, PAD: tl.constexpr, CIRCULAR: tl.constexpr, BLOCK_T: tl.constexpr,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Backward, second launch: grad_x (and grad_residual), elementwise.

      d             = grad_y · [not y ≤ 0] (relu), grad_y, or CBAM's (:func:`block_output_grad`)
      grad_x        = d · gate(s[b, c]) + grad_mean[b, c] / K + [x == max] · grad_max[b, c] / count
      grad_residual = d                                              (WRITE_GRAD_RES)
      with a prologue (PRO_ACT): x = act(z) recomputed, and grad_z = act'(z) · grad_x is written;
      with PRO_NORM the BatchNorm's backward, grad_c = w/σ · (grad_z - S/N - x̂ · T/N) with the
      sums [2, C] of kernels/prologue_norm.py (BATCH_STATS), or w/σ · grad_z (running statistics)

    With TAPS > 0 (ECA's split path, POOL = "mean") grad_mean is not read but computed in every
    program for its rows: the taps' transposed conv of grad_s [B, C] (at grad_s_ptr, contiguous;
    the taps at tw_ptr, stride stw; BLOCK_T ≥ TAPS), channel_taps.channel_conv — the taps'
    vector and one gathered tile of grad_s in place of grad_mean's tile.

    One tile of grad_x per program (elementwise_grid order); the weight gradients are GEMMs over
    the batch on the [B, ·] workspaces (tritattn/excitation_mlp.py).
    Minimum bytes: grad_y read, grad_x written (+ y read and grad_residual written for relu, + x
    read with max pooling, "spatial" or a prologue, + sp for "spatial") + the per-sample vectors
    read (s, grad_mean; + max, count, grad_max with max pooling).
    """
    b, offs_r, offs_k = elementwise_tile(R, K, BLOCK_R, BLOCK_K)
    mask_r = offs_r < R
    mask = mask_r[:, None] & (offs_k < K)[None, :]
    r64 = offs_r.to(tl.int64)
    rows = r64[:, None]
    k64 = offs_k.to(tl.int64)[None, :]
    g = gate_value(tl.load(s_ptr + b * R + r64, mask=mask_r, other=0.0), GATE)
    has_max: tl.constexpr = POOL != "mean"
    x = tl.zeros([BLOCK_R, BLOCK_K], dtype=ACC)
    z = x
    v = x
    scale, shift, inv_std, p_mean = prologue_affine(pw_ptr, pb_ptr, pm_ptr, pv_ptr, p_eps, offs_r, mask_r,
                                                    PRO_NORM, ACC)
    if has_max or ACT_OUT == "spatial" or PRO_ACT != "none":
        v = tl.load(x_ptr + b * sxb + rows * sxr + k64 * sxk, mask=mask, other=0.0).to(ACC)
        x, z = prologue(v, mask, scale, shift, x_ptr, PRO_ACT, PRO_NORM)
    d = block_output_grad(grad_y_ptr, y_ptr, sp_ptr, x_ptr, b * sgyb + rows * sgyr + k64 * sgyk,
                          b * syb + rows * syr + k64 * syk, x, g, b, offs_k, mask, K, ACT_OUT, ACC)
    if WRITE_GRAD_RES:
        tl.store(grad_res_ptr + b * sgrb + rows * sgrr + k64 * sgrk, to_output(d, grad_res_ptr), mask=mask)
    if TAPS > 0:
        g_mean = channel_conv(b, grad_s_ptr, grad_s_ptr, tw_ptr, tw_ptr, offs_r, mask_r, R, stw,
                              POOL, TAPS, PAD, CIRCULAR, True, False, ACC, BLOCK_T)
    else:
        g_mean = tl.load(grad_mean_ptr + b * R + r64, mask=mask_r, other=0.0)
    g_max = g_mean
    m = g_mean
    n = g_mean
    if has_max:
        g_max = tl.load(grad_max_ptr + b * R + r64, mask=mask_r, other=0.0)
        m = tl.load(max_ptr + b * R + r64, mask=mask_r, other=0.0)
        n = tl.load(count_ptr + b * R + r64, mask=mask_r, other=1).to(ACC)
    grad_x = add_pool_grad(d * g[:, None], x, g_mean, g_max, m, n, K, True, has_max)
    if PRO_ACT != "none":
        grad_x = activation_backward(z, grad_x, PRO_ACT)
    if PRO_NORM:
        if BATCH_STATS:
            n = tl.zeros([BLOCK_R], dtype=ACC) + B * K
            total = tl.load(sums_ptr + r64, mask=mask_r, other=0.0) / n
            total_hat = tl.load(sums_ptr + R + r64, mask=mask_r, other=0.0) / n
            x_hat = (v - p_mean[:, None]) * inv_std[:, None]
            grad_x = grad_x - total[:, None] - x_hat * total_hat[:, None]
        grad_x = grad_x * scale[:, None]
    tl.store(grad_x_ptr + b * sgxb + rows * sgxr + k64 * sgxk, to_output(grad_x, grad_x_ptr), mask=mask)
