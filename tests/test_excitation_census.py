"""The channel-attention block's predicted launches (tritattn/excitation_cost.py, what the path
choice estimates from) against the launches counted in Triton's interpreter
(perf/program_census.py), on every path — one-launch, split, per-op and eager (the reference
module's forward and autograd): for each Triton kernel, the programs and the median and longest
program's memory instructions are the counted ones, and the torch launches between the kernels
are as many as predicted (one per aten op, as perf/census.py counts eager).
"""
import sys
from pathlib import Path

import pytest
import torch

import tritattn
from tritattn import excitation_block, excitation_cost, ops, paths
from tritattn.backend import INTERPRETER
from conftest import DEVICE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
from program_census import ProgramCensus  # noqa: E402

pytestmark = pytest.mark.skipif(not INTERPRETER, reason="the program census counts in Triton's interpreter")

#: (twin, constructor arguments, input shape): long MLP tails (C·RD large for the interpreter) and short ones
BLOCKS = [
    ("SEModule", (520,), {"rd_channels": 40}, (2, 520, 7, 7)),
    ("SEModule", (37,), {"rd_channels": 5, "add_maxpool": True}, (3, 37, 3, 5)),
    ("EffectiveSEModule", (200,), {}, (2, 200, 5, 5)),
    ("EcaModule", (130,), {}, (2, 130, 3, 5)),
    ("ChannelAttnTwin", (96,), {"rd_ratio": 0.125}, (2, 96, 6, 6)),
    ("SEModule", (6,), {"rd_channels": 3}, (2, 6, 75, 75)),  # K = 5625: the row reductions' tile grows along K
]
IDS = ["se520", "se37_maxpool", "ese200", "eca130", "cbam_channel96", "se6_long_k"]


def build(name: str, args: tuple, kwargs: dict) -> torch.nn.Module:
    if name == "ChannelAttnTwin":  # CBAM's channel branch (mean_max_both): not exported on its own
        from tritattn.modules import ChannelAttn
        return ChannelAttn(*args, **kwargs)
    return getattr(tritattn, name)(*args, **kwargs)


def shape_of(block: torch.nn.Module, x: torch.Tensor) -> excitation_cost.BlockShape:
    spec = block.block_spec()
    return excitation_block.block_shape(x, spec, spec.w1, spec.b1, spec.b2, spec.norm is not None, False, "identity")


def triton_counts(launches) -> list[tuple[str, int, int, int]]:
    return [(launch.kernel, launch.programs, launch.median, launch.longest) for launch in launches if launch.programs]


@pytest.mark.parametrize("path", excitation_cost.PATHS)
@pytest.mark.parametrize("name, args, kwargs, shape", BLOCKS, ids=IDS)
def test_predicted_launches_are_the_counted_ones(name, args, kwargs, shape, path, monkeypatch):
    monkeypatch.setattr(ops, "poison_outputs", False)  # the NaN fill of the outputs is a test's, not a launch of the op
    block = build(name, args, kwargs).to(DEVICE)
    x = torch.randn(shape, device=DEVICE, requires_grad=True)
    cot = torch.randn(shape, device=DEVICE)
    with paths.forced(path):
        with ProgramCensus() as forward:
            y = block(x)
        with ProgramCensus() as backward:
            y.backward(cot)
    s = shape_of(block, x)
    for what, counted, predicted in (("forward", forward.launches(), excitation_cost.forward(s, path)),
                                     ("backward", backward.launches(), excitation_cost.backward(s, path))):
        assert triton_counts(counted) == triton_counts(predicted), (what, path)
        assert sum(launch.kernel.startswith("aten.") for launch in counted) == sum(
            not launch.programs for launch in predicted), (what, path, [launch.kernel for launch in counted],
                                                          [launch.kernel for launch in predicted])
