"""The sweep's results as numbers: achieved bandwidth, speed-ups, CSV / JSON files, terminal tables."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable

TIMING_COLUMNS = [
    "model", "block", "module", "C", "H", "W", "batch", "dtype", "layout", "pass", "impl", "cuda_graph",
    "ms", "min_bytes", "gbps", "pct_copy_bw", "speedup_vs_eager", "speedup_vs_compile",
    "speedup_vs_compile-max-autotune", "speedup_vs_tritattn-per-op", "max_rel_err", "timing", "error",
]
BLOCK_COLUMNS = [
    "model", "block", "module", "C", "H", "W", "count", "batch", "dtype",
    "launches_fwd_tritattn", "triton_launches_fwd", "launches_fwd_eager",
    "launches_bwd_tritattn", "triton_launches_bwd", "launches_bwd_eager",
    "saved_bytes_tritattn", "saved_bytes_eager", "min_bytes_fwd", "min_bytes_fwd+bwd",
    "launches_inference_tritattn", "launches_inference_eager", "passes_inference_tritattn", "passes_inference_eager",
    "passes_step_tritattn", "passes_step_eager",
]
#: perf/critical_path.py's rows: one per counted launch, and one per estimate (model, not measured)
CRITICAL_PATH_COLUMNS = [
    "block", "path", "pass", "index", "kernel", "triton", "batch_small", "batch_large", "programs_small",
    "programs_large", "median_small", "median_large", "longest_small", "longest_large", "bytes_small",
    "bytes_large", "grows_with_batch", "launches_differ", "longest_over_median",
]
ESTIMATE_COLUMNS = ["block", "pass", "path", "gpu", "batch", "label", "us", "launches", "longest", "bytes",
                    "extrapolated", "tails", "violations", "note"]
#: what tritattn's rows are rated against; "tritattn-per-op" is tritattn with its block pipelines off
BASELINES = ("eager", "compile", "compile-max-autotune", "tritattn-per-op")


def _case_key(r: dict) -> tuple:
    return r["block"], r["batch"], r["dtype"], r["layout"], r["pass"], r["cuda_graph"]


def rate(rows: list[dict], min_bytes: dict[tuple, dict[str, int]], copy_gbs: float) -> None:
    """Add min_bytes, achieved GB/s, % of copy bandwidth to every row, and to tritattn's rows the
    speed-up over each baseline timed in the same case, pass and CUDA-graph mode (ms ratio)."""
    ms = {(*_case_key(r), r["impl"]): r["ms"] for r in rows if r["ms"]}
    for r in rows:
        r["min_bytes"] = min_bytes[(r["block"], r["batch"], r["dtype"], r["layout"])][r["pass"]]
        r["gbps"] = r["min_bytes"] / (r["ms"] * 1e-3) / 1e9 if r["ms"] else None
        r["pct_copy_bw"] = 100 * r["gbps"] / copy_gbs if r["gbps"] else None
        for base in BASELINES:
            theirs = ms.get((*_case_key(r), base))
            ok = r["impl"] == "tritattn" and r["ms"] and theirs
            r[f"speedup_vs_{base}"] = theirs / r["ms"] if ok else None


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=1, default=str))


def format_value(v: Any) -> str:
    """A table cell: None / NaN as "-", floats to 3 significant digits, whole from 1000 up."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def format_table(headers: list[str], rows: Iterable[list[Any]]) -> str:
    cells = [headers] + [[format_value(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def timing_table(rows: list[dict]) -> str:
    """One line per case and pass: each implementation's ms, tritattn's GB/s and speed-ups;
    with CUDA-graph timings, tritattn's graph ms and speed-up over eager in graphs too."""
    by_case: dict[tuple, dict[tuple[str, bool], dict]] = {}
    for r in rows:
        by_case.setdefault(_case_key(r)[:5], {})[(r["impl"], r["cuda_graph"])] = r
    graphs = any(r["cuda_graph"] for r in rows)
    headers = ["block", "B", "dtype", "layout", "pass", "tritattn ms", "eager ms", "compile ms", "max-at ms", "per-op ms",
               "GB/s", "% copy", "x eager", "x compile", "x max-at", "x per-op"] + (["graph ms", "graph x eager"] if graphs else [])
    lines = []
    for key, impls in by_case.items():
        t, tg = impls.get(("tritattn", False), {}), impls.get(("tritattn", True), {})
        line = [*key, *(impls.get((i, False), {}).get("ms") for i in ("tritattn", *BASELINES)),
                t.get("gbps"), t.get("pct_copy_bw"), *(t.get(f"speedup_vs_{b}") for b in BASELINES)]
        lines.append(line + ([tg.get("ms"), tg.get("speedup_vs_eager")] if graphs else []))
    return format_table(headers, lines)


def geomean_speedups(rows: list[dict]) -> str:
    """Geometric-mean speed-up of tritattn over each baseline, per pass and CUDA-graph mode."""
    lines = []
    for p in sorted({r["pass"] for r in rows}):
        for g in sorted({r["cuda_graph"] for r in rows}):
            line = [p, "yes" if g else "no"]
            for base in BASELINES:
                s = [r[f"speedup_vs_{base}"] for r in rows if r["pass"] == p and r["cuda_graph"] == g and r.get(f"speedup_vs_{base}")]
                line.append(math.exp(sum(map(math.log, s)) / len(s)) if s else None)
            lines.append(line)
    return format_table(["pass", "cuda graph", "x eager", "x compile", "x max-at", "x per-op"], lines)


def census_table(blocks: list[dict]) -> str:
    """Device-independent figures, tritattn/eager: kernels and x-sized tensor passes of an
    inference forward and of a training step (forward + backward), activation MiB saved."""
    headers = ["block", "B", "inference kernels", "inference passes", "step kernels", "step passes", "saved MiB"]
    mib = 1 << 20

    def pair(key: str) -> str:
        return f"{b[key + '_tritattn']}/{b[key + '_eager']}"

    rows = []
    for b in blocks:
        step = [b[f"launches_fwd_{i}"] + b[f"launches_bwd_{i}"] for i in ("tritattn", "eager")]
        rows.append([b["block"], b["batch"], pair("launches_inference"), pair("passes_inference"),
                     f"{step[0]}/{step[1]}", pair("passes_step"),
                     f"{b['saved_bytes_tritattn'] / mib:.1f}/{b['saved_bytes_eager'] / mib:.1f}"])
    return format_table(headers, rows)


def _arrow(a: Any, b: Any) -> str:
    return format_value(b) if a is None or a == b else f"{format_value(a)}→{format_value(b)}"


def critical_path_table(launches: list[dict]) -> str:
    """The critical-path census (perf/critical_path.py's launch rows): per block, path, pass and
    launch, its programs, median and longest program's memory instructions at the two counted
    batches (a→b where they differ), its bytes at the larger, whether the longest grows with B,
    and §2's first tail check (longest ≤ 2 × median + 32) at the larger batch."""
    headers = ["block", "path", "pass", "kernel", "B", "programs", "median", "longest", "MB", "grows with B", "longest ≤ 2·median+32"]
    rows = []
    for r in launches:
        if not r["triton"]:
            continue
        rows.append([r["block"], r["path"], r["pass"], r["kernel"], _arrow(r["batch_small"], r["batch_large"]),
                     _arrow(r["programs_small"], r["programs_large"]), _arrow(r["median_small"], r["median_large"]),
                     _arrow(r["longest_small"], r["longest_large"]), r["bytes_large"] / 1e6,
                     {True: "GROWS", False: "no", None: "?"}[r["grows_with_batch"]] + (" (launches differ)" if r["launches_differ"] else ""),
                     {True: "NO (tail)", False: "ok", None: "?"}[r["longest_over_median"]]])
    return format_table(headers, rows)


def estimate_table(estimates: list[dict], gpu: str) -> str:
    """Estimated µs per block on ``gpu`` — **an estimate from the model (tritattn/cost_model.py),
    not a measurement** — tritattn's path, the per-op path and eager, per pass and batch; "*"
    marks a path whose longest program was extended linearly in B (it grows with B); "tails":
    tritattn's launches that miss a §2 target at that batch (critical_path.violations)."""
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in estimates:
        if r["gpu"] == gpu:
            by_key.setdefault((r["block"], r["pass"], r["batch"]), {})[r["path"]] = r
    headers = ["block", "pass", "B", "tritattn µs", "per-op µs", "eager µs", "x per-op", "x eager", "launches", "longest", "tails"]
    rows = []
    for (block, pass_, batch), paths in by_key.items():
        t, o, e = (paths.get(p, {}) for p in ("tritattn", "tritattn-per-op", "eager"))

        def us(r: dict) -> str:
            return "-" if r.get("us") is None else f"{r['us']:.1f}" + ("*" if r.get("extrapolated") else "")

        def speedup(base: dict) -> float | None:
            return base["us"] / t["us"] if t.get("us") and base.get("us") else None

        rows.append([block, pass_, batch, us(t), us(o), us(e), speedup(o), speedup(e),
                     f"{format_value(t.get('launches'))}/{format_value(o.get('launches'))}/{format_value(e.get('launches'))}",
                     t.get("longest"), t.get("tails")])
    return format_table(headers, rows)


#: the census's passes by the sweep's
ESTIMATE_PASS = {"fwd": "inference", "fwd+bwd": "step"}


def estimate_beside_timings(rows: list[dict], estimates: list[dict], gpu: str) -> str:
    """A GPU run: each float32 NCHW timing without CUDA graphs of a counted block beside the model's
    estimate for the same block, path, pass and batch (the estimate includes a launch overhead
    per kernel, as a run without graphs pays)."""
    est = {(r["block"], r["path"], r["pass"], r["batch"]): r["us"] for r in estimates if r["gpu"] == gpu}
    headers = ["block", "B", "pass", "impl", "measured µs", "estimate (model) µs", "measured / estimate"]
    lines = []
    for r in rows:
        e = est.get((r["block"], r["impl"], ESTIMATE_PASS[r["pass"]], r["batch"]))
        if e and r["ms"] and r["dtype"] == "fp32" and r["layout"] == "nchw" and not r["cuda_graph"]:
            lines.append([r["block"], r["batch"], r["pass"], r["impl"], 1e3 * r["ms"], e, 1e3 * r["ms"] / e])
    return format_table(headers, lines)


def critical_path_text(launches: list[dict], estimates: list[dict], batches: tuple[int, int], gpus: list[str], label: str) -> str:
    """The census's launch table and, per GPU, its estimate table, with their headings."""
    parts = [f"Critical-path census (memory instructions per program, counted in Triton's interpreter at B={batches[0]} "
             f"and {batches[1]}; full C, H, W; float32):", critical_path_table(launches)]
    for gpu in gpus:
        parts += [f"\nEstimated µs per block on an {gpu} — {label}, not a measurement (tritattn/cost_model.py; "
                  "* = longest program extended linearly in B):", estimate_table(estimates, gpu)]
    notes = tail_notes(estimates, gpus[0]) if gpus else []
    if notes:
        parts += [f"\nLaunches on tritattn's path that miss a §2 target ({gpus[0]}), and whether that path is "
                  "still the fastest by the estimate:"] + notes
    return "\n".join(parts)


def tail_notes(estimates: list[dict], gpu: str) -> list[str]:
    """One line per block, pass and batch whose tritattn path has launches that miss a §2 target
    (a serial tail: critical_path.violations), with the violations and whether that path is still
    the fastest of tritattn's, the per-op path and eager by the estimate (issue 23 §2: where the
    targets cannot hold, the block takes the faster path, and the report says so)."""
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in estimates:
        if r["gpu"] == gpu:
            by_key.setdefault((r["block"], r["pass"], r["batch"]), {})[r["path"]] = r
    lines = []
    for (block, pass_, batch), paths in by_key.items():
        t = paths.get("tritattn", {})
        if not t.get("tails"):
            continue
        others = {name: paths[key]["us"] for key, name in (("tritattn-per-op", "per-op"), ("eager", "eager"))
                  if paths.get(key, {}).get("us") is not None}
        slower = [name for name, us in others.items() if us < t["us"]]
        times = ", ".join(f"{name} {us:.1f}" for name, us in others.items())
        verdict = (f"still the fastest ({t['us']:.1f} µs; {times})" if not slower
                   else f"NOT the fastest: {', '.join(slower)} faster")
        lines.append(f"  {block} {pass_} B={batch}: {t['violations']} — tritattn's path {verdict}")
    return lines
