"""Numerics as in torch: NaN / ±Inf, float16 overflow, once-rounded 16-bit outputs, long reductions.

- NaN and ±Inf in x, in the logits and in the residual: every output and gradient has NaN, +Inf
  and -Inf exactly where torch's float64 computation has them (torch.amax for max, including
  its backward, which spreads NaN over a row whose max is NaN), finite elements within tolerance.
- float16 rows whose sum overflows float16 still have the right mean (float32 accumulation).
- float16 / bfloat16 outputs are rounded once: within half an ulp of the exact result.
- 512×512 planes and C = 4096: the reduction order keeps the error within TOLERANCES.
"""
import pytest
import torch
import torch.nn.functional as F

import tritattn
from conftest import DEVICE, assert_close, make_input, reference_copy, residual_away_from_relu_kink

NAN, INF = float("nan"), float("inf")
SHAPE = (3, 5, 4, 6)  # B, C, H, W


def assert_same_nonfinite(out: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """NaN, +Inf and -Inf exactly where ``ref`` (float64) has them; the finite rest within tolerance."""
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    assert out64.shape == ref64.shape, f"{what}: shape {tuple(out64.shape)} != {tuple(ref64.shape)}"
    for kind, test in (("NaN", torch.isnan), ("+Inf", torch.isposinf), ("-Inf", torch.isneginf)):
        wrong = test(out64) != test(ref64)
        assert not wrong.any(), (
            f"{what}: {kind} positions differ from torch at {wrong.nonzero().tolist()[:4]} "
            f"(out {out64[wrong][:4].tolist()}, torch {ref64[wrong][:4].tolist()})"
        )
    finite = ref64.isfinite()
    assert_close(out64[finite], ref64[finite], dtype=out.dtype, what=f"{what} (finite elements)")


def special_values(shape, dtype, channels_last, requires_grad=True):
    """Standard-normal x with NaN / ±Inf planted so that, over H×W and over C, there are rows with
    one NaN, an all-NaN row, +Inf (single and tied), -Inf, +Inf together with -Inf, all -Inf."""
    x = torch.randn(shape, dtype=torch.float64)
    x[0, 0, 1, 2] = NAN
    x[0, 1, 2, 3] = INF
    x[0, 2, 0, 0], x[0, 2, 3, 5] = INF, -INF
    x[0, 3] = -INF
    x[1, 0, 0, 1], x[1, 0, 3, 3] = NAN, INF
    x[1, 1, 2, 2] = -INF
    x[1, 2, 0, 4] = x[1, 2, 3, 1] = INF
    x[2, 4] = NAN
    x[2, :, 0, 0] = -INF  # over C: an all -Inf pixel
    x[2, :, 1, 1] = INF
    x[2, 1:3, 2, 2] = NAN
    x = x.to(device=DEVICE, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


def finite_cotangent(out: torch.Tensor) -> torch.Tensor:
    return torch.randn(out.shape, dtype=torch.float64, device=out.device).to(out.dtype)


@pytest.mark.parametrize("mode", ["mean", "max", "mean_max"])
def test_squeeze_nan_inf_as_torch(dtype, channels_last, mode):
    x = special_values(SHAPE, dtype, channels_last)
    xr = reference_copy(x)
    out = tritattn.squeeze(x, mode)
    outs = out if mode == "mean_max" else (out,)
    refs = {"mean": (xr.mean((2, 3)),), "max": (xr.amax((2, 3)),), "mean_max": (xr.mean((2, 3)), xr.amax((2, 3)))}[mode]
    for o, r in zip(outs, refs):
        assert_same_nonfinite(o, r, f"squeeze {mode} forward")
    cots = [finite_cotangent(o) for o in outs]
    torch.autograd.backward(list(outs), cots)
    torch.autograd.backward(list(refs), [c.double() for c in cots])
    assert_same_nonfinite(x.grad, xr.grad, f"squeeze {mode} grad_x")


def test_spatial_pool_nan_inf_as_torch(dtype, channels_last):
    x = special_values(SHAPE, dtype, channels_last)
    xr = reference_copy(x)
    p = tritattn.spatial_pool(x)
    pr = torch.cat([xr.mean(1, keepdim=True), xr.amax(1, keepdim=True)], dim=1)
    assert_same_nonfinite(p, pr, "spatial_pool forward")
    cot = finite_cotangent(p)
    p.backward(cot)
    pr.backward(cot.double())
    assert_same_nonfinite(x.grad, xr.grad, "spatial_pool grad_x")


def gate_fn(gate):
    return torch.sigmoid if gate == "sigmoid" else F.hardsigmoid


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("act", ["identity", "relu"])
def test_excite_scale_nan_inf_as_torch(dtype, channels_last, gate, act):
    B, C = SHAPE[:2]
    x = special_values(SHAPE, dtype, channels_last)
    s = torch.randn(B, C, dtype=torch.float64) * 4  # some logits outside hard_sigmoid's (-3, 3)
    s[0, 0], s[0, 1], s[0, 2], s[1, 3], s[2, 0] = NAN, INF, -INF, INF, -INF
    s = s.to(device=DEVICE, dtype=dtype).requires_grad_()
    residual = make_input(SHAPE, dtype, channels_last)
    residual[1, 4, 0, 0], residual[2, 3, 1, 2] = -INF, NAN
    if act == "relu":
        residual_away_from_relu_kink(x, gate_fn(gate)(s.double())[:, :, None, None], residual)
    residual.requires_grad_()

    y = tritattn.excite_scale(x, s, gate, residual, act)
    xr, sr, rr = reference_copy(x), reference_copy(s), reference_copy(residual)
    yr = xr * gate_fn(gate)(sr)[:, :, None, None] + rr
    if act == "relu":
        yr = torch.relu(yr)
    assert_same_nonfinite(y, yr, "excite_scale forward")
    cot = finite_cotangent(y)
    y.backward(cot)
    yr.backward(cot.double())
    for name, g, gr in (("grad_x", x.grad, xr.grad), ("grad_s", s.grad, sr.grad), ("grad_residual", residual.grad, rr.grad)):
        assert_same_nonfinite(g, gr, f"excite_scale {name}")


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_spatial_scale_nan_inf_as_torch(dtype, channels_last, gate):
    B, _, H, W = SHAPE
    x = special_values(SHAPE, dtype, channels_last)
    t = torch.randn(B, 1, H, W, dtype=torch.float64) * 4
    t[0, 0, 0, 0], t[0, 0, 1, 2], t[1, 0, 2, 2], t[2, 0, 3, 3] = NAN, INF, -INF, INF
    t = t.to(device=DEVICE, dtype=dtype).requires_grad_()

    y = tritattn.spatial_scale(x, t, gate)
    xr, tr = reference_copy(x), reference_copy(t)
    yr = xr * gate_fn(gate)(tr)
    assert_same_nonfinite(y, yr, "spatial_scale forward")
    cot = finite_cotangent(y)
    y.backward(cot)
    yr.backward(cot.double())
    assert_same_nonfinite(x.grad, xr.grad, "spatial_scale grad_x")
    assert_same_nonfinite(t.grad, tr.grad, "spatial_scale grad_t")


# --- accumulation and rounding ---------------------------------------------------------------

def test_float16_mean_whose_sum_overflows_float16():
    """Values near float16's maximum (65504): every row sums far beyond it, the mean does not."""
    x = (60000.0 + 100.0 * torch.randn(2, 64, 16, 16, dtype=torch.float64)).to(DEVICE, torch.float16)
    assert torch.isinf(x.sum((2, 3), dtype=torch.float16)).all()  # the premise: float16 sums overflow
    xr = x.double()
    assert_close(tritattn.squeeze(x, "mean"), xr.mean((2, 3)), what="squeeze mean")
    mean, maximum = tritattn.squeeze(x, "mean_max")
    assert_close(mean, xr.mean((2, 3)), what="squeeze mean_max: mean")
    assert_close(maximum, xr.amax((2, 3)), what="squeeze mean_max: max")
    assert_close(tritattn.spatial_pool(x)[:, 0], xr.mean(1), what="spatial_pool mean over C = 64")


def assert_rounded_once(out: torch.Tensor, exact: torch.Tensor, what: str, magnitude: torch.Tensor | None = None) -> None:
    """|out - exact| ≤ half an ulp of ``out``'s dtype at |exact|, plus the float32 arithmetic's
    error, 1e-6 · ``magnitude`` (the size of the terms combined: default |exact|): the exact value
    rounded once. An intermediate rounding to the 16-bit type can cost a full ulp. (Triton's
    interpreter truncates float32 → bfloat16; the kernels round bfloat16 outputs to nearest
    themselves, kernels/rounding.py, so half an ulp holds there too.)"""
    finfo = torch.finfo(out.dtype)
    out64, exact64 = out.detach().double().cpu(), exact.detach().double().cpu()
    _, exponent = torch.frexp(exact64)
    # ulp of a normal number with |exact| in [2^(e-1), 2^e) is 2^(e-1)·eps; subnormals are spaced tiny·eps
    ulp = torch.ldexp(torch.full_like(exact64, finfo.eps), exponent - 1).clamp_min(finfo.smallest_normal * finfo.eps)
    allowed = ulp / 2
    err = (out64 - exact64).abs()
    bound = allowed + 1e-6 * (exact64.abs() if magnitude is None else magnitude.detach().double().cpu())
    worst = (err / bound).argmax()
    assert (err <= bound).all(), (
        f"{what}: error {err.flatten()[worst].item():.3g} > 1/2 ulp "
        f"({allowed.flatten()[worst].item():.3g}) at {exact64.flatten()[worst].item()!r} (out {out64.flatten()[worst].item()!r})"
    )


@pytest.mark.parametrize("dtype16", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_16bit_outputs_are_rounded_once(dtype16, channels_last):
    shape = (2, 8, 12, 12)
    x = make_input(shape, dtype16, channels_last, scale=3.0)
    s = make_input(shape[:2], dtype16, scale=2.0)
    residual = make_input(shape, dtype16, channels_last)
    t = make_input((2, 1, 12, 12), dtype16, channels_last, scale=2.0)
    xr, sr, rr, tr = x.double(), s.double(), residual.double(), t.double()
    mean, maximum = tritattn.squeeze(x, "mean_max")
    assert_rounded_once(mean, xr.mean((2, 3)), "squeeze mean", magnitude=xr.abs().mean((2, 3)))
    assert torch.equal(maximum.double(), xr.amax((2, 3))), "squeeze max must be exact"
    pooled = tritattn.spatial_pool(x)
    assert_rounded_once(pooled[:, 0], xr.mean(1), "spatial_pool mean", magnitude=xr.abs().mean(1))
    assert torch.equal(pooled[:, 1].double(), xr.amax(1)), "spatial_pool max must be exact"
    y = tritattn.excite_scale(x, s, "sigmoid", residual)
    scaled = xr * torch.sigmoid(sr)[:, :, None, None]
    assert_rounded_once(y, scaled + rr, "excite_scale(x, s) + residual", magnitude=scaled.abs() + rr.abs())
    y = tritattn.spatial_scale(x, t, "hard_sigmoid")
    assert_rounded_once(y, xr * F.hardsigmoid(tr), "spatial_scale")


# --- long reductions -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
def test_512x512_plane(dtype):
    """Reductions over H×W = 262144: squeeze (mean, max) and excite_scale's grad_s. The data has a
    non-zero mean, so an order-dependent float32 error would show relative to the result."""
    x = (1.0 + torch.randn(1, 2, 512, 512, dtype=torch.float64)).to(DEVICE, dtype).requires_grad_()
    s = make_input((1, 2), dtype, requires_grad=True)
    xr, sr = reference_copy(x), reference_copy(s)
    mean, maximum = tritattn.squeeze(x, "mean_max")
    assert_close(mean, xr.mean((2, 3)), what="squeeze mean over 512×512")
    assert_close(maximum, xr.amax((2, 3)), what="squeeze max over 512×512")
    y = tritattn.excite_scale(x, s)
    yr = xr * torch.sigmoid(sr)[:, :, None, None]
    # Mean 1/16: grad_s ≈ gate'(s) · 2^14 stays in float16's range (the reference is float64).
    cot = ((1.0 + torch.randn(y.shape, dtype=torch.float64, device=DEVICE)) / 16).to(dtype)
    y.backward(cot)
    yr.backward(cot.double())
    assert_close(s.grad, sr.grad, what="excite_scale grad_s: sum over 512×512")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_4096_channels(dtype, channels_last):
    """Reductions over C = 4096: spatial_pool's mean / max and spatial_scale's grad_t; squeeze with
    4096 rows."""
    x = (1.0 + torch.randn(1, 4096, 3, 5, dtype=torch.float64)).to(DEVICE, dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    t = make_input((1, 1, 3, 5), dtype, channels_last, requires_grad=True)
    xr, tr = reference_copy(x), reference_copy(t)
    pooled = tritattn.spatial_pool(x)
    assert_close(pooled, torch.cat([xr.mean(1, keepdim=True), xr.amax(1, keepdim=True)], 1), what="spatial_pool over C = 4096")
    assert_close(tritattn.squeeze(x, "mean"), xr.mean((2, 3)), what="squeeze, 4096 rows")
    y = tritattn.spatial_scale(x, t)
    yr = xr * torch.sigmoid(tr)
    cot = (1.0 + torch.randn(y.shape, dtype=torch.float64, device=DEVICE)).to(dtype)
    y.backward(cot)
    yr.backward(cot.double())
    assert_close(t.grad, tr.grad, what="spatial_scale grad_t: sum over C = 4096")
    assert_close(x.grad, xr.grad, what="spatial_scale grad_x")


@pytest.mark.parametrize("op", ["excite_scale", "spatial_scale"])
def test_sigmoid_derivative_is_exact_for_saturated_logits(op):
    """float32 logits far out on the sigmoid's tails: each grad_s (grad_t) element within float32
    rounding of its own value (no floor at the tensor's scale) of the exact e^-|s| / (1 + e^-|s|)^2
    · Σ x · cotangent. g·(1 - g) would lose 1 - g to cancellation (2e-4 relative at s = 8) and give
    0 from s ≈ 17 on (float64's from s ≈ 37 on, so the reference is not torch's backward). x and
    the cotangent are positive, so the sum cannot cancel: its float32 error stays a few ulps of it."""
    logits = torch.tensor([8.0, -9.5, 12.0, 16.5, 20.0, -30.0, 60.0], dtype=torch.float64)
    n = logits.numel()
    shape = (1, n, 3, 5) if op == "excite_scale" else (1, 4, 1, n)
    x = make_input(shape, torch.float32).abs().requires_grad_()
    s = (logits.reshape(1, n) if op == "excite_scale" else logits.reshape(1, 1, 1, n)).to(DEVICE, torch.float32)
    s.requires_grad_()
    y = tritattn.excite_scale(x, s) if op == "excite_scale" else tritattn.spatial_scale(x, s)
    cot = finite_cotangent(y).abs()
    y.backward(cot)
    e = torch.exp(-logits.abs())
    products = x.detach().double() * cot.double()
    dot = products.sum((2, 3)) if op == "excite_scale" else products.sum(1, keepdim=True)
    exact = dot * (e / (1 + e) ** 2).reshape(s.shape)
    assert_close(s.grad, exact, what=f"{op}: grad of saturated logits", scale=0.0)
