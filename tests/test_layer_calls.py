"""The radix twins' branches taken as their layers' calls (tritattn/layer_calls.py): SplitAttn's
conv, bn0, drop and act0 and SelectiveKernel's paths give the modules' bits — output, every
gradient, every running statistic and batch count — over training steps (float32 and bfloat16,
NCHW and channels_last) and in inference, for BatchNorms in eval, with momentum None, without
running statistics or affine parameters, a ReLU not in place, under CPU autocast; a layer with a
hook (the hook runs), a drop that is not an identity, a parameter not registered as one, a
parametrized conv, a global module hook or a torch function mode: the modules are called; a
training BatchNorm over one value per channel raises eager's error after eager's batch count."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from tritattn import layer_calls
from conftest import DEVICE, make_input
from fixtures.layer_runs import VARIANTS, as_modules, compare_with_modules, counted, raises_as_the_modules_do, vary
from test_radix_block import MODULE_CASES
from test_radix_step import STEP_CASES, _twin

CASES = STEP_CASES + ["sk-default"]


def _paths(twin: nn.Module) -> int:
    """How many convs a call of the twin runs on its branches (SplitAttn: 1; SelectiveKernel: its paths)."""
    return len(twin.paths) if hasattr(twin, "paths") else 1


def _counted(monkeypatch) -> list:
    """Records each branch conv taken as its call (layer_calls.conv2d from run_conv / conv_norm_act)."""
    return counted(monkeypatch, layer_calls, "conv2d")


def _compare(twin: nn.Module, x: torch.Tensor, monkeypatch, steps: int = 2, convs: int | None = None) -> None:
    """compare_with_modules; ``convs``: the branch convs taken as calls per step (default: all of them)."""
    calls = _counted(monkeypatch)
    compare_with_modules(twin, x, monkeypatch, steps)
    assert len(calls) == steps * (_paths(twin) if convs is None else convs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("case", CASES)
def test_the_branches_as_calls_give_the_modules_bits(case, dtype, channels_last, monkeypatch):
    _compare(_twin(case, dtype), make_input(MODULE_CASES[case][3], dtype, channels_last), monkeypatch)


@pytest.mark.parametrize("case", ["splat-r2-bn", "sk-3paths-nosplit"])
def test_in_inference_the_convs_as_calls_give_the_modules_bits(case, channels_last, monkeypatch):
    twin = _twin(case, torch.float32).eval()
    modules = copy.deepcopy(twin)
    x = make_input(MODULE_CASES[case][3], torch.float32, channels_last)
    calls = _counted(monkeypatch)
    with torch.no_grad():
        got = twin(x)
        with monkeypatch.context() as m:
            as_modules(m)
            want = modules(x)
    assert torch.equal(got, want)
    assert len(calls) == _paths(twin)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["splat-r2-bn", "sk-3paths-nosplit"])
def test_batchnorm_and_relu_variants_give_the_modules_bits(case, variant, monkeypatch):
    twin = _twin(case, torch.float32)
    sk = hasattr(twin, "paths")
    vary([path.bn for path in twin.paths] if sk else [twin.bn0], [path.bn.act for path in twin.paths] if sk else [twin.act0],
         variant)
    _compare(twin, make_input(MODULE_CASES[case][3], torch.float32), monkeypatch, steps=3)


#: layer → (case, the layer in the twin, the branch convs still taken as calls per step)
HOOKED = {
    "conv": ("splat-r2-bn", lambda t: t.conv, 0),
    "bn0": ("splat-r2-bn", lambda t: t.bn0, 1),
    "drop": ("splat-r2-bn", lambda t: t.drop, 1),
    "act0": ("splat-r2-bn", lambda t: t.act0, 1),
    "path": ("sk-3paths-nosplit", lambda t: t.paths[1], 2),
    "path conv": ("sk-3paths-nosplit", lambda t: t.paths[1].conv, 2),
    "path bn": ("sk-3paths-nosplit", lambda t: t.paths[1].bn, 2),
    "path bn act": ("sk-3paths-nosplit", lambda t: t.paths[1].bn.act, 2),
    "path bn drop": ("sk-3paths-nosplit", lambda t: t.paths[1].bn.drop, 2),
}


@pytest.mark.parametrize("hooked", list(HOOKED))
def test_a_hooked_layer_is_called_as_a_module(hooked, monkeypatch):
    case, layer, convs = HOOKED[hooked]
    twin = _twin(case, torch.float32)
    seen = []
    handle = layer(twin).register_forward_hook(lambda m, i, o: seen.append(type(m).__name__))
    try:
        _compare(twin, make_input(MODULE_CASES[case][3], torch.float32), monkeypatch, steps=1, convs=convs)
    finally:
        handle.remove()
    assert len(seen) == 3  # the layer's module was called: in the cotangent's copy, the twin and the modules' copy


def test_a_drop_layer_runs_as_a_module(monkeypatch):
    twin = _twin("splat-r2-bn", torch.float32)
    twin.drop = _Scaled()  # a drop layer with an effect and no randomness: the copies' bits still compare
    _compare(twin, make_input(MODULE_CASES["splat-r2-bn"][3], torch.float32), monkeypatch)


@pytest.mark.parametrize("how", ["weight not a parameter", "parametrized"])
def test_a_conv_whose_weight_is_not_its_parameter_runs_as_a_module(how, monkeypatch):
    twin = _twin("splat-r2-bn", torch.float32)
    conv = twin.conv
    if how == "parametrized":
        parametrize.register_parametrization(conv, "weight", _Scaled())
    else:
        weight = conv.weight.detach().clone()
        del conv.weight
        conv.weight = weight  # a plain attribute now, which conv.forward reads
    _compare(twin, make_input(MODULE_CASES["splat-r2-bn"][3], torch.float32), monkeypatch, convs=0)


class _Scaled(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * 0.5


def test_a_global_module_hook_or_a_function_mode_calls_the_modules(monkeypatch):
    twin = _twin("sk-default", torch.float32)
    x = make_input(MODULE_CASES["sk-default"][3], torch.float32)
    calls = _counted(monkeypatch)
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: seen.append(1) if type(m) is nn.Conv2d else None)
    try:
        twin(x)
    finally:
        handle.remove()
    assert calls == [] and len(seen) == len(twin.paths) + 2  # the paths' convs and the attention's fc layers
    with _Passing():
        twin(x)
    assert calls == []
    twin(x)
    assert len(calls) == len(twin.paths)


class _Passing(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def test_a_training_batchnorm_over_one_value_per_channel_raises_eagers_error(monkeypatch):
    twin = _twin("splat-r2-bn", torch.float32)
    x = make_input((1, 12, 1, 1), torch.float32, requires_grad=True)  # 3×3 conv, padding 1: bn0 sees 1×1
    calls = _counted(monkeypatch)
    raises_as_the_modules_do(twin, x, monkeypatch)
    assert calls == [1]  # the conv as its call; bn0 as its module, which raises
    assert twin.bn0.num_batches_tracked.item() == 1


def test_under_cpu_autocast_the_branches_as_calls_give_the_modules_bits(monkeypatch):
    if torch.device(DEVICE).type != "cpu":
        pytest.skip("CPU autocast: the tensors are on another device")
    for case in ("splat-r2-bn", "sk-default"):
        x = make_input(MODULE_CASES[case][3], torch.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _compare(_twin(case, torch.float32), x, monkeypatch)
