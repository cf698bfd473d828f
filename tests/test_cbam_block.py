"""CBAM and light CBAM as one pipeline (``tritattn::cbam_block``, 4 kernels, and its 4-kernel
backward) against the float64 reference modules with shared weights and non-trivial BatchNorm
statistics: in training (batch statistics, running statistics moved, every gradient) and in eval
(running statistics, with and without autograd); odd C and H×W, batch 1, both layouts, both
gates, 3×3 and 7×7 convs, maps of many conv tiles (57×57: merge trees of two levels), default
and tiny tiles (several programs per sample; fan-in 2 trees); float32 / float16 / bfloat16 no worse
than eager; the same bits twice and in any program order; the refusals, and the error eager gives
for a single value per channel.
"""
import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import tritattn
from tritattn import excitation_block, reference
from tritattn.backend import INTERPRETER
from conftest import DEVICE, TOLERANCES, assert_close, assert_same_layout, make_input, use_small_tiles
from fixtures.model_runs import training_step
from fixtures.program_order import interpreter_internals_missing, program_order
from fixtures.workspaces import counters_reset, launched_counters  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
import census  # noqa: E402

NAMES = ["CbamModule", "LightCbamModule"]


def build_pair(name: str, C: int, dtype: torch.dtype, **kwargs):
    """(float64 reference, fast twin in ``dtype``), eval mode, the same fresh weights and BatchNorm statistics."""
    ref = getattr(reference, name)(C, rd_ratio=0.25, **kwargs)
    for p in ref.parameters():
        nn.init.normal_(p, std=0.3)
    bn = ref.spatial.conv.bn
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    fast = getattr(tritattn, name)(C, rd_ratio=0.25, **kwargs)
    fast.load_state_dict(ref.state_dict(), strict=True)
    return ref.to(DEVICE, torch.float64).eval(), fast.to(DEVICE, dtype).eval()


def batch_norm_grad_scales(ref: nn.Module, x: torch.Tensor, cotangent: torch.Tensor) -> dict[str, float]:
    """The spatial BatchNorm's weight and bias gradients are sums over B·H·W of grad_t · x̂ and
    grad_t that cancel (in training, exactly so for a following BatchNorm-free graph), so each is
    measured against the size of its terms, Σ |grad_t · x̂| and Σ |grad_t| (a copy of ``ref`` runs
    the step, its BatchNorm observed by hooks)."""
    ref = copy.deepcopy(ref)
    bn, seen = ref.spatial.conv.bn, {}
    bn.register_forward_hook(lambda m, inputs, out: seen.update(u=inputs[0].detach()))
    bn.register_full_backward_hook(lambda m, grad_in, grad_out: seen.update(g=grad_out[0].detach()))
    training_step(ref, x, cotangent)
    u = seen["u"]
    mean, var = (u.mean(), u.var(unbiased=False)) if bn.training else (bn.running_mean, bn.running_var)
    x_hat = (u - mean) / torch.sqrt(var + bn.eps)
    return {"grad spatial.conv.bn.weight": (seen["g"] * x_hat).abs().sum().item(),
            "grad spatial.conv.bn.bias": seen["g"].abs().sum().item()}


def assert_steps_close(fast: dict, ref: dict, what: str, dtype: torch.dtype = torch.float64,
                       scales: dict[str, float] | None = None) -> None:
    assert fast.keys() == ref.keys()
    for key in ref:
        if key.startswith("buffer") and not ref[key].is_floating_point():
            assert torch.equal(fast[key].cpu(), ref[key].cpu()), f"{what}: {key}"
        else:
            assert_close(fast[key], ref[key], dtype, what=f"{what}: {key}", scale=(scales or {}).get(key))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape, kernel_size, tiles", [
    ((2, 37, 5, 3), 7, "default_tiles"), ((2, 37, 5, 3), 7, "small_tiles"), ((1, 12, 3, 1), 3, "default_tiles"),
    ((1, 12, 3, 1), 3, "small_tiles"), ((3, 20, 9, 9), 3, "default_tiles"),
], ids=["37x5x3-k7-default_tiles", "37x5x3-k7-small_tiles", "b1-12x3x1-k3-default_tiles", "b1-12x3x1-k3-small_tiles",
        "20x9x9-k3-default_tiles"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cbam_step_matches_float64_reference(name, shape, kernel_size, tiles, mode, channels_last, monkeypatch):
    if tiles == "small_tiles":
        use_small_tiles(monkeypatch)
    gate = "hard_sigmoid" if shape[0] == 1 else "sigmoid"
    ref, fast = build_pair(name, shape[1], torch.float64, spatial_kernel_size=kernel_size, gate_layer=gate)
    ref.train(mode == "train"), fast.train(mode == "train")
    x = make_input(shape, torch.float64, channels_last)
    cotangent = torch.randn(shape, dtype=torch.float64, device=DEVICE)
    with census.LaunchCensus() as c:
        got = training_step(fast, x, cotangent)
    assert [op for op, _ in c.tritattn_calls] == ["cbam_block", "cbam_block_backward"] and c.triton == 8
    assert_same_layout(got["y"], x)
    assert_same_layout(got["grad_x"], x)
    # torch's CPU hardsigmoid_backward multiplies by 1.0f / 6.0f, a float32 constant, even in
    # float64: the reference's gradients through that gate are float32-accurate only
    tolerance = torch.float32 if gate == "hard_sigmoid" and DEVICE == "cpu" else torch.float64
    scales = batch_norm_grad_scales(ref, x, cotangent)
    assert_steps_close(got, training_step(ref, x, cotangent), f"{name} {mode}", tolerance, scales)


@pytest.mark.parametrize("name, shape, channels_last", [
    ("CbamModule", (2, 6, 17, 19), True), ("LightCbamModule", (2, 6, 17, 19), True),
    ("CbamModule", (2, 5, 57, 57), False), ("LightCbamModule", (2, 5, 57, 57), True),
    ("CbamModule", (1, 7, 7, 7), False), ("LightCbamModule", (1, 7, 7, 7), True),
], ids=["cbam-17x19-channels_last", "light-17x19-channels_last", "cbam-57x57-nchw", "light-57x57-channels_last",
        "cbam-b1-7x7-nchw", "light-b1-7x7-channels_last"])
def test_cbam_step_on_maps_of_many_conv_tiles(name, shape, channels_last):
    """Training steps at default tiles on maps of many pixel tiles: 57×57 = 3249 pixels are 102
    ragged tiles of the 7×7 conv per sample, whose (n, mean, M2) and conv-weight partials merge in
    trees of two levels, the BatchNorm sums over 13 pixel blocks per sample; 17×19 and a single
    7×7 sample (B = 1) in between."""
    ref, fast = build_pair(name, shape[1], torch.float64, spatial_kernel_size=7)
    ref.train(), fast.train()
    x = make_input(shape, torch.float64, channels_last=channels_last)
    cotangent = torch.randn(x.shape, dtype=torch.float64, device=DEVICE)
    scales = batch_norm_grad_scales(ref, x, cotangent)
    assert_steps_close(training_step(fast, x, cotangent), training_step(ref, x, cotangent), name, scales=scales)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape, kernel_size", [((2, 37, 5, 3), 7), ((1, 12, 1, 1), 3)], ids=["37x5x3-k7", "b1-12x1x1-k3"])
def test_cbam_inference_matches_float64_reference(name, shape, kernel_size, channels_last):
    ref, fast = build_pair(name, shape[1], torch.float64, spatial_kernel_size=kernel_size)
    x = make_input(shape, torch.float64, channels_last)
    with torch.no_grad(), census.LaunchCensus() as c:
        y = fast(x)
    assert [op for op, _ in c.tritattn_calls] == ["cbam_block"] and c.total == 4
    assert_same_layout(y, x)
    assert_close(y, ref(x), what=f"{name} inference")


@pytest.mark.parametrize("name, shape", [
    ("CbamModule", (2, 24, 6, 5)), ("LightCbamModule", (2, 24, 6, 5)), ("CbamModule", (1, 16, 7, 7)),
    ("LightCbamModule", (2, 8, 57, 57)),
], ids=["cbam-24x6x5", "light-24x6x5", "cbam-b1-16x7x7", "light-8x57x57"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cbam_forward_is_as_accurate_as_eager(name, shape, dtype, mode):
    """The output, in training (batch statistics) and eval, channels_last; 7×7 with B = 1 and
    57×57 (many conv tiles) too. (Gradients are compared in float64 above: in 16 bits the channel
    max of the rounded x · gate can tie or move between channels, and eager and the float64
    reference then send a pixel's gradient to different channels.)"""
    ref, fast = build_pair(name, shape[1], dtype)
    eager = copy.deepcopy(ref).to(dtype)
    for m in (ref, fast, eager):
        m.train(mode == "train")
    x = make_input(shape, dtype, channels_last=True)
    seen = {}
    ref.spatial.conv.bn.register_forward_hook(lambda m, inputs, out: seen.update(u=inputs[0].detach()))
    with torch.no_grad():
        y, y_eager, y_ref = fast(x), eager(x), ref(x.double())
    assert y.dtype == dtype and not y.isnan().any()
    err, eager_err = ((out.double() - y_ref).abs().max().item() for out in (y, y_eager))
    bound = 2 * eager_err + TOLERANCES[dtype][0] * y_ref.abs().max().item()
    assert err <= bound, f"{name} {dtype}: error {err:.3g} > bound {bound:.3g} (eager's {eager_err:.3g})"
    if mode == "train":
        # each running statistic moves by momentum × a batch statistic of the BatchNorm's input u:
        # the mean of terms of size |u| (which can cancel to far less) and of (u - mean)², so each
        # is measured against the size of those terms, or of the statistic itself where larger
        bn, u = ref.spatial.conv.bn, seen["u"]
        terms = {"running_mean": u.abs().max().item(), "running_var": ((u - u.mean()) ** 2).max().item()}
        for key in ("running_mean", "running_var"):
            want = getattr(bn, key)
            assert_close(getattr(fast.spatial.conv.bn, key).double(), want, dtype, key,
                         scale=max(want.abs().max().item(), bn.momentum * terms[key]))


def test_cbam_step_is_bitwise_repeatable_and_leaves_the_counters_at_zero(monkeypatch, launched_counters):
    """Tiny tiles: one pixel per conv program (20 per sample), merge trees of fan-in 2 to 16 and up
    to six levels. Run twice in order and, under the interpreter, with every launch's programs
    shuffled (on a GPU, which program merges which group varies by itself; test_program_order.py
    runs every ticket kernel reversed too): the same bits each time."""
    use_small_tiles(monkeypatch)  # several programs per sample
    _, fast = build_pair("CbamModule", 12, torch.float32)
    fast.train()
    x = make_input((2, 12, 5, 4), torch.float32, channels_last=True)
    cotangent = torch.randn(x.shape, device=DEVICE)
    runs = [training_step(copy.deepcopy(fast), x, cotangent) for _ in range(2)]
    if INTERPRETER and interpreter_internals_missing() is None:
        with program_order("shuffled", seed=3):
            runs.append(training_step(copy.deepcopy(fast), x, cotangent))
    for run in runs[1:]:
        for key in runs[0]:
            assert torch.equal(runs[0][key], run[key]), key
    assert counters_reset(launched_counters)


def test_cbam_takes_the_pipeline_unless_switched_off(monkeypatch):
    _, fast = build_pair("CbamModule", 16, torch.float32)
    x = torch.randn(2, 16, 4, 4, device=DEVICE)
    for mode in (True, False):
        fast.train(mode)
        assert fast.uses_pipeline(x)
    monkeypatch.setattr(excitation_block, "enabled", False)
    assert not fast.uses_pipeline(x)
    with census.LaunchCensus() as c:
        fast(x)
    assert [op for op, _ in c.tritattn_calls] != ["cbam_block"]


def test_cbam_refusals_say_why_and_fall_back():
    cbam = tritattn.CbamModule(16, rd_ratio=0.25).to(DEVICE)
    assert cbam.pipeline_refusal() is None
    cbam.spatial.conv.bn.momentum = None
    assert "momentum=None" in cbam.pipeline_refusal()
    x = torch.randn(2, 16, 4, 4, device=DEVICE)
    expected = copy.deepcopy(cbam)
    with census.LaunchCensus() as c:
        y = cbam(x)
    assert "cbam_block" not in [op for op, _ in c.tritattn_calls]
    assert_close(y.double(), super(tritattn.CbamModule, expected).forward(x).double(), torch.float32, "momentum=None")
    assert cbam.spatial.conv.bn.num_batches_tracked.item() == 1
    cbam.spatial.conv.bn.running_mean = None
    assert "running statistics" in cbam.pipeline_refusal()
    assert "Mish" in tritattn.CbamModule(16, act_layer=nn.Mish).pipeline_refusal()


def test_cbam_training_refuses_one_value_per_channel_as_eager():
    _, fast = build_pair("CbamModule", 8, torch.float32)
    fast.train()
    x = torch.randn(1, 8, 1, 1, device=DEVICE)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        fast(x)
    fast.eval()
    assert fast(x).shape == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_converted_timm_cbam_takes_the_pipeline(name):
    from fixtures.peers import timm

    peer = getattr(timm.layers.cbam, name)(24, rd_ratio=0.25)
    for p in peer.parameters():
        nn.init.normal_(p, std=0.3)
    peer.spatial.conv.bn.running_var.uniform_(0.5, 2.0)
    peer = peer.to(DEVICE, torch.float64).train()
    original = copy.deepcopy(peer)
    x = make_input((2, 24, 5, 7), torch.float64, channels_last=True)
    cotangent = torch.randn(x.shape, dtype=torch.float64, device=DEVICE)
    report = tritattn.convert(peer)
    assert "block pipeline (4 kernels forward, 4 backward)" in str(report)
    with census.LaunchCensus() as c:
        got = training_step(peer, x, cotangent)
    assert [op for op, _ in c.tritattn_calls] == ["cbam_block", "cbam_block_backward"]
    scales = batch_norm_grad_scales(original, x, cotangent)
    assert_steps_close(got, training_step(original, x, cotangent), f"converted timm {name}", scales=scales)
    peer.eval(), original.eval()
    with torch.no_grad():
        assert_close(peer(x), original(x), what=f"converted timm {name} in eval")
