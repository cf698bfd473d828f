"""Property-based tests: hypothesis drives random shapes, memory layouts, dtypes, gates, epilogues
and tile sizes through every functional op, forward and backward, against the float64 reference,
and checks that no op writes into its inputs (nor into the memory around a strided view, nor into
the incoming gradient).

Layouts cover the dense ones (NCHW, channels_last) and the rest, which must be read correctly
— in place through their strides, or copied — never with the wrong strides: H/W transposed,
strided W or C (slices of a larger tensor), an offset into the storage, and stride-0 broadcasts
over the batch, over H×W (every element of a row tied for the max) and over C.

Profiles (tests/conftest.py): "ci", the default, runs 4 tests × 100 = 400 derandomized cases
(≈ 30 s on 2 CPU cores under the interpreter); ``--hypothesis-profile=long`` runs 4 × 1500 = 6000
random cases (≈ 9 min there), to be started by hand.
"""
from __future__ import annotations

import contextlib

import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import tritattn
from tritattn.kernels import tiling
from conftest import assert_close, logit_grad_scale, make_input, reference_copy, relu_kink_near
from test_determinism import assert_bitwise_equal

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
LAYOUTS = [
    "nchw", "channels_last", "transposed_hw", "strided_w", "strided_c_channels_last", "storage_offset",
    "broadcast_batch", "broadcast_hw", "broadcast_c",
]
VECTOR_LAYOUTS = ["contiguous", "transposed", "strided", "broadcast_batch", "4d"]  # for s [B, C]


def arrange(shape, dtype, layout: str, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, base): a fresh [B, C, H, W] tensor requiring grad, laid out as ``layout``, and the leaf
    tensor owning the memory it views (so writes anywhere in that memory can be detected)."""
    B, C, H, W = shape
    new = lambda s, cl=False: make_input(s, dtype, cl, requires_grad=True, scale=scale)  # noqa: E731
    views = {
        "nchw": lambda: (new(shape), lambda b: b),
        "channels_last": lambda: (new(shape, True), lambda b: b),
        "transposed_hw": lambda: (new((B, C, W, H)), lambda b: b.transpose(2, 3)),
        "strided_w": lambda: (new((B, C, H, 2 * W)), lambda b: b[..., 1::2]),
        "strided_c_channels_last": lambda: (new((B, 2 * C, H, W), True), lambda b: b[:, ::2]),
        "storage_offset": lambda: (new((B + 1, C, H, W)), lambda b: b[1:]),
        "broadcast_batch": lambda: (new((1, C, H, W)), lambda b: b.expand(shape)),
        "broadcast_hw": lambda: (new((B, C, 1, 1)), lambda b: b.expand(shape)),
        "broadcast_c": lambda: (new((B, 1, H, W)), lambda b: b.expand(shape)),
    }
    base, view = views[layout]()
    return view(base), base


def arrange_logits(B, C, dtype, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, base) for excite_scale's [B, C] (or [B, C, 1, 1]) logits."""
    new = lambda s: make_input(s, dtype, requires_grad=True, scale=2.0)  # noqa: E731
    views = {
        "contiguous": lambda: (new((B, C)), lambda b: b),
        "transposed": lambda: (new((C, B)), lambda b: b.t()),
        "strided": lambda: (new((B, 2 * C)), lambda b: b[:, ::2]),
        "broadcast_batch": lambda: (new((1, C)), lambda b: b.expand(B, C)),
        "4d": lambda: (new((B, C, 1, 1)), lambda b: b),
    }
    base, view = views[layout]()
    return view(base), base


@contextlib.contextmanager
def tiles(choice: tuple[int, int] | None):
    """The default tile heuristic (None), or (TILE_ELEMENTS, LONG_SIDE_MAX) shrunk so the kernels
    loop over several blocks and mask ragged edges."""
    saved = tiling.TILE_ELEMENTS, tiling.LONG_SIDE_MAX
    if choice is not None:
        tiling.TILE_ELEMENTS, tiling.LONG_SIDE_MAX = choice
    try:
        yield
    finally:
        tiling.TILE_ELEMENTS, tiling.LONG_SIDE_MAX = saved


shapes = st.tuples(st.integers(1, 3), st.integers(1, 12), st.integers(1, 9), st.integers(1, 9))
dtypes = st.sampled_from(DTYPES)
layouts = st.sampled_from(LAYOUTS)
tile_choices = st.sampled_from([None, (32, 8)])
seeds = st.integers(0, 2**31 - 1)
gates = st.sampled_from(["sigmoid", "hard_sigmoid"])


def hardsigmoid_ref(s: torch.Tensor) -> torch.Tensor:
    """F.hardsigmoid with its derivative exact in float64: torch's own hardsigmoid_backward
    multiplies by a float32 1/6 (1.7e-8 relative error) even for float64 tensors. Like
    torch's, the derivative is 1/6 on (-3, 3) and 0 elsewhere, kinks included."""
    return torch.where((s > -3) & (s < 3), (s + 3) / 6, (s >= 3).to(s.dtype))


GATE_REFS = {"sigmoid": torch.sigmoid, "hard_sigmoid": hardsigmoid_ref}


def companion_dtype(x_dtype: torch.dtype, same: bool) -> torch.dtype:
    """The logits / residual dtype: x's, or float32 (as under autocast). Not float64 with a lower
    x: the kernels accumulate in float32 unless x itself is float64."""
    return x_dtype if same else torch.float32


def check_op(run, ref_run, inputs: dict[str, torch.Tensor], bases: list[torch.Tensor], logit: tuple | None = None) -> None:
    """Forward and backward of ``run`` against ``ref_run`` on float64 copies of ``inputs``, with a
    random cotangent; inputs, the memory they view, and the cotangent are unchanged afterwards.
    ``logit`` = (input name, gate, dims) names a gate's logits, whose gradient gate'(s) · Σ cot · x
    over dims is measured at the size of its terms (it can cancel to ~0)."""
    before = [b.detach().clone() for b in bases]
    refs = {k: reference_copy(v) for k, v in inputs.items()}
    outs, ref_outs = run(**inputs), ref_run(**refs)
    outs, ref_outs = (outs, ref_outs) if isinstance(outs, tuple) else ((outs,), (ref_outs,))
    for i, (o, r) in enumerate(zip(outs, ref_outs)):
        assert o.dtype == inputs["x"].dtype, f"output {i}: dtype {o.dtype}"
        assert_close(o, r, what=f"output {i}")
    cots = [make_input(o.shape, o.dtype) for o in outs]
    cots_before = [c.clone() for c in cots]
    grads = torch.autograd.grad(outs, list(inputs.values()), cots)
    ref_grads = torch.autograd.grad(ref_outs, list(refs.values()), [c.double() for c in cots])
    for name, g, r in zip(inputs, grads, ref_grads):
        assert g.dtype == inputs[name].dtype and g.shape == inputs[name].shape, f"grad_{name}: {g.dtype} {tuple(g.shape)}"
        scale = None
        if logit is not None and name == logit[0]:
            scale = logit_grad_scale(cots[0], inputs["x"], logit[1], logit[2])
        assert_close(g, r, what=f"grad_{name}", scale=scale)
    for b, b0 in zip(bases, before):
        assert_bitwise_equal(b.detach(), b0, "an input (or the memory around its view) was written")
    for c, c0 in zip(cots, cots_before):
        assert_bitwise_equal(c, c0, "the incoming gradient was written")


@given(shape=shapes, dtype=dtypes, layout=layouts, mode=st.sampled_from(["mean", "max", "mean_max"]),
       tile=tile_choices, seed=seeds)
def test_squeeze(shape, dtype, layout, mode, tile, seed):
    torch.manual_seed(seed)
    x, base = arrange(shape, dtype, layout, scale=3.0)
    ref = {"mean": lambda x: x.mean((2, 3)), "max": lambda x: x.amax((2, 3)),
           "mean_max": lambda x: (x.mean((2, 3)), x.amax((2, 3)))}[mode]
    with tiles(tile):
        check_op(lambda x: tritattn.squeeze(x, mode), ref, {"x": x}, [base])


@given(shape=shapes, dtype=dtypes, layout=layouts, tile=tile_choices, seed=seeds)
def test_spatial_pool(shape, dtype, layout, tile, seed):
    torch.manual_seed(seed)
    x, base = arrange(shape, dtype, layout, scale=3.0)
    with tiles(tile):
        check_op(tritattn.spatial_pool, lambda x: torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1),
                 {"x": x}, [base])


@given(shape=shapes, dtype=dtypes, layout=layouts, s_layout=st.sampled_from(VECTOR_LAYOUTS), gate=gates,
       epilogue=st.sampled_from(["plain", "residual", "residual_relu"]), residual_layout=layouts,
       same_dtype=st.booleans(), tile=tile_choices, seed=seeds)
def test_excite_scale(shape, dtype, layout, s_layout, gate, epilogue, residual_layout, same_dtype, tile, seed):
    torch.manual_seed(seed)
    B, C = shape[:2]
    cdtype = companion_dtype(dtype, same_dtype or dtype == torch.float64)
    x, x_base = arrange(shape, dtype, layout)
    s, s_base = arrange_logits(B, C, cdtype, s_layout)
    inputs, bases = {"x": x, "s": s}, [x_base, s_base]
    if epilogue != "plain":
        inputs["residual"], r_base = arrange(shape, cdtype, residual_layout)
        bases.append(r_base)
    act = "relu" if epilogue == "residual_relu" else "identity"
    gate_fn = GATE_REFS[gate]

    def ref(x, s, residual=None):
        y = x * gate_fn(s.reshape(B, C))[:, :, None, None]
        y = y + residual if residual is not None else y
        return torch.relu(y) if act == "relu" else y

    if act == "relu":  # no ReLU input within rounding reach of its kink (conftest.relu_kink_near)
        scaled = (x.double() * gate_fn(s.double().reshape(B, C))[:, :, None, None]).detach()
        r = inputs["residual"].detach().double()
        assume(not relu_kink_near(scaled + r, scaled.abs() + r.abs()).any())

    with tiles(tile):
        check_op(lambda x, s, residual=None: tritattn.excite_scale(x, s, gate, residual, act), ref, inputs, bases,
                 logit=("s", gate, (2, 3)))


@given(shape=shapes, dtype=dtypes, layout=layouts, t_layout=st.sampled_from(LAYOUTS[:6]), gate=gates,
       same_dtype=st.booleans(), tile=tile_choices, seed=seeds)
def test_spatial_scale(shape, dtype, layout, t_layout, gate, same_dtype, tile, seed):
    torch.manual_seed(seed)
    B, _, H, W = shape
    x, x_base = arrange(shape, dtype, layout)
    t, t_base = arrange((B, 1, H, W), companion_dtype(dtype, same_dtype or dtype == torch.float64), t_layout, scale=2.0)
    gate_fn = GATE_REFS[gate]
    with tiles(tile):
        check_op(lambda x, t: tritattn.spatial_scale(x, t, gate), lambda x, t: x * gate_fn(t), {"x": x, "t": t}, [x_base, t_base],
                 logit=("t", gate, (1,)))
