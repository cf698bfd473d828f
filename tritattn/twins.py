"""Every fast twin tritattn has, by the reference class it mirrors and by name.

The twins live with their kernels' host code — :mod:`tritattn.modules` (SE, ECA, CBAM and their
relatives, the original SENet's SE), :mod:`tritattn.split_attention` (ResNeSt's split attention,
SKNet's selective kernel), :mod:`tritattn.global_context` (GCNet) — and are gathered here for
:func:`tritattn.convert`, the benchmarks and the tests.
"""
from __future__ import annotations

from torch import nn

from . import global_context, modules, split_attention

#: reference class → its fast twin (the same parameters and buffers, so a module can be re-classed)
FAST_TWINS: dict[type[nn.Module], type[nn.Module]] = {
    **modules.FAST_TWINS,
    **split_attention.FAST_TWINS,
    global_context.reference.GlobalContext: global_context.GlobalContext,
}

#: twin class name → twin class
BY_NAME: dict[str, type[nn.Module]] = {twin.__name__: twin for twin in FAST_TWINS.values()}


def twin_named(name: str) -> type[nn.Module]:
    """The fast twin called ``name`` (e.g. ``"SEModule"``, ``"SplitAttn"``)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"tritattn has no twin named {name!r}; it has {sorted(BY_NAME)}") from None
