"""A BatchNorm in eval and an activation, elementwise in ACC: the hidden layer of an SE MLP, and
the prologue of a channel-attention block (its producer's BatchNorm and activation).

The prologue. In EfficientNet, MobileNetV3, MnasNet and RegNetY the block's input is
x = act(bn(c)), read by nothing but the block. With ``PRO_ACT`` ≠ "none" the block's kernels
load instead, at every place they would load x,

    PRO_NORM = False:  z, and x = act(z)
    PRO_NORM = True:   c, the BatchNorm's input; z = c · scale + shift with the mean and variance
                       given (:func:`eval_batchnorm`): the running statistics in eval, the
                       batch's (kernels/prologue_norm.py) in training; x = act(z)

z and x each rounded to the input's dtype, as eager materialises them, so every kernel that
recomputes x (forward and backward) gets the same bits, and eager's up to the activation's own
last-bit rounding. x and z are never written; the backward takes ∂L/∂z = act'(z) · ∂L/∂x and,
with PRO_NORM, the BatchNorm's backward (kernels/prologue_norm.py).
"""
import triton
import triton.language as tl

from .rounding import as_materialised

#: The activations with a kernel: "relu" (NaN stays NaN, as torch.relu), "silu", "hardswish"
#: (x · clamp(x + 3, 0, 6) / 6, as torch), "identity".
ACTIVATIONS = ("relu", "silu", "hardswish", "identity")


@triton.jit
def activation(h, ACT: tl.constexpr):
    """act(h) for ACT in :data:`ACTIVATIONS`."""
    if ACT == "relu":
        h = tl.where(h < 0.0, 0.0, h)
    elif ACT == "silu":
        h = h / (1.0 + tl.exp(-h))
    elif ACT == "hardswish":
        h = tl.where(h != h, h, h * tl.minimum(tl.maximum(h + 3.0, 0.0), 6.0) / 6.0)
    return h


@triton.jit
def activation_backward(h, grad, ACT: tl.constexpr):
    """grad · act'(h), as torch's backward of each: relu as threshold_backward (0 where
    relu(h) ≤ 0); silu'(h) = σ(h) · (1 + h · (1 - σ(h))); hardswish' = 0 below -3,
    h / 3 + 1/2 on [-3, 3], 1 above (hardswish_backward)."""
    if ACT == "relu":
        grad = tl.where(h > 0.0, grad, 0.0)
    elif ACT == "silu":
        sig = 1.0 / (1.0 + tl.exp(-h))
        grad = grad * (sig * (1.0 + h * (1.0 - sig)))
    elif ACT == "hardswish":
        grad = tl.where(h < -3.0, 0.0, tl.where(h <= 3.0, grad * (h / 3.0 + 0.5), grad))
    return grad


@triton.jit
def eval_batchnorm(w_ptr, b_ptr, mean_ptr, var_ptr, eps, offs, mask, ACC: tl.constexpr):
    """A BatchNorm in eval as h ↦ h · scale + shift at the channels ``offs``: (scale, shift, 1/σ,
    running mean), σ = sqrt(running_var + eps), scale = weight / σ, shift = bias - running_mean · scale."""
    inv_std = 1.0 / tl.sqrt(tl.load(var_ptr + offs, mask=mask, other=1.0).to(ACC) + eps)
    scale = tl.load(w_ptr + offs, mask=mask, other=0.0).to(ACC) * inv_std
    mean = tl.load(mean_ptr + offs, mask=mask, other=0.0).to(ACC)
    return scale, tl.load(b_ptr + offs, mask=mask, other=0.0).to(ACC) - mean * scale, inv_std, mean


@triton.jit
def prologue_affine(w_ptr, b_ptr, mean_ptr, var_ptr, eps, offs_r, mask_r, PRO_NORM: tl.constexpr, ACC: tl.constexpr):
    """(scale, shift, 1/σ, mean) [BLOCK_R] of the prologue's BatchNorm at rows (channels)
    ``offs_r`` (:func:`eval_batchnorm`); zeros without PRO_NORM (then unused)."""
    if PRO_NORM:
        scale, shift, inv_std, mean = eval_batchnorm(w_ptr, b_ptr, mean_ptr, var_ptr, eps, offs_r, mask_r, ACC)
    else:
        scale = tl.zeros(offs_r.shape, dtype=ACC)
        shift = scale
        inv_std = scale
        mean = scale
    return scale, shift, inv_std, mean


@triton.jit
def prologue(v, mask, scale, shift, x_ptr, PRO_ACT: tl.constexpr, PRO_NORM: tl.constexpr):
    """(x, z) for a [BLOCK_R, BLOCK_K] tile ``v`` loaded from x_ptr (in ACC, rows = channels):
    z = v, or v · scale + shift with PRO_NORM, rounded to x_ptr's dtype; x = act(z) rounded, 0
    where masked (so sums over the tile stay right). Without a prologue, (v, v)."""
    z = v
    x = v
    if PRO_ACT != "none":
        if PRO_NORM:
            z = as_materialised(v * scale[:, None] + shift[:, None], x_ptr)
        x = tl.where(mask, as_materialised(activation(z, PRO_ACT), x_ptr), 0.0)
    return x, z
