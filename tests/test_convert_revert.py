"""``convert`` and its undo: ``revert``, ``dry_run``, converting twice, the report's summary line
and what ``convert`` logs.

- ``revert`` gives every block its own class back: the same objects and parameters, and outputs
  and gradients bitwise equal to the model's before ``convert`` (the eager path runs again);
- ``convert`` twice is ``convert`` once (same model, same report); ``revert`` of a model never
  converted does nothing;
- ``dry_run=True`` reports exactly what ``convert`` then does, and touches nothing;
- the summary line comes first in ``str(report)`` and is logged at INFO on the ``tritattn``
  logger, the blocks left eager and the tails left unfused at DEBUG; nothing is printed
  (tests/test_report.py: what the summary and the table say).
"""
import copy
import logging

import pytest
import torch
from torch import nn

import tritattn
from fixtures.model_runs import forward_backward, interpreter_friendly  # noqa: F401
from fixtures.peer_models import build
from fixtures.peers import timm
from fixtures.report_text import blocks_where
from tritattn import fusion
from tritattn.convert import ORIGINAL_CLASS_ATTR

MODELS = ["every_peer_block", "timm/seresnet18", "timm/cbam_resnet18", "torchvision/mobilenet_v3_small",
          "split_and_context_blocks"]


def _classes(model: nn.Module) -> dict[str, type]:
    return {path: type(m) for path, m in model.named_modules()}


def _report_rows(report) -> tuple:
    return tuple(map(tuple, (report.replaced, report.fused, report.skipped, report.not_fused)))


def _input() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32)


@pytest.mark.parametrize("name", MODELS)
def test_revert_gives_back_the_model_before_convert(name, interpreter_friendly):
    model = build(name).eval()
    classes, params, state = _classes(model), list(model.parameters()), copy.deepcopy(model.state_dict())
    x = _input()
    before = forward_backward(model, x)
    report = tritattn.convert(model)
    assert report.replaced and _classes(model) != classes
    forward_backward(model, x)  # the converted model has run: nothing it leaves behind may matter
    undone = tritattn.revert(model)
    assert len(undone.restored) == len(report.replaced) and len(undone.unfused) == len(report.fused), str(undone)
    assert _classes(model) == classes
    assert all(ORIGINAL_CLASS_ATTR not in m.__dict__ for m in model.modules())
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True)), "the same Parameter objects"
    assert model.state_dict().keys() == state.keys()
    after = forward_backward(model, x)
    assert torch.equal(after.output, before.output), "outputs bitwise equal to the model's before convert"
    assert after.grads.keys() == before.grads.keys()
    assert all(torch.equal(after.grads[k], before.grads[k]) for k in before.grads), "gradients bitwise equal"


def test_revert_of_an_unconverted_model_does_nothing():
    model = build("timm/seresnet18")
    classes = _classes(model)
    report = tritattn.revert(model)
    assert not (report.restored or report.unfused), str(report)
    assert _classes(model) == classes
    assert str(report).startswith("tritattn.revert: 0 blocks back to their own classes, 0 block tails unfused")


def test_convert_reverted_model_converts_again(interpreter_friendly):
    model = build("timm/seresnet18").eval()
    first = tritattn.convert(model)
    converted = _classes(model)
    tritattn.revert(model)
    again = tritattn.convert(model)
    assert _report_rows(again) == _report_rows(first) and _classes(model) == converted


@pytest.mark.parametrize("name", MODELS)
def test_convert_twice_is_convert_once(name):
    model = build(name)
    first = tritattn.convert(model)
    converted, tensors = _classes(model), [*model.parameters(), *model.buffers()]
    second = tritattn.convert(model)
    assert _classes(model) == converted
    assert all(a is b for a, b in zip([*model.parameters(), *model.buffers()], tensors, strict=True))
    assert _report_rows(second) == _report_rows(first), f"first:\n{first}\nsecond:\n{second}"
    assert second.summary() == first.summary()


@pytest.mark.parametrize("name", MODELS)
def test_dry_run_reports_what_convert_does_and_touches_nothing(name):
    model = build(name)
    classes = _classes(model)
    attributes = {path: dict(vars(m)) for path, m in model.named_modules()}
    dry = tritattn.convert(model, dry_run=True)
    assert dry.model is model and dry.dry_run
    assert _classes(model) == classes
    assert {path: dict(vars(m)) for path, m in model.named_modules()} == attributes
    done = tritattn.convert(model)
    assert _report_rows(dry) == _report_rows(done), f"dry run:\n{dry}\nconvert:\n{done}"
    assert dry.summary().startswith("tritattn (dry run, model untouched): ")
    assert dry.summary().removeprefix("tritattn (dry run, model untouched): ").replace(" would go", "").replace(
        "would be ", "") == done.summary().removeprefix("tritattn: ")


def test_dry_run_sees_fusion_refused_by_an_attention_block_left_eager():
    model = timm.create_model("seresnet18", layers=(1, 1, 1, 1))
    model.layer1[0].se.gate = nn.Tanh()  # no kernel: this SE stays eager, so its tail cannot be fused
    dry = tritattn.convert(model, dry_run=True)
    assert [s.path for s in dry.skipped] == ["layer1.0.se"] and [s.path for s in dry.not_fused] == ["layer1.0"], str(dry)
    assert len(dry.fused) == 3


def test_summary_line_counts_blocks_by_kind():
    report = tritattn.convert(build("every_peer_block"))
    assert report.summary() == (
        f"tritattn: 10 blocks {blocks_where()} (5 SE, 1 ESE, 1 ECA, 1 CECA, 1 CBAM, 1 light CBAM), 0 fused, 0 left eager"
    )
    assert len(report.replaced) == 14, "the CBAM parts are listed, not counted as blocks"
    assert str(report).splitlines()[0] == report.summary()


def test_convert_logs_its_summary_and_prints_nothing(caplog, capsys):
    model = timm.create_model("seresnet18", layers=(1, 1, 1, 1), drop_path_rate=0.1)  # drop path: 3 tails unfused
    with caplog.at_level(logging.DEBUG, logger="tritattn"):
        report = tritattn.convert(model)
    assert capsys.readouterr() == ("", "")
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "tritattn"]
    assert (logging.INFO, report.summary()) in records
    assert report.summary() == f"tritattn: 4 blocks {blocks_where()} (4 SE), 1 fused, 0 left eager (3 block tails not fused)"
    unfused = [m for level, m in records if level == logging.DEBUG and m.startswith("not fused: ")]
    assert len(unfused) == 3 and all("drop path" in m for m in unfused), records
    assert all(level <= logging.INFO for level, _ in records)


def test_a_fused_block_logs_once_when_it_runs_unfused(caplog, monkeypatch, interpreter_friendly):
    monkeypatch.setattr(fusion, "_logged_refusals", set())  # once per process: forget earlier tests' runs
    model = timm.create_model("seresnet18", layers=(1, 1, 1, 1), num_classes=10).eval()
    tritattn.convert(model)
    model.layer1[0].se.register_forward_hook(lambda *_: None)  # the fused tail would bypass it
    with caplog.at_level(logging.DEBUG, logger="tritattn"):
        model(torch.randn(1, 3, 32, 32))
        model(torch.randn(1, 3, 32, 32))
    unfused = [r.getMessage() for r in caplog.records if "runs timm's unfused forward" in r.getMessage()]
    assert len(unfused) == 1 and "hook" in unfused[0], unfused
