"""Test set-up: where the kernels run, poisoned outputs, tolerances, input factories.

Without a CUDA device the Triton kernels run in Triton's interpreter on the CPU: the
``TRITON_INTERPRET=1`` switch must be set before triton is first imported, so it happens here,
at the top of the first module pytest loads. Set ``TRITATTN_TEST_BACKEND=torch`` to test the
eager fallback instead.
"""
import os

import torch

if not torch.cuda.is_available() and os.environ.get("TRITATTN_TEST_BACKEND", "interpreter") == "interpreter":
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

import tritattn  # noqa: E402
from tritattn import ops  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Allowed |out - ref| <= ATOL · max|ref| + RTOL · |ref| against the float64 reference, per output
#: dtype. The kernels accumulate in float32 and round once to the output dtype, so the error is one
#: rounding of the output (half an ulp: 2^-11 for float16, 2^-8 for bfloat16, 2^-24 for float32)
#: plus float32 summation error over at most ~10^4 terms (< 1e-6 relative). RTOL is twice the
#: half-ulp for the 16-bit types. ATOL covers elements that cancel to near zero, where a relative
#: bound is meaningless: one rounding at the scale of the quantity, the largest |ref| of the tensor
#: (a fixed absolute floor would let a whole gradient of size 1/(H·W) be zero, or twice too large).
TOLERANCES = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (8e-3, 8e-3),
}

#: A ReLU input within KINK_RTOL · (magnitude of the terms it adds) + KINK_ATOL of 0 may take
#: either branch in float32 arithmetic (or, below float16's smallest subnormal, round to 0), so its
#: gradient belongs to rounding luck. 1e-5 is ~80 float32 roundings; 1e-6 is above float16's
#: underflow (3e-8). Test inputs are redrawn until no element is that close.
KINK_RTOL, KINK_ATOL = 1e-5, 1e-6


@pytest.fixture(autouse=True)
def fresh_seed():
    """Fresh random inputs for every test, with the seed printed (shown when a test fails);
    ``TRITATTN_TEST_SEED=<n>`` replays one."""
    seed = int(os.environ.get("TRITATTN_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    torch.manual_seed(seed)
    print(f"TRITATTN_TEST_SEED={seed}")


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every output the ops allocate is NaN-filled before the kernel writes it."""
    monkeypatch.setattr(ops, "poison_outputs", True)


def expected_backend() -> str:
    if DEVICE == "cuda":
        return "triton"
    return "torch" if os.environ.get("TRITATTN_TEST_BACKEND") == "torch" else "triton-interpreter"


def assert_close(
    out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype | None = None, what: str = "", scale: float | None = None
) -> None:
    """out (any dtype) against a float64 reference, with the tolerance of ``dtype`` (default out's):
    |out - ref| <= atol · scale + rtol · |ref| elementwise (:data:`TOLERANCES`). ``scale`` is the
    size of the quantity, by default max|ref|; a tensor that cancels to ~0 as a whole (the gradient
    of a bias followed by a BatchNorm) is measured against the group it belongs to."""
    atol, rtol = TOLERANCES[dtype or out.dtype]
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    assert not out64.isnan().any(), f"{what}: NaN in output (unwritten element?)"
    if not ref64.numel():
        return
    scale = ref64.abs().max().item() if scale is None else scale
    err = (out64 - ref64).abs()
    bound = atol * scale + rtol * ref64.abs()
    worst = (err - bound).argmax()
    assert (err <= bound).all(), (
        f"{what}: max |err| {err.max().item():.3g} exceeds atol {atol} · max|ref| {scale:.3g} + rtol {rtol}·|ref| "
        f"(worst at flat index {worst.item()}: out {out64.flatten()[worst].item()!r}, ref {ref64.flatten()[worst].item()!r})"
    )


def make_input(shape, dtype, channels_last: bool = False, requires_grad: bool = False, scale: float = 1.0):
    """Fresh standard-normal data, rounded to dtype, in the requested layout."""
    x = (torch.randn(shape, dtype=torch.float64) * scale).to(device=DEVICE, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


def logit_grad_scale(cot, x, gate, dims) -> float:
    """The size of grad_s / grad_t = gate'(s) · Σ cot · x over ``dims``: its terms', max |gate'| ·
    Σ |cot · x| (a sum that cancels to ~0 keeps the float32 error of its terms)."""
    return (cot.double().abs() * x.detach().double().abs()).sum(dims).max().item() * (0.25 if gate == "sigmoid" else 1 / 6)


def relu_kink_near(pre: torch.Tensor, terms: torch.Tensor) -> torch.Tensor:
    """Where a ReLU input ``pre`` (float64) is within reach of the kink at 0, given ``terms``, the
    magnitude of what was summed to make it (:data:`KINK_RTOL`, :data:`KINK_ATOL`). ±Inf and NaN
    are never near: they are on one side in every precision."""
    return pre.isfinite() & (pre.abs() <= KINK_RTOL * terms + KINK_ATOL)


def residual_away_from_relu_kink(x: torch.Tensor, gate: torch.Tensor, residual: torch.Tensor) -> None:
    """Redraw, in place, the elements of ``residual`` (a dense leaf) where x · gate + residual, the
    input of an epilogue ReLU, is within reach of 0 in float64 (:func:`relu_kink_near`): on a 16-bit
    grid x · gate can cancel the residual exactly, and the kernel's float32 result and the float64
    reference then have independent signs. ``gate`` is the float64 gate value, broadcast against x."""
    with torch.no_grad():
        for _ in range(100):
            scaled = x.double() * gate
            near = relu_kink_near(scaled + residual.double(), scaled.abs() + residual.double().abs())
            if not near.any():
                return
            residual[near] = torch.randn(int(near.sum()), dtype=torch.float64, device=residual.device).to(residual.dtype)
    raise AssertionError("could not draw a residual away from the ReLU's kink")


def reference_copy(t: torch.Tensor) -> torch.Tensor:
    """A float64 leaf copy of t, for the reference computation."""
    return t.detach().double().requires_grad_(t.requires_grad)


@pytest.fixture(params=[False, True], ids=["nchw", "channels_last"])
def channels_last(request):
    return request.param


@pytest.fixture(params=DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def dtype(request):
    return request.param


def use_small_tiles(monkeypatch) -> None:
    """Tiny tiles, so every kernel loops over several blocks and masks ragged edges (tuning off)."""
    from tritattn import tuning
    from tritattn.kernels import tiling

    monkeypatch.setattr(tuning, "AUTOTUNE", False)
    monkeypatch.setattr(tiling, "TILE_ELEMENTS", 32)
    monkeypatch.setattr(tiling, "LONG_SIDE_MAX", 8)


def assert_same_layout(out: torch.Tensor, like: torch.Tensor) -> None:
    """Same memory layout as ``like``: equal strides on every dimension of size > 1."""
    significant = [(o, l) for o, l, n in zip(out.stride(), like.stride(), like.shape) if n > 1]
    assert all(o == l for o, l in significant), f"strides {out.stride()} differ from {like.stride()} (shape {tuple(like.shape)})"


# --- hypothesis profiles (tests/test_properties.py) -------------------------------------------
# Chosen with --hypothesis-profile=NAME; "ci" is the default. The interpreter is slow, so the CI
# profile is small and derandomized (the same cases every run, no flaky discoveries in CI); the
# long one explores new random cases each run and is meant to be started by hand:
#     pytest tests/test_properties.py --hypothesis-profile=long
from hypothesis import HealthCheck, settings  # noqa: E402

_HYPOTHESIS_COMMON = dict(
    deadline=None,  # a kernel's first interpreted launch for a new specialisation takes a while
    # the autouse poisoned_outputs fixture is function-scoped; it stays valid across examples
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
#: 4 property tests × 100 = 400 cases, ≈ 30 s on 2 CPU cores under the interpreter.
settings.register_profile("ci", max_examples=100, derandomize=True, database=None, **_HYPOTHESIS_COMMON)
#: 4 × 1500 = 6000 cases, ≈ 9 min there.
settings.register_profile("long", max_examples=1500, **_HYPOTHESIS_COMMON)
settings.load_profile("ci")
