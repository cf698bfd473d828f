"""timm's and torchvision's classes as tritattn knows them, by qualified name.

Neither library is imported here: a class is recognised by the ``module.QualName`` of its exact
type, so aliases (timm's ``SqueezeExcite`` = ``SEModule``, ``EfficientChannelAttn`` =
``EcaModule``, ...) are the same peer, and a subclass is *not* its parent's peer (it may compute
something else). The names are those of timm 1.0.x and torchvision 0.2x.
"""
from __future__ import annotations

from torch import nn

#: peer attention class → the name of its fast twin in :mod:`tritattn.modules`
PEER_TWINS: dict[str, str] = {
    "timm.layers.squeeze_excite.SEModule": "SEModule",
    "timm.layers.squeeze_excite.EffectiveSEModule": "EffectiveSEModule",
    "timm.layers.eca.EcaModule": "EcaModule",
    "timm.layers.eca.CecaModule": "CecaModule",
    "timm.layers.cbam.ChannelAttn": "ChannelAttn",
    "timm.layers.cbam.LightChannelAttn": "LightChannelAttn",
    "timm.layers.cbam.SpatialAttn": "SpatialAttn",
    "timm.layers.cbam.LightSpatialAttn": "LightSpatialAttn",
    "timm.layers.cbam.CbamModule": "CbamModule",
    "timm.layers.cbam.LightCbamModule": "LightCbamModule",
    "timm.models._efficientnet_blocks.SqueezeExcite": "SqueezeExcite",
    "torchvision.ops.misc.SqueezeExcitation": "SqueezeExcitation",
    "timm.models.senet.SEModule": "LegacySEModule",
    "timm.layers.split_attn.SplitAttn": "SplitAttn",
    "timm.layers.selective_kernel.SelectiveKernel": "SelectiveKernel",
    "timm.layers.selective_kernel.SelectiveKernelAttn": "SelectiveKernelAttn",
    "timm.layers.global_context.GlobalContext": "GlobalContext",
}

#: peer gate classes that compute exactly a kernel gate (timm's ``create_act_layer("sigmoid")``
#: builds ``timm.layers.activations.Sigmoid``; its ``HardSigmoid`` is ``relu6(x + 3) / 6``, the
#: same function and derivative as ``nn.Hardsigmoid``; their ``inplace`` flag only decides
#: whether the logits tensor is overwritten, which the kernels never need)
PEER_GATES: dict[str, str] = {
    "timm.layers.activations.Sigmoid": "sigmoid",
    "timm.layers.activations.HardSigmoid": "hard_sigmoid",
}

#: timm's other channel- and spatial-attention blocks (``timm.layers.create_attn``): no twin yet,
#: left as they are (no registered timm architecture uses one)
WITHOUT_TWIN: frozenset[str] = frozenset({
    "timm.layers.squeeze_excite.SqueezeExciteCl",
    "timm.layers.gather_excite.GatherExcite",
    "timm.layers.coord_attn.CoordAttn",
    "timm.layers.coord_attn.SimpleCoordAttn",
    "timm.layers.coord_attn.EfficientLocalAttn",
    "timm.layers.coord_attn.StripAttn",
})

#: timm's self-attention layers (``create_attn`` builds them too): query-key attention over
#: pixels, not the squeeze-and-scale of channel or spatial attention — outside tritattn's scope
SELF_ATTENTION: frozenset[str] = frozenset({
    "timm.layers.bottleneck_attn.BottleneckAttn",
    "timm.layers.halo_attn.HaloAttn",
    "timm.layers.lambda_layer.LambdaLayer",
    "timm.layers.non_local_attn.NonLocalAttn",
    "timm.layers.non_local_attn.BatNonLocalAttn",
})

#: the attribute of a module re-classed by :func:`tritattn.convert` holding its class before
ORIGINAL_CLASS_ATTR = "_tritattn_original_class"


def class_before_convert(module: nn.Module) -> type[nn.Module]:
    """The class ``module`` had before :func:`tritattn.convert` re-classed it (its class if not)."""
    return module.__dict__.get(ORIGINAL_CLASS_ATTR, type(module))


def qualified_name(cls: type) -> str:
    """``module.QualName`` of a class, e.g. ``"timm.layers.eca.EcaModule"``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def peer_gate_kind(gate: nn.Module | None) -> str | None:
    """The kernel gate a timm gate module computes (see :data:`PEER_GATES`), else None."""
    return PEER_GATES.get(qualified_name(type(gate)))
