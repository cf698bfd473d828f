"""CBAM and light CBAM in inference (``tritattn::cbam_eval``, 3 kernels) against the float64
reference modules with shared weights and non-trivial BatchNorm statistics: odd C and H×W, batch
1, both layouts, both gates, 3×3 and 7×7 convs, default and tiny tiles (several programs per
sample, each feeding the last one's conv); float32 / float16 / bfloat16 no worse than eager; and
when the pipeline is taken (inference only) and when not.
"""
import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import tritattn
from tritattn import excitation_block, reference
from conftest import DEVICE, TOLERANCES, assert_close, assert_same_layout, make_input, use_small_tiles

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


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape, kernel_size", [((2, 37, 5, 3), 7), ((1, 12, 1, 1), 3), ((3, 20, 9, 9), 3)],
                         ids=["37x5x3-k7", "b1-12x1x1-k3", "20x9x9-k3"])
@pytest.mark.parametrize("tiles", ["default_tiles", "small_tiles"])
def test_cbam_inference_matches_float64_reference(name, shape, kernel_size, tiles, channels_last, monkeypatch):
    if tiles == "small_tiles":
        use_small_tiles(monkeypatch)
    ref, fast = build_pair(name, shape[1], torch.float64, spatial_kernel_size=kernel_size,
                           gate_layer="hard_sigmoid" if shape[0] == 1 else "sigmoid")
    x = make_input(shape, torch.float64, channels_last)
    with torch.no_grad(), census.LaunchCensus() as c:
        y = fast(x)
    assert [op for op, _ in c.tritattn_calls] == ["cbam_eval"] and c.total == 3
    assert_same_layout(y, x)
    assert_close(y, ref(x), what=f"{name} inference")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_cbam_inference_is_as_accurate_as_eager(name, dtype):
    ref, fast = build_pair(name, 24, dtype)
    eager = copy.deepcopy(ref).to(dtype)
    x = make_input((2, 24, 6, 5), dtype, channels_last=True)
    with torch.no_grad():
        y, y_eager, y_ref = fast(x), eager(x), ref(x.double())
    assert y.dtype == dtype and not y.isnan().any()
    err, eager_err = ((out.double() - y_ref).abs().max().item() for out in (y, y_eager))
    bound = 2 * eager_err + TOLERANCES[dtype][0] * y_ref.abs().max().item()
    assert err <= bound, f"{name} {dtype}: error {err:.3g} > bound {bound:.3g} (eager's {eager_err:.3g})"


def test_cbam_takes_the_pipeline_in_inference_only(monkeypatch):
    _, fast = build_pair("CbamModule", 16, torch.float32)
    x = torch.randn(2, 16, 4, 4, device=DEVICE)
    with torch.no_grad():
        assert fast.uses_eval_pipeline(x)
    with torch.inference_mode():
        assert fast.uses_eval_pipeline(x)
    assert not fast.uses_eval_pipeline(x), "the parameters want gradients"
    fast.requires_grad_(False)
    assert fast.uses_eval_pipeline(x) and not fast.uses_eval_pipeline(x.clone().requires_grad_())
    with torch.no_grad():
        fast.train()
        assert not fast.uses_eval_pipeline(x), "a training BatchNorm uses batch statistics"
        fast.eval()
        monkeypatch.setattr(excitation_block, "enabled", False)
        assert not fast.uses_eval_pipeline(x)


def test_cbam_eval_refusals_say_why():
    cbam = tritattn.CbamModule(16, rd_ratio=0.25)
    assert cbam.eval_refusal() is None
    cbam.spatial.conv.bn.running_mean = None
    assert "running statistics" in cbam.eval_refusal()
    assert "Mish" in tritattn.CbamModule(16, act_layer=nn.Mish).eval_refusal()


@pytest.mark.parametrize("name", NAMES)
def test_converted_timm_cbam_takes_the_pipeline_in_inference(name):
    from fixtures.peers import timm

    peer = getattr(timm.layers.cbam, name)(24, rd_ratio=0.25)
    for p in peer.parameters():
        nn.init.normal_(p, std=0.3)
    peer.spatial.conv.bn.running_var.uniform_(0.5, 2.0)
    peer = peer.to(DEVICE, torch.float64).eval()
    x = make_input((2, 24, 5, 7), torch.float64, channels_last=True)
    with torch.no_grad():
        expected = peer(x)
    report = tritattn.convert(peer)
    assert "inference 3-kernel pipeline" in str(report)
    with torch.no_grad(), census.LaunchCensus() as c:
        y = peer(x)
    assert [op for op, _ in c.tritattn_calls] == ["cbam_eval"]
    assert_close(y, expected, what=f"converted timm {name}")
