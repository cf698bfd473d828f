"""Plain torch layers called as the aten calls their modules' forwards make, without
``Module.__call__`` and with their parameters, buffers and sublayers read from the modules' own
dictionaries: ``Conv2d`` → ``conv2d``, ``BatchNorm2d`` (or timm's BatchNormAct2d's norm) →
``batch_norm`` after ``_BatchNorm.forward``'s batch count and factor, ``ReLU`` → ``relu_`` /
``relu``, ``Identity`` → nothing.

The radix twins' per-op path runs about a dozen such layers per call (SplitAttn's conv, bn0,
drop and act0 and its attention MLP; SelectiveKernel's paths and its attention's MLP). Each
costs, on top of its aten call, a ``Module.__call__`` (its hook dictionaries read, a frame,
``forward``'s own) and one ``Module.__getattr__`` per parameter, buffer or sublayer it reads
(≈ 0.7 µs each on this project's CPU: 27 of them in ResNeSt's eager training step, 40 in
SKNet's). The same aten calls on the same tensors are recorded by autograd as the modules'
are — the same nodes, run by the engine in C++ — so the results are the modules' bits: the
output, every gradient, the running statistics and ``num_batches_tracked``, autocast's casts
(tests/test_radix_mlp.py, tests/test_layer_calls.py). On perf/host_time.py's proxy (launches
stubbed, B = 8): one SK path's training forward 100 → 82 µs timed alone; with the MLP's and the
branches' layers as calls and SplitAttn's single softmax (tritattn/radix_mlp.py), the training
step of ResNeSt ×1.04 → ×0.97 of eager's and SKNet's ×1.02 → ×0.985 (five runs, the smallest
time of each side).

A layer is taken as its calls only where it is what they are written for (the ``*_applies``
predicates): exactly these classes, no hook on it and no instance ``forward``, its parameters
and buffers registered under their names (so ``Module.__getattr__`` would return the
dictionaries' entries); the caller checks :func:`no_module_hooks` once per call (a global module
hook, or a mode that records modules: ``dispatch.direct``). A BatchNorm normalising one value per
channel by batch statistics is called as its module: it raises eager's error, after eager's
batch count.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from . import dispatch, reference
from .batchnorm import count_batch
from .hooks import global_module_hooks, hooked
from .peers import qualified_name

#: timm's and the reference's BatchNormAct2d (a BatchNorm2d, then its ``drop`` and ``act``)
BATCHNORM_ACTS = ("timm.layers.norm_act.BatchNormAct2d", qualified_name(reference.BatchNormAct2d))
#: timm's and the reference's ConvNormAct (``conv``, then ``bn`` a BatchNormAct2d, then ``aa`` if any)
CONV_NORM_ACTS = ("timm.layers.conv_bn_act.ConvNormAct", qualified_name(reference.ConvNormAct))
#: class → whether its qualified name is in a tuple above (read once per class)
_known: dict[tuple[type, tuple[str, ...]], bool] = {}


def no_module_hooks(x: Tensor) -> bool:
    """Whether a call on x may take its layers as calls: no global module hook (it would be
    bypassed) and x on the short path (``dispatch.direct``: not under torch.compile, jit.trace,
    a dispatch or function mode, a functorch transform or the profiler, which see modules)."""
    return dispatch.direct(x) and not global_module_hooks()


def is_one_of(cls: type, names: tuple[str, ...]) -> bool:
    """Whether ``cls``'s qualified name is one of ``names`` (:data:`BATCHNORM_ACTS`, :data:`CONV_NORM_ACTS`, ...)."""
    known = _known.get((cls, names))
    if known is None:
        known = _known[cls, names] = qualified_name(cls) in names
    return known


def identity_applies(layer: nn.Module | None) -> bool:
    """An unhooked ``nn.Identity`` (nothing to call)."""
    return type(layer) is nn.Identity and not hooked(layer.__dict__)


def conv_applies(conv: nn.Module | None) -> bool:
    """An unhooked ``nn.Conv2d`` whose forward is ``conv2d(x, weight, bias, stride, padding,
    dilation, groups)``: zero padding given as integers (not "same" / "valid")."""
    if type(conv) is not nn.Conv2d:  # first: None (no such layer) is not one either
        return False
    attributes = conv.__dict__
    return (not hooked(attributes) and attributes["padding_mode"] == "zeros"
            and type(attributes["padding"]) is tuple and _registered(attributes["_parameters"], "weight", "bias"))


def norm_applies(norm: nn.Module) -> bool:
    """An unhooked ``nn.BatchNorm2d`` or ``nn.Identity`` (a BatchNormAct2d's norm part: :func:`batchnorm_act_applies`)."""
    if type(norm) is nn.Identity:
        return identity_applies(norm)
    return type(norm) is nn.BatchNorm2d and _batchnorm_registered(norm.__dict__)


def act_applies(act: nn.Module | None) -> bool:
    """An unhooked ``nn.ReLU`` or ``nn.Identity``."""
    return (type(act) is nn.ReLU or type(act) is nn.Identity) and not hooked(act.__dict__)


def batchnorm_act_applies(bn: nn.Module | None) -> bool:
    """An unhooked timm (or reference) BatchNormAct2d with an identity ``drop`` and a ReLU or
    identity ``act``, each unhooked (its forward: the BatchNorm's, then drop, then act)."""
    if not is_one_of(type(bn), BATCHNORM_ACTS):
        return False
    attributes = bn.__dict__
    layers = attributes["_modules"]
    return _batchnorm_registered(attributes) and identity_applies(layers.get("drop")) and act_applies(layers.get("act"))


def conv_norm_act_applies(path: nn.Module) -> bool:
    """An unhooked timm (or reference) ConvNormAct whose conv :func:`conv_applies` and whose bn
    :func:`batchnorm_act_applies` accept, its ``aa`` (if any) an unhooked identity."""
    if not is_one_of(type(path), CONV_NORM_ACTS):
        return False
    attributes = path.__dict__
    layers = attributes["_modules"]
    aa = layers.get("aa")
    return (not hooked(attributes) and conv_applies(layers.get("conv")) and batchnorm_act_applies(layers.get("bn"))
            and (aa is None or identity_applies(aa)))


def _batchnorm_registered(attributes: dict) -> bool:
    return (not hooked(attributes) and _registered(attributes["_parameters"], "weight", "bias")
            and _registered(attributes["_buffers"], "running_mean", "running_var", "num_batches_tracked"))


def _registered(entries: dict, *names: str) -> bool:
    for name in names:  # a loop, not all() over a generator: a µs less per layer
        if name not in entries:
            return False
    return True


def conv2d(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv(x)`` for a conv :func:`conv_applies` accepts."""
    attributes = conv.__dict__
    parameters = attributes["_parameters"]
    return torch.conv2d(x, parameters["weight"], parameters["bias"], attributes["stride"], attributes["padding"],
                        attributes["dilation"], attributes["groups"])


def batch_norm(h: Tensor, bn: nn.modules.batchnorm._BatchNorm) -> Tensor:
    """``bn(h)``'s BatchNorm for a norm :func:`norm_applies` (not an Identity) or
    :func:`batchnorm_act_applies` accepts: ``_BatchNorm.forward``'s batch count, factor and
    statistics, then ``F.batch_norm``'s call; over one value per channel by batch statistics,
    the module (eager's error)."""
    attributes = bn.__dict__
    parameters, buffers = attributes["_parameters"], attributes["_buffers"]
    running_mean, running_var = buffers["running_mean"], buffers["running_var"]
    training = attributes["training"]
    batch_stats = training or (running_mean is None and running_var is None)
    if batch_stats and h.numel() == h.shape[1]:  # B·H·W = 1 (h not empty)
        return bn(h)
    momentum = attributes["momentum"]
    factor = count_batch(bn, h.shape) if training else 0.0 if momentum is None else momentum
    running = not training or attributes["track_running_stats"]
    return torch.batch_norm(h, parameters["weight"], parameters["bias"], running_mean if running else None,
                            running_var if running else None, batch_stats, factor, attributes["eps"],
                            _cudnn_enabled())


#: what ``torch.backends.cudnn.enabled`` reads (its property's getter, without the property: ≈ 0.5 µs)
_cudnn_enabled = torch._C._get_cudnn_enabled


def relu(h: Tensor, act: nn.Module) -> Tensor:
    """``act(h)`` for an act :func:`act_applies` accepts."""
    if type(act) is nn.ReLU:
        return torch.relu_(h) if act.__dict__["inplace"] else torch.relu(h)
    return h


def norm_act(h: Tensor, norm: nn.Module, act: nn.Module) -> Tensor:
    """``act(norm(h))`` (an identity drop between them) for layers the predicates accept."""
    if type(norm) is not nn.Identity:
        h = batch_norm(h, norm)
    return relu(h, act)


def conv_norm_act(x: Tensor, path: nn.Module) -> Tensor:
    """``path(x)`` for a ConvNormAct :func:`conv_norm_act_applies` accepts."""
    layers = path.__dict__["_modules"]
    bn = layers["bn"]
    return relu(batch_norm(conv2d(x, layers["conv"]), bn), bn.__dict__["_modules"]["act"])


def run_conv(x: Tensor, conv: nn.Module, as_calls: bool) -> Tensor:
    """``conv(x)``: as its call where ``as_calls`` (:func:`no_module_hooks`) and :func:`conv_applies`, else the module."""
    return conv2d(x, conv) if as_calls and conv_applies(conv) else conv(x)


def run_conv_norm_act(x: Tensor, path: nn.Module, as_calls: bool) -> Tensor:
    """``path(x)``: as its calls where ``as_calls`` and :func:`conv_norm_act_applies`, else the module."""
    return conv_norm_act(x, path) if as_calls and conv_norm_act_applies(path) else path(x)
