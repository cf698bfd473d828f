"""GCNet's context pooling (``tritattn::context_pool`` and its backward) against a float64
reference written from the math, and the fast ``GlobalContext`` against timm's own.

The op: odd C, H×W ∈ {1, 3×5, 7×7}, batch 1 and 2, NCHW and channels_last, float64 / float32 /
float16 / bfloat16, default and tiny tiles (several pixel blocks per sample, ragged edges, so the
merge of the programs' partial softmaxes is exercised), logits far beyond exp's float32 range
(the stability test), an empty batch, bitwise repeatability, bad inputs. Outputs are NaN-poisoned
before the kernels write them (conftest).

The module: the gcresnet configuration (fuse_add, ReLU), gc_efficientnetv2's (fuse_scale, SiLU),
the mean context (use_attn=False) and both MLPs, in train and eval, in float64 against timm 1.0.31's
GlobalContext with the same weights (state_dict strict both ways): output, input gradient and
every parameter's gradient; a re-classed timm instance; a gate without a kernel.

Inference (tritattn::context_mlp, the MLPs inside the context kernels): in eval under no_grad
the twin launches the two context kernels (+ the scale kernel) and no torch MLP op, and matches
timm (float64, random non-zero mlp_add.fc2 and LayerNorm affine; float32 / bfloat16 against
float64); training, grad mode, a GELU and a hook take the per-op path; the counters stay at 0.
"""
import copy
import warnings

import pytest
import torch
from torch import nn

from fixtures.aten_ops import AtenOps
from fixtures.simulated_gpu import simulated_gpu, split_measured_and_kept  # noqa: F401
from fixtures.workspaces import counters_reset, launched_counters  # noqa: F401

from tritattn import reference, tuning
from tritattn.context_block import context_pool
from tritattn.global_context import GlobalContext
from conftest import (
    DEVICE, DTYPES, assert_close, assert_same_layout, expected_backend, make_input, use_small_tiles,
)

SHAPES = [(2, 6, 7, 7), (1, 12, 3, 5), (2, 5, 1, 1)]


def reference_context(x, w, bias):
    """ctx [B, C] from the math, in x's dtype (float64 here): softmax over H·W of w · x + bias."""
    B, C, H, W = x.shape
    xf = x.reshape(B, C, H * W)
    alpha = torch.softmax(torch.einsum("c,bcp->bp", w, xf) + bias, dim=1)
    return torch.einsum("bp,bcp->bc", alpha, xf)


def error_scales(x, w, bias, cot):
    """The size of what each output sums, float64 (the scale its rounding error is relative to):

    ctx: max|x| · (1 + max_p Σ_c |w · x|) — a logit's absolute error is α's relative one, so a
    context of large logits is only as accurate as the logits' terms allow (eager's too);
    the gradients: dlogit = α · (dα - k) cancels, so with A = α · (Σ_c |dctx · x| + Σ_c |dctx · ctx|),
    grad_x ~ α·|dctx| + A·|w|, grad_w[c] ~ Σ_b Σ_p A · |x[c]|, grad_bias ~ Σ A.
    """
    x, w, cot = x.detach().double(), w.detach().double(), cot.double()
    B, C, H, W = x.shape
    xf = x.reshape(B, C, H * W)
    logit = torch.einsum("c,bcp->bp", w, xf) + bias.detach().double()
    alpha = torch.softmax(logit, dim=1)
    ctx = torch.einsum("bp,bcp->bc", alpha, xf)
    terms = torch.einsum("c,bcp->bp", w.abs(), xf.abs())
    a = alpha * (torch.einsum("bc,bcp->bp", cot.abs(), xf.abs()) + (cot * ctx).abs().sum(1, keepdim=True))
    return {
        "ctx": xf.abs().max().item() * (1 + terms.max().item()),
        "grad_x": (alpha[:, None, :] * cot.abs()[:, :, None] + a[:, None, :] * w.abs()[None, :, None]).max().item(),
        "grad_w": torch.einsum("bp,bcp->c", a, xf.abs()).max().item(),
        "grad_bias": a.sum().item(),
    }


def check_op(shape, dtype, channels_last, scale=1.0, ctx_scale=None):
    x = make_input(shape, dtype, channels_last, requires_grad=True, scale=scale)
    C = shape[1]
    w = (torch.randn(C, dtype=torch.float64, device=DEVICE) * (2 / C) ** 0.5).to(dtype).requires_grad_()
    bias = torch.randn(1, dtype=torch.float64, device=DEVICE).to(dtype).requires_grad_()
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, bias))
    out = context_pool(x, w, bias)
    ref = reference_context(xr, wr, br)
    assert out.dtype == dtype and out.shape == (shape[0], C)
    cot = torch.randn(ref.shape, dtype=torch.float64, device=DEVICE).to(dtype)
    scales = error_scales(x, w, bias, cot)
    assert_close(out, ref, what="ctx", scale=ctx_scale(scales) if ctx_scale else None)
    out.backward(cot)
    ref.backward(cot.double())
    assert_same_layout(x.grad, x)
    assert x.grad.dtype == dtype and w.grad.dtype == dtype and bias.grad.dtype == dtype
    for name, got, want in (("grad_x", x.grad, xr.grad), ("grad_w", w.grad, wr.grad), ("grad_bias", bias.grad, br.grad)):
        assert_close(got, want, what=name, scale=scales[name])
    return x, w, bias, out


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", (torch.float64,) + DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_context_pool_matches_float64_reference(shape, dtype, channels_last):
    check_op(shape, dtype, channels_last)


@pytest.mark.parametrize("shape", [(2, 6, 7, 7), (1, 12, 3, 5)], ids=["2x6x7x7", "1x12x3x5"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=str)
def test_context_pool_over_several_pixel_blocks(shape, dtype, channels_last, monkeypatch):
    """Tiny tiles: several programs per sample whose partial softmaxes (each with its own max)
    are merged, and C in several chunks."""
    use_small_tiles(monkeypatch)
    from tritattn import launch

    assert launch.context_pool_programs(torch.empty(shape)) > shape[0]
    check_op(shape, dtype, channels_last)


@pytest.mark.parametrize("dtype, scale", [(torch.float32, 50.0), (torch.float64, 1000.0)], ids=["float32-x50", "float64-x1000"])
def test_large_logits_stay_finite_and_correct(dtype, scale, monkeypatch):
    """Logits of several hundred (float32) or thousand (float64): exp overflows without the max
    subtracted, in every program (tiny tiles: each block of pixels has its own max, merged)."""
    use_small_tiles(monkeypatch)
    x, w, bias, out = check_op((2, 12, 7, 7), dtype, True, scale=scale, ctx_scale=lambda s: s["ctx"])
    logits = torch.einsum("c,bchw->bhw", w.detach().double(), x.detach().double())
    assert logits.amax().item() > (100 if dtype == torch.float32 else 800)
    assert out.isfinite().all() and x.grad.isfinite().all() and w.grad.isfinite().all()


def test_empty_batch_and_single_pixel():
    x = torch.randn(0, 4, 3, 3, device=DEVICE, requires_grad=True)
    w = torch.randn(4, device=DEVICE, requires_grad=True)
    bias = torch.zeros(1, device=DEVICE, requires_grad=True)
    out = context_pool(x, w, bias)
    assert out.shape == (0, 4)
    out.sum().backward()
    assert x.grad.shape == x.shape and not w.grad.any() and not bias.grad.any()
    # one pixel: α = 1, ctx = x
    x = torch.randn(2, 4, 1, 1, device=DEVICE)
    assert torch.equal(context_pool(x, w.detach(), None), x.reshape(2, 4))


def test_weight_as_the_conv_weight_and_no_bias():
    x = make_input((2, 5, 3, 5), torch.float64)
    w = torch.randn(1, 5, 1, 1, dtype=torch.float64, device=DEVICE)
    assert_close(context_pool(x, w), reference_context(x, w.flatten(), 0.0), what="4-D weight, no bias")


def test_context_pool_is_bitwise_repeatable(monkeypatch):
    use_small_tiles(monkeypatch)
    x = make_input((2, 6, 5, 5), torch.float32, channels_last=True)
    w = torch.randn(6, device=DEVICE)
    bias = torch.randn(1, device=DEVICE)
    cot = torch.randn(2, 6, device=DEVICE)
    runs = []
    for _ in range(2):
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, bias))
        out = context_pool(xs, ws, bs)
        out.backward(cot)
        runs.append((out, xs.grad, ws.grad, bs.grad))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_bad_inputs_raise_clear_errors():
    x = torch.randn(2, 4, 3, 3, device=DEVICE)
    w = torch.randn(4, device=DEVICE)
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\) or \(1, 4, 1, 1\)"):
        context_pool(x, torch.randn(5, device=DEVICE))
    with pytest.raises(ValueError, match=r"weight must have shape"):
        context_pool(x, torch.randn(2, 2, device=DEVICE))
    with pytest.raises(ValueError, match=r"bias must have shape \(1,\)"):
        context_pool(x, w, torch.randn(2, device=DEVICE))
    with pytest.raises(ValueError, match="must be 4-D"):
        context_pool(x[0], w)
    with pytest.raises(TypeError, match="floating dtype"):
        context_pool(x.int(), w)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        context_pool(x, [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="weight is on meta"):
        context_pool(x, w.to("meta"))
    gc = GlobalContext(4, fuse_add=True).to(DEVICE)
    with pytest.raises(ValueError, match="built for 4 channels but x has 6"):
        gc(torch.randn(2, 6, 3, 3, device=DEVICE))
    with pytest.raises(ValueError, match="must be 4-D"):
        gc(torch.randn(6, 3, 3, device=DEVICE))
    # the per-op path runs its ops unchecked: an MLP swapped for one of other widths is still caught
    gc = GlobalContext(4, fuse_scale=True).to(DEVICE)
    gc.mlp_scale.fc2 = nn.Conv2d(gc.mlp_scale.fc2.in_channels, 3, 1).to(DEVICE)
    with pytest.raises(ValueError, match=r"mlp_scale's output must have shape \(2, 4\) or \(2, 4, 1, 1\)"):
        gc(torch.randn(2, 4, 3, 3, device=DEVICE, requires_grad=True))


# --- the module against timm's --------------------------------------------------------------

CONFIGS = {
    "gcresnet": dict(fuse_add=True, fuse_scale=False),
    "gc_efficientnetv2": dict(fuse_scale=True, act_layer="silu"),
    "mean_context": dict(use_attn=False),
    "add_and_scale": dict(fuse_add=True, fuse_scale=True),
}


def timm_pair(config: str, C: int = 12):
    """(timm's GlobalContext, the fast twin), float64, the same random weights (every parameter,
    timm's zeroed fc2 and unit LayerNorms included, drawn anew), loaded strict both ways."""
    from fixtures.peers import timm

    kwargs = dict(rd_ratio=0.25, **CONFIGS[config])
    peer = timm.layers.global_context.GlobalContext(C, **kwargs).to(DEVICE, torch.float64)
    with torch.no_grad():
        for p in peer.parameters():
            p.normal_(std=0.5)
    fast = GlobalContext(C, **kwargs).to(DEVICE, torch.float64)
    fast.load_state_dict(peer.state_dict(), strict=True)
    peer.load_state_dict(fast.state_dict(), strict=True)
    assert fast.state_dict().keys() == peer.state_dict().keys()
    return peer, fast


def step(module: nn.Module, x: torch.Tensor, cot: torch.Tensor) -> dict[str, torch.Tensor]:
    """y, grad_x and every parameter's gradient after one forward and backward."""
    x = x.detach().clone().requires_grad_()
    y = module(x)
    y.backward(cot)
    return {"y": y, "grad_x": x.grad, **{f"grad {n}": p.grad for n, p in module.named_parameters()}}


def assert_steps_close(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys()
    for key in want:
        # Σ_p dlogit is 0 up to rounding: measured against the conv weight's gradient, its group
        scale = want["grad conv_attn.weight"].abs().max().item() if key == "grad conv_attn.bias" else None
        assert_close(got[key], want[key], what=f"{what}: {key}", scale=scale)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_global_context_matches_timm(config, mode, channels_last):
    peer, fast = timm_pair(config)
    peer.train(mode == "train"), fast.train(mode == "train")
    shape = (2, 12, 7, 7) if channels_last else (1, 12, 3, 5)
    x = make_input(shape, torch.float64, channels_last)
    cot = torch.randn(shape, dtype=torch.float64, device=DEVICE)
    got, want = step(fast, x, cot), step(peer, x, cot)
    assert_same_layout(got["y"], x)
    # float64: a ReLU input in the MLP would have to lie within ~1e-15 of 0 to flip; the
    # LayerNorm over 3 hidden channels keeps its outputs O(1), so no redraw is needed
    assert_steps_close(got, want, f"{config} {mode}")
    with torch.no_grad():
        assert_close(fast(x), peer(x), what=f"{config} {mode} no_grad")


@pytest.mark.parametrize("config", ["gcresnet", "gc_efficientnetv2"])
def test_reclassed_timm_instance_gives_the_same_results(config):
    peer, _ = timm_pair(config)
    original = copy.deepcopy(peer)
    peer.__class__ = GlobalContext
    x = make_input((2, 12, 3, 5), torch.float64, channels_last=True)
    cot = torch.randn(x.shape, dtype=torch.float64, device=DEVICE)
    assert_steps_close(step(peer, x, cot), step(original, x, cot), f"re-classed {config}")


def test_reference_module_matches_timm():
    from fixtures.peers import timm

    for kwargs in CONFIGS.values():
        peer = timm.layers.global_context.GlobalContext(16, **kwargs).double()
        ref = reference.GlobalContext(16, **kwargs).double()
        ref.load_state_dict(peer.state_dict(), strict=True)
        with torch.no_grad():
            for p in peer.parameters():
                p.normal_(std=0.5)
        ref.load_state_dict(peer.state_dict(), strict=True)
        x = torch.randn(2, 16, 4, 5, dtype=torch.float64)
        assert torch.allclose(ref(x), peer(x), rtol=1e-12, atol=1e-12)
        assert [n for n, _ in ref.named_modules()] == [n for n, _ in peer.named_modules()]


def test_gate_without_a_kernel_runs_the_reference_forward_with_a_warning(monkeypatch):
    from tritattn import modules

    monkeypatch.setattr(modules, "_warned", set())
    peer = reference.GlobalContext(8, gate_layer="tanh").double()
    fast = GlobalContext(8, gate_layer="tanh").double()
    fast.load_state_dict(peer.state_dict())
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64, device=DEVICE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = fast.to(DEVICE)(x)
    assert torch.equal(y, peer.to(DEVICE)(x))
    assert any("gate Tanh has no kernel" in str(w.message) for w in caught)


# --- inference: the MLPs inside the context kernels (tritattn::context_mlp) -----------------

INFERENCE_CONFIGS = ["gcresnet", "gc_efficientnetv2", "add_and_scale"]
#: the kernels the in-kernel path launches: the context with both MLPs, then the scaling (if any)
IN_KERNEL = ["context_pool_partials", "context_pool_combine_mlp"]
#: the per-op path's context kernels (the MLPs then run in torch)
PER_OP = ["context_pool_partials", "context_pool_combine"]
ON_KERNELS = expected_backend() != "torch"


def run_recorded(module, x, monkeypatch):
    """(module(x), the names of the kernels it launched, the operators it called)."""
    launched = []
    launch = tuning.Tuner.launch

    def recording(self, *args, **kwargs):
        launched.append(self.name)
        return launch(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(tuning.Tuner, "launch", recording)
        with AtenOps() as ops_seen:
            y = module(x)
    return y, launched, ops_seen.names


def expected_launches(module) -> list[str]:
    return IN_KERNEL + (["gated_scale_fwd"] if module.mlp_scale is not None else [])


def assert_in_kernel(module, x, launched, ops_seen):
    """The in-kernel path was taken (Triton backends; the torch backend refuses it)."""
    with torch.no_grad():
        refusal = module.mlp_kernel_refusal(x)
    if not ON_KERNELS:
        assert "not on Triton kernels" in refusal
        return
    assert refusal is None
    assert launched == expected_launches(module), launched
    assert "tritattn.context_mlp" in ops_seen, ops_seen
    torch_mlp = {"aten.convolution", "aten.native_layer_norm", "aten.layer_norm", "aten.relu", "aten.silu", "aten.mm",
                 "aten.addmm"}
    assert not torch_mlp & set(ops_seen), ops_seen


def spread_layer_norm_inputs(peer, x) -> bool:
    """Whether every MLP's hidden values (float64) are spread out: std ≥ 5 % of max |h| per sample.
    Nearly equal values make the LayerNorm divide their float32 rounding error by a tiny σ."""
    w = peer.conv_attn.weight.detach().double().flatten()
    ctx = reference_context(x.detach().double(), w, 0.0)
    for mlp in (peer.mlp_scale, peer.mlp_add):
        if mlp is not None:
            h = ctx @ mlp.fc1.weight.detach().double().flatten(1).t() + mlp.fc1.bias.detach().double()
            if (h.std(1, unbiased=False) < 0.05 * h.abs().amax(1)).any():
                return False
    return True


def inference_input(peer, shape, dtype, channels_last):
    for _ in range(100):
        x = make_input(shape, dtype, channels_last)
        if spread_layer_norm_inputs(peer, x):
            return x
    raise AssertionError("could not draw an input whose LayerNorm inputs are spread out")


@pytest.mark.parametrize("config", INFERENCE_CONFIGS)
@pytest.mark.parametrize("tiles", ["default", "small"])
def test_inference_runs_the_mlps_in_the_kernel_and_matches_timm(config, tiles, channels_last, monkeypatch):
    """float64, eval, no_grad: timm's random (non-zero) fc2 and LayerNorm affine; small tiles:
    several pixel blocks and channel blocks per sample, so the ticket picks among programs."""
    if tiles == "small":
        use_small_tiles(monkeypatch)
    peer, fast = timm_pair(config)
    peer.eval(), fast.eval()
    x = make_input((2, 12, 5, 7), torch.float64, channels_last)
    with torch.no_grad():
        want = peer(x)
        got, launched, ops_seen = run_recorded(fast, x, monkeypatch)
    assert_in_kernel(fast, x, launched, ops_seen)
    assert_same_layout(got, x)
    assert_close(got, want, what=f"{config} in-kernel MLP")


@pytest.mark.parametrize("config", ["gcresnet", "add_and_scale"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_inference_in_low_precision_against_float64(config, dtype, channels_last, monkeypatch):
    peer, fast = timm_pair(config, C=16)
    fast.to(dtype).eval()
    peer.load_state_dict({k: v.double() for k, v in fast.state_dict().items()})  # the rounded weights
    peer.eval()
    x = inference_input(peer, (2, 16, 3, 5), dtype, channels_last)
    with torch.inference_mode():
        want = peer(x.double())
        got, launched, ops_seen = run_recorded(fast, x, monkeypatch)
    assert got.dtype == dtype
    assert_in_kernel(fast, x, launched, ops_seen)
    assert_same_layout(got, x)
    assert_close(got, want, what=f"{config} {dtype}")


@pytest.mark.parametrize("config", ["gcresnet", "gc_efficientnetv2"])
def test_inference_on_a_reclassed_timm_instance(config, monkeypatch):
    """timm's own ConvMlp, LayerNorm2d and gate classes are recognised (by qualified name)."""
    peer, _ = timm_pair(config)
    original = copy.deepcopy(peer).eval()
    peer.eval().__class__ = GlobalContext
    x = make_input((2, 12, 3, 5), torch.float64, channels_last=True)
    with torch.no_grad():
        got, launched, ops_seen = run_recorded(peer, x, monkeypatch)
        want = original(x)
    assert_in_kernel(peer, x, launched, ops_seen)
    assert_close(got, want, what=f"re-classed {config}")


def _gelu(peer, fast):
    for m in (peer, fast):
        m.mlp_add.act = nn.GELU()


def _hook(peer, fast):
    calls = []
    fast.mlp_add.fc1.register_forward_hook(lambda *args: calls.append(1))
    return calls


REFUSALS = {
    # (module set-up, train mode, grad mode, the reason's words)
    "training": (None, True, True, "gradient is needed"),
    "grad_enabled": (None, False, True, "gradient is needed"),
    "gelu": (_gelu, False, False, "GELU has no kernel"),
    "hook": (_hook, False, False, "has hooks"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_take_the_per_op_path_and_match(case, monkeypatch):
    setup, train, grad, words = REFUSALS[case]
    peer, fast = timm_pair("add_and_scale")
    calls = setup(peer, fast) if setup is not None else None
    peer.train(train), fast.train(train)
    x = make_input((2, 12, 3, 5), torch.float64)
    with torch.set_grad_enabled(grad):
        want = peer(x)
        got, launched, _ = run_recorded(fast, x, monkeypatch)
        refusal = fast.mlp_kernel_refusal(x)
    assert refusal is not None and (words in refusal or not ON_KERNELS), refusal
    if ON_KERNELS:
        assert launched == PER_OP + ["gated_scale_fwd"], launched
    if calls is not None:
        assert calls == [1]
    assert_close(got, want, what=f"refused ({case})")


@pytest.mark.skipif(not ON_KERNELS, reason="the torch backend never takes the in-kernel path")
def test_dropout_in_training_and_the_mean_context_refuse():
    """Training without grad is accepted while dropout does nothing (p = 0, as timm builds it)."""
    _, fast = timm_pair("gcresnet")
    x = make_input((1, 12, 3, 3), torch.float64)
    with torch.no_grad():
        fast.train()
        assert fast.mlp_kernel_refusal(x) is None
        fast.mlp_add.drop.p = 0.5
        assert "drop is active" in fast.mlp_kernel_refusal(x)
        fast.eval()
        assert fast.mlp_kernel_refusal(x) is None
        mean = GlobalContext(12, use_attn=False, fuse_add=True).double().eval()
        assert "no conv_attn" in mean.mlp_kernel_refusal(x)


@pytest.mark.parametrize("config", INFERENCE_CONFIGS)
def test_context_mlp_op_on_every_backend(config):
    """The op itself (also its eager formulas under TRITATTN_TEST_BACKEND=torch): each MLP's output
    against timm's MLP of the float64 context; an input that requires grad is refused at the call."""
    from tritattn.global_context import _mlp_args
    from tritattn.modules import mlp_act_kind

    peer, fast = timm_pair(config)
    peer.eval()
    x = make_input((2, 12, 3, 5), torch.float64, channels_last=True)
    mlp = fast.mlp_scale if fast.mlp_scale is not None else fast.mlp_add
    args = (fast.conv_attn.weight.flatten(), *_mlp_args(fast.mlp_scale), *_mlp_args(fast.mlp_add),
            mlp_act_kind(mlp.act))
    with torch.no_grad():
        s, t = torch.ops.tritattn.context_mlp(x, *args)
        w, bias = peer.conv_attn.weight.flatten(), peer.conv_attn.bias
        ctx = reference_context(x, w, bias).reshape(*x.shape[:2], 1, 1)
        for name, out in (("mlp_scale", s), ("mlp_add", t)):
            mlp = getattr(peer, name)
            if mlp is None:
                assert out.numel() == 0, name
            else:
                assert_close(out, mlp(ctx).flatten(1), what=f"op {config}: {name}")
    with pytest.raises(RuntimeError, match="inference-only"):
        torch.ops.tritattn.context_mlp(x, *args)  # the parameters require grad


def test_inference_leaves_the_counters_at_zero_and_is_bitwise_repeatable(monkeypatch, launched_counters):
    use_small_tiles(monkeypatch)
    _, fast = timm_pair("add_and_scale")
    fast.float().eval()
    x = make_input((3, 12, 5, 5), torch.float32, channels_last=True)
    with torch.inference_mode():
        first, second = fast(x), fast(x)
    assert torch.equal(first, second)
    assert counters_reset(launched_counters)


# --- the path of context_mlp: one-launch (the MLPs in the merge's last program) or split ---------

#: the kernels of the split path: the context (partials and merge); the MLPs then run as GEMMs in torch
SPLIT = ["context_pool_partials", "context_pool_combine"]


@pytest.mark.skipif(not ON_KERNELS, reason="the torch backend has one path: the eager formulas")
@pytest.mark.parametrize("config", INFERENCE_CONFIGS)
@pytest.mark.parametrize("tiles", ["default", "small"])
def test_split_path_matches_timm_and_runs_the_mlps_as_gemms(config, tiles, channels_last, monkeypatch,
                                                            launched_counters):
    """The split path forced: the two context kernels (no ticket; the MLPs then run as GEMMs over
    all samples inside the op), timm's numbers in float64; bitwise repeatable."""
    from tritattn import paths

    if tiles == "small":
        use_small_tiles(monkeypatch)
    peer, fast = timm_pair(config)
    peer.eval(), fast.eval()
    x = make_input((3, 12, 5, 7), torch.float64, channels_last)
    with torch.no_grad(), paths.forced("split"):
        want = peer(x)
        got, launched, ops_seen = run_recorded(fast, x, monkeypatch)
        again = fast(x)
    assert launched == SPLIT + (["gated_scale_fwd"] if fast.mlp_scale is not None else []), launched
    assert "tritattn.context_mlp" in ops_seen, ops_seen
    assert_same_layout(got, x)
    assert_close(got, want, what=f"{config} split path")
    assert torch.equal(got, again) and not launched_counters  # no launcher with tickets ran


def _shape(C: int, K: int, rd: int, B: int = 8):
    from tritattn.context_cost import ContextShape

    return ContextShape(B, C, K, torch.float32, rd, rd, "relu", True)


@pytest.mark.parametrize("C, K, rd, path", [(256, 56 * 56, 16, "one-launch"), (64, 56 * 56, 8, "one-launch"),
                                            (2048, 7 * 7, 256, "split"), (1024, 14 * 14, 128, "split")])
def test_the_model_takes_the_mlps_out_of_the_kernel_where_their_tail_is_long(C, K, rd, path):
    """With nothing tuned, the estimate decides: a small MLP (C·RD) stays in the merge's last
    program, a wide one (hundreds of serial weight tiles) runs as GEMMs; the decision says why."""
    from tritattn import context_block, context_cost, cost_model, paths

    shape = _shape(C, K, rd)
    paths.forget()
    assert context_block.mlp_path("", lambda: shape, torch.device("cpu")) == path
    decision = paths.decision("context_mlp", shape.key())
    assert decision.path == path and decision.reason.startswith("estimate (H100 model)")
    kernel = context_cost.combine_mlp(shape)
    assert (kernel.longest > cost_model.LONGEST_PER_MEDIAN * kernel.median + cost_model.LONGEST_SLACK) == (path == "split")


@pytest.mark.skipif(not ON_KERNELS, reason="the count runs the Triton kernels in the interpreter")
@pytest.mark.parametrize("path", ["one-launch", "split"])
@pytest.mark.parametrize("tiles", ["default", "small"])
def test_the_predicted_launches_are_the_counted_ones(path, tiles, monkeypatch):
    """tritattn/context_cost.py's launches (programs, median and longest program's memory instructions) are
    what the interpreter counts (perf/program_census.py), on both paths, several tiles per sample."""
    import sys
    from pathlib import Path

    from tritattn import context_block, context_cost, paths

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
    from program_census import ProgramCensus, interpreting

    if not interpreting():
        pytest.skip("the count needs Triton's interpreter (TRITON_INTERPRET=1)")
    if tiles == "small":
        use_small_tiles(monkeypatch)
    _, fast = timm_pair("add_and_scale", C=40)
    fast.float().eval()
    x = make_input((3, 40, 7, 7), torch.float32, channels_last=False)
    census = ProgramCensus()
    with torch.no_grad(), paths.forced(path), census:
        fast(x)
    counted = [(c.kernel, c.programs, c.median, c.longest) for c in census.launches() if c.programs][:2]
    mlps = [context_block._mlp(*args[:6], args[6]) for args in
            (global_context_mlp_args(fast.mlp_scale), global_context_mlp_args(fast.mlp_add))]
    shape = context_block.mlp_shape(x, *mlps, "relu")
    predicted = [(c.kernel, c.programs, c.median, c.longest) for c in context_cost.paths(shape)[path] if c.programs]
    assert counted == predicted


def global_context_mlp_args(mlp):
    from tritattn.global_context import _mlp_args

    return _mlp_args(mlp)


def test_tune_measures_both_paths_and_the_winner_is_kept(simulated_gpu, monkeypatch):
    """On the simulated GPU inside tuning.benchmarking() (tritattn.tune's pass): the op times each
    path (here with made-up times: split faster), stores the winner in the user cache, and a new
    process reads it back ("measured (user cache)") instead of estimating."""
    peer, fast = timm_pair("gcresnet")
    peer.eval(), fast.eval()
    x = make_input((2, 12, 3, 5), torch.float64)
    y, again = split_measured_and_kept(simulated_gpu, monkeypatch, "context_mlp", lambda: fast(x))
    assert torch.equal(y, again)
    assert_close(y, peer(x), what="the measured path")


@pytest.mark.skipif(not ON_KERNELS, reason="the torch backend has one path: the eager formulas")
def test_split_path_keeps_float32_under_autocast():
    """Mixed precision (bfloat16 x under autocast, float32 weights): the split path's GEMMs run in
    the accumulator's float32 like the kernel's MLP (s, t float32 and close to the one-launch path's)."""
    from tritattn import paths

    C, RD = 16, 8
    x = make_input((2, C, 3, 5), torch.bfloat16)
    w = torch.randn(C, device=DEVICE)
    mlp = tuple(torch.randn(s, device=DEVICE) for s in ((RD, C), (RD,), (RD,), (RD,), (C, RD), (C,))) + (1e-5,)
    out = {}
    for path in ("one-launch", "split"):
        with torch.autocast(DEVICE, dtype=torch.bfloat16), paths.forced(path), torch.no_grad():
            out[path] = torch.ops.tritattn.context_mlp(x, w, *mlp, *mlp, "relu")
    for name, got, want in zip(("s", "t"), out["split"], out["one-launch"]):
        assert got.dtype == want.dtype == torch.float32, name
        assert_close(got, want.double(), torch.float32, what=f"{name} under autocast")


@pytest.mark.parametrize("config", INFERENCE_CONFIGS)
def test_a_gradient_through_x_takes_the_per_op_path_without_the_plan(config, monkeypatch):
    """A call with a gradient through x runs the per-op path, reading its layers' channels and
    gate from the module without building the plan (the in-kernel MLP refuses it whatever the
    plan holds); under no_grad the same x takes the in-kernel MLP, its plan built. Both give the
    reference's results; a wrong channel count is still refused on either path."""
    from tritattn import context_step

    _, block = timm_pair(config)
    block.eval()
    plans, per_op = [], []
    real_plan, real_pool = GlobalContext._plan, context_step.pool
    monkeypatch.setattr(GlobalContext, "_plan", lambda self: plans.append(1) or real_plan(self))
    monkeypatch.setattr(context_step, "pool", lambda *a: per_op.append(1) or real_pool(*a))
    x = make_input((2, 12, 3, 5), torch.float64, requires_grad=True)
    y = block(x)
    assert not plans and per_op and y.requires_grad
    with torch.no_grad():
        expected = block.reference_forward(x)
        assert_close(y.detach(), expected, what="per-op")
        per_op.clear()
        got = block(x)
    assert plans and bool(per_op) != ON_KERNELS
    assert_close(got, expected, what="in-kernel MLP")
    wrong = make_input((2, 13, 3, 5), torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="GlobalContext.conv_attn was built for"):
        block(wrong)
