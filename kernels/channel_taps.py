"""The excitation's input v and ECA's taps over the channel axis, as device helpers.

v[b, c] = mean[b, c], or 0.5·mean + 0.5·max with POOL = "mean_max_avg" (the [B, C] workspaces,
contiguous, in ACC). ECA / CECA's excitation is a 1-D convolution over the channels:

    s[b, c] = Σ_t w[t] · v[b, c + t - PAD] (+ bias),  t = 0 … TAPS-1, PAD = (TAPS-1)/2

with zero padding (ECA) or circular padding (CECA) of the channel axis, and its transpose (v's
gradient from s's), both :func:`channel_conv`: on the one-launch path in a sample's last program
(excitation.sample_logits, sample_pool_grads: MLP_BLOCK_C channels at a time), on the split path
in every program of the scale launch (gated_scale.gated_scale_fwd with TAPS) and of the
backward's apply launch (excitation.excitation_bwd_apply with TAPS) for its own channels — the
same sums in the same order on both paths.
"""
import triton
import triton.language as tl


@triton.jit
def pooled_input(mean_ptr, max_ptr, offs, mask, POOL: tl.constexpr):
    """The MLP's input v at flat workspace offsets: the mean, or 0.5·mean + 0.5·max."""
    v = tl.load(mean_ptr + offs, mask=mask, other=0.0, cache_modifier=".cg")
    if POOL == "mean_max_avg":
        v = 0.5 * v + 0.5 * tl.load(max_ptr + offs, mask=mask, other=0.0, cache_modifier=".cg")
    return v


@triton.jit
def channel_tap(offs_c, mask_c, C, shift, CIRCULAR: tl.constexpr):
    """(index, valid) of channel c + shift: wrapped around for circular padding, else masked out
    beyond the ends (zero padding). Circular padding assumes |shift| ≤ C, as F.pad does."""
    idx = offs_c + shift
    if CIRCULAR:
        idx = tl.where(idx < 0, idx + C, tl.where(idx >= C, idx - C, idx))
        valid = mask_c
    else:
        valid = mask_c & (idx >= 0) & (idx < C)
    return idx, valid


@triton.jit
def channel_conv(
    b, u_ptr, u2_ptr, w_ptr, bias_ptr, offs_c, mask_c, C, sw,
    POOL: tl.constexpr, TAPS: tl.constexpr, PAD: tl.constexpr, CIRCULAR: tl.constexpr, TRANSPOSED: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """For the channels offs_c of sample b: the taps' conv Σ_t w[t] · u[b, c + t - PAD] (+ bias) —
    s from v (module docstring), u = :func:`pooled_input`'s of u_ptr, u2_ptr — or with TRANSPOSED
    its transpose Σ_t w[t] · u[b, c - t + PAD], the gradient of v from s's, u at u_ptr alone;
    u read from the [B, C] workspaces at b·C + c, the taps w at w_ptr (stride sw, their own dtype;
    BLOCK_T ≥ TAPS), the scalar bias at bias_ptr. u's shifted channels are gathered as one
    [channels, BLOCK_T] tile, Σ over the taps one reduction (a fixed order). Memory instructions:
    the taps' vector, u's tile (two with "mean_max_avg", not TRANSPOSED), the bias."""
    t = tl.arange(0, BLOCK_T)
    mask_t = t < TAPS
    w = tl.load(w_ptr + t * sw, mask=mask_t, other=0.0).to(ACC)
    shift = PAD - t[None, :] if TRANSPOSED else t[None, :] - PAD
    idx, valid = channel_tap(offs_c[:, None], mask_c[:, None] & mask_t[None, :], C, shift, CIRCULAR)
    if TRANSPOSED:
        u = tl.load(u_ptr + b * C + idx, mask=valid, other=0.0, cache_modifier=".cg")
    else:
        u = pooled_input(u_ptr, u2_ptr, b * C + idx, valid, POOL)
    out = tl.sum(u * w[None, :], axis=1)
    if HAS_BIAS:
        out += tl.load(bias_ptr).to(ACC)
    return out
