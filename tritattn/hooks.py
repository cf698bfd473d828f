"""Whether a module carries something a rewrite of its forward would bypass: asked by the twins
at run time (a hooked part keeps a block on its eager path) and by convert's rewrites."""
from __future__ import annotations

from torch import nn


def has_hooks(module: nn.Module) -> bool:
    """Whether a hook or an instance ``forward`` on ``module`` would be bypassed by a rewrite."""
    return hooked(module.__dict__)


def hooked(attributes: dict) -> bool:
    """:func:`has_hooks` of the module whose ``__dict__`` is ``attributes`` (read straight from
    it: no attribute lookups, for a caller that holds it already)."""
    return bool(
        attributes["_forward_hooks"] or attributes["_forward_pre_hooks"] or attributes["_backward_hooks"]
        or attributes["_backward_pre_hooks"] or "forward" in attributes
    )


def global_module_hooks() -> bool:
    """Whether a global module hook (``torch.nn.modules.module.register_module_forward_hook`` and
    the like) is registered: a module called other than through ``__call__`` would bypass it."""
    m = nn.modules.module
    return bool(m._global_forward_hooks or m._global_forward_pre_hooks or m._global_backward_hooks
                or m._global_backward_pre_hooks)
