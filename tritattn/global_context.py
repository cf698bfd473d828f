"""GCNet's global context block on tritattn's kernels: the fast twin of timm's ``GlobalContext``.

:class:`GlobalContext` subclasses :class:`tritattn.reference.GlobalContext` (timm's constructor,
defaults and ``state_dict`` keys) and overrides only ``forward``, reading only attributes timm's
class has too — conv_attn, mlp_scale, mlp_add, gate — so a timm instance can be re-classed in
place (``module.__class__ = GlobalContext``) and keeps its own submodules.
"""
from __future__ import annotations

from torch import Tensor

from . import reference
from .checks import check_channels, check_feature_map
from .context_block import context_pool
from .functional import excite_scale, squeeze
from .modules import kernel_gate


class GlobalContext(reference.GlobalContext):
    """timm's ``GlobalContext`` with its passes over x on tritattn's kernels.

    - the context: :func:`tritattn.context_block.context_pool` (the 1×1 conv, the softmax over
      H×W and the weighted sum in one read of x; stable, deterministic) with ``conv_attn``,
      :func:`tritattn.functional.squeeze` (the mean) without;
    - ``mlp_scale`` / ``mlp_add``: the modules themselves on the [B, C, 1, 1] context (a tiny
      per-sample MLP with its LayerNorm, eager);
    - ``fuse_scale``: ``x · gate(mlp_scale(ctx))`` in one :func:`~tritattn.functional.excite_scale`
      pass when the gate has a kernel (sigmoid, hard-sigmoid); with ``fuse_add`` too, the added
      ``mlp_add(ctx)`` rides along as the scaling's (broadcast) residual, in the same pass;
    - ``fuse_add`` alone (gcresnet*): ``x + mlp_add(ctx)`` in torch — eager's broadcast add is
      already a single pass over x, there is nothing to fuse.

    A gate without a kernel runs the reference forward, after a one-time warning naming it.
    """

    #: the attribute holding the gate module (for the converter's check)
    gate_attr = "gate"

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(x)
        for name in ("conv_attn", "mlp_scale", "mlp_add"):
            layer = getattr(self, name)
            if layer is not None:
                conv = layer if name == "conv_attn" else layer.fc1
                check_channels(x, conv.in_channels, f"{type(self).__name__}.{name}")
        gate = None
        if self.mlp_scale is not None:
            gate = kernel_gate(self, self.gate)
            if gate is None:
                return super().forward(x)  # the reference forward
        B, C = x.shape[:2]
        if self.conv_attn is not None:
            ctx = context_pool(x, self.conv_attn.weight.reshape(C), self.conv_attn.bias)
        else:
            ctx = squeeze(x, "mean")
        ctx = ctx.view(B, C, 1, 1)
        added = self.mlp_add(ctx) if self.mlp_add is not None else None
        if self.mlp_scale is not None:
            residual = added.expand(x.shape) if added is not None else None
            return excite_scale(x, self.mlp_scale(ctx), gate, residual)
        return x + added if added is not None else x
