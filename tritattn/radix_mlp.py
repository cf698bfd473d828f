"""The radix twins' attention MLP on the per-op short path, called as its layers' functions:
fc1 → BatchNorm → act → fc2 → the softmax as the calls the modules' forwards make
(``conv2d``, ``batch_norm``, ``relu_``, ``conv2d``, ``softmax`` / ``sigmoid``), without the
modules' ``__call__``.

Between the pool and the combine (tritattn/radix_step.py), a SplitAttn / SelectiveKernel call on
the per-op path runs its attention MLP. Called as modules, each of its five layers costs a
``Module.__call__`` (its hook dictionaries read, a frame, ``forward``'s own) on top of its aten
call; called here, the aten calls alone, recorded by autograd as the modules' are (the same
nodes, run by the engine in C++). The same calls on the same tensors: the modules' bits, the
BatchNorm's running statistics and batch count, the gradients, autocast's casts
(tests/test_radix_mlp.py). Host time on perf/host_time.py's proxy (launches stubbed, B = 8,
SplitAttn's pool, MLP and combine timed alone, µs forward / training step): eager 115 / 320, the
MLP as modules 133 / 338, as functions 113 / 313; in the whole block's step, interleaved rounds,
ResNeSt ≈ 6–11 µs less and SKNet ≈ 1–13 µs less than with the modules. One Function over the
pool, the MLP and the combine (the MLP's backward formulas called from Python) was tried: 107 /
329 — its backward's aten calls from Python cost more than the engine's own (221 against 205 µs).

It applies where the layers are what these calls are written for — ``nn.Conv2d`` fc layers with
zero padding given as integers, an ``nn.BatchNorm2d`` or ``nn.Identity``, an ``nn.ReLU`` or
``nn.Identity``, timm's RadixSoftmax (or the reference's) of the block's radix —, no layer has a
hook (nor a global module hook, nor an instance ``forward``), and not for a training BatchNorm
over one value per channel (the module raises eager's error). Otherwise the caller calls the
modules, as before.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from . import reference
from .batchnorm import count_batch
from .hooks import global_module_hooks, hooked
from .peers import qualified_name

#: timm's and the reference's RadixSoftmax (the logit order radix_logit_order undoes)
RADIX_SOFTMAXES = ("timm.layers.split_attn.RadixSoftmax", qualified_name(reference.RadixSoftmax))
#: class → whether it is one of RADIX_SOFTMAXES (its qualified name read once)
_radix_softmaxes: dict[type, bool] = {}
#: (fc1, norm, act, fc2) classes the calls here are written for
_PLAIN_LAYERS = frozenset((nn.Conv2d, norm, act, nn.Conv2d) for norm in (nn.BatchNorm2d, nn.Identity)
                          for act in (nn.ReLU, nn.Identity))


def is_radix_softmax(cls: type) -> bool:
    """Whether ``cls`` is timm's or the reference's RadixSoftmax."""
    known = _radix_softmaxes.get(cls)
    if known is None:
        known = _radix_softmaxes[cls] = qualified_name(cls) in RADIX_SOFTMAXES
    return known


def applies(fc1: nn.Module, norm: nn.Module, act: nn.Module, fc2: nn.Module, batch: int,
            owner: Optional[nn.Module] = None) -> bool:
    """Whether :func:`logits` computes this MLP now, for a batch of ``batch`` (module docstring);
    ``owner``: a module around the layers whose hooks would be bypassed too (the softmax)."""
    if (type(fc1), type(norm), type(act), type(fc2)) not in _PLAIN_LAYERS or not (_plain_conv(fc1) and _plain_conv(fc2)):
        return False
    if (hooked(fc1.__dict__) or hooked(norm.__dict__) or hooked(act.__dict__) or hooked(fc2.__dict__)
            or (owner is not None and hooked(owner.__dict__)) or global_module_hooks()):
        return False
    # a training BatchNorm over one value per channel: the module raises eager's error
    return batch != 1 or type(norm) is not nn.BatchNorm2d or not (norm.training or norm.running_mean is None)


def _plain_conv(conv: nn.Conv2d) -> bool:
    """Conv2d.forward is ``conv2d(x, weight, bias, stride, padding, dilation, groups)``: zero
    padding, given as integers (not "same" / "valid")."""
    return conv.padding_mode == "zeros" and type(conv.padding) is tuple


def logits(pooled: Tensor, fc1: nn.Conv2d, norm: nn.Module, act: nn.Module, fc2: nn.Conv2d) -> Tensor:
    """fc2(act(norm(fc1(pooled)))) for the layers :func:`applies` accepts, by their modules' calls."""
    h = torch.conv2d(pooled, fc1.weight, fc1.bias, fc1.stride, fc1.padding, fc1.dilation, fc1.groups)
    if type(norm) is nn.BatchNorm2d:
        h = _batch_norm(h, norm)
    if type(act) is nn.ReLU:
        h = torch.relu_(h) if act.inplace else torch.relu(h)
    return torch.conv2d(h, fc2.weight, fc2.bias, fc2.stride, fc2.padding, fc2.dilation, fc2.groups)


def _batch_norm(h: Tensor, bn: nn.BatchNorm2d) -> Tensor:
    """``bn(h)``: ``_BatchNorm.forward``'s batch count, factor and statistics, then ``F.batch_norm``'s
    call (its one-value check is :func:`applies`')."""
    factor = count_batch(bn, h.shape) if bn.training else 0.0 if bn.momentum is None else bn.momentum
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    running = not bn.training or bn.track_running_stats
    return torch.batch_norm(h, bn.weight, bn.bias, bn.running_mean if running else None,
                            bn.running_var if running else None, batch_stats, factor, bn.eps,
                            torch.backends.cudnn.enabled)


def radix_softmax(z: Tensor, radix: int, cardinality: int) -> Tensor:
    """RadixSoftmax's forward: over the radix of logits in (cardinality, radix, C / cardinality)
    order, as [B, R·C] in (radix, channel) order; the sigmoid (shape kept) for radix 1."""
    if radix > 1:
        batch = z.shape[0]
        return torch.softmax(z.view(batch, cardinality, radix, -1).transpose(1, 2), 1).reshape(batch, -1)
    return torch.sigmoid(z)
