"""``tritattn.tune(model, example_input)``: tune every kernel a model will launch, ahead of time.

A launch never benchmarks by default (:mod:`tritattn.tuning`): a kernel problem (kernel, shape
bucket, layout, dtype) that no tuning table holds runs the config of the nearest tuned problem
(the same one at another batch size) or the default. :func:`tune` is where configs get tuned:
it runs the model once, forward and backward, on an example input of the shapes it will see,
inside :func:`tuning.benchmarking`, so that every problem is decided (benchmarked now, or read
from the caches) before CUDA-graph capture, training or serving — and persisted in the user
cache for the next process. The blocks with several paths (tritattn/paths.py: the channel-attention
block's one-launch, split, per-op and eager paths) time their candidates in the same pass and
store the winner per problem key. It leaves no trace on the model: no ``.grad`` is written (the
backward is ``torch.autograd.grad``), buffers such as BatchNorm's running statistics are
restored, and the random number generators are forked (dropout draws nothing from the
caller's stream).

Under ``torch.distributed`` with several ranks it is a collective: call it on every rank with
the same example; rank 0 benchmarks, and every rank then takes rank 0's configs
(:func:`tuning.share_rank0_decisions`), so that all ranks compute the same bits.

On a backend without tuning (CPU, Triton's interpreter, kernels disabled, ``TRITATTN_AUTOTUNE=0``,
deterministic mode) it runs nothing and says why.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves, tree_map

from .backend import backend_for, backend_reason

if TYPE_CHECKING:
    from .paths import PathDecision
    from .tuning import Decision

log = logging.getLogger("tritattn")


@dataclass
class TuneReport:
    """What :func:`tune` did: every kernel problem the model launched, and where its config came from."""

    device: str
    decisions: list["Decision"] = field(default_factory=list)  #: one per (kernel, problem key) the model hit
    tuned_now: int = 0  #: problems benchmarked by this call (the rest came from memory or the caches)
    seconds: float = 0.0  #: wall time of the call
    benchmark_seconds: float = 0.0  #: of which spent benchmarking candidate configs
    skipped: str | None = None  #: why nothing was run (no tuning on this backend)
    paths: list["PathDecision"] = field(default_factory=list)  #: the path each block with several took, and why

    def summary(self) -> str:
        if self.skipped is not None:
            return f"tritattn.tune: nothing to tune on {self.device} ({self.skipped})"
        return (f"tritattn.tune: {len(self.decisions)} kernel problems on {self.device}, {self.tuned_now} tuned now, "
                f"{len(self.decisions) - self.tuned_now} already decided; {self.seconds:.1f} s "
                f"({self.benchmark_seconds:.1f} s benchmarking)")

    def __str__(self) -> str:
        rows = [f"  {d.kernel} {d.key}: {d.config} ({d.source})" for d in self.decisions]
        rows += [f"  path of {d.block} {d.key}: {d.path} ({d.reason})" for d in self.paths]
        return "\n".join([self.summary()] + rows)


def _with_grad(t: Any) -> Any:
    return t.detach().requires_grad_(t.is_floating_point()) if isinstance(t, Tensor) else t


def _forward_backward(model: nn.Module, inputs: tuple, backward: bool) -> None:
    inputs = tree_map(_with_grad, inputs) if backward else inputs
    with torch.set_grad_enabled(backward):
        outputs = [o for o in tree_leaves(model(*inputs)) if isinstance(o, Tensor) and o.requires_grad]
    wrt = [p for p in model.parameters() if p.requires_grad]
    wrt += [t for t in tree_leaves(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if outputs and wrt:
        torch.autograd.grad(outputs, wrt, [torch.ones_like(o) for o in outputs], allow_unused=True)


def _run_and_collect(model: nn.Module, inputs: tuple, backward: bool, device: torch.device, report: TuneReport) -> None:
    """One tuning pass: the model's buffers and the RNG as they were afterwards, even on an error."""
    from . import paths, tuning

    if torch.cuda.is_current_stream_capturing():  # asked only where tuning runs: on a GPU
        raise RuntimeError("tritattn.tune cannot benchmark inside a CUDA graph capture: call it before capturing")
    benchmarked = tuning.tuning_seconds()
    before = {d.kernel + "/" + d.key: d for d in tuning.decisions()}
    saved = [b.detach().clone() for b in model.buffers()]
    # under torch.distributed rank 0 alone benchmarks; the others run the same pass (the model's
    # collectives) and take its configs below
    benchmarking = tuning.benchmarking() if tuning.distributed_rank() == 0 else contextlib.nullcontext()
    try:
        with (torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), tuning.recording() as keys,
              paths.recording() as path_keys, benchmarking):
            _forward_backward(model, inputs, backward)
    finally:
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), saved):
                buffer.copy_(value)
    tuning.share_rank0_decisions(keys, device)
    decided = {key: tuning.decision(key) for key in sorted(keys)}  # None: no candidate built (logged)
    report.decisions = [d for d in decided.values() if d is not None]
    report.paths = [d for d in (paths.decision(*key) for key in sorted(path_keys)) if d is not None]
    report.tuned_now = sum(d is not None and d.source == "tuned" and before.get(key) != d for key, d in decided.items())
    report.benchmark_seconds = tuning.tuning_seconds() - benchmarked
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tune(model: nn.Module, example_input: Tensor | tuple, *, backward: bool = True) -> TuneReport:
    """Run ``model(example_input)`` (a tuple: ``model(*example_input)``) once, and its backward
    unless ``backward=False``, benchmarking every kernel problem it launches that no table holds,
    so that each has its config before training, CUDA-graph capture or serving (the only place,
    with ``TRITATTN_AUTOTUNE=1``, where configs are benchmarked). Under torch.distributed, call
    it on every rank: rank 0's configs are given to all. Returns a :class:`TuneReport` (summary
    logged at INFO). A no-op, saying why, where nothing is tuned (CPU, interpreter, tuning off)."""
    start = time.perf_counter()
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    tensors = [t for t in tree_leaves(inputs) if isinstance(t, Tensor)]
    if not tensors:
        raise TypeError("tritattn.tune needs an example input with at least one tensor")
    device = tensors[0].device
    report = TuneReport(str(device))
    if backend_for(tensors[0]) == "torch":
        report.skipped = backend_reason(tensors[0])
    else:
        from . import tuning

        report.skipped = tuning.skip_reason(device)
        if report.skipped is None:
            _run_and_collect(model, inputs, backward, device, report)
    report.seconds = time.perf_counter() - start
    log.info("%s", report.summary())
    return report
