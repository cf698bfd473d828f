"""GCNet's context on the short host path (tritattn/context_step.py): the same launches as
``tritattn::context_pool`` and its backward op, so the same bits, for GlobalContext training
steps (NCHW and channels_last, float32 and bfloat16, default and tiny tiles), with autograd and
without; only the gradients autograd asks for; a kept call taking gradients of either layout; a
double backward refused; and taken only where the op would run its implementation directly, on
the kernels, for an x they address in place and a contiguous weight. (Against the float64
reference and timm: tests/test_context_block.py, whose training steps take this path.)"""
import copy

import pytest
import torch

import tritattn
from tritattn import context_step
from conftest import DEVICE, expected_backend, make_input, use_small_tiles
from fixtures.aten_ops import AtenOps
from test_context_block import step, timm_pair

ON_KERNELS = expected_backend() != "torch"


def _through_the_op(monkeypatch):
    """Within the monkeypatch's scope, the context calls the op (no MapCall applies)."""
    monkeypatch.setattr(context_step, "map_call", lambda x: None)


@pytest.mark.parametrize("tiles", ["default", "small"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("config", ["gcresnet", "gc_efficientnetv2", "add_and_scale"])
def test_a_training_step_gives_the_ops_bits(config, dtype, tiles, channels_last, monkeypatch):
    if tiles == "small":
        use_small_tiles(monkeypatch)  # several pixel blocks per sample: the partials' merge
    _, block = timm_pair(config)
    block = block.to(dtype).train()
    op_block = copy.deepcopy(block)
    x = make_input((2, 12, 7, 7), dtype, channels_last)
    cot = torch.randn_like(x)
    got = step(block, x, cot)
    with monkeypatch.context() as m:
        _through_the_op(m)
        want = step(op_block, x, cot)
    assert got.keys() == want.keys()
    assert got["y"].stride() == want["y"].stride() and got["grad_x"].stride() == want["grad_x"].stride()
    for key in want:
        assert torch.equal(got[key], want[key]), key


def _inputs(requires_grad=("x", "weight", "bias"), channels_last=False, dtype=torch.float32):
    x = make_input((2, 6, 3, 5), dtype, channels_last, requires_grad="x" in requires_grad)
    weight = torch.randn(1, 6, 1, 1, device=DEVICE, dtype=dtype).requires_grad_("weight" in requires_grad)
    bias = torch.randn(1, device=DEVICE, dtype=dtype).requires_grad_("bias" in requires_grad)
    return x, weight, bias


def test_a_step_runs_the_ops_launches(monkeypatch):
    from tritattn import tuning

    names = []
    real = tuning.Tuner.launch
    monkeypatch.setattr(tuning.Tuner, "launch", lambda self, *a: names.append(self.name) or real(self, *a))
    x, weight, bias = _inputs()
    ctx = context_step.pool(x, weight, bias)
    assert (type(ctx.grad_fn).__name__ == "ContextPoolStepBackward") == ON_KERNELS
    assert ctx.shape == (2, 6, 1, 1)
    ctx.sum().backward()
    assert names == (["context_pool_partials", "context_pool_combine", "context_pool_bwd"] if ON_KERNELS else [])


@pytest.mark.parametrize("wants", [("x",), ("weight",), ("bias",), ("x", "weight", "bias"), ()],
                         ids=["x", "weight", "bias", "all", "none"])
def test_only_the_wanted_gradients_and_the_ops_bits(wants, monkeypatch):
    x, weight, bias = _inputs(wants)
    leaves = [t for t in (x, weight, bias) if t.requires_grad]
    ctx = context_step.pool(x, weight, bias)
    with monkeypatch.context() as m:
        _through_the_op(m)
        ctx_op = context_step.pool(x, weight, bias)
    assert torch.equal(ctx, ctx_op) and ctx.stride() == ctx_op.stride()
    if not leaves:
        assert ctx.grad_fn is None
        return
    cot = torch.randn_like(ctx)
    grads, grads_op = torch.autograd.grad(ctx, leaves, cot), torch.autograd.grad(ctx_op, leaves, cot)
    for got, want in zip(grads, grads_op):
        assert torch.equal(got, want) and got.shape == want.shape and got.stride() == want.stride()


def test_a_kept_call_takes_gradients_of_either_layout(monkeypatch):
    """A MapCall keeps the backward's plan per layout of the incoming gradient [B, C, 1, 1]: a
    contiguous, a transposed-batch and again a contiguous gradient give the op's bits each time."""
    x, weight, bias = _inputs()
    cot = torch.randn(2, 6, 1, 1, device=DEVICE)
    for grad in (cot, cot.view(2, 6).t().contiguous().t().view(2, 6, 1, 1), cot):
        grads = torch.autograd.grad(context_step.pool(x, weight, bias), (x, weight, bias), grad)
        with monkeypatch.context() as m:
            _through_the_op(m)
            grads_op = torch.autograd.grad(context_step.pool(x, weight, bias), (x, weight, bias), grad)
        for got, want in zip(grads, grads_op):
            assert torch.equal(got, want)


def test_a_double_backward_is_refused():
    x, weight, bias = _inputs()
    if context_step.map_call(x) is None:
        pytest.skip("the eager torch backend (TRITATTN_TEST_BACKEND=torch): the op's formulas")
    ctx = context_step.pool(x, weight, bias)
    grad_x, grad_w, _ = torch.autograd.grad(ctx, (x, weight, bias), torch.randn_like(ctx), create_graph=True)
    assert grad_x.requires_grad and grad_w.requires_grad
    with pytest.raises(RuntimeError, match="context pooling is not differentiable"):
        grad_w.sum().backward()


def test_where_the_short_path_applies(monkeypatch):
    x, weight, bias = _inputs()
    assert (context_step.map_call(x) is not None) == ON_KERNELS
    assert (context_step.map_call(x.contiguous(memory_format=torch.channels_last)) is not None) == ON_KERNELS
    assert context_step.map_call(x.detach().transpose(2, 3)) is None  # no single pixel stride: the op copies it
    assert context_step.map_call(x[:0]) is None
    assert context_step.map_call(x.detach().to("meta")) is None
    with tritattn.disabled():
        assert context_step.map_call(x) is None
    with AtenOps() as ops:
        assert context_step.map_call(x) is None
        context_step.pool(x, weight, bias)
    assert "tritattn.context_pool" in ops.names
    # a weight that is not contiguous takes the op, with the same bits
    strided = torch.randn(1, 12, 1, 1, device=DEVICE)[:, ::2]
    ctx = context_step.pool(x, strided, bias)
    assert type(ctx.grad_fn).__name__ != "ContextPoolStepBackward"
    assert torch.equal(ctx, context_step.pool(x, strided.contiguous(), bias))


def test_a_new_tile_limit_is_a_new_call(monkeypatch):
    """The workspaces' sizes follow the tile, read at call time: a changed tiling.TILE_ELEMENTS
    (tests change it between calls) is another MapCall, and the bits stay the op's."""
    x, weight, bias = _inputs()
    first = context_step.map_call(x)
    use_small_tiles(monkeypatch)
    second = context_step.map_call(x)
    assert (first is not second) if ON_KERNELS else (first is second is None)
    ctx = context_step.pool(x, weight, bias)
    with monkeypatch.context() as m:
        _through_the_op(m)
        assert torch.equal(ctx, context_step.pool(x, weight, bias))


def test_a_bias_of_another_dtype_gets_the_ops_gradients(monkeypatch):
    """A float32 bias beside a bfloat16 weight (the op allows it): the weight partials summed in
    float32 and converted (context_block.sum_weight_partials' other branch), the op's bits. (The
    bias's gradient, Σ_p dlogit, is 0 up to rounding: a few bits, exact in either dtype.)"""
    x, weight, _ = _inputs(dtype=torch.bfloat16)
    bias = torch.randn(1, device=DEVICE, requires_grad=True)
    cot = torch.randn(2, 6, 1, 1, device=DEVICE, dtype=torch.bfloat16)
    grads = torch.autograd.grad(context_step.pool(x, weight, bias), (weight, bias), cot)
    with monkeypatch.context() as m:
        _through_the_op(m)
        grads_op = torch.autograd.grad(context_step.pool(x, weight, bias), (weight, bias), cot)
    assert grads[1].dtype == torch.float32
    for got, want in zip(grads, grads_op):
        assert torch.equal(got, want) and got.dtype == want.dtype
