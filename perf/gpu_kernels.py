"""Stage 4 of perf/gpu_check.py: the kernels that actually run in a block, counted by torch.profiler.

    python perf/gpu_kernels.py --out DIR [--models ...] [--impls tritattn,eager,compile]

The GPU twin of the census (perf/census.py counts launches by a rule, on the "meta" device; this
counts what the GPU ran). For each model's representative block (perf/model_shapes.py) and each
implementation (perf/cases.py: tritattn, eager, torch.compile), one inference forward and one
training step (forward + the gradients of x and every parameter) are run twice to warm up
(compiles, tunes) and then once under ``torch.profiler``. Counted:

- on a GPU: every CUDA kernel the step ran (device events other than memcpy / memset, which are
  counted apart), with their names;
- on a CPU: there are no GPU kernels, so the outermost operator calls (``aten::*``,
  ``tritattn::*``) are counted instead, views included, and every row says so — it exercises the
  stage, it is not a kernel count.

Writes ``DIR/kernels.csv`` (one row per block × implementation × pass) and prints a table.
"""
from __future__ import annotations

import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: the kernels run on the CPU

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import torch._dynamo  # noqa: E402
from torch.autograd import DeviceType  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import model_shapes  # noqa: E402
import report  # noqa: E402
from cases import COMPILE_MODES, DTYPES, LAYOUTS, Case, build, build_eager, forward_fn, train_step_fn  # noqa: E402

COLUMNS = ["model", "block", "module", "C", "H", "W", "batch", "dtype", "layout", "impl", "pass",
           "kernels", "copies", "counted", "names", "error"]
COUNTED = {"cuda": "CUDA kernels", "cpu": "outermost CPU operator calls (no GPU: not a kernel count)"}
WARMUP_CALLS = 2


def _is_op(name: str) -> bool:
    return name.startswith(("aten::", "tritattn::"))


def _outermost_ops(events: list) -> list[str]:
    """CPU operator events with no operator among their ancestors."""
    def nested(e) -> bool:
        parent = e.cpu_parent
        while parent is not None:
            if _is_op(parent.name):
                return True
            parent = parent.cpu_parent
        return False
    return [e.name for e in events if e.device_type == DeviceType.CPU and _is_op(e.name) and not nested(e)]


def count_kernels(fn: Callable[[], Any], device: torch.device) -> tuple[int, int, list[str]]:
    """(kernels, memcpy/memset count, kernel names in launch order) of one ``fn()``; see the
    module docstring for what counts as a kernel on each device."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = list(prof.events())
    if device.type != "cuda":
        names = _outermost_ops(events)
        return len(names), 0, names
    return gpu_kernels(events)


def gpu_kernels(events: list) -> tuple[int, int, list[str]]:
    """(kernels, memcpy/memset count, kernel names in start order) among profiler events."""
    gpu = sorted((e for e in events if e.device_type == DeviceType.CUDA), key=lambda e: e.time_range.start)
    names = [e.name for e in gpu if not e.name.startswith(("Memcpy", "Memset"))]
    return len(names), len(gpu) - len(names), names


def block_rows(case: Case, impls: list[str], device: torch.device) -> list[dict]:
    """One row per implementation and pass of ``case``."""
    b = case.block
    eager = build_eager(b, device, DTYPES[case.dtype])
    rows = []
    for impl in impls:
        if impl in COMPILE_MODES:
            torch._dynamo.reset()
        for pass_ in ("fwd", "fwd+bwd"):
            row = {"model": b.model, "block": b.id, "module": b.describe(), "C": b.C, "H": b.H, "W": b.W,
                   "batch": case.batch, "dtype": case.dtype, "layout": case.layout, "impl": impl, "pass": pass_,
                   "counted": COUNTED[device.type], "kernels": None, "copies": None, "names": "", "error": ""}
            try:
                module = build(impl, eager, b)
                x = case.input(device, requires_grad=pass_ == "fwd+bwd")
                fn = forward_fn(module, [x]) if pass_ == "fwd" else train_step_fn(module, [(x, torch.randn_like(x))])
                for _ in range(WARMUP_CALLS):
                    fn()
                row["kernels"], row["copies"], names = count_kernels(fn, device)
                row["names"] = ";".join(names)
            except Exception as e:  # reported in the row; the other implementations go on
                row["error"] = f"{type(e).__name__}: {e}"[:500]
            rows.append(row)
    return rows


def table(rows: list[dict], impls: list[str]) -> str:
    """Kernels per block and pass, one column per implementation."""
    by_key: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        by_key.setdefault((r["block"], r["pass"]), {})[r["impl"]] = r["kernels"] if not r["error"] else "error"
    return report.format_table(["block", "pass", *impls], [[*k, *(v.get(i) for i in impls)] for k, v in by_key.items()])


def main(argv: list[str] | None = None) -> int:
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="results folder")
    p.add_argument("--models", default=",".join(model_shapes.MODELS), help="comma list (default: all)")
    p.add_argument("--impls", default="tritattn,tritattn-per-op,eager,compile",
                   help="comma list from tritattn, tritattn-per-op, eager, compile, compile-max-autotune")
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16" if gpu else "fp32")
    p.add_argument("--layout", choices=list(LAYOUTS), default="channels_last")
    p.add_argument("--batch", type=int, default=32 if gpu else 2)
    p.add_argument("--shrink", type=lambda s: tuple(int(v) for v in s.split(",")), default=None if gpu else (16, 4),
                   help="C,SIDE: shrink blocks to at most C channels and SIDE×SIDE (CPU default 16,4)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if gpu else "cpu")
    impls = [i for i in args.impls.split(",") if i]
    unknown = [i for i in impls if i not in ("tritattn", "tritattn-per-op", "eager", *COMPILE_MODES)]
    if unknown:
        p.error(f"unknown implementations: {unknown}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in args.models.split(","):
        block = model_shapes.representative(model)
        block = block.scaled(*args.shrink) if args.shrink else block
        print(f"{block.id}: {block.describe()} at {block.H}x{block.W}, batch {args.batch}", flush=True)
        rows += block_rows(Case(block, args.batch, args.dtype, args.layout), impls, device)
    report.write_csv(args.out / "kernels.csv", rows, COLUMNS)
    print(f"\n{COUNTED[device.type]} per block ({args.dtype}, {args.layout}, batch {args.batch}):")
    print(table(rows, impls))
    failed = [r for r in rows if r["error"]]
    for r in failed:
        print(f"FAILED {r['impl']} {r['block']} {r['pass']}: {r['error']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
