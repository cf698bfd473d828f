"""``torch.autograd.Function`` classes of the differentiable custom ops, built from the very
formulas the ops register.

Each differentiable op registers its autograd formula through :func:`differentiable`, which calls
``op.register_autograd(backward, setup_context=setup)`` and returns a ``torch.autograd.Function``
subclass whose ``forward`` calls the op, whose ``backward`` is that very function and whose
``setup_context`` calls that very ``setup``: the raw op (``torch.ops.tritattn.<op>``, however it
is called) and its class differentiate by one formula, written once.
``setup_context(ctx, inputs, output)`` and ``backward(ctx, *grads)`` have the signatures both
``register_autograd`` and ``torch.autograd.Function`` take.

``<Class>.apply`` takes the op's arguments positionally (``Function.apply`` under
``torch.compile`` takes no keywords), in the op's schema order; trailing arguments with a default
may be left out. It returns what the op returns (all of its outputs: a tuple for a multi-output
op) and checks nothing: :mod:`tritattn.functional` holds the checked functions. The class's
``setup_context`` hands the formula the op's whole argument list (defaults filled in) in eager
mode and compiled alike; ``backward`` is the registered function itself.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch

#: op's qualified name ("tritattn::excite_scale") → its Function class, in registration order
FUNCTIONS: dict[str, type[torch.autograd.Function]] = {}


def class_name(op_name: str) -> str:
    """The Function class's name for an op: "excite_scale" → "ExciteScale"."""
    return "".join(part.capitalize() for part in op_name.split("_"))


def differentiable(
    op: torch.library.CustomOpDef, setup: Callable[..., None], backward: Callable[..., object]
) -> type[torch.autograd.Function]:
    """Register ``backward`` / ``setup`` as ``op``'s autograd formula and return the op as a
    ``torch.autograd.Function`` differentiated by the same two functions (its ``setup_context``
    wraps ``setup``: ``__wrapped__``); the class is recorded in :data:`FUNCTIONS` and belongs to
    (``__module__``) the module that defines the formula."""
    op.register_autograd(backward, setup_context=setup)
    qualname = f"{op._namespace}::{op._name}"
    # the OpOverload, not the CustomOpDef: dynamo traces a call to the former inside a Function
    overload = getattr(getattr(torch.ops, op._namespace), op._name).default
    parameters = [p.replace(kind=p.POSITIONAL_ONLY, annotation=p.empty)
                  for p in inspect.signature(op._init_fn).parameters.values()]
    defaults = tuple(p.default for p in parameters if p.default is not p.empty)
    required = len(parameters) - len(defaults)

    def forward(*args):
        return overload(*args)

    @functools.wraps(setup)
    def setup_context(ctx, inputs: tuple, output) -> None:
        # Eager Function.apply binds the left-out defaults before calling this; under
        # torch.compile the inputs are the arguments as given: the formula sees them all either way.
        setup(ctx, (*inputs, *defaults[len(inputs) - required:]), output)

    # what Function.apply binds the arguments to: the op's, positional only (dynamo passes no keywords)
    forward.__signature__ = inspect.Signature(parameters)
    name = class_name(op._name)
    forward.__qualname__ = f"{name}.forward"
    cls = type(name, (torch.autograd.Function,), {
        "__module__": setup.__module__,
        "__doc__": (f"``torch.ops.{op._namespace}.{op._name}`` as a ``torch.autograd.Function``:\n"
                    f"``{name}.apply{forward.__signature__}``\n(the op's arguments, positional, in schema "
                    f"order; trailing defaulted ones may be left out). No argument checks. The formula is the "
                    f"op's own: setup_context = {setup.__module__}.{setup.__qualname__}, backward = "
                    f"{backward.__module__}.{backward.__qualname__}.\n\n{op._init_fn.__doc__ or ''}"),
        "forward": staticmethod(forward),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward),
    })
    FUNCTIONS[qualname] = cls
    return cls
