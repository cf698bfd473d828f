"""What the rewrites that re-class modules in place share (:mod:`tritattn.fusion`,
:mod:`tritattn.prologue`): the subclass a rewrite gives a module, kept as an attribute of the
rewrite's own module so that a rewritten model pickles and deep-copies."""
from __future__ import annotations

import importlib
from typing import Callable

from torch import nn


def derived_class(namespace: dict, prefix: str, cls: type[nn.Module], forward: Callable, doc: str) -> type[nn.Module]:
    """The subclass ``prefix + cls.__name__`` of ``cls`` with ``forward``, created once and kept in
    ``namespace`` (a module's globals, whose ``__name__`` it takes)."""
    name = prefix + cls.__name__
    made = namespace.get(name)
    if made is None or made.__base__ is not cls:
        made = type(name, (cls,), {"forward": forward, "__module__": namespace["__name__"], "__qualname__": name,
                                   "__doc__": doc})
        namespace[name] = made
    return made


def class_lookup(module_name: str, prefix: str, peers: Callable[[], list[str]],
                 make: Callable[[type[nn.Module]], type[nn.Module]]) -> Callable[[str], type[nn.Module]]:
    """A module-level ``__getattr__`` that builds ``prefix + <peer class name>`` on demand with
    ``make`` (for unpickling a rewritten model); ``peers`` lists the qualified peer class names."""
    def lookup(name: str) -> type[nn.Module]:
        for peer in peers():
            peer_module, _, class_name = peer.rpartition(".")
            if name == prefix + class_name:
                return make(getattr(importlib.import_module(peer_module), class_name))
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
    return lookup
