"""Each tritattn block against its real timm / torchvision peer, over the configurations users
set: the same constructor signature, the same ``state_dict`` (strict loading both ways), the same
output and gradients (float64) for the module built directly and for the peer converted by
``tritattn.convert``; gates without a kernel fall back to the eager forward visibly (a warning
for the module, a reason in the convert report).
"""
import copy
import inspect

import pytest
import torch
from torch import nn

import tritattn
from conftest import DEVICE, assert_close
from fixtures.model_runs import exact_hardsigmoid_backward, interpreter_friendly  # noqa: F401
from fixtures.peers import timm, torchvision
from fixtures.report_text import blocks_where
from tritattn import modules

import timm.layers.activations  # noqa: E402  (after fixtures.peers, which makes timm importable)
import timm.layers.cbam  # noqa: E402
import timm.models._efficientnet_blocks  # noqa: E402
import timm.models.senet  # noqa: E402
import timm.layers.coord_attn  # noqa: E402
import timm.layers.global_context  # noqa: E402
import timm.layers.selective_kernel  # noqa: E402
import timm.layers.split_attn  # noqa: E402

PEERS = {
    "SEModule": timm.layers.SEModule,
    "EffectiveSEModule": timm.layers.EffectiveSEModule,
    "EcaModule": timm.layers.EcaModule,
    "CecaModule": timm.layers.CecaModule,
    "CbamModule": timm.layers.cbam.CbamModule,
    "LightCbamModule": timm.layers.cbam.LightCbamModule,
    "SqueezeExcite": timm.models._efficientnet_blocks.SqueezeExcite,
    "SqueezeExcitation": torchvision.ops.misc.SqueezeExcitation,
    "LegacySEModule": timm.models.senet.SEModule,
    "SplitAttn": timm.layers.split_attn.SplitAttn,
    "SelectiveKernel": timm.layers.selective_kernel.SelectiveKernel,
    "SelectiveKernelAttn": timm.layers.selective_kernel.SelectiveKernelAttn,
    "GlobalContext": timm.layers.global_context.GlobalContext,
}
C = 32
#: (twin name, constructor arguments after the channel count, the gate that has no kernel or None)
CASES = [
    ("SEModule", {}, None),
    ("SEModule", dict(rd_ratio=0.25, rd_divisor=4, bias=False), None),
    ("SEModule", dict(rd_channels=8, add_maxpool=True, act_layer="silu"), None),
    ("SEModule", dict(norm_layer=nn.BatchNorm2d, act_layer=nn.GELU, gate_layer="hard_sigmoid"), None),
    ("SEModule", dict(gate_layer=timm.layers.activations.HardSigmoid), None),
    ("SEModule", dict(act_layer="swish", gate_layer=nn.Sigmoid), None),
    ("SEModule", dict(gate_layer="tanh"), "Tanh"),
    ("EffectiveSEModule", {}, None),
    ("EffectiveSEModule", dict(add_maxpool=True, gate_layer="sigmoid"), None),
    ("EcaModule", {}, None),
    ("EcaModule", dict(gamma=1.5, gate_layer="hard_sigmoid"), None),
    ("EcaModule", dict(use_mlp=True, act_layer="relu"), None),
    ("EcaModule", dict(gate_layer="relu"), "ReLU"),
    ("CecaModule", {}, None),
    ("CecaModule", dict(act_layer=nn.ReLU, gate_layer="hard_sigmoid"), None),
    ("CbamModule", {}, None),
    ("CbamModule", dict(rd_ratio=0.25, spatial_kernel_size=3, mlp_bias=True, act_layer=nn.SiLU), None),
    ("CbamModule", dict(gate_layer="hard_sigmoid"), None),
    ("CbamModule", dict(gate_layer="tanh"), "Tanh"),
    ("LightCbamModule", {}, None),
    ("LightCbamModule", dict(gate_layer="tanh", spatial_kernel_size=5), None),  # timm uses neither gate
    ("SqueezeExcite", {}, None),
    ("SqueezeExcite", dict(rd_ratio=0.5, act_layer=nn.SiLU), None),
    ("SqueezeExcite", dict(gate_layer="hard_sigmoid", force_act_layer=nn.ReLU, rd_round_fn=round), None),
    ("SqueezeExcite", dict(gate_layer=nn.Hardswish), "Hardswish"),
    ("SqueezeExcitation", dict(squeeze_channels=8), None),
    ("SqueezeExcitation", dict(squeeze_channels=8, activation=nn.SiLU), None),
    ("SqueezeExcitation", dict(squeeze_channels=16, scale_activation=nn.Hardsigmoid), None),
    ("SqueezeExcitation", dict(squeeze_channels=8, scale_activation=nn.Tanh), "Tanh"),
    ("LegacySEModule", dict(reduction=4), None),
    ("LegacySEModule", dict(reduction=16), None),
    ("SplitAttn", dict(norm_layer=nn.BatchNorm2d), None),
    ("SplitAttn", dict(radix=1, groups=4, norm_layer=nn.BatchNorm2d), None),
    ("SelectiveKernel", {}, None),
    ("GlobalContext", dict(fuse_add=True, fuse_scale=False), None),
    ("GlobalContext", dict(fuse_add=True, act_layer=nn.SiLU), None),
    ("GlobalContext", dict(gate_layer="tanh"), "Tanh"),
]


def _case_id(case) -> str:
    name, kwargs, _ = case
    return name + "".join(f"-{k}={getattr(v, '__name__', v)}" for k, v in kwargs.items())


def _grads(module: nn.Module, x: torch.Tensor, cotangent: torch.Tensor) -> list[torch.Tensor]:
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    y = module(x)
    y.backward(cotangent)
    return [y, x.grad, *(p.grad for p in module.parameters())]


def _assert_same_computation(module: nn.Module, peer: nn.Module, what: str) -> None:
    """Output, input gradient and parameter gradients of module and peer, float64, within float64 tolerance."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, C, 7, 9, generator=gen, dtype=torch.float64).to(DEVICE)
    cotangent = torch.randn(2, C, 7, 9, generator=gen, dtype=torch.float64).to(DEVICE)
    names = ["output", "grad x"] + [f"grad {n}" for n, _ in peer.named_parameters()]
    with exact_hardsigmoid_backward():
        expected = _grads(peer, x, cotangent)
    # the gradients as one group (fc1.bias's cancels to ~0 under a training BatchNorm), the output alone
    grad_scale = max(ref.abs().max().item() for ref in expected[1:])
    for i, (name, out, ref) in enumerate(zip(names, _grads(module, x, cotangent), expected, strict=True)):
        assert_close(out, ref, dtype=torch.float64, what=f"{what}: {name}", scale=grad_scale if i else None)


def _parameters(cls: type) -> list[tuple[str, object, object]]:
    """(name, kind, default) of each constructor parameter (annotations are spelled differently)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(cls).parameters.values()]


def test_twins_take_the_peers_constructor_arguments():
    for name, peer_cls in PEERS.items():
        assert _parameters(getattr(tritattn, name)) == _parameters(peer_cls), name


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_twin_matches_peer(case, interpreter_friendly, monkeypatch):
    name, kwargs, unsupported_gate = case
    monkeypatch.setattr(modules, "_warned", set())
    torch.manual_seed(0)
    peer = PEERS[name](C, **kwargs).double().to(DEVICE)
    twin = getattr(tritattn, name)(C, **kwargs).double().to(DEVICE)

    state = peer.state_dict()
    assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in state.items()}
    twin.load_state_dict(state, strict=True)
    peer.load_state_dict(twin.state_dict(), strict=True)

    if unsupported_gate:
        with pytest.warns(UserWarning, match=f"gate {unsupported_gate} has no kernel"):
            _assert_same_computation(twin, peer, f"tritattn.{name}")
    else:
        _assert_same_computation(twin, peer, f"tritattn.{name}")

    converted = copy.deepcopy(peer)
    report = tritattn.convert(converted)
    if unsupported_gate:
        assert type(converted) is type(peer)
        assert report.skipped[0].path == "" and unsupported_gate in report.skipped[0].reason, str(report)
        assert not report.replaced, str(report)
    else:
        assert type(converted) is getattr(tritattn, name)
        assert not report.skipped and report.replaced[0].path == "", str(report)
    _assert_same_computation(converted, peer, f"converted {name}")


def test_convert_keeps_parameters_hooks_and_training_mode():
    model = nn.Sequential(nn.Conv2d(3, C, 3), timm.layers.SEModule(C), torchvision.ops.misc.SqueezeExcitation(C, 8))
    model.eval()
    params = list(model.parameters())
    calls = []
    model[1].register_forward_hook(lambda *_: calls.append("hook"))
    report = tritattn.convert(model)
    assert [r.twin for r in report.replaced] == ["tritattn.SEModule", "tritattn.SqueezeExcitation"]
    same_objects = all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert same_objects, "an optimizer's references must stay valid"
    assert not model[1].training
    model(torch.randn(1, 3, 5, 5))
    assert calls == ["hook"]


def test_convert_not_inplace_leaves_the_model_alone():
    model = nn.Sequential(timm.layers.EcaModule(C))
    report = tritattn.convert(model, inplace=False)
    assert type(model[0]) is timm.layers.EcaModule
    assert type(report.model[0]) is tritattn.EcaModule
    assert report.model[0].conv.weight is not model[0].conv.weight
    assert torch.equal(report.model[0].conv.weight, model[0].conv.weight)


def test_convert_skips_what_it_cannot_vouch_for():
    class TweakedSE(timm.layers.SEModule):
        pass

    pooled_differently = torchvision.ops.misc.SqueezeExcitation(C, 8)
    pooled_differently.avgpool = nn.AdaptiveMaxPool2d(1)
    own_forward = timm.layers.EcaModule(C)
    own_forward.forward = lambda x: x
    model = nn.Sequential(
        TweakedSE(C), timm.layers.coord_attn.CoordAttn(C), pooled_differently, own_forward, tritattn.reference.CecaModule(C),
        timm.layers.NonLocalAttn(C),
    )
    report = tritattn.convert(model)
    reasons = {s.path: s.reason for s in report.skipped}
    assert reasons.keys() == {"0", "1", "2", "3", "5"}, str(report)
    assert "subclass of timm.layers.squeeze_excite.SEModule" in reasons["0"]
    assert "no twin" in reasons["1"]
    assert "avgpool" in reasons["2"]
    assert "forward" in reasons["3"]
    assert "self-attention" in reasons["5"]
    assert [(r.path, r.twin) for r in report.replaced] == [("4", "tritattn.CecaModule")]
    text = str(report)
    assert text.startswith(f"tritattn: 1 block {blocks_where()} (1 CECA), 0 fused, 5 left eager\n") and "TweakedSE" in text


def test_a_cbam_block_is_converted_whole_or_not_at_all():
    cbam = timm.layers.cbam.CbamModule(C)
    cbam.channel.gate = nn.Tanh()
    report = tritattn.convert(nn.Sequential(cbam))
    assert [(s.path, s.cls) for s in report.skipped] == [("0", "timm.layers.cbam.CbamModule")], str(report)
    assert "'channel' is left eager: gate Tanh" in report.skipped[0].reason
    assert not report.replaced and type(cbam.spatial) is timm.layers.cbam.SpatialAttn
