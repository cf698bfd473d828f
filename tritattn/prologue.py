"""The producer's BatchNorm and activation taken into the SE block after it.

In EfficientNet, MobileNetV3, MnasNet and RegNetY (timm and torchvision alike) an SE block's input
is ``x = act(bn(conv(...)))`` and nothing else reads x. Eager writes z = bn(…) and x = act(z),
saves both for backward (z for act's, x for the SE's), and the SE reads x twice. After
:func:`fuse_prologue` the producer's BatchNorm and activation pass their input through, and the
SE block (a :class:`~tritattn.modules.ChannelExcitation`, whose :attr:`PROLOGUE_ATTR` holds a
:class:`Prologue`) computes them itself: its kernels load c, the BatchNorm's input, and compute
z = bn(c) and x = act(z) where they load it (kernels/norm_act.py): with the batch's statistics in training
(kernels/prologue_norm.py: one more pass over c before the squeeze; the module counts the batch
and moves the running statistics, as ``nn.BatchNorm2d`` does), with the running ones in eval.
Neither z nor x is written or saved: the block saves c (which eager's BatchNorm saves too), and
its backward recomputes both, through act' and the BatchNorm's backward (its weight and bias
gradients included). An inference SE region reads the conv output twice and writes once
(eager: 7 passes); a training forward reads it three times.

Off the Triton kernels (the eager fallback, or a block whose pipeline is refused) the block first
computes x with the producer modules' own forwards, so the result is eager's.

Which producer: the SE's previous sibling in its parent, skipping identities (timm's ``aa``),
descending into a container's last non-identity child — a timm ``BatchNormAct2d`` (with identity
``drop``), or a ``BatchNorm2d`` followed by the activation (torchvision's
``Conv2dNormActivation``). Registration order is only a guess at dataflow, so
:func:`prologue_refusal` accepts a producer only when the parent block, probed on a random CPU
copy (:func:`tritattn.probe.probe_rewrite`), computes the same with the fusion as without —
a check of what the code does, not of which release wrote it.

The pass-through classes are attributes of this module (created on first use, also by
attribute access), so a fused model pickles and deep-copies like the original.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .peers import ORIGINAL_CLASS_ATTR, class_before_convert, qualified_name
from .probe import probe_rewrite
from .reclass import class_lookup, derived_class, has_hooks

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
    if self._forward_hooks or self._forward_pre_hooks:
        raise RuntimeError(
            f"this {class_before_convert(self).__name__} was taken into the SE block after it by tritattn.convert "
            "and passes its input through: a hook on it would see the wrong tensor (tritattn.revert the model first)")
    return x


def passthrough_class(cls: type[nn.Module]) -> type[nn.Module]:
    """The subclass of producer class ``cls`` whose forward passes its input through (created once)."""
    return derived_class(globals(), _PREFIX, cls, _passthrough_forward,
                         f"{qualified_name(cls)} taken into the SE block after it: passes its input through.")


#: unpickling a model with a producer taken in looks its pass-through classes up here: built on demand
__getattr__ = class_lookup(__name__, _PREFIX, lambda: list(PASSTHROUGH_PEERS), passthrough_class)


def find_producer(parent: nn.Module, se_name: str) -> tuple[Prologue, list[nn.Module]] | str:
    """The producer of ``parent``'s child ``se_name`` and the modules to pass through, or why none:
    among the modules before it (its earlier siblings, then a container's children), skipping
    identities, the last is a BatchNormAct2d, or an activation right after a BatchNorm2d."""
    names = list(parent._modules)
    items = [parent._modules[n] for n in names[:names.index(se_name)]]
    items = [m for m in items if m is not None and type(m) is not nn.Identity]
    if not items:
        return "nothing before it in its parent block"
    not_found = f"its input comes from a {type(items[-1]).__name__}, not a BatchNorm and an activation"
    while items:
        last = items[-1]
        if qualified_name(class_before_convert(last)) == _BATCHNORM_ACT:
            drop, act = getattr(last, "drop", None), getattr(last, "act", None)
            if drop is not None and type(drop) is not nn.Identity:
                return f"its producer's BatchNormAct2d has a drop ({type(drop).__name__})"
            if qualified_name(class_before_convert(act)) not in ACTIVATIONS:
                return f"its producer's activation {type(act).__name__} has no kernel (ReLU, SiLU, Hardswish do)"
            return Prologue(last, act), [last]
        children = [c for c in last.children() if type(c) is not nn.Identity]
        if not children:
            if len(items) < 2 or qualified_name(class_before_convert(items[-2])) != _BATCHNORM:
                return not_found
            if qualified_name(class_before_convert(last)) not in ACTIVATIONS:
                if "activation" not in class_before_convert(last).__module__:
                    return not_found
                return f"its producer's activation {type(last).__name__} has no kernel (ReLU, SiLU, Hardswish do)"
            return Prologue(items[-2], last), [items[-2], last]
        items = children
    return not_found


def _refusal_of_parts(prologue: Prologue, passthrough: list[nn.Module], se: nn.Module) -> str | None:
    norm = prologue.norm
    if not norm.affine:
        return "its producer's BatchNorm has no weight and bias"
    if any(has_hooks(m) for m in (*passthrough, prologue.act, se)):
        return "a hook or an instance forward on the SE block or its producer would be bypassed"
    if any(type(m) is not class_before_convert(m) and not is_passthrough(m) for m in passthrough):
        return "its producer is itself converted"
    return None


def prologue_refusal(parent: nn.Module, se_name: str, se_twin: type[nn.Module]) -> tuple[Prologue, list[nn.Module]] | str:
    """(the prologue, the modules to pass through) for ``parent``'s SE child ``se_name`` about to
    run as ``se_twin``, or why its producer may not be taken in (module docstring)."""
    se = parent._modules[se_name]
    found = find_producer(parent, se_name)
    if isinstance(found, str):
        return found
    prologue, passthrough = found
    reason = _refusal_of_parts(prologue, passthrough, se)
    if reason is not None:
        return reason
    paths = {id(m): path for path, m in parent.named_modules()}
    passthrough_paths = [paths[id(m)] for m in passthrough]
    norm_path, act_path = paths[id(prologue.norm)], paths[id(prologue.act)]

    def twin(copy_: nn.Module) -> None:  # both sides: the SE as convert makes it
        copy_.get_submodule(se_name).__class__ = se_twin

    def rewrite(copy_: nn.Module) -> None:
        fuse_prologue(copy_.get_submodule(se_name),
                      Prologue(copy_.get_submodule(norm_path), copy_.get_submodule(act_path)),
                      [copy_.get_submodule(p) for p in passthrough_paths])

    return probe_rewrite(parent, rewrite, baseline=twin) or (prologue, passthrough)


def fuse_prologue(se: nn.Module, prologue: Prologue, passthrough: list[nn.Module]) -> None:
    """Make ``passthrough`` pass their input through and ``se`` compute ``prologue`` itself."""
    for module in passthrough:
        if not is_passthrough(module):
            setattr(module, ORIGINAL_CLASS_ATTR, type(module))
            module.__class__ = passthrough_class(type(module))
    se.__dict__[PROLOGUE_ATTR] = prologue


def is_passthrough(module: nn.Module) -> bool:
    """Whether ``module`` is a producer made to pass its input through by :func:`fuse_prologue`."""
    return type(module).__module__ == __name__ and type(module).__name__.startswith(_PREFIX)


def prologue_of(se: nn.Module) -> Prologue | None:
    """The prologue an SE block computes, or None."""
    return se.__dict__.get(PROLOGUE_ATTR)


def drop_prologue(se: nn.Module) -> bool:
    """Forget ``se``'s prologue (its producers get their classes back through convert.revert); whether it had one."""
    return se.__dict__.pop(PROLOGUE_ATTR, None) is not None
