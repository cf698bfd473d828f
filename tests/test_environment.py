"""``python -m tritattn``, tritattn without triton, and what the package asks pip for.

- the environment report runs in a fresh process and names the versions (NumPy, timm and
  torchvision with whether it imports, too), the switches, the backend of each device's tensors,
  the tuning cache (path and size) and the supported peers; an import that fails is reported in
  one line and leaves nothing in ``sys.modules``; NumPy's line names a known interpreter failure;
  a GPU without a shipped table runs default configs unless tuned;
- with triton unimportable (``sys.modules["triton"] = None`` in a child), ``import tritattn``
  works, ``backend_for`` says ``"torch"`` and why, the blocks and ``convert`` run on the eager
  path, and the report still prints;
- the package depends on torch only (torch pins its own Triton); triton comes with the extras
  that run the interpreter on a CPU machine (tests, sweep).
"""
import sys
import textwrap
from importlib import metadata

import pytest
import torch
import triton

import tritattn
from conftest import expected_backend
from fixtures.subprocesses import REPO, child_env, output_tail, run_python
from tritattn import environment, tuning


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
        f"\nnumpy {metadata.version('numpy')}", f"\ntimm {metadata.version('timm')}\n",
    ):
        assert expected in report, f"{expected!r} missing from:\n{report}"
    imports = run_python(["-c", "import torchvision"], child_env()).returncode == 0
    torchvision = next(line for line in report.splitlines() if line.startswith("torchvision "))
    assert torchvision.startswith(f"torchvision {metadata.version('torchvision')} (")
    assert (torchvision.endswith(" (imports)") if imports else " (does not import: " in torchvision), torchvision
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
    assert report.summary().startswith("tritattn: 2 blocks converted (1 SE, 1 CBAM), 0 fused, 0 left eager; on this "
                                       "machine they run the eager torch path (triton could not be imported"), report.summary()
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


def test_a_failed_import_is_one_line_and_leaves_no_module_behind(tmp_path, monkeypatch):
    broken = tmp_path / "broken_peer"
    broken.mkdir()
    (broken / "part.py").write_text("VALUE = 1\n")
    (broken / "__init__.py").write_text("from broken_peer import part\nraise RuntimeError('operator broken::op does not exist\\nmore')\n")
    (tmp_path / "working_peer.py").write_text("VALUE = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert environment._import_error("broken_peer") == "RuntimeError: operator broken::op does not exist"
    assert not [name for name in sys.modules if name.startswith("broken_peer")]
    assert environment._import_error("working_peer") is None and sys.modules.pop("working_peer").VALUE == 2


def test_numpy_line_names_the_interpreter_trap(monkeypatch):
    monkeypatch.setattr(environment, "_installed", lambda name: {"numpy": "2.4.1"}[name])
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    assert environment._numpy_line() == (
        f"numpy 2.4.1 (Triton's interpreter: {tritattn.backend.interpreter_problem('3.6.0', '2.4.1')})")
    assert "triton>=3.7 or numpy<2.4" in environment._numpy_line()
    monkeypatch.setattr(triton, "__version__", "3.7.0")
    assert environment._numpy_line() == "numpy 2.4.1"


def test_a_gpu_without_a_shipped_table_runs_default_configs_unless_tuned(monkeypatch):
    table = tuning.ConfigTable()
    table.put("Tuned GPU", triton.__version__, "mean_max_fwd/a",
              tuning.config_from_json({"BLOCK_R": 1, "BLOCK_K": 1, "num_warps": 1, "num_stages": 1}))
    monkeypatch.setattr(tuning, "shipped_table", lambda: table)
    assert environment._shipped_table("Tuned GPU") == f"1 configs for triton {triton.__version__}"
    assert environment._shipped_table("Other GPU") == (
        "none for 'Other GPU': default configs unless tuned (tritattn.tune(model, example_input), or TRITATTN_AUTOTUNE=1)")


def test_package_requires_torch_and_leaves_triton_to_the_extras():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    meta = project["project"]
    assert meta["requires-python"] == ">=3.10"
    assert [d.split(">")[0].split("=")[0] for d in meta["dependencies"]] == ["torch"], meta["dependencies"]
    for extra in ("test", "perf"):
        assert any(d.startswith("triton") for d in meta["optional-dependencies"][extra]), extra
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "tritattn.__version__"}
