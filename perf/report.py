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
