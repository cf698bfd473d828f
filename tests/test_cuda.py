"""Real model shapes through the tuned launch path, and CUDA-graph capture.

Every test here runs its body on every device: the model-sized shapes and the graph capture
itself need a GPU (they skip on CPU, with the reason shown by -ra), and the same bodies run on
small shapes — and, for the graph, with a plain call in place of the replay — through the Triton
interpreter on the CPU, so a wrong reference or a broken check is seen without a GPU.
"""
import pytest
import torch

import tritattn
from conftest import DEVICE, assert_close, make_input, reference_copy, residual_away_from_relu_kink

CUDA_ONLY = pytest.mark.skipif(
    DEVICE != "cuda", reason="CUDA-only size: the same test body runs on the small shapes through the interpreter"
)

#: (B, C, H, W) of real blocks at 224×224 input: SE-ResNet-50 stage 1 and 4, EfficientNet-B0 stage 2.
MODEL_SHAPES = [(8, 256, 56, 56), (8, 2048, 7, 7), (8, 96, 112, 112)]
SMALL_SHAPES = [(2, 24, 7, 7), (1, 37, 3, 5)]
SHAPES = [pytest.param(s, id="x".join(map(str, s))) for s in SMALL_SHAPES] + [
    pytest.param(s, id="x".join(map(str, s)), marks=CUDA_ONLY) for s in MODEL_SHAPES
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_se_block_at_model_shapes(shape, dtype, channels_last):
    """relu(x · sigmoid((mean + max)(x) @ w) + residual), the logits computed in ``dtype``. The
    reference takes the same rounded logits (their values; its gradient path is float64's), so
    forward and grad_residual are checked to one rounding; grad_x, which also flows back through
    the 16-bit matmul, normwise."""
    B, C = shape[:2]
    x = make_input(shape, dtype, channels_last, requires_grad=True)
    residual = make_input(shape, dtype, channels_last)
    w = make_input((C, C), dtype, scale=C ** -0.5)
    mean, maximum = tritattn.squeeze(x, "mean_max")
    s = (mean + maximum) @ w
    residual_away_from_relu_kink(x, torch.sigmoid(s.detach().double())[:, :, None, None], residual)
    residual.requires_grad_()
    y = tritattn.excite_scale(x, s, "sigmoid", residual, "relu")

    xr, rr = reference_copy(x), reference_copy(residual)
    logits = (xr.mean((2, 3)) + xr.amax((2, 3))) @ w.double()
    logits = logits + (s.detach().double() - logits).detach()  # the kernel's rounded values, float64's gradient
    yr = torch.relu(xr * torch.sigmoid(logits)[:, :, None, None] + rr)
    assert_close(y, yr, what="forward")
    cot = torch.randn(shape, device=DEVICE, dtype=torch.float64).to(dtype)
    y.backward(cot)
    yr.backward(cot.double())
    assert_close(residual.grad, rr.grad, what="grad_residual")
    err = (x.grad.double() - xr.grad).norm() / xr.grad.norm()
    assert err < 5e-3, f"relative grad_x error {err:.3g}"


@pytest.mark.parametrize("capture", [pytest.param(True, marks=CUDA_ONLY, id="cuda_graph"), pytest.param(False, id="plain_call")])
def test_graph_replays_the_kernels(capture):
    """A CBAM-like spatial block captured in a CUDA graph (``capture``) replays on fresh input to
    the values of a direct call, and those match the float64 reference of the scaling. Without ``capture`` the
    same body runs with a plain call in place of the replay."""
    shape = (4, 64, 14, 14) if DEVICE == "cuda" else (2, 12, 5, 6)
    x = make_input(shape, torch.float16, channels_last=True)
    t = make_input((shape[0], 1, *shape[2:]), torch.float16, channels_last=True)

    def logits(x):
        return t + tritattn.spatial_pool(x).sum(1, keepdim=True)

    def block(x):
        return tritattn.spatial_scale(x, logits(x))

    expected = block(x)  # first call tunes and compiles outside the capture
    static_x = x.clone()
    if capture:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = block(static_x)
        replay = graph.replay
    else:
        static_out = torch.empty_like(expected)

        def replay():
            static_out.copy_(block(static_x))

    fresh = make_input(x.shape, torch.float16, channels_last=True)
    static_x.copy_(fresh)
    replay()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    assert torch.equal(static_out, block(fresh))
    assert not torch.equal(static_out, expected)
    # the reference scales by the same rounded logits (spatial_pool itself is checked in test_ops.py)
    assert_close(static_out, fresh.double() * torch.sigmoid(logits(fresh).double()), what="replayed output")
