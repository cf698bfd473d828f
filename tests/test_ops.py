"""Every functional op, forward and backward, against its float64 reference.

Grid: shapes with H×W ∈ {49, 1, 3×5, 28×28, 112×112}, C ∈ {1, 3, 6, 37, 130} (not powers of
two), batch 1 and >1; NCHW and channels_last; float32 / float16 / bfloat16; default tiles and
tiny tiles (many loop iterations and ragged edges). Outputs are NaN-poisoned before the kernels
write them (conftest), inputs are fresh standard-normal draws.
"""
import pytest
import torch
import torch.nn.functional as F

import tritattn
from conftest import (
    DEVICE, assert_close, assert_same_layout, logit_grad_scale, make_input, reference_copy,
    residual_away_from_relu_kink, use_small_tiles,
)

SMALL_SHAPES = [(2, 6, 7, 7), (1, 37, 1, 1), (3, 3, 3, 5), (2, 1, 4, 4)]
LARGE_SHAPES = [(1, 130, 28, 28), (1, 5, 112, 112)]
#: Tiny tiles multiply the number of interpreted programs (~3000 for 130×28×28), so they run on
#: the small shapes, where they already force several loop iterations and ragged edges per row.
SHAPE_CASES = [
    pytest.param((shape, tiles), id=f"{'x'.join(map(str, shape))}-{tiles}")
    for shape in SMALL_SHAPES + LARGE_SHAPES
    for tiles in (("default_tiles", "small_tiles") if shape in SMALL_SHAPES else ("default_tiles",))
]


@pytest.fixture(params=SHAPE_CASES)
def shape(request, monkeypatch):
    shape, tiles = request.param
    if tiles == "small_tiles":
        use_small_tiles(monkeypatch)
    return shape


def backward_with(out, ref_out, grad_dtype):
    """Backprop the same random cotangent through the op and through the reference; returns it."""
    cot = torch.randn(out.shape, dtype=torch.float64, device=out.device).to(grad_dtype)
    out.backward(cot)
    ref_out.backward(cot.double())
    return cot



@pytest.mark.parametrize("mode", ["mean", "max", "mean_max"])
def test_squeeze(shape, dtype, channels_last, mode):
    x = make_input(shape, dtype, channels_last, requires_grad=True)
    xr = reference_copy(x)
    out = tritattn.squeeze(x, mode)
    ref = {"mean": xr.mean((2, 3)), "max": xr.amax((2, 3))}
    outs, refs = (out, (ref["mean"], ref["max"])) if mode == "mean_max" else ((out,), (ref[mode],))
    for o, r in zip(outs, refs):
        assert o.dtype == dtype
        assert_close(o, r, what=f"squeeze {mode} forward")
    cots = [torch.randn(o.shape, dtype=torch.float64, device=DEVICE) for o in outs]
    torch.autograd.backward([o for o in outs], [c.to(dtype) for c in cots])
    torch.autograd.backward(list(refs), [c.to(dtype).double() for c in cots])
    assert_same_layout(x.grad, x)
    assert_close(x.grad, xr.grad, what=f"squeeze {mode} grad_x")


@pytest.mark.parametrize(
    "gate, epilogue",
    [("sigmoid", "plain"), ("hard_sigmoid", "plain"), ("sigmoid", "residual"), ("hard_sigmoid", "residual_relu")],
)
def test_excite_scale(shape, dtype, channels_last, gate, epilogue):
    B, C = shape[:2]
    x = make_input(shape, dtype, channels_last, requires_grad=True)
    s = make_input((B, C), dtype, requires_grad=True, scale=2.0)
    residual = make_input(shape, dtype, channels_last, requires_grad=True) if epilogue != "plain" else None
    act = "relu" if epilogue == "residual_relu" else "identity"
    gate_fn = torch.sigmoid if gate == "sigmoid" else F.hardsigmoid
    if act == "relu":
        residual_away_from_relu_kink(x, gate_fn(s.double())[:, :, None, None], residual)

    y = tritattn.excite_scale(x, s, gate, residual, act)
    xr, sr = reference_copy(x), reference_copy(s)
    yr = xr * gate_fn(sr)[:, :, None, None]
    if residual is not None:
        rr = reference_copy(residual)
        yr = yr + rr
    if act == "relu":
        yr = torch.relu(yr)
    assert y.dtype == dtype
    assert_same_layout(y, x)
    assert_close(y, yr, what="excite_scale forward")

    cot = backward_with(y, yr, dtype)
    assert_close(x.grad, xr.grad, what="grad_x")
    assert_close(s.grad, sr.grad, what="grad_s", scale=logit_grad_scale(cot, x, gate, (2, 3)))
    if residual is not None:
        assert_close(residual.grad, rr.grad, what="grad_residual")


def test_excite_scale_accepts_4d_logits(dtype):
    x = make_input((2, 6, 3, 5), dtype, requires_grad=True)
    s = make_input((2, 6, 1, 1), dtype, requires_grad=True)
    y = tritattn.excite_scale(x, s)
    xr, sr = reference_copy(x), reference_copy(s)
    yr = xr * torch.sigmoid(sr)
    assert_close(y, yr, what="forward")
    cot = backward_with(y, yr, dtype)
    assert s.grad.shape == s.shape
    assert_close(s.grad, sr.grad, what="grad_s", scale=logit_grad_scale(cot, x, "sigmoid", (2, 3)))


def test_spatial_pool(shape, dtype, channels_last):
    x = make_input(shape, dtype, channels_last, requires_grad=True)
    xr = reference_copy(x)
    p = tritattn.spatial_pool(x)
    pr = torch.cat([xr.mean(1, keepdim=True), xr.amax(1, keepdim=True)], dim=1)
    assert p.dtype == dtype
    if channels_last and shape[1] > 1:
        assert p.is_contiguous(memory_format=torch.channels_last)
    assert_close(p, pr, what="spatial_pool forward")
    backward_with(p, pr, dtype)
    assert_same_layout(x.grad, x)
    assert_close(x.grad, xr.grad, what="spatial_pool grad_x")


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_spatial_scale(shape, dtype, channels_last, gate):
    B, _, H, W = shape
    x = make_input(shape, dtype, channels_last, requires_grad=True)
    t = make_input((B, 1, H, W), dtype, channels_last, requires_grad=True, scale=2.0)
    y = tritattn.spatial_scale(x, t, gate)
    xr, tr = reference_copy(x), reference_copy(t)
    yr = xr * (torch.sigmoid(tr) if gate == "sigmoid" else F.hardsigmoid(tr))
    assert y.dtype == dtype
    assert_same_layout(y, x)
    assert_close(y, yr, what="spatial_scale forward")
    cot = backward_with(y, yr, dtype)
    assert_close(x.grad, xr.grad, what="grad_x")
    assert_close(t.grad, tr.grad, what="grad_t", scale=logit_grad_scale(cot, x, gate, (1,)))


def test_max_gradient_is_split_between_ties_like_amax():
    """Exact ties (the max appears several times): torch.amax splits the gradient evenly."""
    x = torch.tensor([[[[1.0, 3.0, 3.0], [0.5, 3.0, -2.0]]]], dtype=torch.float64, device=DEVICE).repeat(2, 4, 1, 1)
    x = x.clone().requires_grad_()
    xr = reference_copy(x)
    tritattn.squeeze(x, "max").sum().backward()
    xr.amax((2, 3)).sum().backward()
    assert torch.equal(x.grad.double().cpu(), xr.grad.cpu())
    assert x.grad[0, 0, 0, 1].item() == pytest.approx(1 / 3)

    x.grad = None
    xr.grad = None
    tritattn.spatial_pool(x)[:, 1].sum().backward()
    xr.amax(1).sum().backward()
    assert torch.equal(x.grad.double().cpu(), xr.grad.cpu())


@pytest.mark.parametrize("op", ["squeeze", "spatial_pool"])
def test_max_ties_in_different_tiles_share_the_gradient(op, monkeypatch):
    """A max that recurs in a later tile of the reduction (tiny tiles: at most 8 along K) counts
    every tie, so each gets 1/count of the gradient, as with torch.amax: K = 16 over H×W for the
    squeeze, over C for CBAM's spatial pooling, maxima at the first and the last position."""
    use_small_tiles(monkeypatch)
    x = -torch.rand(2, 16, 4, 4, dtype=torch.float64, device=DEVICE) - 1.0  # all below the ties
    if op == "squeeze":
        x[:, :, 0, 0] = x[:, :, 3, 3] = 2.0  # K = H×W = 16: flat positions 0 and 15
    else:
        x[:, 0] = x[:, 15] = 2.0  # K = C = 16: channels 0 and 15
    x.requires_grad_()
    xr = reference_copy(x)
    if op == "squeeze":
        tritattn.squeeze(x, "max").sum().backward()
        xr.amax((2, 3)).sum().backward()
    else:
        tritattn.spatial_pool(x)[:, 1].sum().backward()
        xr.amax(1).sum().backward()
    assert torch.equal(x.grad.double().cpu(), xr.grad.cpu())
    assert (x.grad == 0.5).sum().item() == 2 * 2 * 16, "½ to each of the two ties of every row"
