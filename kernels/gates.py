"""Gate functions shared by the scaling kernels, evaluated in the accumulator dtype.

``GATE`` is a compile-time string:

- ``"sigmoid"``       g(s) = 1 / (1 + exp(-s)),            g'(s) = g (1 - g) = e / (1 + e)^2,
                                                            e = exp(-|s|)
- ``"hard_sigmoid"``  g(s) = clamp(s + 3, 0, 6) / 6,       g'(s) = 1/6 on (-3, 3), else 0
  (torch.nn.functional.hardsigmoid and timm's hard_sigmoid; the derivative matches
  torch's hardsigmoid_backward, which is 0 at the two kinks)

NaN and ±Inf as in torch: hard_sigmoid(NaN) is NaN — passed through explicitly, since
tl.maximum / tl.minimum are the NaN-dropping fmax / fmin by default, on the GPU and in the
interpreter alike (a select, rather than ``propagate_nan=``, works for every dtype and triton
version) — and hardsigmoid's backward *selects* grad / 6 or 0 (0 outside (-3, 3) even for a NaN
or infinite incoming gradient), where sigmoid's multiplies.
"""
import triton
import triton.language as tl


@triton.jit
def gate_value(s, GATE: tl.constexpr):
    if GATE == "sigmoid":
        g = 1.0 / (1.0 + tl.exp(-s))
    else:
        g = tl.minimum(tl.maximum(s + 3.0, 0.0), 6.0) / 6.0
        g = tl.where(s != s, s, g)  # NaN in, NaN out (tl.maximum is fmax: it drops NaN)
    return g


@triton.jit
def gate_backward(s, grad, GATE: tl.constexpr):
    """grad · g'(s), as torch's sigmoid_backward / hardsigmoid_backward. The sigmoid's derivative
    is e / (1 + e)^2 with e = exp(-|s|), a few ulps from exact for every s: torch's g (1 - g)
    loses 1 - g to cancellation as g → 1 (relative error eps / (1 - g): 2e-4 in float32 at s = 8),
    and at s > 17 rounds g to 1 and the derivative to 0 (so an infinite grad gives NaN, not ±Inf)."""
    if GATE == "sigmoid":
        e = tl.exp(-tl.abs(s))
        d = grad * (e / ((1.0 + e) * (1.0 + e)))
    else:
        d = tl.where((s > -3.0) & (s < 3.0), grad / 6.0, 0.0)
    return d
