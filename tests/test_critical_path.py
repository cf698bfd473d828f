"""No serial tail can land unnoticed (issue 23 §2): on the path each block family takes, counted in
Triton's interpreter (perf/program_census.py), at batch 2 and batch 8,

- no launch's longest program grows with the batch (``cost_model.growth_violations``: beyond a
  logarithm), and
- in every launch, the longest program issues at most ``LONGEST_PER_MEDIAN`` × the median
  program's memory instructions + ``LONGEST_SLACK`` (the first check of
  ``cost_model.tail_violations``).

The second check of ``tail_violations`` (the longest program's serial time against the launch's
bytes at copy bandwidth, or 12 µs) is about realistic sizes: at these small shapes every launch
moves a few KB, so it is left to the census at full size (``python perf/census.py``).

Small shapes (C not a power of two; H×W = 49 with a small MLP, and 1×1 with a wide one), inference and the training
step, for SE (plain, with the residual + ReLU epilogue of a fused ResNet tail, and with its
producer's BatchNorm + ReLU taken in, batch statistics in training), Effective-SE, ECA, CBAM,
ResNeSt's split attention, SKNet's selective kernel and GCNet's global context. The counts do not
depend on the data, only on the shapes; the inputs are random all the same.
"""
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
import triton
import triton.language as tl
from torch import nn

from tritattn import excitation_block
from tritattn.cost_model import LONGEST_PER_MEDIAN, LONGEST_SLACK, Launch, growth_violations
from tritattn.excitation_block import BlockSpec
from tritattn.twins import twin_named

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))  # perf/ is a folder of scripts
from program_census import ProgramCensus, interpreting  # noqa: E402

pytestmark = pytest.mark.skipif(
    not interpreting(), reason="the count runs in Triton's interpreter (TRITON_INTERPRET=1, CPU tensors): "
    "on a GPU run `python perf/census.py`, which counts in a subprocess")

BATCHES = (2, 8)
#: C, H, W and the MLP's hidden width: a 7×7 map, and a 1×1 map with a wide MLP, where an MLP or a
#: combine run by one program shows (for the families with one; CBAM's and ECA's kernels are SE's)
SHAPES = {"96x7x7": (96, 7, 7, 12), "480x1x1": (480, 1, 1, 120)}
WIDE_MLP_FAMILIES = ("se", "effective_se", "split_attn", "selective_kernel", "global_context", "se_producer_batchnorm_relu")


def _block(name: str, kwargs: Callable[[int, int], dict]) -> Callable[[int, int], nn.Module]:
    """The twin ``name`` built with ``kwargs(C, RD)``: its forward is the path the block takes."""
    return lambda C, rd: twin_named(name)(**kwargs(C, rd))


#: family → (build the block for C and the MLP's width, run it on its inputs, number of inputs)
FAMILIES: dict[str, tuple[Callable[[int, int], nn.Module], Callable[[nn.Module, list[torch.Tensor]], torch.Tensor], int]] = {
    "se": (_block("SEModule", lambda C, rd: dict(channels=C, rd_channels=rd)), lambda m, xs: m(xs[0]), 1),
    "se_residual_relu": (_block("SEModule", lambda C, rd: dict(channels=C, rd_channels=rd)),
                         lambda m, xs: m.excite(xs[0], xs[1], "relu"), 2),
    "effective_se": (_block("EffectiveSEModule", lambda C, rd: dict(channels=C)), lambda m, xs: m(xs[0]), 1),
    "eca": (_block("EcaModule", lambda C, rd: dict(channels=C)), lambda m, xs: m(xs[0]), 1),
    "cbam": (_block("CbamModule", lambda C, rd: dict(channels=C, rd_channels=rd)), lambda m, xs: m(xs[0]), 1),
    "split_attn": (_block("SplitAttn", lambda C, rd: dict(in_channels=C, out_channels=C, radix=2, norm_layer=nn.BatchNorm2d)),
                   lambda m, xs: m(xs[0]), 1),
    "selective_kernel": (_block("SelectiveKernel", lambda C, rd: dict(in_channels=C, out_channels=C)), lambda m, xs: m(xs[0]), 1),
    "global_context": (_block("GlobalContext", lambda C, rd: dict(channels=C, rd_channels=rd, fuse_add=True, fuse_scale=False)),
                       lambda m, xs: m(xs[0]), 1),
}


class ProducerSE(nn.Module):
    """An SE block with its producer's BatchNorm + ReLU taken in (the prologue): batch statistics
    in training, running statistics in eval, as a converted EfficientNet / RegNet block runs."""

    def __init__(self, C: int, rd: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(C)
        self.fc1, self.fc2 = nn.Linear(C, rd), nn.Linear(rd, C)
        with torch.no_grad():
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        bn = (self.bn.weight, self.bn.bias, self.bn.running_mean, self.bn.running_var, self.bn.eps)
        spec = BlockSpec("mean", "fc_act_fc", "relu", self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        return excitation_block.excitation_with_stats(c, spec, "sigmoid", prologue=("relu", bn), batch_stats=self.training)[0]


FAMILIES["se_producer_batchnorm_relu"] = (ProducerSE, lambda m, xs: m(xs[0]), 1)


def triton_launches(family: str, shape: tuple[int, int, int, int], batch: int, train: bool) -> list[Launch]:
    """The Triton launches of one inference forward or training step (forward, then backward of
    a random cotangent into the input and every parameter) of ``family`` at ``batch``."""
    build, run, n_inputs = FAMILIES[family]
    C, H, W, rd = shape
    module = build(C, rd).train(train)
    xs = [torch.randn(batch, C, H, W, requires_grad=train) for _ in range(n_inputs)]
    cotangent = torch.randn(batch, C, H, W)
    census = ProgramCensus()
    if train:
        with census:
            run(module, xs).backward(cotangent)
    else:
        with torch.no_grad(), census:
            run(module, xs)
    return [launch for launch in census.launches() if launch.programs]


def _paired(small: list[Launch], large: list[Launch]) -> tuple[list[Launch], list[Launch]]:
    """The launches of both batches paired by kernel and occurrence (a path may add or drop a
    launch with the batch; those are checked for tails alone)."""
    def keyed(launches: list[Launch]) -> dict[tuple[str, int], Launch]:
        seen: dict[str, int] = {}
        out = {}
        for launch in launches:
            seen[launch.kernel] = seen.get(launch.kernel, -1) + 1
            out[(launch.kernel, seen[launch.kernel])] = launch
        return out

    a, b = keyed(small), keyed(large)
    common = [k for k in a if k in b]
    return [a[k] for k in common], [b[k] for k in common]


def tail_problems(launches: list[Launch], batch: int) -> list[str]:
    """The launches whose longest program issues more than LONGEST_PER_MEDIAN × the median's + LONGEST_SLACK."""
    return [f"{x.kernel} at B={batch}: longest program {x.longest} > {LONGEST_PER_MEDIAN} × median {x.median} + "
            f"{LONGEST_SLACK} ({x.programs} programs)"
            for x in launches if x.longest > LONGEST_PER_MEDIAN * x.median + LONGEST_SLACK]


CASES = [pytest.param(family, shape, id=f"{family}-{name}") for family in FAMILIES for name, shape in SHAPES.items()
         if name == "96x7x7" or family in WIDE_MLP_FAMILIES]


@pytest.mark.parametrize("train", [False, True], ids=["inference", "step"])
@pytest.mark.parametrize("family, shape", CASES)
def test_no_launch_has_a_serial_tail(family, shape, train):
    small, large = (triton_launches(family, shape, b, train) for b in BATCHES)
    assert small and large, f"{family} launched no Triton kernel: the count saw nothing to check"
    problems = growth_violations(*_paired(small, large), *BATCHES)
    problems += tail_problems(small, BATCHES[0]) + tail_problems(large, BATCHES[1])
    assert not problems, f"{family} {'step' if train else 'inference'} C×H×W={shape}:\n" + "\n".join(problems)


@triton.jit
def staircase(x_ptr, y_ptr):
    """Program p loads p + 1 tiles of 4 float32 (the last masked to 3 elements), stores one value."""
    p = tl.program_id(0)
    acc = tl.zeros([4], dtype=tl.float32)
    for i in range(p + 1):
        offs = i * 4 + tl.arange(0, 4)
        acc += tl.load(x_ptr + offs, mask=tl.arange(0, 4) < tl.where(i < p, 4, 3), other=0.0)
    tl.store(y_ptr + p, tl.sum(acc))


def test_the_count_sees_each_program_and_each_memory_instruction():
    """The counter itself, on a kernel whose counts are known: program p of 5 issues p + 2 memory
    instructions and touches 16·p + 12 + 4 bytes."""
    x, y = torch.randn(64), torch.empty(5)
    with ProgramCensus() as census:
        staircase[(5,)](x, y)
    (record,) = census.records
    assert record.kernel == "staircase" and record.programs == 5
    assert record.instructions.tolist() == [p + 2 for p in range(5)]
    # p full tiles of 16 bytes, the last tile masked to 3 elements (12 bytes), the store 4 bytes
    assert record.program_bytes.tolist() == [16 * p + 12 + 4 for p in range(5)]
    launch = record.launch()
    assert (launch.programs, launch.median, launch.longest, launch.bytes) == (5, 4, 6, sum(16 * p + 16 for p in range(5)))


def test_a_kernel_inside_a_tritattn_op_counts_once_and_the_count_goes_on_after_the_op():
    """The census steps into tritattn's custom ops (to see the aten kernels they run between their
    Triton kernels): a kernel launched there counts once, and launches after the op still count."""
    x, s, y = torch.randn(2, 48, 7, 7), torch.randn(2, 48), torch.empty(5)
    with torch.no_grad(), ProgramCensus() as census:
        torch.ops.tritattn.excite_scale(x, s, None, "sigmoid", "identity")
        staircase[(5,)](x, y)
        torch.ops.tritattn.excite_scale(x, s, None, "sigmoid", "identity")
    launches = [launch for launch in census.launches() if launch.programs]
    assert [launch.kernel for launch in launches] == ["gated_scale_fwd", "staircase", "gated_scale_fwd"]
    # x read, y written, the logits read: each byte once
    assert [launches[0].bytes, launches[2].bytes] == [2 * x.numel() * 4 + s.numel() * 4] * 2
    assert launches[1].bytes == sum(16 * p + 16 for p in range(5))
