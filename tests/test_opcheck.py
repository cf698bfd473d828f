"""``torch.library.opcheck`` on every custom op in the ``tritattn`` namespace: the checks PyTorch
itself makes of an op's registration, opcheck's default set:

- test_schema: the op mutates nothing and returns fresh tensors, as its schema says;
- test_autograd_registration: an input that requires grad meets an autograd kernel;
- test_faketensor: the fake (meta) implementation gives the real outputs' shapes, strides, dtypes;
- test_aot_dispatch_dynamic: AOTAutograd traces the op with symbolic shapes, and the compiled
  graph gives eager's outputs (and, for inputs that require grad, eager's gradients).

Every op runs on NCHW and channels_last feature maps of batch 0 and 1 (C=5, H×W=3×5, float32),
and of batch 2 in float16 and bfloat16 (so a fake output of the wrong dtype shows), with the
arguments the autograd formulas of :mod:`tritattn.autograd` give it: a backward op gets what
its forward op saved (max and tie count from squeeze, y from a ReLU excite_scale, ...). The ops
are enumerated from the dispatcher, so an op registered without cases here fails
:func:`test_every_registered_op_is_checked`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch.library import opcheck

from conftest import make_input
from tritattn import cbam_block, context_block, excitation_block, ops, radix_block  # noqa: F401  (registers torch.ops.tritattn.*)

tritattn = torch.ops.tritattn

C, H, W = 5, 3, 5


@dataclass(frozen=True)
class Sample:
    """The tensors' batch size, layout and dtype."""

    batch: int
    channels_last: bool
    dtype: torch.dtype

    def feature_map(self, channels: int = C, requires_grad: bool = False) -> torch.Tensor:
        return make_input((self.batch, channels, H, W), self.dtype, self.channels_last, requires_grad)

    def rows(self, requires_grad: bool = False) -> torch.Tensor:
        """A [B, C] per-channel vector (excitation logits, or the gradient of a squeeze output)."""
        return make_input((self.batch, C), self.dtype, requires_grad=requires_grad, scale=2.0)


#: batch 0 and 1 (which dynamic shapes specialise) in float32, batch 2 in the 16-bit types; each
#: in both layouts except batch 2, which takes one per 16-bit type
SAMPLES = [
    pytest.param(
        Sample(batch, channels_last, dtype),
        id=f"b{batch}-{'channels_last' if channels_last else 'nchw'}-{str(dtype).removeprefix('torch.')}",
    )
    for batch, channels_last, dtype in (
        (0, False, torch.float32), (0, True, torch.float32), (1, False, torch.float32), (1, True, torch.float32),
        (2, False, torch.float16), (2, True, torch.bfloat16),
    )
]


@dataclass(frozen=True)
class Case:
    """One call of ``op``: ``args(sample, requires_grad)`` builds its arguments; only a forward op
    (``differentiable``) gets inputs that require grad."""

    op: torch._ops.OpOverload
    variant: str
    args: Callable[[Sample, bool], tuple]
    differentiable: bool

    @property
    def id(self) -> str:
        return f"{self.op._opname}-{self.variant}" if self.variant else self.op._opname


def squeeze_case(want_mean: bool, want_max: bool) -> Case:
    def args(p: Sample, requires_grad: bool) -> tuple:
        return p.feature_map(requires_grad=requires_grad), want_mean, want_max

    return Case(tritattn.squeeze.default, _squeeze_variant(want_mean, want_max), args, True)


def squeeze_backward_case(want_mean: bool, want_max: bool) -> Case:
    """As squeeze's autograd formula (tritattn/autograd.py) calls it: max and tie count from squeeze when the max was taken."""

    def args(p: Sample, requires_grad: bool) -> tuple:
        x = p.feature_map()
        _, maximum, count = tritattn.squeeze(x, want_mean, want_max)
        grad_mean, grad_max = (p.rows() if wanted else None for wanted in (want_mean, want_max))
        return x, grad_mean, grad_max, maximum if want_max else None, count if want_max else None

    return Case(tritattn.squeeze_backward.default, _squeeze_variant(want_mean, want_max), args, False)


def _squeeze_variant(want_mean: bool, want_max: bool) -> str:
    return "_".join(name for name, wanted in (("mean", want_mean), ("max", want_max)) if wanted)


def spatial_pool_case() -> Case:
    def args(p: Sample, requires_grad: bool) -> tuple:
        return (p.feature_map(requires_grad=requires_grad),)

    return Case(tritattn.spatial_pool.default, "", args, True)


def spatial_pool_backward_case() -> Case:
    def args(p: Sample, requires_grad: bool) -> tuple:
        x = p.feature_map()
        pooled, count = tritattn.spatial_pool(x)
        return x, p.feature_map(channels=2), pooled, count

    return Case(tritattn.spatial_pool_backward.default, "", args, False)


#: (gate, act, residual): every pair of two settings' values occurs once
EXCITE_SETTINGS = [
    ("sigmoid", "identity", False), ("hard_sigmoid", "relu", False),
    ("sigmoid", "relu", True), ("hard_sigmoid", "identity", True),
]


def _excite_variant(gate: str, act: str, residual: bool) -> str:
    return f"{gate}-{act}" + ("-residual" if residual else "")


def excite_scale_case(gate: str, act: str, residual: bool) -> Case:
    def args(p: Sample, requires_grad: bool) -> tuple:
        res = p.feature_map(requires_grad=requires_grad) if residual else None
        return p.feature_map(requires_grad=requires_grad), p.rows(requires_grad), res, gate, act

    return Case(tritattn.excite_scale.default, _excite_variant(gate, act, residual), args, True)


def excite_scale_backward_case(gate: str, act: str, residual: bool) -> Case:
    """As excite_scale's autograd formula calls it: y only for act="relu", grad_residual wanted only
    where it is not grad_y itself (a residual under a ReLU)."""

    def args(p: Sample, requires_grad: bool) -> tuple:
        x, s = p.feature_map(), p.rows()
        y = tritattn.excite_scale(x, s, p.feature_map() if residual else None, gate, act)
        return p.feature_map(), x, s, y if act == "relu" else None, gate, act, residual and act != "identity"

    return Case(tritattn.excite_scale_backward.default, _excite_variant(gate, act, residual), args, False)


def spatial_scale_case(gate: str) -> Case:
    def args(p: Sample, requires_grad: bool) -> tuple:
        return p.feature_map(requires_grad=requires_grad), p.feature_map(channels=1, requires_grad=requires_grad), gate

    return Case(tritattn.spatial_scale.default, gate, args, True)


def spatial_scale_backward_case(gate: str) -> Case:
    def args(p: Sample, requires_grad: bool) -> tuple:
        return p.feature_map(), p.feature_map(), p.feature_map(channels=1), gate

    return Case(tritattn.spatial_scale_backward.default, gate, args, False)


#: (pool, mlp, act, gate, act_out, residual) of the block pipeline: each pooling and excitation kind once
BLOCK_SETTINGS = [
    ("mean", "fc_act_fc", "relu", "sigmoid", "identity", False),
    ("mean_max_both", "fc_act_fc", "silu", "hard_sigmoid", "relu", True),
    ("mean_max_avg", "fc", "identity", "sigmoid", "relu", True),
    ("mean", "taps_circular", "identity", "hard_sigmoid", "identity", True),
]


def _block_weights(mlp: str, requires_grad: bool) -> tuple:
    """(w1, b1, w2, b2) in float32 whatever x's dtype (as under AMP), hidden width 2, 3 taps."""
    def w(*shape):
        return torch.randn(shape).requires_grad_(requires_grad)
    return {"fc_act_fc": lambda: (w(2, C), w(2), w(C, 2), w(C)), "fc": lambda: (None, None, w(C, C), w(C)),
            "taps_circular": lambda: (w(3), None, None, w(1))}[mlp]()


def _block_variant(pool, mlp, act, gate, act_out, residual) -> str:
    return f"{pool}-{mlp}-{act}-{gate}-{act_out}" + ("-residual" if residual else "")


def excitation_block_case(pool, mlp, act, gate, act_out, residual) -> Case:
    def args(p: Sample, requires_grad: bool) -> tuple:
        res = p.feature_map(requires_grad=requires_grad) if residual else None
        return (p.feature_map(requires_grad=requires_grad), res, *_block_weights(mlp, requires_grad),
                pool, mlp, act, gate, act_out)

    return Case(tritattn.excitation_block.default, _block_variant(pool, mlp, act, gate, act_out, residual), args, True)


def excitation_block_backward_case(pool, mlp, act, gate, act_out, residual) -> Case:
    """As the block's autograd formula calls it: what the forward saved, y only for the ReLU epilogue."""

    def args(p: Sample, requires_grad: bool) -> tuple:
        x, weights = p.feature_map(), _block_weights(mlp, False)
        y, s, _, _ = tritattn.excitation_block(x, p.feature_map() if residual else None, *weights, pool, mlp, act, gate,
                                               act_out)
        return (p.feature_map(), x, y if act_out == "relu" else None, s, *weights,
                pool, mlp, act, gate, act_out, residual and act_out != "identity")

    return Case(tritattn.excitation_block_backward.default, _block_variant(pool, mlp, act, gate, act_out, residual),
                args, False)


def excitation_block_kept_hidden_case(act: str, backward: bool) -> Case:
    """The split path named by the caller: the forward keeps the MLP's hidden vectors (its fourth
    output; SiLU keeps two), the backward takes them."""
    settings = ("mean_max_avg", "fc_act_fc", act, "sigmoid", "identity")

    def forward_args(p: Sample, requires_grad: bool) -> tuple:
        return (p.feature_map(requires_grad=requires_grad), None, *_block_weights("fc_act_fc", requires_grad), *settings,
                None, None, None, None, 0.0, "none", None, None, None, None, 0.0, False, "split")

    def backward_args(p: Sample, requires_grad: bool) -> tuple:
        x, _, *weights = forward_args(p, False)[:6]
        _, s, _, hidden = tritattn.excitation_block(*forward_args(p, False))
        assert hidden.shape[0] == (2 if act == "silu" else 1)
        return (p.feature_map(), x, None, s, *weights, *settings, False, None, None, None, None, 0.0, "none",
                None, None, None, None, 0.0, False, "split", hidden)

    if backward:
        return Case(tritattn.excitation_block_backward.default, f"kept-hidden-{act}", backward_args, False)
    return Case(tritattn.excitation_block.default, f"kept-hidden-{act}", forward_args, True)


def excitation_block_norm_case(backward: bool) -> Case:
    """timm SEModule with a BatchNorm in eval between fc1 and act (float32 parameters)."""

    def forward_args(p: Sample, requires_grad: bool) -> tuple:
        norm = (torch.randn(2).requires_grad_(requires_grad), torch.randn(2).requires_grad_(requires_grad),
                torch.randn(2), torch.rand(2) + 0.5, 1e-5)
        return (p.feature_map(requires_grad=requires_grad), None, *_block_weights("fc_act_fc", requires_grad),
                "mean", "fc_act_fc", "relu", "sigmoid", "identity", *norm)

    def backward_args(p: Sample, requires_grad: bool) -> tuple:
        x, _, w1, b1, w2, b2, *settings, act_out, bn_w, bn_b, bn_m, bn_v, eps = forward_args(p, False)
        _, s, _, _ = tritattn.excitation_block(*forward_args(p, False)[:1], None, w1, b1, w2, b2, *settings, act_out,
                                               bn_w, bn_b, bn_m, bn_v, eps)
        return (p.feature_map(), x, None, s, w1, b1, w2, b2, *settings, act_out, False, bn_w, bn_b, bn_m, bn_v, eps)

    if backward:
        return Case(tritattn.excitation_block_backward.default, "hidden-norm", backward_args, False)
    return Case(tritattn.excitation_block.default, "hidden-norm", forward_args, True)


def excitation_block_prologue_case(backward: bool, batch_stats: bool) -> Case:
    """An SE block taking in its producer's BatchNorm (float32 parameters) and SiLU."""

    def forward_args(p: Sample, requires_grad: bool) -> tuple:
        pre = (torch.randn(C).requires_grad_(requires_grad), torch.randn(C).requires_grad_(requires_grad),
               torch.randn(C), torch.rand(C) + 0.5, 1e-5, batch_stats)
        return (p.feature_map(requires_grad=requires_grad), None, *_block_weights("fc_act_fc", requires_grad),
                "mean", "fc_act_fc", "relu", "sigmoid", "identity", None, None, None, None, 0.0, "silu", *pre)

    def backward_args(p: Sample, requires_grad: bool) -> tuple:
        args = forward_args(p, False)
        x, _, w1, b1, w2, b2, *settings = args[:11]
        pre_w, pre_b, pre_m, pre_v, pre_eps, _ = args[17:]
        _, s, stats, _ = tritattn.excitation_block(*args)
        if batch_stats:
            pre_m, pre_v = stats[0], stats[1]
        return (p.feature_map(), x, None, s, w1, b1, w2, b2, *settings, False, None, None, None, None, 0.0, "silu",
                pre_w, pre_b, pre_m, pre_v, pre_eps, batch_stats)

    variant = "prologue-" + ("batch-stats" if batch_stats else "running-stats")
    if backward:
        return Case(tritattn.excitation_block_backward.default, variant, backward_args, False)
    return Case(tritattn.excitation_block.default, variant, forward_args, True)


def _cbam_args(p: Sample, light: bool, training: bool, requires_grad: bool) -> tuple:
    """CBAM (2-channel descriptor) or light CBAM (1 channel): x, the MLP, the conv and the
    BatchNorm (float32 parameters), its mode."""
    w1, b1, w2, b2 = _block_weights("fc_act_fc", requires_grad)
    d = 1 if light else 2
    conv_w, bn_w, bn_b = (torch.randn(shape).requires_grad_(requires_grad) for shape in ((1, d, 3, 3), (1,), (1,)))
    return (p.feature_map(requires_grad=requires_grad), w1, b1, w2, b2, "mean_max_avg" if light else "mean_max_both",
            "relu", "sigmoid", conv_w, bn_w, bn_b, torch.randn(1), torch.rand(1) + 0.5, 1e-5, training, "hard_sigmoid")


def _cbam_variant(light: bool, training: bool) -> str:
    return ("light-" if light else "") + ("training" if training else "eval")


def cbam_block_case(light: bool, training: bool) -> Case:
    return Case(tritattn.cbam_block.default, _cbam_variant(light, training),
                lambda p, requires_grad: _cbam_args(p, light, training, requires_grad), True)


def cbam_block_backward_case(light: bool, training: bool) -> Case:
    """As the block's autograd formula calls it: what the forward saved."""

    def args(p: Sample, requires_grad: bool) -> tuple:
        a = _cbam_args(p, light, training, False)
        x, w1, b1, w2, b2, pool, act, gate_c, conv_w, bn_w, bn_b, _rm, _rv, _eps, _training, gate_s = a
        _, s, u, affine = tritattn.cbam_block(*a)
        return (p.feature_map(), x, s, u, affine, w1, b1, w2, b2, pool, act, gate_c, conv_w, bn_w, bn_b, training, gate_s)

    return Case(tritattn.cbam_block_backward.default, _cbam_variant(light, training), args, False)


RADIX = 2


def _branches(p: Sample, requires_grad: bool) -> torch.Tensor:
    """Split attention's input: a [B, R·C, H, W] map viewed as [B, R, C, H, W] (a leaf when it requires grad)."""
    x5 = p.feature_map(channels=RADIX * C).view(p.batch, RADIX, C, H, W)
    return x5.clone().requires_grad_() if requires_grad else x5


def radix_pool_case() -> Case:
    return Case(tritattn.radix_pool.default, "", lambda p, requires_grad: (_branches(p, requires_grad),), True)


def radix_combine_case() -> Case:
    def args(p: Sample, requires_grad: bool) -> tuple:
        return _branches(p, requires_grad), make_input((p.batch, RADIX, C), p.dtype, requires_grad=requires_grad)

    return Case(tritattn.radix_combine.default, "", args, True)


def radix_combine_backward_case() -> Case:
    def args(p: Sample, requires_grad: bool) -> tuple:
        return p.feature_map(), _branches(p, False), make_input((p.batch, RADIX, C), p.dtype)

    return Case(tritattn.radix_combine_backward.default, "", args, False)


def context_pool_case(bias: bool) -> Case:
    def args(p: Sample, requires_grad: bool) -> tuple:
        return (p.feature_map(requires_grad=requires_grad), make_input((C,), p.dtype, requires_grad=requires_grad),
                make_input((1,), p.dtype, requires_grad=requires_grad) if bias else None)

    return Case(tritattn.context_pool.default, "bias" if bias else "", args, True)


def context_pool_backward_case(bias: bool) -> Case:
    """As context_pool's autograd formula calls it: with the stats the forward saved."""

    def args(p: Sample, requires_grad: bool) -> tuple:
        x, w = p.feature_map(), make_input((C,), p.dtype)
        b = make_input((1,), p.dtype) if bias else None
        _, stats = tritattn.context_pool(x, w, b)
        return p.rows(), x, w, b, stats

    return Case(tritattn.context_pool_backward.default, "bias" if bias else "", args, False)


def _weights(*shape: int) -> torch.Tensor:
    return make_input(shape, torch.float32)


def radix_attention_case(with_bn: bool, prologue: bool = False) -> Case:
    """Inference only (no backward): never with inputs that require grad. With the prologue, the
    branches are the conv output, read as relu(bn0(c))."""
    RD = 3

    def args(p: Sample, requires_grad: bool) -> tuple:
        bn = (_weights(RD), _weights(RD), _weights(RD), _weights(RD).abs() + 0.5) if with_bn else (None,) * 4
        RC = RADIX * C
        pre = (_weights(RC), _weights(RC), _weights(RC), _weights(RC).abs() + 0.5, 1e-5, "relu") if prologue else ()
        return (_branches(p, False), _weights(RD, C), _weights(RD), *bn, 1e-5, _weights(RC, RD), _weights(RC), "relu",
                *pre)

    variant = "-".join(n for n, on in (("bn", with_bn), ("prologue", prologue)) if on)
    return Case(tritattn.radix_attention.default, variant, args, False)


def context_mlp_case(scale: bool, add: bool) -> Case:
    """Inference only (no backward): never with inputs that require grad."""
    RD = 3

    def args(p: Sample, requires_grad: bool) -> tuple:
        mlp = (_weights(RD, C), _weights(RD), _weights(RD), _weights(RD), _weights(C, RD), _weights(C), 1e-5)
        none = (None,) * 6 + (1e-5,)
        return (p.feature_map(), _weights(C), *(mlp if scale else none), *(mlp if add else none), "silu")

    return Case(tritattn.context_mlp.default, "-".join(n for n, on in (("scale", scale), ("add", add)) if on), args, False)


CBAM_SETTINGS = [(False, True), (True, False)]
SQUEEZE_WANTS = [(True, False), (False, True), (True, True)]
CASES: list[Case] = [
    *(squeeze_case(*wants) for wants in SQUEEZE_WANTS),
    *(squeeze_backward_case(*wants) for wants in SQUEEZE_WANTS),
    spatial_pool_case(),
    spatial_pool_backward_case(),
    *(excite_scale_case(*settings) for settings in EXCITE_SETTINGS),
    *(excite_scale_backward_case(*settings) for settings in EXCITE_SETTINGS),
    *(spatial_scale_case(gate) for gate in ("sigmoid", "hard_sigmoid")),
    *(spatial_scale_backward_case(gate) for gate in ("sigmoid", "hard_sigmoid")),
    *(excitation_block_case(*settings) for settings in BLOCK_SETTINGS),
    *(excitation_block_backward_case(*settings) for settings in BLOCK_SETTINGS),
    *(excitation_block_kept_hidden_case(act, backward) for act in ("relu", "silu") for backward in (False, True)),
    excitation_block_norm_case(False),
    excitation_block_norm_case(True),
    *(excitation_block_prologue_case(backward, batch_stats) for backward in (False, True) for batch_stats in (False, True)),
    *(cbam_block_case(*settings) for settings in CBAM_SETTINGS),
    *(cbam_block_backward_case(*settings) for settings in CBAM_SETTINGS),
    radix_pool_case(),
    radix_combine_case(),
    radix_combine_backward_case(),
    *(context_pool_case(bias) for bias in (False, True)),
    *(context_pool_backward_case(bias) for bias in (False, True)),
    *(radix_attention_case(with_bn) for with_bn in (False, True)),
    radix_attention_case(True, prologue=True),
    *(context_mlp_case(scale, add) for scale, add in ((True, False), (False, True), (True, True))),
]


def _params(cases: list[Case]) -> list:
    return [pytest.param(case, id=case.id) for case in cases]


def test_every_registered_op_is_checked():
    """The ops with cases here are exactly the ops (every overload) registered under ``tritattn::``."""
    registered = {name for name in torch._C._dispatch_get_all_op_names() if name.startswith("tritattn::")}
    checked = {case.op.name() for case in CASES}
    assert checked == registered, (
        f"registered without cases: {sorted(registered - checked)}; cases of no op: {sorted(checked - registered)}"
    )


@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("case", _params(CASES))
def test_opcheck(case, sample):
    """opcheck's checks on inputs that do not require grad: schema, fake implementation (shapes,
    strides and dtypes of every output, batch 0 included), and the op traced by AOTAutograd
    with dynamic shapes against eager. (test_autograd_registration needs inputs that require
    grad: the next test.)"""
    opcheck(case.op, case.args(sample, False))


@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("case", _params([case for case in CASES if case.differentiable]))
def test_opcheck_with_inputs_that_require_grad(case, sample):
    """opcheck's checks on a forward op whose floating inputs require grad: its autograd kernel
    is registered at an autograd key, and AOTAutograd's gradients (of the sum of the outputs)
    are eager's. (The backward ops are not differentiable: the formulas of tritattn/autograd.py
    have no double backward.)"""
    opcheck(case.op, case.args(sample, True))
