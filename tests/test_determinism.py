"""Determinism: forward and backward give bitwise identical results run to run for the same input.

No kernel uses atomics: every reduction (mean / max over K, grad_s / grad_t over K) is a private
per-program accumulator summed in a fixed order, and every output element is stored once. So
there is a single path, deterministic with or without ``torch.use_deterministic_algorithms(True)``
(which must not make any op raise). Each case runs forward + backward twice, with tiles small
enough that every reduction loops over several blocks, and compares every output bit for bit.
"""
import pytest
import torch

import tritattn
from conftest import make_input, use_small_tiles

SHAPE = (2, 11, 3, 7)  # with small tiles (≤ 8 along K) every reduction loops over 2-3 blocks


def assert_bitwise_equal(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    """Same shape, dtype and bits (so NaN == NaN, and 0.0 != -0.0)."""
    assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
    as_int = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}[a.element_size()]
    differ = a.detach().view(as_int) != b.detach().view(as_int)
    assert not differ.any(), f"{what}: {int(differ.sum())} elements differ in their bits, first at {differ.nonzero()[0].tolist()}"


@pytest.fixture(params=[False, True], ids=["default", "use_deterministic_algorithms"])
def deterministic(request):
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(request.param)
    yield request.param
    torch.use_deterministic_algorithms(before)


def run(op: str, inputs: dict[str, torch.Tensor], cotangent_seed: int):
    """(outputs, gradients) of one forward + backward of ``op``."""
    x = inputs["x"]
    if op == "squeeze":
        outs = tritattn.squeeze(x, "mean_max")
    elif op == "spatial_pool":
        outs = (tritattn.spatial_pool(x),)
    elif op == "excite_scale":
        outs = (tritattn.excite_scale(x, inputs["s"], "sigmoid", inputs["residual"], "relu"),)
    else:
        outs = (tritattn.spatial_scale(x, inputs["t"], "hard_sigmoid"),)
    g = torch.Generator(device=x.device).manual_seed(cotangent_seed)
    cots = [torch.randn(o.shape, generator=g, device=o.device, dtype=torch.float32).to(o.dtype) for o in outs]
    grads = torch.autograd.grad(outs, list(inputs.values()), cots)
    return [o.detach() for o in outs], list(grads)


@pytest.mark.parametrize("op", ["squeeze", "spatial_pool", "excite_scale", "spatial_scale"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_twice_bitwise_identical(op, dtype, channels_last, deterministic, monkeypatch):
    use_small_tiles(monkeypatch)
    B, C, H, W = SHAPE
    inputs = {"x": make_input(SHAPE, dtype, channels_last, requires_grad=True, scale=3.0)}
    if op == "excite_scale":
        inputs["s"] = make_input((B, C), dtype, requires_grad=True)
        inputs["residual"] = make_input(SHAPE, dtype, channels_last, requires_grad=True)
    elif op == "spatial_scale":
        inputs["t"] = make_input((B, 1, H, W), dtype, channels_last, requires_grad=True)
    first, second = run(op, inputs, 1), run(op, inputs, 1)
    for what, a, b in zip(("outputs", "gradients"), first, second):
        for i, (u, v) in enumerate(zip(a, b)):
            assert_bitwise_equal(u, v, f"{op} {what}[{i}]")
