"""Every kernel with a ticket gives the same bits whatever order its programs run in (issue 23 §5).

On a GPU a launch's programs run in any order, so the program that draws the last ticket of a
sample (``last_of_sample``: an ``atomic_add`` on an int32 counter) can be any of them; the
interpreter runs them in order, x outer. Here each block is run through its public module
(a training step and an inference forward, tiny tiles so that a sample spans several programs)
with the programs of every launch in order, reversed, and shuffled (fixtures/program_order.py),
and the outputs, every gradient and every buffer must be equal bit for bit; every ticket
counter must be 0 before and after each launch (fixtures/launches.py).

Which kernels take tickets is read from the source of tritattn/kernels/ when the tests are
collected (fixtures/ticket_kernels.py); every one must be launched by some case here, so a new
ticket kernel cannot go untested.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import triton
import triton.language as tl
from torch import nn

import tritattn
from tritattn.backend import INTERPRETER
from tritattn import paths
from conftest import DEVICE, use_small_tiles
from fixtures.launches import recorded_launches
from fixtures.model_runs import training_step
from fixtures.peers import timm
from fixtures.program_order import interpreter_internals_missing, program_order
from fixtures.ticket_kernels import ticket_kernels

import timm.models._efficientnet_blocks  # noqa: E402  (after fixtures.peers, which makes timm importable)

TICKET_KERNELS = ticket_kernels()


@pytest.fixture(autouse=True)
def reorderable_interpreter():
    if not INTERPRETER:
        pytest.skip("program order is the Triton interpreter's: these tests run under TRITON_INTERPRET=1 only")
    missing = interpreter_internals_missing()
    if missing is not None:
        pytest.skip(f"triton {triton.__version__}: cannot reorder the interpreter's programs ({missing})")


# --- the fixture itself: a kernel that writes the order in which its programs drew tickets ----

@triton.jit
def _arrival_order(counter_ptr, out_ptr):
    ticket = tl.atomic_add(counter_ptr, 1)
    tl.store(out_ptr + tl.program_id(0) * tl.num_programs(1) + tl.program_id(1), ticket)


def _arrivals(order: str, seed: int, grid=(3, 4)) -> torch.Tensor:
    counter = torch.zeros(1, dtype=torch.int32)
    out = torch.full(grid, -1, dtype=torch.int32)
    with program_order(order, seed) as state:
        _arrival_order[grid](counter, out)
    assert state.launches == 1 and state.permuted == (order != "in_order")
    return out.flatten()


def test_the_fixture_runs_the_programs_in_the_order_asked():
    n = 12
    assert torch.equal(_arrivals("in_order", 0), torch.arange(n, dtype=torch.int32))
    assert torch.equal(_arrivals("reverse", 0), torch.arange(n - 1, -1, -1, dtype=torch.int32))
    shuffled = _arrivals("shuffled", 5)
    assert sorted(shuffled.tolist()) == list(range(n)) and not torch.equal(shuffled, torch.arange(n, dtype=torch.int32))
    assert torch.equal(_arrivals("shuffled", 5), shuffled)  # seeded
    assert not torch.equal(_arrivals("shuffled", 6), shuffled)


# --- the blocks -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]  # a fresh block on the kernels (a twin, or a converted timm block)
    channels: int


def _converted(module: nn.Module) -> nn.Module:
    tritattn.convert(module)
    return module


def _efficientnet_first_block(channels: int) -> nn.Module:
    """timm's EfficientNet block with its SE taking in the producer's BatchNorm and SiLU."""
    blocks = timm.models._efficientnet_blocks
    return _converted(blocks.DepthwiseSeparableConv(channels, channels, act_layer=nn.SiLU, se_layer=blocks.SqueezeExcite))


C = 13
CASES = {
    "se-mean-relu": Case(lambda: tritattn.SEModule(C, rd_channels=3), C),
    "se-maxpool": Case(lambda: tritattn.SEModule(C, rd_channels=3, add_maxpool=True), C),
    "se-hidden-batchnorm": Case(lambda: tritattn.SEModule(C, rd_channels=3, norm_layer=nn.BatchNorm2d), C),
    "effective-se": Case(lambda: tritattn.EffectiveSEModule(C, add_maxpool=True), C),
    "eca": Case(lambda: tritattn.EcaModule(C, kernel_size=3), C),
    "ceca": Case(lambda: tritattn.CecaModule(C, kernel_size=3), C),
    "cbam": Case(lambda: tritattn.CbamModule(C, rd_ratio=0.25), C),
    "light-cbam": Case(lambda: tritattn.LightCbamModule(C, rd_ratio=0.25), C),
    "prologue-batch-stats": Case(lambda: _efficientnet_first_block(C), C),
    "global-context": Case(lambda: tritattn.GlobalContext(C, fuse_add=True, fuse_scale=True), C),
    "split-attn": Case(lambda: tritattn.SplitAttn(14, radix=2), 14),
}


def _randomised(module: nn.Module) -> nn.Module:
    """Every parameter and BatchNorm statistic fresh and away from its init (timm zero-inits some)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0.0, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    return module.to(DEVICE)


def _run(block: nn.Module, x: torch.Tensor, cotangent: torch.Tensor) -> dict[str, torch.Tensor]:
    """The inference forward, then a training step, on a copy of ``block``: every output,
    gradient and buffer, by name."""
    block = copy.deepcopy(block)
    with torch.no_grad():
        out = {"inference y": block.eval()(x)}
    out.update({f"train {k}": v for k, v in training_step(block.train(), x, cotangent).items()})
    return out


def _bits(t: torch.Tensor) -> torch.Tensor:
    """t's bit patterns (NaN equal to the same NaN, -0.0 not equal to 0.0)."""
    if not t.is_floating_point():
        return t
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _assert_same_bits(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], order: str) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        if value is None:
            assert got[key] is None, key
            continue
        differ = (_bits(got[key]) != _bits(value)).sum().item()
        assert not differ, f"{key}: with the programs {order}, {differ} of {value.numel()} elements differ from in order"


@pytest.mark.parametrize("name", list(CASES))
def test_ticket_kernels_give_the_same_bits_in_any_program_order(name, monkeypatch):
    case = CASES[name]
    use_small_tiles(monkeypatch)  # several programs per sample, channel block and map
    block = _randomised(case.build())
    x = torch.randn(2, case.channels, 5, 3, device=DEVICE)
    cotangent = torch.randn_like(x)
    seed = int(torch.randint(0, 2**31 - 1, ()).item())  # from the test's seed (conftest.fresh_seed)
    runs, launched, dirty = {}, {}, []
    for order in ("in_order", "reverse", "shuffled"):
        # the one-launch paths, which hand out tickets (at these small shapes the model may prefer another)
        with paths.forced("one-launch"), recorded_launches() as launches, program_order(order, seed) as state:
            runs[order] = _run(block, x, cotangent)
        tickets = [launch for launch in launches if launch.kernel in TICKET_KERNELS]
        launched[order] = {launch.kernel for launch in tickets}
        several = sum(launch.programs > 1 for launch in launches)
        assert state.permuted == (several if order != "in_order" else 0), (
            f"{order}: {state.permuted} of the {several} launches with several programs ran out of order")
        single = sorted({launch.kernel for launch in tickets if launch.programs == 1})
        assert not single, f"{single} ran one program: the order of their tickets is not tested"
        dirty += [f"{launch.kernel} ({order}): {launch.counters}" for launch in tickets
                  if not (launch.counters_zero_before and launch.counters_zero_after)]
    assert launched["in_order"], f"{name} launches no ticket kernel: nothing to reorder"
    assert launched["reverse"] == launched["shuffled"] == launched["in_order"]
    for order in ("reverse", "shuffled"):
        _assert_same_bits(runs[order], runs["in_order"], order)
    assert not dirty, f"ticket counters not 0 before or after a launch: {dirty}"


def test_every_ticket_kernel_is_run_by_a_case(monkeypatch):
    """The cases' launches, recorded without running them (host code only: milliseconds), take
    in every ticket kernel the source has."""
    assert TICKET_KERNELS, "no kernel in tritattn/kernels/ draws tickets: has the atomic moved?"
    use_small_tiles(monkeypatch)
    launched = set()
    for case in CASES.values():
        x = torch.randn(2, case.channels, 5, 3, device=DEVICE)
        with recorded_launches(execute=False) as launches:
            _run(case.build().to(DEVICE), x, torch.randn_like(x))
        launched |= {launch.kernel for launch in launches}
    missing = sorted(set(TICKET_KERNELS) - launched)
    assert not missing, f"ticket kernels that no case runs in several program orders: {missing} (add a case)"
