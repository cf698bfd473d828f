"""A numerical probe of a rewrite: does a block compute the same after convert changes it?

:func:`tritattn.convert` fuses across module boundaries — an SE-ResNet block's tail
(:mod:`tritattn.fusion`), a producer's BatchNorm and activation into the SE block after it
(:mod:`tritattn.prologue`). Whether that is exact depends on how the enclosing block's
``forward`` uses its children (no other consumer of the fused value, nothing in between), which
no structural check can read off a module tree for every timm or torchvision release. So convert
also runs the block once: :func:`probe_rewrite` builds a float32 CPU copy of the block with
random parameters and statistics, and a second copy with the rewrite applied, and compares their
outputs for one random input in training and in eval mode. The copies run on the eager torch
path (:func:`tritattn.disabled`, so the probe measures the rewrite's dataflow, not a kernel's
rounding, and costs milliseconds); the model itself is not touched.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from .backend import disabled

#: batch and spatial size of the probe input (odd, and 2 samples: a BatchNorm in training needs > 1 value)
PROBE_SHAPE = (2, 9, 9)


def _randomised_copy(block: nn.Module, generator: torch.Generator) -> nn.Module:
    """A float32 CPU copy of ``block`` (whatever its device, meta included) with random values:
    parameters and running means N(0, 0.5²), running variances in [0.5, 1.5]."""
    probe = copy.deepcopy(block).to_empty(device="cpu")
    probe = probe.to(torch.float32)
    with torch.no_grad():
        for name, t in list(probe.named_parameters()) + list(probe.named_buffers()):
            if not t.is_floating_point():
                t.zero_()
            elif name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=generator, dtype=t.dtype))
            else:
                t.copy_(0.5 * torch.randn(t.shape, generator=generator, dtype=t.dtype))
    return probe


def input_channels(block: nn.Module) -> int | None:
    """The channels ``block`` takes: those of its first convolution or BatchNorm; None if neither."""
    for module in block.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return module.num_features
    return None


def probe_rewrite(block: nn.Module, rewrite: Callable[[nn.Module], None],
                  baseline: Callable[[nn.Module], None] | None = None) -> str | None:
    """None when a copy of ``block`` with ``rewrite`` applied (it takes the copy and changes it in
    place, e.g. re-classing children found by path) computes what a copy without does, in
    training and in eval mode; else why not (the outputs differ, or the probe could not run).
    ``baseline``, if given, is applied to both copies first (e.g. the attention block re-classed
    to its twin, as convert does anyway)."""
    channels = input_channels(block)
    if channels is None:
        return "probe: no convolution or BatchNorm tells the block's input channels"
    generator = torch.Generator().manual_seed(0)
    try:
        with disabled():
            before = _randomised_copy(block, generator)
            if baseline is not None:
                baseline(before)
            after = copy.deepcopy(before)
            rewrite(after)
            x = torch.randn((PROBE_SHAPE[0], channels, *PROBE_SHAPE[1:]), generator=generator, dtype=torch.float32)
            for mode in ("training", "eval"):
                before.train(mode == "training")
                after.train(mode == "training")
                with torch.no_grad():
                    expected, got = before(x), after(x)
                if not (isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor)):
                    return "probe: the block does not return one tensor"
                if expected.shape != got.shape or not torch.allclose(got, expected, rtol=1e-5, atol=1e-6):
                    return f"probe: the rewritten block computes something else (in {mode} mode)"
    except Exception as error:  # noqa: BLE001 — any failure means: not proven exact, leave it alone
        return f"probe: the block could not be run on a CPU copy ({type(error).__name__}: {error})"
    return None
