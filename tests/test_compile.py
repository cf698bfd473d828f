"""``torch.compile`` of converted models: one graph, the eager numbers, no recompiles per batch size.

- ``torch._dynamo.explain``: no graph break in a model with one of each peer block
  (:func:`fixtures.peer_models.every_peer_block`) nor in a fused SE-ResNet;
- ``torch.compile(fullgraph=True)`` gives eager's output and parameter gradients: with the
  ``aot_eager`` backend (AOTAutograd traces forward and backward through the custom ops, then
  runs the graph eagerly) for both models, and with the default ``inductor`` backend for the
  every-block model;
- batch sizes 2, 3, 4 compile twice at most (the first size, then one dynamic-batch graph).

The float32 gradients of compiled and eager runs are compared element-wise, so the inputs are
fresh draws that keep every ReLU / hard-sigmoid input and every max's top-two gap out of float32's
reach of its kink (:mod:`fixtures.kinks`, measured on the unconverted peer): Inductor rounds the
torch parts differently, and a branch taken differently would be CPU luck, not a defect.
"""
import copy

import pytest
import torch
import torch._dynamo.testing

import tritattn
from conftest import DEVICE, TOLERANCES
from fixtures.kinks import draw_away_from_kinks
from fixtures.model_runs import assert_runs_close, forward_backward, interpreter_friendly  # noqa: F401
from fixtures.peer_models import build

#: the input is redrawn while a kink is within this many times float32's deviation (as in test_convert_models.py)
KINK_REACH_FACTOR = 8.0


def _model(name: str) -> torch.nn.Module:
    model = build(name).eval().to(DEVICE)
    report = tritattn.convert(model)
    assert not report.skipped and (report.fused or name == "every_peer_block"), str(report)
    return model


def _input(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32).to(DEVICE)


def _input_away_from_kinks(name: str, batch: int = 2) -> torch.Tensor:
    """A fresh float32 input whose float64 run of the peer model keeps every kink out of reach."""
    peer = build(name).eval().to(DEVICE)
    peer64 = copy.deepcopy(peer).double()
    x, _ = draw_away_from_kinks(
        lambda: torch.randn(batch, 3, 32, 32, dtype=torch.float64, device=DEVICE).float().double(),
        peer64, lambda x: peer(x.float()), KINK_REACH_FACTOR,
    )
    return x.float()


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", ["every_peer_block", "timm/seresnet18"])
def test_no_graph_breaks(name, interpreter_friendly):
    explanation = torch._dynamo.explain(_model(name))(_input())
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize(
    "name, backend",
    [("every_peer_block", "aot_eager"), ("timm/seresnet18", "aot_eager"), ("every_peer_block", "inductor")],
)
def test_compiled_matches_eager(name, backend, interpreter_friendly):
    model = _model(name)
    compiled = torch.compile(copy.deepcopy(model), fullgraph=True, backend=backend)
    x = _input_away_from_kinks(name)
    assert_runs_close(forward_backward(compiled, x), forward_backward(model, x), TOLERANCES[torch.float32], backend)


def test_batch_size_changes_do_not_recompile_per_batch(interpreter_friendly):
    model = _model("every_peer_block")
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(copy.deepcopy(model), fullgraph=True, backend=counter)
    compiles = []
    for batch in (2, 3, 4):
        x = _input_away_from_kinks("every_peer_block", batch)
        run, eager = forward_backward(compiled, x), forward_backward(model, x)
        assert_runs_close(run, eager, TOLERANCES[torch.float32], f"batch {batch}")
        compiles.append(counter.frame_count)
    assert compiles == [1, 2, 2], f"compiles after batches 2, 3, 4: {compiles}"
