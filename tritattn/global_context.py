"""GCNet's global context block on tritattn's kernels: the fast twin of timm's ``GlobalContext``.

:class:`GlobalContext` subclasses :class:`tritattn.reference.GlobalContext` (timm's constructor,
defaults and ``state_dict`` keys) and overrides only ``forward``, reading only attributes timm's
class has too — conv_attn, mlp_scale, mlp_add, gate — so a timm instance can be re-classed in
place (``module.__class__ = GlobalContext``) and keeps its own submodules.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from . import context_step, dispatch, excitation_block, reference
from .checks import check_channels, check_companion, check_feature_map, check_logits
from .context_block import context_mlp_op
from .functional import excite_scale_unchecked, squeeze_unchecked
from .modules import kernel_for_gate, kernel_gate, mlp_act_kind
from .peers import qualified_name
from .hooks import has_hooks
from .module_plans import cached
from .tracing import fx_leaf, is_symbolic, leaf_class, sizes

#: the hidden activations the in-kernel MLP computes (of modules.mlp_act_kind's)
_MLP_ACTS = ("relu", "silu")
#: the MLP and norm classes whose computation the kernel reproduces, by the qualified name of their
#: exact type (timm is not imported): timm's, and the reference copies
_CONV_MLPS = ("timm.layers.mlp.ConvMlp", qualified_name(reference.ConvMlp))
_LAYER_NORMS = ("timm.layers.norm.LayerNorm2d", qualified_name(reference.LayerNorm2d))


def _mlp_refusal(name: str, mlp: nn.Module) -> str | None:
    """Why ``mlp`` (mlp_scale or mlp_add) cannot run inside the context kernel, or None."""
    if qualified_name(type(mlp)) not in _CONV_MLPS:
        return f"{name} is a {type(mlp).__name__}, not timm's ConvMlp"
    if qualified_name(type(mlp.norm)) not in _LAYER_NORMS:
        return f"{name}.norm is a {type(mlp.norm).__name__}, not timm's LayerNorm2d"
    rd = mlp.fc1.out_channels
    if mlp.norm.weight is None or mlp.norm.bias is None or tuple(mlp.norm.normalized_shape) != (rd,):
        return f"{name}.norm is not an affine LayerNorm over fc1's {rd} channels"
    if mlp_act_kind(mlp.act) not in _MLP_ACTS:
        return f"{name}.act {type(mlp.act).__name__} has no kernel (ReLU and SiLU do)"
    drop = mlp.drop
    if not (type(drop) is nn.Identity or (type(drop) is nn.Dropout and (drop.p == 0 or not drop.training))):
        return f"{name}.drop is active ({type(drop).__name__} in training)"
    if mlp.fc1.bias is None or mlp.fc2.bias is None:
        return f"{name} has a conv without bias"
    if rd > excitation_block.MAX_HIDDEN:
        return f"{name}'s hidden width {rd} > {excitation_block.MAX_HIDDEN}"
    if any(has_hooks(m) for m in mlp.modules()):
        return f"{name} or a submodule has hooks (the kernel would bypass them)"
    return None


def _mlp_args(mlp: nn.Module | None) -> tuple:
    """tritattn::context_mlp's arguments for one MLP: w1 [RD, C], b1, ln_w, ln_b, w2 [C, RD], b2, eps."""
    if mlp is None:
        return (None,) * 6 + (0.0,)
    return (mlp.fc1.weight.flatten(1), mlp.fc1.bias, mlp.norm.weight, mlp.norm.bias, mlp.fc2.weight.flatten(1),
            mlp.fc2.bias, float(mlp.norm.eps))


@dataclasses.dataclass(frozen=True)
class ContextPlan:
    """What a :class:`GlobalContext` call reads from its module (kept by module_plans)."""

    #: (the layer's name as an error names it, "GlobalContext.conv_attn"; the channels it takes)
    #: for each present layer
    channels: tuple[tuple[str, int], ...]
    #: the gate's kernel name (None: no mlp_scale, or no kernel)
    gate: str | None
    #: why the MLPs cannot run inside the context kernel, whatever x and grad mode; or None
    mlp_refusal: str | None
    #: tritattn::context_mlp's arguments after x, where mlp_refusal is None
    mlp_args: tuple | None
    #: whether a parameter requires a gradient
    params_need_grad: bool


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

    Inference (no gradient needed, with ``conv_attn``, each MLP timm's ConvMlp with LayerNorm2d,
    ReLU or SiLU, no active dropout, no hooks: :meth:`mlp_kernel_refusal`): the MLPs run inside
    the context kernels instead (``tritattn::context_mlp``: context_pool_partials, then
    context_pool_combine_mlp, whose last program per sample computes fc1 → LayerNorm → act → fc2
    for both MLPs), then the scale kernel or the torch add as above — no torch MLP ops.

    A gate without a kernel runs the reference forward, after a one-time warning naming it.
    """

    #: the attribute holding the gate module (for the converter's check)
    gate_attr = "gate"

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self.reference_forward(x)
        if is_symbolic(x):
            return fx_leaf(self, x)
        check_feature_map(x)
        # a gradient through x refuses the in-kernel MLP (inference only) whatever the plan holds,
        # and the per-op path needs only the gate and the layers' channels: read from the module
        # then, without the plan's state token (every layer: ≈ 9 µs alone, ≈ 20 µs inside a step)
        plan = None if torch.is_grad_enabled() and x.requires_grad else self._plan()
        if plan is not None:
            gate = plan.gate
            for name, expected in plan.channels:
                check_channels(x, expected, name)
        else:
            gate = self._gate()
            self._check_channels(x)
        if self.mlp_scale is not None and gate is None:
            return super().forward(x)  # the reference forward
        if plan is not None and self._mlp_kernel_refusal(x, plan) is None:  # inference: the MLPs inside the context kernel
            s, t = dispatch.call(context_mlp_op, x, *plan.mlp_args)
            added = t.to(x.dtype)[:, :, None, None] if self.mlp_add is not None else None  # eager's mlp_add is in x's dtype
            if self.mlp_scale is None:
                return x + added  # a broadcast add is already one pass over x
            # x checked above, s [B, C] and the residual made here: no second check
            return excite_scale_unchecked(x, s, gate, added.expand(x.shape) if added is not None else None)
        # x checked above, the context's weights the module's own: the ops below run unchecked
        conv = self.conv_attn
        if conv is not None:
            ctx = context_step.pool(x, conv.weight, conv.bias)  # [B, C, 1, 1]
        else:
            B, C = x.shape[:2]
            ctx = squeeze_unchecked(x, "mean").view(B, C, 1, 1)
        added = self.mlp_add(ctx) if self.mlp_add is not None else None
        if self.mlp_scale is not None:
            s = self.mlp_scale(ctx)
            check_logits(s, x, "mlp_scale's output")
            residual = None
            if added is not None:
                residual = added.expand(x.shape)
                check_companion(residual, "mlp_add's output", x, tuple(x.shape))
            return excite_scale_unchecked(x, s, gate, residual)
        return x + added if added is not None else x

    def mlp_kernel_refusal(self, x: Tensor) -> str | None:
        """Why ``self(x)`` does not run its MLPs inside the context kernel (tritattn::context_mlp,
        inference only) but on the per-op path, or None when it does."""
        return self._mlp_kernel_refusal(x, self._plan())

    def _mlp_kernel_refusal(self, x: Tensor, plan: ContextPlan) -> str | None:
        if not excitation_block.runs_for(x):
            return "the block pipelines are off or x is not on Triton kernels"
        if torch.is_grad_enabled() and (x.requires_grad or plan.params_need_grad):
            return "a gradient is needed (the in-kernel MLP has no backward)"
        return plan.mlp_refusal

    def _plan(self) -> ContextPlan:
        """What a call reads from the module, built once while it is unchanged (module_plans;
        hooks watched: a hooked MLP refuses the kernel)."""
        return cached(self, self._build_plan, (excitation_block.MAX_HIDDEN,), watch_hooks=True)

    def _layer_channels(self) -> tuple[tuple[str, int], ...]:
        """ContextPlan.channels, from the module now."""
        cls, channels = type(self).__name__, []
        conv = self.conv_attn
        if conv is not None:
            channels.append((f"{cls}.conv_attn", conv.in_channels))
        for name in ("mlp_scale", "mlp_add"):
            mlp = getattr(self, name)
            if mlp is not None:
                channels.append((f"{cls}.{name}", mlp.fc1.in_channels))
        return tuple(channels)

    def _check_channels(self, x: Tensor) -> None:
        """The layers' channels against x's, read from the module now (the names of
        :meth:`_layer_channels` made only for an error)."""
        C, conv, scale, add = sizes(x)[1], self.conv_attn, self.mlp_scale, self.mlp_add
        if ((conv is not None and conv.in_channels != C) or (scale is not None and scale.fc1.in_channels != C)
                or (add is not None and add.fc1.in_channels != C)):
            for name, expected in self._layer_channels():
                check_channels(x, expected, name)

    def _gate(self) -> str | None:
        """ContextPlan.gate, from the module now."""
        return kernel_gate(self, self.gate) if self.mlp_scale is not None else None

    def _build_plan(self) -> ContextPlan:
        refusal = self._static_mlp_refusal()
        mlp_args = None
        if refusal is None:  # conv_attn present: its weight viewed as [C]
            mlp, conv = self.mlp_scale if self.mlp_scale is not None else self.mlp_add, self.conv_attn
            mlp_args = (conv.weight.view(conv.in_channels), *_mlp_args(self.mlp_scale), *_mlp_args(self.mlp_add),
                        mlp_act_kind(mlp.act))
        return ContextPlan(self._layer_channels(), self._gate(), refusal, mlp_args,
                           any(p.requires_grad for p in self.parameters()))

    def _static_mlp_refusal(self) -> str | None:
        """:meth:`mlp_kernel_refusal`'s reasons that do not depend on x or grad mode."""
        if self.conv_attn is None:
            return "no conv_attn: the mean context runs on the per-op path"
        mlps = [(name, getattr(self, name)) for name in ("mlp_scale", "mlp_add") if getattr(self, name) is not None]
        if not mlps:
            return "no MLP"
        for name, mlp in mlps:
            why = _mlp_refusal(name, mlp)
            if why is not None:
                return why
        if len({type(mlp.act) for _, mlp in mlps}) > 1:
            return "mlp_scale and mlp_add have different activations"
        if self.mlp_scale is not None and kernel_for_gate(self.gate) is None:
            return f"the gate {type(self.gate).__name__} has no kernel"
        return None


leaf_class(GlobalContext, reference.GlobalContext.forward)  # a leaf of torch.fx traces; TorchScript runs the reference
