"""Whole models, the way timm users measure them: samples/s of inference and of a training step,
and memory, for eager, tritattn (``tritattn.convert``), torch.compile, and torch.compile of the
converted model.

    python perf/models.py                   # GPU: 12 models, bf16 autocast, channels_last, batch 128
    python perf/models.py --models efficientnet_b0,regnety_016 --dtype fp32 --layout nchw --batch-size 64
    python perf/models.py --help

Models: timm seresnet50, ecaresnet50d, efficientnet_b0, mobilenetv3_large_100, regnety_016, a CBAM
ResNet-50 (timm ``resnet50`` with ``block_args=dict(attn_layer="cbam")``), resnest50d, skresnet50,
gcresnet50t, legacy_seresnet50, torchvision efficientnet_b0 and regnet_y_400mf, with random weights. Modes: ``inference`` (eval, no autograd)
and ``train`` (forward, cross-entropy on random labels, backward, an SGD step with momentum).
Each (model, variant, mode) is warmed up (compiles; tunes, inside ``tuning.benchmarking()``) and
then timed step by step (CUDA events on a GPU): samples/s at the median step and at its p20 / p80,
and the peak memory allocated during the timed steps. Device-independent: the activation bytes a training forward saves for
backward (``torch.autograd.graph.saved_tensors_hooks``, unique storages), counted on the "meta"
device at full size (batch 32 at 224×224 unless set), for eager and tritattn.

Output folder (``--out``, default perf/out/models/): ``models.csv`` (one long table: model,
variant, mode, metric, value, unit, what the timing is, device, versions, date), ``models.json``
(the same with the environment, the convert reports' summaries and what was skipped),
``models_<mode>.png`` and ``models_memory.png``; the table is printed at the end.

Work runs in priority order — the saved-activation counts, eager and tritattn of every model,
then the compiled variants — and once ``--budget-min`` minutes have passed the rest is skipped
and listed. Without a GPU the script says so, runs two small models at 32×32, batch 2, eager and
tritattn (the kernels through the Triton interpreter; torch.compile off: its CPU compile would
take the whole budget), in a minute or two, and labels every timing a CPU timing: it checks the
script, not GPU performance. The saved-activation figures are the same on every machine.
"""
from __future__ import annotations

import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: the kernels run on the CPU

import argparse  # noqa: E402
import datetime  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

import bench  # noqa: E402
import plots  # noqa: E402
import report  # noqa: E402
from census import saved_activations  # noqa: E402
from peer_packages import timm, torchvision  # noqa: E402

import tritattn  # noqa: E402
from tritattn import tuning  # noqa: E402

#: model name → builder (random weights); "tv_" names are torchvision's
MODELS: dict[str, Callable[[], nn.Module]] = {
    "seresnet50": lambda: timm.create_model("seresnet50"),
    "ecaresnet50d": lambda: timm.create_model("ecaresnet50d"),
    "efficientnet_b0": lambda: timm.create_model("efficientnet_b0"),
    "mobilenetv3_large_100": lambda: timm.create_model("mobilenetv3_large_100"),
    "regnety_016": lambda: timm.create_model("regnety_016"),
    "cbam_resnet50": lambda: timm.create_model("resnet50", block_args=dict(attn_layer="cbam")),
    "resnest50d": lambda: timm.create_model("resnest50d"),
    "skresnet50": lambda: timm.create_model("skresnet50"),
    "gcresnet50t": lambda: timm.create_model("gcresnet50t"),
    "legacy_seresnet50": lambda: timm.create_model("legacy_seresnet50"),
    "tv_efficientnet_b0": lambda: torchvision.models.efficientnet_b0(),
    "tv_regnet_y_400mf": lambda: torchvision.models.regnet_y_400mf(),
}
VARIANTS = ("eager", "tritattn", "compile", "compile+tritattn")
MODES = ("inference", "train")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
NUM_CLASSES = 1000
DEFAULT_OUT = Path(__file__).parent / "out" / "models"

#: defaults by machine (an option given replaces its default)
PRESETS = {
    "gpu": dict(models=list(MODELS), variants=list(VARIANTS), batch_size=128, image_size=224, warmup=5, steps=20,
                budget_min=5.0),
    "cpu": dict(models=["efficientnet_b0", "mobilenetv3_large_100"], variants=["eager", "tritattn"], batch_size=2,
                image_size=32, warmup=1, steps=3, budget_min=3.0),
}


@dataclass(frozen=True)
class Settings:
    """What every timed step shares."""

    batch: int
    image: int
    dtype: str
    layout: str
    warmup: int
    steps: int


def build(name: str, variant: str, device: torch.device, layout: str) -> tuple[nn.Module, str]:
    """The model as ``variant`` runs it, on ``device`` in float32 parameters (autocast does the
    rest), and the convert report's summary line ("" for eager / compile)."""
    model = MODELS[name]().to(device)
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    summary = ""
    if "tritattn" in variant:
        summary = tritattn.convert(model).summary()
    if variant.startswith("compile"):
        model = torch.compile(model)
    return model, summary


def step_fn(model: nn.Module, mode: str, s: Settings, device: torch.device) -> Callable[[], None]:
    """One inference forward, or one training step (forward, loss, backward, SGD step)."""
    x = torch.randn(s.batch, 3, s.image, s.image, device=device)
    if s.layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=DTYPES[s.dtype], enabled=s.dtype != "fp32")
    if mode == "inference":
        model.eval()

        def infer() -> None:
            with torch.no_grad(), autocast:
                model(x)
        return infer
    model.train()
    labels = torch.randint(0, NUM_CLASSES, (s.batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
    return train


def time_steps(fn: Callable[[], None], device: torch.device, steps: int) -> list[float]:
    """Milliseconds of each of ``steps`` calls (CUDA events on a GPU)."""
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``, linearly interpolated."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def measure(name: str, variant: str, mode: str, s: Settings, device: torch.device) -> tuple[list[dict], str]:
    """The rows of one (model, variant, mode): samples/s (median, p20, p80), step ms, peak memory."""
    model, summary = build(name, variant, device, s.layout)
    fn = step_fn(model, mode, s, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    with tuning.benchmarking():  # the warm-up tunes what no table holds, as tritattn.tune would
        for _ in range(s.warmup):
            fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = time_steps(fn, device, s.steps)
    label = bench.timing_label(device, "tritattn" if "tritattn" in variant else variant)
    rows = [
        dict(metric="samples_per_s", value=s.batch / statistics.median(times) * 1e3, unit="samples/s"),
        dict(metric="samples_per_s_p20", value=s.batch / percentile(times, 0.8) * 1e3, unit="samples/s"),
        dict(metric="samples_per_s_p80", value=s.batch / percentile(times, 0.2) * 1e3, unit="samples/s"),
        dict(metric="step_ms", value=statistics.median(times), unit="ms"),
    ]
    if device.type == "cuda":
        rows.append(dict(metric="peak_memory_mib", value=torch.cuda.max_memory_allocated(device) / 2**20, unit="MiB"))
    for r in rows:
        r.update(model=name, variant=variant, mode=mode, timing=label if r["unit"] != "MiB" else "GPU memory")
    del model, fn
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows, summary


def saved_activation_rows(name: str, batch: int, image: int) -> list[dict]:
    """Activation bytes a training forward saves for backward, eager and tritattn, on the meta device."""
    x = torch.empty(batch, 3, image, image, device="meta")
    try:
        with torch.device("meta"):
            model = MODELS[name]()
    except (NotImplementedError, RuntimeError):  # torchvision's RegNet computes its widths with tensors
        model = MODELS[name]().to("meta")
    rows = []
    for variant in ("eager", "tritattn"):
        if variant == "tritattn":
            tritattn.convert(model)
        model.train()
        with saved_activations(model) as storages:
            model(x)
        rows.append(dict(model=name, variant=variant, mode="train", metric="saved_activations_mib",
                         value=sum(storages.values()) / 2**20, unit="MiB",
                         timing=f"device-independent (meta device, batch {batch}, {image}×{image}, fp32)"))
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    models_help = ", ".join(MODELS)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=lambda t: t.split(","), help=f"comma list from {models_help}")
    p.add_argument("--variants", type=lambda t: t.split(","), help=f"comma list from {', '.join(VARIANTS)}")
    p.add_argument("--modes", type=lambda t: t.split(","), default=list(MODES), help="comma list from inference, train")
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16", help="autocast dtype, or fp32 (default bf16)")
    p.add_argument("--layout", choices=["channels_last", "nchw"], default="channels_last")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--warmup", type=int, help="untimed steps first (compiles, tunes)")
    p.add_argument("--steps", type=int, help="timed steps")
    p.add_argument("--budget-min", type=float, help="start no new measurement after this many minutes")
    p.add_argument("--memory-batch", type=int, default=32, help="batch of the saved-activation counts (default 32)")
    p.add_argument("--memory-image", type=int, default=224, help="image size of the saved-activation counts (default 224)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    for name, value in PRESETS["gpu" if torch.cuda.is_available() else "cpu"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for what, chosen, allowed in (("model", args.models, MODELS), ("variant", args.variants, VARIANTS),
                                  ("mode", args.modes, MODES)):
        bad = [c for c in chosen if c not in allowed]
        if bad:
            p.error(f"unknown {what} {', '.join(bad)}: expected a comma list from {', '.join(allowed)}")
    return args


def work_items(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(model, variant, mode) in priority order: eager and tritattn everywhere, then compile."""
    first = [v for v in args.variants if not v.startswith("compile")]
    later = [v for v in args.variants if v.startswith("compile")]
    return [(m, v, mode) for variants in (first, later) for m in args.models for v in variants for mode in args.modes]


def summary_table(rows: list[dict]) -> str:
    """Per model and variant: samples/s in each mode, × eager, peak and saved memory."""
    value = {(r["model"], r["variant"], r["mode"], r["metric"]): r["value"] for r in rows}
    models = list(dict.fromkeys(r["model"] for r in rows))
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    table = []
    for m in models:
        for v in variants:
            cells = [m, v]
            for mode in MODES:
                sps, base = value.get((m, v, mode, "samples_per_s")), value.get((m, "eager", mode, "samples_per_s"))
                cells += [sps, sps / base if sps and base else None]
            cells += [value.get((m, v, "train", "peak_memory_mib")), value.get((m, v, "train", "saved_activations_mib"))]
            table.append(cells)
    return report.format_table(["model", "variant", "inference samples/s", "× eager", "train samples/s", "× eager",
                                "train peak MiB", "saved MiB (meta)"], table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    # the interpreter evaluates exp in numpy: exp(-h) → inf for a very negative h is the right limit
    # of sigmoid and SiLU (1 / (1 + inf) = 0), not an error
    warnings.filterwarnings("ignore", "overflow encountered in exp", RuntimeWarning)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no GPU)"
    if device.type != "cuda":
        print("No GPU: tritattn's kernels run in the Triton interpreter on the CPU, on small models at small "
              "size. Every timing below is a CPU timing, not GPU performance; the saved-activation counts "
              "(meta device, full size) are the same on every machine.", flush=True)
    s = Settings(args.batch_size, args.image_size, args.dtype, args.layout, args.warmup, args.steps)
    common = dict(device=gpu, torch=torch.__version__, triton=triton.__version__, tritattn=tritattn.__version__,
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  batch=s.batch, image=s.image, dtype=s.dtype, layout=s.layout)
    rows: list[dict] = []
    for name in tqdm(args.models, desc="saved activations (meta)", unit="model"):
        rows += saved_activation_rows(name, args.memory_batch, args.memory_image)
    items, skipped, summaries, errors = work_items(args), [], {}, {}
    start = time.monotonic()
    for name, variant, mode in tqdm(items, desc="timing", unit="run"):
        if time.monotonic() - start > 60 * args.budget_min:
            skipped.append(f"{name} {variant} {mode}")
            continue
        try:
            new, summary = measure(name, variant, mode, s, device)
        except Exception as e:  # a failing variant is reported; the run goes on
            errors[f"{name} {variant} {mode}"] = f"{type(e).__name__}: {e}"
            continue
        rows += new
        if summary:
            summaries[name] = summary
    for r in rows:
        r.update(common)
    columns = ["model", "variant", "mode", "metric", "value", "unit", "timing", "device", "batch", "image", "dtype",
               "layout", "torch", "triton", "tritattn", "date"]
    report.write_csv(args.out / "models.csv", rows, columns)
    report.write_json(args.out / "models.json", dict(settings=vars(args), environment=common, rows=rows,
                                                      convert_reports=summaries, skipped=skipped, errors=errors))
    note = "" if device.type == "cuda" else "CPU timing (Triton interpreter), not GPU performance"
    pngs = plots.models(rows, args.out, note)
    labels = sorted({r["timing"] for r in rows if r["unit"] != "MiB"})
    print(f"{gpu}, {s.dtype}, {s.layout}, batch {s.batch}, {s.image}×{s.image}; timings: {'; '.join(labels)}")
    print(summary_table(rows))
    for name, summary in summaries.items():
        print(f"{name}: {summary}")
    if skipped:
        print(f"skipped after the {args.budget_min:g}-minute budget: {', '.join(skipped)}")
    for what, error in errors.items():
        print(f"failed: {what}: {error}")
    print(f"wrote {args.out / 'models.csv'}, {args.out / 'models.json'}, " + ", ".join(str(p) for p in pngs))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
