"""``tritattn.convert`` on real timm and torchvision models: the converted model computes what
the peer computes, output and every parameter gradient.

For each model (:data:`fixtures.peer_models.PEER_MODELS`, random weights, eval mode so that
BatchNorm uses its running statistics and dropout is off), on a fresh 2×3×32×32 input drawn so
that no ReLU / Hardswish / hard-sigmoid input and no max's top-two gap lies within reach of its
kink (:mod:`fixtures.kinks`: 8× the peer's float32 rounding there): closer than that, two correct
float32 runs can take different branches and their gradients differ by a jump, by CPU luck:

- the report lists every attention block as replaced (and every SE-ResNet tail as fused);
- float64: converted against peer within float64 tolerance (the kernels accumulate in float64
  for float64, so the two differ by rounding alone), the peer's ``nn.Hardsigmoid`` given an
  exact derivative (:func:`fixtures.model_runs.exact_hardsigmoid_backward`: torch's is
  float32-precise even in float64);
- float32: converted against peer, both in float32, within float32 tolerance — the ops'
  (``conftest.TOLERANCES``), or twice the peer's own float32 error against the float64 run where
  that is larger: a deep network amplifies rounding (MobileNetV3's random weights give its
  float32 gradients a 2e-5 normwise error of their own), and the converted model must be as
  accurate as the peer, not more.
"""
import copy

import pytest
import torch

import tritattn
from conftest import DEVICE, TOLERANCES
from fixtures.kinks import draw_away_from_kinks
from fixtures.model_runs import (  # noqa: F401  (interpreter_friendly is a fixture)
    assert_runs_close, errors, exact_hardsigmoid_backward, forward_backward, interpreter_friendly,
)
from fixtures.peer_models import PEER_MODELS, build

#: model → (attention blocks replaced, ResNet tails fused)
EXPECTED_REPORT = {
    "timm/seresnet18": (4, 4),
    "timm/seresnet50": (4, 4),
    "timm/ecaresnet26t": (4, 4),
    "timm/legacy_seresnet18": (8, 8),  # the original SENet: its SEModule and SEResNetBlock tails
    "timm/resnest14d": (4, 0),  # split attention
    "timm/skresnet18": (16, 0),  # 8 × (SelectiveKernel, its SelectiveKernelAttn)
    "timm/gcresnet33ts": (10, 0),  # global context
    "timm/cbam_resnet18": (12, 0),  # 4 × (CbamModule, its ChannelAttn, its SpatialAttn)
    "timm/efficientnet_b0": (16, 0),
    "timm/mobilenetv3_large_100": (8, 0),
    "torchvision/efficientnet_b0": (16, 0),
    "torchvision/mobilenet_v3_small": (9, 0),
    "torchvision/regnet_y_400mf": (16, 0),
}
INPUT_SHAPE = (2, 3, 32, 32)
#: An input is redrawn while a kinked op's exact input lies within this many times the float32
#: run's deviation of the kink. At 2×3×32×32, a draw passes with probability 0.45 (ecaresnet26t)
#: to 1 (regnet_y_400mf), measured over 20 draws per model.
KINK_REACH_FACTOR = 8.0


def test_every_peer_model_has_an_expected_report():
    assert EXPECTED_REPORT.keys() == PEER_MODELS.keys()


@pytest.mark.parametrize("name", list(PEER_MODELS))
def test_converted_model_matches_peer(name, interpreter_friendly):
    peer = build(name).double().eval().to(DEVICE)
    converted = copy.deepcopy(peer)
    report = tritattn.convert(converted)
    assert (len(report.replaced), len(report.fused)) == EXPECTED_REPORT[name], str(report)
    assert not report.skipped, str(report)

    peer32 = copy.deepcopy(peer).float()
    x, draws = draw_away_from_kinks(
        lambda: torch.randn(INPUT_SHAPE, dtype=torch.float64, device=DEVICE), peer, lambda x: peer32(x.float()),
        KINK_REACH_FACTOR,
    )
    print(f"{name}: input drawn {draws} time(s) to keep every kink out of float32's reach")
    with exact_hardsigmoid_backward():
        truth = forward_backward(peer, x)
    converted64 = forward_backward(converted, x)
    print(f"{name} float64: converted - peer: {errors(converted64, truth)}")
    assert_runs_close(converted64, truth, TOLERANCES[torch.float64], f"{name} float64")

    peer32 = forward_backward(peer32, x.float())
    converted32 = forward_backward(converted.float(), x.float())
    peer_error = max(e.max_rel for e in errors(peer32, truth))
    tolerance = max(TOLERANCES[torch.float32][0], 2 * peer_error)
    for what, run, ref in (("converted - peer", converted32, peer32), ("converted - float64", converted32, truth),
                           ("peer - float64", peer32, truth)):
        print(f"{name} float32: {what}: {errors(run, ref)}")
    assert_runs_close(converted32, peer32, (tolerance, tolerance), f"{name} float32")
