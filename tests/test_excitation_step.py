"""The block op's short host path (tritattn/excitation_step.py): the same launches as
``tritattn::excitation_block`` and its backward op, so the same bits, with autograd and without,
on both kernel paths, for every pooling × excitation kind, both epilogues and a residual, NCHW
and channels_last; only the gradients autograd asks for (the apply launch skipped where x and
the residual want none); a double backward refused; and taken only where the op would run its
implementation directly. (Against the float64 reference: tests/test_excitation_block.py, whose
calls take this path, and tests/test_modules.py through the twins.)"""
import pytest
import torch

from tritattn import excitation_block, excitation_step, launch, paths
from tritattn.excitation_block import BlockSpec
from conftest import make_input
from fixtures.copies import spy_on_copies
from test_excitation_block import KERNEL_PATHS, KIND_IDS, KINDS, make_weights

SHAPE = (3, 6, 3, 5)
EPILOGUES = {"plain": (False, "identity"), "residual": (True, "identity"), "residual-relu": (True, "relu")}


def _call(pool, mlp, act, channels_last, with_residual, grads_of=("x", "residual", "w1", "b1", "w2", "b2")):
    """x, residual and the weights (fresh; requires_grad only for the names in ``grads_of``)."""
    x = make_input(SHAPE, torch.float32, channels_last, requires_grad="x" in grads_of)
    residual = make_input(SHAPE, torch.float32, channels_last, requires_grad="residual" in grads_of) if with_residual else None
    weights = tuple(None if w is None else w.detach().requires_grad_(name in grads_of)
                    for name, w in zip(("w1", "b1", "w2", "b2"), make_weights(mlp, SHAPE[1], 4)))
    return x, residual, weights


def _through_the_op(x, residual, weights, pool, mlp, act, act_out, path):
    """y from ``torch.ops.tritattn.excitation_block`` through the dispatcher: the op's own autograd formula."""
    return torch.ops.tritattn.excitation_block(x, residual, *weights, pool, mlp, act, "sigmoid", act_out, path=path)[0]


def _leaves(x, residual, weights):
    return [t for t in (x, residual, *weights) if t is not None and t.requires_grad]


@pytest.mark.parametrize("epilogue", list(EPILOGUES))
@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_the_step_gives_the_ops_bits(path, kind, epilogue, channels_last, monkeypatch):
    pool, mlp, act = kind
    with_residual, act_out = EPILOGUES[epilogue]
    x, residual, weights = _call(pool, mlp, act, channels_last, with_residual)
    spec = BlockSpec(pool, mlp, act, *weights)
    copied = spy_on_copies(monkeypatch, excitation_step)
    y = excitation_block.excitation(x, spec, "sigmoid", residual, act_out, path=path)
    assert type(y.grad_fn).__name__ == "ExcitationStepBackward"
    leaves = _leaves(x, residual, weights)
    cot = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, cot)
    assert not copied, f"the short path copied inputs of shapes {copied}"  # NCHW and channels_last in place
    y_op = _through_the_op(x, residual, weights, pool, mlp, act, act_out, path)
    assert type(y_op.grad_fn).__name__ != "ExcitationStepBackward"
    grads_op = torch.autograd.grad(y_op, leaves, cot)
    assert torch.equal(y, y_op)
    assert y.stride() == y_op.stride()
    for g, g_op in zip(grads, grads_op):
        assert torch.equal(g, g_op) and g.shape == g_op.shape


@pytest.mark.parametrize("kind", [("mean", "fc_act_fc", "silu"), ("mean_max_avg", "fc", "identity")],
                         ids=["fc_act_fc-silu", "fc"])
def test_low_precision_weights_give_the_ops_bits(kind):
    """bfloat16 x and weights (a model cast with .to(bfloat16)): the split path's MLP converts the
    weights to float32 at each call (no prepared copy could follow an optimizer step), the weight
    gradients are made in float32 and converted — the op's bits."""
    pool, mlp, act = kind
    x = make_input(SHAPE, torch.bfloat16, False, requires_grad=True)
    weights = tuple(None if w is None else w.detach().to(torch.bfloat16).requires_grad_()
                    for w in make_weights(mlp, SHAPE[1], 4))
    y = excitation_block.excitation(x, BlockSpec(pool, mlp, act, *weights), "sigmoid", path="split")
    assert type(y.grad_fn).__name__ == "ExcitationStepBackward"
    leaves = _leaves(x, None, weights)
    cot = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, cot)
    y_op = _through_the_op(x, None, weights, pool, mlp, act, "identity", "split")
    grads_op = torch.autograd.grad(y_op, leaves, cot)
    assert torch.equal(y, y_op)
    for g, g_op in zip(grads, grads_op):
        assert g.dtype == torch.bfloat16 and torch.equal(g, g_op)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_without_autograd_the_forward_gives_the_ops_bits(path, kind, channels_last):
    pool, mlp, act = kind
    x, residual, weights = _call(pool, mlp, act, channels_last, True)
    with torch.no_grad():
        y = excitation_block.excitation(x, BlockSpec(pool, mlp, act, *weights), "sigmoid", residual, "relu", path=path)
        y_op = _through_the_op(x, residual, weights, pool, mlp, act, "relu", path)
    assert y.grad_fn is None
    assert torch.equal(y, y_op) and y.stride() == y_op.stride()


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_frozen_weights_get_no_gradient_and_x_the_same(path):
    pool, mlp, act = "mean", "fc_act_fc", "relu"
    x, _, weights = _call(pool, mlp, act, False, False, grads_of=("x", "w2"))
    spec = BlockSpec(pool, mlp, act, *weights)
    y = excitation_block.excitation(x, spec, "sigmoid", path=path)
    cot = torch.randn_like(y)
    grad_x, grad_w2 = torch.autograd.grad(y, [x, weights[2]], cot)
    y_op = _through_the_op(x, None, weights, pool, mlp, act, "identity", path)
    grad_x_op, grad_w2_op = torch.autograd.grad(y_op, [x, weights[2]], cot)
    assert torch.equal(grad_x, grad_x_op) and torch.equal(grad_w2, grad_w2_op)


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_without_a_gradient_for_x_the_apply_launch_does_not_run(path, monkeypatch):
    pool, mlp, act = "mean_max_avg", "fc_act_fc", "silu"
    x, _, weights = _call(pool, mlp, act, False, False, grads_of=("w1", "b1", "w2", "b2"))
    applied = []
    real_apply = launch.excitation_bwd_apply
    monkeypatch.setattr(launch, "excitation_bwd_apply", lambda *a, **k: applied.append(1) or real_apply(*a, **k))
    spec = BlockSpec(pool, mlp, act, *weights)
    y = excitation_block.excitation(x, spec, "sigmoid", path=path)
    cot = torch.randn_like(y)
    grads = torch.autograd.grad(y, list(weights), cot)
    assert applied == []
    grads_op = torch.autograd.grad(_through_the_op(x, None, weights, pool, mlp, act, "identity", path), list(weights), cot)
    assert applied == [1]  # the op's backward computes grad_x whatever autograd wants
    for g, g_op in zip(grads, grads_op):
        assert torch.equal(g, g_op)


def test_a_one_launch_step_zeroes_its_ticket_counters_once(monkeypatch):
    """The backward's reduce launch takes the forward's counters (its kernel left them at 0):
    one zeroed buffer per training step, not two; the bits are the op's (which zeroes two)."""
    from tritattn import workspaces

    pool, mlp, act = "mean", "fc_act_fc", "relu"
    x, _, weights = _call(pool, mlp, act, False, False)
    zeroed = []
    counters = workspaces.counters
    monkeypatch.setattr(workspaces, "counters", lambda device, n: zeroed.append(n) or counters(device, n))
    y = excitation_block.excitation(x, BlockSpec(pool, mlp, act, *weights), "sigmoid", path="one-launch")
    cot = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, *weights], cot)
    assert zeroed == [SHAPE[0]]
    grads_op = torch.autograd.grad(_through_the_op(x, None, weights, pool, mlp, act, "identity", "one-launch"),
                                   [x, *weights], cot)
    assert len(zeroed) == 3  # the op: one per direction
    for g, g_op in zip(grads, grads_op):
        assert torch.equal(g, g_op)


def test_a_double_backward_is_refused():
    pool, mlp, act = "mean", "fc_act_fc", "relu"
    x, _, weights = _call(pool, mlp, act, False, False)
    y = excitation_block.excitation(x, BlockSpec(pool, mlp, act, *weights), "sigmoid", path="split")
    (grad_x,) = torch.autograd.grad(y, [x], torch.randn_like(y), create_graph=True)
    assert grad_x.requires_grad
    with pytest.raises(RuntimeError, match="not differentiable"):
        grad_x.sum().backward()


def test_where_the_step_applies():
    pool, mlp, act = "mean", "fc_act_fc", "relu"
    x, _, weights = _call(pool, mlp, act, False, False)
    spec = BlockSpec(pool, mlp, act, *weights)
    assert excitation_step.applies(x, spec, None, "one-launch")
    assert not excitation_step.applies(x, spec, None, excitation_block.OP_CHOOSES)  # compile / trace: the op
    assert not excitation_step.applies(x, spec, None, "per-op")
    with torch.no_grad():
        assert excitation_step.applies(x, spec, None, "split")  # nothing to record: the forward's launches alone
    norm = tuple(torch.rand(4) + 0.5 for _ in range(4)) + (1e-5,)
    assert not excitation_step.applies(x, BlockSpec(pool, mlp, act, *weights, norm=norm), None, "split")
    assert not excitation_step.applies(x.detach().to("meta").requires_grad_(), spec, None, "split")
    assert not excitation_step.applies(x[:0], spec, None, "split")


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_a_twins_training_call_takes_the_step(path):
    from tritattn.modules import SEModule

    block = SEModule(12, rd_channels=4).train()
    x = make_input((2, 12, 3, 5), torch.float32, requires_grad=True)
    with paths.forced(path):
        y = block(x)
    assert type(y.grad_fn).__name__ == "ExcitationStepBackward"
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in block.parameters())


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_a_kept_step_takes_gradients_of_either_layout(path):
    """A Step keeps its launches' plans for its call signature, the backward's per layout of the
    incoming gradient: one step meeting a contiguous, a channels_last and again a contiguous
    gradient gives the op's bits each time."""
    pool, mlp, act = "mean_max_avg", "fc_act_fc", "silu"
    x, _, weights = _call(pool, mlp, act, False, False)
    spec = BlockSpec(pool, mlp, act, *weights)
    step = excitation_step.Step(x, spec, "sigmoid", None, "identity", path)
    leaves = _leaves(x, None, weights)
    cot = torch.randn(SHAPE)
    for layout in (torch.contiguous_format, torch.channels_last, torch.contiguous_format):
        grad = cot.contiguous(memory_format=layout)
        y = step(x, None)
        assert type(y.grad_fn).__name__ == "ExcitationStepBackward"
        grads = torch.autograd.grad(y, leaves, grad)
        y_op = _through_the_op(x, None, weights, pool, mlp, act, "identity", path)
        grads_op = torch.autograd.grad(y_op, leaves, grad)
        for g, g_op in zip(grads, grads_op):
            assert torch.equal(g, g_op)
