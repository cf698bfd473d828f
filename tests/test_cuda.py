"""CUDA-only checks: real model shapes through the tuned launch path, and CUDA-graph capture.

On a machine without a GPU these skip (pytest -ra lists them with the reason); their CPU twins
are tests/test_ops.py and tests/test_modules.py, which run the same kernels in the interpreter.
"""
import pytest
import torch

import tritattn
from conftest import assert_close, make_input, reference_copy

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="CUDA-only: needs a GPU (CPU twins: test_ops.py / test_modules.py run these kernels in the interpreter)",
)

#: (B, C, H, W) of real blocks at 224×224 input: SE-ResNet-50 stage 1 and 4, EfficientNet-B0 stage 2.
MODEL_SHAPES = [(8, 256, 56, 56), (8, 2048, 7, 7), (8, 96, 112, 112)]


@pytest.mark.parametrize("shape", MODEL_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_se_block_at_model_shapes(shape, dtype, channels_last):
    B, C = shape[:2]
    x = make_input(shape, dtype, channels_last, requires_grad=True)
    residual = make_input(shape, dtype, channels_last, requires_grad=True)
    w = make_input((C, C), dtype, scale=C ** -0.5)
    mean, maximum = tritattn.squeeze(x, "mean_max")
    y = tritattn.excite_scale(x, (mean + maximum) @ w, "sigmoid", residual, "relu")
    xr, rr = reference_copy(x), reference_copy(residual)
    yr = torch.relu(xr * torch.sigmoid((xr.mean((2, 3)) + xr.amax((2, 3))) @ w.double())[:, :, None, None] + rr)
    assert_close(y, yr, what="forward")
    cot = torch.randn(shape, device="cuda", dtype=torch.float64).to(dtype)
    y.backward(cot)
    yr.backward(cot.double())
    assert_close(residual.grad, rr.grad, what="grad_residual")
    # grad_x sums gate-path terms through two reductions of C·HW products: compare by norm
    err = (x.grad.double() - xr.grad).norm() / xr.grad.norm()
    assert err < 5e-3, f"relative grad_x error {err:.3g}"


def test_cuda_graph_capture_replays_the_kernels():
    x = make_input((4, 64, 14, 14), torch.float16, channels_last=True)
    t = make_input((4, 1, 14, 14), torch.float16, channels_last=True)

    def block(x):
        return tritattn.spatial_scale(x, t + tritattn.spatial_pool(x).sum(1, keepdim=True))

    expected = block(x)  # first call tunes and compiles outside the capture
    graph = torch.cuda.CUDAGraph()
    static_x = x.clone()
    with torch.cuda.graph(graph):
        static_out = block(static_x)
    fresh = make_input(x.shape, torch.float16, channels_last=True)
    static_x.copy_(fresh)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(static_out, block(fresh))
    assert not torch.equal(static_out, expected)
