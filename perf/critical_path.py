"""The critical-path census of issue 23 §1: every launch of a block's path, its programs, the
median and the longest program's memory instructions, its bytes — and a paper estimate of the
block's time on an H100 and an H200 from tritattn/cost_model.py (an **estimate from a model,
never a measurement**).

    python perf/census.py                 # all census blocks (minutes on a CPU)
    python perf/critical_path.py --json F # the counts as JSON (what a GPU run's subprocess does)

Three paths per block: ``tritattn`` (the twin, block pipelines on), ``tritattn-per-op`` (the
same twin with the pipelines off, perf/cases.py's PerOpPath) and ``eager`` (the reference
module). Two passes: ``inference`` (eval, no autograd) and ``step`` (train-mode forward, then the
backward of a cotangent: the input's and every parameter's gradient).

tritattn's two paths are counted in Triton's interpreter (perf/program_census.py) at full C, H,
W, float32, the kernels' default configs (nothing is tuned in the interpreter), at two small
batches ``COUNT_BATCHES``: the per-program counts depend on the shapes, not the data. Eager's aten
kernels are taken on the "meta" device (perf/census.py's LaunchCensus, with each op's bytes) at
every estimated batch directly.

Estimates at B ∈ ``ESTIMATE_BATCHES``: a counted launch's programs and bytes are extended
affinely in B through the two counts (both are affine in B: per-sample work plus weights); its
median and longest program are the larger batch's, except where they grow with B between the
two counts (the longest: ``cost_model.growth_violations``) — then they too are extended linearly
in B, and the row says so (``extrapolated``). The launch sequence must be the same at both
counts; a path whose launches differ is reported, not extended. Where the twin takes another path
at an estimated batch than at the counted ones (ECA-ResNet stage 4: per-op at B ≤ 8, one-launch
from 32), that path is counted too, forced (``tritattn@one-launch``), and its counts give the
estimate there.

Without the interpreter (a GPU run: ``TRITON_INTERPRET`` unset, the kernels compiled), nothing
can be counted in this process: :func:`count_blocks` runs the count in a subprocess with
``TRITON_INTERPRET=1`` on CPU tensors, and reads its JSON.
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # a count run by itself (the subprocess of a GPU run, or by hand)
    os.environ["TRITON_INTERPRET"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import weakref  # noqa: E402
from dataclasses import asdict, dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

import model_shapes  # noqa: E402
from cases import DTYPES, build, build_eager  # noqa: E402
from bytes_model import op_kernels  # noqa: E402
from census import LaunchCensus  # noqa: E402
from model_shapes import Block  # noqa: E402
from program_census import ProgramCensus, interpreting  # noqa: E402
from tritattn import cost_model, paths  # noqa: E402
from tritattn.cost_model import GPUS, Launch, eager_launch, growth_violations, launch_seconds  # noqa: E402

#: The batches the interpreter counts at (small: the counts do not depend on the data).
COUNT_BATCHES = (2, 4)
#: The batches the model estimates.
ESTIMATE_BATCHES = (1, 8, 32, 128, 256)
PATHS = ("tritattn", "tritattn-per-op", "eager")
PASSES = ("inference", "step")
ESTIMATE_LABEL = "estimate (model)"

#: Effective-SE (VoVNet's eSE: EffectiveSEModule, hard-sigmoid gate) at issue 23's 1024@14×14 — one
#: full C×C excitation on a larger map than timm's ese_vovnet39b has at 224² (768@14, 1024@7).
EFFECTIVE_SE = Block("effective_se", "ese1024@14", "EffectiveSEModule", 1024, 14, 14, 1)

#: The census's blocks (issue 23 §1), by id in perf/model_shapes.py; MobileNetV3's largest is its
#: largest feature map (672@14).
CENSUS_IDS = (
    "seresnet50/s1", "seresnet50/s4", "efficientnet_b0/se32@112", "efficientnet_b0/se1152@7",
    "mobilenetv3_large/se672@14", "regnety_016/s4b", "effective_se/ese1024@14", "ecaresnet50d/s4",
    "cbam_resnet50/s1", "resnest50d/splat64@56", "skresnet50/sk64@56", "gcresnet50t/gc64@56",
)
#: The subset ``python perf/sweep.py`` counts (≈ 50 s of CPU in the interpreter, beside the timings):
#: SE-ResNet-50's stage 4 (the SE pipeline) and the 7×7 stage of the split-attention, selective-kernel
#: and global-context families; the rest (the 56×56 maps above all) in ``python perf/census.py``.
SWEEP_IDS = ("seresnet50/s4", "resnest50d/splat512@7", "skresnet50/sk512@7", "gcresnet50t/gc512@7")


def census_block(block_id: str) -> Block:
    """A census block by id (perf/model_shapes.py's, or :data:`EFFECTIVE_SE`)."""
    if block_id == EFFECTIVE_SE.id:
        return EFFECTIVE_SE
    for b in model_shapes.ALL_BLOCKS:
        if b.id == block_id:
            return b
    raise ValueError(f"{block_id!r} is not a block of perf/model_shapes.py (census blocks: {', '.join(CENSUS_IDS)})")


# --- counting ---------------------------------------------------------------------------------------


def _module(impl: str, block: Block, device: torch.device, dtype: torch.dtype) -> nn.Module:
    return build(impl, build_eager(block, device, dtype), block)


def _output_shape(block: Block, x: torch.Tensor) -> torch.Size:
    """The block's output shape for ``x`` (the reference module on the meta device)."""
    meta = torch.device("meta")
    return build_eager(block, meta, x.dtype).eval()(torch.empty(x.shape, device=meta, dtype=x.dtype)).shape


def _run(block: Block, module: nn.Module, x: torch.Tensor, pass_: str, census: Any) -> None:
    """One pass of ``module`` on ``x`` under ``census`` (the cotangent drawn outside it)."""
    if pass_ == "inference":
        module.eval()
        with torch.no_grad(), census:
            module(x)
        return
    module.train()
    for p in module.parameters():
        p.grad = None  # a first backward assigns the gradients: no accumulation kernel
    x = x.detach().requires_grad_()
    cotangent = torch.ones(_output_shape(block, x), device=x.device, dtype=x.dtype)
    with census:
        module(x).backward(cotangent)


def count_path(block: Block, impl: str, pass_: str, batch: int, dtype: str = "fp32",
               forced: str | None = None) -> list[Launch]:
    """Every launch of one pass of tritattn's ``impl`` on ``block`` at ``batch``, counted in the
    interpreter (CPU tensors); ``forced``: the block's path (tritattn.paths.forced), else its own choice."""
    torch.manual_seed(0)
    module = _module(impl, block, torch.device("cpu"), DTYPES[dtype])
    x = torch.randn(batch, block.C, block.H, block.W, dtype=DTYPES[dtype])
    census = ProgramCensus()
    with paths.forced(forced):
        _run(block, module, x, pass_, census)
    return census.launches()


def _meta_census(block: Block, impl: str, pass_: str, batch: int, dtype: str) -> LaunchCensus:
    meta = torch.device("meta")
    module = _module(impl, block, meta, DTYPES[dtype])
    census = LaunchCensus()
    _run(block, module, torch.empty(batch, block.C, block.H, block.W, device=meta, dtype=DTYPES[dtype]), pass_, census)
    return census


def eager_path(block: Block, pass_: str, batch: int, dtype: str = "fp32") -> list[Launch]:
    """Eager's aten kernels of one pass, on the meta device, each with its bytes."""
    return [eager_launch(name, nbytes) for name, nbytes in _meta_census(block, "eager", pass_, batch, dtype).aten_launches]


def taken_at(block: Block, impl: str, pass_: str, batch: int, dtype: str = "fp32") -> tuple[list[str], str | None]:
    """(the Triton kernels tritattn's ``impl`` launches at ``batch``, on the meta device — the path
    a GPU takes, perf/bytes_model.py's op_kernels: whether the counted path is still the one
    taken —, the one path the block chose there, None where it made no choice or several)."""
    with paths.recording() as keys:
        census = _meta_census(block, impl, pass_, batch, dtype)
    chosen = {decision.path for decision in (paths.decision(*key) for key in keys) if decision is not None}
    kernels = [kernel for op, args in census.tritattn_calls for kernel, _ in op_kernels(op, args)]
    return kernels, chosen.pop() if len(chosen) == 1 else None


@dataclass(frozen=True)
class PathCount:
    """One path of one block in one pass, counted at two batches (eager: launches per estimated batch)."""

    block: str
    impl: str
    pass_: str
    batches: tuple[int, int]
    small: list[Launch]
    large: list[Launch]
    #: the block's path forced for the count: one the twin takes only at some estimated batches
    forced: str | None = None

    @property
    def name(self) -> str:
        """The path's name in the census: ``impl``, or "tritattn@split" for a forced path."""
        return self.impl if self.forced is None else f"{self.impl}@{self.forced}"


def count_block(block: Block, batches: tuple[int, int] = COUNT_BATCHES, dtype: str = "fp32") -> list[PathCount]:
    """tritattn's two paths of ``block`` in both passes, counted at both ``batches``; and, forced
    (:attr:`PathCount.forced`), each path the twin chooses at an estimated batch
    (ESTIMATE_BATCHES) but not at the counted ones, so the estimates there have counts too (the
    per-program counts depend on the shapes, not on the batch)."""
    counts = [PathCount(block.id, impl, p, batches, *(count_path(block, impl, p, b, dtype) for b in batches))
              for impl in PATHS[:2] for p in PASSES]
    for p in PASSES:
        counted = {_chosen_at(block, p, b, dtype) for b in batches}
        later = {_chosen_at(block, p, B, dtype) for B in ESTIMATE_BATCHES} - counted - {None}
        for name in sorted(later):
            counts.append(PathCount(block.id, "tritattn", p, batches,
                                    *(count_path(block, "tritattn", p, b, dtype, forced=name) for b in batches), name))
    return counts


def save_counts(counts: Sequence[PathCount], path: Path) -> None:
    """The counts as JSON (:func:`load_counts` reads them back: estimates can be redone from them)."""
    path.write_text(json.dumps([asdict(c) for c in counts]))


def _chosen_at(block: Block, pass_: str, batch: int, dtype: str) -> str | None:
    """The one path the twin chooses at ``batch`` (:func:`taken_at`), None where it cannot run
    there (a BatchNorm in training over one value per channel, B = 1)."""
    try:
        return taken_at(block, "tritattn", pass_, batch, dtype)[1]
    except ValueError:
        return None


def load_counts(path: Path) -> list[PathCount]:
    return [PathCount(d["block"], d["impl"], d["pass_"], tuple(d["batches"]),
                      [Launch(**x) for x in d["small"]], [Launch(**x) for x in d["large"]], d.get("forced"))
            for d in json.loads(path.read_text())]


class PendingCount:
    """A count running in a subprocess with ``TRITON_INTERPRET=1`` (CPU tensors): the sweep starts
    it first and reads it last, so it runs beside the timings (and beside a GPU's compiled kernels,
    which cannot be counted). A count never read (the caller failed first) is stopped when this
    object goes away, at the latest when Python exits."""

    def __init__(self, block_ids: Sequence[str], batches: tuple[int, int], dtype: str) -> None:
        self._dir = tempfile.TemporaryDirectory()
        self._json, self._log = Path(self._dir.name) / "counts.json", Path(self._dir.name) / "log.txt"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--json", str(self._json), "--blocks", ",".join(block_ids),
               "--batches", ",".join(map(str, batches)), "--dtype", dtype]
        with self._log.open("w") as log:
            # one thread: the count stays on one core, beside the timings it runs next to
            self._process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                             env=os.environ | {"TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"})
        self._stop = weakref.finalize(self, _stop_count, self._process, self._dir)

    def result(self) -> list[PathCount]:
        """Wait for the count; its PathCounts (raises with the subprocess's output if it failed)."""
        try:
            if (code := self._process.wait()) != 0:
                raise RuntimeError(f"the critical-path count failed (exit status {code}):\n{self._log.read_text()[-4000:]}")
            return load_counts(self._json)
        finally:
            self._stop()


def _stop_count(process: subprocess.Popen, folder: tempfile.TemporaryDirectory) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    folder.cleanup()


def count_blocks(block_ids: Sequence[str], batches: tuple[int, int] = COUNT_BATCHES, dtype: str = "fp32",
                 jobs: int = 1) -> list[PathCount]:
    """:func:`count_block` for each block: here when Triton's interpreter is on and ``jobs`` is 1,
    else in ``jobs`` subprocesses with it on, the blocks dealt out among them (a GPU run: the
    compiled kernels cannot be counted)."""
    if jobs <= 1 and interpreting():
        return [c for i in block_ids for c in count_block(census_block(i), batches, dtype)]
    shares = [list(block_ids[j::jobs]) for j in range(max(1, jobs)) if block_ids[j::jobs]]
    pending = [PendingCount(share, batches, dtype) for share in shares]
    counts = [c for p in pending for c in p.result()]
    return sorted(counts, key=lambda c: list(block_ids).index(c.block))


# --- extending to other batches, estimating -------------------------------------------------------


def grows(small: Launch, large: Launch, b_small: int, b_large: int) -> bool:
    """Whether the launch's longest program grows with B between the two counts (cost_model's rule)."""
    return bool(growth_violations([small], [large], b_small, b_large))


def _affine(a: float, b: float, b1: int, b2: int, B: int) -> float:
    return a + (b - a) * (B - b1) / (b2 - b1)


def extend(small: Launch, large: Launch, b1: int, b2: int, B: int) -> tuple[Launch, bool]:
    """The launch at batch ``B`` from its counts at ``b1`` < ``b2`` (see the module docstring), and
    whether its longest program was extended linearly (it grows with B)."""
    growing = grows(small, large, b1, b2)
    longest = _affine(small.longest, large.longest, b1, b2, B) if growing else large.longest
    median = _affine(small.median, large.median, b1, b2, B) if large.median > small.median else large.median
    programs = _affine(small.programs, large.programs, b1, b2, B) if large.programs else 0
    return replace(large, programs=max(1 if large.programs else 0, math.ceil(programs)),
                   median=math.ceil(median), longest=max(math.ceil(longest), math.ceil(median)),
                   bytes=max(0, round(_affine(small.bytes, large.bytes, b1, b2, B)))), growing


def same_launches(small: Sequence[Launch], large: Sequence[Launch]) -> bool:
    return [x.kernel for x in small] == [x.kernel for x in large]


def longest_over_median(launch: Launch) -> bool:
    """§2's first tail check, which does not depend on B: longest > 2 × median + 32 instructions."""
    return launch.longest > cost_model.LONGEST_PER_MEDIAN * launch.median + cost_model.LONGEST_SLACK


#: The batch at which §2 asks a launch moving more than BIG_LAUNCH_BYTES for MIN_PROGRAMS programs.
BIG_LAUNCH_BATCH = 32


def violations(launch: Launch, batch: int) -> list[str]:
    """The §2 targets a (Triton) launch misses at ``batch``: cost_model.tail_violations, and at
    B = 32 a launch moving more than BIG_LAUNCH_BYTES with fewer than MIN_PROGRAMS programs."""
    out = cost_model.tail_violations(launch)
    big = launch.bytes > cost_model.BIG_LAUNCH_BYTES and batch == BIG_LAUNCH_BATCH
    if big and launch.programs < cost_model.MIN_PROGRAMS:
        out.append(f"{launch.kernel}: {launch.bytes / 2**20:.1f} MiB in {launch.programs} programs "
                   f"< {cost_model.MIN_PROGRAMS}")
    return out


def launch_rows(counts: Sequence[PathCount]) -> list[dict]:
    """One row per counted launch: its counts at both batches, whether its longest program grows
    with B, and §2's first tail check (longest ≤ 2 × median + 32, at the larger batch); the checks
    that depend on the bytes are made per estimated batch (:func:`estimate_rows`)."""
    rows = []
    for c in counts:
        b1, b2 = c.batches
        aligned = same_launches(c.small, c.large)
        for i, (s, l) in enumerate(zip(c.small, c.large) if aligned else ((None, l) for l in c.large)):
            rows.append({
                "block": c.block, "path": c.name, "pass": c.pass_, "index": i, "kernel": l.kernel,
                "triton": l.programs > 0, "batch_small": b1, "batch_large": b2,
                "programs_small": s.programs if s else None, "programs_large": l.programs,
                "median_small": s.median if s else None, "median_large": l.median,
                "longest_small": s.longest if s else None, "longest_large": l.longest,
                "bytes_small": s.bytes if s else None, "bytes_large": l.bytes,
                "grows_with_batch": grows(s, l, b1, b2) if s and l.programs else None,
                "launches_differ": not aligned,
                "longest_over_median": longest_over_median(l) if l.programs else None,
            })
    return rows


def path_at(count: PathCount, B: int) -> tuple[list[Launch], bool] | None:
    """A counted path's launches at batch ``B`` and whether any was extrapolated (None: the
    launches differ between the two counts, so nothing can be extended)."""
    if not same_launches(count.small, count.large):
        return None
    extended = [extend(s, l, *count.batches, B) for s, l in zip(count.small, count.large)]
    return [e for e, _ in extended], any(g for _, g in extended)


def _triton_kernels(count: PathCount) -> list[str]:
    """The Triton kernels of a counted path, in launch order (at the larger counted batch)."""
    return [x.kernel for x in count.large if x.programs]


def _paths_at(by_impl: dict[str, PathCount], forced: dict[str, PathCount], block: Block, pass_: str, B: int,
              dtype: str) -> dict[str, tuple[list[Launch] | None, bool, str]]:
    """Each path's launches at batch ``B`` (None where the counts cannot give them), whether one was
    extrapolated, and why not; ``forced``: the counts of the paths the twin takes only at some
    batches (:func:`count_block`), by path name."""
    out: dict[str, tuple[list[Launch] | None, bool, str]] = {}
    kernels = {impl: _triton_kernels(c) for impl, c in by_impl.items()}
    try:
        for impl, c in by_impl.items():
            got = path_at(c, B)
            counted = kernels[impl]
            taken, chosen = taken_at(block, impl, pass_, B, dtype) if got else (counted, None)
            if got is None:
                out[impl] = (None, False, "the launches differ between the two counted batches")
            elif taken != counted:  # the path changes with B: the counts are not its counts ...
                # ... unless it is another counted path's (tritattn taking its per-op path at this B),
                # or one counted with that path forced
                other = next((o for o in by_impl if o != impl and kernels[o] == taken), None)
                other_at = path_at(by_impl[other], B) if other is not None else None
                alone = forced.get(chosen) if impl == "tritattn" else None
                alone_at = path_at(alone, B) if alone is not None else None
                if other_at is not None:
                    out[impl] = (*other_at, f"at B={B} the path taken is {other}'s")
                elif alone_at is not None and _triton_kernels(alone) == taken:
                    out[impl] = (*alone_at, f"at B={B} the path taken is {chosen} (counted with it forced)")
                else:
                    out[impl] = (None, False,
                                 f"at B={B} the path launches {', '.join(taken)}, not the counted {', '.join(counted)}")
            else:
                out[impl] = (*got, "")
        out["eager"] = (eager_path(block, pass_, B, dtype), False, "")
    except ValueError as e:  # a BatchNorm in training over one value per channel (B = 1)
        return {impl: (None, False, f"cannot run: {e}") for impl in [*by_impl, "eager"]}
    return out


def estimate_rows(counts: Sequence[PathCount], batches: Sequence[int] = ESTIMATE_BATCHES, dtype: str = "fp32") -> list[dict]:
    """Per block, pass, path, GPU and batch: the model's estimated µs (``estimate (model)``), the
    launches, the longest program, the bytes, the §2 targets its Triton launches miss at that batch
    (:func:`violations`: ``tails`` counts the launches); eager from the meta device at each batch."""
    rows = []
    by_block: dict[tuple[str, str], dict[str, PathCount]] = {}
    forced: dict[tuple[str, str], dict[str, PathCount]] = {}
    for c in counts:
        if c.forced is None:
            by_block.setdefault((c.block, c.pass_), {})[c.impl] = c
        else:
            forced.setdefault((c.block, c.pass_), {})[c.forced] = c
    for (block_id, pass_), by_impl in by_block.items():
        block = census_block(block_id)
        for B in batches:
            for impl, (ls, extrapolated, note) in _paths_at(by_impl, forced.get((block_id, pass_), {}), block, pass_, B,
                                                            dtype).items():
                for gpu in GPUS:
                    row = {"block": block_id, "pass": pass_, "path": impl, "gpu": gpu.name, "batch": B,
                           "label": ESTIMATE_LABEL, "us": None, "launches": None, "longest": None, "bytes": None,
                           "extrapolated": None, "tails": None, "violations": None, "note": note}
                    if ls is not None:
                        row.update(us=1e6 * sum(launch_seconds(x, gpu) for x in ls), launches=len(ls),
                                   longest=max((x.longest for x in ls), default=0), bytes=sum(x.bytes for x in ls),
                                   extrapolated=extrapolated,
                                   tails=sum(bool(violations(x, B)) for x in ls if x.programs),
                                   violations="; ".join(v for x in ls if x.programs for v in violations(x, B)))
                    rows.append(row)
    return rows


# --- the subprocess's entry point -----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Count the census blocks' launches in Triton's interpreter, as JSON.")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--blocks", default=",".join(CENSUS_IDS))
    p.add_argument("--batches", default=",".join(map(str, COUNT_BATCHES)))
    p.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    args = p.parse_args(argv)
    batches = tuple(int(b) for b in args.batches.split(","))
    counts = count_blocks(args.blocks.split(","), batches, args.dtype)
    save_counts(counts, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
