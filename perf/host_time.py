"""Host time per block call: the CPU work of one converted block against eager's same block.

    python perf/host_time.py                  # the table (~5 minutes on one free CPU core)
    python perf/host_time.py --blocks SE --calls 100   # a subset, fewer calls per figure

At batch 1–8 a block's GPU work takes a few µs, so the CPU time of a call — Python, dispatch,
argument checks, allocation, problem keys, config lookups, kernel launches — decides. This tool
times that host work for the census's representative blocks (SE-ResNet-50 stages 1 and 4,
EfficientNet-B0's first and last SE, MobileNetV3's largest, ECA-ResNet stage 4, eSE 1024@14,
CBAM stage 1, ResNeSt and SKNet stage 1, GCNet stage 1) at B = 1 and 8, for inference
(``torch.no_grad``, eval mode) and the training step (train mode, forward, then
``torch.autograd.grad`` of the input and every parameter). Each call is timed alone, by the
calling thread's CPU time (``time.thread_time_ns``) on a CPU — other processes on a shared machine
do not add to it, and a CPU backward runs on the calling thread — by wall time on a GPU; after a
warm-up, tritattn and eager are timed in turn over 5 interleaved rounds, and each figure is the
smallest of its rounds' medians (:func:`interleaved_us`).

How, without a GPU (the table of :func:`table`, "host µs"):

- **tritattn**: the converted block on CPU tensors, through the Triton path (the interpreter
  backend, ``TRITON_INTERPRET=1``), with every Triton launch stubbed (``Tuner._run`` does
  nothing) and the tuner on its GPU branch (:func:`stubbed_launches`: no tuned table, so each
  problem runs the default config, as on a GPU the tables do not cover): everything up to the
  launch runs — module forward, checks, custom-op dispatch, autograd, allocations, problem keys,
  config lookup, launch arguments; not the Triton launcher itself (``JITFunction.run``: binding
  the arguments, the specialisation key, ``cuLaunchKernel``, a few µs per launch on a GPU) — the
  column ``launches`` says how many a call makes.
- **eager**: the reference block (timm's / torchvision's math, :mod:`tritattn.reference`) on CPU
  tensors. Its aten ops cannot be stubbed, and on the "meta" device, which skips the arithmetic,
  elementwise ops and reductions run Python decompositions (≈ 100 µs each here, 10–20× a CPU
  op's dispatch), so meta would overstate eager's host time many times over. So both run at the
  **proxy shape**: the block with the same module options and at most 16 channels on a 2×2 map
  (:meth:`Block.scaled`), where eager's arithmetic is well under a µs per op and its CPU time is
  its dispatch; tritattn's host work does not depend on the shape (the same calls, cached keys)
  — but its path does: the proxy shape's estimate can choose another path than the block's own
  shape (SE-ResNet-50 stage 4's inference: split at 2048@7×7, one-launch at 16@2×2), so the
  proxy runs with the path its census shape chooses forced (:func:`census_shape_paths`: one
  call on the meta device, shapes only; the column ``path``).
  CPU dispatch of an aten op does not include a CUDA launch (``cudaLaunchKernel``, 2–4 µs), so
  the eager figure is a lower bound of eager's host time on a GPU.
- **tritattn at full shape** (``tritattn_full_us``): the converted block at the census shape,
  launches stubbed — the path (and problem keys) a GPU would take at that shape; given for the
  blocks whose torch ops (outside the kernels) touch only [B, C] vectors, else None: ResNeSt's and
  SKNet's convolutions and GCNet's ``x + context`` would compute over the whole map on the CPU.
  Those [B, C] ops still compute here — the split path's MLP GEMMs (tritattn/excitation_mlp.py),
  several hundred µs at SE 2048@7×7 on a CPU core — so where the full shape takes a path with
  torch GEMMs this column is an upper bound, not host time.

On a GPU (``torch.cuda.is_available()``) every figure is the real host time: CUDA tensors at the
full shape, the launches real, the device synchronised before each call and outside its timing
window, so the queue is empty and every launch returns at once.

What CUDA graphs (``torch.cuda.graph``) and ``torch.compile(mode="reduce-overhead")`` remove on
top: on replay, **all** of this host work — the Python forward, checks, dispatch, allocation,
config lookup and every launch — for tritattn and eager alike; a replay costs one
``cudaGraphLaunch`` (a few µs for the whole captured region), and the kernels run as recorded.
This is a statement about CUDA graphs, not a measurement of this tool.
"""
from __future__ import annotations

import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: CPU tensors take the Triton path

import argparse  # noqa: E402
import contextlib  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any, Callable, Iterator  # noqa: E402

from torch import nn  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cases import build, build_eager  # noqa: E402
from model_shapes import MODELS, Block  # noqa: E402
from tritattn import backend_for, paths, tuning  # noqa: E402

class _ChannelsOnly(Block):
    """A block whose module takes only ``channels`` (eSE: model_shapes.py lists no VoVNet)."""

    def constructor_kwargs(self) -> dict[str, Any]:
        return {"channels": self.C}


#: the census's representative blocks: (label, block)
BLOCKS: list[tuple[str, Block]] = [
    ("SE-ResNet-50 s1", MODELS["seresnet50"][0]),
    ("SE-ResNet-50 s4", MODELS["seresnet50"][3]),
    ("EfficientNet-B0 first SE", MODELS["efficientnet_b0"][0]),
    ("EfficientNet-B0 last SE", MODELS["efficientnet_b0"][-1]),
    ("MobileNetV3 largest SE", MODELS["mobilenetv3_large"][-1]),
    ("ECA-ResNet s4", MODELS["ecaresnet50d"][3]),
    ("eSE 1024@14", _ChannelsOnly("ese_vovnet39b", "ese1024@14", "EffectiveSEModule", 1024, 14, 14)),
    ("CBAM s1", MODELS["cbam_resnet50"][0]),
    ("ResNeSt s1", MODELS["resnest50d"][0]),
    ("SKNet s1", MODELS["skresnet50"][0]),
    ("GCNet s1", MODELS["gcresnet50t"][0]),
]

BATCHES = (1, 8)
PASSES = ("fwd", "fwd+bwd")
#: the proxy shape: at most this many channels, this side
PROXY_CHANNELS, PROXY_SIDE = 16, 2
#: modules whose torch ops (outside the kernels) run over the whole feature map
FULL_MAP_TORCH_OPS = {"SplitAttn": "its 3×3 conv", "SelectiveKernel": "its branch convs", "GlobalContext": "x + context"}
WARMUP_CALLS, CALLS, ROUNDS = 20, 300, 5


@dataclass
class LaunchCount:
    """Triton launches made while :func:`stubbed_launches` is active."""

    launches: int = 0


@contextlib.contextmanager
def stubbed_launches() -> Iterator[LaunchCount]:
    """Within the scope, a Triton launch through a :class:`~tritattn.tuning.Tuner` does nothing
    but count itself, and the tuner takes its GPU branch for a GPU no table knows (the config
    lookup a GPU makes: the problem key, this process's choice, the tables, the default) instead
    of the interpreter's. This process's tuning decisions are restored on exit."""
    count = LaunchCount()
    saved = {name: getattr(tuning, name) for name in ("skip_reason", "gpu_name", "on_side_stream")}
    saved_run, saved_capturing = tuning.Tuner._run, torch.cuda.is_current_stream_capturing
    decisions, chosen = dict(tuning._decisions), dict(tuning._chosen)

    def run(tuner, cfg, grid, args, constexprs) -> None:
        count.launches += 1

    tuning.skip_reason = lambda device: None
    tuning.gpu_name = lambda device: "host_time stub (no tuned table)"
    tuning.on_side_stream = lambda device: False
    tuning.Tuner._run = run
    torch.cuda.is_current_stream_capturing = lambda: False
    try:
        yield count
    finally:
        for name, value in saved.items():
            setattr(tuning, name, value)
        tuning.Tuner._run, torch.cuda.is_current_stream_capturing = saved_run, saved_capturing
        tuning._decisions.clear(), tuning._decisions.update(decisions)
        tuning._chosen.clear(), tuning._chosen.update(chosen)


def median_us(fn: Callable[[], Any], calls: int, sync: Callable[[], None] | None = None,
              clock: Callable[[], int] = time.thread_time_ns) -> float:
    """Median µs of one ``fn()`` over ``calls`` calls by ``clock``; ``sync`` runs before each call,
    outside its timing window."""
    times = []
    for _ in range(calls):
        if sync is not None:
            sync()
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times) / 1e3


def interleaved_us(fns: dict[str, Callable[[], Any]], calls: int = CALLS, rounds: int = ROUNDS,
                   device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """Host µs of one call of each of ``fns``: after ``WARMUP_CALLS`` calls each, ``rounds``
    rounds that time every function in turn (``calls / rounds`` calls each, their median); the
    smallest median of each. Interleaved so that the functions meet the same machine, and the
    minimum so that another process's burst in one round does not count. On a CPU by this
    thread's CPU time; on a GPU by wall time (autograd runs a CUDA backward on a thread of its
    own), the device synchronised before each call, outside its timing window."""
    sync, clock = (torch.cuda.synchronize, time.perf_counter_ns) if device.type == "cuda" else (None, time.thread_time_ns)
    for fn in fns.values():
        for _ in range(WARMUP_CALLS):
            fn()
    best = {name: math.inf for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], median_us(fn, max(1, calls // rounds), sync, clock))
    return best


def call_fn(module: nn.Module, x: torch.Tensor, pass_: str) -> Callable[[], Any]:
    """One inference forward (eval, no_grad) or one training step (train, forward, grads of x and
    every parameter for a fixed cotangent) of ``module`` on ``x``."""
    if pass_ == "fwd":
        module.eval()

        def forward() -> Any:
            with torch.no_grad():
                return module(x)

        return forward
    module.train()
    x = x.detach().requires_grad_(True)
    params = [p for p in module.parameters() if p.requires_grad]
    with torch.no_grad():
        g = torch.randn_like(module(x))

    def step() -> Any:
        return torch.autograd.grad(module(x), [x, *params], g)

    return step


@contextlib.contextmanager
def recorded_paths() -> Iterator[list[str]]:
    """The paths ``tritattn.paths.choose`` returns within the scope, in call order."""
    chosen: list[str] = []
    original = paths.choose

    def recording(*args: Any, **kwargs: Any) -> str:
        path = original(*args, **kwargs)
        chosen.append(path)
        return path

    paths.choose = recording
    try:
        yield chosen
    finally:
        paths.choose = original


def census_shape_paths(block: Block, batch: int, pass_: str) -> list[str]:
    """The paths the converted ``block`` chooses in one call at its census shape (B = ``batch``):
    shapes only, on the meta device, where a twin takes the path a GPU would (its estimate); []
    where the call chooses none (a block with one path) or cannot run (a training BatchNorm on a
    [1, C, 1, 1] batch)."""
    meta = torch.device("meta")
    try:
        fn = call_fn(_modules(block, meta)[1], torch.empty(batch, block.C, block.H, block.W, device=meta), pass_)
        with recorded_paths() as chosen:  # after call_fn's own forward (the cotangent's shape)
            fn()
    except (ValueError, RuntimeError):
        return []
    return chosen


def _modules(block: Block, device: torch.device) -> tuple[nn.Module, nn.Module]:
    eager = build_eager(block, device, torch.float32)
    return eager, build("tritattn", eager, block)


def measure(label: str, block: Block, batch: int, pass_: str, calls: int = CALLS) -> dict[str, Any]:
    """One row of :func:`table`."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    row: dict[str, Any] = {"block": label, "id": block.id, "module": block.module, "batch": batch, "pass": pass_,
                           "tritattn_us": None, "eager_us": None, "ratio": None, "tritattn_full_us": None,
                           "launches": None, "error": None}
    on_gpu = device.type == "cuda"
    timed = block if on_gpu else block.scaled(PROXY_CHANNELS, PROXY_SIDE)
    row["shape"] = f"{timed.C}@{timed.H}×{timed.W}"
    row["how"] = ("GPU: real host time, launches included" if on_gpu else
                  "CPU: Triton launches stubbed, both at the proxy shape, on the census shape's path")
    # the proxy shape's own estimate could choose another path than the census shape's: take that one
    taken = census_shape_paths(block, batch, pass_) if not on_gpu else []
    force = taken[0] if len(set(taken)) == 1 else None
    row["path"] = force or ("mixed: " + ", ".join(taken) if taken else None)
    with (stubbed_launches() if not on_gpu else contextlib.nullcontext()) as count, paths.forced(force):
        try:
            eager, fast = _modules(timed, device)
            x = torch.randn(batch, timed.C, timed.H, timed.W, device=device)
            fns = {"tritattn": call_fn(fast, x, pass_), "eager": call_fn(eager, x, pass_)}
            if not on_gpu and block.module not in FULL_MAP_TORCH_OPS:
                fns["full"] = call_fn(_modules(block, device)[1], torch.randn(batch, block.C, block.H, block.W), pass_)
            for fn in fns.values():
                fn()  # first calls: one-time warnings, path decisions
        except (ValueError, RuntimeError) as e:  # e.g. a training BatchNorm on [1, C, 1, 1]: eager refuses it too
            row["error"] = f"{type(e).__name__}: {e}"
            return row
        if count is not None:
            before = count.launches
            fns["tritattn"]()
            row["launches"] = count.launches - before
        us = interleaved_us(fns, calls, device=device)
    row.update(tritattn_us=us["tritattn"], eager_us=us["eager"], ratio=us["tritattn"] / us["eager"],
               tritattn_full_us=us["tritattn"] if on_gpu else us.get("full"))
    return row


def table(batches: tuple[int, ...] = BATCHES, passes: tuple[str, ...] = PASSES, calls: int = CALLS,
          blocks: list[tuple[str, Block]] | None = None) -> list[dict[str, Any]]:
    """Host µs per block call, tritattn against eager: one dict per (block, batch, pass) with
    ``block``, ``id``, ``module``, ``batch``, ``pass``, ``tritattn_us``, ``eager_us``, ``ratio``
    (tritattn / eager), ``tritattn_full_us`` (at the census shape; None where it cannot be taken
    on a CPU), ``launches`` (Triton launches per call; None on a GPU), ``shape``, ``how`` and
    ``error`` (None, or why the block cannot run: e.g. a training BatchNorm on a [1, C, 1, 1] batch),
    ``path`` (on a CPU: the path the census shape chooses, :func:`census_shape_paths`, timed at
    the proxy shape; None where the block chooses none).
    Raises RuntimeError on a CPU without Triton's interpreter (the twins would run eager)."""
    if not torch.cuda.is_available() and backend_for(torch.empty(0)) != "triton-interpreter":
        raise RuntimeError("host_time on a CPU needs Triton's interpreter: set TRITON_INTERPRET=1 before triton is "
                           "imported (python perf/host_time.py does)")
    rows = []
    with torch.random.fork_rng():
        for label, block in blocks or BLOCKS:
            for pass_ in passes:
                for batch in batches:
                    rows.append(measure(label, block, batch, pass_, calls))
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`table` as a text table, with what was measured and what CUDA graphs remove."""
    def us(v: float | None) -> str:
        return "—" if v is None else f"{v:.1f}"

    lines = [f"{'block':26} {'pass':8} {'B':>2} {'tritattn µs':>11} {'eager µs':>9} {'ratio':>6} {'full-shape µs':>13} "
             f"{'launches':>8}  path"]
    for r in rows:
        if r["error"] is not None:
            lines.append(f"{r['block']:26} {r['pass']:8} {r['batch']:>2} not run: {r['error'][:80]}")
            continue
        lines.append(f"{r['block']:26} {r['pass']:8} {r['batch']:>2} {us(r['tritattn_us']):>11} {us(r['eager_us']):>9} "
                     f"{r['ratio']:>6.2f} {us(r['tritattn_full_us']):>13} {r['launches'] if r['launches'] is not None else '—':>8}"
                     f"  {r['path'] or '—'}")
    if rows:
        lines.append(f"Host µs per call, median ({rows[0]['how']}; proxy shape {PROXY_CHANNELS} channels, "
                     f"{PROXY_SIDE}×{PROXY_SIDE}; full-shape: tritattn at the census shape, launches stubbed; "
                     f"path: the one the census shape chooses, forced at the proxy shape; '—': the block "
                     f"chooses none).")
    lines.append("CUDA graphs / torch.compile(mode='reduce-overhead') remove all of this host work on replay "
                 "(one graph launch per captured region) — a statement, not measured here.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=CALLS, help="timed calls per median (default %(default)s)")
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--blocks", nargs="+", help="labels (substrings) of the blocks to time; default: all")
    args = parser.parse_args(argv)
    blocks = [(l, b) for l, b in BLOCKS if not args.blocks or any(s in l for s in args.blocks)]
    torch.set_num_threads(1)
    print(format_table(table(tuple(args.batches), PASSES, args.calls, blocks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
