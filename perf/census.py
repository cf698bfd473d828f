"""Device-independent figures of a block: kernel launches, and activation bytes saved for backward.

They depend on the code path, not on the device, so they are measured on any machine — on the
"meta" device by default, which runs every operator's shape logic and no arithmetic, so even the
full model table takes seconds on a CPU.

Launch rule (:class:`LaunchCensus`, a ``TorchDispatchMode``: it sees each operator call below
autograd once, not the calls inside an operator's implementation):

- a tritattn custom op (``torch.ops.tritattn.*``) counts as the Triton kernels it launches, as
  listed by ``bytes_model.op_kernels``: one for the per-op ops, two for the block pipeline's
  ``excitation_block`` and its backward (tests/test_sweep.py checks this against tritattn/launch.py);
- an aten op counts as one kernel launch, except views and metadata ops — ops whose schema
  returns an alias they do not write (view, expand, permute, …) and the ops in :data:`NO_KERNEL`
  (allocation, detach, …) — and ``convolution_backward``, which counts one launch per gradient it
  computes (:func:`aten_kernels`: on a GPU, cuDNN's backward-data and backward-filter calls, and
  the bias's as a sum outside the backend, as PyTorch's aten/src/ATen/native/Convolution.cpp
  computes it);
- an op whose tensor outputs are all empty launches nothing (an in-place op that returns nothing,
  as ``_foreach_lerp_``: whose written arguments are all empty).

A cuDNN call or a multi-pass reduction can launch more than one kernel on a GPU, so the eager
count is a lower bound.

Tensor passes (``LaunchCensus(plane_numel)``): the feature-map-sized tensors the launched kernels
read or write — an aten op's inputs and outputs of at least a plane's size (the smaller of the
block's input and output: a strided block, as SKNet's first of a stage, works on its output's
size), a tritattn op's planes from the byte model (``bytes_model.op_planes``). On the meta device the modules take the path a GPU takes
(the block pipelines), not the eager fallback of a CPU tensor.

Saved bytes (:func:`saved_activations`): every tensor autograd saves for backward during the
forward, through ``torch.autograd.graph.saved_tensors_hooks``, counted once per storage (views of
one buffer count once), parameters excluded: the activation memory a training step keeps.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bytes_model import op_kernels, op_planes

aten = torch.ops.aten

#: aten ops that allocate or relabel memory without launching a kernel.
NO_KERNEL = {
    aten.empty.memory_format, aten.empty_strided.default, aten.empty_like.default, aten.new_empty.default,
    aten.new_empty_strided.default, aten.detach.default, aten._unsafe_view.default, aten.lift_fresh.default,
    aten.resize_.default, aten.set_.source_Storage_storage_offset,
}


def _is_view(func: torch._ops.OpOverload) -> bool:
    return any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)


def _mutated_args(func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> list[Any]:
    """The arguments an op writes in place (its schema marks them ``Tensor(a!)``)."""
    written = {a.name for a in func._schema.arguments if a.alias_info is not None and a.alias_info.is_write}
    named = dict(zip((a.name for a in func._schema.arguments), args)) | kwargs
    return [named[name] for name in written if name in named]


def launches_kernel(func: torch._ops.OpOverload, out: Any, args: tuple = (), kwargs: dict | None = None) -> bool:
    """Whether an op launches a kernel: not a view or an allocation, and some tensor it returns —
    or, for an in-place op returning nothing (``_foreach_*_``), some tensor it writes — not empty."""
    if func in NO_KERNEL or _is_view(func):
        return False
    tensors = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
    if not tensors:
        tensors = [t for t in tree_leaves(_mutated_args(func, args, kwargs or {})) if isinstance(t, torch.Tensor)]
    return any(t.numel() for t in tensors)


def _tensor_bytes(tensors: Any) -> list[tuple[torch.Tensor, int]]:
    return [(t, t.numel() * t.element_size()) for t in tree_leaves(tensors) if isinstance(t, torch.Tensor)]


def aten_bytes(func: torch._ops.OpOverload, args: tuple, kwargs: dict, out: Any) -> int:
    """Bytes an aten kernel moves: its tensor arguments read once and its outputs written once (an
    argument the op writes in place counts once, as written; a broadcast input by its own size)."""
    written = _mutated_args(func, args, kwargs)
    outputs = _tensor_bytes(out) + [(t, n) for t, n in _tensor_bytes(written) if not any(t is o for o in tree_leaves(out))]
    reads = [(t, n) for t, n in _tensor_bytes((args, kwargs)) if not any(t is w for w in tree_leaves(written))]
    return sum(n for _, n in reads) + sum(n for _, n in outputs)


#: ``convolution_backward``'s outputs (grad_input, grad_weight, grad_bias) and the arguments each one's kernel reads
_CONV_GRAD_READS = (("grad input", (0, 2)), ("grad weight", (0, 1)), ("grad bias", (0,)))


def aten_kernels(func: torch._ops.OpOverload, args: tuple, kwargs: dict, out: Any) -> list[tuple[str, list[int], int]]:
    """The kernels an aten op that :func:`launches_kernel` runs on a GPU, as [(name, its tensors'
    sizes, the bytes it moves)]: one (:func:`aten_bytes`), except for ``convolution_backward``: one
    per gradient it returns — grad_output and the weight read for grad_input, grad_output and
    the input for grad_weight (cuDNN's backward-data and backward-filter calls), grad_output for
    grad_bias (a sum outside the backend: PyTorch's Convolution.cpp, ``convolution_backward``)."""
    name = str(func.overloadpacket)
    if func.overloadpacket is aten.convolution_backward:
        kernels = []
        for grad, (what, reads) in zip(out, _CONV_GRAD_READS):
            if grad is not None and grad.numel():
                tensors = [args[i] for i in reads] + [grad]
                kernels.append((f"{name} ({what})", [t.numel() for t in tensors],
                                sum(t.numel() * t.element_size() for t in tensors)))
        return kernels
    numels = [t.numel() for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
    return [(name, numels, aten_bytes(func, args, kwargs, out))]


class LaunchCensus(TorchDispatchMode):
    """Counts kernel launches (see the module docstring) and records each tritattn op call."""

    def __init__(self, plane_numel: int | None = None) -> None:
        super().__init__()
        self.triton = 0
        self.aten = 0
        #: the size of a plane; may be set after the run (:attr:`passes` is computed when read)
        self.plane_numel = plane_numel
        self.tritattn_calls: list[tuple[str, dict[str, Any]]] = []
        self._aten_numels: list[list[int]] = []  # per launched aten op: its tensors' sizes
        #: per launched aten op, in order: its name and the bytes it moves (:func:`aten_bytes`)
        self.aten_launches: list[tuple[str, int]] = []
        self._triton_planes = 0

    @property
    def passes(self) -> int:
        """Plane-sized tensors read or written by the launched kernels (tensors of at least
        ``plane_numel`` elements: an aten op's inputs and outputs; a tritattn op's kernels' planes
        from the byte model); 0 when ``plane_numel`` is None."""
        if self.plane_numel is None:
            return 0
        return self._triton_planes + sum(n >= self.plane_numel for numels in self._aten_numels for n in numels)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        namespace = func.namespace
        if namespace == "tritattn":
            named = {a.name: v for a, v in zip(func._schema.arguments, args)} | kwargs
            self.tritattn_calls.append((func._opname, named))
        if launches_kernel(func, out, args, kwargs):
            if namespace == "tritattn":
                self.triton += len(op_kernels(func._opname, named))
                self._triton_planes += op_planes(func._opname, named)
            else:
                for name, numels, nbytes in aten_kernels(func, args, kwargs, out):
                    self.aten += 1
                    self._aten_numels.append(numels)
                    self.aten_launches.append((name, nbytes))
        return out

    @property
    def total(self) -> int:
        return self.triton + self.aten


@contextmanager
def saved_activations(module: nn.Module) -> Iterator[dict[StorageWeakRef, int]]:
    """Within the block: storage → bytes of every non-parameter tensor saved for backward."""
    params = {StorageWeakRef(p.untyped_storage()) for p in module.parameters()}
    saved: dict[StorageWeakRef, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ref = StorageWeakRef(t.untyped_storage())
        if ref not in params:
            saved[ref] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield saved


@dataclass(frozen=True)
class BlockCensus:
    """One block's launches (forward in training mode, backward; forward in inference: eval mode,
    no autograd) and saved activation bytes."""

    fwd: LaunchCensus
    bwd: LaunchCensus
    saved_bytes: int
    inference: LaunchCensus


def take_census(module: nn.Module, x: torch.Tensor) -> BlockCensus:
    """Run one training step of ``module`` on ``x`` (forward, then backward of a ones cotangent),
    then one inference forward (eval mode, ``torch.no_grad()``); the module is left in eval mode."""
    module.train()
    x = x.detach().requires_grad_()
    with saved_activations(module) as saved, LaunchCensus() as fwd:
        y = module(x)
    cotangent = torch.ones_like(y)
    with LaunchCensus() as bwd:
        y.backward(cotangent)
    module.eval()
    with torch.no_grad(), LaunchCensus() as inference:
        module(x.detach())
    for census in (fwd, bwd, inference):  # a plane: the smaller of the block's input and output
        census.plane_numel = min(x.numel(), y.numel())
    return BlockCensus(fwd, bwd, sum(saved.values()), inference)


def main(argv: list[str] | None = None) -> int:
    """``python perf/census.py``: the critical-path census of every census block (issue 23 §1,
    perf/critical_path.py), its launch table and the estimated µs per block on an H100 and an
    H200 (estimates from the model), written to ``--out`` (counts.json, critical_path.csv,
    estimates.csv, critical_path.json, census_estimates.png)."""
    import argparse
    import os
    from pathlib import Path

    import critical_path
    import plots
    import report

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--blocks", default=",".join(critical_path.CENSUS_IDS), help="comma list of census block ids")
    p.add_argument("--batches", default=",".join(map(str, critical_path.COUNT_BATCHES)), help="the two counted batches")
    p.add_argument("--counts", type=Path, help="estimate from a previous run's counts.json instead of counting")
    p.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="counting subprocesses (default: up to 4)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.counts:
        counts = critical_path.load_counts(args.counts)
    else:
        counts = critical_path.count_blocks(args.blocks.split(","), tuple(int(b) for b in args.batches.split(",")), jobs=args.jobs)
    critical_path.save_counts(counts, args.out / "counts.json")
    launches, estimates = critical_path.launch_rows(counts), critical_path.estimate_rows(counts)
    report.write_csv(args.out / "critical_path.csv", launches, report.CRITICAL_PATH_COLUMNS)
    report.write_csv(args.out / "estimates.csv", estimates, report.ESTIMATE_COLUMNS)
    report.write_json(args.out / "critical_path.json", {"launches": launches, "estimates": estimates})
    png = plots.estimates(estimates, args.out / "census_estimates.png")
    print(report.critical_path_text(launches, estimates, counts[0].batches if counts else (0, 0),
                                    [g.name for g in critical_path.GPUS], critical_path.ESTIMATE_LABEL))
    print(f"\nWrote {args.out}: counts.json, critical_path.csv, estimates.csv, critical_path.json, {png.name}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
