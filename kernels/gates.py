"""Gate functions shared by the scaling kernels, evaluated in the accumulator dtype.

``GATE`` is a compile-time string:

- ``"sigmoid"``       g(s) = 1 / (1 + exp(-s)),            g'(s) = g (1 - g)
- ``"hard_sigmoid"``  g(s) = clamp(s + 3, 0, 6) / 6,       g'(s) = 1/6 on (-3, 3), else 0
  (torch.nn.functional.hardsigmoid and timm's hard_sigmoid; the derivative matches
  torch's hardsigmoid_backward, which is 0 at the two kinks)
"""
import triton
import triton.language as tl


@triton.jit
def gate_value(s, GATE: tl.constexpr):
    if GATE == "sigmoid":
        g = 1.0 / (1.0 + tl.exp(-s))
    else:
        g = tl.minimum(tl.maximum(s + 3.0, 0.0), 6.0) / 6.0
    return g


@triton.jit
def gate_derivative(s, g, GATE: tl.constexpr):
    if GATE == "sigmoid":
        d = g * (1.0 - g)
    else:
        d = tl.where((s > -3.0) & (s < 3.0), 1.0 / 6.0, 0.0)
    return d
