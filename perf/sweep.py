"""Benchmark sweep: tritattn against the eager reference blocks and torch.compile of them, on the
attention blocks of real models (perf/model_shapes.py).

    python perf/sweep.py                # GPU: the full table; CPU: an honest interpreter run
    python perf/sweep.py --quick        # a short subset
    python perf/sweep.py --help         # picking models, blocks, dtypes, layouts, batch sizes, …

For every case (block × dtype × layout × batch size) and pass (``fwd``: inference; ``fwd+bwd``:
a training step), each implementation is timed (perf/bench.py: do_bench medians with warm-up
and rotating inputs; on a GPU also replayed from a CUDA graph) and rated against the block's
minimum bytes (perf/bytes_model.py): achieved GB/s, % of the copy bandwidth measured in the same
run, speed-ups over eager and compile. Device-independent figures — kernel launches per forward
and backward, activation bytes saved for backward (perf/census.py) — are measured for every
block of the chosen models at full size, on the "meta" device.

Output folder (``--out``, default perf/out/): ``timings.csv``, ``blocks.csv`` (device-independent),
``sweep.json`` (all of it, with device, torch / triton versions, date, tuning decisions),
``throughput_<dtype>_<layout>.png``, ``speedup_<dtype>_<layout>.png``, ``census.png``; the tables
are printed at the end.

Without a GPU the sweep says so, runs tritattn's kernels through the Triton interpreter on each
model's most frequent block shrunk to ≤ 64 channels, ≤ 8×8, batch 2 (which exercises the tuning
path — skipped under the interpreter, with the default config, as the report says — and the
report path), measures the device-independent figures for the full table, and labels every
timing as a CPU timing, not GPU performance. It takes a couple of minutes on 2 cores.

GPU budget (~8 minutes on an H100, compile times included): the default run times tritattn and
eager on all 36 blocks of the 6 models, bf16 and fp32, NCHW and channels_last, batch 32 and 128,
both passes, with and without CUDA graphs; torch.compile, whose compile times dominate, only on
each model's most frequent block at the largest batch and first dtype — the default mode in every
layout, max-autotune in the last. Work runs in priority order (perf/plan.py: the first dtype's
cases, compile, max-autotune, then the other dtypes); once ``--budget-min`` minutes (default 7.5)
have passed, the remaining cases are skipped and listed in the report. The first run on a GPU
also tunes the kernels (the time is reported) and compiles their variants; later runs read the
tuning cache, and ``--write-tuned-table`` ships the configs with the package.
"""
from __future__ import annotations

import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: the kernels run on the CPU

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import triton  # noqa: E402
from tqdm import tqdm  # noqa: E402

import bench  # noqa: E402
import critical_path  # noqa: E402
import measure  # noqa: E402
import plan  # noqa: E402
import plots  # noqa: E402
import report  # noqa: E402
from cases import DTYPES, LAYOUTS, PASSES  # noqa: E402
from model_shapes import MODELS  # noqa: E402
from tritattn import backend_for, paths, tuning  # noqa: E402
from tritattn.cost_model import gpu_model  # noqa: E402

DEFAULT_OUT = Path(__file__).parent / "out"


def _list_of(allowed: list[str] | None = None):
    """argparse type: a comma list, each item one of ``allowed`` when given."""
    def parse(text: str) -> list[str]:
        items = [t for t in text.split(",") if t]
        bad = [t for t in items if allowed is not None and t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list from {', '.join(allowed or [])}")
        return items
    return parse


def _presets_text() -> str:
    return "defaults by machine (an option given replaces its default):\n" + "\n".join(
        f"  {name:10s} " + ", ".join(f"{k}={v}" for k, v in preset.items()) for name, preset in plan.PRESETS.items())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, epilog=_presets_text(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a short subset: each model's most frequent block, one dtype, layout and batch size")
    p.add_argument("--models", type=_list_of(list(MODELS)), default=list(MODELS), help=f"comma list from {', '.join(MODELS)} (default: all)")
    p.add_argument("--blocks", type=_list_of(), help='comma list: "all", "representative" (each model\'s most frequent block), or substrings of block ids such as "seresnet50/s3"')
    p.add_argument("--dtypes", type=_list_of(list(DTYPES)), help="comma list from fp32, fp16, bf16; the first is the one compile and the census use")
    p.add_argument("--layouts", type=_list_of(list(LAYOUTS)), help="comma list from nchw, channels_last")
    p.add_argument("--batch-sizes", type=lambda s: [int(v) for v in _list_of()(s)], help="comma list, e.g. 32,64,128")
    p.add_argument("--passes", type=_list_of(list(PASSES)), help="comma list from fwd, fwd+bwd")
    p.add_argument("--compile", type=lambda s: [] if s == "none" else _list_of(list(plan.COMPILE_CHOICES))(s), help='"none" or a comma list from default, max-autotune')
    p.add_argument("--compile-blocks", choices=["representative", "first", "all"], help="which blocks torch.compile is timed on")
    p.add_argument("--cuda-graphs", choices=["both", "on", "off"], help="GPU: time with and/or without CUDA graphs")
    p.add_argument("--budget-min", type=float, help="stop starting new cases after this many minutes")
    p.add_argument("--shrink", type=lambda s: tuple(int(v) for v in s.split(",")), help="C,SIDE: shrink blocks to at most C channels and SIDE×SIDE")
    p.add_argument("--census-batch", type=int, default=32, help="batch size of the device-independent figures (default 32)")
    p.add_argument("--critical-path", default="sweep", help='the critical-path census (perf/critical_path.py): "sweep" '
                   f'({", ".join(critical_path.SWEEP_IDS)}), "all" (python perf/census.py\'s blocks), "none", or a comma list of census block ids')
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default perf/out)")
    p.add_argument("--write-tuned-table", action="store_true", help="GPU: write the tuned configs to tritattn/tuned/<gpu>.json, shipped with the package")
    args = p.parse_args(argv)
    preset = plan.PRESETS[("gpu" if torch.cuda.is_available() else "cpu") + ("-quick" if args.quick else "")]
    for name, value in preset.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    return args


def critical_path_ids(choice: str) -> list[str]:
    """The census blocks the sweep counts: "sweep", "all", "none" or a comma list of ids."""
    if choice in ("sweep", "all", "none"):
        return {"sweep": list(critical_path.SWEEP_IDS), "all": list(critical_path.CENSUS_IDS), "none": []}[choice]
    ids = [i for i in choice.split(",") if i]
    for i in ids:
        critical_path.census_block(i)  # an unknown id fails here, before any work
    return ids


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), no GPU"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.write_tuned_table and device.type != "cuda":
        sys.exit("--write-tuned-table needs a GPU: there is nothing tuned without one")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    census_ids = critical_path_ids(args.critical_path)
    # counted in Triton's interpreter in a subprocess, beside the timings (a GPU's kernels cannot be counted)
    pending = critical_path.PendingCount(census_ids, critical_path.COUNT_BATCHES, "fp32") if census_ids else None
    tuning_status = tuning.skip_reason(device) or f"autotuning on (cache {tuning.cache_file()})"
    print(f"device: {describe_device(device)}; tritattn backend: {backend_for(torch.empty(0, device=device))}")
    print(f"torch {torch.__version__}, triton {triton.__version__}; {tuning_status}")
    if device.type != "cuda":
        print("No GPU: tritattn runs through the Triton interpreter on small shapes; every timing below "
              "is a CPU timing, not GPU performance. Launch counts and saved bytes are device-independent.")

    copy_gbs = bench.copy_bandwidth_gbs(device)
    blocks = plan.pick_blocks(args.models, args.blocks, args.shrink)
    items = plan.work_items(blocks, args.dtypes, args.layouts, args.batch_sizes, args.compile, args.compile_blocks)
    graph_modes = {"both": [False, True], "on": [True], "off": [False]}[args.cuda_graphs] if device.type == "cuda" else [False]
    rows, skipped, min_bytes = [], [], {}
    for item in tqdm(items, desc="sweep", unit="case", file=sys.stderr):
        c = item.case
        if time.monotonic() - start > 60 * args.budget_min:
            skipped.append({"case": c.label, "impls": list(item.impls), "reason": f"time budget of {args.budget_min} min"})
            continue
        key = (c.block.id, c.batch, c.dtype, c.layout)
        if key not in min_bytes:
            min_bytes[key] = measure.min_bytes(c.block, c.batch, c.dtype, c.layout)
        with tuning.benchmarking():  # the sweep tunes what it meets (tritattn.tune's scope), outside its graph captures
            rows += measure.measure_case(c, list(item.impls), args.passes, graph_modes, device)
    report.rate(rows, min_bytes, copy_gbs)

    census_blocks = plan.pick_blocks(args.models, ["all"], shrink=None)
    census_rows = [measure.census_row(b, args.census_batch, args.dtypes[0]) for b in tqdm(census_blocks, desc="census", unit="block", file=sys.stderr)]

    cp_launches, cp_estimates = [], []
    if pending is not None:
        counts = pending.result()
        timed = {r["batch"] for r in rows} if device.type == "cuda" else set()  # full-size blocks: estimate beside them
        cp_launches = critical_path.launch_rows(counts)
        cp_estimates = critical_path.estimate_rows(counts, sorted(set(critical_path.ESTIMATE_BATCHES) | timed))

    note = "GPU timing" if device.type == "cuda" else "CPU timing, not GPU performance"
    report.write_csv(args.out / "timings.csv", rows, report.TIMING_COLUMNS)
    report.write_csv(args.out / "blocks.csv", census_rows, report.BLOCK_COLUMNS)
    report.write_csv(args.out / "critical_path.csv", cp_launches, report.CRITICAL_PATH_COLUMNS)
    report.write_csv(args.out / "estimates.csv", cp_estimates, report.ESTIMATE_COLUMNS)
    plotted = [r for r in cp_estimates if r["batch"] in critical_path.ESTIMATE_BATCHES]
    pngs = (plots.throughput(rows, copy_gbs, args.out, note) + plots.speedups(rows, args.out, note)
            + [plots.census(census_rows, args.out, plotted)])
    tuned_table = str(tuning.write_shipped_table(device)) if args.write_tuned_table else None
    report.write_json(args.out / "sweep.json", {
        "meta": {
            "device": describe_device(device), "device_kind": device.type, "timing_note": note,
            "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "copy_bandwidth_gbs": copy_gbs, "elapsed_s": time.monotonic() - start,
            "args": {k: v for k, v in vars(args).items()},
            "tuning": {"status": tuning_status, "seconds": tuning.tuning_seconds(), "shipped_table_written": tuned_table,
                       "decisions": [vars(d) for d in tuning.decisions()]},
            "paths": [vars(d) for d in paths.decisions()],
        },
        "timings": rows, "blocks": census_rows, "skipped": skipped,
        "critical_path": {"count_batches": list(critical_path.COUNT_BATCHES), "dtype": "fp32", "launches": cp_launches,
                          "estimates": cp_estimates, "estimate_label": critical_path.ESTIMATE_LABEL},
    })

    print(f"\nTimings ({note}; ms are medians; GB/s = minimum bytes / time; copy bandwidth {copy_gbs:.1f} GB/s):")
    print(report.timing_table(rows))
    print("\nGeometric-mean speed-up of tritattn:")
    print(report.geomean_speedups(rows))
    print(f"\nDevice-independent figures (full-size blocks, batch {args.census_batch}, {args.dtypes[0]}):")
    print(report.census_table(census_rows))
    if cp_launches:
        print("\n" + report.critical_path_text(cp_launches, plotted, critical_path.COUNT_BATCHES,
                                              [g.name for g in critical_path.GPUS], critical_path.ESTIMATE_LABEL))
        print("(the sweep counts a subset; every census block: python perf/census.py)")
        if device.type == "cuda":
            print(f"\nEstimate (model) beside the measurement ({describe_device(device)}):")
            print(report.estimate_beside_timings(rows, cp_estimates, gpu_model(describe_device(device)).name))
    failed = [r for r in rows if r["error"]]
    for r in failed:
        print(f"FAILED {r['impl']} {r['block']} {r['pass']}: {r['error']}")
    if skipped:
        print(f"\n{len(skipped)} work items skipped: time budget of {args.budget_min} min reached")
    print("\nPaths the timed blocks took (tritattn.paths: a tuned winner, else the critical-path model's estimate):")
    for d in paths.decisions():
        print(f"  {d.block} {d.key}: {d.path} — {d.reason}")
    print(f"\nTuning: {tuning_status}; {len(tuning.decisions())} kernel/problem keys, {tuning.tuning_seconds():.1f} s benchmarking configs")
    print(f"Wrote {args.out}: timings.csv, blocks.csv, critical_path.csv, estimates.csv, sweep.json, {', '.join(p.name for p in pngs)}"
          + (f"; tuned table {tuned_table}" if tuned_table else ""))
    print(f"Total {time.monotonic() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
