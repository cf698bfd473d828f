"""Gated scaling y = act(x[b, r, k] · gate(s[b, r]) + residual[b, r, k]), and its fused backward.

Channel excitation (SE, ECA, CBAM channel branch): R = C, K = H×W, s = [B, C] logits.
CBAM spatial scaling: R = H×W, K = C, s = the [B, 1, H, W] output of the 7×7 conv.
x[b, r, k] is at x_ptr + b·sxb + r·sxr + k·sxk; s[b, r] at s_ptr + b·ssb + r·ssr.
gate ∈ {"sigmoid", "hard_sigmoid"} (gates.py); act ∈ {"identity", "relu"}.
All arithmetic in ACC (float32; float64 for float64 inputs) with one rounding to the output dtype.
"""
import triton
import triton.language as tl

from .channel_taps import channel_conv
from .gates import gate_backward, gate_value
from .norm_act import prologue, prologue_affine
from .program_tiles import elementwise_tile, row_block
from .rounding import to_output
from .tiling import ELEMENTWISE_TILES, ROW_TILES, oriented_configs

# Autotuning spaces (pruned per problem by tiling.prune_configs). Both kernels store every output
# element exactly once (grad_s from a private accumulator) and accumulate into no output, so a
# config can be benchmarked on the real arguments repeatedly without reset_to_zero / restore_value.
#: gated_scale_fwd has no loop: one stage.
GATED_SCALE_FWD_CONFIGS = oriented_configs(ELEMENTWISE_TILES, num_warps=(2, 4, 8), num_stages=(1,))
#: gated_scale_bwd loops over K: the pipeline depth (num_stages) matters.
GATED_SCALE_BWD_CONFIGS = oriented_configs(ROW_TILES, num_warps=(2, 4, 8), num_stages=(1, 2, 3))


@triton.jit
def epilogue_grad(grad_y_ptr, y_ptr, gy_offs, y_offs, mask, ACT: tl.constexpr, ACC: tl.constexpr):
    """d, the gradient at the epilogue's input, in ACC: grad_y · [not y ≤ 0] for ACT = "relu" (as
    torch's threshold_backward: a NaN y passes grad_y), grad_y for "identity" (y not read)."""
    d = tl.load(grad_y_ptr + gy_offs, mask=mask, other=0.0).to(ACC)
    if ACT == "relu":
        y = tl.load(y_ptr + y_offs, mask=mask, other=0.0).to(ACC)
        d = tl.where(y <= 0.0, 0.0, d)
    return d


@triton.jit
def gated_scale_fwd(
    x_ptr, s_ptr, res_ptr, y_ptr, pw_ptr, pb_ptr, pm_ptr, pv_ptr, mean_ptr, max_ptr, tw_ptr, tb_ptr,
    R, K, p_eps, stw,
    sxb, sxr, sxk,
    ssb, ssr,
    srb, srr, srk,
    syb, syr, syk,
    GATE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACT: tl.constexpr,
    PRO_ACT: tl.constexpr, PRO_NORM: tl.constexpr,
    TAPS: tl.constexpr, PAD: tl.constexpr, CIRCULAR: tl.constexpr, POOL: tl.constexpr, HAS_TAP_BIAS: tl.constexpr,
    BLOCK_T: tl.constexpr,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y[b, r, k] = act(x[b, r, k] · gate(s[b, r]) (+ residual[b, r, k])).

    gate(s) is evaluated once per row of the tile. With a prologue (PRO_ACT ≠ "none"; rows are
    channels), x = act(z) is computed from what x_ptr holds (kernels/norm_act.py; the
    BatchNorm's parameters at pw, pb, pm, pv with PRO_NORM). With TAPS > 0 (ECA's split path;
    rows are channels) s is not read but computed, channel_taps.channel_conv over the pooled
    workspaces at mean_ptr / max_ptr (contiguous [B, C]) with the taps at tw_ptr (stride stw)
    and the bias at tb_ptr (BLOCK_T ≥ TAPS, a power of 2), and stored to s_ptr by the programs of
    the first column block.
    Minimum bytes: x read + y written (+ residual read) = (2 or 3)·B·R·K·itemsize + B·R·itemsize(s)
    (with TAPS: B·R·acc v read, B·R·acc s written).
    Grid: elementwise_grid — one program per (b, row block, column block). With TAPS every
    program loads the taps' vector, the tile of v its rows' taps read (two with "mean_max_avg")
    and the bias in place of s's one tile — each program its own rows: no program waits for
    another — and the first column block's store s too (one store more: the longest program).
    """
    b, offs_r, offs_k = elementwise_tile(R, K, BLOCK_R, BLOCK_K)
    mask_r = offs_r < R
    mask = mask_r[:, None] & (offs_k < K)[None, :]
    r64 = offs_r.to(tl.int64)
    k64 = offs_k.to(tl.int64)[None, :]

    if TAPS > 0:
        s = channel_conv(b, mean_ptr, max_ptr, tw_ptr, tb_ptr, offs_r, mask_r, R, stw,
                         POOL, TAPS, PAD, CIRCULAR, False, HAS_TAP_BIAS, ACC, BLOCK_T)
        if tl.program_id(0) % tl.cdiv(K, BLOCK_K) == 0:
            tl.store(s_ptr + b * ssb + r64 * ssr, s, mask=mask_r)
    else:
        s = tl.load(s_ptr + b * ssb + r64 * ssr, mask=mask_r, other=0.0).to(ACC)
    g = gate_value(s, GATE)
    x = tl.load(x_ptr + b * sxb + r64[:, None] * sxr + k64 * sxk, mask=mask, other=0.0).to(ACC)
    scale, shift, _, _ = prologue_affine(pw_ptr, pb_ptr, pm_ptr, pv_ptr, p_eps, offs_r, mask_r, PRO_NORM, ACC)
    x = prologue(x, mask, scale, shift, x_ptr, PRO_ACT, PRO_NORM)[0]
    y = x * g[:, None]
    if HAS_RESIDUAL:
        y += tl.load(res_ptr + b * srb + r64[:, None] * srr + k64 * srk, mask=mask, other=0.0).to(ACC)
    if ACT == "relu":
        y = tl.where(y < 0.0, 0.0, y)  # NaN stays NaN, as in torch.relu
    tl.store(y_ptr + b * syb + r64[:, None] * syr + k64 * syk, to_output(y, y_ptr), mask=mask)


@triton.jit
def gated_scale_bwd(
    grad_y_ptr, x_ptr, s_ptr, y_ptr, grad_x_ptr, grad_res_ptr, grad_s_ptr,
    R, K,
    sgyb, sgyr, sgyk,
    sxb, sxr, sxk,
    ssb, ssr,
    syb, syr, syk,
    sgxb, sgxr, sgxk,
    sgrb, sgrr, sgrk,
    sgsb, sgsr,
    GATE: tl.constexpr, ACT: tl.constexpr, WRITE_GRAD_RES: tl.constexpr,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Backward of gated_scale_fwd in one pass over (grad_y, x):

      d[b, r, k]     = grad_y[b, r, k] · [not y[b, r, k] ≤ 0]  (relu; d = grad_y for identity)
      grad_x         = d · gate(s[b, r])
      grad_residual  = d                                      (written only when WRITE_GRAD_RES)
      grad_s[b, r]   = gate'(s[b, r]) · Σ_k d[b, r, k] · x[b, r, k]

    Grid: rows_grid — one program per (b, row block) looping over K, so Σ_k is a private ACC
    accumulator (float32, float64 for float64 inputs) summed in a fixed order: deterministic, no atomics, no second pass over x.
    Minimum bytes: grad_y, x read and grad_x written (+ y read, grad_residual written for relu)
    = (3 or 5)·B·R·K·itemsize + B·R·itemsize(s) read + B·R·itemsize(s) written.
    """
    b, offs_r = row_block(R, BLOCK_R)
    mask_r = offs_r < R
    r64 = offs_r.to(tl.int64)
    rows = r64[:, None]

    s = tl.load(s_ptr + b * ssb + r64 * ssr, mask=mask_r, other=0.0).to(ACC)
    g = gate_value(s, GATE)
    acc = tl.zeros([BLOCK_R], dtype=ACC)
    for start in range(0, K, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mask = mask_r[:, None] & (offs_k < K)[None, :]
        k64 = offs_k.to(tl.int64)[None, :]
        d = epilogue_grad(grad_y_ptr, y_ptr, b * sgyb + rows * sgyr + k64 * sgyk, b * syb + rows * syr + k64 * syk,
                          mask, ACT, ACC)
        x = tl.load(x_ptr + b * sxb + rows * sxr + k64 * sxk, mask=mask, other=0.0).to(ACC)
        grad_x = to_output(d * g[:, None], grad_x_ptr)
        tl.store(grad_x_ptr + b * sgxb + rows * sgxr + k64 * sgxk, grad_x, mask=mask)
        if WRITE_GRAD_RES:
            tl.store(grad_res_ptr + b * sgrb + rows * sgrr + k64 * sgrk, to_output(d, grad_res_ptr), mask=mask)
        acc += tl.sum(d * x, axis=1)
    grad_s = gate_backward(s, acc, GATE)
    tl.store(grad_s_ptr + b * sgsb + r64 * sgsr, to_output(grad_s, grad_s_ptr), mask=mask_r)
