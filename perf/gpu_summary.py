"""summary.md of a perf/gpu_check.py results folder, from the files its stages wrote.

Sections: the machine (env.json), each stage's outcome (stages.json), the test counts and the
failing tests (tests.txt), the "Measured on <GPU>" table that goes at the top of README's
benchmark part (sweep.json and kernels.csv: per model's representative block, forward and
training step, tritattn against eager and torch.compile), the geometric-mean speed-ups, the
kernels per block (kernels.csv beside the census's launch counts in blocks.csv), tuning, and the
forward with the second read of x from L2 off and on (l2_chunk.csv); whole models (models.csv).
A file a stage did not write leaves its section saying so; nothing is filled in.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import model_shapes
import report

COUNT_WORDS = ("passed", "failed", "skipped", "error", "errors", "xfailed", "xpassed", "deselected")
_COUNT = re.compile(r"(\d+) (" + "|".join(COUNT_WORDS) + r")\b")


def test_counts(text: str) -> dict[str, int]:
    """pytest's final counts ("3 failed, 120 passed, 4 skipped in 61.2s"), from its last such line."""
    for line in reversed(text.splitlines()):
        found = _COUNT.findall(line)
        if found and " in " in line:
            counts = {word: int(n) for n, word in found}
            if "error" in counts:
                counts["errors"] = counts.pop("error")
            return counts
    return {}


def failing_tests(text: str) -> list[str]:
    """The "FAILED ..." / "ERROR ..." lines of pytest's short summary."""
    return [line for line in text.splitlines() if line.startswith(("FAILED ", "ERROR "))]


def _read(folder: Path, name: str) -> str | None:
    path = folder / name
    return path.read_text(errors="replace") if path.exists() else None


def _csv(folder: Path, name: str) -> list[dict]:
    path = folder / name
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def measured_table(timings: list[dict], kernels: list[dict]) -> str:
    """Markdown: each model's representative block, at the case torch.compile was timed in (else
    tritattn's largest batch), forward and training step, without CUDA graphs."""
    reps = {model_shapes.representative(m).id for m in model_shapes.MODELS}
    plain = [r for r in timings if r["block"] in reps and not r["cuda_graph"] and r["ms"] is not None]
    kernel_counts = {(k["block"], k["pass"], k["impl"]): k["kernels"] for k in kernels if not k["error"]}
    lines = ["| block | pass | batch, dtype, layout | tritattn ms | eager ms | compile ms | max-autotune ms | per-op ms | "
             "tritattn GB/s | % of copy | × eager | × compile | × max-autotune | × per-op | kernels tritattn / eager / compile |",
             "|" + "---|" * 15]
    for block in sorted({r["block"] for r in plain}):
        rows = [r for r in plain if r["block"] == block]
        compiled = [r for r in rows if r["impl"].startswith("compile")]
        key = max(((r["batch"], r["dtype"], r["layout"]) for r in (compiled or rows)), key=lambda k: k[0])
        for pass_ in ("fwd", "fwd+bwd"):
            at = {r["impl"]: r for r in rows if (r["batch"], r["dtype"], r["layout"]) == key and r["pass"] == pass_}
            t = at.get("tritattn", {})
            if not at:
                continue
            counts = " / ".join(str(kernel_counts.get((block, pass_, i), "-")) for i in ("tritattn", "eager", "compile"))
            lines.append("| " + " | ".join([
                f"{block} `{rows[0]['module']}`", "inference" if pass_ == "fwd" else "training step", ", ".join(map(str, key)),
                *(report.format_value(at.get(i, {}).get("ms")) for i in ("tritattn", *report.BASELINES)),
                report.format_value(t.get("gbps")), report.format_value(t.get("pct_copy_bw")),
                *(report.format_value(t.get(f"speedup_vs_{b}")) for b in report.BASELINES), counts]) + " |")
    return "\n".join(lines) if len(lines) > 2 else "(no timings of the representative blocks)"


def kernels_section(kernels: list[dict], census: list[dict]) -> str:
    """Kernels per block by implementation, beside the census's rule-based launch counts."""
    if not kernels:
        return "(kernels.csv not written)"
    counted = kernels[0]["counted"]
    rule = {(c["block"], p): (c[f"launches_{p}_tritattn"], c[f"launches_{p}_eager"]) for c in census for p in ("fwd", "bwd")}
    by_key: dict[tuple, dict[str, str]] = {}
    for k in kernels:
        by_key.setdefault((k["block"], k["pass"]), {})[k["impl"]] = "error" if k["error"] else k["kernels"]
    impls = list(dict.fromkeys(k["impl"] for k in kernels))
    lines = [f"Counted: {counted}. Census (perf/census.py, by rule): tritattn / eager launches, the training "
             "step being forward + backward.", "",
             "| block | pass | " + " | ".join(impls) + " | census tritattn / eager |", "|" + "---|" * (len(impls) + 3)]
    for (block, pass_), by_impl in by_key.items():
        fwd, bwd = rule.get((block, "fwd")), rule.get((block, "bwd"))
        if fwd and bwd:
            census_text = " / ".join(str(int(f) + (int(b) if pass_ == "fwd+bwd" else 0)) for f, b in zip(fwd, bwd))
        else:
            census_text = "-"
        lines.append(f"| {block} | {pass_} | " + " | ".join(str(by_impl.get(i, "-")) for i in impls) + f" | {census_text} |")
    return "\n".join(lines)


def _machine(env: dict | None) -> list[str]:
    if not env:
        return ["(env.json not written)"]
    d, v = env["device"], env["versions"]
    facts = [d["name"]]
    if d["kind"] == "cuda":
        facts.append(f"{d['sm_count']} SMs, L2 {(d['l2_bytes'] or 0) / 2**20:.0f} MiB, {d['memory_bytes'] / 2**30:.1f} GiB, "
                     f"compute capability {d['compute_capability']}, driver {d['driver'] or 'unknown'}")
    else:
        facts.append(f"{d['cores']} cores, no GPU: every timing is a CPU timing, not GPU performance")
    return [f"- {', '.join(facts)}", "- " + ", ".join(f"{k} {val}" for k, val in v.items()),
            f"- copy bandwidth {env['copy_bandwidth_gbs']:.1f} GB/s ({env['copy_bandwidth_note']})", f"- {env['date']}"]


def _stages(stages: list[dict]) -> list[str]:
    lines = ["| stage | status | seconds (allotted) | detail |", "|---|---|---|---|"]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']:.0f} ({s['allotted_s']:.0f}) | {s['detail']} |" for s in stages]
    return lines


def _tests(text: str | None, stage: dict | None) -> list[str]:
    if text is None:
        return ["(tests.txt not written)"]
    counts = test_counts(text)
    lines = [", ".join(f"{n} {w}" for w, n in counts.items()) if counts else "(no pytest summary line: see tests.txt)"]
    if stage and stage["status"] == "timed out":
        lines[0] += " — the run was interrupted at the stage's time limit: the tests not counted did not run"
    fails = failing_tests(text)
    if fails:
        lines += ["", "Failing (tracebacks in tests.txt):", ""] + [f"- `{f}`" for f in fails[:50]]
        lines += [f"- … and {len(fails) - 50} more"] if len(fails) > 50 else []
    return lines


def _sweep(sweep: dict | None, kernels: list[dict]) -> list[str]:
    if sweep is None:
        return ["(sweep.json not written)"]
    meta, rows = sweep["meta"], sweep["timings"]
    tuning = meta["tuning"]
    lines = [f"Timings: {meta['timing_note']}; copy bandwidth in the same run {meta['copy_bandwidth_gbs']:.1f} GB/s; "
             f"ms are medians; GB/s are minimum bytes (perf/bytes_model.py) over time.", "",
             measured_table(rows, kernels), "", "Geometric-mean speed-up of tritattn over all timed cases:", "", "```",
             report.geomean_speedups(rows) if rows else "(no timings)", "```"]
    failed = [r for r in rows if r["error"]]
    lines += [f"- FAILED {r['impl']} {r['block']} {r['pass']}: {r['error']}" for r in failed]
    if sweep["skipped"]:
        lines.append(f"- {len(sweep['skipped'])} work items skipped (time budget); listed in sweep.json")
    lines += ["", f"Tuning: {tuning['status']}; {len(tuning['decisions'])} kernel/problem keys; "
              f"{tuning['seconds']:.1f} s benchmarking configs; shipped table written: {tuning['shipped_table_written'] or 'no'}"]
    return lines


def models_section(rows: list[dict]) -> str:
    """perf/models.py's rows: samples/s per model, variant and mode, peak and saved memory."""
    if not rows:
        return "(models.csv not written)"
    value = {(r["model"], r["variant"], r["mode"], r["metric"]): r["value"] for r in rows}
    timings = sorted({r["timing"] for r in rows if r["unit"] != "MiB"})
    lines = [f"Timings: {'; '.join(timings) or 'none'}; {rows[0]['dtype']}, {rows[0]['layout']}, batch {rows[0]['batch']}, "
             f"{rows[0]['image']}×{rows[0]['image']}.", "",
             "| model | variant | inference samples/s | train samples/s | train peak MiB | saved MiB (meta) |",
             "|---|---|---|---|---|---|"]
    for model, variant in dict.fromkeys((r["model"], r["variant"]) for r in rows):
        cells = [value.get((model, variant, mode, metric), "-") for mode, metric in (
            ("inference", "samples_per_s"), ("train", "samples_per_s"), ("train", "peak_memory_mib"),
            ("train", "saved_activations_mib"))]
        lines.append(f"| {model} | {variant} | " + " | ".join(_short(c) for c in cells) + " |")
    return "\n".join(lines)


def _short(cell: str) -> str:
    try:
        return f"{float(cell):.4g}"
    except ValueError:
        return cell


def l2_section(rows: list[dict]) -> str:
    """perf/l2_chunk.py's rows: the forward with the second read of x from L2 off and on."""
    if not rows:
        return "(l2_chunk.csv not written)"
    lines = [f"Timings: {rows[0]['timing']}.", "",
             "| block | x MiB | L2 fraction | samples / launch | CUDA graph | ms | GB/s | × off | DRAM read / write MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        dram = f"{r['dram_read_mib']} / {r['dram_write_mib']}" if r["dram_read_mib"] else r["dram_note"]
        lines.append(f"| {r['block']} | {r['x_mib']} | {r['l2_fraction']} | {r['samples_per_launch']} | {r['cuda_graph']} | "
                     f"{r['ms']} | {r['gbs']} | {r['speedup_vs_off']} | {dram} |")
    return "\n".join(lines)


def write_summary(folder: Path, stages: list[dict]) -> str:
    """Write ``folder/summary.md`` (see the module docstring) and return its text."""
    env = json.loads(_read(folder, "env.json") or "null")
    sweep = json.loads(_read(folder, "sweep.json") or "null")
    kernels = _csv(folder, "kernels.csv")
    gpu = env["device"]["name"] if env else folder.name
    text = "\n".join([
        f"# perf/gpu_check.py on {gpu}", "", "## Machine", "", *_machine(env), "", "## Stages", "", *_stages(stages), "",
        "## Tests", "", *_tests(_read(folder, "tests.txt"), next((s for s in stages if s["name"] == "tests"), None)), "",
        f"## Measured on {gpu}", "", *_sweep(sweep, kernels), "",
        "## Kernels per block", "", kernels_section(kernels, _csv(folder, "blocks.csv")), "",
        "## Whole models (perf/models.py)", "", models_section(_csv(folder, "models.csv")), "",
        "## The second read of x from L2 (TRITATTN_L2_CHUNK)", "", l2_section(_csv(folder, "l2_chunk.csv")), "",
    ])
    (folder / "summary.md").write_text(text)
    return text
