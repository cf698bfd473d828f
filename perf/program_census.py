"""The critical-path count: per Triton program, the memory instructions it issues and the bytes it
touches, counted in Triton's interpreter (``TRITON_INTERPRET=1``).

On a GPU a launch lasts as long as its longest program, and a program's loop whose iterations each
wait on a memory instruction is serial (tritattn/cost_model.py). The count does not depend on the
data, only on the shapes, so it is taken on the CPU.

:class:`ProgramCensus` is a context manager. Within it:

- every Triton launch (the interpreter's ``GridExecutor.__call__``) is recorded with its kernel
  name and grid; each program (``set_grid_idx``) gets its own count of **memory instructions** —
  one per call of the builder's ``create_load``, ``create_masked_load``, ``create_store``,
  ``create_masked_store``, ``create_atomic_rmw``, ``create_atomic_cas``, ``create_atomic_load`` /
  ``create_atomic_store`` and the tensor-descriptor loads, stores, gathers and scatters, whatever
  the tile size (an op implemented by another counts once) — and of **bytes**: the elements
  actually accessed (unmasked) × their size;
- every aten op that launches a kernel (census.py's rule: not a view, not an allocation, a
  non-empty result) outside a Triton launch is recorded as an eager launch with its tensors'
  bytes (census.aten_kernels) — also the aten ops that a tritattn custom op runs inside its
  implementation (a ``torch.mm`` between two Triton kernels, a zeroed workspace): the mode
  steps into the op's implementation instead of treating it as opaque.

:meth:`ProgramCensus.launches` gives each launch as a :class:`tritattn.cost_model.Launch`:
programs, the median and the longest program's memory instructions, and the total bytes (an
aten op: ``cost_model.eager_launch`` with its bytes).

It needs the interpreter: with ``TRITON_INTERPRET`` unset, the kernels run compiled and nothing
can be counted, so entering the census raises (perf/critical_path.py runs the count in a
subprocess with ``TRITON_INTERPRET=1`` when the sweep runs on a GPU).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from census import aten_kernels, launches_kernel
from tritattn.cost_model import Launch, eager_launch

#: The interpreter builder's memory operations; each call is one memory instruction.
MEMORY_OPS = (
    "create_load", "create_masked_load", "create_store", "create_masked_store", "create_atomic_rmw",
    "create_atomic_cas", "create_atomic_load", "create_atomic_store", "create_descriptor_load",
    "create_descriptor_store", "create_descriptor_gather", "create_descriptor_scatter",
)


def interpreting() -> bool:
    """Whether Triton's kernels run in the interpreter (tritattn's probe kernel was defined as one)."""
    from tritattn import backend

    return backend.INTERPRETER


@dataclass
class KernelRecord:
    """One launch: a Triton kernel's per-program counts, or an aten op (``programs`` 0)."""

    kernel: str
    triton: bool
    instructions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    program_bytes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    aten_bytes: int = 0

    @property
    def programs(self) -> int:
        return len(self.instructions)

    @property
    def bytes(self) -> int:
        return int(self.program_bytes.sum()) if self.triton else self.aten_bytes

    def launch(self) -> Launch:
        """The launch as the model sees it (an aten op: parallel, only its bytes count)."""
        if not self.triton:
            return eager_launch(self.kernel, self.aten_bytes)
        counts = self.instructions.tolist() or [0]
        return Launch(self.kernel, programs=self.programs, median=int(statistics.median_low(counts)),
                      longest=int(max(counts)), bytes=self.bytes)


def _element_bytes(ptrs: Any) -> int:
    return max(1, ptrs.get_element_ty().primitive_bitwidth // 8)


def _accessed(ptrs: Any, mask: Any) -> int:
    """Bytes one memory instruction touches: its unmasked elements × their size."""
    n = np.size(ptrs.data) if mask is None else int(np.count_nonzero(mask.data))
    return n * _element_bytes(ptrs)


class ProgramCensus(TorchDispatchMode):
    """Records every Triton launch (per program: memory instructions, bytes) and every aten op that
    launches a kernel, in order (:attr:`records`); see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[KernelRecord] = []
        self._current: KernelRecord | None = None  # the Triton launch being run
        self._program = 0
        self._depth = 0  # nesting of memory ops: a load built from another counts once
        self._restore: list[Callable[[], None]] = []
        self._entered = 0  # the mode is entered again inside each tritattn op it steps into

    # --- the interpreter -------------------------------------------------------------------------

    def _count(self, n_bytes: int = 0, instruction: bool = False) -> None:
        rec = self._current
        if rec is not None:
            if instruction:
                rec.instructions[self._program] += 1
            rec.program_bytes[self._program] += n_bytes

    def _patch(self, owner: Any, name: str, make: Callable[[Callable], Callable]) -> None:
        original, own = getattr(owner, name), name in vars(owner)
        previous = vars(owner).get(name)
        setattr(owner, name, make(original))
        self._restore.append(lambda: setattr(owner, name, previous) if own else delattr(owner, name))

    def _instruction(self, original: Callable) -> Callable:
        def counted(*args, **kwargs):
            if self._depth == 0:
                self._count(instruction=True)
            self._depth += 1
            try:
                return original(*args, **kwargs)
            finally:
                self._depth -= 1
        return counted

    def _instrument(self) -> None:
        from triton.runtime import interpreter

        builder, census = interpreter.interpreter_builder, self

        def grid_executor_call(original):
            def call(executor, *args, **kwargs):
                census._current = KernelRecord(executor.fn.__name__, triton=True)
                census.records.append(census._current)
                try:
                    return original(executor, *args, **kwargs)
                finally:
                    census._current = None
            return call

        def set_grid_dim(original):
            def set_dim(nx, ny, nz):
                if census._current is not None:
                    census._current.instructions = np.zeros(nx * ny * nz, dtype=np.int64)
                    census._current.program_bytes = np.zeros(nx * ny * nz, dtype=np.int64)
                return original(nx, ny, nz)
            return set_dim

        def set_grid_idx(original):
            def set_idx(x, y, z):
                _, ny, nz = builder.grid_dim
                census._program = (x * ny + y) * nz + z
                return original(x, y, z)
            return set_idx

        def masked_load(original):  # the bytes of every load end here (plain, atomic, descriptor)
            def load(ptrs, mask, *args, **kwargs):
                census._count(_accessed(ptrs, mask))
                return original(ptrs, mask, *args, **kwargs)
            return load

        def masked_store(original):
            def store(ptrs, value, mask, *args, **kwargs):
                census._count(_accessed(ptrs, mask))
                return original(ptrs, value, mask, *args, **kwargs)
            return store

        def atomic_rmw(original):
            def rmw(op, ptr, val, mask, *args, **kwargs):
                census._count(2 * _accessed(ptr, mask))  # read and write
                return original(op, ptr, val, mask, *args, **kwargs)
            return rmw

        def atomic_cas(original):
            def cas(ptr, *args, **kwargs):
                census._count(2 * _accessed(ptr, None))
                return original(ptr, *args, **kwargs)
            return cas

        self._patch(interpreter.GridExecutor, "__call__", grid_executor_call)
        self._patch(builder, "set_grid_dim", set_grid_dim)
        self._patch(builder, "set_grid_idx", set_grid_idx)
        # bytes innermost, instructions outermost (create_load calls create_masked_load: one instruction)
        self._patch(builder, "create_masked_load", masked_load)
        self._patch(builder, "create_masked_store", masked_store)
        self._patch(builder, "create_atomic_rmw", atomic_rmw)
        self._patch(builder, "create_atomic_cas", atomic_cas)
        for name in MEMORY_OPS:
            if hasattr(builder, name):
                self._patch(builder, name, self._instruction)

    def __enter__(self) -> "ProgramCensus":
        if self._entered == 0:  # the interpreter is instrumented once, however often the mode is entered
            if not interpreting():
                raise RuntimeError("the program census counts in Triton's interpreter: set TRITON_INTERPRET=1 "
                                   "before triton is imported (perf/critical_path.py runs it in a subprocess)")
            self._instrument()
        self._entered += 1
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self._entered -= 1
        if self._entered == 0:
            while self._restore:
                self._restore.pop()()

    # --- torch ops -------------------------------------------------------------------------------

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._current is not None:  # the interpreter's own copies of a launch's arguments
            return func(*args, **kwargs)
        if func.namespace == "tritattn":
            impl = _custom_op_implementation(func)
            if impl is not None:
                with self:  # step in: the aten ops the op runs between its kernels are launches too
                    return impl(*args, **kwargs)
        out = func(*args, **kwargs)
        if func.namespace != "tritattn" and launches_kernel(func, out, args, kwargs):
            for name, _, nbytes in aten_kernels(func, args, kwargs, out):
                self.records.append(KernelRecord(name, triton=False, aten_bytes=nbytes))
        return out

    def launches(self) -> list[Launch]:
        """Every launch in order, as the model's :class:`~tritattn.cost_model.Launch` (a Triton
        launch over an empty grid launches nothing on a GPU: left out)."""
        return [r.launch() for r in self.records if r.programs or not r.triton]


def _custom_op_implementation(func: torch._ops.OpOverload) -> Callable | None:
    """The Python implementation of a ``torch.library.custom_op`` (None: not one)."""
    from torch._library.custom_ops import OPDEFS

    opdef = OPDEFS.get(f"{func.namespace}::{func._opname}")
    return None if opdef is None else opdef._init_fn
