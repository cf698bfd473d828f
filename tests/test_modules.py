"""Whole fast modules against their eager reference twins, with shared weights.

float64: the fast module must match the reference to float64 precision (outputs, input and
parameter gradients) — the kernels accumulate in float64 there, so this checks the plumbing
exactly (the reference's ``nn.Hardsigmoid`` given an exact derivative, as torch's is float32-precise).
float32 / bfloat16: the fast module's error against the float64 reference must be no
worse than the eager reference module's own error in that dtype (×2, + one rounding of the
dtype): that is what "the same numbers" can mean for a lower precision. There the input is drawn
until no kink (a ReLU's 0, a hard gate's ±3, a tie of a max) is within reach of the rounding
(:mod:`fixtures.kinks`): closer than that, either run may take the other branch by luck.
Weights and inputs are fresh every run (the test seed, conftest).
"""
import copy

import pytest
import torch
from torch import nn

import tritattn
from tritattn import modules, reference
from conftest import DEVICE, TOLERANCES, assert_close, make_input
from fixtures.kinks import KinksWithinReach, draw_away_from_kinks
from fixtures.model_runs import exact_hardsigmoid_backward, group_errors

C = 24
CASES = [
    ("SEModule", (C,), {}),
    ("SEModule", (C,), {"add_maxpool": True, "norm_layer": nn.BatchNorm2d, "gate_layer": "hard_sigmoid"}),
    ("EffectiveSEModule", (C,), {"add_maxpool": True}),
    ("EcaModule", (C,), {}),
    ("EcaModule", (C,), {"use_mlp": True}),
    ("CecaModule", (C,), {}),
    ("CbamModule", (C,), {"rd_ratio": 0.25}),
    ("LightCbamModule", (C,), {"rd_ratio": 0.25, "mlp_bias": True}),
    ("SqueezeExcite", (C,), {"gate_layer": nn.Hardsigmoid}),
    ("SqueezeExcitation", (C, 6), {}),
]
IDS = [f"{name}-{'-'.join(map(str, kw)) or 'default'}" for name, _, kw in CASES]


def build_pair(name, args, kwargs, dtype):
    """(float64 reference, fast twin in ``dtype``) with the same fresh random weights."""
    ref = getattr(reference, name)(*args, **kwargs)
    for p in ref.parameters():  # non-trivial weights (BatchNorm's start at 1 and 0)
        nn.init.normal_(p, std=0.3)
    fast = getattr(tritattn, name)(*args, **kwargs)
    fast.load_state_dict(ref.state_dict(), strict=True)
    return ref.to(DEVICE, torch.float64), fast.to(DEVICE, dtype)


def run(module, x, cot):
    x = x.detach().requires_grad_()
    module.zero_grad()
    y = module(x)
    y.backward(cot.to(y.dtype))
    grads = {"input": x.grad, **{n: p.grad for n, p in module.named_parameters()}}
    return y, grads


def errors(out, ref):
    return (out.double() - ref).abs().max().item()


@pytest.mark.parametrize("name, args, kwargs", CASES, ids=IDS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_fast_module_matches_reference_in_float64(name, args, kwargs, channels_last, train):
    ref, fast = build_pair(name, args, kwargs, torch.float64)
    ref.train(train), fast.train(train)
    x = make_input((4, C, 7, 5), torch.float64, channels_last)  # batch 4: see ACCURACY_SHAPE
    cot = torch.randn(x.shape, dtype=torch.float64, device=DEVICE)
    with exact_hardsigmoid_backward():
        y_ref, g_ref = run(ref, x, cot)
    y, g = run(fast, x, cot)
    assert_close(y, y_ref, what=f"{name} output")
    assert g.keys() == g_ref.keys()
    scale = max(r.abs().max().item() for r in g_ref.values())  # all gradients together: fc1.bias's cancels
    for key in g:                                                 # to ~0 under a training BatchNorm
        assert_close(g[key], g_ref[key], what=f"{name} grad {key}", scale=scale)
    for (key, a), b in zip(fast.state_dict().items(), ref.state_dict().values()):  # BatchNorm statistics
        assert torch.allclose(a.double(), b.double(), rtol=1e-12, atol=1e-12), key


#: The input is redrawn while a kinked op's exact input is within this many times the eager run's
#: deviation of the kink. bfloat16's grid is coarse: in CBAM the max over C of x · gate ties within
#: bfloat16's rounding in most 7×7 maps, so that test runs 3×3 maps, where a draw passes with
#: probability ≥ 0.5 at factor 2 (eager rounds x · gate twice where the kernels round once, so its
#: deviation bounds theirs).
KINK_REACH_FACTOR = {torch.float32: 8.0, torch.bfloat16: 2.0}
#: Weights can hold a kink within reach whatever the input (a ReLU whose bias dwarfs what x adds
#: to it); then the weights are drawn again too, up to WEIGHT_DRAWS times, each with up to
#: INPUT_DRAWS inputs.
WEIGHT_DRAWS, INPUT_DRAWS = 10, 40
#: A batch of 4, not 2: a training BatchNorm over 2 samples (the SE MLP's, on pooled 1×1 maps) is
#: degenerate — it maps each channel to bias ± weight whatever its input, so the gradient into it
#: is only eps's small contribution, the cancellation of terms σ²/eps times larger, and any float32
#: rounding before it is amplified that much. There the parameter-gradient check was a coin toss
#: (fast beyond 2× eager's error in ~4 % of draws, both ~1e-5 relative); at batch 4 the worst of
#: 150 draws used 0.09 of the bound.
ACCURACY_SHAPE = (4, C, 3, 3)


@pytest.mark.parametrize("name, args, kwargs", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_fast_module_is_as_accurate_as_eager(name, args, kwargs, dtype):
    for _ in range(WEIGHT_DRAWS):
        ref64, fast = build_pair(name, args, kwargs, dtype)
        eager = copy.deepcopy(ref64).to(dtype)
        try:
            x64, _ = draw_away_from_kinks(
                lambda: torch.randn(ACCURACY_SHAPE, dtype=torch.float64, device=DEVICE).to(dtype).double(),
                ref64, lambda x: eager(x.to(dtype)), KINK_REACH_FACTOR[dtype], attempts=INPUT_DRAWS,
            )
            break
        except KinksWithinReach:
            continue  # these weights hold a kink within reach whatever x is: draw them again
    else:
        raise KinksWithinReach(f"{name}: no weights and input out of every kink's reach in {WEIGHT_DRAWS} × {INPUT_DRAWS} draws")
    x = x64.to(dtype).contiguous(memory_format=torch.channels_last)
    cot = torch.randn(x.shape, dtype=torch.float64, device=DEVICE).to(dtype).double()
    y_ref, g_ref = run(ref64, x.double(), cot)
    y_eager, g_eager = run(eager, x, cot)
    y, g = run(fast, x, cot)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    one_rounding = TOLERANCES[dtype][0]
    for key, out, eager_out, ref_out in (("output", y, y_eager, y_ref), ("input", g["input"], g_eager["input"], g_ref["input"])):
        bound = 2 * errors(eager_out, ref_out) + one_rounding * max(ref_out.abs().max().item(), 1.0)
        assert not out.isnan().any(), key
        assert errors(out, ref_out) <= bound, f"{name} {key}: error {errors(out, ref_out):.3g} > bound {bound:.3g}"
    # Parameter gradients are sums over B·H·W of rounded terms that can cancel (CBAM's spatial
    # BatchNorm weight: 18 terms of ~1 summing to 0.2), so one parameter's error against eager's
    # is a ratio of two small random numbers: they are compared norm-wise, all together, as
    # fixtures.model_runs does for models (the float64 test checks each one exactly).
    params = [k for k in g if k != "input"]
    if params:
        fast_error, eager_error = (
            group_errors([grads[k] for k in params], [g_ref[k] for k in params]).norm_rel for grads in (g, g_eager))
        assert not any(g[k].isnan().any() for k in params)
        assert fast_error <= 2 * eager_error + one_rounding, (
            f"{name} parameter gradients: norm-wise error {fast_error:.3g} > 2 × eager's {eager_error:.3g} + {one_rounding}")


def test_unsupported_gate_falls_back_visibly(monkeypatch):
    monkeypatch.setattr(modules, "_warned", set())  # warned once per process: independent of test order
    ref, fast = build_pair("SEModule", (C,), {"gate_layer": "tanh"}, torch.float64)
    x = make_input((2, C, 3, 3), torch.float64)
    with pytest.warns(UserWarning, match="gate Tanh has no kernel"):
        y = fast(x)
    assert_close(y, ref(x), what="fallback output")


def test_module_rejects_wrong_channel_count():
    se = tritattn.SEModule(C).to(DEVICE)
    with pytest.raises(ValueError, match=f"built for {C} channels but x has {C + 1}"):
        se(make_input((1, C + 1, 4, 4), torch.float32))
