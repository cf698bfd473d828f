"""Which implementation runs, and the eager fallback for CPU tensors without the interpreter.

The backend is fixed when triton is imported, so the fallback is checked in a fresh process
without ``TRITON_INTERPRET``: there CPU tensors must take the ``"torch"`` path, say so, and give
the reference results. CI runs ``python -m pytest`` once, on the interpreter (or the GPU); the
eager backend's own run of the op-level suite (``TRITATTN_TEST_BACKEND=torch``) is started from
here, in a child pytest.
"""
import re
import textwrap

import pytest
import torch

import tritattn
from conftest import DEVICE, expected_backend
from tritattn.backend import interpreter_problem
from fixtures.subprocesses import child_env, output_tail, run_python

FALLBACK_SCRIPT = textwrap.dedent(
    """
    import torch, tritattn
    x = torch.randn(2, 6, 5, 3, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    assert tritattn.backend_for(x) == "torch", tritattn.backend_for(x)
    mean, mx = tritattn.squeeze(x, "mean_max")
    y = tritattn.excite_scale(x, mean + mx + s, "hard_sigmoid")
    y = tritattn.spatial_scale(y, tritattn.spatial_pool(y).sum(1, keepdim=True))
    xr, sr = x.detach().clone().requires_grad_(), s.detach().clone().requires_grad_()
    hard_sigmoid = lambda v: (v + 3).clamp(0, 6) / 6  # F.hardsigmoid's float64 backward uses a float32 1/6
    yr = xr * hard_sigmoid(xr.mean((2, 3)) + xr.amax((2, 3)) + sr)[:, :, None, None]
    yr = yr * torch.sigmoid(yr.mean(1, keepdim=True) + yr.amax(1, keepdim=True))
    assert torch.allclose(y, yr, rtol=1e-12, atol=1e-12), (y - yr).abs().max()
    y.sum().backward(); yr.sum().backward()
    assert torch.allclose(x.grad, xr.grad, rtol=1e-10, atol=1e-12), (x.grad - xr.grad).abs().max()
    assert torch.allclose(s.grad, sr.grad, rtol=1e-10, atol=1e-12)
    print("fallback ok")
    """
)


def test_backend_for_reports_the_path():
    assert tritattn.backend_for(torch.empty(1, device=DEVICE)) == expected_backend()


@pytest.mark.parametrize("triton_version, numpy_version, fails", [
    ("3.6.0", "2.4.6", True), ("3.1.0", "2.4.0", True), ("3.6.0", "2.3.5", False), ("3.7.0", "2.4.6", False),
    ("3.9.0", "3.0.0", False), ("3.10.0", "2.4.0", False), ("3.6.0+git1234", "2.10.1", True),
])
def test_interpreter_problem_names_the_broken_version_pairs(triton_version, numpy_version, fails):
    """triton < 3.7's interpreter and NumPy >= 2.4 fail on every kernel (triton-lang/triton#9171)."""
    problem = interpreter_problem(triton_version, numpy_version)
    assert (problem is not None) == fails
    if fails:
        assert triton_version in problem and "triton>=3.7 or numpy<2.4" in problem


def test_cpu_without_interpreter_falls_back_to_torch():
    result = run_python(["-c", FALLBACK_SCRIPT], child_env(TRITON_INTERPRET=None))
    assert result.returncode == 0, output_tail(result)
    assert "fallback ok" in result.stdout


#: The op-level tests, which take their backend from ``TRITATTN_TEST_BACKEND`` (conftest.py), and
#: the check that the child really runs on that backend (a leaked ``TRITON_INTERPRET`` would run
#: the same tests, slowly, on the interpreter).
TORCH_BACKEND_SUITE = [
    "tests/test_ops.py", "tests/test_numerics.py", "tests/test_properties.py", "tests/test_errors.py", "tests/test_gradcheck.py",
    "tests/test_backend.py::test_backend_for_reports_the_path",
    # the eager formulas of the split-attention and context-pooling ops
    "tests/test_radix_block.py::test_radix_ops_match_float64", "tests/test_radix_block.py::test_radix_attention_op_with_a_prologue",
    "tests/test_context_block.py::test_context_pool_matches_float64_reference",
    "tests/test_context_block.py::test_context_mlp_op_on_every_backend",
]


def test_op_suite_passes_on_the_torch_backend():
    """The op, numerics, property, error and gradcheck tests on the eager "torch" backend, in a
    child pytest (some seconds: nothing is interpreted). The child sees no GPU and no
    ``TRITON_INTERPRET`` (conftest.py set it in this process's environment), so CPU tensors take
    the torch path; ``PYTEST_ADDOPTS`` is dropped so that this process's selection (-k, -x, ...)
    does not shrink the child's run."""
    env = child_env(TRITATTN_TEST_BACKEND="torch", TRITON_INTERPRET=None, CUDA_VISIBLE_DEVICES="", PYTEST_ADDOPTS=None)
    result = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", *TORCH_BACKEND_SUITE], env, timeout=600)
    exit_code, summary = result.returncode, (result.stdout.strip().splitlines() or [""])[-1]
    assert exit_code == 0, output_tail(result)
    passed = re.search(r"\b(\d+) passed\b", summary)
    assert passed and int(passed.group(1)) > 500, f"summary {summary!r}\n{output_tail(result)}"
    assert not re.search(r"\b\d+ (failed|errors?)\b", summary), f"summary {summary!r}\n{output_tail(result)}"
