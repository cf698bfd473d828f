"""How the modules tritattn runs meet torch.fx and TorchScript: the twins, the fused tails
(:mod:`tritattn.fusion`) and the producers taken into an SE block (:mod:`tritattn.producer`) —
the classes given to :func:`leaf_class`.

torch.fx: each is a leaf of a symbolic trace. Its forward, called with an fx ``Proxy``, records
itself as one ``call_module`` node (:func:`fx_leaf`) — what a tracer does for the leaves it
knows — whatever the tracer (``torch.fx.symbolic_trace``, torchvision's and timm's feature
extractors, a user's ``Tracer`` subclass); the ``GraphModule`` then calls the module itself:
its kernels, checks and refusals, as eager. The classes are also registered with timm's
``register_notrace_module`` once timm is imported (timm is never imported here).

TorchScript: ``torch.jit.script`` compiles each such module's ``reference_forward`` — the
forward of its reference class (:mod:`tritattn.reference`: timm's math in torch ops), of a fused
block's timm class, of a producer's own class — since its kernels are Python launches that
TorchScript cannot compile. The module's forward branches on ``torch.jit.is_scripting()``,
which the TorchScript compiler resolves statically: the rest of the forward is never compiled.
The scripted model shares the parameters of the converted one; nothing in it is copied or
replaced. ``torch.jit.trace`` runs the Python forward: the custom ops (``tritattn::*``) are
recorded as they run, and a saved trace loads where ``tritattn`` is imported first.
"""
from __future__ import annotations

import functools
import logging
import sys
import types
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.fx import Proxy

log = logging.getLogger("tritattn")

#: the classes made leaves by :func:`leaf_class`, in creation order
LEAF_CLASSES: list[type[nn.Module]] = []
_logged_scripting: set[str] = set()


def is_symbolic(*values: object) -> bool:
    """Whether one of ``values`` is a torch.fx ``Proxy``: the caller is being traced symbolically.
    (A loop, not ``any`` over a generator: a third of the host time, at every block call.)"""
    for v in values:
        if isinstance(v, Proxy):
            return True
    return False


def fx_leaf(module: nn.Module, *args: Any) -> Proxy:
    """``module(*args)`` recorded as one ``call_module`` node of the symbolic trace that one of
    ``args`` (a ``Proxy``) belongs to: the module is a leaf of the trace, as if its tracer had
    listed it among its leaf modules."""
    _register_with_timm()
    tracer = next(a for a in args if isinstance(a, Proxy)).tracer
    path = tracer.path_of_module(module)
    if not path:
        raise TypeError(
            f"tritattn's {type(module).__name__} is the root of this symbolic trace: its forward launches kernels "
            "from Python and cannot be traced through; trace a module that holds it (where it is a leaf)")
    return tracer.create_proxy("call_module", path, args, {})


def leaf_function(fn: Callable) -> Callable:
    """Decorator: a public function of tritattn's that a symbolic trace records whole — called
    with a ``Proxy`` among its arguments, one ``call_function`` node of the function itself, which
    the ``GraphModule`` calls at run time: its argument checks, then its custom op."""
    @functools.wraps(fn)
    def traced_whole(*args: Any, **kwargs: Any) -> Any:
        proxy = next((a for a in (*args, *kwargs.values()) if isinstance(a, Proxy)), None)
        if proxy is not None:
            return proxy.tracer.create_proxy("call_function", traced_whole, args, kwargs)
        return fn(*args, **kwargs)
    return traced_whole


def sizes(t: Tensor | Sequence[int]) -> tuple[int, ...]:
    """The sizes of tensor ``t`` (or the sizes ``t``) as Python ints, for a check or a decision in
    Python. Under ``torch.jit.trace`` a size read from a tensor is a traced value (so that shape
    arithmetic is recorded), and a Python comparison of one warns (``TracerWarning``) that the
    trace keeps this input's branch: here they are read with the tracer paused — for checks (a
    trace records none) and decisions on channel counts (fixed by the weights) and emptiness.
    Sizes passed on to ops are read from the tensor as usual, and stay traced."""
    if not torch.jit.is_tracing():
        return tuple(t.shape) if isinstance(t, Tensor) else tuple(t)
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        return tuple(int(d) for d in (t.shape if isinstance(t, Tensor) else t))
    finally:
        torch._C._set_tracing_state(state)


def _scripting_notice(self: nn.Module) -> nn.Module:
    """``__prepare_scriptable__``: logs (once per class) that TorchScript runs this module's
    reference forward; returns the module itself, unchanged."""
    name = type(self).__name__
    if name not in _logged_scripting:
        _logged_scripting.add(name)
        log.info("torch.jit.script: tritattn's %s runs its eager reference forward in TorchScript (the same "
                 "parameters and math, torch ops instead of the Triton kernels)", name)
    return self


def _renamed(fn: Callable, name: str) -> types.FunctionType:
    """A copy of function ``fn`` called ``name`` (TorchScript compiles a method under its function's
    name: the class's ``forward`` cannot be a second method called forward)."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__annotations__ = dict(fn.__annotations__)
    copy.__doc__ = fn.__doc__
    copy.__qualname__ = f"{fn.__qualname__.rpartition('.')[0]}.{name}".lstrip(".")
    return copy


def leaf_class(cls: type[nn.Module], reference_forward: Callable) -> type[nn.Module]:
    """Give ``cls`` what its forward needs under torch.fx and TorchScript: ``reference_forward``
    (the forward TorchScript compiles, renamed), a ``__prepare_scriptable__`` that logs it, and
    a place among the leaves timm's tracers keep whole. Idempotent; returns ``cls``."""
    if "reference_forward" not in cls.__dict__:
        cls.reference_forward = _renamed(reference_forward, "reference_forward")
        if getattr(cls, "__prepare_scriptable__", None) is None:
            cls.__prepare_scriptable__ = _scripting_notice
        LEAF_CLASSES.append(cls)
        _register_with_timm()
    return cls


def leaf_twins(twins: dict[type[nn.Module], type[nn.Module]]) -> None:
    """:func:`leaf_class` for each twin of a ``{reference class: twin}`` table, with its reference
    class's forward."""
    for reference_class, twin in twins.items():
        leaf_class(twin, reference_class.forward)


def _register_with_timm() -> None:
    """Every leaf class in timm's ``register_notrace_module`` set, if timm is imported."""
    timm_layers = sys.modules.get("timm.layers")
    register = getattr(timm_layers, "register_notrace_module", None)
    if register is not None:
        for cls in LEAF_CLASSES:
            register(cls)
