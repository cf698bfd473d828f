"""The radix twins' short host path (tritattn/radix_step.py): the same launches as ``radix_pool``
and ``radix_combine`` (and its backward op), so the same bits, for SplitAttn and SelectiveKernel
training steps (NCHW and channels_last, float32 and bfloat16), with autograd and without; the
three launches of a step; the pool's gradient a broadcast view; a double backward through the
combine refused; a kept call taking gradients of either layout; and taken only where the ops
would run their implementations directly, on the kernels, for branches they address in place.
(Against the float64 reference and timm: tests/test_radix_block.py, whose training steps take
this path.)"""
import copy

import pytest
import torch

import tritattn
from tritattn import radix_step, split_attention
from conftest import DEVICE, make_input
from fixtures.aten_ops import AtenOps
from fixtures.model_runs import training_step
from test_radix_block import MODULE_CASES, build_peer_and_twin, launched, on_kernels  # noqa: F401

STEP_CASES = ["splat-r2-bn", "splat-r1-g4-bn", "splat-r4-g2-bn", "sk-3paths-nosplit"]


def _twin(case: str, dtype: torch.dtype) -> torch.nn.Module:
    """The case's twin in training, in ``dtype``; a SelectiveKernel's attention the twin too (its pool on the path)."""
    _, twin = build_peer_and_twin(case)
    if isinstance(twin, split_attention.SelectiveKernel):
        twin.attn.__class__ = split_attention.SelectiveKernelAttn
    return twin.to(dtype).train()


def _through_the_ops(monkeypatch):
    """Within the monkeypatch's scope, the twins' passes call the ops (no BranchesCall applies)."""
    monkeypatch.setattr(radix_step, "branches_call", lambda x5: None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("case", STEP_CASES)
def test_a_training_step_gives_the_ops_bits(case, dtype, channels_last, monkeypatch):
    twin = _twin(case, dtype)
    op_twin = copy.deepcopy(twin)
    x = make_input(MODULE_CASES[case][3], dtype, channels_last)
    with torch.no_grad():
        cotangent = torch.randn_like(copy.deepcopy(twin)(x))
    got = training_step(twin, x, cotangent)
    assert (type(got["y"].grad_fn).__name__ == "RadixCombineStepBackward") == on_kernels()
    with monkeypatch.context() as m:
        _through_the_ops(m)
        want = training_step(op_twin, x, cotangent)
    assert type(want["y"].grad_fn).__name__ != "RadixCombineStepBackward"
    assert got.keys() == want.keys()
    assert got["y"].stride() == want["y"].stride()
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_a_step_is_three_launches(launched):
    twin = _twin("splat-r2-bn", torch.float32)
    x = make_input(MODULE_CASES["splat-r2-bn"][3], torch.float32, requires_grad=True)
    twin(x).sum().backward()
    assert launched == (["radix_pool_fwd", "radix_combine_fwd", "radix_combine_bwd"] if on_kernels() else [])


def _branches(shape=(2, 3, 6, 3, 5), requires_grad=True, channels_last=False) -> torch.Tensor:
    B, R, C, H, W = shape
    return make_input((B, R * C, H, W), torch.float32, channels_last, requires_grad=requires_grad).view(shape)


def _ops(x5: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled [B, C, 1, 1], out) through the ops."""
    return radix_step.pool(x5, None), radix_step.combine(x5, a, None)


def test_without_autograd_the_passes_give_the_ops_bits():
    x5 = _branches(requires_grad=False)
    a = torch.rand(2, 18, device=DEVICE).softmax(1)
    call = radix_step.branches_call(x5)
    assert (call is not None) == on_kernels()
    pooled, out = radix_step.pool(x5, call), radix_step.combine(x5, a, call)
    assert pooled.grad_fn is None and out.grad_fn is None
    pooled_op, out_op = _ops(x5, a)
    assert pooled.shape == (2, 6, 1, 1) and torch.equal(pooled, pooled_op)
    assert torch.equal(out, out_op) and out.stride() == out_op.stride()


@pytest.mark.parametrize("wants", ["x5", "a", "both"])
def test_gradients_of_either_input_give_the_ops_bits_and_layouts(wants):
    x5 = _branches(requires_grad=wants != "a", channels_last=True)
    a = torch.rand(2, 3, 6, 1, 1, device=DEVICE).requires_grad_(wants != "x5")
    leaves = [t for t in (x5, a) if t.requires_grad]
    g = make_input((2, 6, 3, 5), torch.float32, channels_last=True)
    out = radix_step.combine(x5, a, radix_step.branches_call(x5))
    grads = torch.autograd.grad(out, leaves, g)
    grads_op = torch.autograd.grad(radix_step.combine(x5, a, None), leaves, g)
    for got, want in zip(grads, grads_op):
        assert torch.equal(got, want) and got.shape == want.shape and got.stride() == want.stride()


def test_the_pool_gradient_is_a_broadcast_view():
    x5 = _branches()
    pooled = radix_step.pool(x5, radix_step.branches_call(x5))
    (grad,) = torch.autograd.grad(pooled, x5, torch.ones_like(pooled))
    assert grad.stride(1) == grad.stride(3) == grad.stride(4) == 0, "an expanded view, no plane written"
    assert torch.equal(grad, torch.full_like(x5, 1 / 15))


def test_a_double_backward_through_the_combine_is_refused():
    x5 = _branches()
    a = torch.rand(2, 18, device=DEVICE, requires_grad=True)
    call = radix_step.branches_call(x5)
    if call is None:
        pytest.skip("the eager torch backend (TRITATTN_TEST_BACKEND=torch): the ops' backward is torch's, differentiable")
    out = radix_step.combine(x5, a, call)
    grad_x5, grad_a = torch.autograd.grad(out, (x5, a), torch.randn_like(out), create_graph=True)
    assert grad_x5.requires_grad and grad_a.requires_grad
    with pytest.raises(RuntimeError, match="radix_combine is not differentiable"):
        grad_a.sum().backward()


def test_a_kept_call_takes_gradients_of_either_layout():
    """A BranchesCall keeps the backward's plan per layout of the incoming gradient: one call
    meeting a contiguous, a channels_last, a non-addressable (H and W transposed: copied) and
    again a contiguous gradient gives the op's bits each time."""
    x5 = _branches()
    a = torch.rand(2, 18, device=DEVICE, requires_grad=True)
    call = radix_step.branches_call(x5)
    cot = torch.randn(2, 6, 3, 5, device=DEVICE)
    for grad in (cot, cot.contiguous(memory_format=torch.channels_last),
                 cot.transpose(2, 3).contiguous().transpose(2, 3), cot):
        grads = torch.autograd.grad(radix_step.combine(x5, a, call), (x5, a), grad)
        grads_op = torch.autograd.grad(radix_step.combine(x5, a, None), (x5, a), grad)
        for got, want in zip(grads, grads_op):
            assert torch.equal(got, want)


def test_where_the_short_path_applies():
    x5 = _branches()
    assert (radix_step.branches_call(x5) is not None) == on_kernels()
    assert (radix_step.branches_call(_branches(channels_last=True)) is not None) == on_kernels()
    # H and W transposed (no single pixel stride: the ops copy them), empty, on the meta device
    assert radix_step.branches_call(x5.detach().transpose(3, 4)) is None
    assert radix_step.branches_call(x5[:0]) is None
    assert radix_step.branches_call(x5.detach().to("meta")) is None
    with tritattn.disabled():
        assert radix_step.branches_call(x5) is None
    with AtenOps() as ops:  # a dispatch mode sees the ops by name
        assert radix_step.branches_call(x5) is None
        radix_step.pool(x5, None)
    assert ops.names == ["tritattn.radix_pool", "aten.unsqueeze", "aten.unsqueeze"]


def test_weights_that_are_not_contiguous_take_the_op():
    x5 = _branches()
    a = torch.rand(2, 6, 3, device=DEVICE).transpose(1, 2).requires_grad_()  # [2, 3, 6], not contiguous
    out = radix_step.combine(x5, a, radix_step.branches_call(x5))
    assert type(out.grad_fn).__name__ != "RadixCombineStepBackward"
    assert torch.equal(out, radix_step.combine(x5, a.contiguous(), None))
