"""``torch.export.export`` of converted models: the program exports with a dynamic batch
dimension, keeps tritattn's ops as ops, and runs, giving the eager converted model's output."""
import pytest
import torch

import tritattn
from conftest import DEVICE, TOLERANCES
from fixtures.model_runs import interpreter_friendly  # noqa: F401
from fixtures.peer_models import build


def _model(name: str) -> torch.nn.Module:
    model = build(name).eval().to(DEVICE)
    report = tritattn.convert(model)
    assert report.replaced and not report.skipped, str(report)
    return model


@pytest.mark.parametrize("name", ["every_peer_block", "timm/seresnet18"])
def test_exported_program_runs(name, interpreter_friendly):
    model = _model(name)
    example = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    ops = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert any(op.startswith("tritattn.") for op in ops), sorted(ops)

    for size in (2, 3):
        x = torch.randn(size, 3, 32, 32, generator=torch.Generator().manual_seed(size)).to(DEVICE)
        with torch.no_grad():
            expected = model(x)
            out = program.module()(x)
        atol, rtol = TOLERANCES[torch.float32]
        torch.testing.assert_close(out, expected, atol=atol, rtol=rtol)
