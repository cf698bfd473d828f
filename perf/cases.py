"""One benchmark case — a block at a batch size, dtype and layout — and what gets timed in it.

Implementations of a block, all with the same weights:

- ``eager``                 the reference module (:mod:`tritattn.reference`, timm / torchvision math)
- ``tritattn``              the fast module (:mod:`tritattn.modules`), the same class name
- ``tritattn-per-op``       the fast module with the block pipelines switched off
                            (``tritattn.excitation_block.pipelines(False)``): one kernel per op
- ``compile``               ``torch.compile(eager, dynamic=False)``
- ``compile-max-autotune``  ``torch.compile(eager, mode="max-autotune-no-cudagraphs", dynamic=False)``
                            (the CUDA-graph variant of every implementation is timed separately,
                            so compile's own cudagraphs are left off)

Passes: ``fwd`` is inference (eval mode, no autograd); ``fwd+bwd`` a training step (train mode,
forward, then the gradients of the input and every parameter for a random cotangent, through
``torch.autograd.grad`` so nothing accumulates between runs).
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from model_shapes import Block
from tritattn import excitation_block, reference
from tritattn.twins import twin_named

COMPILE_MODES = {"compile": "default", "compile-max-autotune": "max-autotune-no-cudagraphs"}
PASSES = ("fwd", "fwd+bwd")
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    """A block at one batch size, dtype and memory layout."""

    block: Block
    batch: int
    dtype: str  # a key of DTYPES
    layout: str  # a key of LAYOUTS

    @property
    def label(self) -> str:
        return f"{self.block.id} B={self.batch} {self.dtype} {self.layout}"

    def input(self, device: torch.device, requires_grad: bool = False) -> torch.Tensor:
        x = torch.randn(self.batch, self.block.C, self.block.H, self.block.W, device=device, dtype=DTYPES[self.dtype])
        return x.to(memory_format=LAYOUTS[self.layout]).requires_grad_(requires_grad)


def build_eager(block: Block, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The reference module, its weights drawn from seed 0 (every run benchmarks the same block)."""
    torch.manual_seed(0)
    return getattr(reference, block.module)(**block.constructor_kwargs()).to(device=device, dtype=dtype)


def build(impl: str, eager: nn.Module, block: Block) -> nn.Module:
    """``impl`` of ``block`` with ``eager``'s weights (a fresh copy for each compile mode)."""
    if impl == "eager":
        return eager
    if impl in ("tritattn", "tritattn-per-op"):
        p = next(eager.parameters())
        fast = twin_named(block.module)(**block.constructor_kwargs()).to(device=p.device, dtype=p.dtype)
        fast.load_state_dict(eager.state_dict())
        return fast if impl == "tritattn" else PerOpPath(fast)
    return torch.compile(copy.deepcopy(eager), mode=COMPILE_MODES[impl], dynamic=False)


class PerOpPath(nn.Module):
    """A fast module run with the block pipelines switched off (its parameters are the module's)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with excitation_block.pipelines(False):  # the forward picks the ops; the backward follows them
            return self.module(x)


def forward_fn(module: nn.Module, inputs: list[torch.Tensor]) -> Callable[[], Any]:
    """Inference: call in eval mode under ``torch.no_grad()``, cycling through ``inputs``."""
    module.eval()
    cycle = itertools.cycle(inputs)

    def run() -> Any:
        with torch.no_grad():
            return module(next(cycle))

    return run


def train_step_fn(module: nn.Module, inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> Callable[[], Any]:
    """Training step: forward in train mode, then grads of x and the parameters for cotangent g."""
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    cycle = itertools.cycle(inputs)

    def run() -> Any:
        x, g = next(cycle)
        return torch.autograd.grad(module(x), [x, *params], g)

    return run


def max_relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max(1, max |ref|): a sanity check that tritattn computes the same block."""
    out, ref = out.detach().double(), ref.detach().double()
    return ((out - ref).abs().max() / ref.abs().max().clamp(min=1.0)).item()
