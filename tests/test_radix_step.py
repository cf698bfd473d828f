"""The radix twins' short host path (tritattn/radix_step.py): the same launches as ``radix_pool``
and ``radix_combine`` (and its backward op), so the same bits, for SplitAttn and SelectiveKernel
training steps (NCHW and channels_last, float32 and bfloat16), with autograd and without; the
four launches of a SplitAttn step, x5's gradient deferred to the pool's backward wherever it
runs after the combine's (and only there); the pool's gradient a broadcast view; a double backward through the
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


@pytest.mark.parametrize("engine_answers", [True, False])
def test_a_splitattn_step_is_four_launches_x5s_gradient_written_once(engine_answers, launched, monkeypatch):
    """SplitAttn's backward: the combine's launch gives the attention's gradient alone, and x5's
    whole gradient (a · g + the pooled gradient / H·W) is written once, by the pool's backward
    launch after the MLP's backward (where the op path writes a · g and autograd then adds the
    pool's broadcast gradient, a second pass over x5's gradient). A torch whose engine does not
    answer (radix_step.ENGINE_ANSWERS) gets the three launches of the op path, and its gradients."""
    monkeypatch.setattr(radix_step, "ENGINE_ANSWERS", engine_answers)
    twin = _twin("splat-r2-bn", torch.float32)
    op_twin = copy.deepcopy(twin)
    x = make_input(MODULE_CASES["splat-r2-bn"][3], torch.float32, requires_grad=True)
    (grad,) = torch.autograd.grad(twin(x).sum(), x)
    assert launched == (["radix_pool_fwd", "radix_combine_fwd"] + ["radix_combine_bwd"] * (1 + engine_answers)
                        if on_kernels() else [])
    with monkeypatch.context() as m:
        _through_the_ops(m)
        (want,) = torch.autograd.grad(op_twin(x).sum(), x)
    assert torch.equal(grad, want)


@pytest.mark.parametrize("hooked", [None, "attention", "global"])
def test_a_selective_kernel_step_defers_through_its_twin_attention_unless_hooked(hooked, launched):
    """SelectiveKernel with the twin attention calls it for the pooled descriptor too (x5's
    gradient then written once); a hook on the attention, or a global module hook, runs: the
    attention is called as a module, and the combine writes its part of x5's gradient itself."""
    twin = _twin("sk-3paths-nosplit", torch.float32)
    x = make_input(MODULE_CASES["sk-3paths-nosplit"][3], torch.float32, requires_grad=True)
    seen = []
    handle = None
    if hooked == "attention":
        handle = twin.attn.register_forward_hook(lambda m, i, o: seen.append(type(m).__name__))
    elif hooked == "global":
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda m, i, o: seen.append(type(m).__name__) if m is twin.attn else None)
    try:
        twin(x).sum().backward()
    finally:
        if handle is not None:
            handle.remove()
    assert seen == ([] if hooked is None else ["SelectiveKernelAttn"])
    tail = ["radix_combine_bwd"] * (2 if hooked is None else 1)
    assert launched == (["radix_pool_fwd", "radix_combine_fwd"] + tail if on_kernels() else [])


def _linked(x5: torch.Tensor, call, detach_attention: bool = False):
    """(pooled, a, out): the attention made from the pool's output as SplitAttn makes it (a
    sigmoid with a weight standing for the MLP), or from a copy of it that is not
    (``detach_attention``: a still wants a gradient, the weight's)."""
    pooled = radix_step.pool(x5, call)
    logits = pooled.detach() if detach_attention else pooled
    weight = torch.full((), 3.0, device=DEVICE, requires_grad=True)
    a = torch.sigmoid(logits.flatten(1).repeat(1, x5.shape[1]) * weight)  # [B, R·C] in (r, c) order
    return pooled, a, radix_step.combine(x5, a, call, pooled)


@pytest.mark.parametrize("wanted", ["x5", "a only", "x5 and the pooled output", "detached attention",
                                    "detached attention, pooled unused", "twice with retain_graph"])
def test_a_deferred_combine_backward_gives_the_ops_gradients(wanted, monkeypatch):
    """Wherever the pool's backward runs after the combine's in the same backward, x5's gradient
    comes whole from it; wherever it does not (only a's gradient asked for, an attention not made
    from the pooled output), the combine writes its part itself: the op path's gradients always."""
    x5 = _branches()
    call = radix_step.branches_call(x5)
    modes = []
    real = radix_step.launch.radix_combine_bwd if call is not None else None

    def spy(g, x5, a, grad_x5, grad_a, plan=None, pooled_grad=None):
        modes.append("apply" if pooled_grad is not None else "reduce" if grad_x5 is None else "both")
        return real(g, x5, a, grad_x5, grad_a, plan=plan, pooled_grad=pooled_grad)

    if call is not None:
        monkeypatch.setattr(radix_step.launch, "radix_combine_bwd", spy)
    cot = torch.randn(2, 6, 3, 5, device=DEVICE)
    results = []
    for c in (call, None):
        pooled, a, out = _linked(x5, c, detach_attention=wanted.startswith("detached attention"))
        loss_out = (out * cot).sum()
        if wanted == "a only":
            results.append(torch.autograd.grad(loss_out, a))
        elif wanted == "x5 and the pooled output":
            results.append(torch.autograd.grad(loss_out + (pooled * 0.7).sum(), x5))
        elif wanted == "twice with retain_graph":
            first = torch.autograd.grad(loss_out, x5, retain_graph=True)
            results.append(first + torch.autograd.grad(loss_out, x5))
        else:
            results.append(torch.autograd.grad(loss_out + (pooled.sum() if wanted == "detached attention" else 0), x5))
        if c is not None:  # the short path's launches, before the op path's run
            expected = {"x5": ["reduce", "apply"], "a only": ["both"], "x5 and the pooled output": ["reduce", "apply"],
                        "detached attention, pooled unused": ["both"], "twice with retain_graph": ["reduce", "apply"] * 2}
            assert modes == expected.get(wanted, modes)
    for got, want in zip(*results):
        assert torch.equal(got, want)


def test_the_combine_defers_only_to_the_pool_of_its_own_branches():
    """A pooled output of other branches (or of a leaf x5) is not linked: the combine writes x5's
    gradient itself."""
    x5, other = _branches(), _branches()
    call = radix_step.branches_call(x5)
    if call is None:
        pytest.skip("the eager torch backend (TRITATTN_TEST_BACKEND=torch): no short path")
    pooled_other = radix_step.pool(other, call)
    assert radix_step._pool_node(pooled_other, x5) is None
    assert radix_step._pool_node(radix_step.pool(x5, call), x5) is not None
    leaf = x5.detach().requires_grad_()
    assert radix_step._pool_node(radix_step.pool(leaf, call), leaf) is None
    a = torch.rand(2, 18, device=DEVICE, requires_grad=True)
    cot = torch.randn(2, 6, 3, 5, device=DEVICE)
    got = torch.autograd.grad((radix_step.combine(x5, a, call, pooled_other) * cot).sum(), (x5, a))
    want = torch.autograd.grad((radix_step.combine(x5, a, None) * cot).sum(), (x5, a))
    for g, w in zip(got, want):
        assert torch.equal(g, w)


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
