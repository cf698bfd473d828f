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
"""
import copy
import warnings

import pytest
import torch
from torch import nn

from tritattn import reference
from tritattn.context_block import context_pool
from tritattn.global_context import GlobalContext
from conftest import DEVICE, DTYPES, assert_close, assert_same_layout, make_input, use_small_tiles

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
