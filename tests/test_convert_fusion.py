"""The fused SE-ResNet tail (:mod:`tritattn.fusion`): used where it is safe, reported where not,
and a fused model behaves as the unfused one (numbers, hooks, copies, pickles).

The numbers of fused models against their peers are in test_convert_models.py (seresnet18,
seresnet50 and ecaresnet26t are fused there); here is the machinery around it.
"""
import copy
import io
import json
import textwrap

import pytest
import torch

import tritattn
from conftest import TOLERANCES
from fixtures.model_runs import assert_runs_close, forward_backward, interpreter_friendly  # noqa: F401
from fixtures.peer_models import ONE_BLOCK_PER_STAGE, randomize_norms_
from fixtures.peers import timm
from fixtures.subprocesses import output_tail, run_python
from tritattn import fusion

import timm.models.resnet  # noqa: E402  (after fixtures.peers, which makes timm importable)
import timm.models.senet  # noqa: E402


def _tiny_resnet(name: str = "seresnet18", **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, **ONE_BLOCK_PER_STAGE, **kwargs)
    return randomize_norms_(model, torch.Generator().manual_seed(0)).double().eval()


def _input() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_basic_and_bottleneck_tails_are_fused(interpreter_friendly):
    for name, block in (("seresnet18", timm.models.resnet.BasicBlock), ("seresnet50", timm.models.resnet.Bottleneck)):
        report = tritattn.convert(_tiny_resnet(name))
        assert len(report.fused) == 4 and not report.not_fused, str(report)
        fused_block = report.model.layer1[0]
        assert isinstance(fused_block, block) and type(fused_block) is getattr(fusion, "ResidualFused" + block.__name__)
        assert "se + residual add + ReLU in one pass" in str(report)


def test_the_original_senet_tails_are_fused(interpreter_friendly):
    """The legacy SENet's blocks: fused, and equal to timm's in float64 — the whole model in eval,
    one block of each kind in training (batch statistics: a 32×32 input leaves layer4 1×1, where
    a batch of two makes the BatchNorm ill-conditioned, so the model is not the place for that)."""
    for name, block in (("legacy_seresnet18", timm.models.senet.SEResNetBlock),
                        ("legacy_seresnext26_32x4d", timm.models.senet.SEResNeXtBottleneck)):
        torch.manual_seed(0)
        peer = randomize_norms_(timm.create_model(name, num_classes=10), torch.Generator().manual_seed(0)).double().eval()
        report = tritattn.convert(copy.deepcopy(peer))
        assert len(report.fused) == 8 and not report.not_fused and not report.skipped, str(report)
        fused_block = report.model.layer2[0]
        assert isinstance(fused_block, block) and type(fused_block) is getattr(fusion, "ResidualFused" + block.__name__)
        assert type(fused_block.se_module) is tritattn.LegacySEModule
        if name != "legacy_seresnet18":  # whose whole-model run is test_convert_models.py's
            assert_runs_close(forward_backward(report.model, _input()), forward_backward(peer, _input()),
                              TOLERANCES[torch.float64], f"{name} fused, eval")
        peer_block, fused_block = peer.layer2[0].train(), fused_block.train()
        x = torch.randn(4, peer_block.conv1.in_channels, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        assert_runs_close(forward_backward(fused_block, x), forward_backward(peer_block, x),
                          TOLERANCES[torch.float64], f"{name} layer2[0] fused, training")


@pytest.mark.parametrize(
    "kwargs, reason, fused",
    [
        (dict(drop_path_rate=0.1), "drop path", 1),  # timm's rate grows from 0 in the first block
        (dict(act_layer=torch.nn.SiLU), "not nn.ReLU", 0),
        (dict(block_args=dict(attn_layer="cbam")), "CBAM's spatial attention comes after its channel attention", 0),
    ],
    ids=["drop_path", "silu", "cbam"],
)
def test_unsafe_tails_are_not_fused(kwargs, reason, fused):
    name = "resnet18" if "block_args" in kwargs else "seresnet18"
    report = tritattn.convert(_tiny_resnet(name, **kwargs))
    assert len(report.fused) == fused and len(report.not_fused) == 4 - fused, str(report)
    assert all(reason in s.reason for s in report.not_fused), str(report)


def test_a_changed_timm_forward_is_not_fused(monkeypatch):
    monkeypatch.setattr(timm.models.resnet.BasicBlock, "forward", lambda self, x: x)
    report = tritattn.convert(_tiny_resnet())
    assert not report.fused and "computes something else" in report.not_fused[0].reason, str(report)


def test_a_rewritten_but_equal_timm_forward_is_still_fused(monkeypatch):
    """The check is of what the forward computes, not of its source text (a new timm release)."""
    timm_forward = timm.models.resnet.BasicBlock.forward
    monkeypatch.setattr(timm.models.resnet.BasicBlock, "forward", lambda self, x: timm_forward(self, x))
    report = tritattn.convert(_tiny_resnet())
    assert len(report.fused) == 4 and not report.not_fused, str(report)


def test_fused_model_falls_back_when_a_hook_is_added(interpreter_friendly):
    model = _tiny_resnet()
    unfused = tritattn.convert(copy.deepcopy(model), fuse=False).model
    fused = tritattn.convert(model).model
    calls = []
    fused.layer2[0].se.register_forward_hook(lambda *_: calls.append("se"))
    assert "hook" in fusion.fusion_blocker(fused.layer2[0])
    x = _input()
    assert_runs_close(forward_backward(fused, x), forward_backward(unfused, x), TOLERANCES[torch.float64], "hooked")
    assert calls == ["se"]


def test_fused_model_copies_and_pickles(interpreter_friendly):
    model = tritattn.convert(_tiny_resnet()).model
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(model), torch.load(buffer, weights_only=False)):
        assert type(clone.layer3[0]) is type(model.layer3[0])
        assert type(clone.layer3[0].se) is tritattn.SEModule
        with torch.no_grad():
            assert torch.equal(clone(_input()), model(_input()))


#: Loads a fused model saved by the test below in a process that never fused anything: the fused
#: block classes must come from ``tritattn.fusion``'s module ``__getattr__`` as pickle asks for them.
LOAD_FUSED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    import fixtures.peers  # timm importable (as in the tests), for the blocks' timm base classes
    from tritattn import fusion
    from tritattn.kernels import tiling
    torch.set_num_threads(1)
    if not torch.cuda.is_available():  # the saving process's tiles (interpreter_friendly)
        tiling.TILE_ELEMENTS = tiling.LONG_SIDE_MAX = 2**16
    fused_names = ["ResidualFusedBasicBlock", "ResidualFusedBottleneck"]
    assert not any(name in vars(fusion) for name in fused_names), "a fused class exists before loading"
    saved = torch.load(sys.argv[1], weights_only=False)
    model = saved["model"]
    with torch.no_grad():
        out = model(saved["input"])
    assert out.dtype == saved["output"].dtype and torch.equal(out, saved["output"]), (out - saved["output"]).abs().max()
    print(json.dumps([[type(b).__module__, type(b).__name__, type(b.se).__name__] for b in
                      (model.layer1[0], model.layer2[0], model.layer3[0], model.layer4[0])]))
    """
)


def test_fused_model_loads_in_a_fresh_process(tmp_path, interpreter_friendly):
    model = tritattn.convert(_tiny_resnet()).model
    with torch.no_grad():
        expected = model(_input())
    torch.save({"model": model, "input": _input(), "output": expected}, tmp_path / "fused.pt")
    blocks = [[type(b).__module__, type(b).__name__, type(b.se).__name__] for b in
              (model.layer1[0], model.layer2[0], model.layer3[0], model.layer4[0])]
    assert blocks == [["tritattn.fusion", "ResidualFusedBasicBlock", "SEModule"]] * 4

    result = run_python(["-c", LOAD_FUSED_SCRIPT, str(tmp_path / "fused.pt")])
    assert result.returncode == 0, output_tail(result)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == blocks, output_tail(result)
