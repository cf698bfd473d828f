"""torch.autograd.gradcheck of every op in float64, through the Triton kernels (interpreter on CPU)."""
import pytest
import torch
from torch.autograd import gradcheck

import tritattn
from conftest import make_input


@pytest.mark.parametrize("mode", ["mean", "max", "mean_max"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_squeeze(mode, channels_last):
    x = make_input((2, 3, 3, 5), torch.float64, channels_last, requires_grad=True)
    assert gradcheck(lambda x: tritattn.squeeze(x, mode), (x,))


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("act", ["identity", "relu"])
def test_excite_scale(gate, act):
    x = make_input((2, 3, 2, 3), torch.float64, requires_grad=True)
    s = make_input((2, 3), torch.float64, requires_grad=True)
    residual = make_input((2, 3, 2, 3), torch.float64, channels_last=True, requires_grad=True)
    assert gradcheck(lambda x, s, r: tritattn.excite_scale(x, s, gate, r, act), (x, s, residual))
    assert gradcheck(lambda x, s: tritattn.excite_scale(x, s, gate), (x, s))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_spatial_pool(channels_last):
    x = make_input((2, 5, 3, 4), torch.float64, channels_last, requires_grad=True)
    assert gradcheck(tritattn.spatial_pool, (x,))


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_spatial_scale(gate):
    x = make_input((2, 5, 2, 3), torch.float64, channels_last=True, requires_grad=True)
    t = make_input((2, 1, 2, 3), torch.float64, requires_grad=True)
    assert gradcheck(lambda x, t: tritattn.spatial_scale(x, t, gate), (x, t))
