"""A twin's plan (tritattn/module_plans.py: its gate, refusal and weights as the kernels take them)
is built once and reused — and built again whenever what it read changed: the weights' storage,
a parameter or layer replaced, ``requires_grad``, a mode, a plain attribute the block names, a
module-level limit, grad or inference mode. Each change is made after a first call; the next
call must give the float64 reference's output (and gradients) for the module as it is now. The
kernel paths are forced: the per-op path reads the layers, not the plan, and would hide a stale one.
"""
import gc
import weakref

import pytest
import torch
from torch import nn

import tritattn
from tritattn import excitation_block, module_plans, paths, reference
from conftest import DEVICE, assert_close, make_input

C = 12
SHAPE = (3, C, 3, 5)
KERNEL_PATHS = ["one-launch", "split"]


def fresh_se(**kwargs) -> tritattn.SEModule:
    return tritattn.SEModule(C, **kwargs).double().to(DEVICE)


def reference_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference class's forward on the module as it is now."""
    ref_class = getattr(reference, type(module).__name__)
    return ref_class.forward(module, x)


def check_output(module: nn.Module, x: torch.Tensor, what: str) -> None:
    with torch.no_grad():
        assert_close(module(x), reference_forward(module, x), what=what)


def test_plan_is_built_once_per_module(monkeypatch):
    se = fresh_se().eval()
    builds = []
    build = tritattn.SEModule.block_spec
    monkeypatch.setattr(tritattn.SEModule, "block_spec", lambda self: builds.append(1) or build(self))
    x = make_input(SHAPE, torch.float64)
    with paths.forced("one-launch"), torch.no_grad():
        for _ in range(3):
            se(x)
    assert len(builds) == 1
    other = fresh_se().eval()
    with paths.forced("one-launch"), torch.no_grad():
        other(x)
    assert len(builds) == 2  # a plan per module


def _swap_data(se):
    se.fc1.weight.data = torch.randn_like(se.fc1.weight)


def _copy_in_place(se):
    with torch.no_grad():
        se.fc2.weight.copy_(torch.randn_like(se.fc2.weight))


def _new_parameter(se):
    se.fc2.bias = nn.Parameter(torch.randn_like(se.fc2.bias))


def _new_layer(se):
    se.fc1 = nn.Conv2d(C, se.fc1.out_channels, 1).double().to(DEVICE)


def _new_activation(se):
    se.act = nn.SiLU()


def _maxpool_on(se):
    se.add_maxpool = True


MUTATIONS = [_swap_data, _copy_in_place, _new_parameter, _new_layer, _new_activation, _maxpool_on]


@pytest.mark.parametrize("path", KERNEL_PATHS)
@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda f: f.__name__.strip("_"))
def test_a_changed_module_is_read_again(mutate, path):
    se = fresh_se().eval()
    x = make_input(SHAPE, torch.float64)
    with paths.forced(path):
        check_output(se, x, "before")
        mutate(se)
        check_output(se, x, f"after {mutate.__name__}")


def test_mode_and_limit_changes_rebuild_the_refusal(monkeypatch):
    se = fresh_se(norm_layer=nn.BatchNorm2d)
    x = make_input(SHAPE, torch.float64)
    with torch.no_grad():
        se.bn.running_mean.uniform_(-0.5, 0.5), se.bn.running_var.uniform_(0.5, 1.5)
    with paths.forced("one-launch"):
        se.eval()
        check_output(se, x, "eval")
        assert se._plan().refusal is None and se._plan().spec.norm is not None
        se.bn.train()  # the child alone: the BatchNorm now uses batch statistics
        assert "training mode" in se._plan().refusal
        se.bn.eval()
        with torch.no_grad():
            se.bn.running_var.data = torch.rand_like(se.bn.running_var) + 0.5  # a buffer's storage
        check_output(se, x, "new running variance")
        monkeypatch.setattr(excitation_block, "MAX_HIDDEN", se.fc1.out_channels - 1)
        assert "hidden width" in se._plan().refusal
        check_output(se, x, "per-op, over the hidden limit")


def _grads(module, x, cot, reference=False):
    """(output, gradients of x and every parameter that requires one) of the twin's forward, or
    with ``reference`` of its reference class's forward on the same module."""
    x = x.detach().requires_grad_(True)
    y = reference_forward(module, x) if reference else module(x)
    leaves = [x] + [p for p in module.parameters() if p.requires_grad]
    return y, torch.autograd.grad(y, leaves, cot)


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_gradients_after_plans_built_in_other_modes(path):
    """A plan made under no_grad or inference_mode holds weight views without gradients: the
    training step builds its own, and every weight gets its gradient."""
    se = fresh_se()
    x = make_input(SHAPE, torch.float64)
    cot = torch.randn(SHAPE, dtype=torch.float64, device=DEVICE)
    with paths.forced(path):
        with torch.inference_mode():
            se(x)
        with torch.no_grad():
            se(x)
        y, grads = _grads(se, x, cot)
    y_ref, grads_ref = _grads(se, x, cot, reference=True)
    assert_close(y, y_ref, what="output")
    for g, r in zip(grads, grads_ref):
        assert_close(g, r, what="gradient")


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_freezing_and_unfreezing_a_weight(path):
    se = fresh_se()
    x = make_input(SHAPE, torch.float64)
    cot = torch.randn(SHAPE, dtype=torch.float64, device=DEVICE)
    with paths.forced(path):
        se.fc1.weight.requires_grad_(False)
        se(x).backward(cot)  # the plan is built with fc1's weight frozen
        assert se.fc1.weight.grad is None and se.fc2.weight.grad is not None
        se.fc1.weight.requires_grad_(True)
        _, grads = _grads(se, x, cot)
        se.fc1.weight.requires_grad_(False)
        se.zero_grad(set_to_none=True)
        se(x).backward(cot)
        assert se.fc1.weight.grad is None and se.fc2.weight.grad is not None
        se.fc1.weight.requires_grad_(True)
    _, grads_ref = _grads(se, x, cot, reference=True)
    assert len(grads) == len(grads_ref) == 5
    for g, r in zip(grads, grads_ref):
        assert_close(g, r, what="gradient after unfreezing")


def test_plans_go_with_their_module():
    se = fresh_se().eval()
    with torch.no_grad():
        se(make_input(SHAPE, torch.float64))
    assert module_plans.has_plans(se)
    gone = weakref.ref(se)
    del se
    gc.collect()
    assert gone() is None
    assert all(ref() is not None for ref, _ in module_plans._plans.values())  # its entry went with it


def test_state_token_sees_what_the_plan_reads():
    se = fresh_se()
    token = module_plans.state_token(se)
    assert module_plans.state_token(se) == token
    changes = [
        lambda: se.fc1.weight.requires_grad_(False),
        lambda: se.eval(),
        lambda: setattr(se.fc2.weight, "data", se.fc2.weight.detach().clone()),
        lambda: setattr(se, "gate", nn.Hardsigmoid()),
    ]
    for change in changes:
        change()
        assert module_plans.state_token(se) != token
        token = module_plans.state_token(se)


def test_global_context_plan_follows_weights_and_hooks():
    """GCNet's inference runs its MLPs inside the context kernel from the plan's weight views; a
    hook registered after the first call moves the MLPs back to torch (the hook fires)."""
    from tritattn.global_context import GlobalContext

    gc_block = GlobalContext(C, fuse_add=True).double().to(DEVICE).eval()
    x = make_input(SHAPE, torch.float64)
    check_output(gc_block, x, "first call")
    assert gc_block._plan().mlp_refusal is None
    gc_block.mlp_scale.fc1.weight.data = torch.randn_like(gc_block.mlp_scale.fc1.weight)
    with torch.no_grad():
        gc_block.mlp_add.fc2.bias.copy_(torch.randn_like(gc_block.mlp_add.fc2.bias))
    check_output(gc_block, x, "after new MLP weights")
    fired = []
    gc_block.mlp_add.act.register_forward_hook(lambda *args: fired.append(1))
    check_output(gc_block, x, "with a hook")
    assert "hooks" in gc_block._plan().mlp_refusal and fired


@pytest.mark.parametrize("groups", [1, 2])
def test_selective_kernel_sees_in_place_writes(groups):
    """SelectiveKernel's inference kernels take the paths' BatchNorms concatenated (a copy, made at
    each call) and, with grouped attention convs, dense weights (a copy too): a write through
    ``.data`` (no version bump) after the first call is seen, as are the views' writes."""
    from tritattn.split_attention import SelectiveKernel

    sk = SelectiveKernel(C, C, rd_channels=4).double().to(DEVICE).eval()
    if groups > 1:
        for conv in (sk.attn.fc_reduce, sk.attn.fc_select):
            conv.groups = groups
            conv.weight = nn.Parameter(conv.weight[:, : conv.in_channels // groups].detach().clone())
    x = make_input(SHAPE, torch.float64)
    check_output(sk, x, "first call")
    sk.paths[0].bn.running_mean.data.copy_(torch.randn_like(sk.paths[0].bn.running_mean))
    sk.attn.fc_select.weight.data.mul_(-1.5)
    check_output(sk, x, "after in-place writes through .data")
