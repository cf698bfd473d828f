"""Whether a module carries something a rewrite of its forward would bypass: asked by the twins
at run time (a hooked part keeps a block on its eager path) and by convert's rewrites."""
from __future__ import annotations

from torch import nn


def has_hooks(module: nn.Module) -> bool:
    """Whether a hook or an instance ``forward`` on ``module`` would be bypassed by a rewrite."""
    return bool(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
        or module._backward_pre_hooks or "forward" in module.__dict__
    )
