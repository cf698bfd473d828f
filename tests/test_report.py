"""What ``convert``'s report says, on real timm models: the truth, briefly.

- ``repr(report)`` is the summary line in angle brackets (the report holds the whole model);
- the summary says where the blocks run on this machine: the Triton kernels, the kernels in
  Triton's interpreter, or, converted all the same, the eager torch path and why (the CPU
  without the interpreter, a meta-device model, the kernels disabled);
- a tail left unfused says why truly (a CBAM block, another family, an attention left eager);
- a description shared by many blocks is one line, then their paths;
- a traced model (FX ``GraphModule``) has its module-called blocks converted, and a warning for
  the blocks its tracer went through; a scripted model is left as it is, with a warning.
"""
import copy
import dataclasses
import logging
import warnings

import pytest
import torch
from torch import fx, nn

import tritattn
from conftest import TOLERANCES
from fixtures.model_runs import assert_runs_close, forward_backward, interpreter_friendly  # noqa: F401
from fixtures.peers import timm
from fixtures.report_text import blocks_where
from tritattn import backend

TINY_RESNET = dict(layers=(1, 1, 1, 1))


def _rexnet() -> nn.Module:
    """ReXNet: 13 SE blocks with a BatchNorm in their MLP, none taking in its producer."""
    return timm.create_model("rexnet_100")


def _grouped_paths(text: str, header: str) -> list[str]:
    """The paths listed under the group line ``header`` of a report's table."""
    lines = text.splitlines()
    start = lines.index(header) + 1
    listed = []
    for line in lines[start:]:
        if not line.startswith("    "):
            break
        listed.append(line.strip())
    return " ".join(listed).split(", ")


def test_repr_is_the_summary_line():
    model = timm.create_model("efficientnet_b0")
    dry = tritattn.convert(model, dry_run=True)
    report = tritattn.convert(model)
    undone = tritattn.revert(model)
    for made in (dry, report, undone):
        assert repr(made) == f"<{type(made).__name__}: {made.summary()}>"
        # one line whatever the model's size (it was the whole model: ~24 000 characters here); its longest
        # form (dry run, producers taken in, the eager path and its reason) stays under 400
        assert len(repr(made)) < 400, repr(made)
    assert report.summary().startswith(f"tritattn: 16 blocks {blocks_where()} (16 SE)")


def test_summary_says_the_cpu_without_the_interpreter_runs_the_eager_path(monkeypatch):
    monkeypatch.setattr(backend, "INTERPRETER", False)  # as in a process started without TRITON_INTERPRET=1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    why = tritattn.backend_reason(torch.empty(0))
    assert why.startswith("torch: ") and "interpreter is off" in why
    report = tritattn.convert(_rexnet())
    assert report.backend == "torch"
    assert report.summary() == (f"tritattn: 13 blocks converted (13 SE), 0 fused, 0 left eager; on this machine they "
                                f"run the eager torch path ({why.removeprefix('torch: ')})")


def test_summary_of_a_cpu_model_on_a_gpu_machine_points_to_the_gpu(monkeypatch):
    monkeypatch.setattr(backend, "INTERPRETER", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    summary = tritattn.convert(_rexnet(), dry_run=True).summary()
    assert summary.startswith("tritattn (dry run, model untouched): 13 blocks would be converted (13 SE), ")
    assert summary.endswith("; the model is on the CPU: on the GPU they run the Triton kernels)"), summary


def test_summary_of_a_meta_device_model():
    with torch.device("meta"):
        model = _rexnet()
    report = tritattn.convert(model)
    assert len(report.blocks()) == 13 and type(model.features[3].se) is tritattn.SEModule
    assert report.summary().startswith("tritattn: 13 blocks converted (13 SE), ")
    assert report.summary().endswith("; on this machine they run the eager torch path (no Triton kernels for meta tensors)")


def test_summary_with_the_kernels_disabled():
    with tritattn.disabled():
        summary = tritattn.convert(_rexnet()).summary()
    assert summary == ("tritattn: 13 blocks converted (13 SE), 0 fused, 0 left eager; kernels disabled "
                       "(TRITATTN_DISABLE / tritattn.disabled()): the eager torch path runs until enabled")


def test_summary_on_the_gpu_and_on_the_interpreter():
    report = tritattn.convert(_rexnet(), dry_run=True)
    assert dataclasses.replace(report, backend="triton").summary() == (
        "tritattn (dry run, model untouched): 13 blocks would go on the Triton kernels (13 SE), 0 would be fused, 0 left eager")
    assert dataclasses.replace(report, backend="triton-interpreter", dry_run=False).summary() == (
        "tritattn: 13 blocks on the kernels in Triton's interpreter (13 SE), 0 fused, 0 left eager")


@pytest.mark.parametrize("attn_layer, reason", [
    ("cbam", "its attention (CbamModule) is a CBAM block: the fused pass applies a channel attention only, and "
             "CBAM's spatial attention comes after its channel attention, before the residual add"),
    ("gc", "its attention (GlobalContext) is not a channel-attention block, and the fused pass applies one only"),
])
def test_a_converted_attention_that_cannot_be_fused_says_why(attn_layer, reason):
    report = tritattn.convert(timm.create_model("resnet18", block_args=dict(attn_layer=attn_layer), **TINY_RESNET))
    assert len(report.blocks()) == 4 and not report.skipped, str(report)
    assert [s.reason for s in report.not_fused] == [reason] * 4, str(report)
    assert str(report).count(reason) == 1, "one line for the 4 tails"


def test_a_tail_whose_attention_is_left_eager_says_so():
    model = timm.create_model("seresnet18", **TINY_RESNET)
    model.layer1[0].se.gate = nn.Tanh()  # no kernel: this SE stays eager
    report = tritattn.convert(model)
    assert [(s.path, s.reason) for s in report.not_fused] == [(
        "layer1.0",
        "its attention (SEModule) is not converted (left eager), and the fused pass needs a converted channel-attention block",
    )], str(report)
    text = str(report).splitlines()
    assert f"  layer1.0.se  timm.layers.squeeze_excite.SEModule: {report.skipped[0].reason}" in text, "a single row"


def test_a_reason_shared_by_many_blocks_is_one_line():
    report = tritattn.convert(_rexnet())
    paths = [r.path for r in report.replaced]
    assert len(paths) == 13 and [s.path for s in report.not_taken_in] == paths, str(report)
    text = str(report)
    replaced = report.replaced[0]
    replaced_line = f"  13 blocks: {replaced.peer} -> {replaced.twin} (gate {replaced.gate}): {replaced.pipeline}"
    not_taken_in_line = f"  13 blocks: {report.not_taken_in[0].cls}: {report.not_taken_in[0].reason}"
    assert {r.pipeline for r in report.replaced} == {replaced.pipeline}
    assert {s.reason for s in report.not_taken_in} == {report.not_taken_in[0].reason}
    assert _grouped_paths(text, replaced_line) == paths and _grouped_paths(text, not_taken_in_line) == paths
    refusal = replaced.pipeline.removeprefix("per-op: ")  # why the block runs per op, which is why it takes nothing in
    assert refusal in report.not_taken_in[0].reason and text.count(refusal) == 2, "once per section, not twice per block"
    rows = [line for line in text.splitlines() if line.startswith("  ") and not line.startswith("    ")]
    assert rows == [replaced_line, not_taken_in_line], text  # no row per block


def _small_model(channels: int = 12) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
        timm.layers.SEModule(channels, rd_ratio=0.25), nn.Conv2d(channels, channels, 1), timm.layers.EcaModule(channels),
    ).eval()


class _AttentionLeaves(fx.Tracer):
    """A tracer that keeps timm's SE and ECA blocks whole (calls them as modules)."""

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return isinstance(m, (timm.layers.SEModule, timm.layers.EcaModule)) or super().is_leaf_module(m, qualified_name)


def _converting(model: nn.Module) -> tuple[tritattn.ConvertReport, list[str]]:
    """convert(model), and the messages of the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = tritattn.convert(model)
    return report, [str(w.message) for w in caught if "tritattn" in str(w.message)]


def test_a_graph_module_calling_its_blocks_as_modules_is_converted(interpreter_friendly):
    model = _small_model().double()
    peer = copy.deepcopy(model)
    graph = fx.GraphModule(model, _AttentionLeaves().trace(model))
    report, warned = _converting(graph)
    assert not warned and not report.unconvertible, warned
    assert [(r.path, r.twin) for r in report.replaced] == [("3", "tritattn.SEModule"), ("5", "tritattn.EcaModule")]
    assert type(graph.get_submodule("3")) is tritattn.SEModule
    x = torch.randn(2, 3, 3, 5, dtype=torch.float64)
    assert_runs_close(forward_backward(graph, x), forward_backward(peer, x), TOLERANCES[torch.float64], "converted graph")


def test_a_graph_traced_through_its_blocks_warns(caplog):
    model = _small_model()
    graph = fx.symbolic_trace(model)
    classes = {path: type(m) for path, m in graph.named_modules()}
    with caplog.at_level(logging.INFO, logger="tritattn"):
        report, warned = _converting(graph)
    assert not report.replaced and {path: type(m) for path, m in graph.named_modules()} == classes
    assert [(s.path, s.cls) for s in report.unconvertible] == [("", "torch.fx.GraphModule")]
    reason = report.unconvertible[0].reason
    assert ("traced through its attention blocks (2: 3 (timm.layers.squeeze_excite.SEModule), "
            "5 (timm.layers.eca.EcaModule))") in reason and "convert the model before tracing it" in reason
    assert warned == [f"tritattn.convert: the model is {reason}"]
    assert warned[0] in caplog.messages
    assert report.summary() == "tritattn: 0 blocks converted, 0 fused, 0 left eager; 1 traced or scripted part it could not convert"


def test_timm_fx_feature_extractor_warns():
    model = timm.create_model("seresnet18", features_only=True, feature_cls="fx", **TINY_RESNET)
    report, warned = _converting(model)
    assert not report.replaced and [s.path for s in report.unconvertible] == ["graph_module"], str(report)
    assert len(warned) == 1 and warned[0].startswith("tritattn.convert: graph_module is an FX graph that calls no "
                                                     "attention block as a module"), warned


def test_a_graph_without_attention_blocks_does_not_warn():
    report, warned = _converting(fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())))
    assert not warned and not report.unconvertible and not report.replaced


def test_a_scripted_model_is_left_as_it_is_with_a_warning():
    model = _small_model()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 3, 5)
    before = scripted(x)
    report, warned = _converting(scripted)
    assert not report.replaced and [(s.path, s.cls) for s in report.unconvertible] == [("", "torch.jit.ScriptModule")]
    assert len(warned) == 1 and "TorchScript" in warned[0] and "convert the eager model before scripting" in warned[0]
    assert torch.equal(scripted(x), before)
