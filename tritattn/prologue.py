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

The run-time part (the :class:`~tritattn.producer.Prologue` a block holds, the pass-through
classes, which unpickling looks up) is :mod:`tritattn.producer`, beside the blocks; this module
finds the producer and makes the rewrite, at convert time.
"""
from __future__ import annotations

from torch import nn

from . import producer
from .hooks import has_hooks
from .peers import ORIGINAL_CLASS_ATTR, class_before_convert, qualified_name
from .probe import probe_rewrite
from .producer import (_BATCHNORM, _BATCHNORM_ACT, ACTIVATIONS, PROLOGUE_ATTR, Prologue, is_passthrough,
                       passthrough_class)

#: models pickled before the run-time part moved to tritattn.producer name their pass-through classes here
__getattr__ = producer.__getattr__


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


def drop_prologue(se: nn.Module) -> bool:
    """Forget ``se``'s prologue (its producers get their classes back through convert.revert); whether it had one."""
    return se.__dict__.pop(PROLOGUE_ATTR, None) is not None
