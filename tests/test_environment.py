"""``python -m tritattn``, tritattn without triton, and what the package asks pip for.

- the environment report runs in a fresh process and names the versions, the switches, the
  backend of each device's tensors, the tuning cache (path and size) and the supported peers;
- with triton unimportable (``sys.modules["triton"] = None`` in a child), ``import tritattn``
  works, ``backend_for`` says ``"torch"`` and why, the blocks and ``convert`` run on the eager
  path, and the report still prints;
- the package depends on torch only (torch pins its own Triton); triton comes with the extras
  that run the interpreter on a CPU machine (tests, sweep).
"""
import textwrap

import pytest
import torch

import tritattn
from conftest import expected_backend
from fixtures.subprocesses import REPO, child_env, output_tail, run_python
from tritattn import tuning


def test_python_m_tritattn_reports_the_environment(tmp_path):
    cache = tuning.ConfigTable()
    for key in ("mean_max_fwd/a", "gated_scale_fwd/b"):
        cache.put("Some GPU", "3.0.0", key, tuning.config_from_json({"BLOCK_R": 1, "BLOCK_K": 1, "num_warps": 1, "num_stages": 1}))
    cache.save(tmp_path / "tuning.json")
    result = run_python(["-m", "tritattn"], child_env(TRITATTN_CACHE_DIR=str(tmp_path)))
    assert result.returncode == 0, output_tail(result)
    report = result.stdout
    for expected in (
        f"tritattn {tritattn.__version__}", f"torch {torch.__version__}", "python ", "os ",
        f"TRITATTN_CACHE_DIR={str(tmp_path)!r}", f"tuning cache: {tmp_path / 'tuning.json'} (2 configs; Some GPU: 2)",
        "timm.layers.squeeze_excite.SEModule -> tritattn.SEModule",
        "torchvision.ops.misc.SqueezeExcitation -> tritattn.SqueezeExcitation",
    ):
        assert expected in report, f"{expected!r} missing from:\n{report}"
    if torch.cuda.is_available():
        assert f"cuda:0 {torch.cuda.get_device_name(0)}" in report and "shipped tuned table: " in report, report
    else:
        assert f"cpu tensors: {expected_backend()}: " in report, report
    assert "Traceback" not in result.stderr and "Error" not in result.stderr, result.stderr


WITHOUT_TRITON = textwrap.dedent(
    """
    import sys
    sys.modules["triton"] = None  # import triton raises ImportError, as where it is not installed
    import runpy, torch, tritattn
    from torch import nn
    x = torch.randn(2, 8, 5, 3, requires_grad=True)
    assert tritattn.backend_for(x) == "torch", tritattn.backend_for(x)
    assert "triton could not be imported" in tritattn.backend_reason(x), tritattn.backend_reason(x)
    model = nn.Sequential(tritattn.reference.SEModule(8), tritattn.reference.CbamModule(8))
    expected = model(x)
    report = tritattn.convert(model)
    assert report.summary() == "tritattn: 2 blocks on the kernels (1 SE, 1 CBAM), 0 fused, 0 left eager", report.summary()
    torch.testing.assert_close(model(x), expected)
    model(x).sum().backward()
    assert "triton" not in sys.modules or sys.modules["triton"] is None
    runpy.run_module("tritattn", run_name="__main__")
    """
)


def test_tritattn_imports_and_runs_without_triton():
    result = run_python(["-c", WITHOUT_TRITON], child_env(TRITON_INTERPRET=None))
    assert result.returncode == 0, output_tail(result)
    assert "triton: not importable" in result.stdout and "cpu tensors: torch: triton could not be imported" in result.stdout


def test_package_requires_torch_and_leaves_triton_to_the_extras():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    meta = project["project"]
    assert meta["requires-python"] == ">=3.10"
    assert [d.split(">")[0].split("=")[0] for d in meta["dependencies"]] == ["torch"], meta["dependencies"]
    for extra in ("test", "perf"):
        assert any(d.startswith("triton") for d in meta["optional-dependencies"][extra]), extra
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "tritattn.__version__"}
