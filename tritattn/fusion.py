"""The SE-ResNet tail in one pass: ``relu(se(x) + shortcut)`` for timm's ResNet blocks.

timm's ``BasicBlock`` and ``Bottleneck`` (``timm.models.resnet``) end in::

    x = self.se(x); x = self.drop_path(x)  # if set
    shortcut = self.downsample(shortcut)  # if set
    x += shortcut; x = self.act(x)  # act2 (BasicBlock) / act3 (Bottleneck)

and the original SENet's blocks (``timm.models.senet``: ``SEResNetBlock``, and ``SEBottleneck``,
``SEResNetBottleneck``, ``SEResNeXtBottleneck``, which share one ``forward``) in::

    out = self.se_module(out) + shortcut; out = self.relu(out)

With the attention block (``se`` / ``se_module``) a fast channel-attention block (:class:`~tritattn.modules.ChannelExcitation`), no
``drop_path`` and a plain ``nn.ReLU``, the excitation, the residual add and the ReLU are one
:meth:`~tritattn.modules.ChannelExcitation.excite` pass (one read of x and of the shortcut, one
write). :func:`fuse_tail` re-classes such a block to a subclass of its own class whose
``forward`` does that; the forwards here mirror timm's line for line up to the SE, and a block
is fused only when :func:`fusion_refusal` finds no reason against it — among them, the fused
forward must compute what the block's own ``forward`` does: a random float32 copy of the block
is run both ways at convert time (:func:`tritattn.probe.probe_rewrite`), so a timm release that
changes the block's forward turns its fusion off, with the reason in the report, whatever its
source text. The fused forward re-checks :func:`fusion_blocker` on every call and runs timm's
own forward when something changed since (a drop path set, a hook added).

The fused classes are attributes of this module (created on first use, also by attribute
access), so a fused model pickles and deep-copies like the original.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from .modules import CbamPipeline, ChannelExcitation, kernel_gate_as
from .peers import qualified_name
from .probe import probe_rewrite
from .hooks import has_hooks
from .reclass import class_lookup, derived_class
from .tracing import fx_leaf, is_symbolic, leaf_class
from .twins import FAST_TWINS

log = logging.getLogger("tritattn")


def _basic_block_forward(self, x: Tensor) -> Tensor:
    """timm's ``BasicBlock.forward`` with the SE, residual add and act2 fused."""
    if torch.jit.is_scripting():
        return self.reference_forward(x)
    if is_symbolic(x):
        return fx_leaf(self, x)
    if _unfused_now(self):
        return unfused_class(self).forward(self, x)
    shortcut = x
    x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
    x = self.bn2(self.conv2(x))
    if self.downsample is not None:
        shortcut = self.downsample(shortcut)
    return self.se.excite(x, shortcut, "relu")


def _bottleneck_forward(self, x: Tensor) -> Tensor:
    """timm's ``Bottleneck.forward`` with the SE, residual add and act3 fused."""
    if torch.jit.is_scripting():
        return self.reference_forward(x)
    if is_symbolic(x):
        return fx_leaf(self, x)
    if _unfused_now(self):
        return unfused_class(self).forward(self, x)
    shortcut = x
    x = self.act1(self.bn1(self.conv1(x)))
    x = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(x)))))
    x = self.bn3(self.conv3(x))
    if self.downsample is not None:
        shortcut = self.downsample(shortcut)
    return self.se.excite(x, shortcut, "relu")


def _senet_block_forward(self, x: Tensor) -> Tensor:
    """timm's ``senet.SEResNetBlock.forward`` with the SE, residual add and ReLU fused."""
    if torch.jit.is_scripting():
        return self.reference_forward(x)
    if is_symbolic(x):
        return fx_leaf(self, x)
    if _unfused_now(self):
        return unfused_class(self).forward(self, x)
    shortcut = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    if self.downsample is not None:
        shortcut = self.downsample(x)
    return self.se_module.excite(out, shortcut, "relu")


def _senet_bottleneck_forward(self, x: Tensor) -> Tensor:
    """timm's ``senet.Bottleneck.forward`` (SEBottleneck, SEResNetBottleneck, SEResNeXtBottleneck)
    with the SE, residual add and ReLU fused."""
    if torch.jit.is_scripting():
        return self.reference_forward(x)
    if is_symbolic(x):
        return fx_leaf(self, x)
    if _unfused_now(self):
        return unfused_class(self).forward(self, x)
    shortcut = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.downsample is not None:
        shortcut = self.downsample(x)
    return self.se_module.excite(out, shortcut, "relu")


@dataclass(frozen=True)
class MirroredTail:
    """A timm block class whose tail can be fused: the names of its attention block and of its
    last activation, and its forward with that tail as one pass."""

    se: str
    act: str
    forward: Callable[..., Tensor]


#: timm block class → its :class:`MirroredTail`
MIRRORED_FORWARDS: dict[str, MirroredTail] = {
    "timm.models.resnet.BasicBlock": MirroredTail("se", "act2", _basic_block_forward),
    "timm.models.resnet.Bottleneck": MirroredTail("se", "act3", _bottleneck_forward),
    "timm.models.senet.SEResNetBlock": MirroredTail("se_module", "relu", _senet_block_forward),
    **{f"timm.models.senet.{name}": MirroredTail("se_module", "relu", _senet_bottleneck_forward)
       for name in ("SEBottleneck", "SEResNetBottleneck", "SEResNeXtBottleneck")},
}


def tail_attention(block: nn.Module) -> nn.Module | None:
    """The attention block of a timm block with a fusable tail (``se`` or ``se_module``), else None."""
    mirrored = MIRRORED_FORWARDS.get(qualified_name(unfused_class(block)))
    return getattr(block, mirrored.se, None) if mirrored is not None else None

_FUSED_PREFIX = "ResidualFused"


def unfused_class(block: nn.Module) -> type[nn.Module]:
    """The timm class of a block, fused or not."""
    cls = type(block)
    return cls.__base__ if cls.__name__.startswith(_FUSED_PREFIX) and cls.__module__ == __name__ else cls


_logged_refusals: set[tuple[str, str]] = set()


def _unfused_now(block: nn.Module) -> bool:
    """Whether a fused block must run timm's forward on this call (logged once per class and reason)."""
    reason = fusion_blocker(block)
    if reason is not None:
        key = (type(block).__name__, reason)
        if key not in _logged_refusals:
            _logged_refusals.add(key)
            log.debug("a fused %s runs timm's unfused forward: %s", unfused_class(block).__name__, reason)
    return reason is not None


def fusion_blocker(block: nn.Module, se_class: type[nn.Module] | None = None) -> str | None:
    """Why ``block``'s tail cannot run fused now, or None when it can (the block's own class,
    its ``se`` and its last activation are not inspected for anything else). ``se_class``: the
    class its ``se`` is about to be given (default: its class now), for a plan made before."""
    cls = unfused_class(block)
    mirrored = MIRRORED_FORWARDS.get(qualified_name(cls))
    if mirrored is None:
        return f"{qualified_name(cls)} is not a timm ResNet block"
    se, act = getattr(block, mirrored.se, None), getattr(block, mirrored.act, None)
    se_class = se_class or type(se)
    if not issubclass(se_class, ChannelExcitation):
        return _attention_refusal(type(se).__name__, se_class)
    drop_path = getattr(block, "drop_path", None)
    if drop_path is not None and type(drop_path) is not nn.Identity:
        return f"it has a drop path ({type(drop_path).__name__})"
    if type(act) is not nn.ReLU:
        return f"its last activation is {type(act).__name__}, not nn.ReLU"
    if has_hooks(se) or has_hooks(act) or "forward" in block.__dict__:
        return "a hook or an instance forward on the block, its attention or its last activation would be bypassed"
    if kernel_gate_as(se, se_class) is None:
        return f"its attention's gate ({type(getattr(se, se_class.gate_attr)).__name__}) has no kernel"
    return None


def _attention_refusal(name: str, se_class: type[nn.Module]) -> str:
    """Why a tail whose attention block (class ``name``, about to be ``se_class``) is not a fast
    channel-attention block cannot be fused: the fused pass scales by channel attention only."""
    if issubclass(se_class, CbamPipeline):
        return (f"its attention ({name}) is a CBAM block: the fused pass applies a channel attention only, and "
                "CBAM's spatial attention comes after its channel attention, before the residual add")
    if se_class in FAST_TWINS.values():
        return f"its attention ({name}) is not a channel-attention block, and the fused pass applies one only"
    return f"its attention ({name}) is not converted (left eager), and the fused pass needs a converted channel-attention block"


def is_fused(block: nn.Module) -> bool:
    """Whether ``block`` was re-classed by :func:`fuse_tail`."""
    return type(block) is not unfused_class(block)


def fused_class(cls: type[nn.Module]) -> type[nn.Module]:
    """The fused subclass of timm block class ``cls`` (created once, kept as an attribute here)."""
    fused = derived_class(globals(), _FUSED_PREFIX, cls, MIRRORED_FORWARDS[qualified_name(cls)].forward,
                          f"{qualified_name(cls)} with its SE, residual add and ReLU in one kernel pass.")
    return leaf_class(fused, cls.forward)  # a leaf of torch.fx traces; TorchScript runs timm's forward


def fusion_refusal(block: nn.Module, se_class: type[nn.Module] | None = None) -> str | None:
    """Why ``block`` (an unfused timm ResNet block) may not be fused, or None when it may;
    ``se_class`` as in :func:`fusion_blocker`."""
    reason = fusion_blocker(block, se_class)
    if reason is not None:
        return reason
    se_class = se_class or type(tail_attention(block))

    def twin(copy_: nn.Module) -> None:  # both sides: the SE as convert makes it
        tail_attention(copy_).__class__ = se_class

    def fuse(copy_: nn.Module) -> None:
        copy_.__class__ = fused_class(type(copy_))

    reason = probe_rewrite(block, fuse, baseline=twin)
    return None if reason is None else f"the fused forward is not {qualified_name(type(block))}'s: {reason}"


def fuse_tail(block: nn.Module) -> None:
    """Re-class ``block`` (an unfused timm ResNet block :func:`fusion_refusal` accepts) so that
    its SE, residual add and ReLU run as one pass."""
    block.__class__ = fused_class(type(block))


def unfuse(block: nn.Module) -> bool:
    """Give a fused block its timm class back; whether it was fused."""
    fused = is_fused(block)
    block.__class__ = unfused_class(block)
    return fused


#: unpickling a fused model looks its block classes up here: built on demand
__getattr__ = class_lookup(__name__, _FUSED_PREFIX, lambda: list(MIRRORED_FORWARDS), fused_class)
