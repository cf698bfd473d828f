"""A custom op called on the host's short path: its Python implementation directly, where the
dispatcher would add nothing but its own time.

``torch.ops.tritattn.<op>(...)`` goes through torch's dispatcher and the Python layers of
``torch.library.custom_op``: the autograd wrapper, a redispatch, the backend wrapper that keeps
dynamo out — ≈ 10–30 µs of host time per call without autograd; with autograd, the op's
registered formula is set up through ``torch._library.utils.fill_defaults``, which rebuilds the
schema's argument list once per argument (≈ 5 µs × arguments² / arguments: 117 µs for the 23
arguments of ``tritattn::excitation_block``). That is more than the launches the op leads to at
batch 1–8. :func:`call` runs the same function the dispatcher would reach, on the same arguments:

- without autograd (grad mode off, or no tensor argument requires a gradient): the op's
  implementation directly;
- with autograd: through a plain ``torch.autograd.Function`` (:func:`_eager_function`) whose
  forward runs the implementation and calls the op's registered ``setup_context`` with the whole
  argument list (defaults filled in, as the op's own autograd wrapper does), and whose backward is
  the op's registered backward — the op's formula, the same saved tensors;

when nothing in the call needs the dispatcher: not ``torch.compile`` / ``torch.export``
(``torch.compiler.is_compiling``), not ``torch.jit.trace`` (it records the op), no
``TorchDispatchMode`` (FakeTensorMode, FunctionalTensorMode, the census's counting modes) nor
``TorchFunctionMode`` (``with torch.device(...)``, user modes) active, no functorch transform
(``vmap``, ``grad``), no profiler running (its trace shows the op by name), and x a plain dense
tensor (``type(x) is torch.Tensor``: not a FakeTensor or another subclass) off the meta device
(there the op runs its fake implementation: shapes only). Otherwise the op is called as usual.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import Tensor

#: op's qualified name → (its eager Function, its defaults, its number of arguments without a default)
_functions: dict[str, tuple[Callable[..., Any], tuple, int]] = {}


def direct(x: Tensor) -> bool:
    """Whether an op on x may skip the dispatcher (see the module docstring), autograd aside."""
    if torch.compiler.is_compiling():  # first: dynamo answers it as a constant and traces no further
        return False
    if type(x) is not torch.Tensor or x.is_meta:
        return False
    return no_mode()


def no_mode() -> bool:
    """:func:`direct` for an x already known to be a plain tensor off the meta device (a call
    signature seen before, tritattn/excitation_step.py), where ``torch.compile`` is not tracing:
    no dispatch or function mode, functorch transform, ``torch.jit.trace`` or profiler active."""
    return not (torch._C._len_torch_dispatch_stack() or torch._C._len_torch_function_stack()
                or torch._C._functorch.peek_interpreter_stack() is not None or torch._C._is_tracing()
                or torch.autograd._profiler_enabled())


def needs_grad(args: tuple) -> bool:
    """Whether autograd must record a call on ``args``: grad mode on and a tensor argument requiring a gradient."""
    if not torch.is_grad_enabled():
        return False
    for a in args:  # a loop, not any() over a generator: ≈ 1 µs less at every op call
        if isinstance(a, Tensor) and a.requires_grad:
            return True
    return False


def call(op: torch.library.CustomOpDef, *args: Any) -> Any:
    """``op(*args)`` (positional, in schema order, x first): its implementation directly, or through
    :func:`_eager_function` when autograd must record it, where :func:`direct` allows; else
    through the dispatcher."""
    if not direct(args[0]):
        return op._opoverload(*args)
    if not needs_grad(args):
        return op._init_fn(*args)
    if op._backward_fn is None:  # no formula: the dispatcher says so, as usual
        return op._opoverload(*args)
    apply, defaults, required = _eager_function(op)
    return apply(*args, *defaults[len(args) - required:])  # the formula sees every argument


def _eager_function(op: torch.library.CustomOpDef) -> tuple[Callable[..., Any], tuple, int]:
    """(the apply of ``op`` as a plain ``torch.autograd.Function`` differentiated by its registered formula,
    the defaults of its trailing arguments, the number of arguments without one); built once per op."""
    entry = _functions.get(op._qualname)
    if entry is not None:
        return entry
    parameters = list(inspect.signature(op._init_fn).parameters.values())
    defaults = tuple(p.default for p in parameters if p.default is not p.empty)
    implementation, setup = op._init_fn, op._setup_context_fn

    def forward(ctx, *inputs):
        output = implementation(*inputs)
        setup(ctx, inputs, output)
        return output

    function = type(f"Eager_{op._name}", (torch.autograd.Function,), {
        "__doc__": f"{op._qualname} for tritattn.dispatch.call: the op's implementation, its registered formula.",
        "forward": staticmethod(forward),
        "backward": staticmethod(op._backward_fn),
    })
    entry = _functions[op._qualname] = (bare_apply(function), defaults, len(parameters) - len(defaults))
    return entry


def bare_apply(function: type[torch.autograd.Function]) -> Callable[..., Any]:
    """``function.apply`` without ``autograd.Function.apply``'s Python wrapper (≈ 2.4 µs of host
    time per call), for a Function without ``setup_context`` called only where :func:`direct`
    holds: the wrapper binds defaults for a ``setup_context``, reroutes under a functorch
    transform (none is active there) and unwraps functorch's dead wrappers (tensors leaked out of
    a finished transform: x passed :func:`direct`, the rest are a module's weights)."""
    return super(torch.autograd.Function, function).apply


def not_differentiable(t: Tensor, what: str) -> Tensor:
    """t, with a gradient function that raises when differentiated (as ``once_differentiable`` marks
    its results): a gradient made by ``what``'s backward launches under ``create_graph``."""
    t = t.detach().requires_grad_()  # an input that requires grad, so the result gets the raising function
    return torch._C._functions.DelayedError(f"tritattn: the backward of {what} is not differentiable (no double "
                                            f"backward)", 1)(t)


#: signatures a short path's cache keeps (:func:`per_signature`); beyond this it restarts
SIGNATURE_CACHE_SIZE = 1024
_MISSING = object()


def per_signature(cache: dict, key: tuple, build: Callable[[], Any]) -> Any:
    """``build()`` for the call signature ``key``, built on its first call and then kept in
    ``cache`` (None is a value kept too: a path that does not apply to that signature)."""
    value = cache.get(key, _MISSING)
    if value is _MISSING:
        if len(cache) >= SIGNATURE_CACHE_SIZE:
            cache.clear()
        value = cache[key] = build()
    return value
