"""The radix twins' attention MLP called as its layers' functions (tritattn/radix_mlp.py): the
modules' bits — output, every gradient, the BatchNorm's running statistics and batch count — in
training and eval, momentum None, without running statistics or affine parameters, without a
BatchNorm, with a ReLU not in place, radix 1, 2 and 4 (the radix softmax of cardinality 1 as one
softmax) and SelectiveKernel's paths, float32 and bfloat16, NCHW and channels_last, under CPU
autocast; the modules called instead wherever one has a hook (or a global module hook runs); a
training BatchNorm over one sample raises eager's error after eager's batch count.
(Against the float64 reference and timm: tests/test_radix_block.py; the branches as calls:
tests/test_layer_calls.py.)"""
import pytest
import torch
from torch import nn

from tritattn import radix_mlp
from conftest import DEVICE, make_input
from fixtures.layer_runs import VARIANTS, compare_with_modules, counted, raises_as_the_modules_do, vary
from test_radix_block import MODULE_CASES
from test_radix_step import STEP_CASES, _twin


def _layers(twin: nn.Module) -> tuple[nn.Module, ...]:
    """(fc1, the BatchNorm or Identity, the act, fc2) of a SplitAttn or SelectiveKernel twin."""
    attn = getattr(twin, "attn", None)
    if attn is not None:
        return attn.fc_reduce, attn.bn, attn.act, attn.fc_select
    return twin.fc1, twin.bn1, twin.act1, twin.fc2


def _counted(monkeypatch) -> list:
    """Records each call of radix_mlp.logits (the MLP taken as functions)."""
    return counted(monkeypatch, radix_mlp, "logits")


def _compare(twin: nn.Module, x: torch.Tensor, monkeypatch, steps: int = 2) -> None:
    """compare_with_modules, the MLP taken as functions at each step."""
    calls = _counted(monkeypatch)
    compare_with_modules(twin, x, monkeypatch, steps)
    assert len(calls) == steps


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("case", STEP_CASES + ["splat-r2-plain-rd"])
def test_the_mlp_as_functions_gives_the_modules_bits(case, dtype, channels_last, monkeypatch):
    _compare(_twin(case, dtype), make_input(MODULE_CASES[case][3], dtype, channels_last), monkeypatch)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["splat-r2-bn", "sk-3paths-nosplit"])
def test_batchnorm_and_relu_variants_give_the_modules_bits(case, variant, monkeypatch):
    twin = _twin(case, torch.float32)
    fc1, bn, act, fc2 = _layers(twin)
    vary([bn], [act], variant)
    _compare(twin, make_input(MODULE_CASES[case][3], torch.float32), monkeypatch, steps=3)


@pytest.mark.parametrize("hooked", ["fc1", "norm", "act", "fc2", "rsoftmax", "global"])
def test_a_hooked_layer_is_called_as_a_module(hooked, monkeypatch):
    twin = _twin("splat-r2-bn", torch.float32)
    layers = dict(zip(["fc1", "norm", "act", "fc2"], _layers(twin)), rsoftmax=twin.rsoftmax)
    seen = []
    if hooked == "global":
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda m, i, o: seen.append(type(m).__name__) if m is twin.fc1 else None)
    else:
        handle = layers[hooked].register_forward_hook(lambda m, i, o: seen.append(type(m).__name__))
    calls = _counted(monkeypatch)
    try:
        twin(make_input(MODULE_CASES["splat-r2-bn"][3], torch.float32, requires_grad=True)).sum().backward()
    finally:
        handle.remove()
    assert calls == [] and len(seen) == 1


def test_a_training_batchnorm_over_one_sample_raises_eagers_error(monkeypatch):
    twin = _twin("splat-r2-bn", torch.float32)
    x = make_input((1,) + MODULE_CASES["splat-r2-bn"][3][1:], torch.float32, requires_grad=True)
    calls = _counted(monkeypatch)
    raises_as_the_modules_do(twin, x, monkeypatch)  # bn0's and bn1's batch counts advanced as eager's
    assert calls == [1]  # taken as functions up to the BatchNorm, which is called as its module
    assert twin.bn1.num_batches_tracked.item() == 1
    twin.bn1.eval()  # running statistics: one sample is fine, and taken as functions
    _compare(twin, make_input((1,) + MODULE_CASES["splat-r2-bn"][3][1:], torch.float32), monkeypatch)


def test_under_cpu_autocast_the_mlp_as_functions_gives_the_modules_bits(monkeypatch):
    if torch.device(DEVICE).type != "cpu":
        pytest.skip("CPU autocast: the tensors are on another device")
    twin = _twin("splat-r2-bn", torch.float32)
    x = make_input(MODULE_CASES["splat-r2-bn"][3], torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _compare(twin, x, monkeypatch)
