"""The kill switch: ``TRITATTN_DISABLE=1`` (read at import) and ``with tritattn.disabled():``.

While the kernels are disabled every op takes the eager torch path — no Triton kernel is launched
(the launchers are made to fail, so a launch would show) — in every thread, inside compiled
models too (the ops are opaque to the compiler and choose their backend when called);
``backend_for`` / ``backend_reason`` say so; ``convert`` still converts and its report says the
kernels are disabled. The numbers are the peer's (float64, where no kink is within rounding's
reach of a random draw).
"""
import textwrap
import threading

import pytest
import torch

import tritattn
from conftest import TOLERANCES, expected_backend
from fixtures.model_runs import assert_runs_close, forward_backward, interpreter_friendly  # noqa: F401
from fixtures.peer_models import build
from fixtures.subprocesses import child_env, output_tail, run_python
from tritattn import launch

LAUNCHERS = ("mean_max_fwd", "mean_max_bwd", "gated_scale_fwd", "gated_scale_bwd")


@pytest.fixture
def launches_fail(monkeypatch):
    """Every Triton launcher raises: a test passes only if no kernel is launched."""
    def fail(*args, **kwargs):
        raise AssertionError("a Triton kernel was launched")
    for name in LAUNCHERS:
        monkeypatch.setattr(launch, name, fail)


def _run_model(model: torch.nn.Module):
    return forward_backward(model, torch.randn(2, 3, 16, 16, dtype=torch.float64))


def test_disabled_scope_runs_the_eager_path_and_no_kernel(launches_fail, interpreter_friendly):
    peer = build("every_peer_block").double()
    model = tritattn.convert(build("every_peer_block").double()).model
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    if expected_backend() != "torch":
        with pytest.raises(AssertionError, match="kernel was launched"):
            model(x)  # the launchers are really what runs outside the scope
    with tritattn.disabled():
        assert tritattn.backend_for(x) == "torch"
        assert "tritattn.disabled()" in tritattn.backend_reason(x)
        assert_runs_close(forward_backward(model, x), forward_backward(peer, x), TOLERANCES[torch.float64], "disabled")
    assert tritattn.backend_for(x) == expected_backend()


def test_scopes_nest_span_threads_and_end_on_an_exception():
    x = torch.empty(1)
    seen_in_thread = []
    with tritattn.disabled():
        with tritattn.disabled():
            pass
        assert tritattn.backend_for(x) == "torch", "still disabled after an inner scope ends"
        thread = threading.Thread(target=lambda: seen_in_thread.append(tritattn.backend_for(x)))
        thread.start()
        thread.join()
    assert seen_in_thread == ["torch"], "autograd runs CUDA backward passes on its own threads"
    with pytest.raises(RuntimeError, match="boom"):
        with tritattn.disabled():
            raise RuntimeError("boom")
    assert tritattn.backend_for(x) == expected_backend()


def test_a_compiled_model_obeys_the_switch_when_called(launches_fail, interpreter_friendly):
    model = tritattn.convert(build("every_peer_block").double().eval()).model
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with tritattn.disabled():
        torch.testing.assert_close(compiled(x), build("every_peer_block").double().eval()(x), rtol=1e-12, atol=1e-12)
    torch._dynamo.reset()


def test_convert_converts_and_says_the_kernels_are_disabled():
    model = build("timm/seresnet18")
    with tritattn.disabled():
        report = tritattn.convert(model)
    assert report.kernels_disabled and "kernels disabled" in report.summary()
    assert type(model.layer1[0].se) is tritattn.SEModule, "converted all the same: the switch can be flipped back"
    assert not tritattn.convert(model).kernels_disabled


ENVIRONMENT_SCRIPT = textwrap.dedent(
    """
    import warnings
    warnings.simplefilter("error")  # a warning at import fails the import: caught below
    import sys, torch
    try:
        import tritattn
    except UserWarning as w:
        print("warned:", w); warnings.simplefilter("ignore"); import tritattn
    from tritattn import launch
    def fail(*a, **k):
        raise AssertionError("a Triton kernel was launched")
    x = torch.randn(2, 8, 5, 3, dtype=torch.float64, requires_grad=True)
    print("backend:", tritattn.backend_for(x), "|", tritattn.backend_reason(x))
    if tritattn.backend_for(x) == "torch":
        for name in ("mean_max_fwd", "mean_max_bwd", "gated_scale_fwd", "gated_scale_bwd"):
            setattr(launch, name, fail)
    y = tritattn.SEModule(8).double()(x)
    y.sum().backward()
    print("ran:", tuple(y.shape), "report:", tritattn.convert(torch.nn.Sequential(tritattn.reference.SEModule(8))).summary())
    """
)


@pytest.mark.parametrize(
    "value, backend, says",
    [("1", "torch", "kernels disabled by TRITATTN_DISABLE"), ("0", "triton-interpreter", "interpreter"),
     ("maybe", "torch", "kernels disabled by TRITATTN_DISABLE")],
)
def test_environment_variable_is_read_at_import(value, backend, says):
    if expected_backend() != "triton-interpreter":
        pytest.skip("checked with Triton's interpreter in the child (the CPU suite's backend)")
    result = run_python(["-c", ENVIRONMENT_SCRIPT], child_env(TRITATTN_DISABLE=value, TRITON_INTERPRET="1"))
    assert result.returncode == 0, output_tail(result)
    assert f"backend: {backend} | {backend}: " in result.stdout and says in result.stdout, output_tail(result)
    assert ("warned: TRITATTN_DISABLE='maybe' is neither 1 nor 0" in result.stdout) == (value == "maybe"), output_tail(result)
    assert ("kernels disabled" in result.stdout.split("report:")[1]) == (backend == "torch"), output_tail(result)
