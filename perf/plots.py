"""The sweep's and perf/models.py's results as PNG plots (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from report import BASELINES  # noqa: E402

IMPL_ORDER = ("tritattn", *BASELINES)


def _groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Rows with a timing, by (dtype, layout)."""
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["ms"]:
            out.setdefault((r["dtype"], r["layout"]), []).append(r)
    return out


def _shape_label(r: dict) -> str:
    return f"{r['block']} B{r['batch']}"


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(rows: list[dict], copy_gbs: float, out_dir: Path, note: str) -> list[Path]:
    """Per dtype and layout: achieved GB/s (minimum bytes / time, log scale) per shape, one line
    per implementation, a panel per pass and CUDA-graph mode; the dashed line is the copy bandwidth."""
    paths = []
    for (dtype, layout), group in _groups(rows).items():
        panels = sorted({(r["pass"], r["cuda_graph"]) for r in group})
        fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 0.3 * len(group) / len(panels)), 3.6 * len(panels)), squeeze=False)
        for ax, (p, g) in zip(axes[:, 0], panels):
            sel = [r for r in group if r["pass"] == p and r["cuda_graph"] == g]
            labels = list(dict.fromkeys(_shape_label(r) for r in sel))
            for impl in IMPL_ORDER:
                pts = {_shape_label(r): r["gbps"] for r in sel if r["impl"] == impl}
                if pts:
                    xs = [i for i, lab in enumerate(labels) if lab in pts]
                    ax.plot(xs, [pts[labels[i]] for i in xs], marker="o", label=impl)
            ax.axhline(copy_gbs, color="grey", linestyle="--", label="copy bandwidth")
            ax.set_yscale("log")
            ax.set_xticks(range(len(labels)), labels, rotation=70, ha="right", fontsize=7)
            ax.set_ylabel("GB/s (minimum bytes)")
            ax.set_title(f"{p}, {dtype}, {layout}{', CUDA graph' if g else ''} — {note}", fontsize=9)
            ax.legend(fontsize=7)
        paths.append(_save(fig, out_dir / f"throughput_{dtype}_{layout}.png"))
    return paths


def speedups(rows: list[dict], out_dir: Path, note: str) -> list[Path]:
    """Per dtype and layout: tritattn's speed-up over each baseline per shape (bars, log scale)."""
    paths = []
    for (dtype, layout), group in _groups(rows).items():
        tri = [r for r in group if r["impl"] == "tritattn"]
        panels = sorted({(r["pass"], r["cuda_graph"]) for r in tri})
        if not panels:
            continue
        fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 0.35 * len(tri) / max(1, len(panels))), 3.6 * len(panels)), squeeze=False)
        for ax, (p, g) in zip(axes[:, 0], panels):
            sel = [r for r in tri if r["pass"] == p and r["cuda_graph"] == g]
            width = 0.8 / len(BASELINES)
            for j, base in enumerate(BASELINES):
                vals = [r[f"speedup_vs_{base}"] or 0.0 for r in sel]
                if any(vals):
                    ax.bar([i + j * width for i in range(len(sel))], vals, width, label=f"vs {base}")
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_yscale("log")
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sel))], [_shape_label(r) for r in sel], rotation=70, ha="right", fontsize=7)
            ax.set_ylabel("speed-up (×)")
            ax.set_title(f"tritattn speed-up, {p}, {dtype}, {layout}{', CUDA graph' if g else ''} — {note}", fontsize=9)
            ax.legend(fontsize=7)
        paths.append(_save(fig, out_dir / f"speedup_{dtype}_{layout}.png"))
    return paths


ESTIMATE_STYLES = {"tritattn": "C0", "tritattn-per-op": "C2", "eager": "C1"}
ESTIMATE_PASSES = {"inference": "-", "step": "--"}


def _estimate_panels(axes: list[plt.Axes], estimates: list[dict], gpu: str) -> None:
    """One panel per block: estimated µs (from the model, not measured) against B, log-log; a line
    per path (colour) and pass (solid: inference, dashed: training step)."""
    blocks = list(dict.fromkeys(r["block"] for r in estimates))
    for ax, block in zip(axes, blocks):
        for path, colour in ESTIMATE_STYLES.items():
            for pass_, style in ESTIMATE_PASSES.items():
                pts = [(r["batch"], r["us"]) for r in estimates
                       if r["block"] == block and r["path"] == path and r["pass"] == pass_ and r["gpu"] == gpu and r["us"]]
                if pts:
                    ax.plot(*zip(*pts), style, color=colour, marker="o", markersize=3, label=f"{path} {pass_}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(block, fontsize=8)
        ax.set_xlabel("batch", fontsize=7)
        ax.set_ylabel(f"µs on {gpu} (estimate, model)", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[len(blocks):]:
        ax.axis("off")
    if blocks:
        axes[0].legend(fontsize=6)


def _estimate_grid(fig: plt.Figure, grid, first_row: int, n: int, cols: int) -> list[plt.Axes]:
    return [fig.add_subplot(grid[first_row + i // cols, i % cols]) for i in range((n + cols - 1) // cols * cols)]


def census(blocks: list[dict], out_dir: Path, estimates: list[dict] | None = None, gpu: str = "H100") -> Path:
    """Device-independent: kernel launches per training step, and activation MiB saved for backward;
    with ``estimates`` (perf/critical_path.py), a panel per census block below: the estimated µs
    of tritattn's path, the per-op path and eager against B (an estimate from the model)."""
    labels = [b["block"] for b in blocks]
    xs = range(len(blocks))
    cols = 4
    n_est = len({r["block"] for r in estimates or []})
    est_rows = (n_est + cols - 1) // cols
    fig = plt.figure(figsize=(max(10, 0.3 * len(blocks)), 7 + 3 * est_rows))
    grid = fig.add_gridspec(2 + est_rows, cols, height_ratios=[3.5, 3.5] + [3] * est_rows)
    ax1, ax2 = fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, :])
    for j, impl in enumerate(("tritattn", "eager")):
        launches = [b[f"launches_fwd_{impl}"] + b[f"launches_bwd_{impl}"] for b in blocks]
        ax1.bar([x + 0.4 * j for x in xs], launches, 0.4, label=impl)
        ax2.bar([x + 0.4 * j for x in xs], [b[f"saved_bytes_{impl}"] / 2**20 for b in blocks], 0.4, label=impl)
    batch = blocks[0]["batch"] if blocks else "?"
    ax1.set_ylabel("kernel launches (fwd + bwd)")
    ax2.set_ylabel(f"MiB saved for backward (B={batch})")
    for ax in (ax1, ax2):
        ax.set_xticks([x + 0.2 for x in xs], labels, rotation=70, ha="right", fontsize=7)
        ax.legend(fontsize=7)
    ax1.set_title("Device-independent: launches per training step and activation memory kept", fontsize=9)
    if n_est:
        _estimate_panels(_estimate_grid(fig, grid, 2, n_est, cols), estimates, gpu)
    return _save(fig, out_dir / "census.png")


def estimates(rows: list[dict], path: Path, gpu: str = "H100") -> Path:
    """perf/census.py: the estimated µs per census block against B (an estimate from the model)."""
    cols = 4
    n = len({r["block"] for r in rows})
    fig = plt.figure(figsize=(14, 3 * max(1, (n + cols - 1) // cols)))
    grid = fig.add_gridspec(max(1, (n + cols - 1) // cols), cols)
    _estimate_panels(_estimate_grid(fig, grid, 0, n, cols), rows, gpu)
    fig.suptitle(f"Estimated µs per block on an {gpu} — estimate (model), not a measurement", fontsize=10)
    return _save(fig, path)


def models(rows: list[dict], out_dir: Path, note: str) -> list[Path]:
    """perf/models.py: per mode, samples/s per model, a bar per variant (p20–p80 as error bars);
    and the training memory: peak allocated (GPU) and saved for backward (meta device)."""
    paths = []
    value = {(r["model"], r["variant"], r["mode"], r["metric"]): r["value"] for r in rows}
    models_ = list(dict.fromkeys(r["model"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))

    def bars(ax, mode: str, metric: str, spread: bool) -> None:
        width = 0.8 / max(1, len(variants))
        for i, v in enumerate(variants):
            xs = [j + i * width for j in range(len(models_))]
            ys = [value.get((m, v, mode, metric)) or 0.0 for m in models_]
            err = None
            if spread:
                lo = [y - (value.get((m, v, mode, metric + "_p20")) or y) for m, y in zip(models_, ys)]
                hi = [(value.get((m, v, mode, metric + "_p80")) or y) - y for m, y in zip(models_, ys)]
                err = [lo, hi]
            ax.bar(xs, ys, width, yerr=err, label=v)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(models_))], models_, rotation=30, ha="right", fontsize=8)
        ax.legend(fontsize=8)

    for mode in dict.fromkeys(r["mode"] for r in rows if r["metric"] == "samples_per_s"):
        fig, ax = plt.subplots(figsize=(10, 4.5))
        bars(ax, mode, "samples_per_s", spread=True)
        ax.set_ylabel("samples/s (median; p20–p80)")
        ax.set_title(f"{mode}" + (f" — {note}" if note else ""), fontsize=10)
        paths.append(_save(fig, out_dir / f"models_{mode}.png"))
    metrics = [m for m in ("peak_memory_mib", "saved_activations_mib") if any(r["metric"] == m for r in rows)]
    if metrics:
        fig, axes = plt.subplots(1, len(metrics), figsize=(7 * len(metrics), 4.5), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            bars(ax, "train", metric, spread=False)
            ax.set_ylabel("MiB")
            ax.set_title("training: " + ("peak GPU memory" if metric == "peak_memory_mib"
                                         else "activations saved for backward (meta device)"), fontsize=10)
        paths.append(_save(fig, out_dir / "models_memory.png"))
    return paths
