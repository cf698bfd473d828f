"""Stage 5 of perf/gpu_check.py: does the block pipeline's second read of x come from L2?

    python perf/l2_chunk.py --out DIR [--blocks ...] [--fractions 0.25,0.5] [--batch 128]

The forward of a channel-attention block reads x twice (the squeeze, then the scale): 3·|x| of
HBM traffic with y's write, 2·|x| if the scale finds x in L2. ``TRITATTN_L2_CHUNK`` (in-process:
``tritattn.excitation_block.l2_fraction``) runs the two kernels over chunks of samples whose x
fills that fraction of L2. For a few large blocks this times the
tritattn forward with the chunking off and at each fraction (inputs rotated so x starts out of
L2, as in the sweep), with and without CUDA graphs, and reports ms, GB/s on the block's minimum
bytes and the speed-up over "off". The default blocks: SE-ResNet-50's stage 1 (x of 205 MB at batch
128 in bf16: four times an H100's L2) and stage 3 (51 MB: about its L2), and an EfficientNet-B0 SE
whose x fits in L2 unchunked (14 MB). Where Nsight Compute's ``ncu`` is on the PATH (and allowed to
read the counters), one forward per setting runs under it and the DRAM bytes read and written
(``dram__bytes_read.sum``, ``dram__bytes_write.sum``, summed over the forward's kernels) are
reported against |x|: about 2·|x| read+written means the second read came from L2.

Without a GPU the blocks are shrunk and run through the interpreter: the stage is exercised,
the timings are CPU timings and labelled so, and there is no DRAM count.

Writes ``DIR/l2_chunk.csv`` and prints a table.
"""
from __future__ import annotations

import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: the kernels run on the CPU

import argparse  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import bench  # noqa: E402
import model_shapes  # noqa: E402
import report  # noqa: E402
from cases import DTYPES, LAYOUTS, Case, build, build_eager, forward_fn  # noqa: E402
from measure import min_bytes  # noqa: E402
from tritattn import excitation_block  # noqa: E402

COLUMNS = ["model", "block", "C", "H", "W", "batch", "dtype", "layout", "x_mib", "l2_fraction", "samples_per_launch",
           "cuda_graph", "ms", "gbs", "speedup_vs_off", "dram_read_mib", "dram_write_mib", "dram_note", "timing"]
#: channel blocks (perf/model_shapes.py ids) from far larger than L2 to well inside it at batch 128
DEFAULT_BLOCKS = "seresnet50/s1,seresnet50/s3,efficientnet_b0/se1152@7"
NCU_METRICS = "dram__bytes_read.sum,dram__bytes_write.sum"
NCU_TIMEOUT_S = 120


def _settings(fractions: list[float]) -> list[float | None]:
    return [None, *fractions]


def time_rows(case: Case, fractions: list[float], device: torch.device) -> list[dict]:
    """The forward of ``case`` with the chunking off and at each fraction, with and without CUDA graphs."""
    b = case.block
    module = build("tritattn", build_eager(b, device, DTYPES[case.dtype]), b)
    x = case.input(device)
    inputs = [x] + [case.input(device) for _ in range(bench.rotation_count(x.numel() * x.element_size(), device) - 1)]
    minimum = min_bytes(b, case.batch, case.dtype, case.layout)["fwd"]
    rows, off_ms = [], {}
    for fraction in _settings(fractions):
        excitation_block.l2_fraction = fraction
        for graph in ((False, True) if device.type == "cuda" else (False,)):
            ms = bench.time_ms(forward_fn(module, inputs), device, cuda_graph=graph)
            off_ms.setdefault(graph, ms)
            rows.append({
                "model": b.model, "block": b.id, "C": b.C, "H": b.H, "W": b.W, "batch": case.batch, "dtype": case.dtype,
                "layout": case.layout, "x_mib": round(x.numel() * x.element_size() / 2**20, 2),
                "l2_fraction": fraction if fraction is not None else "off",
                "samples_per_launch": excitation_block.samples_per_launch(x), "cuda_graph": graph, "ms": round(ms, 4),
                "gbs": round(minimum / ms / 1e6, 1), "speedup_vs_off": round(off_ms[graph] / ms, 3),
                "dram_read_mib": "", "dram_write_mib": "", "dram_note": "", "timing": bench.timing_label(device, "tritattn"),
            })
    excitation_block.l2_fraction = None
    return rows


def dram_bytes(args: argparse.Namespace, block_id: str, fraction: float | None) -> tuple[float, float] | str:
    """(MiB read, MiB written) from DRAM by one forward under ncu, or why there is no count."""
    ncu = shutil.which("ncu")
    if not torch.cuda.is_available():
        return "no GPU"
    if not ncu:
        return "ncu is not on the PATH"
    # --cache-control none: ncu must not flush L2 between the kernels, which is the point here
    cmd = [ncu, "--metrics", NCU_METRICS, "--csv", "--cache-control", "none", "--profile-from-start", "off",
           "--target-processes", "all", sys.executable, __file__,
           "--profile-one", block_id, "--fraction", str(fraction or 0), "--batch", str(args.batch),
           "--dtype", args.dtype, "--layout", args.layout]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=NCU_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"ncu took over {NCU_TIMEOUT_S} s"
    read = written = 0.0
    rows = [r for r in csv.reader(io.StringIO(done.stdout)) if len(r) > 3]
    header = rows[0] if rows else []
    if "Metric Name" not in header:
        return ("ncu: " + (done.stderr or done.stdout).strip().splitlines()[-1][:200]) if (done.stderr or done.stdout) else "ncu gave nothing"
    name, unit, value = header.index("Metric Name"), header.index("Metric Unit"), header.index("Metric Value")
    scale = {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}
    for r in rows[1:]:
        amount = float(r[value].replace(",", "")) * scale.get(r[unit], 1)
        if r[name] == "dram__bytes_read.sum":
            read += amount
        elif r[name] == "dram__bytes_write.sum":
            written += amount
    return read / 2**20, written / 2**20


def _block(block_id: str) -> model_shapes.Block:
    found = [b for b in model_shapes.ALL_BLOCKS if b.id == block_id]
    if not found:
        raise SystemExit(f"no block {block_id!r} in perf/model_shapes.py")
    return found[0]


def profile_one(args: argparse.Namespace) -> int:
    """The process ncu profiles (``--profile-from-start off``): a warm-up forward of the block
    (it tunes), then one forward between cudaProfilerStart and Stop."""
    block = _block(args.profile_one)
    case = Case(block, args.batch, args.dtype, args.layout)
    device = torch.device("cuda")
    module = build("tritattn", build_eager(block, device, DTYPES[case.dtype]), block)
    excitation_block.l2_fraction = args.fraction or None
    run = forward_fn(module, [case.input(device)])
    run()
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    run()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="results folder")
    p.add_argument("--blocks", default=DEFAULT_BLOCKS, help=f"comma list of block ids (default {DEFAULT_BLOCKS})")
    p.add_argument("--fractions", default="0.25,0.5", help="L2 fractions to try besides off (default 0.25,0.5)")
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16" if gpu else "fp32")
    p.add_argument("--layout", choices=list(LAYOUTS), default="channels_last")
    p.add_argument("--batch", type=int, default=128 if gpu else 2)
    p.add_argument("--shrink", type=lambda s: tuple(int(v) for v in s.split(",")), default=None if gpu else (16, 4),
                   help="C,SIDE: shrink blocks to at most C channels and SIDE×SIDE (CPU default 16,4)")
    p.add_argument("--profile-one", help=argparse.SUPPRESS)
    p.add_argument("--fraction", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.profile_one:
        return profile_one(args)
    if args.out is None:
        p.error("--out is required")
    device = torch.device("cuda" if gpu else "cpu")
    fractions = [float(f) for f in args.fractions.split(",") if f]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for block_id in args.blocks.split(","):
        full = _block(block_id)
        block = full.scaled(*args.shrink) if args.shrink else full
        print(f"{block.id}: {block.describe()} at {block.H}x{block.W}, batch {args.batch}", flush=True)
        model_rows = time_rows(Case(block, args.batch, args.dtype, args.layout), fractions, device)
        for fraction in _settings(fractions):
            counted = dram_bytes(args, block_id, fraction) if not args.shrink else "shrunk blocks: no DRAM count"
            for r in model_rows:
                if r["l2_fraction"] == (fraction if fraction is not None else "off"):
                    if isinstance(counted, str):
                        r["dram_note"] = counted
                    else:
                        r["dram_read_mib"], r["dram_write_mib"] = (round(v, 1) for v in counted)
        rows += model_rows
    report.write_csv(args.out / "l2_chunk.csv", rows, COLUMNS)
    print(f"\nThe forward with the second read of x from L2 ({args.dtype}, {args.layout}, batch {args.batch}; "
          f"{rows[0]['timing'] if rows else ''}):")
    print(report.format_table(
        ["block", "x MiB", "L2 fraction", "samples/launch", "graph", "ms", "GB/s", "x off", "DRAM read MiB", "DRAM write MiB"],
        [[r["block"], r["x_mib"], r["l2_fraction"], r["samples_per_launch"], r["cuda_graph"], r["ms"], r["gbs"],
          r["speedup_vs_off"], r["dram_read_mib"] or r["dram_note"], r["dram_write_mib"]] for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
