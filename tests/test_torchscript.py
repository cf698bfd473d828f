"""TorchScript on converted models (tritattn/tracing.py): ``torch.jit.script`` compiles each
tritattn module's reference forward (the same parameters, shared; the converted model is left as
it is), ``torch.jit.trace`` records the custom ops as they run, without TracerWarnings; both save
and load in a fresh process (a trace where tritattn is imported first)."""
import json
import logging
import textwrap
import warnings

import pytest
import torch

import tritattn
from tritattn import tracing
from conftest import assert_close
from fixtures.model_runs import interpreter_friendly  # noqa: F401
from fixtures.subprocesses import output_tail, run_python
from fixtures.traced_models import FAMILIES, model_input, peer_and_converted


def _state(model: torch.nn.Module) -> list:
    return [(name, type(m), [id(p) for p in m.parameters(recurse=False)]) for name, m in model.named_modules()]


@pytest.mark.parametrize("family", FAMILIES)
def test_scripted_model_runs_the_reference_forwards_on_the_same_parameters(family, caplog, monkeypatch,
                                                                           interpreter_friendly):
    peer, model = peer_and_converted(family)
    before = _state(model)
    monkeypatch.setattr(tracing, "_logged_scripting", set())
    with caplog.at_level(logging.INFO, logger="tritattn"):
        scripted = torch.jit.script(model)
    assert _state(model) == before  # nothing in the converted model replaced or re-classed
    assert "runs its eager reference forward in TorchScript" in caplog.text
    params = dict(model.named_parameters())
    for name, p in scripted.named_parameters():
        assert p.data_ptr() == params[name].data_ptr(), name  # shared, not copied
    x = model_input()
    with torch.no_grad():
        expected = model(x)
        assert_close(scripted(x), expected, torch.float64, f"{family} scripted")
        assert_close(torch.jit.script(torch.fx.symbolic_trace(model))(x), expected, torch.float64, "fx, then script")
        assert_close(expected, peer(x), torch.float64, f"{family} converted")


@pytest.mark.parametrize("family", FAMILIES)
def test_traced_model_records_the_custom_ops_without_warnings(family, interpreter_friendly):
    _, model = peer_and_converted(family)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():  # an inference trace: inference paths
        warnings.simplefilter("always")
        traced = torch.jit.trace(model, model_input(), check_trace=False)
    assert not [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert "tritattn::" in str(traced.inlined_graph)
    x = model_input(batch=3)  # another batch size: the trace records shapes, not constants
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))


def test_checks_still_run_while_tracing():
    x, s = torch.randn(2, 5, 3, 4), torch.randn(2, 6)
    with pytest.raises(ValueError, match="s must have shape"):
        torch.jit.trace(lambda x, s: tritattn.excite_scale(x, s), (x, s))


LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    saved = torch.load(sys.argv[1])
    scripted = torch.jit.load(sys.argv[2])  # TorchScript code only: tritattn is not needed
    with torch.no_grad():
        scripted_out = scripted(saved["input"])
    scripted_without_tritattn = "tritattn" not in sys.modules
    import tritattn  # registers the custom ops a trace calls
    traced = torch.jit.load(sys.argv[3])
    with torch.no_grad():
        traced_out = traced(saved["input"])
    torch.save({"scripted": scripted_out, "traced": traced_out}, sys.argv[4])
    print(json.dumps(scripted_without_tritattn))
    """
)


def test_scripted_and_traced_models_load_in_a_fresh_process(tmp_path, interpreter_friendly):
    _, model = peer_and_converted("producers_taken_in")
    x = model_input()
    with torch.no_grad():
        scripted, traced = torch.jit.script(model), torch.jit.trace(model, x, check_trace=False)
        expected = {"scripted": scripted(x), "traced": model(x)}
    torch.jit.save(scripted, tmp_path / "scripted.pt")
    torch.jit.save(traced, tmp_path / "traced.pt")
    torch.save({"input": x}, tmp_path / "input.pt")
    (tmp_path / "load.py").write_text(LOAD_SCRIPT)
    paths = [str(tmp_path / name) for name in ("load.py", "input.pt", "scripted.pt", "traced.pt", "out.pt")]
    result = run_python(paths)
    assert result.returncode == 0, output_tail(result)
    assert json.loads(result.stdout.strip().splitlines()[-1]) is True
    got = torch.load(tmp_path / "out.pt")
    assert torch.equal(got["scripted"], expected["scripted"])  # the same torch ops on the same machine
    assert_close(got["traced"], expected["traced"], torch.float64, "traced, in a fresh process")  # its own tiles
