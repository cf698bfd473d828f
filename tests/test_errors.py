"""Bad input → a clear error, raised before any kernel launch, naming the argument and what was
expected; empty batches → empty results as in torch; double backward → a clear error.

Every case runs with the kernel entry points (both backends) replaced by a tripwire, so an error
raised from inside a kernel launch, or a launch that happens before the error, fails the test.
"""
import re

import pytest
import torch

import tritattn
from tritattn import ops
from conftest import DEVICE, assert_close, make_input, reference_copy

#: A device other than the test device (no second GPU needed: "meta" tensors carry no data).
OTHER_DEVICE = "cpu" if DEVICE == "cuda" else "meta"
B, C, H, W = 2, 3, 4, 5


@pytest.fixture
def no_kernel_launch(monkeypatch):
    """Any attempt to run a kernel (Triton or eager) fails loudly."""
    def tripwire(x):
        raise AssertionError("a kernel was launched before the bad input was rejected")

    monkeypatch.setattr(ops, "_impl", tripwire)


def x_(shape=(B, C, H, W), dtype=torch.float32, device=DEVICE):
    return torch.randn(shape, device=device).to(dtype) if dtype.is_floating_point or dtype.is_complex else torch.ones(shape, dtype=dtype, device=device)


def s_(shape=(B, C), dtype=torch.float32, device=DEVICE):
    return x_(shape, dtype, device)


def t_(shape=(B, 1, H, W), dtype=torch.float32, device=DEVICE):
    return x_(shape, dtype, device)


# (id, call, exception type, regex the message must match). Built lazily: tensors at call time.
BAD_INPUTS = [
    # --- x, for every op --------------------------------------------------------------------
    ("x-3d", lambda: tritattn.squeeze(x_((B, C, H * W))), ValueError, r"x must be 4-D \[B, C, H, W\], got a 3-D tensor of shape \(2, 3, 20\)"),
    ("x-5d", lambda: tritattn.spatial_pool(x_((B, C, H, W, 1))), ValueError, r"x must be 4-D .* got a 5-D"),
    ("x-2d-excite", lambda: tritattn.excite_scale(x_((B, C)), s_()), ValueError, r"x must be 4-D"),
    ("x-1d-spatial-scale", lambda: tritattn.spatial_scale(x_((H,)), t_()), ValueError, r"x must be 4-D"),
    ("x-int64", lambda: tritattn.squeeze(x_(dtype=torch.int64)), TypeError, r"x must have a floating dtype \(float16, bfloat16, float32 or float64\), got an integer or bool dtype torch.int64"),
    ("x-uint8", lambda: tritattn.spatial_pool(x_(dtype=torch.uint8)), TypeError, r"x must have a floating dtype .* torch.uint8"),
    ("x-bool", lambda: tritattn.excite_scale(x_(dtype=torch.bool), s_()), TypeError, r"x must have a floating dtype .* torch.bool"),
    ("x-complex64", lambda: tritattn.squeeze(x_(dtype=torch.complex64), "max"), TypeError, r"x must have a floating dtype .* got a complex dtype torch.complex64"),
    ("x-complex128", lambda: tritattn.spatial_scale(x_(dtype=torch.complex128), t_()), TypeError, r"complex dtype torch.complex128"),
    ("x-float8", lambda: tritattn.squeeze(x_().to(torch.float8_e4m3fn)), TypeError, r"x must have a floating dtype .* got an unsupported dtype torch.float8_e4m3fn"),
    ("x-list", lambda: tritattn.squeeze([[[[1.0]]]]), TypeError, r"x must be a torch.Tensor, got list"),
    ("x-none", lambda: tritattn.spatial_pool(None), TypeError, r"x must be a torch.Tensor, got NoneType"),
    ("x-sparse", lambda: tritattn.squeeze(x_().to_sparse()), TypeError, r"x must be a dense \(strided\) tensor, got layout torch.sparse_coo"),
    ("x-H0", lambda: tritattn.squeeze(x_((B, C, 0, W))), ValueError, r"x must have C, H, W > 0 to pool over, got shape \(2, 3, 0, 5\)"),
    ("x-W0", lambda: tritattn.spatial_pool(x_((B, C, H, 0))), ValueError, r"x must have C, H, W > 0"),
    ("x-C0", lambda: tritattn.spatial_pool(x_((B, 0, H, W))), ValueError, r"x must have C, H, W > 0"),
    ("x-HW0-excite", lambda: tritattn.excite_scale(x_((B, C, 0, 0)), s_()), ValueError, r"x must have C, H, W > 0"),
    ("x-C-too-large", lambda: tritattn.squeeze(x_((1, 1, 1, 1)).expand(1, 2**31 - 2**19, 1, 1)), ValueError, r"x must have C and H×W at most 2146435072"),
    ("x-HW-too-large", lambda: tritattn.spatial_pool(x_((1, 1, 1, 1)).expand(1, 1, 2**16, 2**15)), ValueError, r"C and H×W at most"),
    # --- options ----------------------------------------------------------------------------
    ("mode", lambda: tritattn.squeeze(x_(), "median"), ValueError, r"mode must be one of \('mean', 'max', 'mean_max'\), got 'median'"),
    ("mode-none", lambda: tritattn.squeeze(x_(), None), ValueError, r"mode must be one of .* got None"),
    ("gate-excite", lambda: tritattn.excite_scale(x_(), s_(), "relu"), ValueError, r"gate must be one of \('sigmoid', 'hard_sigmoid'\), got 'relu'"),
    ("gate-module", lambda: tritattn.excite_scale(x_(), s_(), torch.nn.Sigmoid()), ValueError, r"gate must be one of .* got Sigmoid\(\)"),
    ("gate-spatial", lambda: tritattn.spatial_scale(x_(), t_(), "tanh"), ValueError, r"gate must be one of .* got 'tanh'"),
    ("act", lambda: tritattn.excite_scale(x_(), s_(), act="gelu"), ValueError, r"act must be one of \('identity', 'relu'\), got 'gelu'"),
    # --- excite_scale's logits s ------------------------------------------------------------
    ("s-none", lambda: tritattn.excite_scale(x_(), None), TypeError, r"s must be a torch.Tensor, got NoneType"),
    ("s-float", lambda: tritattn.excite_scale(x_(), 0.5), TypeError, r"s must be a torch.Tensor, got float"),
    ("s-wrong-C", lambda: tritattn.excite_scale(x_(), s_((B, C + 1))), ValueError, r"s must have shape \(2, 3\) or \(2, 3, 1, 1\) — \[B, C\] logits for x \(shape \(2, 3, 4, 5\).*got \(2, 4\)"),
    ("s-wrong-B", lambda: tritattn.excite_scale(x_(), s_((1, C))), ValueError, r"s must have shape \(2, 3\) or \(2, 3, 1, 1\).*got \(1, 3\)"),
    ("s-3d", lambda: tritattn.excite_scale(x_(), s_((B, C, 1))), ValueError, r"s must have shape .* got \(2, 3, 1\)"),
    ("s-spatial", lambda: tritattn.excite_scale(x_(), s_((B, C, H, W))), ValueError, r"s must have shape .* got \(2, 3, 4, 5\)"),
    ("s-no-batch", lambda: tritattn.excite_scale(x_(), s_((C,))), ValueError, r"s must have shape .* got \(3,\)"),
    ("s-int", lambda: tritattn.excite_scale(x_(), s_(dtype=torch.int32)), TypeError, r"s must have a floating dtype .* torch.int32"),
    ("s-complex", lambda: tritattn.excite_scale(x_(), s_(dtype=torch.complex64)), TypeError, r"s must have a floating dtype .* complex"),
    ("s-device", lambda: tritattn.excite_scale(x_(), s_(device=OTHER_DEVICE)), ValueError, rf"s is on {OTHER_DEVICE} but x is on {DEVICE}.*; move them to one device"),
    # --- excite_scale's residual ------------------------------------------------------------
    ("residual-shape", lambda: tritattn.excite_scale(x_(), s_(), residual=x_((B, C, H, W + 1))), ValueError, r"residual must have shape \(2, 3, 4, 5\) to match x .* got \(2, 3, 4, 6\)"),
    ("residual-broadcastable", lambda: tritattn.excite_scale(x_(), s_(), residual=x_((1, C, H, W))), ValueError, r"residual must have shape \(2, 3, 4, 5\)"),
    ("residual-int", lambda: tritattn.excite_scale(x_(), s_(), residual=x_(dtype=torch.int16)), TypeError, r"residual must have a floating dtype"),
    ("residual-device", lambda: tritattn.excite_scale(x_(), s_(), residual=x_(device=OTHER_DEVICE)), ValueError, rf"residual is on {OTHER_DEVICE} but x is on {DEVICE}"),
    ("residual-sparse", lambda: tritattn.excite_scale(x_(), s_(), residual=x_().to_sparse()), TypeError, r"residual must be a dense \(strided\) tensor"),
    # --- spatial_scale's logits t -----------------------------------------------------------
    ("t-channels", lambda: tritattn.spatial_scale(x_(), t_((B, C, H, W))), ValueError, r"t must have shape \(2, 1, 4, 5\) to match x .* got \(2, 3, 4, 5\)"),
    ("t-3d", lambda: tritattn.spatial_scale(x_(), t_((B, H, W))), ValueError, r"t must have shape \(2, 1, 4, 5\).* got \(2, 4, 5\)"),
    ("t-wrong-HW", lambda: tritattn.spatial_scale(x_(), t_((B, 1, W, H))), ValueError, r"t must have shape \(2, 1, 4, 5\).* got \(2, 1, 5, 4\)"),
    ("t-bool", lambda: tritattn.spatial_scale(x_(), t_(dtype=torch.bool)), TypeError, r"t must have a floating dtype .* torch.bool"),
    ("t-device", lambda: tritattn.spatial_scale(x_(), t_(device=OTHER_DEVICE)), ValueError, rf"t is on {OTHER_DEVICE} but x is on {DEVICE}"),
    ("t-none", lambda: tritattn.spatial_scale(x_(), None), TypeError, r"t must be a torch.Tensor, got NoneType"),
]


@pytest.mark.parametrize("call, exc, message", [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUTS])
def test_bad_input_is_rejected_before_any_kernel(no_kernel_launch, call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert re.search(message, str(info.value)), f"message {str(info.value)!r} does not match {message!r}"


# --- empty batch: as torch ---------------------------------------------------------------------

def test_empty_batch_squeeze_and_spatial_pool(channels_last):
    x = make_input((0, C, H, W), torch.float32, channels_last, requires_grad=True)
    mean, maximum = tritattn.squeeze(x, "mean_max")
    assert mean.shape == maximum.shape == x.amax((2, 3)).shape == (0, C)
    pooled = tritattn.spatial_pool(x)
    assert pooled.shape == (0, 2, H, W)
    (mean.sum() + maximum.sum() + pooled.sum()).backward()
    assert x.grad.shape == x.shape


def test_empty_batch_excite_scale_and_spatial_scale():
    x = make_input((0, C, H, W), torch.float32, requires_grad=True)
    s = make_input((0, C), torch.float32, requires_grad=True)
    residual = make_input((0, C, H, W), torch.float32, requires_grad=True)
    t = make_input((0, 1, H, W), torch.float32, requires_grad=True)
    y = tritattn.excite_scale(x, s, residual=residual, act="relu") + tritattn.spatial_scale(x, t, "hard_sigmoid")
    assert y.shape == x.shape
    y.sum().backward()
    assert (x.grad.shape, s.grad.shape, residual.grad.shape, t.grad.shape) == (x.shape, s.shape, residual.shape, t.shape)


# --- double backward: not supported, and says so ----------------------------------------------

SCALE_LOGITS = {"excite_scale": (B, C), "spatial_scale": (B, 1, H, W)}


@pytest.mark.parametrize("op", ["squeeze", "spatial_pool", "excite_scale", "spatial_scale"])
def test_double_backward_raises(op):
    """create_graph=True works for the first derivative (it is right); differentiating that
    derivative again raises instead of returning silently wrong (e.g. zero) values."""
    x = make_input((B, C, H, W), torch.float64, requires_grad=True)
    if op == "squeeze":
        f, ref = (lambda x: tritattn.squeeze(x, "mean_max")[1]), (lambda x: x.amax((2, 3)))
    elif op == "spatial_pool":
        f, ref = tritattn.spatial_pool, (lambda x: torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1))
    else:
        logits = make_input(SCALE_LOGITS[op], torch.float64)
        fn = getattr(tritattn, op)
        f, ref = (lambda x: fn(x, logits)), (lambda x: x * torch.sigmoid(logits.view(*logits.shape, *[1] * (4 - logits.dim()))))
    (g,) = torch.autograd.grad(f(x).square().sum(), x, create_graph=True)
    xr = reference_copy(x)
    (gr,) = torch.autograd.grad(ref(xr).square().sum(), xr)
    assert_close(g, gr, what=f"{op}: first derivative under create_graph=True")
    with pytest.raises(RuntimeError, match=rf"backward through tritattn\.{op}_backward.*no autograd formula"):
        torch.autograd.grad(g.sum(), x)


# --- modules: the input's C must be the one the module was built for ---------------------------

#: (module, constructor args, the class named in the message).
MODULES_WITH_CHANNELS = [
    ("SEModule", (8,), {}, "SEModule"),
    ("EffectiveSEModule", (8,), {}, "EffectiveSEModule"),
    ("CbamModule", (8,), {"rd_ratio": 0.25}, "CbamModule"),
    ("LightCbamModule", (8,), {"rd_ratio": 0.25}, "LightCbamModule"),
    ("SqueezeExcite", (8,), {}, "SqueezeExcite"),
    ("SqueezeExcitation", (8, 6), {}, "SqueezeExcitation"),
]


@pytest.mark.parametrize("name, args, kwargs, named", [pytest.param(*m, id=m[0]) for m in MODULES_WITH_CHANNELS])
def test_module_rejects_other_channel_counts(no_kernel_launch, name, args, kwargs, named):
    module = getattr(tritattn, name)(*args, **kwargs).to(DEVICE)
    with pytest.raises(ValueError, match=rf"{named} was built for 8 channels but x has 9 \(x: shape \(2, 9, 4, 4\).*expected \[B, 8, H, W\]"):
        module(x_((2, 9, 4, 4)))
    with pytest.raises(ValueError, match=r"x must be 4-D \[B, C, H, W\], got a 3-D tensor of shape \(8, 4, 4\)"):
        module(x_((8, 4, 4)))
    with pytest.raises(TypeError, match=r"x must have a floating dtype .* torch.int32"):
        module(x_((2, 8, 4, 4), torch.int32))
