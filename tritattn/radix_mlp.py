"""The radix twins' attention MLP on the per-op path, called as its layers' functions:
fc1 → BatchNorm → act → fc2 → the softmax as the calls the modules' forwards make
(``conv2d``, ``batch_norm``, ``relu_``, ``conv2d``, ``softmax`` / ``sigmoid``), without the
modules' ``__call__`` (tritattn/layer_calls.py: the layers' calls, and where they apply).

Between the pool and the combine (tritattn/radix_step.py), a SplitAttn / SelectiveKernel call on
the per-op path runs its attention MLP. Called as modules, each of its five layers costs a
``Module.__call__`` on top of its aten call; called here, the aten calls alone, recorded by
autograd as the modules' are. The same calls on the same tensors: the modules' bits, the
BatchNorm's running statistics and batch count, the gradients, autocast's casts
(tests/test_radix_mlp.py). Host time on perf/host_time.py's proxy (launches stubbed, B = 8,
SplitAttn's pool, MLP and combine timed alone, µs forward / training step): eager 115 / 320, the
MLP as modules 133 / 338, as functions 113 / 313. One Function over the pool, the MLP and the
combine (the MLP's backward formulas called from Python) was tried: 107 / 329 — its backward's
aten calls from Python cost more than the engine's own (221 against 205 µs).

It applies where the call's layers may be taken as calls (``layer_calls.no_module_hooks``) and
each layer is what its call is written for — ``nn.Conv2d`` fc layers with zero padding given as
integers, an ``nn.BatchNorm2d`` or ``nn.Identity``, an ``nn.ReLU`` or ``nn.Identity``, timm's
RadixSoftmax (or the reference's) of the block's radix, none hooked. Otherwise the caller calls
the modules, as before.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from . import reference
from .hooks import hooked
from .layer_calls import act_applies, conv2d, conv_applies, is_one_of, norm_act, norm_applies
from .peers import qualified_name

#: timm's and the reference's RadixSoftmax (the logit order radix_logit_order undoes)
RADIX_SOFTMAXES = ("timm.layers.split_attn.RadixSoftmax", qualified_name(reference.RadixSoftmax))


def is_radix_softmax(cls: type) -> bool:
    """Whether ``cls`` is timm's or the reference's RadixSoftmax."""
    return is_one_of(cls, RADIX_SOFTMAXES)


def applies(fc1: nn.Module, norm: nn.Module, act: nn.Module, fc2: nn.Module, owner: Optional[nn.Module] = None) -> bool:
    """Whether :func:`logits` computes this MLP as its modules would (module docstring; the caller
    checks ``layer_calls.no_module_hooks`` for the call); ``owner``: a module around the layers
    whose hooks would be bypassed too (the softmax)."""
    return (conv_applies(fc1) and conv_applies(fc2) and norm_applies(norm) and act_applies(act)
            and (owner is None or not hooked(owner.__dict__)))


def logits(pooled: Tensor, fc1: nn.Conv2d, norm: nn.Module, act: nn.Module, fc2: nn.Conv2d) -> Tensor:
    """fc2(act(norm(fc1(pooled)))) for the layers :func:`applies` accepts, by their modules' calls."""
    return conv2d(norm_act(conv2d(pooled, fc1), norm, act), fc2)


def radix_softmax(z: Tensor, radix: int, cardinality: int) -> Tensor:
    """RadixSoftmax's forward: over the radix of logits in (cardinality, radix, C / cardinality)
    order, as [B, R·C] in (radix, channel) order; the sigmoid (shape kept) for radix 1. For
    cardinality 1 the logits are in (radix, channel) order already: one softmax over [B, R, C]
    (the module's transpose is of a size-1 axis and its reshape a view: the same softmax on the
    same elements, the same bits; ResNeSt's training step on perf/host_time.py's proxy, B = 8,
    interleaved rounds: 646–649 → 632–636 µs), returned as [B, R, C]."""
    if radix > 1:
        batch = z.shape[0]
        if cardinality == 1:
            return torch.softmax(z.view(batch, radix, -1), 1)
        return torch.softmax(z.view(batch, cardinality, radix, -1).transpose(1, 2), 1).reshape(batch, -1)
    return torch.sigmoid(z)
