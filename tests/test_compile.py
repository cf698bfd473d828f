"""``torch.compile`` of converted models: one graph, the eager numbers, no recompiles per batch size.

- ``torch._dynamo.explain``: no graph break in a model with one of each peer block
  (:func:`fixtures.peer_models.every_peer_block`), in one with one block of each of the
  split-attention, selective-kernel, global-context and original-SENet families
  (:func:`fixtures.peer_models.split_and_context_blocks`), nor in a fused SE-ResNet;
- ``torch.compile(fullgraph=True)`` gives eager's output and parameter gradients: with the
  ``aot_eager`` backend (AOTAutograd traces forward and backward through the custom ops, then
  runs the graph eagerly) for the three models, and with the default ``inductor`` backend for
  the every-block model;
- batch sizes 2, 3, 4 compile twice at most (the first size, then one dynamic-batch graph);
- ``dynamic=True`` (``aot_eager``): one graph, compiled on the first call, serves batch sizes 2
  and 5 at 32×32 and batch 3 at 16×16 with eager's output and gradients: no recompile
  (``error_on_recompile``), no later backend call, one graph in ``torch._dynamo.utils.counters``;
- ``mode="reduce-overhead"`` with ``dynamic=True`` (Inductor and CUDA graphs; CUDA only, skipped
  with its reason on the CPU): eager's output and gradients on every call, the recorded graphs
  replayed on fresh inputs of two batch sizes, one compile, no call skipped out of CUDA graphs.

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
    assert not report.skipped and (report.fused or name in ("every_peer_block", "split_and_context_blocks")), str(report)
    return model


def _input(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32).to(DEVICE)


def _input_away_from_kinks(name: str, batch: int = 2, size: int = 32) -> torch.Tensor:
    """A fresh float32 [batch, 3, size, size] input whose float64 run of the peer model keeps
    every kink out of reach."""
    peer = build(name).eval().to(DEVICE)
    peer64 = copy.deepcopy(peer).double()
    x, _ = draw_away_from_kinks(
        lambda: torch.randn(batch, 3, size, size, dtype=torch.float64, device=DEVICE).float().double(),
        peer64, lambda x: peer(x.float()), KINK_REACH_FACTOR,
    )
    return x.float()


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", ["every_peer_block", "timm/seresnet18", "split_and_context_blocks"])
def test_no_graph_breaks(name, interpreter_friendly):
    explanation = torch._dynamo.explain(_model(name))(_input())
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize(
    "name, backend",
    [("every_peer_block", "aot_eager"), ("timm/seresnet18", "aot_eager"), ("every_peer_block", "inductor"),
     ("split_and_context_blocks", "aot_eager")],
)
def test_compiled_matches_eager(name, backend, interpreter_friendly):
    model = _model(name)
    compiled = torch.compile(copy.deepcopy(model), fullgraph=True, backend=backend)
    x = _input_away_from_kinks(name)
    assert_runs_close(forward_backward(compiled, x), forward_backward(model, x), TOLERANCES[torch.float32], backend)


def test_inference_compiles_in_one_graph_with_the_block_pipelines(interpreter_friendly):
    """Under torch.no_grad() CBAM takes its 3-kernel op (tritattn::cbam_block) and the channel
    blocks theirs: fullgraph compiles them without a break and gives eager's numbers."""
    model = _model("every_peer_block")
    x = _input_away_from_kinks("every_peer_block")
    with torch.no_grad():
        explanation = torch._dynamo.explain(model)(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        ops = {str(n.target).removesuffix(".default") for g in explanation.graphs for n in g.graph.nodes}
        assert {"tritattn.cbam_block", "tritattn.excitation_block"} <= ops, ops
        compiled = torch.compile(copy.deepcopy(model), fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x), model(x), rtol=TOLERANCES[torch.float32][1], atol=TOLERANCES[torch.float32][0])


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


#: (batch, spatial size) of the successive calls of the dynamic-shape test: the batch grows, then
#: shrinks as the spatial size changes (all sizes ≥ 2: dynamo specialises 0 and 1)
DYNAMIC_SHAPES = [(2, 32), (5, 32), (3, 16)]


def test_dynamic_compile_serves_every_shape_with_one_graph(interpreter_friendly):
    """``torch.compile(dynamic=True, fullgraph=True)`` with ``aot_eager``: eager's output and
    parameter gradients for every shape of :data:`DYNAMIC_SHAPES`, all from the graph compiled on
    the first call: a recompile raises (``error_on_recompile``, with dynamo's guard failure), the
    backend is not called again after the first call, and dynamo counts one graph.

    The first call may call the backend twice: with ``dynamic=True`` dynamo first traces the
    BatchNorms' eps and momentum as symbolic floats, specialises them and restarts the analysis
    (torch 2.13); the restart is no recompile and installs no second graph."""
    model = _model("every_peer_block")
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(copy.deepcopy(model), dynamic=True, fullgraph=True, backend=counter)
    counters = torch._dynamo.utils.counters
    counters.clear()
    backend_calls = []
    with torch._dynamo.config.patch(error_on_recompile=True):
        for batch, size in DYNAMIC_SHAPES:
            x = _input_away_from_kinks("every_peer_block", batch, size)
            run, eager = forward_backward(compiled, x), forward_backward(model, x)
            assert_runs_close(run, eager, TOLERANCES[torch.float32], f"batch {batch}, {size}×{size}")
            backend_calls.append(counter.frame_count)
    assert backend_calls == backend_calls[:1] * len(DYNAMIC_SHAPES), f"backend calls after each shape: {backend_calls}"
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU: mode='reduce-overhead' records and replays CUDA graphs, which the CPU does not have "
    "(test_dynamic_compile_serves_every_shape_with_one_graph checks dynamic=True there)",
)
def test_reduce_overhead_replays_cuda_graphs_with_eager_numbers(monkeypatch):
    """``torch.compile(mode="reduce-overhead", dynamic=True, fullgraph=True)`` (Inductor with CUDA
    graph trees): every call (the warm-up, the recording and the replays of each batch size, each
    on a fresh input) gives eager's output and parameter gradients; the model compiles once (a
    recompile raises), and no graph is left out of CUDA graphs (Inductor's cudagraph_skips).

    cuDNN's TF32 (on by default; cuBLAS's is off by default) is off for both runs: Inductor may
    change a convolution's layout, and a TF32 convolution in another layout differs from eager's
    by far more than float32 rounding."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    calls = [2, 2, 2, 3, 3, 3, 2]  # per batch size: warm-up, recording, replay; then batch 2's replay again
    model = _model("every_peer_block")
    compiled = torch.compile(copy.deepcopy(model), mode="reduce-overhead", dynamic=True, fullgraph=True)
    counters = torch._dynamo.utils.counters
    counters.clear()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i, batch in enumerate(calls):
            x = _input_away_from_kinks("every_peer_block", batch)
            torch.compiler.cudagraph_mark_step_begin()
            run = forward_backward(compiled, x)
            # compared before the next compiled call, which may overwrite the output in the graphs' memory pool
            assert_runs_close(run, forward_backward(model, x), TOLERANCES[torch.float32], f"call {i}, batch {batch}")
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert counters["inductor"]["cudagraph_skips"] == 0, "a graph ran without CUDA graphs (TORCH_LOGS=cudagraphs says why)"
