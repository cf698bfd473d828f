"""What a sweep measures: presets per machine, and the list of work items in priority order."""
from __future__ import annotations

from dataclasses import dataclass

import model_shapes
from cases import Case
from model_shapes import Block

#: Defaults per machine. GPU: the full table within ~8 minutes on an H100 (see sweep.py);
#: CPU: a few small shapes through the Triton interpreter, a few minutes on 2 cores.
PRESETS: dict[str, dict] = {
    "gpu": dict(blocks=["all"], dtypes=["bf16", "fp32"], layouts=["nchw", "channels_last"], batch_sizes=[32, 128],
                passes=["fwd", "fwd+bwd"], compile=["default", "max-autotune"], compile_blocks="representative",
                cuda_graphs="both", budget_min=7.5, shrink=None),
    "gpu-quick": dict(blocks=["representative"], dtypes=["bf16"], layouts=["channels_last"], batch_sizes=[128],
                      passes=["fwd", "fwd+bwd"], compile=["default"], compile_blocks="representative",
                      cuda_graphs="both", budget_min=3.0, shrink=None),
    "cpu": dict(blocks=["representative"], dtypes=["fp32"], layouts=["nchw", "channels_last"], batch_sizes=[2],
                passes=["fwd", "fwd+bwd"], compile=["default"], compile_blocks="first",
                cuda_graphs="off", budget_min=5.0, shrink=(64, 8)),
    "cpu-quick": dict(blocks=["representative"], dtypes=["fp32"], layouts=["nchw"], batch_sizes=[2],
                      passes=["fwd", "fwd+bwd"], compile=[], compile_blocks="first",
                      cuda_graphs="off", budget_min=2.0, shrink=(64, 8)),
}

#: torch.compile modes the sweep can time (the "compile" and "compile-max-autotune" implementations).
COMPILE_CHOICES = ("default", "max-autotune")


@dataclass(frozen=True)
class WorkItem:
    """Implementations to time for one case (all passes, all CUDA-graph modes)."""

    case: Case
    impls: tuple[str, ...]


def pick_blocks(models: list[str], patterns: list[str], shrink: tuple[int, int] | None) -> list[Block]:
    """The blocks of ``models`` matching ``patterns`` ("all", "representative", or id substrings),
    shrunk to (max channels, max side) when given."""
    candidates = model_shapes.ALL_BLOCKS if patterns == ["all"] else model_shapes.select(patterns)
    blocks = [b for b in candidates if b.model in models]
    return [b.scaled(*shrink) for b in blocks] if shrink else blocks


def _compile_blocks(blocks: list[Block], scope: str) -> list[Block]:
    if scope == "all":
        return blocks
    if scope == "first":
        return blocks[:1]
    reps = {model_shapes.representative(b.model).id for b in blocks}
    return [b for b in blocks if b.id in reps] or blocks[:1]


def work_items(
    blocks: list[Block], dtypes: list[str], layouts: list[str], batch_sizes: list[int],
    compile_modes: list[str], compile_scope: str,
) -> list[WorkItem]:
    """In priority order (a time budget cuts the tail):

    1. tritattn and eager on every case of the first dtype (block × layout × batch size);
    1b. tritattn's per-op path (the block pipelines off) on the compile blocks, first dtype,
        every layout and batch size: what the pipelines gain;
    2. torch.compile (default) on the compile blocks (``compile_scope``: each model's
       representative block, the first block, or all), first dtype, every layout, largest batch;
    3. torch.compile (max-autotune) on the compile blocks, first dtype, last layout, largest batch;
    4. tritattn and eager on every case of the other dtypes.
    """
    def base(dtype: str) -> list[WorkItem]:
        return [WorkItem(Case(b, n, dtype, lay), ("tritattn", "eager")) for lay in layouts for b in blocks for n in batch_sizes]

    targets, first, largest = _compile_blocks(blocks, compile_scope), dtypes[0], max(batch_sizes)
    items = base(first)
    items += [WorkItem(Case(b, n, first, lay), ("tritattn-per-op",)) for lay in layouts for b in targets for n in batch_sizes]
    if "default" in compile_modes:
        items += [WorkItem(Case(b, largest, first, lay), ("compile",)) for lay in layouts for b in targets]
    if "max-autotune" in compile_modes:
        items += [WorkItem(Case(b, largest, first, layouts[-1]), ("compile-max-autotune",)) for b in targets]
    return items + [item for d in dtypes[1:] for item in base(d)]
