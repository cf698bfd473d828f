"""The whole GPU validation in one command, for a lent GPU with a hard wall-clock limit.

    PYTHONPATH=. python perf/gpu_check.py                      # everything, in ≤ 8 minutes on an H100
    PYTHONPATH=. python perf/gpu_check.py --stages sweep       # rerun one stage into the same folder
    PYTHONPATH=. python perf/gpu_check.py --help

Runs from the source tree, installs nothing, needs no network. Stages, in priority order, each a
child process with its share of the time budget (what a stage leaves unused goes to the next);
a stage that fails or runs out of time is reported and the next one runs:

1. ``env``       perf/gpu_env.py: GPU, SMs, L2, memory, driver, versions, copy bandwidth;
2. ``tests``     the test suite on this device (pytest-xdist workers where installed, a per-test
                 timeout where pytest-timeout is; autotuning off and a private tuning cache, so
                 the suite's odd shapes neither cost tuning time nor reach the shipped table);
3. ``sweep``     perf/sweep.py's preset for this machine on each model's representative block
                 (``--sweep-args ""``: every block) under the stage's budget, tuning as it goes;
                 on a GPU the tuned table is written (tritattn/tuned/<gpu>.json, copied into the
                 results as tuned/<gpu>.json);
4. ``kernels``   perf/gpu_kernels.py: the kernels that run in each model's representative block,
                 tritattn / eager / torch.compile, forward and training step (torch.profiler);
5. ``models``    perf/models.py: whole models' samples/s and memory, eager / tritattn / compile /
                 compile + tritattn, inference and training step, in priority order under the
                 stage's budget (``--models-args`` for its own options);
6. ``l2``        perf/l2_chunk.py: the block pipeline's forward with the second read of x from L2
                 (``TRITATTN_L2_CHUNK``) off and on, timed, and its DRAM bytes where ncu is allowed;
7. ``sanitizer`` ``compute-sanitizer --tool memcheck`` over the op tests on small shapes
                 (GPU only, with the time left).

Output: ``<out>/<gpu-slug>-<date>/`` laid out as committed under perf/results/ — summary.md
(perf/gpu_summary.py: stages, test counts and failures, the README's "Measured on" table, kernels
per block, tuning), env.json, env.txt, tests.txt, the sweep's timings.csv / blocks.csv /
sweep.json / PNGs and its log sweep.txt, kernels.csv and kernels.txt, models.csv / models.json /
models_*.png and models.txt, l2_chunk.csv and l2_chunk.txt, sanitizer.txt,
stages.json — and ``<out>/<gpu-slug>-<date>.tar.gz`` of it. summary.md is printed at the end.

On a lent machine whose $OUT returns a few files: ``... --out /tmp/gc && cp /tmp/gc/*.tar.gz $OUT``.
Without a GPU every stage that can run does, on the CPU (the kernels through Triton's
interpreter, CPU timings labelled as such); the test suite runs a CPU dry run of this script.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import shlex
import shutil
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import gpu_summary
import model_shapes
from stage_runner import StageResult, run_stage

PERF = Path(__file__).resolve().parent
ROOT = PERF.parent
DEFAULT_OUT = PERF / "out" / "gpu_check"
TARBALL_LIMIT_BYTES = 16 << 20
SANITIZER_TESTS = ["tests/test_ops.py", "-k", "2x6x7x7 or 3x3x3x5"]  # the op tests on two small shapes


@dataclass(frozen=True)
class Stage:
    """A stage: its share of the budget, the least time worth starting it with, its log, and
    how to build its command from the options, the results folder and the seconds it is given
    (or why it cannot run here: a string)."""

    name: str
    share: float
    min_s: float
    log: str
    command: Callable[[argparse.Namespace, Path, float], list[str] | str]


def _python(script: str, *args: str) -> list[str]:
    return [sys.executable, str(PERF / script), *args]


def env_command(args: argparse.Namespace, folder: Path, allotted_s: float) -> list[str]:
    return _python("gpu_env.py", "--out", str(folder))


def tests_command(args: argparse.Namespace, folder: Path, allotted_s: float) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "--tb=short", "-p", "no:cacheprovider"]
    if args.workers and importlib.util.find_spec("xdist"):
        cmd += ["-n", str(args.workers)]
    if importlib.util.find_spec("pytest_timeout"):
        cmd += [f"--timeout={args.test_timeout_s}"]
    return cmd + shlex.split(args.pytest_args)


def sweep_command(args: argparse.Namespace, folder: Path, allotted_s: float) -> list[str]:
    # the sweep stops starting cases at its budget; the case in flight (a compile, say) may run on
    budget_min = max(allotted_s - 60, 0.5 * allotted_s) / 60
    cmd = _python("sweep.py", "--out", str(folder), "--budget-min", f"{budget_min:.2f}", "--models", args.models)
    return cmd + (["--write-tuned-table"] if torch.cuda.is_available() else []) + shlex.split(args.sweep_args)


def kernels_command(args: argparse.Namespace, folder: Path, allotted_s: float) -> list[str]:
    return _python("gpu_kernels.py", "--out", str(folder), "--models", args.models) + shlex.split(args.kernels_args)


def models_command(args: argparse.Namespace, folder: Path, allotted_s: float) -> list[str]:
    # perf/models.py stops starting measurements at its budget; the one in flight (a compile) may run on
    budget_min = max(allotted_s - 60, 0.5 * allotted_s) / 60
    return _python("models.py", "--out", str(folder), "--budget-min", f"{budget_min:.2f}") + shlex.split(args.models_args)


def l2_command(args: argparse.Namespace, folder: Path, allotted_s: float) -> list[str]:
    return _python("l2_chunk.py", "--out", str(folder)) + shlex.split(args.l2_args)


def sanitizer_command(args: argparse.Namespace, folder: Path, allotted_s: float) -> list[str] | str:
    if not torch.cuda.is_available():
        return "no GPU"
    tool = shutil.which("compute-sanitizer")
    if not tool:
        return "compute-sanitizer is not on the PATH"
    return [tool, "--tool", "memcheck", "--error-exitcode", "1", sys.executable, "-m", "pytest", "-q", "-x",
            "--tb=short", "-p", "no:cacheprovider", *SANITIZER_TESTS]


STAGES = [
    Stage("env", 0.05, 10, "env_stage.txt", env_command),
    Stage("tests", 0.31, 30, "tests.txt", tests_command),
    Stage("sweep", 0.28, 45, "sweep.txt", sweep_command),
    Stage("kernels", 0.10, 20, "kernels.txt", kernels_command),
    Stage("models", 0.12, 30, "models.txt", models_command),
    Stage("l2", 0.06, 20, "l2_chunk.txt", l2_command),
    Stage("sanitizer", 0.08, 30, "sanitizer.txt", sanitizer_command),
]
STAGE_NAMES = [s.name for s in STAGES]


def device_slug() -> str:
    """``nvidia-h100-80gb-hbm3`` for a GPU, ``cpu`` without one."""
    if not torch.cuda.is_available():
        return "cpu"
    from tritattn.tuning import gpu_slug
    return gpu_slug(torch.cuda.get_device_name(0))


def child_env(stage: str, private_cache: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(PERF)] + [p for p in [env.get("PYTHONPATH")] if p])
    if not torch.cuda.is_available():
        env.setdefault("TRITON_INTERPRET", "1")
    if stage in ("tests", "sanitizer"):
        env.update(TRITATTN_AUTOTUNE="0", TRITATTN_CACHE_DIR=str(private_cache))
    return env


def run_stages(args: argparse.Namespace, folder: Path) -> list[StageResult]:
    """The chosen stages in order, each given its share of the time left (see the module docstring)."""
    chosen = [s for s in STAGES if s.name in args.stages]
    start = time.monotonic()
    deadline = start + 60 * args.budget_min
    results = []
    with tempfile.TemporaryDirectory(prefix="tritattn-gpu-check-") as private_cache:
        for i, stage in enumerate(chosen):
            left = deadline - time.monotonic()
            allotted = left * stage.share / sum(s.share for s in chosen[i:])
            command = stage.command(args, folder, allotted)
            if isinstance(command, str):
                result = StageResult(stage.name, "skipped", detail=command)
            elif allotted < stage.min_s:
                result = StageResult(stage.name, "skipped", allotted_s=allotted,
                                     detail=f"{allotted:.0f} s left of the budget, under the {stage.min_s:.0f} s it needs")
            else:
                print(f"== {stage.name}: up to {allotted:.0f} s ({time.monotonic() - start:.0f} s in)", flush=True)
                result = run_stage(stage.name, command, folder / stage.log, allotted, child_env(stage.name, Path(private_cache)),
                                   cwd=ROOT, echo=not args.quiet)
            if stage.name == "sweep":
                _copy_tuned_table(folder)
            print(f"== {stage.name}: {result.status} in {result.seconds:.0f} s{' (' + result.detail + ')' if result.detail else ''}", flush=True)
            results.append(result)
    return results


def _copy_tuned_table(folder: Path) -> None:
    if torch.cuda.is_available():
        from tritattn.tuning import SHIPPED_DIR
        table = SHIPPED_DIR / f"{device_slug()}.json"
        if table.exists():
            (folder / "tuned").mkdir(exist_ok=True)
            shutil.copy(table, folder / "tuned" / table.name)


def _merge_stage_results(folder: Path, results: list[StageResult]) -> list[dict]:
    """This run's stage results over those of earlier runs into the same folder (``--stages``)."""
    path = folder / "stages.json"
    earlier = {r["name"]: r for r in json.loads(path.read_text())} if path.exists() else {}
    earlier.update({r.name: r.as_dict() for r in results})
    merged = [earlier[n] for n in STAGE_NAMES if n in earlier]
    path.write_text(json.dumps(merged, indent=1))
    return merged


def write_tarball(folder: Path) -> Path:
    tarball = folder.with_name(folder.name + ".tar.gz")
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return tarball


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-min", type=float, default=8.0, help="total wall-clock budget of all stages (default 8)")
    p.add_argument("--stages", default=",".join(STAGE_NAMES), help=f"comma list from {', '.join(STAGE_NAMES)} (default: all)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="parent of the results folder (default perf/out/gpu_check)")
    p.add_argument("--models", default=",".join(model_shapes.MODELS),
                   help="comma list of perf/model_shapes.py models for the sweep and kernels stages")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="pytest-xdist workers (0: none)")
    p.add_argument("--test-timeout-s", type=int, default=300, help="per-test timeout where pytest-timeout is installed")
    p.add_argument("--pytest-args", default="tests", help="what pytest runs (default: tests)")
    p.add_argument("--sweep-args", default="--blocks representative",
                   help="perf/sweep.py arguments beside the out folder, budget and models (default: each model's "
                        "representative block, the README table's; \"\" for the machine's whole preset)")
    p.add_argument("--kernels-args", default="", help="extra perf/gpu_kernels.py arguments")
    p.add_argument("--models-args", default="", help="extra perf/models.py arguments")
    p.add_argument("--l2-args", default="", help="extra perf/l2_chunk.py arguments")
    p.add_argument("--quiet", action="store_true", help="stages' output to their logs only")
    args = p.parse_args(argv)
    args.stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in args.stages if s not in STAGE_NAMES]
    if unknown or not args.stages:
        p.error(f"--stages: expected a comma list from {', '.join(STAGE_NAMES)}, got {unknown or 'nothing'}")
    if args.budget_min <= 0:
        p.error("--budget-min must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = args.out / f"{device_slug()}-{datetime.date.today().isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU: a CPU run, kernels in Triton's interpreter"
    print(f"gpu_check: {where}; stages {', '.join(args.stages)} in {args.budget_min:g} min; results in {folder}", flush=True)
    results = run_stages(args, folder)
    stages = _merge_stage_results(folder, results)
    summary = gpu_summary.write_summary(folder, stages)
    tarball = write_tarball(folder)
    size = tarball.stat().st_size
    print("\n" + summary)
    print(f"Wrote {folder} and {tarball} ({size / 2**20:.2f} MiB"
          + (", OVER the 16 MiB a lent machine returns" if size > TARBALL_LIMIT_BYTES else "") + ")")
    return 0 if all(r.status in ("passed", "skipped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
