"""No kernel spills registers on an H100, checked without one (issue 23 §5).

The census's blocks (perf/model_shapes.py: the issue's §1 list, plus VoVNet's eSE 1024@14,
GCNet 256@56, EfficientNet-B0's first block with its producer's BatchNorm taken in, and the
per-op ops at 256@56) each run an inference forward and a training step at batch 16, in float32
NCHW and in bfloat16 channels_last under autocast (mixed precision's float32 weights), with their
kernel launches recorded and not run (fixtures/launches.py): which kernel, its arguments,
constexprs and config — the default config, which the tuner runs wherever nothing is tuned, or
a FixedConfig's one. Each distinct launch is compiled for sm_90 by Triton's own compiler in a
child process without a GPU, and ptxas -v reports its spill stores and loads
(fixtures/sm90_compile.py): every kernel of tritattn/launch.py must be compiled at some block
and spill 0 bytes there, and every block must run (a block that raises is reported, and the
others still count). The compiled results are shared by the pytest-xdist workers of a run, and
Triton's cache keeps the compiled kernels (and ptxas's reports) between runs.

On a GPU, the tuner drops candidate configs whose compiled kernel spills (``n_spills``):
:func:`tritattn.tuning.fastest_without_spills`, tested here with a stand-in kernel.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest
import torch
import triton
import triton.testing
from torch import nn

import tritattn
from tritattn import launch, tuning
from tritattn.backend import INTERPRETER
from conftest import DEVICE
from fixtures.launches import KernelLaunch, recorded_launches
from fixtures.peers import timm
from fixtures.sm90_compile import CAPABILITY, compile_jobs, job_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
import model_shapes  # noqa: E402
from model_shapes import Block  # noqa: E402

#: The batch the blocks are recorded at: Triton specialises int arguments (B, and the sizes and
#: strides that contain it) on divisibility by 16, as a training batch usually is.
BATCH = 16
#: issue 23 §1's census blocks, by their perf/model_shapes.py id
CENSUS_IDS = (
    "seresnet50/s1", "seresnet50/s4", "efficientnet_b0/se32@112", "efficientnet_b0/se1152@7",
    "mobilenetv3_large/se672@14", "regnety_016/s4b", "ecaresnet50d/s4", "cbam_resnet50/s1",
    "resnest50d/splat64@56", "skresnet50/sk64@56", "gcresnet50t/gc64@56",
)
EXTRA_BLOCKS = (
    Block("ese_vovnet39b", "ese1024@14", "EffectiveSEModule", 1024, 14, 14),
    Block("gcnet", "gc256@56", "GlobalContext", 256, 56, 56, 1, 32, {"fuse_add": True, "fuse_scale": False}),
)


def census_blocks() -> dict[str, Callable[[], tuple[nn.Module, tuple[int, ...]]]]:
    """label → a builder of (module on the kernels, input shape)."""
    by_id = {b.id: b for b in model_shapes.ALL_BLOCKS}
    blocks = [by_id[i] for i in CENSUS_IDS] + list(EXTRA_BLOCKS)

    def twin(block: Block) -> Callable[[], tuple[nn.Module, tuple[int, ...]]]:
        return lambda: (getattr(tritattn, block.module)(**block.constructor_kwargs()), (BATCH, block.C, block.H, block.W))

    builders = {b.id: twin(b) for b in blocks}
    builders["efficientnet_b0/blocks.0.0 (producer taken in)"] = _efficientnet_first_block
    return builders


def _efficientnet_first_block() -> tuple[nn.Module, tuple[int, ...]]:
    block = timm.create_model("efficientnet_b0").blocks[0][0]
    tritattn.convert(block)
    return block, (BATCH, 32, 112, 112)


def _per_op_ops(x: torch.Tensor) -> None:
    """The per-op path's ops: squeeze, excite_scale, spatial_pool, spatial_scale and their backwards."""
    x = x.requires_grad_()
    mean, maximum = tritattn.squeeze(x, "mean_max")
    y = tritattn.excite_scale(x, mean + maximum, "sigmoid", x, "relu")
    t = tritattn.spatial_pool(y).sum(1, keepdim=True)
    z = tritattn.spatial_scale(y, t, "sigmoid")
    z.backward(torch.randn_like(z))


def _inference(module: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        module.eval()(x)


def _training(module: nn.Module, x: torch.Tensor) -> None:
    y = module.train()(x.requires_grad_())
    y.backward(torch.randn_like(y))


#: what the blocks' inputs are recorded in: float32 NCHW, and mixed precision's bfloat16 in
#: channels_last (float32 weights, torch's own ops under autocast)
VARIANTS = {"fp32": (torch.float32, torch.contiguous_format, False),
            "bf16-channels_last": (torch.bfloat16, torch.channels_last, True)}


@dataclass
class Census:
    launches: list[tuple[str, KernelLaunch]]  # (where: "block variant pass", launch)
    failures: list[str]  # the runs that raised, and why


def record_census() -> Census:
    """Every launch of every census block's inference forward and training step, and of the
    per-op ops at 256@56, in each of :data:`VARIANTS`, no kernel run."""
    census = Census([], [])

    def record(where: str, run: Callable[[], None], amp: bool) -> None:
        with recorded_launches(execute=False) as launches:
            try:
                with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=amp):
                    run()
            except Exception as e:  # reported by test_every_census_block_runs; the other blocks still count
                census.failures.append(f"{where}: {type(e).__name__}: {e}")
        census.launches.extend((where, launch) for launch in launches)

    for label, build in census_blocks().items():
        torch.manual_seed(0)
        module, shape = build()
        for variant, (dtype, layout, amp) in VARIANTS.items():
            module = module.to(DEVICE, memory_format=layout)
            x = torch.randn(shape, device=DEVICE).to(dtype=dtype, memory_format=layout)
            for name, run in (("inference", _inference), ("training", _training)):
                record(f"{label} {variant} {name}", lambda: run(module, x), amp)
    for variant, (dtype, layout, amp) in VARIANTS.items():
        x = torch.randn(BATCH, 256, 56, 56, device=DEVICE).to(dtype=dtype, memory_format=layout)
        record(f"per-op ops 256@56 {variant} training", lambda: _per_op_ops(x), amp)
    return census


@dataclass
class Compiled:
    """One distinct launch compiled for sm_90: where it was met, and what ptxas said."""

    kernel: str
    config: dict[str, Any]  # its block sizes, num_warps, num_stages
    blocks: list[str]  # the census blocks that launch it so
    report: dict[str, Any]  # registers, stack_bytes, spill_store_bytes, spill_load_bytes; or error

    @property
    def spilled(self) -> int:
        return self.report.get("spill_store_bytes", 0) + self.report.get("spill_load_bytes", 0)

    def line(self) -> str:
        what = self.report.get("error") or (
            f"{self.report['spill_store_bytes']} B spill stores, {self.report['spill_load_bytes']} B spill loads, "
            f"{self.report['registers']} registers, {self.report['stack_bytes']} B stack")
        return f"{self.kernel} {self.config} at {', '.join(self.blocks)}: {what}"


def _config(job: dict[str, Any]) -> dict[str, Any]:
    blocks = {k: v["int"] for k, v in job["args"].items() if k.startswith("BLOCK") and isinstance(v, dict)}
    return {**blocks, **job["options"]}


def _ptxas_problem() -> str | None:
    """Why ptxas for sm_90 cannot run here (None: it can)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        path = get_ptxas(CAPABILITY).path
        subprocess.run([path, "--version"], check=True, capture_output=True)
    except Exception as e:  # no NVIDIA backend, no binary, or it cannot execute on this machine
        return f"{type(e).__name__}: {e}"
    return None


def _once_per_run(tmp_path_factory, name: str, compute: Callable[[], Any]) -> Any:
    """compute(), JSON, once per test run: the pytest-xdist workers of a run share the result."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return compute()
    from filelock import FileLock

    run_dir = tmp_path_factory.getbasetemp().parent  # this run's, shared by its workers
    with FileLock(str(run_dir / f"{name}.lock")):
        path = run_dir / f"{name}.json"
        if not path.exists():
            path.write_text(json.dumps(compute()))
        return json.loads(path.read_text())


def compile_census() -> dict[str, Any]:
    """The census recorded, each distinct launch compiled for sm_90: {"compiled": [Compiled as a
    dict], "failures": [...]}."""
    recorded = record_census()
    distinct: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for where, launch_ in recorded.launches:
        job = job_of(launch_)
        blocks = distinct.setdefault(json.dumps(job, sort_keys=True), (job, []))[1]
        if where not in blocks:
            blocks.append(where)
    reports = compile_jobs([job for job, _ in distinct.values()])
    compiled = [Compiled(job["kernel"], _config(job), blocks, report)
                for (job, blocks), report in zip(distinct.values(), reports)]
    return {"compiled": [asdict(c) for c in compiled], "failures": recorded.failures}


@dataclass
class CompiledCensus:
    compiled: list[Compiled]
    failures: list[str]


@pytest.fixture(scope="session")
def census(tmp_path_factory) -> CompiledCensus:
    """Every distinct launch of the census blocks, compiled for sm_90 (see the module docstring)."""
    if not INTERPRETER:
        pytest.skip("the launches are recorded in the Triton interpreter (TRITON_INTERPRET=1); "
                    "on a GPU the tuner drops the configs that spill")
    problem = _ptxas_problem()
    if problem is not None:
        pytest.skip(f"ptxas for sm_{CAPABILITY} cannot run on this machine: {problem}")
    result = _once_per_run(tmp_path_factory, "sm90-census", compile_census)
    return CompiledCensus([Compiled(**c) for c in result["compiled"]], result["failures"])


def test_every_census_block_runs(census):
    assert not census.failures, "census blocks that raised (their launches are not all compiled):\n" + "\n".join(
        census.failures)


#: every kernel launch.py launches (each Tuner's and FixedConfig's)
KERNELS = sorted({tuner.kernel.__name__ for tuner in vars(launch).values() if isinstance(tuner, tuning.Tuner)})


@pytest.mark.parametrize("kernel", KERNELS)
def test_no_kernel_spills_registers_on_sm90(kernel, census):
    mine = [c for c in census.compiled if c.kernel == kernel]
    assert mine, f"no census block launches {kernel}: add a block that does, so that it is compiled for sm_90"
    failed = [c.line() for c in mine if "error" in c.report]
    assert not failed, "failed to compile for sm_90:\n" + "\n".join(failed)
    spilling = [c.line() for c in mine if c.spilled]
    assert not spilling, f"{kernel} spills registers on sm_90:\n" + "\n".join(spilling)


# --- the tuner on a GPU: candidate configs that spill are dropped ------------------------------

@pytest.mark.parametrize("timings, spills, best", [
    ([1.0, 2.0, 3.0], [0, 0, 0], 0),  # nothing spills: the fastest
    ([1.0, 2.0, 3.0], [8, 0, 0], 1),  # the fastest spills: the fastest of the others
    ([1.0, math.inf, 3.0], [8, 0, 0], 2),  # one that did not build is no candidate
    ([1.0, 2.0, 3.0], [8, 16, 8], 0),  # all spill: the fastest of those spilling least
    ([2.0, 1.0, 3.0], [8, 16, 8], 0),
    ([math.inf, math.inf], [0, 0], None),  # none built
])
def test_fastest_without_spills(timings, spills, best):
    assert tuning.fastest_without_spills(timings, spills) == best


class _StandInKernel:
    """``kernel[grid](...)`` returns a compiled kernel whose ``n_spills`` depends on BLOCK_R."""

    def __init__(self, spills_of: dict[int, int]) -> None:
        self.spills_of, self.launched = spills_of, []

    def __getitem__(self, grid):
        def launch(*args, BLOCK_R, num_warps, num_stages):
            self.launched.append(BLOCK_R)
            return SimpleNamespace(n_spills=self.spills_of[BLOCK_R])
        return launch


def test_the_tuner_drops_configs_that_spill(monkeypatch, caplog):
    """The benchmark keeps the fastest config whose compiled kernel does not spill; where all
    spill, the least spilling one, with a warning."""
    times = {1: 1.0, 2: 2.0, 4: 3.0}  # ms by BLOCK_R: BLOCK_R=1 fastest

    def do_bench(fn, warmup, rep, return_mode):
        fn()
        return times[kernel.launched[-1]]

    monkeypatch.setattr(triton.testing, "do_bench", do_bench)
    candidates = [triton.Config({"BLOCK_R": r}, num_warps=4, num_stages=1) for r in times]
    kernel = _StandInKernel({1: 64, 2: 0, 4: 0})
    tuner = tuning.Tuner("stand_in", kernel, candidates, num_stages=1)
    assert tuner._benchmark(candidates, lambda meta: (1,), (), {}).kwargs == {"BLOCK_R": 2}
    kernel = _StandInKernel({1: 64, 2: 32, 4: 32})
    tuner = tuning.Tuner("stand_in", kernel, candidates, num_stages=1)
    with caplog.at_level("WARNING", logger="tritattn"):
        assert tuner._benchmark(candidates, lambda meta: (1,), (), {}).kwargs == {"BLOCK_R": 2}
    assert "spills" in caplog.text
