"""The ``torch.autograd.Function`` classes of the differentiable ops (:mod:`tritattn.functions`,
exported by :mod:`tritattn.functional`): each is its op with the op's own registered formula.

- every class, on a small problem (C = 5, H×W = 3×5 or 7×7): ``X.apply`` gives the raw op's
  outputs and gradients bit for bit (the same kernels, the same formula), with the same outputs
  marked non-differentiable;
- two of them against float64 references written here from the math;
- a few under ``torch.compile(fullgraph=True)`` (AOTAutograd, ``aot_eager``): one graph, the raw
  op's eager gradients bit for bit, trailing arguments with a default left out (ExcitationBlock);
  keywords are refused;
- every op of tritattn with a registered autograd formula has its class, built from that very
  formula (the same ``setup_context`` and ``backward`` objects), exported under its name;
  the inference-only ops, without a class, refuse autograd.
"""
from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch
import torch._dynamo.testing

import tritattn
import tritattn.functional as F
from conftest import DEVICE, assert_close, logit_grad_scale, make_input, reference_copy
from fixtures.model_runs import interpreter_friendly  # noqa: F401
from tritattn.functions import FUNCTIONS

B, C, H, W, R, RD = 2, 5, 3, 5, 2, 3

#: ops whose registered formula refuses autograd (no backward kernel), so they have no class
INFERENCE_ONLY = {"tritattn::radix_attention", "tritattn::context_mlp"}


def leaf(*shape: int, scale: float = 1.0) -> torch.Tensor:
    return make_input(shape, torch.float32, requires_grad=True, scale=scale)


def _excitation_block_with_prologue() -> tuple:
    """The block with a hidden eval BatchNorm and a batch-statistics prologue (every gradient slot)."""
    running = (torch.randn(RD, device=DEVICE), torch.rand(RD, device=DEVICE) + 0.5)
    return (leaf(B, C, H, W), leaf(B, C, H, W), leaf(RD, C), leaf(RD), leaf(C, RD), leaf(C),
            "mean", "fc_act_fc", "silu", "sigmoid", "relu", leaf(RD), leaf(RD), *running, 1e-5,
            "relu", leaf(C), leaf(C), None, None, 1e-5, True)


def _cbam_block() -> tuple:
    running = (torch.randn(1, device=DEVICE), torch.rand(1, device=DEVICE) + 0.5)
    return (leaf(B, C, 7, 7), leaf(RD, C), leaf(RD), leaf(C, RD), leaf(C), "mean_max_both", "relu", "sigmoid",
            leaf(1, 2, 7, 7, scale=0.2), leaf(1), leaf(1), *running, 1e-5, True, "sigmoid")


#: id → (class, a function drawing fresh arguments for ``apply``, in the op's schema order)
CASES = {
    "Squeeze-mean_max": (F.Squeeze, lambda: (leaf(B, C, H, W), True, True)),
    "Squeeze-mean": (F.Squeeze, lambda: (leaf(B, C, H, W), True, False)),
    "SpatialPool": (F.SpatialPool, lambda: (leaf(B, C, 7, 7),)),
    "ExciteScale": (F.ExciteScale, lambda: (leaf(B, C, H, W), leaf(B, C), leaf(B, C, H, W), "hard_sigmoid", "relu")),
    "SpatialScale": (F.SpatialScale, lambda: (leaf(B, C, H, W), leaf(B, 1, H, W), "sigmoid")),
    "ExcitationBlock": (F.ExcitationBlock, lambda: (  # the defaulted arguments (BatchNorm, prologue) left out
        leaf(B, C, H, W), leaf(B, C, H, W), leaf(RD, C), leaf(RD), leaf(C, RD), leaf(C),
        "mean_max_both", "fc_act_fc", "relu", "sigmoid", "relu")),
    "ExcitationBlock-bn-prologue": (F.ExcitationBlock, _excitation_block_with_prologue),
    "CbamBlock": (F.CbamBlock, _cbam_block),
    "RadixPool": (F.RadixPool, lambda: (leaf(B, R, C, H, W),)),
    "RadixCombine": (F.RadixCombine, lambda: (leaf(B, R, C, H, W), leaf(B, R, C).softmax(1).detach().requires_grad_())),
    "ContextPool": (F.ContextPool, lambda: (leaf(B, C, H, W), leaf(C), leaf(1))),
}


def _outputs(result) -> tuple[torch.Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def _leaves(args: tuple) -> list[torch.Tensor]:
    return [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]


def _run(call, args: tuple, cots: list[torch.Tensor] | None = None) -> tuple[tuple, tuple, list]:
    """(outputs, gradients of the leaves, cotangents): a backward from every differentiable output
    with ``cots`` (fresh ones when None)."""
    outputs = _outputs(call(*args))
    differentiable = [o for o in outputs if o.requires_grad]
    if cots is None:
        cots = [torch.randn_like(o) for o in differentiable]
    grads = torch.autograd.grad(differentiable, _leaves(args), cots, allow_unused=True)
    return outputs, grads, cots


def _op_of(cls: type) -> object:
    qualname = next(q for q, c in FUNCTIONS.items() if c is cls)
    namespace, name = qualname.split("::")
    return getattr(getattr(torch.ops, namespace), name)


def _assert_same(a: tuple, b: tuple, what: str) -> None:
    assert len(a) == len(b), what
    for i, (u, v) in enumerate(zip(a, b)):
        assert (u is None) == (v is None), f"{what} {i}: {u} vs {v}"
        if u is not None:
            assert u.shape == v.shape and u.dtype == v.dtype and u.stride() == v.stride(), f"{what} {i}"
            assert torch.equal(u, v), f"{what} {i}: not bitwise equal"


@pytest.mark.parametrize("case", list(CASES))
def test_apply_gives_the_ops_outputs_and_gradients(case, interpreter_friendly):
    cls, draw = CASES[case]
    args = draw()
    op_out, op_grads, cots = _run(_op_of(cls), args)
    out, grads, _ = _run(cls.apply, args, cots)
    assert [o.requires_grad for o in out] == [o.requires_grad for o in op_out]  # the same non-differentiable outputs
    assert {type(o.grad_fn).__name__ for o in out if o.requires_grad} == {f"{cls.__name__}Backward"}  # the class's node
    assert any(g is not None and g.abs().sum() > 0 for g in op_grads)
    _assert_same(out, op_out, f"{case} output")
    _assert_same(grads, op_grads, f"{case} gradient")


def test_excite_scale_against_float64(interpreter_friendly):
    x, s, residual = leaf(B, C, H, W), leaf(B, C), leaf(B, C, H, W)
    xr, sr, rr = (reference_copy(t) for t in (x, s, residual))
    y = F.ExciteScale.apply(x, s, residual, "sigmoid", "identity")
    yr = xr * torch.sigmoid(sr)[:, :, None, None] + rr
    assert_close(y, yr, what="forward")
    cot = torch.randn(y.shape, dtype=torch.float64, device=DEVICE).float()
    y.backward(cot)
    yr.backward(cot.double())
    assert_close(x.grad, xr.grad, what="grad_x")
    assert_close(s.grad, sr.grad, what="grad_s", scale=logit_grad_scale(cot, x, "sigmoid", (2, 3)))
    assert_close(residual.grad, rr.grad, what="grad_residual")


def test_radix_combine_against_float64(interpreter_friendly):
    x5, a = leaf(B, R, C, H, W), leaf(B, R, C)
    x5r, ar = reference_copy(x5), reference_copy(a)
    out = F.RadixCombine.apply(x5, a)
    ref = (x5r * ar[..., None, None]).sum(1)
    assert_close(out, ref, what="forward")
    cot = torch.randn(out.shape, dtype=torch.float64, device=DEVICE).float()
    out.backward(cot)
    ref.backward(cot.double())
    assert_close(x5.grad, x5r.grad, what="grad_x5")
    assert_close(a.grad, ar.grad, what="grad_a")


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("case", ["Squeeze-mean", "ExciteScale", "ExcitationBlock", "CbamBlock", "ContextPool"])
def test_apply_under_compile_fullgraph(case, fresh_dynamo, interpreter_friendly):
    cls, draw = CASES[case]
    args = draw()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(lambda *a: cls.apply(*a), fullgraph=True, backend=counter)
    op_out, op_grads, cots = _run(_op_of(cls), args)
    out, grads, _ = _run(compiled, args, cots)
    assert counter.frame_count == 1
    _assert_same(out, op_out, f"compiled {case} output")
    _assert_same(grads, op_grads, f"compiled {case} gradient")


def test_apply_takes_positional_arguments_only():
    """Keywords would bind in eager mode but not under torch.compile: refused in both, clearly."""
    x, s = leaf(B, C, H, W), leaf(B, C)
    with pytest.raises(TypeError, match="positional only"):
        F.ExciteScale.apply(x, s, None, gate="sigmoid", act="identity")


def _tritattn_ops() -> dict[str, torch.library.CustomOpDef]:
    """Every custom op the tritattn package defines, by qualified name."""
    found = {}
    for info in pkgutil.iter_modules(tritattn.__path__):
        if info.name == "__main__" or info.ispkg:
            continue
        for value in vars(importlib.import_module(f"tritattn.{info.name}")).values():
            if isinstance(value, torch.library.CustomOpDef):
                found[f"{value._namespace}::{value._name}"] = value
    return found


def test_every_op_with_an_autograd_formula_has_its_class():
    ops = _tritattn_ops()
    with_formula = {q for q, op in ops.items() if op._backward_fn is not None}
    assert {"tritattn::excite_scale", "tritattn::cbam_block", "tritattn::radix_attention"} <= with_formula  # the scan sees them
    assert with_formula - INFERENCE_ONLY == set(FUNCTIONS)
    assert INFERENCE_ONLY <= with_formula
    for qualname, cls in FUNCTIONS.items():
        op = ops[qualname]
        assert cls.setup_context.__wrapped__ is op._setup_context_fn, qualname  # one formula
        assert cls.backward is op._backward_fn, qualname
        assert issubclass(cls, torch.autograd.Function)
        assert getattr(F, cls.__name__) is cls and cls.__name__ in F.__all__, f"{cls.__name__} not exported"
        assert cls.__name__ in F.__doc__, f"{cls.__name__} not listed in tritattn.functional's docstring"


@pytest.mark.parametrize("qualname", sorted(INFERENCE_ONLY))
def test_the_inference_only_ops_refuse_autograd(qualname):
    op = _tritattn_ops()[qualname]
    refusal = op._setup_context_fn or op._backward_fn  # the first of them autograd would call
    with pytest.raises(RuntimeError, match="inference-only"):
        refusal(None, (), None) if refusal is op._setup_context_fn else refusal(None, None)
