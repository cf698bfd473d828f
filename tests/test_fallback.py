"""A channel-attention block whose gate has no kernel (a tanh, say) warns once and runs its
reference forward; its ``excite(x, residual, act)`` — what a fused SE-ResNet tail calls
(:mod:`tritattn.fusion`) — must still add the residual and apply the activation.
"""
import pytest
import torch
import torch.nn.functional as F

from conftest import DEVICE
from tritattn import modules, reference

#: (class name in tritattn.modules and tritattn.reference, constructor arguments): a gate without a kernel.
BLOCKS = [
    ("SEModule", dict(channels=8, rd_channels=4, gate_layer="tanh")),
    ("EffectiveSEModule", dict(channels=8, gate_layer="tanh")),
    ("EcaModule", dict(channels=8, gate_layer="tanh")),
]


@pytest.fixture(autouse=True)
def fresh_warning_registry(monkeypatch):
    """The "has no kernel" warning is given once per (module, gate) per process: start afresh, so
    the warning is expected here whatever ran before."""
    monkeypatch.setattr(modules, "_warned", set())


def _pair(name: str, kwargs: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The fast block and its reference twin, with the same random float64 weights."""
    ref = getattr(reference, name)(**kwargs).to(device=DEVICE, dtype=torch.float64).eval()
    for p in ref.parameters():
        torch.nn.init.normal_(p)
    block = getattr(modules, name)(**kwargs).to(device=DEVICE, dtype=torch.float64).eval()
    block.load_state_dict(ref.state_dict())
    return block, ref


@pytest.mark.parametrize("act", ["identity", "relu"])
@pytest.mark.parametrize("name, kwargs", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_excite_without_a_gate_kernel_adds_residual_and_act(name, kwargs, act):
    block, ref = _pair(name, kwargs)
    assert modules.kernel_for_gate(block.gate) is None, "the gate must be one without a kernel"
    x = torch.randn(2, 8, 5, 3, dtype=torch.float64, device=DEVICE)
    residual = torch.randn(2, 8, 5, 3, dtype=torch.float64, device=DEVICE)
    with pytest.warns(UserWarning, match="has no kernel"):
        out = block.excite(x, residual, act)
    with torch.no_grad():
        expected = ref(x) + residual
    assert (expected < 0).any() and (expected > 0).any()  # the ReLU matters
    if act == "relu":
        expected = F.relu(expected)
    assert torch.equal(out, expected), (out - expected).abs().max()


@pytest.mark.parametrize("name, kwargs", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_forward_without_a_gate_kernel_is_the_reference(name, kwargs):
    block, ref = _pair(name, kwargs)
    x = torch.randn(2, 8, 5, 3, dtype=torch.float64, device=DEVICE)
    with pytest.warns(UserWarning, match="has no kernel"):
        out = block(x)
    with torch.no_grad():
        assert torch.equal(out, ref(x))
