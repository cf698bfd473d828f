"""Which implementation runs, and the eager fallback for CPU tensors without the interpreter.

The backend is fixed when triton is imported, so the fallback is checked in a fresh process
without ``TRITON_INTERPRET``: there CPU tensors must take the ``"torch"`` path, say so, and give
the reference results.
"""
import os
import subprocess
import sys
import textwrap

import torch

import tritattn
from conftest import DEVICE, expected_backend

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


def test_cpu_without_interpreter_falls_back_to_torch():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "fallback ok" in result.stdout
