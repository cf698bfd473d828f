"""The producer an SE block computes itself, at run time: the :class:`Prologue` the block holds,
and the pass-through class its producer modules take (:mod:`tritattn.prologue` finds the producer
and makes the rewrite at convert time; this module is what the converted model runs and unpickles).

The pass-through classes are attributes of this module (created on first use, also by attribute
access), so a fused model pickles and deep-copies like the original.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .peers import class_before_convert, qualified_name
from .reclass import class_lookup, derived_class
from .tracing import fx_leaf, is_symbolic, leaf_class

#: the attribute of an SE block holding its :class:`Prologue` (in its ``__dict__``, not its state)
PROLOGUE_ATTR = "_tritattn_prologue"

#: activation classes the prologue computes (exact types: a subclass may differ) → kernel name
ACTIVATIONS: dict[str, str] = {
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.SiLU": "silu",
    "torch.nn.modules.activation.Hardswish": "hardswish",
}
_BATCHNORM_ACT = "timm.layers.norm_act.BatchNormAct2d"
_BATCHNORM = "torch.nn.modules.batchnorm.BatchNorm2d"
#: the producer classes that may be made to pass their input through
PASSTHROUGH_PEERS = (_BATCHNORM_ACT, _BATCHNORM, *ACTIVATIONS)
_PREFIX = "TakenIntoNext"


@dataclass(eq=False)
class Prologue:
    """An SE block's producer: its BatchNorm (torch's ``BatchNorm2d`` or timm's ``BatchNormAct2d``,
    both run by ``nn.BatchNorm2d.forward``) and its activation module (for timm, ``norm.act``)."""

    norm: nn.BatchNorm2d
    act: nn.Module

    @property
    def kind(self) -> str:
        """The kernels' name of the activation."""
        return ACTIVATIONS[qualified_name(class_before_convert(self.act))]

    def batchnorm(self, c: Tensor) -> Tensor:
        """z = the BatchNorm's output, by its own forward (batch statistics and their update in training)."""
        return nn.BatchNorm2d.forward(self.norm, c)

    def eager(self, c: Tensor) -> Tensor:
        """x = act(bn(c)) by the producer modules' own forwards."""
        return class_before_convert(self.act).forward(self.act, self.batchnorm(c))

    def norm_args(self) -> tuple:
        """The BatchNorm as the kernels take it: (weight, bias, running mean, running var, eps)."""
        n = self.norm
        return (n.weight, n.bias, n.running_mean, n.running_var, n.eps)


def _passthrough_forward(self: nn.Module, x: Tensor) -> Tensor:
    if torch.jit.is_scripting():  # its own class's forward: the SE block's reference forward takes act(bn(c))
        return self.reference_forward(x)
    if is_symbolic(x):
        return fx_leaf(self, x)
    if self._forward_hooks or self._forward_pre_hooks:
        raise RuntimeError(
            f"this {class_before_convert(self).__name__} was taken into the SE block after it by tritattn.convert "
            "and passes its input through: a hook on it would see the wrong tensor (tritattn.revert the model first)")
    return x


def passthrough_class(cls: type[nn.Module]) -> type[nn.Module]:
    """The subclass of producer class ``cls`` whose forward passes its input through (created once)."""
    passthrough = derived_class(globals(), _PREFIX, cls, _passthrough_forward,
                                f"{qualified_name(cls)} taken into the SE block after it: passes its input through.")
    return leaf_class(passthrough, cls.forward)  # a leaf of torch.fx traces; TorchScript runs cls's forward


#: unpickling a model with a producer taken in looks its pass-through classes up here: built on demand
__getattr__ = class_lookup(__name__, _PREFIX, lambda: list(PASSTHROUGH_PEERS), passthrough_class)


def is_passthrough(module: nn.Module) -> bool:
    """Whether ``module`` is a producer made to pass its input through by :func:`tritattn.prologue.fuse_prologue`."""
    return type(module).__module__ == __name__ and type(module).__name__.startswith(_PREFIX)


def prologue_of(se: nn.Module) -> Prologue | None:
    """The prologue an SE block computes, or None."""
    return se.__dict__.get(PROLOGUE_ATTR)
