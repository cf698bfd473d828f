"""A channel-attention twin decides a call's path (and prepares its short host path) once per
call signature under its plan (tritattn/modules.py KnownCall, excitation_step.call_key), and
decides again whenever anything that decision read changes: x's or the residual's sizes,
strides, dtype or ``requires_grad``, the switches (the block pipeline, tritattn.disabled), the
path choice's state (a forced path, paths.forget), a tune pass's recording scope. A kept call
still checks the modes (a dispatch mode sends it through the op), and a bad input after good
ones still gets the checks' errors. (The plan's own rebuilds, which drop its kept calls:
tests/test_module_plans.py.)"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import tritattn
from tritattn import excitation_block, modules, paths
from conftest import DEVICE, make_input

C = 12
SHAPE = (3, C, 3, 5)


@pytest.fixture
def se_and_decisions(monkeypatch):
    """An eval SE twin and the list of paths its calls decided (one entry per decision)."""
    se = tritattn.SEModule(C, rd_channels=4).to(DEVICE).eval()
    decided = []
    block_path = modules.ChannelExcitation.block_path

    def counted(self, *args, **kwargs):
        path = block_path(self, *args, **kwargs)
        decided.append(path)
        return path

    monkeypatch.setattr(tritattn.SEModule, "block_path", counted)
    return se, decided


@pytest.mark.parametrize("path", ["one-launch", "split"])
def test_a_signature_met_before_is_not_decided_again(se_and_decisions, path):
    se, decided = se_and_decisions
    x = make_input(SHAPE, torch.float32)
    with paths.forced(path), torch.no_grad():
        first = se(x)
        again = se(x.clone())  # another tensor, the same signature
        assert decided == [path]
        assert torch.equal(first, again)
        se(x[:2])  # another batch
        se(x.contiguous(memory_format=torch.channels_last))  # other strides
        se(x.double())  # another dtype
        se.excite(x, make_input(SHAPE, torch.float32), "relu")  # a residual, an epilogue
    assert len(decided) == 5
    y = se(x.requires_grad_())  # requires_grad (no_grad is off here: the plan's mode changes too)
    assert len(decided) == 6 and y.requires_grad


def test_switches_and_the_path_state_decide_again(se_and_decisions, monkeypatch):
    se, decided = se_and_decisions
    x = make_input(SHAPE, torch.float32)
    with torch.no_grad():
        se(x)
        with paths.forced("split"):
            se(x)
            se(x)
        assert decided[1:] == ["split"]
        with paths.forced("one-launch"):
            se(x)
        assert decided[-1] == "one-launch"
        paths.forget()
        se(x)
        se(x)
        assert len(decided) == 4
        monkeypatch.setattr(excitation_block, "enabled", False)
        se(x)
        assert decided[-1] == "per-op"
        monkeypatch.setattr(excitation_block, "enabled", True)
        with tritattn.disabled():
            se(x)
        assert decided[-1] == "per-op" and len(decided) == 6
        monkeypatch.setattr(excitation_block, "l2_fraction", 0.5)
        se(x)
        assert len(decided) == 7


def test_a_recording_scope_decides_every_call(se_and_decisions):
    se, decided = se_and_decisions
    x = make_input(SHAPE, torch.float32)
    with torch.no_grad():
        se(x)
        with paths.recording() as keys:
            se(x)
            se(x)
    assert len(decided) == 3
    assert any(block == "excitation_block" for block, _ in keys)


class _OpNames(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("path", ["one-launch", "split"])
def test_a_kept_call_under_a_dispatch_mode_runs_the_op(se_and_decisions, path):
    se, decided = se_and_decisions
    x = make_input(SHAPE, torch.float32)
    with paths.forced(path), torch.no_grad():
        y = se(x)
        with _OpNames() as mode:
            y_op = se(x)
    assert decided == [path]
    assert any("tritattn.excitation_block" in name for name in mode.names), mode.names
    assert torch.equal(y, y_op)


def test_a_bad_input_after_good_ones_gets_the_checks_errors(se_and_decisions):
    se, _ = se_and_decisions
    x = make_input(SHAPE, torch.float32)
    with torch.no_grad():
        se(x)
        se(x)
        with pytest.raises(TypeError, match="floating dtype"):
            se(torch.ones(SHAPE, dtype=torch.int32, device=DEVICE))
        with pytest.raises(TypeError, match="torch.Tensor"):
            se(x.tolist())
        with pytest.raises(ValueError, match="residual"):
            se.excite(x, make_input((3, C, 3, 4), torch.float32))
        se.excite(x, make_input(SHAPE, torch.float32))
        with pytest.raises(ValueError, match="residual"):
            se.excite(x, make_input((3, C, 3, 4), torch.float32))  # a residual after a good one
        with pytest.raises(ValueError):
            se(make_input((3, C + 1, 3, 5), torch.float32))  # channels the block does not take


def test_kept_calls_are_bounded(se_and_decisions, monkeypatch):
    se, decided = se_and_decisions
    monkeypatch.setattr(modules, "MAX_KNOWN_CALLS", 2)
    with torch.no_grad():
        for batch in (1, 2, 3, 1):
            se(make_input((batch, C, 3, 5), torch.float32))
        assert len(se._plan().calls) <= 2
    assert len(decided) == 4  # batch 1 was dropped when the kept calls started again
